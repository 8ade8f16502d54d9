package cpu

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
)

var _ backend.Backend = (*Backend)(nil)

// routing is the CPU expert selection: TopK ids and weights per row. The
// Backend reuses one routing value, so a Routing is valid until the next Route.
type routing struct {
	k   int
	ids []int32
	w   []float32
}

func (r *routing) Selected(i int, ids []int32, w []float32) {
	copy(ids, r.ids[i*r.k:(i+1)*r.k])
	copy(w, r.w[i*r.k:(i+1)*r.k])
}

// Route implements backend.Backend: group-limited top-k with a selection
// bias, deterministic ties (lower index first).
func (b *Backend) Route(logits backend.Tensor, bias backend.Weight, p backend.RouteParams) backend.Routing {
	E := logits.Cols
	t := &b.route
	t.bias = nil
	if bias != nil {
		t.bias = bias.(*weight).f32
		if len(t.bias) != E {
			panic(fmt.Sprintf("cpu.Route: bias of %d for %d experts", len(t.bias), E))
		}
	}
	p.Groups = max(1, p.Groups)
	if p.TopKGroups <= 0 || p.TopKGroups > p.Groups {
		p.TopKGroups = p.Groups
	}
	if E%p.Groups != 0 || p.TopK > E || p.TopK > p.TopKGroups*(E/p.Groups) {
		panic(fmt.Sprintf("cpu.Route: %d experts, %d groups keeping %d, top %d", E, p.Groups, p.TopKGroups, p.TopK))
	}
	n := logits.Rows * p.TopK
	t.r.k = p.TopK
	t.r.ids = growInt32(t.r.ids, n)
	t.r.w = grow(t.r.w, n)
	t.logits, t.p = logits, p
	b.pool.For(logits.Rows, 8, t)
	return &t.r
}

type routeTask struct {
	r       routing
	logits  backend.Tensor
	bias    []float32
	p       backend.RouteParams
	scratch [maxWorkers]struct {
		s, c, gs []float32
		keep     []bool
	}
}

func (t *routeTask) run(part, lo, hi int) {
	p, E := t.p, t.logits.Cols
	sc := &t.scratch[part]
	sc.s, sc.c, sc.gs = grow(sc.s, E), grow(sc.c, E), grow(sc.gs, p.Groups)
	if cap(sc.keep) < p.Groups {
		sc.keep = make([]bool, p.Groups)
	}
	s, c, gs, keep := sc.s, sc.c, sc.gs, sc.keep[:p.Groups]
	per := E / p.Groups
	for r := lo; r < hi; r++ {
		lr := row(t.logits, r)
		if p.Sigmoid {
			for e, x := range lr {
				s[e] = float32(1 / (1 + math.Exp(-float64(x))))
			}
		} else {
			softmax(s, lr)
		}
		copy(c, s)
		for e, bv := range t.bias {
			c[e] += bv
		}
		// group score: the sum of the two best selection scores of the group
		for g := 0; g < p.Groups; g++ {
			m1, m2 := float32(math.Inf(-1)), float32(math.Inf(-1))
			for _, x := range c[g*per : (g+1)*per] {
				if x > m1 {
					m1, m2 = x, m1
				} else if x > m2 {
					m2 = x
				}
			}
			if per == 1 {
				m2 = 0
			}
			gs[g] = m1 + m2
		}
		// keep the TopKGroups best groups (ties: lower index)
		clear(keep)
		for n := 0; n < p.TopKGroups; n++ {
			best := -1
			for g := range gs {
				if !keep[g] && (best < 0 || gs[g] > gs[best]) {
					best = g
				}
			}
			keep[best] = true
		}
		// pick the TopK best experts of the kept groups (ties: lower index)
		ids, ws := t.r.ids[r*p.TopK:(r+1)*p.TopK], t.r.w[r*p.TopK:(r+1)*p.TopK]
		var sum float32
		for n := 0; n < p.TopK; n++ {
			best := -1
			for e := range c {
				if keep[e/per] && (best < 0 || c[e] > c[best]) && !taken(ids[:n], e) {
					best = e
				}
			}
			ids[n] = int32(best)
			sum += s[best]
		}
		for n, e := range ids {
			w := s[e]
			if p.Normalize {
				w /= sum + 1e-20
			}
			ws[n] = w * p.Scale
		}
	}
}

