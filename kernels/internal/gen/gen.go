//go:build ignore

// Command gen writes kernels_amd64.s and kernels_decl_amd64.go: the
// register-tiled AVX2+FMA micro-kernels of package kernels. Run it from the
// kernels directory with `go run ./internal/gen/gen.go` (see go:generate in
// kernels.go). It only prints text; it has no dependencies.
package main

import (
	"fmt"
	"os"
	"strings"
)

// pfElems is how many weight elements ahead the matrix-vector kernels prefetch.
const pfElems = 512

type wtype int

const (
	wF32 wtype = iota
	wBF16
	wF16
)

func (w wtype) esize() int {
	if w == wF32 {
		return 4
	}
	return 2
}

func (w wtype) goType() string {
	if w == wF32 {
		return "*float32"
	}
	return "*uint16"
}

func (w wtype) name() string {
	return [...]string{"F32", "BF16", "F16"}[w]
}

var (
	asm  strings.Builder
	decl strings.Builder
)

func p(format string, args ...any) { fmt.Fprintf(&asm, "\t"+format+"\n", args...) }
func label(l string)               { fmt.Fprintf(&asm, "%s:\n", l) }

// rowAddr addresses row r (0..3) of a matrix whose base is in register base,
// whose row stride in bytes is in s1 and three times it in s3.
func rowAddr(off int, base, s1, s3 string, r int) string {
	switch r {
	case 0:
		return fmt.Sprintf("%d(%s)", off, base)
	case 1:
		return fmt.Sprintf("%d(%s)(%s*1)", off, base, s1)
	case 2:
		return fmt.Sprintf("%d(%s)(%s*2)", off, base, s1)
	case 3:
		return fmt.Sprintf("%d(%s)(%s*1)", off, base, s3)
	}
	panic("row")
}

func y(i int) string { return fmt.Sprintf("Y%d", i) }
func x(i int) string { return fmt.Sprintf("X%d", i) }

// genNT writes a dot-product style tile kernel:
//
//	out[i*ldo+j] (+)= sum_{k<kk} x[i*ldx+k] * w[j*ldw+k]   for i<mr, j<nr
//
// with u-way unrolling of the k loop (8 floats per step). With mask set the
// kernel handles any k (the last k%8 elements by masked loads); without it
// only the multiple-of-8 part of k is used.
func genNT(name string, mr, nr, u int, wt wtype, mask bool) { genNTp(name, mr, nr, u, wt, mask, false) }

