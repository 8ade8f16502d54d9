// Package cpu implements backend.Backend on the host CPU: float32
// activations, weights used in place from memory-mapped files, work split
// over all cores.
package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// Backend is the CPU backend.
//
// A Backend is used by one goroutine at a time (a model serialises its
// forward passes); its operations keep their scratch memory between calls,
// so a decode step allocates nothing.
type Backend struct {
	pool *pool
	qa   quant.QActs // activations quantized for MatMul (one MatMul at a time)
	kv   kvType      // element type of the KV caches
	// kvRows keeps Q8_0 caches as rows where the CPU could use tiles (for
	// tests and comparisons)
	kvRows bool
	// noMmap copies uploaded weights into the backend's own memory
	// (Options.NoMmap), calling copied (if set) with each source
	noMmap bool
	copied func([]byte)

	matMul matMulTask
	norm   normTask
	rope   ropeTask
	light  lightningTask
	attn   attentionTask
	route  routeTask
	moe    moeTask
}

// New returns a CPU backend using threads workers (0: GOMAXPROCS).
func New(threads int) *Backend {
	if threads > maxWorkers {
		threads = maxWorkers
	}
	return &Backend{pool: newPool(threads)}
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "cpu" }

// Threads reports the number of workers.
func (b *Backend) Threads() int { return b.pool.n }

type buffer struct{ d []float32 }

func (b *buffer) Len() int { return len(b.d) }

// data returns the backing slice of t starting at its first element.
func data(t backend.Tensor) []float32 {
	if t.Rows == 0 {
		return nil
	}
	return t.Buf.(*buffer).d[t.Off : t.Off+(t.Rows-1)*t.Stride+t.Cols]
}

// row returns row r of t.
func row(t backend.Tensor, r int) []float32 {
	d := t.Buf.(*buffer).d
	o := t.Off + r*t.Stride
	return d[o : o+t.Cols]
}

// Alloc implements backend.Backend.
func (b *Backend) Alloc(rows, cols int) backend.Tensor {
	return backend.Tensor{Buf: &buffer{hugepage.Make[float32](rows * cols)}, Rows: rows, Cols: cols, Stride: cols}
}

// Free implements backend.Backend; memory is reclaimed by the garbage collector.
func (b *Backend) Free(t backend.Tensor) {}

// Write implements backend.Backend.
func (b *Backend) Write(t backend.Tensor, src []float32) {
	for r := 0; r < t.Rows; r++ {
		rowFromF32(t, r, src[r*t.Cols:(r+1)*t.Cols])
	}
}

// Read implements backend.Backend.
func (b *Backend) Read(t backend.Tensor, dst []float32) {
	for r := 0; r < t.Rows; r++ {
		rowToF32(dst[r*t.Cols:(r+1)*t.Cols], t, r)
	}
}

// Copy implements backend.Backend.
func (b *Backend) Copy(dst, src backend.Tensor) {
	checkSame("Copy", dst, src)
	if kvTypeOf(dst) != kvF32 || kvTypeOf(src) != kvF32 {
		copyMixed(dst, src)
		return
	}
	for r := 0; r < src.Rows; r++ {
		copy(row(dst, r), row(src, r))
	}
}

// Zero implements backend.Backend.
func (b *Backend) Zero(t backend.Tensor) {
	zeroKV(t)
}

func checkSame(op string, a, b backend.Tensor) {
	if a.Rows != b.Rows || a.Cols != b.Cols {
		panic(fmt.Sprintf("cpu.%s: shape %dx%d vs %dx%d", op, a.Rows, a.Cols, b.Rows, b.Cols))
	}
}

// weight is a weight in host memory.
type weight struct {
	name       string
	kind       backend.Kind
	qtype      uint32
	rows, cols int
	f32        []float32 // F32 (and every 1-D weight, converted)
	u16        []uint16  // F16 / BF16 (F8 is widened to BF16 at upload)
	q          []byte    // quantized rows
	rowBytes   int
}

func (w *weight) Shape() (int, int) { return w.rows, w.cols }

