package cpu

import (
	"fmt"
	"math"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
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
		ot := row(dst, t)
		clear(ot)
		kernels.LightningStep(S[:d*d], row(q, t), row(k, t), row(v, t), ot, lam)
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
//
// The query heads that share a KV head are stacked into one matrix, so
// every cached key and value row is read once per group, and the keys are
// visited in blocks of attnKBlock with an online softmax (a running
// maximum and sum per query row, as in flash attention), so the scores
// stay in the L1/L2 caches whatever the context length. Work is split into
// units: a block of at most attnQBlock query positions of one span against
// one KV head, or, for a span that is a single query block (decode), all
// KV heads at once, so that a job reads whole cache rows. When the units
// cannot be spread evenly over the workers (batch-1 decode), the keys of
// each unit are split into chunks whose partial results (output, maximum,
// sum) are combined afterwards (flash decoding).
func (b *Backend) Attention(dst, q, k, v backend.Tensor, spans []backend.Span, caches []backend.KV, headDim int, scale float32) {
	H, Hkv := q.Cols/headDim, k.Cols/headDim
	if H*headDim != q.Cols || Hkv*headDim != k.Cols || v.Cols != k.Cols || dst.Cols != q.Cols || Hkv == 0 || H%Hkv != 0 {
		panic(fmt.Sprintf("cpu.Attention: q %d, k %d, v %d, dst %d columns, head dim %d", q.Cols, k.Cols, v.Cols, dst.Cols, headDim))
	}
	for i, sp := range spans {
		c := caches[i]
		if c.K.Rows < sp.Pos+sp.N || c.K.Cols != k.Cols || c.V.Rows != c.K.Rows || c.V.Cols != k.Cols || kvTypeOf(c.K) != kvTypeOf(c.V) {
			panic(fmt.Sprintf("cpu.Attention: cache of %dx%d for positions up to %d", c.K.Rows, c.K.Cols, sp.Pos+sp.N))
		}
		b.Copy(c.K.RowRange(sp.Pos, sp.N), k.RowRange(sp.Row, sp.N))
		b.Copy(c.V.RowRange(sp.Pos, sp.N), v.RowRange(sp.Row, sp.N))
	}
	t := &b.attn
	t.dst, t.q, t.spans, t.caches, t.headDim, t.scale, t.group = dst, q, spans, caches, headDim, scale, H/Hkv
	t.plan(Hkv, b.pool.n)
	b.pool.For(len(t.jobs), 1, t)
	if len(t.splits) > 0 {
		b.pool.For(len(t.splits), 1, &t.combine)
	}
}

// attnQBlock is the number of query positions processed together;
// attnKBlock the number of keys scored at a time (the scores of a block,
// and half-precision or Q8_0 keys and values expanded to float32, stay in
// the L1/L2 caches); attnQ8Rows the most stacked query rows of a KV head
// for which a Q8_0 cache is used through integer dot products (more rows
// amortise expanding the blocks to float32 for the GEMM kernels).
const (
	attnQBlock = 32
	attnKBlock = 128
	attnQ8Rows = 16
)

// attnMinSplit is the fewest keys worth a chunk of their own (a variable
// so that tests can split short sequences).
var attnMinSplit = 512

// attnUnit is a block of query positions [q0, q0+nq) of one span and the
// query heads of KV heads [g0, g1).
type attnUnit struct {
	span, q0, nq, g0, g1 int
}

// attnJob is a unit against the keys [k0, k1). A job with part ≥ 0 covers
// one chunk of the keys and leaves its unnormalised output, maxima and
// sums in partial slot part for attnCombine.
type attnJob struct {
	attnUnit
	k0, k1, part int
}

// attnSplit is a unit whose keys were split over the partial slots
// [part, part+n).
type attnSplit struct {
	attnUnit
	part, n int
}

// attentionTask runs one job per index.
type attentionTask struct {
	jobs    []attnJob
	splits  []attnSplit
	dst, q  backend.Tensor
	spans   []backend.Span
	caches  []backend.KV
	headDim int
	scale   float32
	group   int
	// partial results of split jobs: slot i holds rows·(headDim+2) floats
	// at partOff[i] (output rows, then the maxima, then the sums)
	part    []float32
	partOff []int
	combine attnCombine
	scratch [maxWorkers]attnScratch
}

// attnScratch holds one worker's buffers.
type attnScratch struct {
	q, s, o, m, l, kv []float32
	qq                []byte
}

// rows is the number of stacked query rows of a unit.
func (u attnUnit) rows(G int) int { return (u.g1 - u.g0) * G * u.nq }

// plan fills t.jobs (and t.splits) for Hkv KV heads on workers workers.
func (t *attentionTask) plan(Hkv, workers int) {
	t.jobs, t.splits, t.partOff = t.jobs[:0], t.splits[:0], t.partOff[:0]
	units := 0
	for _, sp := range t.spans {
		if sp.N <= attnQBlock {
			units++
		} else {
			units += Hkv * ((sp.N + attnQBlock - 1) / attnQBlock)
		}
	}
	// chunks per unit so that the jobs divide evenly among the workers
	chunks := 1
	if workers > 1 && units%workers != 0 {
		chunks = workers / gcd(units, workers)
	}
	off := 0
	add := func(u attnUnit) {
		keys := t.spans[u.span].Pos + u.q0 + u.nq // keys visible to the unit's last query
		c := min(chunks, keys/attnMinSplit)
		if c <= 1 {
			t.jobs = append(t.jobs, attnJob{u, 0, keys, -1})
			return
		}
		sl := attnSplit{u, len(t.partOff), 0}
		step := (keys + c - 1) / c
		step = (step + attnKBlock - 1) / attnKBlock * attnKBlock
		for k0 := 0; k0 < keys; k0 += step {
			t.jobs = append(t.jobs, attnJob{u, k0, min(keys, k0+step), len(t.partOff)})
			t.partOff = append(t.partOff, off)
			off += u.rows(t.group) * (t.headDim + 2)
		}
		sl.n = len(t.partOff) - sl.part
		t.splits = append(t.splits, sl)
	}
	for i, sp := range t.spans {
		if sp.N <= attnQBlock {
			add(attnUnit{i, 0, sp.N, 0, Hkv})
			continue
		}
		for g := 0; g < Hkv; g++ {
			for q0 := 0; q0 < sp.N; q0 += attnQBlock {
				add(attnUnit{i, q0, min(attnQBlock, sp.N-q0), g, g + 1})
			}
		}
	}
	t.part = grow(t.part, off)
	t.combine.t = t
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (t *attentionTask) run(part, lo, hi int) {
	for _, jb := range t.jobs[lo:hi] {
		t.job(&t.scratch[part], jb)
	}
}

// job runs one attnJob.
func (t *attentionTask) job(sc *attnScratch, jb attnJob) {
	d, G, nq := t.headDim, t.group, jb.nq
	sp, c := t.spans[jb.span], t.caches[jb.span]
	M := G * nq // stacked rows of one KV head: head-major, then query position
	R := jb.rows(G)
	kvt := kvTypeOf(c.K)
	// tiled Q8_0 caches always use the integer kernels, Q8_0 rows up to
	// attnQ8Rows stacked rows
	tiled := kvt == kvQ8T && d%quant.QK == 0
	q8dots := kvt == kvQ8 && M <= attnQ8Rows && d%quant.QK == 0 || tiled
	sc.q, sc.o = grow(sc.q, R*d), grow(sc.o, R*d)
	// a tiled cache at decode scores all heads' rows of a block in one
	// stream over its tiles
	allHeads := tiled && M <= 4
	if allHeads {
		sc.s = grow(sc.s, R*attnKBlock)
	} else {
		sc.s = grow(sc.s, M*attnKBlock)
	}
	sc.m, sc.l = grow(sc.m, R), grow(sc.l, R)
	// stacked queries, scaled once here instead of every score
	Q := t.q.RowRange(sp.Row+jb.q0, nq)
	for r := 0; r < R; r++ {
		qh, i := jb.g0*G+r/nq, r%nq
		qr := sc.q[r*d : (r+1)*d]
		for j, x := range row(Q, i)[qh*d : (qh+1)*d] {
			qr[j] = x * t.scale
		}
	}
	nb := d / quant.QK
	qb := nb * quant.Q8ActBlockBytes // bytes of a quantized query row
	if q8dots {
		if cap(sc.qq) < R*qb {
			sc.qq = make([]byte, R*qb)
		}
		sc.qq = sc.qq[:R*qb]
		for r := 0; r < R; r++ {
			quant.QuantizeQ8Act(sc.qq[r*qb:(r+1)*qb], sc.q[r*d:(r+1)*d])
		}
	} else if kvt != kvF32 {
		sc.kv = grow(sc.kv, attnKBlock*d)
	}
	clear(sc.o)
	clear(sc.l)
	for r := range sc.m {
		sc.m[r] = float32(math.Inf(-1))
	}
	const ld = attnKBlock
	for j0 := jb.k0; j0 < jb.k1; j0 += attnKBlock {
		n := min(attnKBlock, jb.k1-j0)
		Kr, Vr := c.K.RowRange(j0, n), c.V.RowRange(j0, n)
		j1 := j0 + attnKBlock
		nn := min(attnKBlock, jb.k1-j1) // keys of the next block
		if allHeads {
			nh := jb.g1 - jb.g0
			kb, ldt := tiledBytes(Kr.ColRange(jb.g0*d, nh*d))
			quant.DotQ8_0TiledHeads(sc.s, ld, sc.qq, qb, M, nh, kb, ldt, n, nb)
		}
		for g := jb.g0; g < jb.g1; g++ {
			if nn > 0 && !q8dots {
				// this head's rows of the next block into L2 while this one
				// is computed (the Q8_0 kernels prefetch as they go)
				prefetchKV(c.K.RowRange(j1, nn).ColRange(g*d, d))
				prefetchKV(c.V.RowRange(j1, nn).ColRange(g*d, d))
			}
			base := (g - jb.g0) * M
			q, o := sc.q[base*d:(base+M)*d], sc.o[base*d:(base+M)*d]
			m, l := sc.m[base:base+M], sc.l[base:base+M]
			Kb, Vb := Kr.ColRange(g*d, d), Vr.ColRange(g*d, d)
			// scores S[M][n] (row stride attnKBlock)
			S := sc.s
			switch {
			case allHeads:
				S = sc.s[base*ld:] // scored above
			case kvt == kvF32:
				kernels.GemmF32NT(false, M, n, d, q, d, data(Kb), Kb.Stride, sc.s, ld)
			case tiled:
				kb, ldt := tiledBytes(Kb)
				quant.DotQ8_0Tiled(sc.s, ld, sc.qq[base*qb:], qb, M, kb, ldt, n, nb)
			case q8dots:
				kb, ldk := q8Bytes(Kb)
				vb, _ := q8Bytes(Vb)
				quant.DotQ8_0Rows(sc.s, ld, sc.qq[base*qb:], qb, M, kb, ldk, n, nb, vb)
			default:
				expandRows(sc.kv, Kb)
				kernels.GemmF32NT(false, M, n, d, q, d, sc.kv, d, sc.s, ld)
			}
			// online softmax: rescale what was accumulated when the maximum grows
			for r := 0; r < M; r++ {
				s := S[r*ld : r*ld+n]
				nv := min(n, max(0, sp.Pos+jb.q0+r%nq+1-j0)) // causal: keys this query sees
				if nv < n {
					clear(s[nv:])
				}
				if nv == 0 {
					continue
				}
				s = s[:nv]
				mx := max(m[r], kernels.Max(s))
				if mx > m[r] {
					if l[r] != 0 {
						a := float32(math.Exp(float64(m[r] - mx)))
						l[r] *= a
						kernels.Scale(a, o[r*d:(r+1)*d])
					}
					m[r] = mx
				}
				l[r] += kernels.ExpSub(s, mx)
			}
			// o += P·V
			switch {
			case kvt == kvF32:
				kernels.GemmF32(true, M, d, n, sc.s, ld, data(Vb), Vb.Stride, o, d)
			case tiled:
				vb, ldt := tiledBytes(Vb)
				quant.AccumQ8_0Tiled(o, d, S, ld, M, vb, ldt, n, nb)
			case q8dots:
				vb, ldv := q8Bytes(Vb)
				quant.AccumQ8_0Rows(o, d, sc.s, ld, M, vb, ldv, n, nb)
			default:
				expandRows(sc.kv, Vb)
				kernels.GemmF32(true, M, d, n, sc.s, ld, sc.kv, d, o, d)
			}
		}
	}
	if jb.part >= 0 {
		p := t.part[t.partOff[jb.part]:]
		copy(p, sc.o)
		copy(p[R*d:], sc.m)
		copy(p[R*d+R:], sc.l)
		return
	}
	O := t.dst.RowRange(sp.Row+jb.q0, nq)
	for r := 0; r < R; r++ {
		qh, i := jb.g0*G+r/nq, r%nq
		out := row(O, i)[qh*d : (qh+1)*d]
		inv := 1 / sc.l[r]
		for j, x := range sc.o[r*d : (r+1)*d] {
			out[j] = x * inv
		}
	}
}

// prefetchKV asks for the rows of a KV cache view to be brought into L2
// (tiled caches need none: their kernels prefetch as they go).
func prefetchKV(t backend.Tensor) {
	switch kvTypeOf(t) {
	case kvF32:
		kernels.Prefetch(data(t), t.Stride, t.Rows, t.Cols)
	case kvF16:
		d := t.Buf.(*f16buffer).d
		kernels.Prefetch(d[t.Off:], t.Stride, t.Rows, t.Cols)
	case kvQ8:
		if q8Aligned(t) {
			b, ld := q8Bytes(t)
			kernels.Prefetch(b, ld, t.Rows, t.Cols/quant.QK*q8BlockBytes)
		}
	}
}

// expandRows converts the rows of a half-precision or Q8_0 tensor into dst
// (rows×cols, contiguous).
func expandRows(dst []float32, t backend.Tensor) {
	switch {
	case kvTypeOf(t) == kvF16:
		src := t.Buf.(*f16buffer).d
		for i := 0; i < t.Rows; i++ {
			o := t.Off + i*t.Stride
			kernels.F16ToF32(dst[i*t.Cols:(i+1)*t.Cols], src[o:o+t.Cols])
		}
	case kvTypeOf(t) == kvQ8 && q8Aligned(t):
		b, ld := q8Bytes(t)
		quant.DequantizeQ8_0Rows(dst, t.Cols, b, ld, t.Rows, t.Cols/quant.QK)
	default:
		for i := 0; i < t.Rows; i++ {
			rowToF32(dst[i*t.Cols:(i+1)*t.Cols], t, i)
		}
	}
}

// attnCombine merges the partial results of split units, one per index:
// with m_c, l_c, o_c the maximum, sum and output of chunk c,
// out = Σ_c e^{m_c−m} o_c / Σ_c e^{m_c−m} l_c, m = max_c m_c.
type attnCombine struct{ t *attentionTask }

func (a *attnCombine) run(_, lo, hi int) {
	t := a.t
	d, G := t.headDim, t.group
	for _, u := range t.splits[lo:hi] {
		R := u.rows(G)
		slot := func(c int) (o, m, l []float32) {
			p := t.part[t.partOff[u.part+c]:]
			return p[:R*d], p[R*d : R*d+R], p[R*d+R : R*d+2*R]
		}
		O := t.dst.RowRange(t.spans[u.span].Row+u.q0, u.nq)
		for r := 0; r < R; r++ {
			qh, i := u.g0*G+r/u.nq, r%u.nq
			out := row(O, i)[qh*d : (qh+1)*d]
			mx := float32(math.Inf(-1))
			for c := 0; c < u.n; c++ {
				_, m, _ := slot(c)
				mx = max(mx, m[r])
			}
			clear(out)
			var sum float32
			for c := 0; c < u.n; c++ {
				o, m, l := slot(c)
				if l[r] == 0 {
					continue // no visible key in this chunk
				}
				w := float32(math.Exp(float64(m[r] - mx)))
				sum += w * l[r]
				kernels.Axpy(w, o[r*d:(r+1)*d], out)
			}
			kernels.Scale(1/sum, out)
		}
	}
}
