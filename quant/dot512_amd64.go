//go:build amd64 && !purego

package quant

import "golang.org/x/sys/cpu"

// AVX-512 VNNI kernels (dot512_amd64.s): the integer row kernels of Q4_K,
// Q6_K and Q8_0 weights, for one activation row and for four. The other
// kernels (float types, Q4_0, the tile kernels of tile.go) stay the AVX2
// ones. The argument conventions are those of the AVX2 kernels.

// The one-activation-row kernels: out[i] = (row i of w, rows rb bytes
// apart, nb blocks each) · x for i < n; n, nb >= 1.

//go:noescape
func dotQ4KVNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ6KVNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ8_0VNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ4KVNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

//go:noescape
func dotQ6KVNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

//go:noescape
func dotQ8_0VNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

// hasAVX512VNNI reports whether the CPU (and OS) support AVX-512 F, BW, VL
// and VNNI (with AVX2), what every AVX-512 kernel of this package needs.
// GODEBUG=cpu.avx512vnni=off turns it off (golang.org/x/sys/cpu).
var hasAVX512VNNI = hasAVX2 && cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW &&
	cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VNNI

// hasVNNI reports whether the VNNI dot kernels can be used on this CPU.
// Besides AVX-512 VNNI they use BMI2's RORX, and the AVX2 kernels for
// everything else.
var hasVNNI = hasAVX512VNNI && cpu.X86.HasBMI2

// useVNNI selects the VNNI kernels on CPUs that have them (like useTiles, a
// switch for package tests and benchmarks, which call setVNNI to compare
// them with the AVX2 kernels in one run).
var useVNNI = true

// vnniKernels returns avx2Kernels with the Q4_K, Q6_K and Q8_0 row kernels
// replaced by the VNNI ones. It is called after package initialization,
// which completes avx2Kernels (tile_amd64.go).
func vnniKernels() kernelSet {
	k := avx2Kernels
	setRows(&k.q4kRows, &k.q4k, dotQ4KVNNIRows, 144, 292)
	setRows(&k.q6kRows, &k.q6k, dotQ6KVNNIRows, 210, 292)
	setRows(&k.q8_0Rows, &k.q8_0, dotQ8_0VNNIRows, 34, q8aBlockBytes)
	k.q4kx4 = func(w []byte, xs *[4][]byte, res *[4]float32) {
		x4Call(dotQ4KVNNIx4, 144, 292, w, xs, res)
	}
	k.q6kx4 = func(w []byte, xs *[4][]byte, res *[4]float32) {
		x4Call(dotQ6KVNNIx4, 210, 292, w, xs, res)
	}
	k.q8_0x4 = func(w []byte, xs *[4][]byte, res *[4]float32) {
		x4Call(dotQ8_0VNNIx4, 34, q8aBlockBytes, w, xs, res)
	}
	// With these four-row kernels the AVX2 tile kernels only pay off for
	// short rows (K = 512: 87..92 against 74..76 MAC/ns for Q4_K, a tie for
	// Q6_K); from K = 1024 the four-row kernels are faster (K = 2048, T =
	// 4..64: Q4_K 105..112 against 88..95, Q6_K 100..106 against 75..77).
	k.tileMaxK = 512
	k.name = "avx512vnni"
	return k
}

// asmRows is the signature of the assembly rows kernels (rows_amd64.s,
// dot512_amd64.s): out[i] = (row i of w, rows rb bytes apart, nb blocks
// each) · x for i < n.
type asmRows func(w *byte, rb, n int, x *byte, nb int, out *float32)

// setRows makes a kernel set's rows kernel and one-row kernel of a type
// (*rows, *one) call the assembly rows kernel f, for weight blocks of wbs
// bytes against activation blocks of xbs bytes.
func setRows(rows *rowsKernel, one *func(w, x []byte) float32, f asmRows, wbs, xbs int) {
	*rows = func(w []byte, rb int, x []byte, out []float32) { rowsCall(f, wbs, xbs, w, rb, x, out) }
	*one = func(w, x []byte) float32 { return rowCall(f, wbs, xbs, w, x) }
}

// rowsCall bounds-checks len(out) weight rows (rb bytes apart, blocks of
// wbs bytes) against the blocks of the activation row x (xbs bytes each)
// and calls the rows kernel k.
func rowsCall(k asmRows, wbs, xbs int, w []byte, rb int, x []byte, out []float32) {
	n, nb := len(out), len(x)/xbs
	if n == 0 {
		return
	}
	if nb == 0 {
		clear(out)
		return
	}
	if nb*wbs > rb {
		panic("quant: rows kernel: weight rows shorter than the activations")
	}
	_ = w[(n-1)*rb+nb*wbs-1]
	k(&w[0], rb, n, &x[0], nb, &out[0])
}

// rowCall is rowsCall for one weight row.
func rowCall(k asmRows, wbs, xbs int, w, x []byte) float32 {
	nb := len(x) / xbs
	if nb == 0 {
		return 0
	}
	_ = w[nb*wbs-1]
	var r float32
	k(&w[0], nb*wbs, 1, &x[0], nb, &r)
	return r
}

// selectKernels sets kernels to the fastest set this CPU supports (VNNI
// only while useVNNI is set).
func selectKernels() {
	if !hasAVX2 {
		return
	}
	kernels = avx2Kernels
	if hasVNNI && useVNNI {
		kernels = vnniKernels()
	}
}

// setVNNI sets useVNNI, selects the kernels accordingly and reports whether
// the VNNI kernels are now active.
func setVNNI(on bool) bool {
	useVNNI = on
	selectKernels()
	return kernels.name == "avx512vnni"
}