// Upload implements backend.Backend. F32, F16 and BF16 weights are used in
// place; FP8 weights are dequantized with their block scales into BF16;
// 1-D weights are converted to float32.
func (b *Backend) Upload(hw backend.HostWeight) (backend.Weight, error) {
	w, err := b.upload(hw)
	if err != nil {
		return nil, err
	}
	if b.noMmap {
		b.copied1(w.own())
	}
	return w, nil
}

// copied1 reports the source of one copy (Options.Copied).
func (b *Backend) copied1(src []byte) {
	if b.copied != nil && len(src) > 0 {
		b.copied(src)
	}
}

// upload makes the weight of Upload, referencing hw.Data where it can.
func (b *Backend) upload(hw backend.HostWeight) (*weight, error) {
	w := &weight{name: hw.Name, kind: hw.Kind, qtype: hw.QType, rows: hw.Rows, cols: hw.Cols}
	n := hw.Rows * hw.Cols
	switch hw.Kind {
	case backend.F32:
		if len(hw.Data) != 4*n {
			return nil, sizeErr(hw, 4*n)
		}
		w.f32 = asF32(hw.Data)
	case backend.F16, backend.BF16:
		if len(hw.Data) != 2*n {
			return nil, sizeErr(hw, 2*n)
		}
		w.u16 = asU16(hw.Data)
	case backend.F8E4M3:
		if len(hw.Data) != n {
			return nil, sizeErr(hw, n)
		}
		_, sc, err := hw.ScaleGrid()
		if err != nil {
			return nil, err
		}
		br, bc := hw.BlockRows, hw.BlockCols
		w.kind = backend.BF16
		w.u16 = hugepage.Make[uint16](n)
		for r := 0; r < hw.Rows; r++ {
			for c := 0; c < hw.Cols; c++ {
				v := safetensors.F8E4M3ToF32(hw.Data[r*hw.Cols+c]) * hw.Scale[(r/br)*sc+c/bc]
				w.u16[r*hw.Cols+c] = quant.F32ToBF16(v)
			}
		}
	case backend.Quant:
		if hw.Rows == 0 || len(hw.Data)%hw.Rows != 0 {
			return nil, fmt.Errorf("%s: %d bytes not divisible into %d rows", hw.Name, len(hw.Data), hw.Rows)
		}
		w.q = hw.Data
		w.rowBytes = len(hw.Data) / hw.Rows
		if err := checkQuant(w); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: unsupported weight kind %v", hw.Name, hw.Kind)
	}
	if hw.Rows == 1 && w.f32 == nil {
		w.f32 = w.toF32()
	}
	return w, nil
}

// own copies the weight's data into memory of its own (huge pages), so
// that it no longer references the uploaded bytes, and returns the bytes
// it copied from.
func (w *weight) own() []byte {
	switch {
	case w.q != nil:
		src := w.q
		w.q = hugepage.Make[byte](len(src))
		copy(w.q, src)
		return src
	case w.u16 != nil:
		src := w.u16
		w.u16 = hugepage.Make[uint16](len(src))
		copy(w.u16, src)
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(src))), 2*len(src))
	case w.f32 != nil:
		src := w.f32
		w.f32 = hugepage.Make[float32](len(src))
		copy(w.f32, src)
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(src))), 4*len(src))
	}
	return nil
}

func sizeErr(hw backend.HostWeight, want int) error {
	return fmt.Errorf("%s: %d bytes for %s [%d, %d], want %d", hw.Name, len(hw.Data), hw.Kind, hw.Rows, hw.Cols, want)
}

// toF32 converts the whole weight to float32.
func (w *weight) toF32() []float32 {
	out := make([]float32, w.rows*w.cols)
	for r := 0; r < w.rows; r++ {
		w.rowF32(r, out[r*w.cols:(r+1)*w.cols])
	}
	return out
}

// rowF32 converts row r into dst.
func (w *weight) rowF32(r int, dst []float32) {
	switch {
	case w.f32 != nil:
		copy(dst, w.f32[r*w.cols:(r+1)*w.cols])
	case w.kind == backend.BF16:
		for i, v := range w.u16[r*w.cols : (r+1)*w.cols] {
			dst[i] = math.Float32frombits(uint32(v) << 16)
		}
	case w.kind == backend.F16:
		for i, v := range w.u16[r*w.cols : (r+1)*w.cols] {
			dst[i] = quant.F16ToF32(v)
		}
	case w.kind == backend.Quant:
		dequantRow(w, r, dst)
	}
}

