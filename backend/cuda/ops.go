package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

var (
	_ backend.Backend             = (*Backend)(nil)
	_ backend.AddRMSNormer        = (*Backend)(nil)
	_ backend.RMSNormRoPEr        = (*Backend)(nil)
	_ backend.RMSNormSigmoidMuler = (*Backend)(nil)
)

// weight is a weight in device memory: F32, F16, BF16 or (fast mode) FP8
// E4M3 with float32 block scales (1-D weights are F32).
type weight struct {
	name       string
	kind       backend.Kind
	rows, cols int
	p          uintptr
	fp32       bool // always multiply in FP32 (router)
	// tri (fast mode, BF16 router): the matrix three times side by side,
	// [rows][3·cols], multiplied on tensor cores by x split into three BF16
	// parts (k_split3bf16), which keeps the product at FP32 accuracy
	tri uintptr
	// FP8: scales [ceil(rows/br)][sc] at scale, sc = ceil(cols/bc)
	scale      uintptr
	br, bc, sc int
	// ltScale: for 128×128 blocks, the scales as cuBLASLt's BLK128x128_32F
	// takes them (each block row's scales padded to a multiple of 4)
	ltScale uintptr
}

func (w *weight) Shape() (int, int) { return w.rows, w.cols }

func kindSuffix(k backend.Kind) string {
	switch k {
	case backend.F32:
		return "f32"
	case backend.F16:
		return "f16"
	case backend.BF16:
		return "bf16"
	}
	panic(fmt.Sprintf("cuda: no kernels for %v weights", k))
}

func elemSize(k backend.Kind) int {
	switch k {
	case backend.F32:
		return 4
	case backend.F8E4M3:
		return 1
	}
	return 2
}

// hostData returns hw's values in device storage kind `to` (F32, F16 or BF16),
// converting (FP8 is dequantized with its block scales) where needed.
func hostData(hw backend.HostWeight, to backend.Kind) ([]byte, error) {
	n := hw.Rows * hw.Cols
	var want int
	switch hw.Kind {
	case backend.F32:
		want = 4 * n
	case backend.F16, backend.BF16:
		want = 2 * n
	case backend.F8E4M3:
		want = n
	case backend.Quant:
		return nil, fmt.Errorf("%s: quantized (ggml) weights are not supported by the CUDA backend", hw.Name)
	default:
		return nil, fmt.Errorf("%s: unsupported weight kind %v", hw.Name, hw.Kind)
	}
	if len(hw.Data) != want {
		return nil, fmt.Errorf("%s: %d bytes for %s [%d, %d], want %d", hw.Name, len(hw.Data), hw.Kind, hw.Rows, hw.Cols, want)
	}
	if hw.Kind == to {
		return hw.Data, nil
	}
	// element i as float32
	var at func(i int) float32
	switch hw.Kind {
	case backend.F32:
		at = func(i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(hw.Data[4*i:])) }
	case backend.F16:
		at = func(i int) float32 { return quant.F16ToF32(binary.LittleEndian.Uint16(hw.Data[2*i:])) }
	case backend.BF16:
		at = func(i int) float32 { return quant.BF16ToF32(binary.LittleEndian.Uint16(hw.Data[2*i:])) }
	case backend.F8E4M3:
		_, sc, err := hw.ScaleGrid()
		if err != nil {
			return nil, err
		}
		br, bc := hw.BlockRows, hw.BlockCols
		at = func(i int) float32 {
			r, c := i/hw.Cols, i%hw.Cols
			// rounded through BF16 as the CPU backend does
			return quant.BF16ToF32(quant.F32ToBF16(safetensors.F8E4M3ToF32(hw.Data[i]) * hw.Scale[(r/br)*sc+c/bc]))
		}
	}
	out := make([]byte, n*elemSize(to))
	for i := 0; i < n; i++ {
		v := at(i)
		switch to {
		case backend.F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case backend.BF16:
			binary.LittleEndian.PutUint16(out[2*i:], quant.F32ToBF16(v))
		case backend.F16:
			binary.LittleEndian.PutUint16(out[2*i:], quant.F32ToF16(v))
		}
	}
	return out, nil
}

// storageKind is the device kind of a host weight: FP8 stays FP8 in fast
// mode when its rows are whole 16-byte loads of one scale block (the kernels'
// requirement) and it is not the router (multiplied in FP32); other FP8
// weights are widened to BF16.
func (b *Backend) storageKind(hw backend.HostWeight) backend.Kind {
	if hw.Rows == 1 {
		return backend.F32
	}
	switch hw.Kind {
	case backend.F32, backend.F16:
		return hw.Kind
	case backend.F8E4M3:
		if b.fp8 && hw.Cols%16 == 0 && hw.BlockCols%16 == 0 && hw.BlockRows > 0 && !isRouter(hw.Name) {
			return backend.F8E4M3
		}
	}
	return backend.BF16
}

// isRouter reports whether a weight is the MoE router, which is multiplied in FP32.
func isRouter(name string) bool { return strings.HasSuffix(name, "mlp.gate.weight") }

// uploadScales uploads an FP8 weight's block scales.
func (b *Backend) uploadScales(hw backend.HostWeight) (uintptr, error) {
	return b.uploadBytes(hw.Name+" scales", unsafe.Slice((*byte)(unsafe.Pointer(&hw.Scale[0])), 4*len(hw.Scale)))
}

// uploadBytes copies host bytes into a new device allocation.
func (b *Backend) uploadBytes(name string, data []byte) (uintptr, error) {
	var p uintptr
	n := max(len(data), 4)
	if err := b.d.check(ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n)), fmt.Sprintf("cuMemAlloc(%s, %d bytes)", name, n)); err != nil {
		return 0, err
	}
	b.weights = append(b.weights, p)
	if len(data) > 0 {
		if err := b.d.check(ccall(b.d.cuMemcpyHtoD, p, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data))), "cuMemcpyHtoD("+name+")"); err != nil {
			return 0, err
		}
	}
	return p, nil
}

// Upload implements backend.Backend: BF16, F16 and F32 matrices keep their
// dtype, FP8 stays FP8 in fast mode (see storageKind) and is otherwise
// dequantized to BF16, 1-D weights become F32.
func (b *Backend) Upload(hw backend.HostWeight) (backend.Weight, error) {
	defer b.enter()()
	k := b.storageKind(hw)
	data, err := hostData(hw, k)
	if err != nil {
		return nil, err
	}
	p, err := b.uploadBytes(hw.Name, data)
	if err != nil {
		return nil, err
	}
	w := &weight{name: hw.Name, kind: k, rows: hw.Rows, cols: hw.Cols, p: p, fp32: isRouter(hw.Name)}
	if w.fp32 && k == backend.BF16 && b.routerSplit && hw.Cols%8 == 0 {
		row := 2 * hw.Cols
		tri := make([]byte, 3*len(data))
		for r := range hw.Rows {
			src := data[r*row : (r+1)*row]
			for j := range 3 {
				copy(tri[(3*r+j)*row:], src)
			}
		}
		if w.tri, err = b.uploadBytes(hw.Name+" (three times)", tri); err != nil {
			return nil, err
		}
	}
	if k == backend.F8E4M3 {
		if _, _, err := hw.ScaleGrid(); err != nil {
			return nil, err
		}
		if w.scale, err = b.uploadScales(hw); err != nil {
			return nil, err
		}
		w.br, w.bc, w.sc = hw.BlockRows, hw.BlockCols, (hw.Cols+hw.BlockCols-1)/hw.BlockCols
		if w.br == 128 && w.bc == 128 && b.lt != nil && b.fp8GEMM && b.ccMaj >= 9 { // for matmulFP8 (Hopper and newer)
			sr, ld := (w.rows+127)/128, (w.sc+3)&^3
			pad := make([]float32, sr*ld)
			for r := range sr {
				copy(pad[r*ld:r*ld+w.sc], hw.Scale[r*w.sc:(r+1)*w.sc])
			}
			if w.ltScale, err = b.uploadBytes(hw.Name+" scales (cuBLASLt)", unsafe.Slice((*byte)(unsafe.Pointer(&pad[0])), 4*len(pad))); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

// experts holds E SwiGLU experts stacked: gate and up as [E][2I][D] (gate
// rows first), down as [E][D][I].
type experts struct {
	n, inter, dim int
	kind          backend.Kind
	gateUp, down  uintptr
	// FP8: per expert [2I/br][D/bc] and [D/br][I/bc] block scales
	guScale, downScale uintptr
	br, bc             int
}

func (e *experts) Count() int { return e.n }

// UploadExperts implements backend.Backend.
func (b *Backend) UploadExperts(gate, up, down []backend.HostWeight) (backend.Experts, error) {
	if len(gate) != len(up) || len(gate) != len(down) || len(gate) == 0 {
		return nil, fmt.Errorf("experts: %d gate, %d up, %d down weights", len(gate), len(up), len(down))
	}
	I, D := gate[0].Rows, gate[0].Cols
	kind := b.storageKind(gate[0])
	br, bc := gate[0].BlockRows, gate[0].BlockCols
	for i := range gate {
		for _, hw := range []backend.HostWeight{gate[i], up[i], down[i]} {
			if b.storageKind(hw) != kind {
				kind = backend.F32 // mixed storage: widen everything
			}
			if kind == backend.F8E4M3 && (hw.BlockRows != br || hw.BlockCols != bc) {
				kind = backend.BF16
			}
		}
		if gate[i].Rows != I || gate[i].Cols != D || up[i].Rows != I || up[i].Cols != D || down[i].Rows != D || down[i].Cols != I {
			return nil, fmt.Errorf("experts: expert %d has gate %dx%d, up %dx%d, down %dx%d; want %dx%d, %dx%d, %dx%d",
				i, gate[i].Rows, gate[i].Cols, up[i].Rows, up[i].Cols, down[i].Rows, down[i].Cols, I, D, I, D, D, I)
		}
	}
	if kind == backend.F8E4M3 && (I%br != 0 || D%br != 0 || I%bc != 0 || D%bc != 0) {
		kind = backend.BF16 // the stacked scales need whole blocks
	}
	if I == 1 || D == 1 {
		kind = backend.F32
	}
	defer b.enter()()
	E, es := len(gate), elemSize(kind)
	mat := I * D * es
	e := &experts{n: E, inter: I, dim: D, kind: kind}
	var err error
	if e.gateUp, err = b.deviceBlock(gate[0].Name+"…", 2*E*mat); err != nil {
		return nil, err
	}
	if e.down, err = b.deviceBlock(down[0].Name+"…", E*mat); err != nil {
		return nil, err
	}
	if kind == backend.F8E4M3 {
		e.br, e.bc = br, bc
		ns := (I / br) * (D / bc) // scales per matrix
		if e.guScale, err = b.deviceBlock(gate[0].Name+" scales…", 4*2*E*ns); err != nil {
			return nil, err
		}
		if e.downScale, err = b.deviceBlock(down[0].Name+" scales…", 4*E*ns); err != nil {
			return nil, err
		}
		for i := 0; i < E; i++ {
			for _, part := range []struct {
				hw  backend.HostWeight
				dst uintptr
			}{{gate[i], e.guScale + uintptr(4*2*i*ns)}, {up[i], e.guScale + uintptr(4*(2*i+1)*ns)}, {down[i], e.downScale + uintptr(4*i*ns)}} {
				if len(part.hw.Scale) != ns {
					return nil, fmt.Errorf("%s: FP8 scale has %d values, want %d", part.hw.Name, len(part.hw.Scale), ns)
				}
				if err := b.d.check(ccall(b.d.cuMemcpyHtoD, part.dst, uintptr(unsafe.Pointer(&part.hw.Scale[0])), uintptr(4*ns)), "cuMemcpyHtoD("+part.hw.Name+" scales)"); err != nil {
					return nil, err
				}
			}
		}
	}
	for i := 0; i < E; i++ {
		for _, part := range []struct {
			hw  backend.HostWeight
			dst uintptr
		}{{gate[i], e.gateUp + uintptr(2*i*mat)}, {up[i], e.gateUp + uintptr((2*i+1)*mat)}, {down[i], e.down + uintptr(i*mat)}} {
			data, err := hostData(part.hw, kind)
			if err != nil {
				return nil, err
			}
			if err := b.d.check(ccall(b.d.cuMemcpyHtoD, part.dst, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data))), "cuMemcpyHtoD("+part.hw.Name+")"); err != nil {
				return nil, err
			}
		}
	}
	return e, nil
}

func (b *Backend) deviceBlock(name string, n int) (uintptr, error) {
	var p uintptr
	if err := b.d.check(ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(max(n, 4))), fmt.Sprintf("cuMemAlloc(%s, %d bytes)", name, n)); err != nil {
		return 0, err
	}
	b.weights = append(b.weights, p)
	return p, nil
}

// ---------------------------------------------------------------------------

// Embed implements backend.Backend.
func (b *Backend) Embed(dst backend.Tensor, table backend.Weight, ids []int32) {
	defer b.enter()()
	w := table.(*weight)
	if dst.Rows < len(ids) || dst.Cols != w.cols {
		panic(fmt.Sprintf("cuda.Embed: dst %dx%d for %d ids of a %dx%d table", dst.Rows, dst.Cols, len(ids), w.rows, w.cols))
	}
	for _, id := range ids {
		if id < 0 || int(id) >= w.rows {
			panic(fmt.Sprintf("cuda.Embed: id %d outside the table of %d rows", id, w.rows))
		}
	}
	if len(ids) == 0 {
		return
	}
	pd := b.ptr("Embed", dst)
	g, bl := flatGrid(len(ids) * w.cols)
	if w.kind == backend.F8E4M3 {
		b.launch("embed_fp8", g, bl, 0, pArg(pd), lArg(dst.Stride), pArg(w.p), pArg(b.stageI32(ids)), iArg(len(ids)), iArg(w.cols),
			pArg(w.scale), iArg(w.sc), iArg(w.br), iArg(w.bc))
		return
	}
	b.launch("embed_"+kindSuffix(w.kind), g, bl, 0, pArg(pd), lArg(dst.Stride), pArg(w.p), pArg(b.stageI32(ids)), iArg(len(ids)), iArg(w.cols))
}

// MatMul implements backend.Backend.
func (b *Backend) MatMul(dst, x backend.Tensor, wt backend.Weight) {
	defer b.enter()()
	w := wt.(*weight)
	T, N, K := x.Rows, w.rows, w.cols
	if x.Cols != K || dst.Rows != T || dst.Cols != N {
		panic(fmt.Sprintf("cuda.MatMul %s: x %dx%d, w %dx%d, dst %dx%d", w.name, x.Rows, x.Cols, N, K, dst.Rows, dst.Cols))
	}
	if T == 0 || N == 0 {
		return
	}
	b.matmul(b.ptr("MatMul", dst), dst.Stride, b.ptr("MatMul", x), x.Stride, T, w)
}

