// Package backend defines the operations a model is made of. A model
// describes what to compute with these operations; a backend (the CPU one in
// backend/cpu, a CUDA one later) decides how. Model code never sees device
// pointers, threads or SIMD.
//
// All activations are float32 matrices (Tensor). Weights are uploaded once
// from host bytes in their stored dtype (Weight). Several sequences are run
// in one batch by concatenating their rows: per-token operations (MatMul,
// RMSNorm, MoE, ...) work on all rows at once, and the operations that mix
// tokens (attention) take a list of Spans saying which rows belong to which
// sequence and where that sequence's state lives.
package backend

import (
	"fmt"
	"math"
)

// Kind is the storage format of a weight.
type Kind int

// Weight storage formats.
const (
	F32 Kind = iota
	F16
	BF16
	// F8E4M3 is OCP FP8 with a float32 block scale tensor (DeepSeek-style
	// weight_scale_inv: value = fp8 · scale[row/BlockRows][col/BlockCols]).
	F8E4M3
	// Quant is a llama.cpp block format; HostWeight.QType holds the ggml type id.
	Quant
)

func (k Kind) String() string {
	switch k {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	case F8E4M3:
		return "F8_E4M3"
	case Quant:
		return "quant"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// HostWeight is a weight in host memory (usually a slice of a memory-mapped
// file), in PyTorch Linear layout: Rows = out features, Cols = in features.
// 1-D weights have Rows = 1.
type HostWeight struct {
	Name       string
	Kind       Kind
	QType      uint32 // ggml type id when Kind == Quant
	Rows, Cols int
	Data       []byte
	// Scale, for F8E4M3: float32 [ceil(Rows/BlockRows), ceil(Cols/BlockCols)].
	Scale                []float32
	BlockRows, BlockCols int
}

// ScaleGrid returns the block-scale grid of an F8E4M3 weight, sr × sc =
// ceil(Rows/BlockRows) × ceil(Cols/BlockCols), or an error naming the weight
// when the block size is missing or Scale has the wrong length.
func (w HostWeight) ScaleGrid() (sr, sc int, err error) {
	br, bc := w.BlockRows, w.BlockCols
	if br <= 0 || bc <= 0 {
		return 0, 0, fmt.Errorf("%s: FP8 weight without block size", w.Name)
	}
	sr, sc = (w.Rows+br-1)/br, (w.Cols+bc-1)/bc
	if len(w.Scale) != sr*sc {
		return 0, 0, fmt.Errorf("%s: FP8 scale has %d values for [%d, %d] in %dx%d blocks, want %dx%d", w.Name, len(w.Scale), w.Rows, w.Cols, br, bc, sr, sc)
	}
	return sr, sc, nil
}

// Weight is a weight uploaded to a backend.
type Weight interface {
	// Shape returns rows (out features) and columns (in features).
	Shape() (rows, cols int)
}

// Buffer is backend-owned storage for float32 activations.
type Buffer interface {
	// Len is the number of float32 elements.
	Len() int
}

// Sizer is implemented by buffers that do not store 4 bytes per element
// (reduced-precision KV caches).
type Sizer interface {
	// Bytes is the memory the buffer holds.
	Bytes() int64
}

// BufferBytes returns the memory held by t's buffer: Sizer.Bytes when the
// buffer implements it, else 4 bytes per element.
func BufferBytes(t Tensor) int64 {
	if s, ok := t.Buf.(Sizer); ok {
		return s.Bytes()
	}
	return 4 * int64(t.Buf.Len())
}

// Tensor is a row-major float32 matrix in a backend Buffer, or a view of one:
// element (r, c) lives at Off + r*Stride + c.
type Tensor struct {
	Buf        Buffer
	Off        int
	Rows, Cols int
	Stride     int
}

// RowRange returns rows [r, r+n) as a view.
func (t Tensor) RowRange(r, n int) Tensor {
	if r < 0 || n < 0 || r+n > t.Rows {
		panic(fmt.Sprintf("backend: row range [%d,%d) of %d rows", r, r+n, t.Rows))
	}
	t.Off += r * t.Stride
	t.Rows = n
	return t
}

// ColRange returns columns [c, c+n) as a view.
func (t Tensor) ColRange(c, n int) Tensor {
	if c < 0 || n < 0 || c+n > t.Cols {
		panic(fmt.Sprintf("backend: column range [%d,%d) of %d columns", c, c+n, t.Cols))
	}
	t.Off += c
	t.Cols = n
	return t
}

// Span is the part of a batch that belongs to one sequence.
type Span struct {
	Row int // first row of the batch
	N   int // number of rows (tokens)
	Pos int // position of the first row in its sequence
}

// KV is one softmax-attention layer's cache for one sequence: K and V hold
// one row per position (Hkv·headDim columns); Rows is the capacity.
type KV struct {
	K, V Tensor
}

// RouteParams configures group-limited top-k expert selection.
type RouteParams struct {
	TopK       int     // experts per token
	Groups     int     // n_group (1 = no group limit)
	TopKGroups int     // groups kept
	Sigmoid    bool    // score function: sigmoid (true) or softmax (false)
	Normalize  bool    // renormalise the selected weights to sum to 1
	Scale      float32 // routed_scaling_factor
}

// Routing is a backend-held expert selection for every row of a batch.
type Routing interface {
	// Selected copies row r's expert ids and weights into ids and w (len TopK).
	Selected(r int, ids []int32, w []float32)
}

// Experts is an uploaded set of SwiGLU experts.
type Experts interface {
	// Count returns the number of experts.
	Count() int
}

// RoPE configures rotary position embedding (NeoX rotate-half on the first Dim channels of each head).
type RoPE struct {
	Dim   int
	Theta float64
}

// InvFreq appends the Dim/2 inverse frequencies θ^(−2i/Dim) to dst, rounded
// to float32 as the reference implementations keep them.
func (r RoPE) InvFreq(dst []float32) []float32 {
	for i := range r.Dim / 2 {
		dst = append(dst, float32(math.Pow(r.Theta, -float64(2*i)/float64(r.Dim))))
	}
	return dst
}

// RoPECosSin returns the cosine and sine of the angle of a pair with
// inverse frequency inv at position pos: the angle in float32, its cosine
// and sine in float64, rounded to float32. Every backend's rotation uses
// these values.
func RoPECosSin(pos int32, inv float32) (c, s float32) {
	sn, cs := math.Sincos(float64(float32(pos) * inv))
	return float32(cs), float32(sn)
}

// Backend runs operations. Destination tensors are always passed in and
// never alias an input unless the method says so. Operations may run
// asynchronously; Read waits for them.
type Backend interface {
	// Name identifies the backend, e.g. "cpu".
	Name() string
	// Upload makes a weight available to the backend. The backend may keep
	// referencing w.Data (memory-mapped files must stay mapped).
	Upload(w HostWeight) (Weight, error)
	// UploadExperts makes a set of SwiGLU experts available; gate, up are
	// [I, D], down is [D, I], one entry per expert.
	UploadExperts(gate, up, down []HostWeight) (Experts, error)

	// Alloc returns a zeroed rows×cols tensor; Free gives it back.
	Alloc(rows, cols int) Tensor
	// AllocKV returns the zeroed rows×cols key and value tensors of a KV
	// cache, which the backend may store in reduced precision and arranged
	// for its attention kernels (Options.KVCache). Only Free, Write, Read,
	// Copy, Zero and Attention (as a KV cache) may be used on them, and
	// column views only at multiples of 32 columns.
	AllocKV(rows, cols int) KV
	Free(t Tensor)
	// Write copies host data (row-major, t.Rows×t.Cols) into t; Read the reverse, waiting for pending work.
	Write(t Tensor, src []float32)
	Read(t Tensor, dst []float32)
	// Copy copies src to dst (same shape); Zero clears t.
	Copy(dst, src Tensor)
	Zero(t Tensor)

	// Embed writes table rows ids[i] into dst row i.
	Embed(dst Tensor, table Weight, ids []int32)
	// MatMul computes dst = x · wᵀ (dst[T,N], x[T,K], w[N,K]), accumulating in float32.
	MatMul(dst, x Tensor, w Weight)
	// RMSNorm normalises every group of `group` consecutive columns of every row
	// of x: dst = w ⊙ x / sqrt(mean(x²) + eps). w has length group (shared by all
	// groups) or x.Cols. dst may alias x.
	RMSNorm(dst, x Tensor, w Weight, group int, eps float32)
	// ApplyRoPE rotates, in place, every head (headDim columns) of every row r
	// by position pos[r].
	ApplyRoPE(x Tensor, headDim int, rope RoPE, pos []int32)
	// Add computes dst = a + b (dst may alias a or b).
	Add(dst, a, b Tensor)
	// SiLU computes dst = x ⊙ sigmoid(x) (dst may alias x).
	SiLU(dst, x Tensor)
	// SiLUMul computes dst = silu(gate) ⊙ up (dst may alias gate or up).
	SiLUMul(dst, gate, up Tensor)
	// SigmoidMul computes dst = x ⊙ sigmoid(gate) (dst may alias x or gate).
	SigmoidMul(dst, x, gate Tensor)
	// Gather copies rows[i] of src to row i of dst.
	Gather(dst, src Tensor, rows []int)

	// Lightning runs linear attention with a constant per-head decay: for
	// every span i, with its state S = states[i] (heads·d rows × d columns,
	// head h at rows h·d..h·d+d−1, updated in place), for each token t:
	//   S_h ← exp(−decay[h])·S_h + k_t,h ⊗ v_t,h ;  o_t,h = scale · q_t,hᵀ S_h
	// q, k, v, dst have heads·d columns.
	Lightning(dst, q, k, v Tensor, spans []Span, states []Tensor, decay []float32, scale float32)
	// Attention is causal softmax attention with grouped KV heads: for every
	// span i it stores the span's k, v rows at positions Pos..Pos+N−1 of
	// caches[i] and attends each query to positions 0..its own.
	Attention(dst, q, k, v Tensor, spans []Span, caches []KV, headDim int, scale float32)

	// Route selects experts for every row from router logits (float32) and a
	// selection bias (may be nil).
	Route(logits Tensor, bias Weight, p RouteParams) Routing
	// MoE computes dst = Σ_e w_e · Expert_e(x) over each row's selected experts.
	MoE(dst, x Tensor, r Routing, e Experts)
}

// DeviceMemory is implemented by backends with memory of their own (GPUs).
type DeviceMemory interface {
	// Memory returns the device's free and total bytes.
	Memory() (free, total int64)
}

// Draw is one row's token draw for a Drawer, as sample.Sampler.Plan
// describes it (sample.Planned converts to it): greedy when InvTemp is 0,
// else temperature sampling at 1/InvTemp with U, a uniform number in
// [0, 1), after the filters TopK, TopP and MinP (0: off).
type Draw struct {
	InvTemp float32
	U       float64
	TopK    int32
	TopP    float32
	MinP    float32
}

// Drawer is implemented by backends that can pick tokens where the logits
// are, reading back only the tokens (a GPU's step then skips reading a
// vocabulary of logits and the host's pass over them).
type Drawer interface {
	// Draws reports whether DrawTokens may be used (a backend may turn it
	// off).
	Draws() bool
	// DrawTokens draws row i's token of logits (one row of the vocabulary
	// per draw) with draws[i] into dst[i], as sample.Sampler.Plan describes
	// (its sums may be taken in another order), or stores -1 where it
	// cannot (the caller then reads the row and draws on the host).
	DrawTokens(dst []int32, logits Tensor, draws []Draw)
}

// Options select and configure a backend.
type Options struct {
	Index   int // device index (cuda:N)
	Threads int // CPU worker threads (0: all cores)
	// Precise asks for float32 matrix products everywhere (GPU backends
	// otherwise use BF16 tensor-core GEMMs for large products).
	Precise bool
	// KVCache is the KV cache element type: "f32" (default, exact), "f16"
	// (half the memory) or "q8_0" (ggml Q8_0 blocks: 32 int8 and a float16
	// scale, 0.27 of the memory; attention over it uses integer dot
	// products). Backends without a type keep f32.
	KVCache string
	// NoMmap asks the CPU backend to copy the weights into its own memory
	// (anonymous huge pages; each expert's matrices side by side) instead
	// of reading them from the caller's memory, e.g. a memory-mapped file.
	NoMmap bool
	// Copied, if set, is called with the bytes of each weight NoMmap
	// copied, once the copy is made (e.g. to release a file mapping's pages
	// as loading goes, instead of holding the weights twice).
	Copied func(src []byte)
}

var factories = map[string]func(Options) (Backend, error){}

// Register makes a backend available to Open under name (e.g. "cpu",
// "cuda"). Backend packages call it from init.
func Register(name string, f func(Options) (Backend, error)) { factories[name] = f }

// Open returns the backend named by spec: "cpu", "cuda" or "cuda:N".
func Open(spec string, o Options) (Backend, error) {
	name := spec
	for i, c := range spec {
		if c == ':' {
			name = spec[:i]
			if _, err := fmt.Sscanf(spec[i+1:], "%d", &o.Index); err != nil || o.Index < 0 {
				return nil, fmt.Errorf("device %q: bad index", spec)
			}
			break
		}
	}
	f, ok := factories[name]
	if !ok {
		return nil, fmt.Errorf("device %q: unknown or not built in (have %v)", spec, names())
	}
	b, err := f(o)
	if err != nil {
		return nil, fmt.Errorf("device %q: %w", spec, err)
	}
	return b, nil
}

func names() []string {
	var out []string
	for n := range factories {
		out = append(out, n)
	}
	return out
}
