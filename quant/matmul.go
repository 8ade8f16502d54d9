package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
)

// Activation formats used by QActs.
//
// For Q4_0 and Q8_0 weights the activations are quantized to blocks of 32
// int8 with a float32 scale (an internal variant of Q8_0 whose scale is f32
// instead of f16: 36 bytes per block). For Q4_K and Q6_K weights they are
// quantized to ggml Q8_K (292 bytes per 256 elements). For F32/F16/BF16
// weights the float activations are used directly.
const q8aBlockBytes = 36

// ActType returns the activation format that MatMulQ uses for weights of
// type t: Q8_0 (internal f32-scaled variant), Q8_K, or F32.
func ActType(t Type) Type {
	switch t {
	case Q4_0, Q8_0:
		return Q8_0
	case Q4_K, Q6_K:
		return Q8_K
	default:
		return F32
	}
}

// QActs holds T rows of K activations prepared (quantized) for multiplying
// with weights of one activation format, so that one quantization can be
// reused across many weight matrices of compatible types (see ActType). The
// zero value is ready to use; Quantize reuses its buffers.
type QActs struct {
	Kind Type // Q8_0, Q8_K or F32 (see ActType)
	T, K int

	data   []byte    // quantized rows, rowStride bytes each
	stride int       // bytes per quantized row
	x      []float32 // F32 kind: the caller's activations (not copied)
	ldx    int
	aux    []byte // Q8_K kind with T > 1: tileAux of each group of four rows
}

// QuantizeActivations prepares T rows of K activations (row t at x[t*ldx:])
// for multiplication with weights of type wt. It is a convenience wrapper
// around (*QActs).Quantize.
func QuantizeActivations(wt Type, x []float32, ldx, T, K int) *QActs {
	qa := new(QActs)
	qa.Quantize(wt, x, ldx, T, K)
	return qa
}

// Quantize (re)fills qa with T rows of K activations from x (row t at
// x[t*ldx:]) in the format required by weights of type wt. For float weight
// types x is referenced, not copied, and must stay unchanged while qa is used.
// It panics if the shapes are inconsistent.
func (qa *QActs) Quantize(wt Type, x []float32, ldx, T, K int) {
	kind := ActType(wt)
	if T < 0 || K < 0 {
		panic(fmt.Sprintf("quant: QActs.Quantize: negative shape T=%d K=%d", T, K))
	}
	if K%BlockSize(wt) != 0 || (kind != F32 && K%BlockSize(kind) != 0) {
		panic(fmt.Sprintf("quant: QActs.Quantize: K=%d not a multiple of the %v block size", K, wt))
	}
	if T > 0 && (ldx < K || len(x) < (T-1)*ldx+K) {
		panic(fmt.Sprintf("quant: QActs.Quantize: x has %d elements, need (T-1)*ldx+K with T=%d ldx=%d K=%d", len(x), T, ldx, K))
	}
	qa.Kind, qa.T, qa.K = kind, T, K
	qa.x, qa.ldx = nil, 0
	switch kind {
	case F32:
		qa.x, qa.ldx = x, ldx
		qa.stride = 0
		return
	case Q8_0:
		qa.stride = K / QK * q8aBlockBytes
	case Q8_K:
		qa.stride = K / QKK * TypeSize(Q8_K)
	}
	n := qa.stride * T
	if cap(qa.data) < n {
		qa.data = make([]byte, n)
	}
	qa.data = qa.data[:n]
	for t := 0; t < T; t++ {
		row := x[t*ldx : t*ldx+K]
		dst := qa.data[t*qa.stride : (t+1)*qa.stride]
		if kind == Q8_0 && quantQ8aRowFast != nil {
			quantQ8aRowFast(dst, row)
		} else if kind == Q8_0 {
			for b := 0; b < K/QK; b++ {
				quantizeQ8aBlock(dst[b*q8aBlockBytes:], row[b*QK:b*QK+QK])
			}
		} else {
			q8k := quantizeQ8KBlock
			if quantQ8KFast != nil {
				q8k = quantQ8KFast
			}
			for b := 0; b < K/QKK; b++ {
				q8k(dst[b*292:], row[b*QKK:b*QKK+QKK])
			}
		}
	}
	qa.aux = qa.aux[:0]
	if kind == Q8_K && T > 1 {
		nb := K / QKK
		n := (T + 3) / 4 * nb * tileAuxBytes
		if cap(qa.aux) < n {
			qa.aux = make([]byte, n)
		}
		qa.aux = qa.aux[:n]
		buildTileAux(qa.aux, qa.data, qa.stride, T, nb)
	}
}