func (b *Backend) matmul(pd uintptr, ldd int, px uintptr, ldx int, T int, w *weight) {
	N, K := w.rows, w.cols
	if T >= bigStepRows {
		b.bigStep = true
	}
	if w.kind == backend.F8E4M3 {
		if T <= GEMVRows {
			px, ldx, xs := b.aligned16(px, ldx, T, K)
			name, rows := "gemv_fp8", 8 // rows per block
			if T == 1 && !b.gemvT8 {
				name = "gemv_fp81"
				if r := b.fp8Rows; (r == 2 || r == 4 || r == 8) && N >= 2048 {
					if r == 8 && N < b.fp8Rows8Min {
						r = 4
					}
					if r == 4 && N < b.fp8Rows4Min {
						r = 2
					}
					name, rows = [...]string{2: "gemv_fp8v2", 4: "gemv_fp8v4", 8: "gemv_fp8v8"}[r], 8*r
					if r == 2 && (b.fp8V3 == 2 || b.fp8V3 == 1 && !b.allResident(name, 256, 0, (N+15)/16) && b.allResident("gemv_fp8v3", 256, 0, (N+23)/24)) {
						// three rows per warp where two would take two waves
						name, rows = "gemv_fp8v3", 24
					}
				}
			}
			threads, smem := 256, 0
			if name == "gemv_fp8v2" && b.routePartials && N%16 == 0 && N/16 <= 256 && len(xs) == 0 {
				// it may carry the router's partial logits (AddRMSNormRoute)
				b.emitPending()
				b.gemvBuf = gemvReq{pd: pd, px: px, ldd: ldd, ldx: ldx, w: w}
				b.pendingGEMV = &b.gemvBuf
				return
			}
			if name == "gemv_fp8v8" && b.fp8TMA {
				// the same rows per warp, streamed by bulk copies
				name, threads, smem = "gemv_fp8t8", 32*fp8tWarps, fp8tSmem
				t9 := b.fp8T9 == 2 || b.fp8T9 == 1 && !b.allResident(name, threads, smem, (N+rows-1)/rows) &&
					b.allResident("gemv_fp8t9", 32*(fp8tWarps+1), fp8t9Smem, (N+rows+fp8tRows-1)/(rows+fp8tRows))
				if t9 && b.smemOptin >= fp8t9Smem+1024 {
					// a ninth warp per block where eight would take two waves
					name, threads, smem, rows = "gemv_fp8t9", 32*(fp8tWarps+1), fp8t9Smem, rows+fp8tRows
				} else if !b.fp8T8Late {
					name = "gemv_fp8t8e"
				}
			}
			b.launch(name, dim3{(N + rows - 1) / rows, 1, 1}, dim3{threads, 1, 1}, smem, pArg(px), lArg(ldx), iArg(T), pArg(w.p), iArg(N), iArg(K),
				pArg(w.scale), iArg(w.sc), iArg(w.br), iArg(w.bc), pArg(pd), lArg(ldd))
			b.release(xs...)
			return
		}
		if b.matmulFP8(pd, ldd, px, ldx, T, w) {
			return
		}
		// prefill: widen to BF16 for a cuBLASLt GEMM (compute-bound; the
		// widening reads the weight once more)
		wb := b.scratch(2 * N * K)
		g, bl := flatGrid(N * K)
		b.launch("k_fp8_bf16", g, bl, 0, pArg(wb.p), pArg(w.p), iArg(N), iArg(K), pArg(w.scale), iArg(w.sc), iArg(w.br), iArg(w.bc))
		b.matmul(pd, ldd, px, ldx, T, &weight{name: w.name, kind: backend.BF16, rows: N, cols: K, p: wb.p})
		b.release(wb)
		return
	}
	if r := b.pendingNorm; r != nil && T == 1 && px == r.d && w.kind == backend.BF16 && K == r.cols && !b.gemvT8 {
		// the norm that made x, in this GEMV's blocks
		b.pendingNorm = nil
		name, rows := "gemv_bf16v1n", 8
		if b.gemv2 > 0 && N >= b.gemv2 {
			name, rows = "gemv_bf16v2n", 16
			if b.gemv4n > 0 && N >= b.gemv4n {
				name, rows = "gemv_bf16v4n", 32
			}
		}
		smem := 0
		if name == "gemv_bf16v4n" && b.bf16TMA {
			name, smem = "gemv_bf16t4n", bf16tSmem // its rows streamed by bulk copies
		}
		b.launch(name, dim3{(N + rows - 1) / rows, 1, 1}, dim3{256, 1, 1}, smem, pArg(r.x), pArg(r.a), pArg(r.w.p), pArg(r.y), pArg(r.d),
			iArg(addNormThreads(K)), fArg(r.eps), pArg(w.p), iArg(N), iArg(K), pArg(pd))
		return
	}
	if T <= GEMVRows {
		name := "gemv_" + kindSuffix(w.kind)
		rows := 8 // per block
		if w.kind == backend.BF16 && K%8 == 0 && px%16 == 0 && (T == 1 || ldx%4 == 0) {
			name = "gemv_bf16v"
			if T == 1 && !b.gemvT8 {
				name = "gemv_bf16v1"
				if b.gemv2 > 0 && N >= b.gemv2 {
					name, rows = "gemv_bf16v2", 16
				}
			}
		}
		b.launch(name, dim3{(N + rows - 1) / rows, 1, 1}, dim3{256, 1, 1}, 0, pArg(px), lArg(ldx), iArg(T), pArg(w.p), iArg(N), iArg(K), pArg(pd), lArg(ldd))
		return
	}
	if w.tri != 0 {
		// the router at FP32 accuracy on tensor cores: [hi|mid|lo](x)·[W|W|W]ᵀ
		xs := b.scratch(2 * T * 3 * K)
		if K%8 == 0 && ldx%4 == 0 && px%16 == 0 {
			g, bl := flatGrid(T * K / 8)
			b.launch("k_split3bf16v", g, bl, 0, pArg(xs.p), pArg(px), lArg(ldx), iArg(T), iArg(K))
		} else {
			g, bl := flatGrid(T * K)
			b.launch("k_split3bf16", g, bl, 0, pArg(xs.p), pArg(px), lArg(ldx), iArg(T), iArg(K))
		}
		plan, err := b.lt.plan(N, T, 3*K, ldd, alignOf(pd, uintptr(4*ldd)))
		b.must(err)
		b.record(opLt, uint64(plan.id), uint64(w.tri), uint64(xs.p), uint64(pd))
		b.release(xs)
		return
	}
	if !b.opts.Precise && !w.fp32 && w.kind == backend.BF16 && b.lt != nil {
		xb := b.scratch(2 * T * K)
		b.toBF16(xb.p, px, ldx, T, K)
		plan, err := b.lt.plan(N, T, K, ldd, alignOf(pd, uintptr(4*ldd)))
		b.must(err)
		b.record(opLt, uint64(plan.id), uint64(w.p), uint64(xb.p), uint64(pd))
		b.release(xb)
		return
	}
	b.launch("gemm_"+kindSuffix(w.kind), dim3{(N + 63) / 64, (T + 63) / 64, 1}, dim3{256, 1, 1}, 0,
		pArg(px), lArg(ldx), iArg(T), pArg(w.p), iArg(N), iArg(K), pArg(pd), lArg(ldd))
}

// matmulFP8 multiplies T > GEMVRows rows by an FP8 weight of 128×128
// blocks on FP8 tensor cores: x is quantized to E4M3 per 128 values of a row
// (k_quant_fp8), and cuBLASLt applies both operands' block scales. Where
// cuBLASLt has no such GEMM for T rows (on the H200 for row counts that
// are not multiples of 16, as a server's prompts mostly are), the rows go
// in padded with zero rows to the next multiple of 16, and only the first
// T rows of the product come out. It reports false, leaving the product to
// the caller (which widens the weight to BF16), when the weight has other
// blocks, K is not a multiple of 128, the path is off
// (RINGO_CUDA_FP8_GEMM=0), or cuBLASLt has no algorithm for the shape even
// so (cuBLAS older than 12.9, not Hopper; noted once).
func (b *Backend) matmulFP8(pd uintptr, ldd int, px uintptr, ldx, T int, w *weight) bool {
	N, K := w.rows, w.cols
	if !b.fp8GEMM || w.ltScale == 0 || K%128 != 0 {
		return false
	}
	TP := T // the rows cuBLASLt multiplies
	plan, err := b.lt.plan8(N, T, K, ldd, alignOf(pd, uintptr(4*ldd)))
	if err != nil && T%16 != 0 {
		// into a contiguous [TP][N] block of its own (devAlloc's blocks are
		// 256-byte aligned)
		TP = (T + 15) &^ 15
		plan, err = b.lt.plan8(N, TP, K, N, alignOf(uintptr(4*N)))
	}
	if err != nil {
		// that shape is widened to BF16 (cuBLASLt remembers the failure)
		if !b.fp8Noted {
			b.fp8Noted = true
			fmt.Fprintf(os.Stderr, "cuda: no block-scaled FP8 GEMM for some products, their FP8 weights are widened to BF16: %v\n", err)
		}
		return false
	}
	px, ldx, xs := b.aligned16(px, ldx, T, K)
	KB := (K + 127) / 128
	xq, sc := b.scratch(TP*K), b.scratch(4*TP*KB)
	mn := 0
	if b.fp8ScaleMN {
		mn = 1
	}
	g, bl := flatGrid(32 * TP * KB)
	b.launch("k_quant_fp8", g, bl, 0, pArg(xq.p), pArg(sc.p), pArg(px), lArg(ldx), iArg(T), iArg(TP), iArg(K), iArg(mn))
	switch {
	case plan.key.dBF16:
		yb := b.scratch(2 * TP * N)
		b.record(opLt8, uint64(plan.id), uint64(w.p), uint64(w.ltScale), uint64(xq.p), uint64(sc.p), uint64(yb.p))
		g, bl = flatGrid(T * N)
		b.launch("k_bf16_f32", g, bl, 0, pArg(pd), lArg(ldd), pArg(yb.p), iArg(T), iArg(N))
		b.release(yb)
	case TP != T:
		yp := b.scratch(4 * TP * N)
		b.record(opLt8, uint64(plan.id), uint64(w.p), uint64(w.ltScale), uint64(xq.p), uint64(sc.p), uint64(yp.p))
		g, bl = flatGrid(T * N)
		b.launch("k_copy", g, bl, 0, pArg(pd), lArg(ldd), pArg(yp.p), lArg(N), iArg(T), iArg(N))
		b.release(yp)
	default:
		b.record(opLt8, uint64(plan.id), uint64(w.p), uint64(w.ltScale), uint64(xq.p), uint64(sc.p), uint64(pd))
	}
	b.release(xq, sc)
	b.release(xs...)
	return true
}

// aligned16 returns x (T rows of K floats at px, stride ldx) at a 16-byte
// aligned address with a stride that keeps every row aligned, copying it to
// scratch (returned, for release) when it is not.
func (b *Backend) aligned16(px uintptr, ldx, T, K int) (uintptr, int, []scratch) {
	if px%16 == 0 && (T == 1 || ldx%4 == 0) {
		return px, ldx, nil
	}
	ld := (K + 3) &^ 3
	xs := b.scratch(4 * T * ld)
	g, bl := flatGrid(T * K)
	b.launch("k_copy", g, bl, 0, pArg(xs.p), lArg(ld), pArg(px), lArg(ldx), iArg(T), iArg(K))
	return xs.p, ld, []scratch{xs}
}

// f32Weight returns w's device F32 values or panics.
func f32Weight(op string, wt backend.Weight) *weight {
	w := wt.(*weight)
	if w.kind != backend.F32 {
		panic(fmt.Sprintf("cuda.%s: weight %s is %v, want a 1-D (F32) weight", op, w.name, w.kind))
	}
	return w
}

func blockFor(n int) int {
	t := 32
	for t < n && t < 256 {
		t *= 2
	}
	return t
}

// RMSNorm implements backend.Backend.
func (b *Backend) RMSNorm(dst, x backend.Tensor, wt backend.Weight, group int, eps float32) {
	defer b.enter()()
	checkSame("RMSNorm", dst, x)
	w, wfull := normWeight("RMSNorm", wt, x.Cols, group)
	if x.Rows == 0 {
		return
	}
	pd, px := b.ptr("RMSNorm", dst), b.ptr("RMSNorm", x)
	if pd != px && group == x.Cols && b.normGEMV && b.normPlain && x.Rows == 1 && x.Cols <= gvnMaxK && x.Cols%8 == 0 && pd%16 == 0 &&
		addNormThreads(x.Cols) == blockFor(x.Cols) && x.Cols <= 8*blockFor(x.Cols) {
		// one row into another tensor (a decode step's first input norm):
		// a GEMV of dst after it runs it in its blocks, with k_rmsnorm's
		// arithmetic (addnorm_row without the add)
		b.emitPending()
		b.normBuf = normReq{d: pd, x: px, w: w, cols: x.Cols, eps: eps}
		b.pendingNorm = &b.normBuf
		return
	}
	b.rmsNorm(pd, dst.Stride, px, x.Stride, w, wfull, x.Rows, x.Cols, group, eps)
}

// rmsNorm launches k_rmsnorm: d = RMSNorm(x)·w over groups of group columns.
func (b *Backend) rmsNorm(pd uintptr, ldd int, px uintptr, ldx int, w *weight, wfull bool, rows, cols, group int, eps float32) {
	b.launch("k_rmsnorm", dim3{rows * (cols / group), 1, 1}, dim3{blockFor(group), 1, 1}, 0,
		pArg(pd), lArg(ldd), pArg(px), lArg(ldx), pArg(w.p), bArg(wfull), iArg(cols), iArg(group), fArg(eps))
}

// normWeight returns the weight of a norm over groups of group columns of a
// cols-wide tensor and whether it covers all the columns (else one group,
// shared); it panics, naming op, when the shapes do not fit.
func normWeight(op string, wt backend.Weight, cols, group int) (*weight, bool) {
	w := f32Weight(op, wt)
	wn := w.rows * w.cols
	if group <= 0 || cols%group != 0 || (wn != group && wn != cols) {
		panic(fmt.Sprintf("cuda.%s: %d columns, group %d, weight %d", op, cols, group, wn))
	}
	return w, wn != group
}

// AddRMSNorm implements backend.AddRMSNormer: x += a, then dst =
// RMSNorm(x)·w, in one kernel.
func (b *Backend) AddRMSNorm(dst, x, a backend.Tensor, wt backend.Weight, eps float32) {
	defer b.enter()()
	b.addNormOp("AddRMSNorm", dst, x, x, a, wt, eps)
}