func taken(ids []int32, e int) bool {
	for _, id := range ids {
		if int(id) == e {
			return true
		}
	}
	return false
}

func growInt32(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}

func softmax(dst, x []float32) {
	mx := float32(math.Inf(-1))
	for _, v := range x {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - mx))
		dst[i] = float32(e)
		sum += e
	}
	for i := range dst {
		dst[i] = float32(float64(dst[i]) / sum)
	}
}

// experts is a set of SwiGLU experts on the CPU.
type experts struct {
	gate, up, down []*weight
}

func (e *experts) Count() int { return len(e.gate) }

// UploadExperts implements backend.Backend.
func (b *Backend) UploadExperts(gate, up, down []backend.HostWeight) (backend.Experts, error) {
	if len(gate) != len(up) || len(gate) != len(down) {
		return nil, fmt.Errorf("experts: %d gate, %d up, %d down weights", len(gate), len(up), len(down))
	}
	e := &experts{}
	for i := range gate {
		for _, p := range []struct {
			hw  backend.HostWeight
			dst *[]*weight
		}{{gate[i], &e.gate}, {up[i], &e.up}, {down[i], &e.down}} {
			w, err := b.upload(p.hw)
			if err != nil {
				return nil, err
			}
			*p.dst = append(*p.dst, w)
		}
	}
	if b.noMmap {
		e.own(b.copied1)
	}
	return e, nil
}

// own copies the experts' weights into one buffer of huge pages, each
// expert's gate, up and down matrices side by side: a decode step reads 8
// of 256 experts per layer at random, and reading each from one place
// rather than three, in anonymous memory rather than a file mapping, made
// decode ~20 % faster (docs/PERFORMANCE.md). Weights that are not quantized
// blocks or 16-bit values are copied one by one. copied gets each source.
func (e *experts) own(copied func([]byte)) {
	bytesOf := func(w *weight) []byte {
		switch {
		case w.q != nil:
			return w.q
		case w.u16 != nil:
			return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(w.u16))), 2*len(w.u16))
		}
		return nil
	}
	n := 0
	for i := range e.gate {
		for _, w := range []*weight{e.gate[i], e.up[i], e.down[i]} {
			n += (len(bytesOf(w)) + 63) &^ 63 // cache-line aligned matrices
		}
	}
	buf := hugepage.Make[byte](n)
	o := 0
	for i := range e.gate {
		for _, w := range []*weight{e.gate[i], e.up[i], e.down[i]} {
			src := bytesOf(w)
			if src == nil {
				copied(w.own())
				continue
			}
			c := buf[o : o+len(src) : o+len(src)]
			copy(c, src)
			if w.q != nil {
				w.q = c
			} else {
				w.u16 = unsafe.Slice((*uint16)(unsafe.Pointer(unsafe.SliceData(c))), len(c)/2)
			}
			o += (len(src) + 63) &^ 63
			copied(src)
		}
	}
}