// quantQ8KFast is a SIMD quantizeQ8KBlock (nil where there is none). It
// writes the same bytes for finite inputs.
var quantQ8KFast func(dst []byte, x []float32)

// quantQ8aRowFast is a SIMD quantizeQ8aBlock over a whole row (len(x)/32
// blocks; nil where there is none). It writes the same bytes for finite
// inputs.
var quantQ8aRowFast func(dst []byte, x []float32)

// quantizeQ8aBlock writes the internal activation block: f32 d | 32 x int8.
func quantizeQ8aBlock(dst []byte, x []float32) {
	var amax float32
	for _, v := range x[:32] {
		amax = max(amax, abs32(v))
	}
	d := amax / 127
	var id float32
	if d != 0 {
		id = 1 / d
	}
	binary.LittleEndian.PutUint32(dst[0:], math.Float32bits(d))
	for j := 0; j < 32; j++ {
		dst[4+j] = byte(int8(math.Round(float64(x[j] * id))))
	}
}

var qaPool = sync.Pool{New: func() any { return new(QActs) }}

// MatMul computes out[t*ldo+n] = Σ_k x[t*ldx+k] * W[n][k] for t in [0,T) and
// n in [0,N), where row n of W (type t, K elements) starts at
// w[n*RowBytes(t,K):]. For quantized types the activations are first
// quantized (Q8_0 or Q8_K, as llama.cpp does) and integer dot products are
// used. It is single-threaded; callers split N across goroutines. It panics
// on inconsistent shapes or unsupported types.
func MatMul(t Type, out []float32, ldo int, x []float32, ldx int, w []byte, T, N, K int) {
	if T == 0 || N == 0 {
		return
	}
	qa := qaPool.Get().(*QActs)
	qa.Quantize(t, x, ldx, T, K)
	MatMulQ(t, out, ldo, qa, w, N, K)
	qa.x = nil
	qaPool.Put(qa)
}