// AddRMSNormTo implements backend.AddRMSNormToer with k_addrmsnorm; for
// one row (decode) it waits for the next operation, which takes it into
// its GEMV when it multiplies dst (RINGO_CUDA_NORM_GEMV=0 turns that off).
func (b *Backend) AddRMSNormTo(dst, y, x, a backend.Tensor, wt backend.Weight, eps float32) {
	defer b.enter()()
	b.addNormOp("AddRMSNormTo", dst, y, x, a, wt, eps)
}

// addNormOp is AddRMSNorm (y is x) and AddRMSNormTo (y apart from x, which
// a one-row GEMV of dst may then take, see normReq).
func (b *Backend) addNormOp(op string, dst, y, x, a backend.Tensor, wt backend.Weight, eps float32) {
	checkSame(op, dst, x)
	checkSame(op, y, x)
	checkSame(op, a, x)
	w := f32Weight(op, wt)
	if w.rows*w.cols != x.Cols {
		panic(fmt.Sprintf("cuda.%s: %d columns, weight %d", op, x.Cols, w.rows*w.cols))
	}
	if x.Rows == 0 {
		return
	}
	pd, py, px, pa := b.ptr(op, dst), b.ptr(op, y), b.ptr(op, x), b.ptr(op, a)
	if py != px && b.normGEMV && x.Rows == 1 && x.Cols <= gvnMaxK && x.Cols%8 == 0 && addNormThreads(x.Cols) <= 256 && pd%16 == 0 {
		b.emitPending() // at most one operation waits at a time
		b.normBuf = normReq{pd, py, px, pa, w, x.Cols, eps}
		b.pendingNorm = &b.normBuf
		return
	}
	b.addRMSNorm(pd, dst.Stride, py, y.Stride, px, x.Stride, pa, a.Stride, w, x.Rows, x.Cols, eps)
}

// addNormThreads is the block size of k_addrmsnorm for rows of cols values:
// up to 1024 threads, 8 values each (NU in kernels.cu), so that decode
// normalises a single row in registers.
func addNormThreads(cols int) int { return min(1024, max(32, (cols/8+31)&^31)) }

// addRMSNorm launches k_addrmsnorm: y = x + a, d = RMSNorm(y)·w.
func (b *Backend) addRMSNorm(pd uintptr, ldd int, py uintptr, ldy int, px uintptr, ldx int, pa uintptr, lda int, w *weight, rows, cols int, eps float32) {
	b.launch("k_addrmsnorm", dim3{rows, 1, 1}, dim3{addNormThreads(cols), 1, 1}, 0, pArg(pd), lArg(ldd), pArg(px), lArg(ldx), pArg(pa), lArg(lda),
		pArg(w.p), iArg(cols), fArg(eps), pArg(py), lArg(ldy))
}

// normReq is an AddRMSNormTo of one row that waits (Backend.pendingNorm)
// for the operation after it: a GEMV of dst runs it in its blocks
// (gemv_bf16v1n/v2n); anything else queues k_addrmsnorm first. With a and
// y zero it is an RMSNorm of x into d (k_rmsnorm unfused).
type normReq struct {
	d, y, x, a uintptr
	w          *weight
	cols       int
	eps        float32
}

// gvnMaxK is GVN_MAXK of kernels.cu.
const gvnMaxK = 4096

// emitPending queues the waiting operation, if any (at most one of
// pendingRec, pendingNorm and pendingGEMV is set: each is emitted before
// another is set).
func (b *Backend) emitPending() {
	b.emitRec()
	b.emitNorm()
	b.emitGEMV()
}

// pending says whether an operation waits for the one after it.
func (b *Backend) pending() bool {
	return b.pendingRec != nil || b.pendingNorm != nil || b.pendingGEMV != nil
}

// gemvReq is a one-row FP8 product by gemv_fp8v2 that waits
// (Backend.pendingGEMV, routePartials) for the operation after it.
type gemvReq struct {
	pd, px   uintptr
	ldd, ldx int
	w        *weight
}

// emitGEMV queues the waiting product, if any, as gemv_fp8v2.
func (b *Backend) emitGEMV() {
	if r := b.pendingGEMV; r != nil {
		b.pendingGEMV = nil
		b.launch(r.kernel(b, "gemv_fp8v2"), dim3{r.w.rows / 16, 1, 1}, dim3{256, 1, 1}, 0, r.gemvArgs()...)
	}
}

// kernel is the kernel that runs r, given its usual one (gemv_fp8v2 or
// gemv_fp8v2r): with gvMMA, where the shapes allow, its tensor-core form
// (gemv_fp8v2m, gemv_fp8v2rm: gemv_fp8m_rows in kernels.cu, eight warps
// of K/8 columns, at most 512 each).
func (r *gemvReq) kernel(b *Backend, name string) string {
	w := r.w
	if b.gvMMA && w.rows%16 == 0 && w.cols%1024 == 0 && w.cols <= 4096 && w.br > 0 && w.br%16 == 0 && w.bc > 0 && w.bc%128 == 0 {
		return name + "m"
	}
	return name
}

// gemvArgs are gemv_fp8v2's arguments for r (gemv_fp8v2r's first ones).
func (r *gemvReq) gemvArgs() []uint64 {
	w := r.w
	return []uint64{pArg(r.px), lArg(r.ldx), iArg(1), pArg(w.p), iArg(w.rows), iArg(w.cols), pArg(w.scale), iArg(w.sc), iArg(w.br), iArg(w.bc), pArg(r.pd), lArg(r.ldd)}
}

// emitNorm queues the waiting AddRMSNormTo, if any, as k_addrmsnorm.
func (b *Backend) emitNorm() {
	if r := b.pendingNorm; r != nil {
		b.pendingNorm = nil
		if r.a == 0 {
			b.rmsNorm(r.d, r.cols, r.x, r.cols, r.w, false, 1, r.cols, r.cols, r.eps)
			return
		}
		b.addRMSNorm(r.d, r.cols, r.y, r.cols, r.x, r.cols, r.a, r.cols, r.w, 1, r.cols, r.eps)
	}
}

// ApplyRoPE implements backend.Backend.
func (b *Backend) ApplyRoPE(x backend.Tensor, headDim int, rope backend.RoPE, pos []int32) {
	defer b.enter()()
	half := rope.Dim / 2
	if half == 0 || x.Rows == 0 {
		return
	}
	if len(pos) < x.Rows || rope.Dim > headDim {
		panic(fmt.Sprintf("cuda.ApplyRoPE: %d positions for %d rows, rotary dim %d, head dim %d", len(pos), x.Rows, rope.Dim, headDim))
	}
	px := b.ptr("ApplyRoPE", x)
	nh := x.Cols / headDim
	b.launch("k_rope", dim3{x.Rows, 1, 1}, dim3{blockFor(nh * half), 1, 1}, 0,
		pArg(px), lArg(x.Stride), iArg(x.Cols), iArg(headDim), iArg(rope.Dim), dArg(rope.Theta), pArg(b.stageI32(pos[:x.Rows])), pArg(b.ropeTable(rope, pos[:x.Rows])))
}

// RMSNormRoPE implements backend.RMSNormRoPEr: per-head RMSNorm then RoPE,
// in place, in one kernel (one block per row and head).
func (b *Backend) RMSNormRoPE(x backend.Tensor, wt backend.Weight, headDim int, eps float32, rope backend.RoPE, pos []int32) {
	if rope.Dim/2 <= 0 { // no rotation (ApplyRoPE does nothing)
		b.RMSNorm(x, x, wt, headDim, eps)
		return
	}
	defer b.enter()()
	w, wfull := normWeight("RMSNormRoPE", wt, x.Cols, headDim)
	if rope.Dim > headDim {
		panic(fmt.Sprintf("cuda.RMSNormRoPE: rotary dim %d > head dim %d", rope.Dim, headDim))
	}
	if x.Rows == 0 {
		return
	}
	if len(pos) < x.Rows {
		panic(fmt.Sprintf("cuda.RMSNormRoPE: %d positions for %d rows", len(pos), x.Rows))
	}
	// many rows: one block per row, one warp per head, where a kernel fits
	// the shape
	if nv, hu := headDim/32, rope.Dim/64; x.Rows > GEMVRows && headDim%32 == 0 && rope.Dim%64 == 0 &&
		(nv == 2 && hu == 1 || nv == 4 && (hu == 1 || hu == 2)) {
		b.launch(fmt.Sprintf("k_rmsnorm_rope_w%d%d", nv, hu), dim3{x.Rows, 1, 1}, dim3{256, 1, 1}, 0,
			pArg(b.ptr("RMSNormRoPE", x)), lArg(x.Stride), pArg(w.p), bArg(wfull), iArg(x.Cols), iArg(headDim), fArg(eps),
			iArg(rope.Dim), dArg(rope.Theta), pArg(b.stageI32(pos[:x.Rows])), iArg(x.Rows), pArg(b.ropeTable(rope, pos[:x.Rows])))
		return
	}
	// blockFor(headDim) as RMSNorm uses, so the sum of squares is the same
	b.launch("k_rmsnorm_rope", dim3{x.Rows * (x.Cols / headDim), 1, 1}, dim3{blockFor(headDim), 1, 1}, 0,
		pArg(b.ptr("RMSNormRoPE", x)), lArg(x.Stride), pArg(w.p), bArg(wfull), iArg(x.Cols), iArg(headDim), fArg(eps),
		iArg(rope.Dim), dArg(rope.Theta), pArg(b.stageI32(pos[:x.Rows])), pArg(b.ropeTable(rope, pos[:x.Rows])))
}

// ropeTableRows is the most rows whose RoPE angles the host computes
// (ropeTable): decode steps up to batch 64.
const ropeTableRows = 64

// ropeTable stages the (cos, sin) of every rotated pair of the rows at
// positions pos, [len(pos)][rope.Dim/2] float32 pairs, with the CPU
// backend's functions (RoPE.InvFreq, backend.RoPECosSin), and returns their
// device address; 0 (the kernels compute them) for more than
// ropeTableRows rows. The kernels' pow and sincos in double were on the
// critical path of every layer of a decode step; the table is staged data,
// which k_rmsnorm_rope and k_lightning_recg load before their waits
// (1.0–1.2 % faster decode steps of Ring-mini on the H200). Within a step,
// the same positions reuse the table staged first (every layer rotates the
// same positions).
func (b *Backend) ropeTable(rope backend.RoPE, pos []int32) uintptr {
	half := rope.Dim / 2
	if !b.ropeTab || len(pos) == 0 || len(pos) > ropeTableRows || half <= 0 {
		return 0
	}
	m := &b.ropeMemo
	if m.p != 0 && m.gen == b.stageGen && m.theta == rope.Theta && m.dim == rope.Dim && slices.Equal(m.pos, pos) {
		return m.p
	}
	if m.theta != rope.Theta || m.dim != rope.Dim || len(m.inv) != half {
		m.inv = rope.InvFreq(m.inv[:0])
	}
	m.cs = m.cs[:0]
	for _, p := range pos {
		for _, inv := range m.inv {
			c, s := backend.RoPECosSin(p, inv)
			m.cs = append(m.cs, c, s)
		}
	}
	m.theta, m.dim, m.gen = rope.Theta, rope.Dim, b.stageGen
	m.pos = append(m.pos[:0], pos...)
	m.p = b.stage(unsafe.Pointer(&m.cs[0]), 4*len(m.cs))
	return m.p
}

// RMSNormSigmoidMul implements backend.RMSNormSigmoidMuler: grouped RMSNorm
// then sigmoid gating in one kernel (one block per row and group).
func (b *Backend) RMSNormSigmoidMul(dst, x, gate backend.Tensor, wt backend.Weight, group int, eps float32) {
	defer b.enter()()
	checkSame("RMSNormSigmoidMul", dst, x)
	checkSame("RMSNormSigmoidMul", dst, gate)
	w, wfull := normWeight("RMSNormSigmoidMul", wt, x.Cols, group)
	if x.Rows == 0 {
		return
	}
	if b.recGateNorm(dst, x, gate, w, wfull, group, eps) {
		return
	}
	if nv := group / 32; x.Rows > GEMVRows && group%32 == 0 && (nv == 2 || nv == 4 || nv == 8 || nv == 16) {
		// many rows: one warp per (row, group)
		items := x.Rows * (x.Cols / group)
		b.launch(fmt.Sprintf("k_rmsnorm_sigmul_w%d", nv), dim3{(items + 7) / 8, 1, 1}, dim3{256, 1, 1}, 0,
			pArg(b.ptr("RMSNormSigmoidMul", dst)), lArg(dst.Stride), pArg(b.ptr("RMSNormSigmoidMul", x)), lArg(x.Stride),
			pArg(b.ptr("RMSNormSigmoidMul", gate)), lArg(gate.Stride), pArg(w.p), bArg(wfull), iArg(x.Cols), iArg(group), fArg(eps), iArg(x.Rows))
		return
	}
	b.launch("k_rmsnorm_sigmul", dim3{x.Rows * (x.Cols / group), 1, 1}, dim3{blockFor(group), 1, 1}, 0,
		pArg(b.ptr("RMSNormSigmoidMul", dst)), lArg(dst.Stride), pArg(b.ptr("RMSNormSigmoidMul", x)), lArg(x.Stride),
		pArg(b.ptr("RMSNormSigmoidMul", gate)), lArg(gate.Stride), pArg(w.p), bArg(wfull), iArg(x.Cols), iArg(group), fArg(eps))
}

// Add implements backend.Backend.
func (b *Backend) Add(dst, x, y backend.Tensor) {
	defer b.enter()()
	checkSame("Add", dst, x)
	checkSame("Add", dst, y)
	pd, px, py := b.ptr("Add", dst), b.ptr("Add", x), b.ptr("Add", y)
	if dst.Cols%4 == 0 && (dst.Stride|x.Stride|y.Stride)%4 == 0 && (pd|px|py)%16 == 0 {
		g, bl := flatGrid(dst.Rows * dst.Cols / 4)
		b.launch("k_addv", g, bl, 0, pArg(pd), lArg(dst.Stride), pArg(px), lArg(x.Stride), pArg(py), lArg(y.Stride), iArg(dst.Rows), iArg(dst.Cols))
		return
	}
	g, bl := flatGrid(dst.Rows * dst.Cols)
	b.launch("k_add", g, bl, 0, pArg(b.ptr("Add", dst)), lArg(dst.Stride), pArg(b.ptr("Add", x)), lArg(x.Stride), pArg(b.ptr("Add", y)), lArg(y.Stride), iArg(dst.Rows), iArg(dst.Cols))
}

// SiLU implements backend.Backend.
func (b *Backend) SiLU(dst, x backend.Tensor) {
	defer b.enter()()
	checkSame("SiLU", dst, x)
	g, bl := flatGrid(dst.Rows * dst.Cols)
	b.launch("k_silu", g, bl, 0, pArg(b.ptr("SiLU", dst)), lArg(dst.Stride), pArg(b.ptr("SiLU", x)), lArg(x.Stride), iArg(dst.Rows), iArg(dst.Cols))
}

