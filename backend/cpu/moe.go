package cpu

import (
	"fmt"
	"math"
	"sort"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
)

var _ backend.Backend = (*Backend)(nil)

// routing is the CPU expert selection: TopK ids and weights per row.
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
	var bv []float32
	if bias != nil {
		bv = bias.(*weight).f32
		if len(bv) != E {
			panic(fmt.Sprintf("cpu.Route: bias of %d for %d experts", len(bv), E))
		}
	}
	groups := max(1, p.Groups)
	if E%groups != 0 || p.TopK > E {
		panic(fmt.Sprintf("cpu.Route: %d experts, %d groups, top %d", E, groups, p.TopK))
	}
	r := &routing{k: p.TopK, ids: make([]int32, logits.Rows*p.TopK), w: make([]float32, logits.Rows*p.TopK)}
	b.pool.For(logits.Rows, 8, func(lo, hi int) {
		s := make([]float32, E)
		c := make([]float32, E)
		gs := make([]float32, groups)
		idx := make([]int, E)
		for t := lo; t < hi; t++ {
			lr := row(logits, t)
			if p.Sigmoid {
				for e, x := range lr {
					s[e] = float32(1 / (1 + math.Exp(-float64(x))))
				}
			} else {
				softmax(s, lr)
			}
			for e := range c {
				c[e] = s[e]
				if bv != nil {
					c[e] += bv[e]
				}
			}
			// group scores: sum of the top two selection scores in each group
			per := E / groups
			for g := 0; g < groups; g++ {
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
			keepGroups := groups
			if p.TopKGroups > 0 && p.TopKGroups < groups {
				keepGroups = p.TopKGroups
			}
			gi := topK(gs, keepGroups, idx[:groups])
			n := 0
			for _, g := range gi {
				for e := g * per; e < (g+1)*per; e++ {
					idx[n] = e
					n++
				}
			}
			cand := idx[:n]
			sort.Slice(cand, func(i, j int) bool {
				if c[cand[i]] != c[cand[j]] {
					return c[cand[i]] > c[cand[j]]
				}
				return cand[i] < cand[j]
			})
			sel := cand[:p.TopK]
			var sum float32
			for _, e := range sel {
				sum += s[e]
			}
			for i, e := range sel {
				w := s[e]
				if p.Normalize {
					w /= sum + 1e-20
				}
				r.ids[t*p.TopK+i] = int32(e)
				r.w[t*p.TopK+i] = w * p.Scale
			}
		}
	})
	return r
}

// topK returns the indices of the k largest values (ties: lower index), using buf.
func topK(v []float32, k int, buf []int) []int {
	for i := range buf {
		buf[i] = i
	}
	sort.SliceStable(buf, func(i, j int) bool { return v[buf[i]] > v[buf[j]] })
	out := append([]int(nil), buf[:k]...)
	sort.Ints(out)
	return out
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
			w, err := b.Upload(p.hw)
			if err != nil {
				return nil, err
			}
			*p.dst = append(*p.dst, w.(*weight))
		}
	}
	return e, nil
}

// MoE implements backend.Backend. Rows are grouped by expert so that each
// expert's weights are read once per batch; experts run in parallel, and each
// row's expert outputs are summed in selection order (deterministic).
func (b *Backend) MoE(dst, x backend.Tensor, rt backend.Routing, ex backend.Experts) {
	r, e := rt.(*routing), ex.(*experts)
	T, D := x.Rows, x.Cols
	// rows per expert, as (row, slot) pairs; slot = t*k + i
	byExpert := make([][]int, e.Count())
	var active []int
	for slot, id := range r.ids[:T*r.k] {
		if byExpert[id] == nil {
			active = append(active, int(id))
		}
		byExpert[id] = append(byExpert[id], slot)
	}
	sort.Ints(active)
	out := make([]float32, T*r.k*D)
	b.pool.For(len(active), 1, func(lo, hi int) {
		var xs, g, u, y []float32
		for _, id := range active[lo:hi] {
			slots := byExpert[id]
			n := len(slots)
			I := e.gate[id].rows
			xs, g, u, y = grow(xs, n*D), grow(g, n*I), grow(u, n*I), grow(y, n*D)
			for i, slot := range slots {
				copy(xs[i*D:(i+1)*D], row(x, slot/r.k))
			}
			matMulW(e.gate[id], g, xs, n)
			matMulW(e.up[id], u, xs, n)
			for i := range g {
				g[i] = g[i] / (1 + float32(math.Exp(float64(-g[i])))) * u[i]
			}
			matMulW(e.down[id], y, g, n)
			for i, slot := range slots {
				w := r.w[slot]
				o, yr := out[slot*D:(slot+1)*D], y[i*D:(i+1)*D]
				for j := range o {
					o[j] = w * yr[j]
				}
			}
		}
	})
	for t := 0; t < T; t++ {
		d := row(dst, t)
		copy(d, out[t*r.k*D:(t*r.k+1)*D])
		for i := 1; i < r.k; i++ {
			o := out[(t*r.k+i)*D : (t*r.k+i+1)*D]
			for j := range d {
				d[j] += o[j]
			}
		}
	}
}

// matMulW computes out[n×rows] = x[n×cols] · wᵀ on the calling goroutine.
func matMulW(w *weight, out, x []float32, n int) {
	N, K := w.rows, w.cols
	switch {
	case w.f32 != nil:
		kernels.MatMulF32(out, N, x, K, w.f32, n, N, K)
	case w.kind == backend.BF16:
		kernels.MatMulBF16(out, N, x, K, w.u16, n, N, K)
	case w.kind == backend.F16:
		kernels.MatMulF16(out, N, x, K, w.u16, n, N, K)
	case w.kind == backend.Quant && n >= quantPanelMinRows:
		var buf []float32
		matMulQuantPanels(w, out, N, x, K, n, 0, N, &buf)
	case w.kind == backend.Quant:
		var qa quant.QActs
		qa.Quantize(quant.Type(w.qtype), x, K, n, K)
		matMulQuant(w, out, N, &qa, 0, N)
	}
}