// genNTp is genNT; with pf set the kernel also prefetches the next nr rows
// of w (rows nr..2nr-1) into L1 as it goes, which hides the DRAM latency
// of the first pass over a weight panel.
func genNTp(name string, mr, nr, u int, wt wtype, mask, pf bool) {
	fmt.Fprintf(&decl, "\n// %s computes a %dx%d tile of x·wᵀ (%s weights).\n//\n//go:noescape\nfunc %s(x *float32, ldx int, w %s, ldw int, k int, out *float32, ldo int, acc bool)\n",
		name, mr, nr, wt.name(), name, wt.goType())
	fmt.Fprintf(&asm, "\n// func %s(x *float32, ldx int, w %s, ldw int, k int, out *float32, ldo int, acc bool)\n", name, wt.goType())
	fmt.Fprintf(&asm, "TEXT ·%s(SB), NOSPLIT, $0-57\n", name)
	nacc := mr * nr * u
	acc := make([][][]int, mr)
	r := 0
	for i := range acc {
		acc[i] = make([][]int, nr)
		for j := range acc[i] {
			acc[i][j] = make([]int, u)
			for v := range acc[i][j] {
				acc[i][j][v] = r
				r++
			}
		}
	}
	var temps []int
	for ; r < 16; r++ {
		temps = append(temps, r)
	}
	if len(temps) < nr+1 || len(temps) < 3 {
		panic("too many registers: " + name)
	}
	_ = nacc
	wreg := temps[:nr]
	xreg := temps[nr]
	es := wt.esize()

	p("MOVQ x+0(FP), SI")
	p("MOVQ ldx+8(FP), R8")
	p("SHLQ $2, R8")
	p("LEAQ (R8)(R8*2), R9")
	p("MOVQ w+16(FP), DI")
	p("MOVQ ldw+24(FP), R10")
	if es == 4 {
		p("SHLQ $2, R10")
	} else {
		p("SHLQ $1, R10")
	}
	p("LEAQ (R10)(R10*2), R11")
	p("MOVQ k+32(FP), CX")
	p("MOVQ out+40(FP), DX")
	p("MOVQ ldo+48(FP), R12")
	p("SHLQ $2, R12")
	p("LEAQ (R12)(R12*2), R13")
	if pf {
		if nr != 3 || u != 1 {
			panic("pf needs nr=3, u=1")
		}
		p("LEAQ (DI)(R11*1), AX")
	}
	for i := range acc {
		for j := range acc[i] {
			for _, a := range acc[i][j] {
				p("VXORPS %s, %s, %s", y(a), y(a), y(a))
			}
		}
	}
	xa := func(i, step int) string { return rowAddr(step*32, "SI", "R8", "R9", i) }
	wa := func(j, step int) string { return rowAddr(step*8*es, "DI", "R10", "R11", j) }
	loadW := func(addr string, dst int) {
		switch wt {
		case wF32:
			p("VMOVUPS %s, %s", addr, y(dst))
		case wBF16:
			p("VPMOVZXWD %s, %s", addr, y(dst))
			p("VPSLLD $16, %s, %s", y(dst), y(dst))
		case wF16:
			p("VCVTPH2PS %s, %s", addr, y(dst))
		}
	}
	body := func(step, slot int) {
		switch {
		case mr == 1 && wt == wF32:
			p("VMOVUPS %s, %s", xa(0, step), y(xreg))
			for j := 0; j < nr; j++ {
				p("VFMADD231PS %s, %s, %s", wa(j, step), y(xreg), y(acc[0][j][slot]))
			}
		case nr == 1:
			loadW(wa(0, step), wreg[0])
			for i := 0; i < mr; i++ {
				p("VFMADD231PS %s, %s, %s", xa(i, step), y(wreg[0]), y(acc[i][0][slot]))
			}
		default:
			for j := 0; j < nr; j++ {
				loadW(wa(j, step), wreg[j])
			}
			for i := 0; i < mr; i++ {
				p("VMOVUPS %s, %s", xa(i, step), y(xreg))
				for j := 0; j < nr; j++ {
					p("VFMADD231PS %s, %s, %s", y(wreg[j]), y(xreg), y(acc[i][j][slot]))
				}
			}
		}
	}
	L := func(s string) string { return name + "_" + s }
	if u > 1 {
		p("CMPQ CX, $%d", 8*u)
		p("JL %s", L("one"))
		label(L("loopu"))
		if mr == 1 && nr == 4 {
			// Matrix-vector: prefetch each weight row well ahead so that the
			// four streams keep enough misses in flight.
			for j := 0; j < nr; j++ {
				p("PREFETCHT0 %s", rowAddr(pfElems*es, "DI", "R10", "R11", j))
			}
		}
		for s := 0; s < u; s++ {
			body(s, s)
		}
		p("ADDQ $%d, SI", 32*u)
		p("ADDQ $%d, DI", 8*u*es)
		p("SUBQ $%d, CX", 8*u)
		p("CMPQ CX, $%d", 8*u)
		p("JGE %s", L("loopu"))
		label(L("one"))
	}
	p("CMPQ CX, $8")
	p("JL %s", L("tail"))
	label(L("loop1"))
	body(0, 0)
	if pf {
		p("PREFETCHT0 (AX)")
		p("PREFETCHT0 (AX)(R10*1)")
		p("PREFETCHT0 (AX)(R10*2)")
		p("ADDQ $%d, AX", 8*es)
	}
	p("ADDQ $32, SI")
	p("ADDQ $%d, DI", 8*es)
	p("SUBQ $8, CX")
	p("CMPQ CX, $8")
	p("JGE %s", L("loop1"))
	label(L("tail"))
	if mask {
		if wt != wF32 {
			panic("mask needs f32")
		}
		m, wt2, xr := temps[0], temps[1], temps[2]
		p("TESTQ CX, CX")
		p("JEQ %s", L("reduce"))
		p("MOVQ CX, AX")
		p("SHLQ $2, AX")
		p("NEGQ AX")
		p("LEAQ masktab<>+32(SB), BX")
		p("VMOVDQU (BX)(AX*1), %s", y(m))
		for j := 0; j < nr; j++ {
			p("VMASKMOVPS %s, %s, %s", wa(j, 0), y(m), y(wt2))
			for i := 0; i < mr; i++ {
				p("VMASKMOVPS %s, %s, %s", xa(i, 0), y(m), y(xr))
				p("VFMADD231PS %s, %s, %s", y(wt2), y(xr), y(acc[i][j][0]))
			}
		}
	}
	label(L("reduce"))
	for i := range acc {
		for j := range acc[i] {
			for s := 1; s < u; s++ {
				p("VADDPS %s, %s, %s", y(acc[i][j][s]), y(acc[i][j][0]), y(acc[i][j][0]))
			}
		}
	}
	// Horizontal reduction in groups of up to four accumulators; each group
	// ends up as the low lanes of an X register.
	type dest struct{ i, j int }
	type group struct {
		reg   int
		dests []dest
	}
	var groups []group
	alongJ := nr >= mr
	if alongJ {
		for i := 0; i < mr; i++ {
			for j0 := 0; j0 < nr; j0 += 4 {
				var g group
				for j := j0; j < nr && j < j0+4; j++ {
					g.dests = append(g.dests, dest{i, j})
				}
				groups = append(groups, g)
			}
		}
	} else {
		for j := 0; j < nr; j++ {
			for i0 := 0; i0 < mr; i0 += 4 {
				var g group
				for i := i0; i < mr && i < i0+4; i++ {
					g.dests = append(g.dests, dest{i, j})
				}
				groups = append(groups, g)
			}
		}
	}
	tmp := temps[0]
	for gi := range groups {
		g := &groups[gi]
		a := make([]int, len(g.dests))
		for k, d := range g.dests {
			a[k] = acc[d.i][d.j][0]
		}
		n := len(a)
		at := func(k int) int {
			if k < n {
				return a[k]
			}
			return a[n-1]
		}
		a0 := a[0]
		p("VHADDPS %s, %s, %s", y(at(1)), y(a0), y(a0))
		h2 := a0
		if n >= 3 {
			p("VHADDPS %s, %s, %s", y(at(3)), y(a[2]), y(a[2]))
			h2 = a[2]
		}
		p("VHADDPS %s, %s, %s", y(h2), y(a0), y(a0))
		p("VEXTRACTF128 $1, %s, %s", y(a0), x(tmp))
		p("VADDPS %s, %s, %s", x(tmp), x(a0), x(a0))
		g.reg = a0
	}
	outAddr := func(d dest) string { return rowAddr(d.j*4, "DX", "R12", "R13", d.i) }
	stores := func(add bool) {
		for _, g := range groups {
			if alongJ && len(g.dests) == 4 {
				addr := outAddr(g.dests[0])
				if add {
					p("VADDPS %s, %s, %s", addr, x(g.reg), x(g.reg))
				}
				p("VMOVUPS %s, %s", x(g.reg), addr)
				continue
			}
			for l, d := range g.dests {
				src := g.reg
				if l > 0 {
					p("VPERMILPS $%d, %s, %s", l, x(g.reg), x(tmp))
					src = tmp
				}
				if add {
					p("VADDSS %s, %s, %s", outAddr(d), x(src), x(src))
				}
				p("VMOVSS %s, %s", x(src), outAddr(d))
			}
		}
	}
	p("MOVBLZX acc+56(FP), AX")
	p("TESTL AX, AX")
	p("JNE %s", L("add"))
	stores(false)
	p("VZEROUPPER")
	p("RET")
	label(L("add"))
	stores(true)
	p("VZEROUPPER")
	p("RET")
}