// SiLUMul implements backend.Backend.
func (b *Backend) SiLUMul(dst, gate, up backend.Tensor) {
	defer b.enter()()
	checkSame("SiLUMul", dst, gate)
	checkSame("SiLUMul", dst, up)
	g, bl := flatGrid(dst.Rows * dst.Cols)
	b.launch("k_silumul", g, bl, 0, pArg(b.ptr("SiLUMul", dst)), lArg(dst.Stride), pArg(b.ptr("SiLUMul", gate)), lArg(gate.Stride),
		pArg(b.ptr("SiLUMul", up)), lArg(up.Stride), iArg(dst.Rows), iArg(dst.Cols))
}

// SigmoidMul implements backend.Backend.
func (b *Backend) SigmoidMul(dst, x, gate backend.Tensor) {
	defer b.enter()()
	checkSame("SigmoidMul", dst, x)
	checkSame("SigmoidMul", dst, gate)
	g, bl := flatGrid(dst.Rows * dst.Cols)
	b.launch("k_sigmul", g, bl, 0, pArg(b.ptr("SigmoidMul", dst)), lArg(dst.Stride), pArg(b.ptr("SigmoidMul", x)), lArg(x.Stride),
		pArg(b.ptr("SigmoidMul", gate)), lArg(gate.Stride), iArg(dst.Rows), iArg(dst.Cols))
}

// Gather implements backend.Backend.
func (b *Backend) Gather(dst, src backend.Tensor, rows []int) {
	defer b.enter()()
	if len(rows) > dst.Rows || dst.Cols != src.Cols {
		panic(fmt.Sprintf("cuda.Gather: %d rows into %dx%d from %dx%d", len(rows), dst.Rows, dst.Cols, src.Rows, src.Cols))
	}
	if len(rows) == 0 {
		return
	}
	idx := make([]int32, len(rows))
	for i, r := range rows {
		if r < 0 || r >= src.Rows {
			panic(fmt.Sprintf("cuda.Gather: row %d of %d", r, src.Rows))
		}
		idx[i] = int32(r)
	}
	g, bl := flatGrid(len(rows) * dst.Cols)
	b.launch("k_gather", g, bl, 0, pArg(b.ptr("Gather", dst)), lArg(dst.Stride), pArg(b.ptr("Gather", src)), lArg(src.Stride),
		pArg(b.stageI32(idx)), iArg(len(rows)), iArg(dst.Cols))
}

// ---------------------------------------------------------------------------
// attention

// Lightning implements backend.Backend. Spans shorter than 16 tokens run the
// recurrence; longer ones the chunked form.
func (b *Backend) Lightning(dst, q, k, v backend.Tensor, spans []backend.Span, states []backend.Tensor, decay []float32, scale float32) {
	defer b.enter()()
	b.lightning(dst, q, k, v, spans, states, decay, scale, recNorm{})
}

// recNorm is the QK norm and RoPE done inside the recurrent lightning
// kernel (NormRoPELightning); none when w is nil.
type recNorm struct {
	w     *weight
	wfull bool
	eps   float32
	rope  backend.RoPE
	pos   []int32
}

// NormRoPELightning implements backend.NormRoPELightninger: for at most
// GEMVRows rows whose spans all run the recurrence (fewer than 16 tokens:
// decode), the per-head norm and rotation of q and k happen in
// k_lightning_rec, and qk is left unchanged. (At batch 8 that was as fast
// as the separate kernel, at batch 64 ~2 % slower: every block of a head,
// d/16 of them, repeats the norm and rotation; docs/GPU.md.)
func (b *Backend) NormRoPELightning(dst, qk, v backend.Tensor, wt backend.Weight, headDim int, eps float32, rope backend.RoPE, pos []int32,
	spans []backend.Span, states []backend.Tensor, decay []float32, scale float32) bool {
	H := len(decay)
	if !b.fuseRope || qk.Rows > GEMVRows || H == 0 || qk.Cols != 2*H*headDim || headDim > 256 || rope.Dim > headDim || len(pos) < qk.Rows {
		return false
	}
	for _, sp := range spans {
		if sp.N >= 16 {
			return false
		}
	}
	if JB, R := recBlock(headDim); 2*blockFor(headDim) > JB*R {
		return false // too few threads for the norm
	}
	defer b.enter()()
	w, wfull := normWeight("NormRoPELightning", wt, qk.Cols, headDim)
	Hd := H * headDim
	b.lightning(dst, qk.ColRange(0, Hd), qk.ColRange(Hd, Hd), v, spans, states, decay, scale, recNorm{w, wfull, eps, rope, pos})
	return true
}

// recBlock returns k_lightning_rec's block shape (JB, R) for head dim d:
// blocks of 16 value columns, so that a single token's heads still spread
// over many multiprocessors.
func recBlock(d int) (JB, R int) {
	JB = d
	if d%16 == 0 {
		JB = 16
	}
	return JB, max(1, min(d, 512/JB))
}

// rgHeads and rgDim are k_lightning_recg's heads per gate-norm group (RG_H
// in kernels.cu) and head dim, rgJB the value columns of one of its blocks
// (of 512 threads).
const (
	rgHeads = 4
	rgDim   = 128
	rgJB    = 32
)

// recReq is a decode recurrence (k_lightning_rec with the QK norm) that
// waits (Backend.pendingRec) for the operation after it: the gate norm of
// its output runs inside it (k_lightning_recg); anything else queues
// k_lightning_rec first.
type recReq struct {
	args        []uint64 // k_lightning_rec's, without the last (early)
	grid, block dim3     // k_lightning_rec's
	smem        int
	spans, H, d int
	dst         uintptr
	ldo, rows   int
}

// oneTokenEach reports whether every span of a (row, n, pos) list has at
// most one token (and one has one).
func oneTokenEach(sp []int32) bool {
	one := false
	for i := 1; i < len(sp); i += 3 {
		if sp[i] > 1 {
			return false
		}
		one = one || sp[i] == 1
	}
	return one
}

// emitRec queues the waiting recurrence, if any, as k_lightning_rec.
func (b *Backend) emitRec() {
	r := b.pendingRec
	if r == nil {
		return
	}
	b.pendingRec = nil
	b.launch("k_lightning_rec", r.grid, r.block, r.smem, append(r.args, bArg(!b.recLate))...)
}

// recGateNorm runs RMSNormSigmoidMul(dst, x, gate) inside the waiting
// recurrence when it normalises that recurrence's output in place in
// groups of rgHeads heads; it reports whether it did.
func (b *Backend) recGateNorm(dst, x, gate backend.Tensor, w *weight, wfull bool, group int, eps float32) bool {
	r := b.pendingRec
	if r == nil {
		return false
	}
	pd, px := b.ptr("RMSNormSigmoidMul", dst), b.ptr("RMSNormSigmoidMul", x)
	if pd != r.dst || px != r.dst || dst.Stride != r.ldo || x.Stride != r.ldo || x.Rows != r.rows || x.Cols != r.H*r.d || group != rgHeads*r.d {
		return false
	}
	b.pendingRec = nil
	R := 512 / rgJB
	args := append(r.args, pArg(b.ptr("RMSNormSigmoidMul", gate)), lArg(gate.Stride), pArg(w.p), bArg(wfull), fArg(eps), bArg(!b.recLoadsLate))
	grid, block, smem := dim3{r.spans * r.H, r.d / rgJB, 1}, dim3{rgJB, R, 1}, 4*R*rgJB+4*2*r.d
	b.launch(recgName(b.recgTwo(grid, block, smem)), grid, block, smem, args...)
	return true
}

// gemv_fp8t8's rows per warp, warps and stages per warp (FP8T_R, FP8T_W,
// FP8T_S in kernels.cu), and its dynamic shared memory.
const (
	fp8tRows, fp8tWarps, fp8tStages = 8, 8, 3
	fp8tSmem                        = fp8tWarps * fp8tStages * fp8tRows * 512
	fp8t9Smem                       = (fp8tWarps + 1) * fp8tStages * fp8tRows * 512 // gemv_fp8t9
	// gemv_bf16t4n's: 8 warps of 4 rows, BF16T_S stages
	bf16tSmem = 8 * 4 * 4 * 512
)

// recgName is k_lightning_recg's name, or its two-blocks-per-SM twin's.
func recgName(two bool) string {
	if two {
		return "k_lightning_recg2"
	}
	return "k_lightning_recg"
}

// recgTwo reports whether a k_lightning_recg launch of this shape runs
// k_lightning_recg2 (Backend.recMinB): by default, when more of its
// clusters are launched than fit at once, which would leave the rest for a
// second wave (Ring-flash's 8 on the H200, where 7 fit: 13.2 µs against
// 7.5 at two blocks per SM, −2.1 % per decode step; twenty-seventh session).
func (b *Backend) recgTwo(grid, block dim3, smem int) bool {
	if b.recMinB != 0 {
		return b.recMinB == 2
	}
	clusters := grid.x * grid.y / (rgHeads * rgDim / rgJB)
	fit, ok := b.recgFit[grid.x]
	if !ok {
		fit = b.maxClusters("k_lightning_recg", grid, block, smem)
		if b.recgFit == nil {
			b.recgFit = map[int]int{}
		}
		b.recgFit[grid.x] = fit
	}
	return fit > 0 && clusters > fit
}

// maxClusters is how many clusters of kernel name (its cluster shape
// compiled in) fit on the GPU at once for this launch shape
// (cuOccupancyMaxActiveClusters), 0 where the driver cannot say.
func (b *Backend) maxClusters(name string, grid, block dim3, smem int) int {
	if b.d.cuOccupancyMaxActiveClusters == 0 {
		return 0
	}
	cfg := launchConfig{gridX: uint32(grid.x), gridY: uint32(grid.y), gridZ: uint32(grid.z),
		blockX: uint32(block.x), blockY: uint32(block.y), blockZ: uint32(block.z), smem: uint32(smem)}
	var n int32
	if ccall(b.d.cuOccupancyMaxActiveClusters, uintptr(unsafe.Pointer(&n)), b.fns[name], uintptr(unsafe.Pointer(&cfg))) != 0 {
		return 0
	}
	return int(n)
}

// lightning is Lightning, with the QK norm and RoPE inside the recurrent
// kernel when nrm.w is set (all spans recurrent).
func (b *Backend) lightning(dst, q, k, v backend.Tensor, spans []backend.Span, states []backend.Tensor, decay []float32, scale float32, nrm recNorm) {
	H := len(decay)
	if H == 0 {
		panic("cuda.Lightning: no heads")
	}
	d := q.Cols / H
	if q.Cols != H*d || k.Cols != q.Cols || v.Cols != q.Cols || dst.Cols != q.Cols || len(states) != len(spans) || d > 1024 {
		panic(fmt.Sprintf("cuda.Lightning: q %d, k %d, v %d, dst %d columns, %d heads, %d spans, %d states", q.Cols, k.Cols, v.Cols, dst.Cols, H, len(spans), len(states)))
	}
	var recS, chS []int32
	var recP, chP []int64
	var chSpans []backend.Span // the chunked spans, for the tensor-core path
	for i, sp := range spans {
		st := states[i]
		if st.Rows != H*d || st.Cols != d || !contiguous(st) {
			panic(fmt.Sprintf("cuda.Lightning: state %d is %dx%d (stride %d), want contiguous %dx%d", i, st.Rows, st.Cols, st.Stride, H*d, d))
		}
		if sp.N == 0 {
			continue
		}
		if sp.Row < 0 || sp.Row+sp.N > q.Rows || sp.Row+sp.N > dst.Rows || sp.Row+sp.N > k.Rows || sp.Row+sp.N > v.Rows {
			panic(fmt.Sprintf("cuda.Lightning: span rows [%d,%d) of %d", sp.Row, sp.Row+sp.N, q.Rows))
		}
		p := int64(b.ptr("Lightning", st))
		if sp.N < 16 {
			recS, recP = append(recS, int32(sp.Row), int32(sp.N), int32(sp.Pos)), append(recP, p)
		} else {
			chS, chP = append(chS, int32(sp.Row), int32(sp.N), int32(sp.Pos)), append(chP, p)
			chSpans = append(chSpans, sp)
		}
	}
	pd, pq, pk, pv := b.ptr("Lightning", dst), b.ptr("Lightning", q), b.ptr("Lightning", k), b.ptr("Lightning", v)
	dec := b.stage(unsafe.Pointer(&decay[0]), 4*H)
	common := []uint64{pArg(pd), lArg(dst.Stride), pArg(pq), lArg(q.Stride), pArg(pk), lArg(k.Stride), pArg(pv), lArg(v.Stride)}
	if n := len(recP); n > 0 {
		JB, R := recBlock(d)
		args := append(append([]uint64{}, common...), pArg(b.stageI32(recS)), pArg(b.stageI64(recP)), pArg(dec), iArg(H), iArg(d), fArg(scale))
		smem := 4 * R * JB
		if nrm.w != nil {
			// the norm's threads per head as RMSNormRoPE's (blockFor), for
			// the same sums
			args = append(args, pArg(nrm.w.p), bArg(nrm.wfull), iArg(blockFor(d)), fArg(nrm.eps), iArg(nrm.rope.Dim), dArg(nrm.rope.Theta),
				pArg(b.stageI32(nrm.pos[:q.Rows])), pArg(b.ropeTable(nrm.rope, nrm.pos[:q.Rows])))
			smem += 4 * 2 * d
		} else {
			args = append(args, pArg(0), bArg(false), iArg(0), fArg(0), iArg(0), dArg(0), pArg(0), pArg(0))
		}
		if nrm.w != nil && b.recGate && len(chP) == 0 && d == rgDim && H%rgHeads == 0 && oneTokenEach(recS) {
			// wait for the gate norm (RMSNormSigmoidMul), which may join it
			b.emitPending()
			b.recBuf = recReq{args: append(b.recBuf.args[:0], args...), grid: dim3{n * H, d / JB, 1}, block: dim3{JB, R, 1}, smem: smem,
				spans: n, H: H, d: d, dst: pd, ldo: dst.Stride, rows: dst.Rows}
			b.pendingRec = &b.recBuf
			return
		}
		args = append(args, bArg(!b.recLate))
		b.launch("k_lightning_rec", dim3{n * H, d / JB, 1}, dim3{JB, R, 1}, smem, args...)
	}
	if len(chP) > 0 && !b.opts.Precise && b.mma && (d == 64 || d == 128) {
		b.lightningMMA(common, chSpans, chP, dec, H, d, scale)
		chP = nil
	}
	if n := len(chP); n > 0 {
		BV := d
		if d%32 == 0 {
			BV = 32
		}
		limit := max(48<<10, b.smemOptin)
		C, smem := 0, 0
		for _, c := range []int{64, 32, 16} {
			s := 4 * (2*c*(d+1) + c*BV + c*(c+1) + d*BV + c + 1)
			if s <= limit {
				C, smem = c, s
				break
			}
		}
		if C == 0 {
			panic(fmt.Sprintf("cuda.Lightning: head dim %d needs more shared memory than the device's %d bytes", d, limit))
		}
		args := append(append([]uint64{}, common...), pArg(b.stageI32(chS)), pArg(b.stageI64(chP)), pArg(dec), iArg(H), iArg(d), fArg(scale), iArg(C), iArg(BV))
		b.launch("k_lightning_chunk", dim3{n * H, d / BV, 1}, dim3{256, 1, 1}, smem, args...)
	}
}