// MatMulQ is MatMul with activations already prepared by QActs.Quantize
// (for a weight type with the same ActType as t). K must equal qa.K.
func MatMulQ(t Type, out []float32, ldo int, qa *QActs, w []byte, N, K int) {
	T := qa.T
	if T == 0 || N == 0 {
		return
	}
	if K != qa.K || ActType(t) != qa.Kind {
		panic(fmt.Sprintf("quant: MatMulQ: activations (%v, K=%d) do not match weights (%v, K=%d)", qa.Kind, qa.K, t, K))
	}
	if !t.Supported() || t == Q8_K {
		panic(fmt.Sprintf("quant: MatMulQ: unsupported weight type %v", t))
	}
	rb := RowBytes(t, K)
	if len(w) < N*rb {
		panic(fmt.Sprintf("quant: MatMulQ: w has %d bytes, need N*RowBytes = %d*%d", len(w), N, rb))
	}
	if ldo < N || len(out) < (T-1)*ldo+N {
		panic(fmt.Sprintf("quant: MatMulQ: out has %d elements, need (T-1)*ldo+N with T=%d ldo=%d N=%d", len(out), T, ldo, N))
	}
	if K == 0 {
		for tt := 0; tt < T; tt++ {
			clear(out[tt*ldo : tt*ldo+N])
		}
		return
	}
	k := kernels
	switch t {
	case F32, F16, BF16:
		var dot func(w []byte, x []float32) float32
		switch t {
		case F32:
			dot = k.f32
		case F16:
			dot = k.f16
		default:
			dot = k.bf16
		}
		for n := 0; n < N; n++ {
			row := w[n*rb : (n+1)*rb]
			for tt := 0; tt < T; tt++ {
				out[tt*ldo+n] = dot(row, qa.x[tt*qa.ldx:tt*qa.ldx+K])
			}
		}
	default:
		var dot func(w, x []byte) float32
		switch t {
		case Q4_0:
			dot = k.q4_0
		case Q8_0:
			dot = k.q8_0
		case Q4_K:
			dot = k.q4k
		case Q6_K:
			dot = k.q6k
		}
		var x4 func(w []byte, xs *[4][]byte, res *[4]float32)
		switch t {
		case Q4_0:
			x4 = k.q4_0x4
		case Q8_0:
			x4 = k.q8_0x4
		case Q4_K:
			x4 = k.q4kx4
		case Q6_K:
			x4 = k.q6kx4
		}
		var t2 tileKernel
		var t8 tileKernel8
		switch t {
		case Q4_K:
			t2, t8 = k.q4kx2x4, k.q4kx2x8
		case Q6_K:
			t2, t8 = k.q6kx2x4, k.q6kx2x8
		}
		s := qa.stride
		if T == 1 {
			var rows rowsKernel
			switch t {
			case Q4_0:
				rows = k.q4_0Rows
			case Q8_0:
				rows = k.q8_0Rows
			case Q4_K:
				rows = k.q4kRows
			case Q6_K:
				rows = k.q6kRows
			}
			if rows != nil {
				rows(w[:N*rb], rb, qa.data[:s], out[:N])
				return
			}
		}
		if x4 != nil && (t2 != nil || t8 != nil) && useTiles && T > 1 && (k.tileMaxK == 0 || K <= k.tileMaxK) {
			matMulTiles(out, ldo, qa, w, rb, N, dot, x4, t2, t8)
			return
		}
		if x4 == nil || T == 1 {
			for n := 0; n < N; n++ {
				row := w[n*rb : (n+1)*rb]
				for tt := 0; tt < T; tt++ {
					out[tt*ldo+n] = dot(row, qa.data[tt*s:(tt+1)*s])
				}
			}
			return
		}
		matMulX4(out, ldo, qa.data, s, w, rb, T, N, dot, x4)
	}
}

// x4TileBytes is the size of the tile of weight rows that matMulX4 keeps in
// the L1 cache while all groups of four activation rows pass over it.
var x4TileBytes = 16 << 10

// x4ActBytes bounds the quantized activation rows that matMulX4 runs over
// one tile (so that they stay in the L2 cache); more rows take several passes
// over the weights.
var x4ActBytes = 256 << 10

// matMulX4 runs the four-row kernel x4 over groups of four activation rows
// (rows of x, s bytes apart) for each weight row (rb bytes each), tiled over
// the weight rows and, for many rows, over the activation rows. A group of two or three rows repeats its last row (the
// extra results are dropped); a single remaining row uses dot.
func matMulX4(out []float32, ldo int, x []byte, s int, w []byte, rb, T, N int,
	dot func(w, x []byte) float32, x4 func(w []byte, xs *[4][]byte, res *[4]float32)) {
	tile := max(1, x4TileBytes/rb)
	tb := max(4, x4ActBytes/s&^3) // activation rows per pass over W
	for tb0 := 0; tb0 < T; tb0 += tb {
		matMulX4Rows(out, ldo, x, s, w, rb, tb0, min(T, tb0+tb), N, tile, dot, x4)
	}
}

// matMulX4Rows is matMulX4 for activation rows [ta, tb).
func matMulX4Rows(out []float32, ldo int, x []byte, s int, w []byte, rb, ta, tb, N, tile int,
	dot func(w, x []byte) float32, x4 func(w []byte, xs *[4][]byte, res *[4]float32)) {
	var xs [4][]byte
	var res [4]float32
	for n0 := 0; n0 < N; n0 += tile {
		n1 := min(N, n0+tile)
		for t0 := ta; t0 < tb; t0 += 4 {
			nr := min(4, tb-t0)
			if nr == 1 {
				dotRows(out[t0*ldo:], x[t0*s:(t0+1)*s], w, rb, n0, n1, dot)
				continue
			}
			padRows(&xs, x, s, t0, nr)
			for n := n0; n < n1; n++ {
				x4(w[n*rb:(n+1)*rb], &xs, &res)
				for i := 0; i < nr; i++ {
					out[(t0+i)*ldo+n] = res[i]
				}
			}
		}
	}
}

