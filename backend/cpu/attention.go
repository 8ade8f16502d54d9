package cpu

import (
	"fmt"
	"math"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/kernels"
)

// lightningChunk is the chunk length of the chunked (GEMM) form of linear
// attention; spans shorter than lightningMinChunked use the recurrence.
const (
	lightningChunk      = 64
	lightningMinChunked = 16
)

// Lightning implements backend.Backend.
func (b *Backend) Lightning(dst, q, k, v backend.Tensor, spans []backend.Span, states []backend.Tensor, decay []float32, scale float32) {
	H := len(decay)
	d := q.Cols / H
	if q.Cols != H*d || k.Cols != q.Cols || v.Cols != q.Cols || dst.Cols != q.Cols || len(states) != len(spans) {
		panic(fmt.Sprintf("cpu.Lightning: q %d, k %d, v %d, dst %d columns, %d heads, %d spans, %d states", q.Cols, k.Cols, v.Cols, dst.Cols, H, len(spans), len(states)))
	}
	for i, st := range states {
		if st.Rows != H*d || st.Cols != d {
			panic(fmt.Sprintf("cpu.Lightning: state %d is %dx%d, want %dx%d", i, st.Rows, st.Cols, H*d, d))
		}
	}
	t := &b.light
	t.dst, t.q, t.k, t.v, t.spans, t.states, t.decay, t.scale, t.d = dst, q, k, v, spans, states, decay, scale, d
	b.pool.For(len(spans)*H, 1, t)
}

// lightningTask runs one (span, head) pair per index.
type lightningTask struct {
	dst, q, k, v backend.Tensor
	spans        []backend.Span
	states       []backend.Tensor
	decay        []float32
	scale        float32
	d            int
	ws           [maxWorkers]lightningScratch
}

func (t *lightningTask) run(part, lo, hi int) {
	H, d := len(t.decay), t.d
	for job := lo; job < hi; job++ {
		sp, h := t.spans[job/H], job%H
		if sp.N == 0 {
			continue
		}
		S := data(t.states[job/H].RowRange(h*d, d)) // d×d, contiguous
		head := func(x backend.Tensor) backend.Tensor { return x.RowRange(sp.Row, sp.N).ColRange(h*d, d) }
		if sp.N < lightningMinChunked {
			lightningRecurrent(head(t.dst), head(t.q), head(t.k), head(t.v), S, t.decay[h], t.scale)
		} else {
			t.ws[part].chunked(head(t.dst), head(t.q), head(t.k), head(t.v), S, t.decay[h], t.scale)
		}
	}
}

// lightningRecurrent runs the token-by-token recurrence for one head.
func lightningRecurrent(dst, q, k, v backend.Tensor, S []float32, a, scale float32) {
	d := q.Cols
	lam := float32(math.Exp(-float64(a)))
	for t := 0; t < q.Rows; t++ {
		kt, vt, qt, ot := row(k, t), row(v, t), row(q, t), row(dst, t)
		clear(ot)
		for i := 0; i < d; i++ {
			s := S[i*d : i*d+d]
			kernels.Scale(lam, s)
			kernels.Axpy(kt[i], vt, s)
			kernels.Axpy(qt[i], s, ot)
		}
		kernels.Scale(scale, ot)
	}
}

// lightningScratch holds per-worker buffers of the chunked form.
type lightningScratch struct {
	qc, kc, vc, kt, a, o, pw []float32
}

// grow returns s resized to n, reallocating (with headroom, so a buffer
// that grows by a little each step is not reallocated every step) if needed.
func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n, max(n, 2*cap(s)))
	}
	return s[:n]
}