// genNN writes a broadcast (outer-product) tile kernel for C += A·B with B
// row-major [k][n]: a tile of mr rows × nv*8 columns of C is kept in
// registers. With masked set, nv must be 1 and only the first ncol columns
// are loaded/stored.
func genNN(name string, mr, nv int, masked bool) {
	args := "a *float32, lda int, b *float32, ldb int, k int, c *float32, ldc int, acc bool"
	size := 57
	if masked {
		args += ", ncol int"
		size = 72
	}
	fmt.Fprintf(&decl, "\n// %s computes a %d-row tile of C (+)= A·B (%d columns%s).\n//\n//go:noescape\nfunc %s(%s)\n",
		name, mr, nv*8, map[bool]string{true: ", masked to ncol", false: ""}[masked], name, args)
	fmt.Fprintf(&asm, "\n// func %s(%s)\n", name, args)
	fmt.Fprintf(&asm, "TEXT ·%s(SB), NOSPLIT, $0-%d\n", name, size)
	acc := make([][]int, mr)
	r := 0
	for i := range acc {
		acc[i] = make([]int, nv)
		for v := range acc[i] {
			acc[i][v] = r
			r++
		}
	}
	breg := make([]int, nv)
	for v := range breg {
		breg[v] = r
		r++
	}
	bc := r
	r++
	m := r
	r++
	if r > 16 && masked || r > 17 {
		panic("too many registers " + name)
	}
	L := func(s string) string { return name + "_" + s }
	p("MOVQ a+0(FP), SI")
	p("MOVQ lda+8(FP), R8")
	p("SHLQ $2, R8")
	p("LEAQ (R8)(R8*2), R9")
	p("MOVQ b+16(FP), DI")
	p("MOVQ ldb+24(FP), R10")
	p("SHLQ $2, R10")
	p("MOVQ k+32(FP), CX")
	p("MOVQ c+40(FP), DX")
	p("MOVQ ldc+48(FP), R12")
	p("SHLQ $2, R12")
	p("LEAQ (R12)(R12*2), R13")
	if masked {
		p("MOVQ ncol+64(FP), AX")
		p("SHLQ $2, AX")
		p("NEGQ AX")
		p("LEAQ masktab<>+32(SB), BX")
		p("VMOVDQU (BX)(AX*1), %s", y(m))
	}
	ca := func(i, v int) string { return rowAddr(v*32, "DX", "R12", "R13", i) }
	p("MOVBLZX acc+56(FP), AX")
	p("TESTL AX, AX")
	p("JEQ %s", L("zero"))
	for i := range acc {
		for v := range acc[i] {
			if masked {
				p("VMASKMOVPS %s, %s, %s", ca(i, v), y(m), y(acc[i][v]))
			} else {
				p("VMOVUPS %s, %s", ca(i, v), y(acc[i][v]))
			}
		}
	}
	p("JMP %s", L("start"))
	label(L("zero"))
	for i := range acc {
		for _, a := range acc[i] {
			p("VXORPS %s, %s, %s", y(a), y(a), y(a))
		}
	}
	label(L("start"))
	p("TESTQ CX, CX")
	p("JEQ %s", L("store"))
	label(L("loop"))
	for v := 0; v < nv; v++ {
		if masked {
			p("VMASKMOVPS %d(DI), %s, %s", v*32, y(m), y(breg[v]))
		} else {
			p("VMOVUPS %d(DI), %s", v*32, y(breg[v]))
		}
	}
	for i := 0; i < mr; i++ {
		p("VBROADCASTSS %s, %s", rowAddr(0, "SI", "R8", "R9", i), y(bc))
		for v := 0; v < nv; v++ {
			p("VFMADD231PS %s, %s, %s", y(breg[v]), y(bc), y(acc[i][v]))
		}
	}
	p("ADDQ $4, SI")
	p("ADDQ R10, DI")
	p("DECQ CX")
	p("JNE %s", L("loop"))
	label(L("store"))
	for i := range acc {
		for v := range acc[i] {
			if masked {
				p("VMASKMOVPS %s, %s, %s", y(acc[i][v]), y(m), ca(i, v))
			} else {
				p("VMOVUPS %s, %s", y(acc[i][v]), ca(i, v))
			}
		}
	}
	p("VZEROUPPER")
	p("RET")
}