// ltcChunk is the chunk length of the tensor-core lightning kernels (LC in kernels.cu).
const ltcChunk = 64

// lightningMMA runs the chunk-parallel tensor-core form over spans (every
// chunk of every span at once, then a scan of the states over the chunks,
// then every chunk's output at once).
func (b *Backend) lightningMMA(common []uint64, spans []backend.Span, states []int64, dec uintptr, H, d int, scale float32) {
	var chunks, sinfo []int32
	for i, sp := range spans {
		first := len(chunks) / 4
		for c0 := 0; c0 < sp.N; c0 += ltcChunk {
			chunks = append(chunks, int32(sp.Row+c0), int32(min(ltcChunk, sp.N-c0)), int32(i), 0)
		}
		sinfo = append(sinfo, int32(first), int32(len(chunks)/4-first))
	}
	nch := len(chunks) / 4
	kv := b.scratch(4 * nch * H * d * d)
	pc, ps, pst := b.stageI32(chunks), b.stageI32(sinfo), b.stageI64(states)
	pd, ldd, pq, ldq, pk, ldk, pv, ldv := common[0], common[1], common[2], common[3], common[4], common[5], common[6], common[7]
	sfx := fmt.Sprint(d)
	// 16-byte loads of q, k and v where their rows allow
	vec := 1
	for _, pl := range [][2]uint64{{pq, ldq}, {pk, ldk}, {pv, ldv}} {
		if pl[0]%16 != 0 || pl[1]%4 != 0 {
			vec = 0
		}
	}
	b.launch("k_ltc_kv"+sfx, dim3{nch * H, 1, 1}, dim3{256, 1, 1}, 0, pk, ldk, pv, ldv, pArg(pc), pArg(dec), iArg(H), pArg(kv.p), iArg(vec))
	sb := b.scratch(2 * nch * H * d * d) // the states before each chunk, BF16
	b.launch("k_ltc_scan", dim3{len(spans) * H, (d*d + 255) / 256, 1}, dim3{256, 1, 1}, 0, pArg(kv.p), pArg(sb.p), pArg(pc), pArg(ps), pArg(pst), pArg(dec), iArg(H), iArg(d))
	smem := 2*(3*ltcChunk*(d+8)+d*d) + 4*(ltcChunk+1)
	b.launch("k_ltc_out"+sfx, dim3{nch * H, 1, 1}, dim3{128, 1, 1}, smem, pd, ldd, pq, ldq, pk, ldk, pv, ldv, pArg(pc), pArg(sb.p), pArg(dec), iArg(H), fArg(scale), iArg(vec))
	b.release(kv, sb)
}

// fa2Smem is k_fattn2's dynamic shared memory for head dim hd: two stages
// of a 64-key tile of BF16 keys and values.
func fa2Smem(hd int) int { return 2 * 2 * 64 * hd * 2 }

// fa3Smem is k_fattn3's: the BF16 query tile (128 rows) and fa2Smem.
func fa3Smem(hd int) int { return 128*hd*2 + fa2Smem(hd) }

// fa4Smem is k_fattn4_128's (kn = 64) and k_fattn4w_128's (kn = 128): the
// BF16 query tile (two halves of 128 x 64) and two stages of a kn-key tile
// of keys (two halves) and of transposed values (kn/64 halves of 128 x 64).
func fa4Smem(kn int) int { return 2*128*64*2 + 2*4*kn*64*2 }

// fa2MaxCopy bounds the BF16 copy of keys and values that k_fattn2 and
// k_fattn3 read (bytes); longer batches take k_fattn, which reads the FP32
// caches.
const fa2MaxCopy = 1 << 30

// fa2Layout returns the first row of each span's BF16 key (and value) copy
// and the rows in all, Σ (pos+n)·Hkv, or ok false when k_fattn2/3 cannot run:
// the copy would exceed fa2MaxCopy, or k_kvbf16 could not read the caches 16
// bytes at a time.
func (b *Backend) fa2Layout(caches []backend.KV, spans []backend.Span, Hkv, headDim int) (off []int64, rows int, ok bool) {
	off = make([]int64, len(spans))
	for i, sp := range spans {
		off[i] = int64(rows)
		rows += (sp.Pos + sp.N) * Hkv
		for _, t := range []backend.Tensor{caches[i].K, caches[i].V} {
			if t.Stride%4 != 0 || b.ptr("Attention", t)%16 != 0 {
				return nil, 0, false
			}
		}
	}
	return off, rows, 2*2*rows*headDim <= fa2MaxCopy
}

// Attention implements backend.Backend.
func (b *Backend) Attention(dst, q, k, v backend.Tensor, spans []backend.Span, caches []backend.KV, headDim int, scale float32) {
	defer b.enter()()
	H, Hkv := q.Cols/headDim, k.Cols/headDim
	if H*headDim != q.Cols || Hkv*headDim != k.Cols || v.Cols != k.Cols || dst.Cols != q.Cols || Hkv == 0 || H%Hkv != 0 || headDim > 256 || len(caches) != len(spans) {
		panic(fmt.Sprintf("cuda.Attention: q %d, k %d, v %d, dst %d columns, head dim %d (at most 256), %d spans, %d caches", q.Cols, k.Cols, v.Cols, dst.Cols, headDim, len(spans), len(caches)))
	}
	if len(spans) == 0 {
		return
	}
	sp32 := make([]int32, 0, 3*len(spans))
	cp := make([]int64, 0, 4*len(spans))
	maxN := 0
	for i, sp := range spans {
		c := caches[i]
		if c.K.Rows < sp.Pos+sp.N || c.V.Rows < sp.Pos+sp.N || c.K.Cols != k.Cols || c.V.Cols != v.Cols {
			panic(fmt.Sprintf("cuda.Attention: cache of %dx%d for positions up to %d", c.K.Rows, c.K.Cols, sp.Pos+sp.N))
		}
		if sp.Row < 0 || sp.Row+sp.N > q.Rows || sp.Row+sp.N > k.Rows || sp.Row+sp.N > v.Rows {
			panic(fmt.Sprintf("cuda.Attention: span rows [%d,%d) of %d", sp.Row, sp.Row+sp.N, q.Rows))
		}
		sp32 = append(sp32, int32(sp.Row), int32(sp.N), int32(sp.Pos))
		cp = append(cp, int64(b.ptr("Attention", c.K)), int64(b.ptr("Attention", c.V)), int64(c.K.Stride), int64(c.V.Stride))
		maxN = max(maxN, sp.N)
	}
	if maxN == 0 {
		return
	}
	ps, pc := b.stageI32(sp32), b.stageI64(cp)
	g, bl := flatGrid(maxN * k.Cols)
	g.y = len(spans)
	b.launch("k_kvstore", g, bl, 0, pArg(b.ptr("Attention", k)), lArg(k.Stride), pArg(b.ptr("Attention", v)), lArg(v.Stride), pArg(ps), pArg(pc), iArg(k.Cols))
	if !b.opts.Precise && b.mma && (headDim == 64 || headDim == 128) && maxN > GEMVRows {
		// prefill: tensor-core flash attention, G query heads of one KV
		// head per block sharing the key/value tiles
		G := 1
		for g := 8192 / headDim / 32; g > 1; g /= 2 { // 4 for head dim 64, 2 for 128 (the kernels' launch bounds)
			if (H/Hkv)%g == 0 {
				G = g
				break
			}
		}
		pd := b.ptr("Attention", dst)
		if off, rows, ok := b.fa2Layout(caches, spans, Hkv, headDim); ok && b.fa2 && dst.Stride%2 == 0 && pd%8 == 0 {
			// from a BF16 copy of the spans' keys and values, per KV head
			maxL := 0
			for _, sp := range spans {
				maxL = max(maxL, sp.Pos+sp.N)
			}
			po := b.stageI64(off)
			pq := b.ptr("Attention", q)
			if b.fa4 && headDim == 128 && pq%8 == 0 && q.Stride%2 == 0 {
				// the keys in BF16 (no value copy: k_kvbf16 gets a null
				// pointer) and the values transposed for wgmma
				// (k_vtbf16): per span and KV head 128 rows of its length
				// rounded up to 128
				kb := b.scratch(2 * rows * headDim)
				b.launch("k_kvbf16", dim3{(maxL*Hkv*headDim/8 + 255) / 256, len(spans), 1}, dim3{256, 1, 1}, 0,
					pArg(ps), pArg(pc), pArg(po), iArg(Hkv), iArg(headDim), pArg(kb.p), pArg(0))
				offT := make([]int64, len(spans))
				var n int64
				for i, sp := range spans {
					offT[i] = n
					n += int64(Hkv * 128 * ((sp.Pos + sp.N + 127) &^ 127))
				}
				pT, vt := b.stageI64(offT), b.scratch(int(2*n))
				b.launch("k_vtbf16", dim3{(maxL + 127) / 128 * 2, Hkv, len(spans)}, dim3{256, 1, 1}, 0, pArg(ps), pArg(pc), pArg(pT), iArg(Hkv), pArg(vt.p))
				kern, kn := "k_fattn4_128", 64
				if b.fa4w {
					kern, kn = "k_fattn4w_128", 128
				}
				b.launch(kern, dim3{(maxN + 127) / 128, H, len(spans)}, dim3{256, 1, 1}, fa4Smem(kn), pArg(pd), lArg(dst.Stride), pArg(pq), lArg(q.Stride),
					pArg(ps), pArg(po), pArg(kb.p), pArg(pT), pArg(vt.p), iArg(H), iArg(Hkv), fArg(scale))
				b.release(kb, vt)
				return
			}
			kb, vb := b.scratch(2*rows*headDim), b.scratch(2*rows*headDim)
			b.launch("k_kvbf16", dim3{(maxL*Hkv*headDim/8 + 255) / 256, len(spans), 1}, dim3{256, 1, 1}, 0,
				pArg(ps), pArg(pc), pArg(po), iArg(Hkv), iArg(headDim), pArg(kb.p), pArg(vb.p))
			args := []uint64{pArg(pd), lArg(dst.Stride), pArg(pq), lArg(q.Stride), pArg(ps), pArg(po), pArg(kb.p), pArg(vb.p), iArg(H), iArg(Hkv), fArg(scale)}
			if b.fa3 && pq%8 == 0 && q.Stride%2 == 0 {
				b.launch(fmt.Sprintf("k_fattn3_%d", headDim), dim3{(maxN + 127) / 128, H, len(spans)}, dim3{128, 1, 1}, fa3Smem(headDim), args...)
			} else {
				b.launch(fmt.Sprintf("k_fattn2_%d", headDim), dim3{(maxN + 63) / 64, H / G, len(spans)}, dim3{128 * G, 1, 1}, fa2Smem(headDim), args...)
			}
			b.release(kb, vb)
			return
		}
		b.launch(fmt.Sprintf("k_fattn%d", headDim), dim3{(maxN + 63) / 64, H / G, len(spans)}, dim3{128 * G, 1, 1}, 0,
			pArg(b.ptr("Attention", dst)), lArg(dst.Stride), pArg(b.ptr("Attention", q)), lArg(q.Stride), pArg(ps), pArg(pc), iArg(H), iArg(Hkv), fArg(scale))
		return
	}
	// split the keys of long contexts over several blocks when there are
	// too few (row, head) pairs to fill the GPU (flash-decoding)
	maxL := 0
	for _, sp := range spans {
		maxL = max(maxL, sp.Pos+sp.N)
	}
	// the query heads of a KV head in one block where there is a kernel
	// for their number
	G, blocksY, maxS := H/Hkv, H, 64
	grouped := b.attnGroup && (G == 2 || G == 4 || G == 8) && maxL >= b.attnGroupMin
	if grouped {
		blocksY, maxS = Hkv, 128
	}
	S := 1
	for S < maxS && q.Rows*blocksY*S < 2*b.sms && maxL/(S*2) >= 64 {
		S *= 2
	}
	var part scratch
	if S > 1 {
		part = b.scratch(4 * q.Rows * H * S * (headDim + 2))
	}
	pd, pq := b.ptr("Attention", dst), b.ptr("Attention", q)
	name := "k_attn"
	if b.attnBounds {
		name = "k_attn4"
	}
	if grouped {
		name = [...]string{2: "k_attn_g2", 4: "k_attn_g4", 8: "k_attn_g8"}[G]
	}
	b.launch(name, dim3{q.Rows, blocksY, S}, dim3{256, 1, 1}, 0, pArg(pd), lArg(dst.Stride), pArg(pq), lArg(q.Stride),
		pArg(ps), iArg(len(spans)), pArg(pc), iArg(H), iArg(Hkv), iArg(headDim), fArg(scale), pArg(part.p))
	if S > 1 {
		comb := "k_attn_combine"
		if b.attnCombineSeq {
			comb = "k_attn_combine_seq"
		}
		b.launch(comb, dim3{q.Rows, H, 1}, dim3{blockFor(headDim), 1, 1}, 0, pArg(pd), lArg(dst.Stride), pArg(ps), iArg(len(spans)),
			iArg(H), iArg(headDim), iArg(S), pArg(part.p))
		b.release(part)
	}
}

// ---------------------------------------------------------------------------
// routing and experts

// routing is an expert selection for every row: ids int32 then weights
// float32, TopK per row. During the step that made it, it lives in the
// backend's routing arena (device memory at offsets that repeat from step to
// step, so decode steps can be replayed as graphs); when the step ends, the
// arena is copied to host memory and the routing keeps its values there.
type routing struct {
	b       *Backend
	rows, k int
	gen     uint64  // arena generation holding the device copy
	p       uintptr // device address (ids, then weights) while gen is current
	moff    int     // offset in the arena's host mirror
	hostIDs []int32
	hostW   []float32
}

// Selected implements backend.Routing (the first call waits for the step).
func (r *routing) Selected(i int, ids []int32, w []float32) {
	b := r.b
	func() {
		defer b.enter()()
		if r.gen == b.rt.gen {
			b.sync() // the step that made r is still running
		}
		b.rt.settling.Wait()
	}()
	copy(ids, r.hostIDs[i*r.k:(i+1)*r.k])
	copy(w, r.hostW[i*r.k:(i+1)*r.k])
}