// asF32 reinterprets little-endian bytes as float32, copying if unaligned.
func asF32(b []byte) []float32 {
	if len(b) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
		return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// asU16 reinterprets little-endian bytes as uint16, copying if unaligned.
func asU16(b []byte) []uint16 {
	if len(b) == 0 {
		return nil
	}
	if uintptr(unsafe.Pointer(&b[0]))%2 == 0 {
		return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
	}
	out := make([]uint16, len(b)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}

// Embed implements backend.Backend.
func (b *Backend) Embed(dst backend.Tensor, table backend.Weight, ids []int32) {
	w := table.(*weight)
	for i, id := range ids {
		w.rowF32(int(id), row(dst, i))
	}
}

// MatMul implements backend.Backend.
func (b *Backend) MatMul(dst, x backend.Tensor, wt backend.Weight) {
	w := wt.(*weight)
	T, N, K := x.Rows, w.rows, w.cols
	if x.Cols != K || dst.Rows != T || dst.Cols != N {
		panic(fmt.Sprintf("cpu.MatMul %s: x %dx%d, w %dx%d, dst %dx%d", w.name, x.Rows, x.Cols, N, K, dst.Rows, dst.Cols))
	}
	if T == 0 {
		return
	}
	t := &b.matMul
	t.w, t.x, t.ldx, t.out, t.ldo, t.T = w, data(x), x.Stride, data(dst), dst.Stride, T
	t.panels = usePanels(w, T)
	if w.kind == backend.Quant && !t.panels {
		// quantize the activations once for all workers
		b.qa.Quantize(quant.Type(w.qtype), t.x, t.ldx, T, K)
	}
	t.qa = &b.qa
	grain := max(1, 16384/max(1, K)) // rows of W per part: enough work to amortise scheduling
	b.pool.For(N, grain, t)
}

// matMulTask computes rows [lo, hi) of W for all T rows of x.
type matMulTask struct {
	w        *weight
	x, out   []float32
	ldx, ldo int
	T        int
	panels   bool
	qa       *quant.QActs
	buf      [maxWorkers][]float32 // per-part panel scratch
}

const maxWorkers = 256

func (t *matMulTask) run(part, lo, hi int) {
	w, K := t.w, t.w.cols
	o := t.out[lo:]
	switch {
	case w.f32 != nil:
		kernels.MatMulF32(o, t.ldo, t.x, t.ldx, w.f32[lo*K:hi*K], t.T, hi-lo, K)
	case w.kind == backend.BF16:
		kernels.MatMulBF16(o, t.ldo, t.x, t.ldx, w.u16[lo*K:hi*K], t.T, hi-lo, K)
	case w.kind == backend.F16:
		kernels.MatMulF16(o, t.ldo, t.x, t.ldx, w.u16[lo*K:hi*K], t.T, hi-lo, K)
	case t.panels:
		matMulQuantPanels(w, o, t.ldo, t.x, t.ldx, t.T, lo, hi, &t.buf[part])
	case w.kind == backend.Quant:
		matMulQuant(w, o, t.ldo, t.qa, lo, hi)
	}
}

// RMSNorm implements backend.Backend.
func (b *Backend) RMSNorm(dst, x backend.Tensor, wt backend.Weight, group int, eps float32) {
	checkSame("RMSNorm", dst, x)
	w := wt.(*weight).f32
	if x.Cols%group != 0 || (len(w) != group && len(w) != x.Cols) {
		panic(fmt.Sprintf("cpu.RMSNorm: %d columns, group %d, weight %d", x.Cols, group, len(w)))
	}
	t := &b.norm
	t.dst, t.x, t.w, t.group, t.eps = dst, x, w, group, eps
	b.pool.For(x.Rows, max(1, 8192/x.Cols), t)
}

type normTask struct {
	dst, x backend.Tensor
	w      []float32
	group  int
	eps    float32
}

func (t *normTask) run(_, lo, hi int) {
	group := t.group
	for r := lo; r < hi; r++ {
		xr, dr := row(t.x, r), row(t.dst, r)
		for g := 0; g < len(xr); g += group {
			xs := xr[g : g+group]
			ss := float64(kernels.SumSquares(xs))
			inv := float32(1 / math.Sqrt(ss/float64(group)+float64(t.eps)))
			ws := t.w
			if len(ws) != group {
				ws = ws[g : g+group]
			}
			ds := dr[g : g+group]
			for i, v := range xs {
				ds[i] = v * inv * ws[i]
			}
		}
	}
}

// ApplyRoPE implements backend.Backend.
func (b *Backend) ApplyRoPE(x backend.Tensor, headDim int, rope backend.RoPE, pos []int32) {
	half := rope.Dim / 2
	if half == 0 || x.Rows == 0 {
		return
	}
	t := &b.rope
	if t.theta != rope.Theta || t.dim != rope.Dim {
		t.theta, t.dim = rope.Theta, rope.Dim
		t.inv = rope.InvFreq(make([]float32, 0, half))
	}
	t.x, t.headDim, t.pos = x, headDim, pos
	b.pool.For(x.Rows, 4, t)
}

type ropeTask struct {
	theta   float64
	dim     int
	inv     []float32 // inverse frequencies, float32 as the references keep them
	x       backend.Tensor
	headDim int
	pos     []int32
	cs      [maxWorkers][]float32
}

func (t *ropeTask) run(part, lo, hi int) {
	half := t.dim / 2
	cs := grow(t.cs[part], 2*half)
	t.cs[part] = cs
	for r := lo; r < hi; r++ {
		for i := 0; i < half; i++ {
			cs[i], cs[half+i] = backend.RoPECosSin(t.pos[r], t.inv[i])
		}
		xr := row(t.x, r)
		for h := 0; h+t.headDim <= len(xr); h += t.headDim {
			v := xr[h : h+t.dim]
			for i := 0; i < half; i++ {
				a, bb := v[i], v[i+half]
				c, s := cs[i], cs[half+i]
				v[i] = a*c - bb*s
				v[i+half] = bb*c + a*s
			}
		}
	}
}

// Add implements backend.Backend.
func (b *Backend) Add(dst, x, y backend.Tensor) {
	checkSame("Add", dst, x)
	checkSame("Add", dst, y)
	for r := 0; r < dst.Rows; r++ {
		d, a, c := row(dst, r), row(x, r), row(y, r)
		for i := range d {
			d[i] = a[i] + c[i]
		}
	}
}

// SiLUMul implements backend.Backend.
func (b *Backend) SiLUMul(dst, gate, up backend.Tensor) {
	checkSame("SiLUMul", dst, gate)
	checkSame("SiLUMul", dst, up)
	for r := 0; r < dst.Rows; r++ {
		kernels.SiLUMul(row(dst, r), row(gate, r), row(up, r))
	}
}

// SiLU implements backend.Backend.
func (b *Backend) SiLU(dst, x backend.Tensor) {
	checkSame("SiLU", dst, x)
	for r := 0; r < dst.Rows; r++ {
		kernels.SiLU(row(dst, r), row(x, r))
	}
}

// SigmoidMul implements backend.Backend.
func (b *Backend) SigmoidMul(dst, x, gate backend.Tensor) {
	checkSame("SigmoidMul", dst, x)
	checkSame("SigmoidMul", dst, gate)
	for r := 0; r < dst.Rows; r++ {
		kernels.SigmoidMul(row(dst, r), row(x, r), row(gate, r))
	}
}

// Gather implements backend.Backend.
func (b *Backend) Gather(dst, src backend.Tensor, rows []int) {
	for i, r := range rows {
		copy(row(dst, i), row(src, r))
	}
}

func init() {
	backend.Register("cpu", func(o backend.Options) (backend.Backend, error) {
		kv, err := parseKVType(o.KVCache)
		if err != nil {
			return nil, fmt.Errorf("cpu backend: %w", err)
		}
		b := New(o.Threads)
		b.kv, b.noMmap, b.copied = kv, o.NoMmap, o.Copied
		return b, nil
	})
}