// chunked computes one head with the chunked closed form (spec §4.4):
//
//	O[i] = s·( Σ_{j≤i} λ^{i−j}(q_i·k_j) v_j + λ^{i+1} q_iᵀS )
//	S'   = λ^{C}S + Σ_j λ^{C−1−j} k_j ⊗ v_j
//
// with every decay power built directly as exp(−a·m) (no λ^−j factors).
func (ws *lightningScratch) chunked(dst, q, k, v backend.Tensor, S []float32, a, scale float32) {
	d := q.Cols
	C := lightningChunk
	ws.qc, ws.kc, ws.vc = grow(ws.qc, C*d), grow(ws.kc, C*d), grow(ws.vc, C*d)
	ws.kt, ws.a, ws.o = grow(ws.kt, d*C), grow(ws.a, C*C), grow(ws.o, C*d)
	ws.pw = grow(ws.pw, C+1)
	for m := range ws.pw {
		ws.pw[m] = float32(math.Exp(-float64(a) * float64(m)))
	}
	pw := ws.pw
	for c0 := 0; c0 < q.Rows; c0 += C {
		n := min(C, q.Rows-c0)
		for i := 0; i < n; i++ {
			copy(ws.qc[i*d:(i+1)*d], row(q, c0+i))
			copy(ws.kc[i*d:(i+1)*d], row(k, c0+i))
			copy(ws.vc[i*d:(i+1)*d], row(v, c0+i))
		}
		// intra-chunk scores with the causal decay mask
		A := ws.a[:n*n]
		kernels.GemmF32NT(false, n, n, d, ws.qc, d, ws.kc, d, A, n)
		for i := 0; i < n; i++ {
			for j := 0; j <= i; j++ {
				A[i*n+j] *= pw[i-j]
			}
			clear(A[i*n+i+1 : i*n+n])
		}
		O := ws.o[:n*d]
		kernels.GemmF32(false, n, d, n, A, n, ws.vc, d, O, d)
		// inter-chunk: λ^{i+1} q_i S
		for i := 0; i < n; i++ {
			f := pw[i+1]
			qi := ws.qc[i*d : (i+1)*d]
			for j := range qi {
				qi[j] *= f
			}
		}
		kernels.GemmF32(true, n, d, d, ws.qc, d, S, d, O, d)
		for i := 0; i < n; i++ {
			or, out := O[i*d:(i+1)*d], row(dst, c0+i)
			for j := range or {
				out[j] = scale * or[j]
			}
		}
		// state update: S = λ^n S + (decayed K)ᵀ V
		kt := ws.kt[:d*n]
		for j := 0; j < n; j++ {
			f := pw[n-1-j]
			kj := ws.kc[j*d : (j+1)*d]
			for i, x := range kj {
				kt[i*n+j] = f * x
			}
		}
		ln := pw[n]
		if n < C {
			ln = float32(math.Exp(-float64(a) * float64(n)))
		}
		for i := range S {
			S[i] *= ln
		}
		kernels.GemmF32(true, d, d, n, kt, n, ws.vc, d, S, d)
	}
}

// Attention implements backend.Backend.
func (b *Backend) Attention(dst, q, k, v backend.Tensor, spans []backend.Span, caches []backend.KV, headDim int, scale float32) {
	H, Hkv := q.Cols/headDim, k.Cols/headDim
	if H*headDim != q.Cols || Hkv*headDim != k.Cols || v.Cols != k.Cols || dst.Cols != q.Cols || Hkv == 0 || H%Hkv != 0 {
		panic(fmt.Sprintf("cpu.Attention: q %d, k %d, v %d, dst %d columns, head dim %d", q.Cols, k.Cols, v.Cols, dst.Cols, headDim))
	}
	for i, sp := range spans {
		c := caches[i]
		if c.K.Rows < sp.Pos+sp.N || c.K.Cols != k.Cols || isF16(c.K) != isF16(c.V) {
			panic(fmt.Sprintf("cpu.Attention: cache of %dx%d for positions up to %d", c.K.Rows, c.K.Cols, sp.Pos+sp.N))
		}
		b.Copy(c.K.RowRange(sp.Pos, sp.N), k.RowRange(sp.Row, sp.N))
		b.Copy(c.V.RowRange(sp.Pos, sp.N), v.RowRange(sp.Row, sp.N))
	}
	t := &b.attn
	t.jobs = t.jobs[:0]
	for i, sp := range spans {
		for g := 0; g < Hkv; g++ {
			for q0 := 0; q0 < sp.N; q0 += attnQBlock {
				t.jobs = append(t.jobs, attnJob{i, g, q0})
			}
		}
	}
	t.dst, t.q, t.spans, t.caches, t.headDim, t.scale, t.group = dst, q, spans, caches, headDim, scale, H/Hkv
	b.pool.For(len(t.jobs), 1, t)
}