// routingPtrs returns the device addresses of the ids and weights, staging
// the host copy when the step that made r has ended.
func (b *Backend) routingPtrs(r *routing) (ids, w uintptr) {
	n := r.rows * r.k
	if r.gen == b.rt.gen {
		return r.p, r.p + uintptr(4*n)
	}
	b.rt.settling.Wait()
	return b.stageI32(r.hostIDs), b.stage(unsafe.Pointer(unsafe.SliceData(r.hostW)), 4*len(r.hostW))
}

// routeArena holds the routings of the current step.
type routeArena struct {
	gen        uint64
	blocks     []arenaBlock
	live       []*routing
	total      int     // bytes handed out this step (over all blocks)
	mirror     uintptr // pinned host copy
	mirrorCap  int
	capPerStep int // size of the next block: the largest sum of block capacities so far
	// settling copies a large step's routings from the mirror to Go memory
	// while the next step runs; the mirror is rewritten, and host copies are
	// read, only after it is done
	settling sync.WaitGroup
}

// settleAsyncBytes is the arena size from which routeSettle copies in the
// background (prefill: 40 MB for a 32K-token pass of Ring-mini).
const settleAsyncBytes = 1 << 20

type arenaBlock struct {
	p              uintptr
	cap, used, off int // off: start in the mirror
}

// alloc returns n bytes of arena for r.
func (a *routeArena) alloc(b *Backend, r *routing, n int) {
	n = (n + 255) &^ 255
	if len(a.blocks) == 0 || a.blocks[len(a.blocks)-1].used+n > a.blocks[len(a.blocks)-1].cap {
		c := max(n, 64<<10, a.capPerStep)
		var p uintptr
		b.must(b.d.check(ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(c)), "cuMemAlloc(routing arena)"))
		a.blocks = append(a.blocks, arenaBlock{p: p, cap: c, off: a.total})
		sum := 0
		for _, blk := range a.blocks {
			sum += blk.cap
		}
		a.capPerStep = max(a.capPerStep, sum)
	}
	blk := &a.blocks[len(a.blocks)-1]
	r.gen, r.p, r.moff = a.gen, blk.p+uintptr(blk.used), blk.off+blk.used
	blk.used += n
	a.total += n
	a.live = append(a.live, r)
}

// routeMirror queues the copy of this step's routings to host memory.
func (b *Backend) routeMirror() {
	a := &b.rt
	if len(a.live) == 0 {
		return
	}
	a.settling.Wait() // the previous step's copies read the mirror
	if a.total > a.mirrorCap {
		if a.mirror != 0 {
			b.drain()
			ccall(b.d.cuMemFreeHost, a.mirror)
			a.mirror, a.mirrorCap = 0, 0
		}
		c := max(a.total, a.capPerStep)
		b.must(b.d.check(ccall(b.d.cuMemAllocHost, uintptr(unsafe.Pointer(&a.mirror)), uintptr(c)), "cuMemAllocHost(routing mirror)"))
		a.mirrorCap = c
	}
	for _, blk := range a.blocks {
		if blk.used > 0 {
			b.record(opDtoH, uint64(a.mirror+uintptr(blk.off)), uint64(blk.p), uint64(blk.used))
		}
	}
}

// routeSettle (after the wait) gives this step's routings their host copies
// and starts a new arena generation.
func (b *Backend) routeSettle() {
	a := &b.rt
	if len(a.live) == 0 && a.total == 0 {
		return
	}
	settle := func(live []*routing, mirror uintptr) {
		for _, r := range live {
			n := r.rows * r.k
			ids, w := make([]int32, n), make([]float32, n)
			if n > 0 {
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&ids[0])), 4*n), cmem(mirror+uintptr(r.moff), 4*n))
				copy(unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), 4*n), cmem(mirror+uintptr(r.moff+4*n), 4*n))
			}
			r.hostIDs, r.hostW = ids, w
		}
	}
	if a.total >= settleAsyncBytes {
		a.settling.Add(1)
		go func(live []*routing, mirror uintptr) {
			defer a.settling.Done()
			settle(live, mirror)
		}(slices.Clone(a.live), a.mirror)
	} else {
		settle(a.live, a.mirror)
	}
	clear(a.live)
	a.live = a.live[:0]
	a.gen++
	a.total = 0
	if len(a.blocks) > 1 {
		// one block of the whole size from now on (the work is done)
		for _, blk := range a.blocks {
			ccall(b.d.cuMemFree, blk.p)
		}
		a.blocks = a.blocks[:0]
	}
	for i := range a.blocks {
		a.blocks[i].used = 0
	}
}

func (a *routeArena) free(d *driver) {
	a.settling.Wait()
	for _, blk := range a.blocks {
		ccall(d.cuMemFree, blk.p)
	}
	a.blocks = nil
	if a.mirror != 0 {
		ccall(d.cuMemFreeHost, a.mirror)
		a.mirror = 0
	}
}

// routeArgs checks the routing of E experts and returns its group count,
// the groups kept, and the bias's address (0 without one); it panics,
// naming op, when they do not fit.
func routeArgs(op string, E int, bias backend.Weight, p backend.RouteParams) (groups, keep int, pb uintptr) {
	groups = max(1, p.Groups)
	keep = groups
	if p.TopKGroups > 0 && p.TopKGroups < groups {
		keep = p.TopKGroups
	}
	if E > 1024 || E%groups != 0 || p.TopK <= 0 || p.TopK > E || p.TopK > 256 || keep*(E/groups) < p.TopK {
		panic(fmt.Sprintf("cuda.%s: %d experts (at most 1024), %d groups keeping %d, top %d", op, E, groups, keep, p.TopK))
	}
	if bias != nil {
		w := f32Weight(op, bias)
		if w.rows*w.cols != E {
			panic(fmt.Sprintf("cuda.%s: bias of %d for %d experts", op, w.rows*w.cols, E))
		}
		pb = w.p
	}
	return groups, keep, pb
}

// newRouting returns the routing of T rows of topk experts, with its
// device copy in the step's arena.
func (b *Backend) newRouting(T, topk int) *routing {
	r := &routing{b: b, rows: T, k: topk}
	if T == 0 {
		r.hostIDs, r.hostW = []int32{}, []float32{}
		return r
	}
	b.rt.alloc(b, r, 8*T*topk)
	return r
}

// Route implements backend.Backend.
func (b *Backend) Route(logits backend.Tensor, bias backend.Weight, p backend.RouteParams) backend.Routing {
	defer b.enter()()
	E := logits.Cols
	groups, keep, pb := routeArgs("Route", E, bias, p)
	T := logits.Rows
	r := b.newRouting(T, p.TopK)
	if T == 0 {
		return r
	}
	threads := 32
	for threads < E {
		threads *= 2
	}
	b.launch("k_route", dim3{T, 1, 1}, dim3{threads, 1, 1}, 0, pArg(b.ptr("Route", logits)), lArg(logits.Stride), iArg(E), pArg(pb),
		iArg(groups), iArg(keep), iArg(p.TopK), bArg(p.Sigmoid), bArg(p.Normalize), fArg(p.Scale), pArg(r.p), pArg(r.p+uintptr(4*T*p.TopK)), iArg(b.routeMode()))
	b.routeEnd = len(b.queue)
	return r
}

// routeMode is the routing kernels' warp argument: 0 for the ranks by
// threads, 1 for the ranks by warps (warpRoute), 2 for the latter with its
// loops compiled for eight experts per row (routeUnroll; others take 1).
func (b *Backend) routeMode() int {
	switch {
	case !b.warpRoute:
		return 0
	case b.routeUnroll:
		return 2
	}
	return 1
}

// k_norm_route's limits (NR_CL, NR_ROWS, NR_MAXE, NR_MAXC in kernels.cu):
// a cluster of 8 blocks of 16 warps, 2 router rows per warp.
const (
	nrCluster = 8
	nrMaxE    = 256
	nrMaxCols = 4096
)

// AddRMSNormRoute implements backend.AddRMSNormRouter for one row (decode)
// on sm_90 and newer: k_norm_route, one cluster of 8 blocks, does
// AddRMSNorm, the router's GEMV and the routing in one kernel instead of
// three, bit-identical to them. It returns nil for more rows, other GPUs,
// routers that are not BF16, shapes past the kernel's limits, and with
// RINGO_CUDA_NORM_ROUTE=0.
func (b *Backend) AddRMSNormRoute(dst, x, a backend.Tensor, wt backend.Weight, eps float32, logits backend.Tensor, router, bias backend.Weight,
	p backend.RouteParams) backend.Routing {
	rw, ok := router.(*weight)
	w, ok2 := wt.(*weight)
	K, E := x.Cols, logits.Cols
	// the threads k_addrmsnorm would run (AddRMSNorm), whose sums the fused kernel keeps
	nt := min(1024, max(32, (K/8+31)&^31))
	if !ok || !ok2 || !b.normRoute || x.Rows != 1 || dst.Rows != 1 || a.Rows != 1 || logits.Rows != 1 || dst.Cols != K || a.Cols != K ||
		w.kind != backend.F32 || w.rows*w.cols != K || rw.kind != backend.BF16 || rw.cols != K || rw.rows != E || K%8 != 0 || K > nrMaxCols ||
		nt > 512 || 8*nt < K || E%nrCluster != 0 || E > nrMaxE || rw.p%16 != 0 {
		return nil
	}
	defer b.enter()()
	groups, keep, pb := routeArgs("AddRMSNormRoute", E, bias, p)
	r := b.newRouting(1, p.TopK)
	if g := b.pendingGEMV; g != nil && g.pd == b.ptr("AddRMSNormRoute", a) && g.w.rows == K && E <= 256 && E/nrCluster <= 32 {
		// the router's partial logits in the product's blocks, the routing from them
		b.pendingGEMV = nil
		nb := K / 16
		part := b.scratch(4 * nb * E)
		b.launch(g.kernel(b, "gemv_fp8v2r"), dim3{nb, 1, 1}, dim3{256, 1, 1}, 0, append(g.gemvArgs(), pArg(b.ptr("AddRMSNormRoute", x)), pArg(w.p), pArg(rw.p), iArg(E), pArg(part.p))...)
		b.launch("k_route_p", dim3{nrCluster, 1, 1}, dim3{512, 1, 1}, 0, pArg(b.ptr("AddRMSNormRoute", dst)), pArg(b.ptr("AddRMSNormRoute", x)),
			pArg(b.ptr("AddRMSNormRoute", a)), pArg(w.p), iArg(K), iArg(nt), fArg(eps), pArg(part.p), iArg(nb), iArg(E), pArg(b.ptr("AddRMSNormRoute", logits)),
			pArg(pb), iArg(groups), iArg(keep), iArg(p.TopK), bArg(p.Sigmoid), bArg(p.Normalize), fArg(p.Scale), pArg(r.p), pArg(r.p+uintptr(4*p.TopK)), iArg(b.routeMode()))
		b.release(part)
		return r
	}
	b.launch("k_norm_route", dim3{nrCluster, 1, 1}, dim3{512, 1, 1}, 0, pArg(b.ptr("AddRMSNormRoute", dst)), pArg(b.ptr("AddRMSNormRoute", x)),
		pArg(b.ptr("AddRMSNormRoute", a)), pArg(w.p), iArg(K), iArg(nt), fArg(eps), pArg(rw.p), iArg(E), pArg(b.ptr("AddRMSNormRoute", logits)),
		pArg(pb), iArg(groups), iArg(keep), iArg(p.TopK), bArg(p.Sigmoid), bArg(p.Normalize), fArg(p.Scale), pArg(r.p), pArg(r.p+uintptr(4*p.TopK)), iArg(b.routeMode()))
	return r
}

const moeBM = 16 // rows per MoE tile (MOE_BM in kernels.cu)

// MoE implements backend.Backend: slots are grouped by expert on the device,
// then one grouped GEMM computes gate and up, one the down projection, and
// the outputs are summed per row in selection order.
func (b *Backend) MoE(dst, x backend.Tensor, rt backend.Routing, ex backend.Experts) {
	defer b.enter()()
	r, e := rt.(*routing), ex.(*experts)
	T, D := x.Rows, x.Cols
	if D != e.dim || dst.Rows != T || dst.Cols != D || r.rows < T {
		panic(fmt.Sprintf("cuda.MoE: x %dx%d, dst %dx%d, experts of dim %d, routing of %d rows", x.Rows, x.Cols, dst.Rows, dst.Cols, e.dim, r.rows))
	}
	if T == 0 {
		return
	}
	K, I, E := r.k, e.inter, e.n
	ns := T * K
	rIDs, rW := b.routingPtrs(r)
	px, pdst := b.ptr("MoE", x), b.ptr("MoE", dst)
	fp8 := e.kind == backend.F8E4M3
	if T <= GEMVRows {
		// few rows: one warp per (slot, output), no grouping
		if e.vector() {
			// vector kernels, the SwiGLU fused into the down projection's input
			b.moeVector(pdst, dst.Stride, px, x.Stride, T, K, rIDs, rW, e, nil, nil)
			return
		}
		suf := kindSuffix(e.kind)
		gu, h, y := b.scratch(4*ns*2*I), b.scratch(4*ns*I), b.scratch(4*ns*D)
		b.launch("moe_gemv_"+suf, dim3{(2*I + 7) / 8, ns, 1}, dim3{256, 1, 1}, 0, pArg(px), lArg(x.Stride), pArg(rIDs), iArg(K), iArg(0),
			pArg(e.gateUp), iArg(2*I), iArg(D), pArg(gu.p), lArg(2*I))
		g, bl := flatGrid(ns * I)
		b.launch("k_silumul", g, bl, 0, pArg(h.p), lArg(I), pArg(gu.p), lArg(2*I), pArg(gu.p+uintptr(4*I)), lArg(2*I), iArg(ns), iArg(I))
		b.launch("moe_gemv_"+suf, dim3{(D + 7) / 8, ns, 1}, dim3{256, 1, 1}, 0, pArg(h.p), lArg(I), pArg(rIDs), iArg(K), iArg(1),
			pArg(e.down), iArg(D), iArg(I), pArg(y.p), lArg(D))
		g, bl = flatGrid(T * D)
		b.launch("k_moe_combine", g, bl, 0, pArg(pdst), lArg(dst.Stride), pArg(y.p), lArg(D), pArg(0), pArg(rW), iArg(T), iArg(K), iArg(D), pArg(0))
		b.release(gu, h, y)
		return
	}
	if b.useMMB(T, r, e) {
		b.moeMMB(pdst, dst.Stride, px, x.Stride, T, K, rIDs, rW, e, nil, nil)
		return
	}
	// grouped GEMM over the rows sorted by expert: on tensor cores in fast
	// mode (FP8 experts are widened to BF16 as tiles load), 64-row tiles
	// when experts get many rows on average, else 16-row tiles
	var bm, threads int
	var kern string
	if fp8 || (!b.opts.Precise && b.mma && e.kind == backend.BF16) {
		bm, kern, threads = 16, "moe_mma16", 128
		if ns >= 48*E {
			bm, kern = 64, "moe_mma64"
		}
		if fp8 {
			kern += "_fp8"
		}
	} else {
		bm, kern, threads = moeBM, "moe_gemm_"+kindSuffix(e.kind), 256
	}
	maxTiles := (ns+bm-1)/bm + min(E, ns)
	perm, posOf := b.scratch(4*ns), b.scratch(4*ns)
	tiles, ntiles := b.scratch(12*maxTiles), b.scratch(4)
	gu, h, y := b.scratch(4*ns*2*I), b.scratch(4*ns*I), b.scratch(4*ns*D)
	b.moePlan(rIDs, ns, E, bm, perm.p, posOf.p, tiles.p, ntiles.p)
	b.launch(kern, dim3{(2*I + 63) / 64, maxTiles, 1}, dim3{threads, 1, 1}, 0,
		append([]uint64{pArg(px), lArg(x.Stride), pArg(perm.p), iArg(K), iArg(0), pArg(tiles.p), pArg(ntiles.p)}, e.args(e.gateUp, e.guScale, 2*I, D, pArg(gu.p), lArg(2*I))...)...)
	g, bl := flatGrid(ns * I)
	b.launch("k_silumul", g, bl, 0, pArg(h.p), lArg(I), pArg(gu.p), lArg(2*I), pArg(gu.p+uintptr(4*I)), lArg(2*I), iArg(ns), iArg(I))
	b.launch(kern, dim3{(D + 63) / 64, maxTiles, 1}, dim3{threads, 1, 1}, 0,
		append([]uint64{pArg(h.p), lArg(I), pArg(perm.p), iArg(K), iArg(1), pArg(tiles.p), pArg(ntiles.p)}, e.args(e.down, e.downScale, D, I, pArg(y.p), lArg(D))...)...)
	b.combine(pdst, dst.Stride, y.p, D, posOf.p, rW, T, K, 0, false)
	b.release(perm, posOf, tiles, ntiles, gu, h, y)
}