// dotRows sets o[n] = w_n · xr for the weight rows n0 <= n < n1 (row n at
// w[n*rb:]): one activation row, one dot product per weight row.
func dotRows(o []float32, xr, w []byte, rb, n0, n1 int, dot func(w, x []byte) float32) {
	for n := n0; n < n1; n++ {
		o[n] = dot(w[n*rb:(n+1)*rb], xr)
	}
}

// padRows points xs at the nr (1..4) activation rows from t0 (row r at
// x[r*s:]), repeating the last one where nr < 4, for the four-row kernels.
func padRows(xs *[4][]byte, x []byte, s, t0, nr int) {
	for i := range xs {
		r := t0 + min(i, nr-1)
		xs[i] = x[r*s : (r+1)*s]
	}
}

// rowsKernel multiplies len(out) weight rows (row i at w[i*rb:]) by one
// activation row x of the same K: out[i] = w_i · x.
type rowsKernel func(w []byte, rb int, x []byte, out []float32)

// kernelSet holds the row-dot kernels. Each takes one full weight row and one
// full activation row of the same K (slices already bounds-checked).
type kernelSet struct {
	f32, f16, bf16       func(w []byte, x []float32) float32
	q4_0, q8_0, q4k, q6k func(w, x []byte) float32
	// Optional multi-row kernels: one weight row against four activation
	// rows (results in res[0..3]); nil where there is none, and MatMulQ then
	// uses the row kernels.
	q4_0x4, q8_0x4, q4kx4, q6kx4 func(w []byte, xs *[4][]byte, res *[4]float32)
	// Optional tile kernels: two weight rows against four activation rows
	// (see tile.go); nil where there is none.
	q4kx2x4, q6kx2x4 tileKernel
	q4kx2x8, q6kx2x8 tileKernel8
	// tileMaxK, where non-zero, limits the tile kernels to K <= tileMaxK
	// (for longer rows the set's four-row kernels are faster).
	tileMaxK int
	// Optional one-activation-row kernels over many weight rows: out[i] =
	// w[i*rb:] · x for i < len(out) (one call per product instead of one
	// per weight row; used for T = 1); nil where there is none.
	q4_0Rows, q8_0Rows, q4kRows, q6kRows rowsKernel
	name                                 string
}

var genericKernels = kernelSet{
	f32: dotF32Go, f16: dotF16Go, bf16: dotBF16Go,
	q4_0: dotQ4_0Go, q8_0: dotQ8_0Go, q4k: dotQ4KGo, q6k: dotQ6KGo,
	name: "generic",
}

// kernels is the active kernel set (replaced by SIMD kernels at init when the
// CPU supports them).
var kernels = genericKernels

// KernelName reports which kernel implementation MatMul uses ("generic",
// "avx2" or "avx512vnni").
func KernelName() string { return kernels.name }

// ---- pure-Go reference kernels.

func dotF32Go(w []byte, x []float32) float32 {
	w = w[:4*len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])) * x[i]
		s1 += math.Float32frombits(binary.LittleEndian.Uint32(w[4*i+4:])) * x[i+1]
		s2 += math.Float32frombits(binary.LittleEndian.Uint32(w[4*i+8:])) * x[i+2]
		s3 += math.Float32frombits(binary.LittleEndian.Uint32(w[4*i+12:])) * x[i+3]
	}
	for ; i < len(x); i++ {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(w[4*i:])) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotF16Go(w []byte, x []float32) float32 {
	w = w[:2*len(x)]
	var s float32
	for i, v := range x {
		s += F16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * v
	}
	return s
}

func dotBF16Go(w []byte, x []float32) float32 {
	w = w[:2*len(x)]
	var s float32
	for i, v := range x {
		s += math.Float32frombits(uint32(binary.LittleEndian.Uint16(w[2*i:]))<<16) * v
	}
	return s
}