// attnQBlock is the number of query positions processed together; kvChunk
// the number of half-precision keys or values expanded to float32 at a time.
const (
	attnQBlock = 32
	kvChunk    = 256
)

// attnJob is a block of query positions of one KV head's group of query heads.
type attnJob struct{ span, kvHead, q0 int }

// attentionTask runs one job per index: all query heads that share a KV head
// are stacked into one matrix, so K and V are read once for the group.
type attentionTask struct {
	jobs    []attnJob
	dst, q  backend.Tensor
	spans   []backend.Span
	caches  []backend.KV
	headDim int
	scale   float32
	group   int
	scratch [maxWorkers]struct{ q, scores, o, kv []float32 }
}

func (t *attentionTask) run(part, lo, hi int) {
	d, G := t.headDim, t.group
	sc := &t.scratch[part]
	for _, jb := range t.jobs[lo:hi] {
		sp, c := t.spans[jb.span], t.caches[jb.span]
		nq := min(attnQBlock, sp.N-jb.q0)
		L := sp.Pos + jb.q0 + nq // keys visible to the last query of the block
		M := G * nq              // stacked rows: head-major, then query position
		sc.q, sc.scores, sc.o = grow(sc.q, M*d), grow(sc.scores, M*L), grow(sc.o, M*d)
		for h := 0; h < G; h++ {
			Qh := t.q.RowRange(sp.Row+jb.q0, nq).ColRange((jb.kvHead*G+h)*d, d)
			for i := 0; i < nq; i++ {
				copy(sc.q[(h*nq+i)*d:(h*nq+i+1)*d], row(Qh, i))
			}
		}
		Kh := c.K.RowRange(0, L).ColRange(jb.kvHead*d, d)
		Vh := c.V.RowRange(0, L).ColRange(jb.kvHead*d, d)
		scores := sc.scores
		f16 := isF16(c.K)
		if f16 {
			// half-precision cache: expand kvChunk keys at a time (L2-sized)
			sc.kv = grow(sc.kv, kvChunk*d)
			for j0 := 0; j0 < L; j0 += kvChunk {
				n := min(kvChunk, L-j0)
				rowsF32(sc.kv, Kh, j0, n)
				kernels.GemmF32NT(false, M, n, d, sc.q, d, sc.kv, d, scores[j0:], L)
			}
		} else {
			kernels.GemmF32NT(false, M, L, d, sc.q, d, data(Kh), Kh.Stride, scores, L)
		}
		for m := 0; m < M; m++ {
			n := sp.Pos + jb.q0 + m%nq + 1 // causal limit of this query
			s := scores[m*L : m*L+n]
			mx := float32(math.Inf(-1))
			for j := range s {
				s[j] *= t.scale
				mx = max(mx, s[j])
			}
			var sum float32
			for j := range s {
				s[j] = float32(math.Exp(float64(s[j] - mx)))
				sum += s[j]
			}
			kernels.Scale(1/sum, s)
			clear(scores[m*L+n : m*L+L])
		}
		if f16 {
			for j0 := 0; j0 < L; j0 += kvChunk {
				n := min(kvChunk, L-j0)
				rowsF32(sc.kv, Vh, j0, n)
				kernels.GemmF32(j0 > 0, M, d, n, scores[j0:], L, sc.kv, d, sc.o, d)
			}
		} else {
			kernels.GemmF32(false, M, d, L, scores, L, data(Vh), Vh.Stride, sc.o, d)
		}
		for h := 0; h < G; h++ {
			O := t.dst.RowRange(sp.Row+jb.q0, nq).ColRange((jb.kvHead*G+h)*d, d)
			for i := 0; i < nq; i++ {
				copy(row(O, i), sc.o[(h*nq+i)*d:(h*nq+i+1)*d])
			}
		}
	}
}