// MoE implements backend.Backend. Rows are grouped by expert so that each
// expert's weights are read once per batch; experts run in parallel, and each
// row's expert outputs are summed in selection order (deterministic).
func (b *Backend) MoE(dst, x backend.Tensor, rt backend.Routing, ex backend.Experts) {
	r, e := rt.(*routing), ex.(*experts)
	T, D := x.Rows, x.Cols
	t := &b.moe
	// slots (t*k + i) per expert, as a counting sort: order[start[id]:start[id+1]]
	E := e.Count()
	t.start = growInt(t.start, E+1)
	clear(t.start)
	ids := r.ids[:T*r.k]
	for _, id := range ids {
		t.start[id+1]++
	}
	t.active = t.active[:0]
	for id := 0; id < E; id++ {
		if t.start[id+1] > 0 {
			t.active = append(t.active, id)
		}
		t.start[id+1] += t.start[id]
	}
	t.order = growInt(t.order, len(ids))
	t.fill = growInt(t.fill, E)
	copy(t.fill, t.start[:E])
	for slot, id := range ids {
		t.order[t.fill[id]] = slot
		t.fill[id]++
	}
	t.out = grow(t.out, T*r.k*D)
	t.r, t.e, t.x = r, e, x
	b.pool.For(len(t.active), 1, t)
	for i := 0; i < T; i++ {
		d := row(dst, i)
		copy(d, t.out[i*r.k*D:(i*r.k+1)*D])
		for j := 1; j < r.k; j++ {
			kernels.Axpy(1, t.out[(i*r.k+j)*D:(i*r.k+j+1)*D], d) // d += o, exactly
		}
	}
}

type moeTask struct {
	r                          *routing
	e                          *experts
	x                          backend.Tensor
	start, order, fill, active []int
	out                        []float32 // one weighted expert output per slot
	scratch                    [maxWorkers]struct {
		xs, g, u, y, panel []float32
		qa                 quant.QActs
	}
}

func (t *moeTask) run(part, lo, hi int) {
	sc := &t.scratch[part]
	D := t.x.Cols
	k := t.r.k
	for _, id := range t.active[lo:hi] {
		slots := t.order[t.start[id]:t.start[id+1]]
		n := len(slots)
		I := t.e.gate[id].rows
		sc.xs, sc.g, sc.u, sc.y = grow(sc.xs, n*D), grow(sc.g, n*I), grow(sc.u, n*I), grow(sc.y, n*D)
		for i, slot := range slots {
			copy(sc.xs[i*D:(i+1)*D], row(t.x, slot/k))
		}
		matMulW(t.e.gate[id], sc.g, sc.xs, n, &sc.qa, &sc.panel, true)
		gw, uw := t.e.gate[id], t.e.up[id]
		sameActs := gw.kind == backend.Quant && uw.kind == backend.Quant && gw.qtype == uw.qtype
		matMulW(uw, sc.u, sc.xs, n, &sc.qa, &sc.panel, !sameActs) // reuse gate's quantized xs
		g := sc.g
		kernels.SiLUMul(g, g, sc.u)
		matMulW(t.e.down[id], sc.y, g, n, &sc.qa, &sc.panel, true)
		for i, slot := range slots {
			o := t.out[slot*D : (slot+1)*D]
			copy(o, sc.y[i*D:(i+1)*D])
			kernels.Scale(t.r.w[slot], o)
		}
	}
}

func growInt(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// matMulW computes out[n×rows] = x[n×cols] · wᵀ on the calling goroutine.
// For quantized weights the activations are quantized into qa when
// requantize is set (otherwise qa already holds x in the right format).
func matMulW(w *weight, out, x []float32, n int, qa *quant.QActs, panel *[]float32, requantize bool) {
	N, K := w.rows, w.cols
	switch {
	case w.f32 != nil:
		kernels.MatMulF32(out, N, x, K, w.f32, n, N, K)
	case w.kind == backend.BF16:
		kernels.MatMulBF16(out, N, x, K, w.u16, n, N, K)
	case w.kind == backend.F16:
		kernels.MatMulF16(out, N, x, K, w.u16, n, N, K)
	case usePanels(w, n):
		matMulQuantPanels(w, out, N, x, K, n, 0, N, panel)
	case w.kind == backend.Quant:
		if requantize {
			qa.Quantize(quant.Type(w.qtype), x, K, n, K)
		}
		matMulQuant(w, out, N, qa, 0, N)
	}
}