func dotQ4_0Go(w, x []byte) float32 {
	nb := len(x) / q8aBlockBytes
	var s float32
	for b := 0; b < nb; b++ {
		wb := w[b*18 : b*18+18]
		xb := x[b*q8aBlockBytes : b*q8aBlockBytes+q8aBlockBytes]
		dx := math.Float32frombits(binary.LittleEndian.Uint32(xb))
		var sum int32
		for j := 0; j < 16; j++ {
			sum += int32(int(wb[2+j]&0xf)-8) * int32(int8(xb[4+j]))
			sum += int32(int(wb[2+j]>>4)-8) * int32(int8(xb[20+j]))
		}
		s += float32(sum) * (getF16(wb) * dx)
	}
	return s
}

func dotQ8_0Go(w, x []byte) float32 {
	nb := len(x) / q8aBlockBytes
	var s float32
	for b := 0; b < nb; b++ {
		wb := w[b*34 : b*34+34]
		xb := x[b*q8aBlockBytes : b*q8aBlockBytes+q8aBlockBytes]
		dx := math.Float32frombits(binary.LittleEndian.Uint32(xb))
		var sum int32
		for j := 0; j < 32; j++ {
			sum += int32(int8(wb[2+j])) * int32(int8(xb[4+j]))
		}
		s += float32(sum) * (getF16(wb) * dx)
	}
	return s
}

func dotQ4KGo(w, x []byte) float32 {
	nb := len(x) / 292
	var s float32
	for b := 0; b < nb; b++ {
		wb := w[b*144 : b*144+144]
		xb := x[b*292 : b*292+292]
		dx := math.Float32frombits(binary.LittleEndian.Uint32(xb))
		d := getF16(wb[0:]) * dx
		dmin := getF16(wb[2:]) * dx
		qs := wb[16:144]
		xq := xb[4:260]
		var sumi, summ int32
		for j := 0; j < 4; j++ {
			sc1, m1 := q4kScaleMin(2*j, wb[4:16])
			sc2, m2 := q4kScaleMin(2*j+1, wb[4:16])
			var a, c int32
			for l := 0; l < 32; l++ {
				a += int32(qs[32*j+l]&0xf) * int32(int8(xq[64*j+l]))
				c += int32(qs[32*j+l]>>4) * int32(int8(xq[64*j+32+l]))
			}
			sumi += a*int32(sc1) + c*int32(sc2)
			bs := func(i int) int32 { return int32(int16(binary.LittleEndian.Uint16(xb[260+2*i:]))) }
			summ += int32(m1)*(bs(4*j)+bs(4*j+1)) + int32(m2)*(bs(4*j+2)+bs(4*j+3))
		}
		s += d*float32(sumi) - dmin*float32(summ)
	}
	return s
}

func dotQ6KGo(w, x []byte) float32 {
	nb := len(x) / 292
	var s float32
	for b := 0; b < nb; b++ {
		wb := w[b*210 : b*210+210]
		xb := x[b*292 : b*292+292]
		d := getF16(wb[208:]) * math.Float32frombits(binary.LittleEndian.Uint32(xb))
		var sums [16]int32
		for h := 0; h < 2; h++ {
			ql := wb[64*h : 64*h+64]
			qh := wb[128+32*h : 128+32*h+32]
			xq := xb[4+128*h : 4+128*h+128]
			for l := 0; l < 32; l++ {
				is := 8*h + l/16
				q1 := int32(ql[l]&0xf|(qh[l]&3)<<4) - 32
				q2 := int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				sums[is] += q1 * int32(int8(xq[l]))
				sums[is+2] += q2 * int32(int8(xq[l+32]))
				sums[is+4] += q3 * int32(int8(xq[l+64]))
				sums[is+6] += q4 * int32(int8(xq[l+96]))
			}
		}
		var sumi int32
		for i := 0; i < 16; i++ {
			sumi += sums[i] * int32(int8(wb[192+i]))
		}
		s += d * float32(sumi)
	}
	return s
}