func main() {
	asm.WriteString("// Code generated by internal/gen/gen.go; DO NOT EDIT.\n\n//go:build amd64 && !purego\n\n#include \"textflag.h\"\n\n")
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&asm, "DATA masktab<>+%d(SB)/4, $0xffffffff\n", i*4)
	}
	for i := 8; i < 16; i++ {
		fmt.Fprintf(&asm, "DATA masktab<>+%d(SB)/4, $0\n", i*4)
	}
	asm.WriteString("GLOBL masktab<>(SB), RODATA|NOPTR, $64\n")
	decl.WriteString("// Code generated by internal/gen/gen.go; DO NOT EDIT.\n\n//go:build amd64 && !purego\n\npackage kernels\n")

	// f32 NT tiles used by the blocked T>=2 paths (and the N tails of T=1).
	for mr := 1; mr <= 4; mr++ {
		for nr := 1; nr <= 3; nr++ {
			u := 1
			if mr == 1 {
				u = 2
			}
			genNT(fmt.Sprintf("ntF32_%dx%d", mr, nr), mr, nr, u, wF32, true)
		}
	}
	genNT("ntF32_1x4", 1, 4, 2, wF32, true)
	genNT("dotF32K", 1, 1, 4, wF32, true)
	for _, wt := range []wtype{wBF16, wF16} {
		for nr := 1; nr <= 4; nr++ {
			genNT(fmt.Sprintf("nt%s_1x%d", wt.name(), nr), 1, nr, 2, wt, false)
		}
		genNT(fmt.Sprintf("dot%sK", wt.name()), 1, 1, 4, wt, false)
	}
	for mr := 1; mr <= 4; mr++ {
		for nv := 1; nv <= 3; nv++ {
			genNN(fmt.Sprintf("nnF32_%dx%d", mr, nv), mr, nv, false)
		}
		genNN(fmt.Sprintf("nnF32M_%d", mr), mr, 1, true)
	}

	// Dispatchers: direct calls keep //go:noescape effective.
	decl.WriteString("\n// ntTileF32 dispatches to the ntF32_{mr}x{nr} kernel (1<=mr<=4, 1<=nr<=3).\nfunc ntTileF32(mr, nr int, x *float32, ldx int, w *float32, ldw int, k int, out *float32, ldo int, acc bool) {\n\tswitch mr*4 + nr {\n")
	for mr := 1; mr <= 4; mr++ {
		for nr := 1; nr <= 3; nr++ {
			fmt.Fprintf(&decl, "\tcase %d:\n\t\tntF32_%dx%d(x, ldx, w, ldw, k, out, ldo, acc)\n", mr*4+nr, mr, nr)
		}
	}
	decl.WriteString("\tdefault:\n\t\tpanic(\"kernels: bad tile\")\n\t}\n}\n")
	for _, wt := range []wtype{wBF16, wF16} {
		fmt.Fprintf(&decl, "\n// mvTile%s dispatches to the nt%s_1x{nr} kernel (1<=nr<=3).\nfunc mvTile%s(nr int, x *float32, w *uint16, ldw int, k int, out *float32) {\n\tswitch nr {\n", wt.name(), wt.name(), wt.name())
		for nr := 1; nr <= 3; nr++ {
			fmt.Fprintf(&decl, "\tcase %d:\n\t\tnt%s_1x%d(x, 0, w, ldw, k, out, 0, false)\n", nr, wt.name(), nr)
		}
		decl.WriteString("\tdefault:\n\t\tpanic(\"kernels: bad tile\")\n\t}\n}\n")
	}
	decl.WriteString("\n// nnTileF32 dispatches to nnF32_{mr}x{nv} (nv>0) or the masked nnF32M_{mr} (nv==0).\nfunc nnTileF32(mr, nv int, a *float32, lda int, b *float32, ldb int, k int, c *float32, ldc int, acc bool, ncol int) {\n\tswitch mr*4 + nv {\n")
	for mr := 1; mr <= 4; mr++ {
		fmt.Fprintf(&decl, "\tcase %d:\n\t\tnnF32M_%d(a, lda, b, ldb, k, c, ldc, acc, ncol)\n", mr*4, mr)
		for nv := 1; nv <= 3; nv++ {
			fmt.Fprintf(&decl, "\tcase %d:\n\t\tnnF32_%dx%d(a, lda, b, ldb, k, c, ldc, acc)\n", mr*4+nv, mr, nv)
		}
	}
	decl.WriteString("\tdefault:\n\t\tpanic(\"kernels: bad tile\")\n\t}\n}\n")

	if err := os.WriteFile("kernels_amd64.s", []byte(asm.String()), 0o644); err != nil {
		panic(err)
	}
	if err := os.WriteFile("kernels_decl_amd64.go", []byte(decl.String()), 0o644); err != nil {
		panic(err)
	}
}