// toBF16 writes the rows×cols view at px (row stride ldx) as a contiguous
// BF16 matrix at dst, eight values per thread where the view allows.
func (b *Backend) toBF16(dst, px uintptr, ldx, rows, cols int) {
	if cols%8 == 0 && ldx%4 == 0 && px%16 == 0 {
		g, bl := flatGrid(rows * cols / 8)
		b.launch("k_tobf16v", g, bl, 0, pArg(dst), pArg(px), lArg(ldx), iArg(rows), iArg(cols))
		return
	}
	g, bl := flatGrid(rows * cols)
	b.launch("k_tobf16", g, bl, 0, pArg(dst), pArg(px), lArg(ldx), iArg(rows), iArg(cols))
}

// mmbSmem is moe_mmb's dynamic shared memory (MMB_SMEM in kernels.cu), and
// mmbMinRows the average rows per expert from which MoE takes it.
const (
	mmbSmem    = 3 * 256 * 64 * 2
	mmbMinRows = 64
)

// moePlan groups the ns slots of the routing ids rIDs by expert (E of them)
// into perm and posOf (ns ints each) and tiles of at most bm rows (the
// tiles' count at ntiles): k_moe_count, k_moe_tiles, k_moe_scatter.
func (b *Backend) moePlan(rIDs uintptr, ns, E, bm int, perm, posOf, tiles, ntiles uintptr) {
	if E > 4096 {
		panic(fmt.Sprintf("cuda.MoE: %d experts (at most 4096)", E))
	}
	cnt := b.scratch(3 * 4 * E) // counts, first positions, fill levels
	off, fill := cnt.p+uintptr(4*E), cnt.p+uintptr(8*E)
	b.record(opMemset, uint64(cnt.p), 0, uint64(E))
	b.launch("k_moe_count", dim3{min((ns+1023)/1024, 4*b.sms), 1, 1}, dim3{256, 1, 1}, 0, pArg(rIDs), iArg(ns), iArg(E), pArg(cnt.p))
	b.launch("k_moe_tiles", dim3{1, 1, 1}, dim3{32, 1, 1}, 0, pArg(cnt.p), iArg(E), pArg(off), pArg(fill), pArg(tiles), pArg(ntiles), iArg(bm))
	g, bl := flatGrid(ns)
	b.launch("k_moe_scatter", g, bl, 0, pArg(rIDs), iArg(ns), iArg(E), pArg(off), pArg(fill), pArg(perm), pArg(posOf))
	b.release(cnt)
}

// useMMB reports whether MoE of T rows takes moeMMB: BF16 experts, or FP8
// ones on wgmma (RINGO_CUDA_MMB_FP8=0 keeps them on moe_mma*_fp8).
func (b *Backend) useMMB(T int, r *routing, e *experts) bool {
	kind := e.kind == backend.BF16 || e.kind == backend.F8E4M3 && b.wgmma && b.mmbFP8 && e.bc%8 == 0
	return b.mmb && !b.opts.Precise && b.mma && kind && e.dim%8 == 0 && e.inter%8 == 0 && T*r.k >= mmbMinRows*e.n
}

// moeMMB runs the grouped MoE of T rows of x (BF16 experts, or FP8 ones
// on wgmma; D and I multiples of 8) on moe_mmb: x in BF16, the slots sorted by expert into
// 128-row tiles, gate|up with the SwiGLU in its epilogue (BF16 out), the down
// projection in BF16 (FP32 with RINGO_CUDA_MOE_YB=0), then the weighted sum
// per row in FP32. With gu and dw (a
// shared expert, BF16, [2I', D] and [D, I']) its products run on cuBLASLt
// from the same BF16 rows and the sum adds its output last.
func (b *Backend) moeMMB(pdst uintptr, ldd int, px uintptr, ldx, T, K int, rIDs, rW uintptr, e *experts, gu, dw *weight) {
	I, D, E := e.inter, e.dim, e.n
	ns := T * K
	maxTiles := (ns+127)/128 + min(E, ns)
	xb, perm, posOf := b.scratch(2*T*D), b.scratch(4*ns), b.scratch(4*ns)
	tiles, ntiles := b.scratch(12*maxTiles), b.scratch(4)
	yb := b.moeYB // the expert outputs in BF16
	yBytes := 4
	if yb {
		yBytes = 2
	}
	h, y := b.scratch(2*ns*I), b.scratch(yBytes*ns*D)
	b.toBF16(xb.p, px, ldx, T, D)
	b.moePlan(rIDs, ns, E, 128, perm.p, posOf.p, tiles.p, ntiles.p)
	suf, ssuf := "", ""
	if b.wgmma {
		suf = "_wg"
		if b.mmbStage {
			ssuf = "s" // BF16 expert outputs stored through shared memory
		}
	}
	// FP8 experts (wgmma only): the weights and their block scales
	w8, guW, downW := "", []uint64{pArg(e.gateUp)}, []uint64{pArg(e.down)}
	if e.kind == backend.F8E4M3 {
		w8 = "8"
		guW = append(guW, pArg(e.guScale), iArg(e.br), iArg(e.bc))
		downW = append(downW, pArg(e.downScale), iArg(e.br), iArg(e.bc))
	}
	b.launch("moe_mmb_gu"+suf+w8, dim3{(I + 63) / 64, maxTiles, 1}, dim3{256, 1, 1}, mmbSmem,
		append(append([]uint64{pArg(xb.p), lArg(D), pArg(perm.p), iArg(K), pArg(tiles.p), pArg(ntiles.p)}, guW...), iArg(I), iArg(D), pArg(h.p), lArg(I))...)
	down := "moe_mmb" + suf + w8
	if yb {
		down = "moe_mmb_yb" + suf + ssuf + w8
	}
	b.launch(down, dim3{(D + 127) / 128, maxTiles, 1}, dim3{256, 1, 1}, mmbSmem,
		append(append([]uint64{pArg(h.p), lArg(I), pArg(perm.p), iArg(K), iArg(1), pArg(tiles.p), pArg(ntiles.p)}, downW...), iArg(D), iArg(I), pArg(y.p), lArg(D))...)
	var ys uintptr
	if gu != nil {
		// the shared expert: [gate | up] in FP32, silu(gate)·up in BF16,
		// the down projection in FP32 (added by k_moe_combine)
		SI := dw.cols
		sgu, sh, sy := b.scratch(4*T*2*SI), b.scratch(2*T*SI), b.scratch(4*T*D)
		plan, err := b.lt.plan(2*SI, T, D, 2*SI, alignOf(sgu.p, uintptr(8*SI)))
		b.must(err)
		b.record(opLt, uint64(plan.id), uint64(gu.p), uint64(xb.p), uint64(sgu.p))
		g, bl := flatGrid(T * SI / 4)
		b.launch("k_silumul_bf16", g, bl, 0, pArg(sh.p), pArg(sgu.p), iArg(T), iArg(SI))
		plan, err = b.lt.plan(D, T, SI, D, alignOf(sy.p, uintptr(4*D)))
		b.must(err)
		b.record(opLt, uint64(plan.id), uint64(dw.p), uint64(sh.p), uint64(sy.p))
		ys = sy.p
		defer b.release(sgu, sh, sy)
	}
	b.combine(pdst, ldd, y.p, D, posOf.p, rW, T, K, ys, yb)
	b.release(xb, perm, posOf, tiles, ntiles, h, y)
}

// combine launches k_moe_combine (four columns per thread where the
// layouts allow): dst[t] = Σ_k w[t·K+k]·Y[posOf[t·K+k]] (+ Ys[t]) for the T
// rows of D columns; Y and Ys have row stride D. With bf16, Y is BF16
// (moe_mmb_yb): k_moe_combine4b or k_moe_combineb, the same sums.
func (b *Backend) combine(pdst uintptr, ldd int, py uintptr, D int, posOf, rW uintptr, T, K int, ys uintptr, bf16 bool) {
	name, yAlign := "k_moe_combine", uintptr(16)
	if bf16 {
		name, yAlign = "k_moe_combine4b", 8
	}
	if D%4 == 0 && ldd%4 == 0 && pdst%16 == 0 && py%yAlign == 0 && ys%16 == 0 {
		if !bf16 {
			name = "k_moe_combine4"
		}
		g, bl := flatGrid(T * D / 4)
		b.launch(name, g, bl, 0, pArg(pdst), lArg(ldd), pArg(py), lArg(D), pArg(posOf), pArg(rW), iArg(T), iArg(K), iArg(D), pArg(ys))
		return
	}
	if bf16 {
		name = "k_moe_combineb"
	}
	g, bl := flatGrid(T * D)
	b.launch(name, g, bl, 0, pArg(pdst), lArg(ldd), pArg(py), lArg(D), pArg(posOf), pArg(rW), iArg(T), iArg(K), iArg(D), pArg(ys))
}

// moeDCMaxTopK is the most experts per row of the two-kernel decode MoE
// (MOE_DC_MAXS - 1 in kernels.cu); more take the three kernels.
const moeDCMaxTopK = 8

// vector reports whether the experts have the vector kernels of few rows
// (moe_gu/moe_dc and moe_gemv/moe_down, _bf16v or _fp8).
func (e *experts) vector() bool {
	return e.kind == backend.F8E4M3 || (e.kind == backend.BF16 && e.dim%8 == 0 && e.inter%8 == 0)
}

// moeVector runs the vector kernels of MoE for T <= GEMVRows rows of x
// (e.vector()) with the routing's device ids and weights rIDs, rW (K per
// row): dst = Σ_k w·expert(x) per row and, when gateUp and down are not
// nil (a shared expert of e's kind, shapes and blocks), + the shared
// expert's output, computed as T extra slots ns..ns+T-1 of the same
// launches and added after the routed sum. Up to moeDCMaxTopK experts per
// row it takes two kernels (moe_gu, moe_dc), else three.
func (b *Backend) moeVector(pdst uintptr, ldd int, px uintptr, ldx, T, K int, rIDs, rW uintptr, e *experts, gateUp, down *weight) {
	I, D := e.inter, e.dim
	ns, slots := T*K, T*K
	if gateUp != nil {
		slots += T
	}
	vsuf, fp8 := "bf16v", e.kind == backend.F8E4M3
	if fp8 {
		vsuf = "fp8"
	}
	// the shared expert's weight (and scales) pointers, then ns
	shared := func(w *weight) []uint64 {
		var p, s uintptr
		if w != nil {
			p, s = w.p, w.scale
		}
		if fp8 {
			return []uint64{pArg(p), pArg(s), iArg(ns)}
		}
		return []uint64{pArg(p), iArg(ns)}
	}
	px, ldx, xs := b.aligned16(px, ldx, T, D)
	if T == 1 && !fp8 && gateUp != nil && K <= moeDCMaxTopK && !b.moe3 && b.moeFused && b.gdFits(slots, I, D) {
		// one kernel: the SwiGLU pairs, a grid barrier, the down
		// projections from rows staged in shared memory meanwhile
		act := b.scratch(4 * slots * I)
		early := b.guEarly && xs == nil && b.routeEnd == len(b.queue)
		b.launch(b.gdKernel(), dim3{D / gdRows, 1, 1}, dim3{32 * gdWarps, 1, 1}, gdSmem(slots, I, D, b.gdSharedPre),
			pArg(px), pArg(rIDs), pArg(rW), iArg(K), pArg(e.gateUp), pArg(e.down), iArg(I), iArg(D), pArg(act.p), pArg(pdst),
			pArg(gateUp.p), pArg(down.p), pArg(b.gdBar), bArg(early), iArg(b.gdStage), bArg(b.gdSharedPre), bArg(b.gdFlip), bArg(b.gdNA), bArg(b.gdPipe))
		b.release(act)
		b.release(xs...)
		return
	}
	if K <= moeDCMaxTopK && !b.moe3 {
		// two kernels: gate, up and SwiGLU; down projections and the sum
		act := b.scratch(4 * slots * I)
		var a []uint64
		if fp8 {
			a = []uint64{pArg(px), lArg(ldx), pArg(rIDs), iArg(K), pArg(e.gateUp), pArg(e.guScale), iArg(e.br), iArg(e.bc), iArg(I), iArg(D), pArg(act.p)}
		} else {
			a = []uint64{pArg(px), lArg(ldx), pArg(rIDs), iArg(K), pArg(e.gateUp), iArg(I), iArg(D), pArg(act.p)}
		}
		wg, wd := b.moeWarps[0], b.moeWarps[1] // warps per block
		// the shared expert's blocks may start before the wait when the
		// last command queued is the routing (it writes neither x nor act)
		early := b.guEarly && gateUp != nil && xs == nil && b.routeEnd == len(b.queue)
		gu, pr := "moe_gu_"+vsuf, 1 // pairs per warp
		if fp8 && (b.guPairs == 2 || b.guPairs == 4) {
			gu, pr = [...]string{2: "moe_gu2_fp8", 4: "moe_gu4_fp8"}[b.guPairs], b.guPairs
		}
		if fp8 && T == 1 && b.guMMAFits(e, slots) {
			// the pairs on tensor cores, the warps numbered across the slots' tiles
			name, smem := "moe_gummat9w", gummat9wSmem(D)
			if b.mmaE4M3&1 != 0 {
				name, smem = "moe_gummat9q", gummat9qSmem(D)
			}
			b.launch(name, dim3{(slots*I/8 + 8) / 9, 1, 1}, dim3{32 * 9, 1, 1}, smem, append(append(a, shared(gateUp)...), bArg(early), iArg(1))...)
		} else {
			b.launch(gu, dim3{(I + wg*pr - 1) / (wg * pr), slots, 1}, dim3{32 * wg, 1, 1}, 0, append(append(a, shared(gateUp)...), bArg(early))...)
		}
		if fp8 {
			a = []uint64{pArg(act.p), pArg(rIDs), pArg(rW), iArg(K), pArg(e.down), pArg(e.downScale), iArg(e.br), iArg(e.bc), iArg(D), iArg(I), pArg(pdst), lArg(ldd)}
		} else {
			a = []uint64{pArg(act.p), pArg(rIDs), pArg(rW), iArg(K), pArg(e.down), iArg(D), iArg(I), pArg(pdst), lArg(ldd)}
		}
		m := K // the slots of a token
		if down != nil {
			m++
		}
		if fp8 && b.dcMMA && e.bc%128 == 0 && e.br%16 == 0 && I%256 == 0 && m <= moeDCMaxTopK+1 && dcmmatSmem(m, I, false)+(6<<10) <= b.smemOptin {
			// the down projections on tensor cores, a warp per slot
			name, wide := "moe_dcmmat", b.dcWide && I%512 == 0 && dcmmatSmem(m, I, true)+(6<<10) <= b.smemOptin
			smem := dcmmatSmem(m, I, wide)
			if wide {
				name = "moe_dcmmatw"
				if b.dcOnePass && I <= 1024 {
					name = "moe_dcmmatw1"
				}
				if b.mmaE4M3&2 != 0 && dcmmatqSmem(m, I)+(6<<10) <= b.smemOptin {
					name, smem = "moe_dcmmatq", dcmmatqSmem(m, I)
				}
			}
			b.launch(name, dim3{(D + 15) / 16, T, 1}, dim3{32 * m, 1, 1}, smem, append(append(a, shared(down)...), bArg(b.dcReg))...)
		} else if r := b.dclRows; fp8 && r > 0 && I <= 1024 {
			// r rows per warp, their slots one after another (moe_dcl)
			name := [...]string{1: "moe_dcl_fp8", 2: "moe_dcl2_fp8", 4: "moe_dcl4_fp8"}[r] // no formatting per launch
			b.launch(name, dim3{(D + wd*r - 1) / (wd * r), T, 1}, dim3{32 * wd, 1, 1}, 0, append(append(a, shared(down)...), bArg(b.dcReg))...)
		} else if sp := b.dcSplit; (sp == 2 || sp == 3) && !fp8 && sp*wd <= 32 {
			b.launch([...]string{2: "moe_dc2_bf16v", 3: "moe_dc3_bf16v"}[sp], dim3{(D + wd - 1) / wd, T, 1}, dim3{sp * 32 * wd, 1, 1}, 0, append(append(a, shared(down)...), bArg(b.dcPre), bArg(b.dcReg))...)
		} else {
			b.launch("moe_dc_"+vsuf, dim3{(D + wd - 1) / wd, T, 1}, dim3{32 * wd, 1, 1}, 0, append(append(a, shared(down)...), bArg(b.dcPre), bArg(b.dcReg))...)
		}
		b.release(act)
		b.release(xs...)
		return
	}
	gu, y := b.scratch(4*slots*2*I), b.scratch(4*slots*D)
	a := append([]uint64{pArg(px), lArg(ldx), pArg(rIDs), iArg(K), iArg(0)}, e.args(e.gateUp, e.guScale, 2*I, D, pArg(gu.p), lArg(2*I))...)
	b.launch("moe_gemv_"+vsuf, dim3{(2*I + 7) / 8, slots, 1}, dim3{256, 1, 1}, 0, append(a, shared(gateUp)...)...)
	a = append([]uint64{pArg(gu.p), lArg(2 * I), pArg(rIDs)}, e.args(e.down, e.downScale, D, I, pArg(y.p), lArg(D))...)
	b.launch("moe_down_"+vsuf, dim3{(D + 7) / 8, slots, 1}, dim3{256, 1, 1}, 0, append(a, shared(down)...)...)
	var ys uintptr
	if gateUp != nil {
		ys = y.p + uintptr(4*ns*D)
	}
	g, bl := flatGrid(T * D)
	b.launch("k_moe_combine", g, bl, 0, pArg(pdst), lArg(ldd), pArg(y.p), lArg(D), pArg(0), pArg(rW), iArg(T), iArg(K), iArg(D), pArg(ys))
	b.release(gu, y)
	b.release(xs...)
}

// dcmmatSmem is moe_dcmmat's (or, wide, moe_dcmmatw's) dynamic shared
// memory for m slots of I columns: each warp's 2 stages of 16 rows of 256
// bytes at a stride of 320 (wide: one stage of 512 at 576), and its
// activation row in FP16 (kernels.cu).
func dcmmatSmem(m, I int, wide bool) int {
	if wide {
		return m * (16*576 + 2*I)
	}
	return m * (2*16*320 + 2*I)
}

// gummat9wSmem is moe_gummat9w's dynamic shared memory for K columns: 9
// warps of 2 stages of 16 rows of 512 bytes at a stride of 576, and the
// activation row in FP16 (kernels.cu).
func gummat9wSmem(K int) int { return 9*2*16*576 + 2*K }

// q8Smem is the shared memory of an activation row of K columns as
// to_e4m3x3's three E4M3 planes (Q8SMEM in kernels.cu): each K bytes and
// 64 of padding, then a float per 128 columns, rounded up to 16 bytes.
func q8Smem(K int) int { return (3*(K+64) + K/32 + 15) &^ 15 }

// gummat9qSmem is moe_gummat9q's dynamic shared memory for K columns:
// moe_gummat9w's stages and the row as E4M3 planes.
func gummat9qSmem(K int) int { return 9*2*16*576 + q8Smem(K) }

// dcmmatqSmem is moe_dcmmatq's dynamic shared memory for m slots of I
// columns: moe_dcmmatw's stage per warp and its row as E4M3 planes.
func dcmmatqSmem(m, I int) int { return m * (16*576 + q8Smem(I)) }

// guMMAFits says whether one token's gate|up pairs of FP8 experts e in
// slots slots run as moe_gummat9w: sm_90, the shapes it needs, and a grid
// of one block per SM that fills at least 90 % of the SMs in one wave
// (Ring-flash's 9 × 128 tiles: 128 blocks on 132 SMs); smaller ones keep
// moe_gu2_fp8, whose many small blocks fill the GPU.
func (b *Backend) guMMAFits(e *experts, slots int) bool {
	I, K := e.inter, e.dim
	if !b.guMMA || e.kind != backend.F8E4M3 || I%8 != 0 || K%512 != 0 || e.br%8 != 0 || e.bc%128 != 0 || slots > moeDCMaxTopK+1 ||
		max(gummat9wSmem(K), gummat9qSmem(K))+(6<<10) > b.smemOptin {
		return false
	}
	blocks := (slots*I/8 + 8) / 9
	return b.guMMAAnyGrid || blocks <= b.sms && 10*blocks >= 9*b.sms
}

// moe_gd_bf16v's output rows and warps per block (GD_ROWS, GD_WARPS in
// kernels.cu).
const gdRows, gdWarps = 8, 18

// gdVariants are moe_gd_bf16v's variants for comparisons (kernels.cu):
// u4, the kernel before (rounds of GV_U chunks per row and lane, the knobs
// as arguments), s2 (rounds of 2 chunks, the knobs compiled in) and any
// (the knobs as arguments even at their defaults).
var gdVariants = []string{"u4", "s2", "any"}

// gdKernel is the name of the moe_gd_bf16v variant to launch: with the
// knobs at their defaults moe_gd_bf16v, which has them compiled in (or
// b.gdVar's variant), else moe_gd_bf16v_any, which takes them as arguments
// (or u4).
func (b *Backend) gdKernel() string {
	defaults := b.gdStage == 2 && b.gdSharedPre && b.gdFlip && b.gdNA && b.gdPipe
	switch {
	case b.gdVar == "u4":
		return "moe_gd_bf16v_u4"
	case !defaults || b.gdVar == "any":
		return "moe_gd_bf16v_any"
	case b.gdVar != "":
		return "moe_gd_bf16v_" + b.gdVar
	}
	return "moe_gd_bf16v"
}

// gdSmem is moe_gd_bf16v's dynamic shared memory for m slots of
// intermediate size I: GD_ROWS rows of each slot's down projection, BF16,
// and the m·I SwiGLU pairs, FP32.
// With spre the shared expert's gate and up rows of the block's shared
// pairs (ceil(I / blocks) of them, D values each) are staged in the pairs'
// region before the wait, which then holds the larger of the two.
func gdSmem(m, I, D int, spre bool) int {
	pairs := m * I * 4
	if spre {
		nb := D / gdRows
		pairs = max(pairs, (I+nb-1)/nb*2*D*2)
	}
	return gdRows*m*I*2 + pairs
}

// gdFits reports whether moe_gd_bf16v can run the one-row MoE of m slots
// (the routed experts and one shared expert) with intermediate size I and
// hidden size D: whole rows and chunks, its shared memory, and all D/8 of
// its blocks resident on the GPU at once, which its grid barrier needs (so
// also no other open backend on the device that might run it: gridUsers).
func (b *Backend) gdFits(m, I, D int) bool {
	if b.d.cuOccupancyMaxActiveBlocksPerMultiprocessor == 0 || !b.gridAlone() || D%gdRows != 0 || I%8 != 0 || D%8 != 0 || m > moeDCMaxTopK+1 {
		return false
	}
	smem := gdSmem(m, I, D, b.gdSharedPre)
	return smem <= b.smemOptin-1024 && b.allResident(b.gdKernel(), 32*gdWarps, smem, D/gdRows) // 1024: its static shared memory
}

// occKey identifies a kernel's launch shape for Backend.occ.
type occKey struct {
	fn            uintptr
	threads, smem int
}

// allResident reports whether blocks blocks of kernel name, each of threads
// threads and smem bytes of dynamic shared memory, fit on the GPU at once
// (cuOccupancyMaxActiveBlocksPerMultiprocessor, cached per shape), as a
// kernel with a grid barrier needs.
func (b *Backend) allResident(name string, threads, smem, blocks int) bool {
	k := occKey{b.fns[name], threads, smem}
	per, ok := b.occ[k]
	if !ok {
		var n int32
		if b.d.check(ccall(b.d.cuOccupancyMaxActiveBlocksPerMultiprocessor, uintptr(unsafe.Pointer(&n)), k.fn, uintptr(threads), uintptr(smem)),
			"cuOccupancyMaxActiveBlocksPerMultiprocessor") == nil {
			per = int(n)
		}
		if b.occ == nil {
			b.occ = map[occKey]int{}
		}
		b.occ[k] = per
	}
	return blocks <= per*b.sms
}

// MoEShared implements backend.SharedMoEer in fast mode. For the vector
// kernels of few rows (T <= GEMVRows) the shared expert runs as T extra
// slots of the routed experts' launches; for prefill on moe_mmb (BF16) its
// products run on cuBLASLt from the experts' BF16 copy of x, with the
// SwiGLU in BF16 as the routed experts have it. Either way its output is
// added to each row after the routed sum (Σ_k in k order, then + shared), as
// MoE followed by Add does. It returns false for every other case: precise
// mode, experts without these kernels, or a shared expert whose kind, FP8
// blocks or shapes ([2I, D] and [D, I], or [2I', D] and [D, I'] for moe_mmb)
// do not fit.
func (b *Backend) MoEShared(dst, x backend.Tensor, rt backend.Routing, ex backend.Experts, gateUp, down backend.Weight) bool {
	r, ok1 := rt.(*routing)
	e, ok2 := ex.(*experts)
	gu, ok3 := gateUp.(*weight)
	dw, ok4 := down.(*weight)
	if !ok1 || !ok2 || !ok3 || !ok4 || b.opts.Precise {
		return false
	}
	T, D, I := x.Rows, e.dim, e.inter
	if T == 0 || x.Cols != D || dst.Rows != T || dst.Cols != D || r.rows < T {
		return false
	}
	if T > GEMVRows {
		// prefill: the shared expert beside moe_mmb's experts, on cuBLASLt
		// from the same BF16 rows
		SI := dw.cols
		if !b.useMMB(T, r, e) || b.lt == nil || gu.kind != backend.BF16 || dw.kind != backend.BF16 || gu.fp32 || dw.fp32 || gu.tri != 0 ||
			gu.rows != 2*SI || gu.cols != D || dw.rows != D || SI%4 != 0 {
			return false
		}
		defer b.enter()()
		rIDs, rW := b.routingPtrs(r)
		b.moeMMB(b.ptr("MoEShared", dst), dst.Stride, b.ptr("MoEShared", x), x.Stride, T, r.k, rIDs, rW, e, gu, dw)
		return true
	}
	if !e.vector() {
		return false
	}
	for _, w := range []*weight{gu, dw} {
		if w.kind != e.kind || w.fp32 || w.p%16 != 0 {
			return false
		}
		if e.kind == backend.F8E4M3 && (w.br != e.br || w.bc != e.bc || w.scale == 0) {
			return false
		}
	}
	if gu.rows != 2*I || gu.cols != D || dw.rows != D || dw.cols != I {
		return false
	}
	defer b.enter()()
	rIDs, rW := b.routingPtrs(r)
	b.moeVector(b.ptr("MoEShared", dst), dst.Stride, b.ptr("MoEShared", x), x.Stride, T, r.k, rIDs, rW, e, gu, dw)
	return true
}

// args are the kernel arguments of one stacked expert matrix p ([E][N][K]):
// p, N, K, then for FP8 experts its scales and block size, then out.
func (e *experts) args(p, scale uintptr, N, K int, out ...uint64) []uint64 {
	a := []uint64{pArg(p), iArg(N), iArg(K)}
	if e.kind == backend.F8E4M3 {
		a = append(a, pArg(scale), iArg(e.br), iArg(e.bc))
	}
	return append(a, out...)
}
