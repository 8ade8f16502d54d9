package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/sample"
)

// drawWeights returns sample.Draw's weights of row at invTemp in float64,
// their running sums in id order and their total.
func drawWeights(row []float32, inv float32) (e, cum []float64, z float64) {
	x := make([]float32, len(row))
	for i, v := range row {
		x[i] = v * inv
	}
	mx := kernels.Max(x)
	e, cum = make([]float64, len(x)), make([]float64, len(x))
	for i, v := range x {
		if v >= mx-30 {
			e[i] = float64(kernels.ExpNeg(v - mx))
		}
		z += e[i]
		cum[i] = z
	}
	return e, cum, z
}

// TestDrawTokens draws tokens on the device and with sample.Draw (the
// host's definition) from the same logits (padded views): greedy with
// planted ties, and temperature sampling over flat and peaked rows, with
// vocabularies below, near and far above the kernels' blocks of columns.
// At random u the tokens are the same unless u times the total falls within
// rounding of a boundary; at u just inside chosen tokens' intervals (and u
// = 0) they are those tokens.
func TestDrawTokens(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewPCG(47, 1))
	for _, V := range []int{100, 1000, 157184} {
		for _, temp := range []float32{0, 0.6, 1, 2} {
			for _, scale := range []float64{1, 8} {
				const R = 4
				vals := make([]float32, R*V)
				for i := range vals {
					vals[i] = float32(rng.NormFloat64() * scale)
				}
				inv := float32(0)
				if temp > 0 {
					inv = 1 / temp
				}
				if temp == 0 {
					for r := range R { // ties at the largest value: the lowest column
						row := vals[r*V : (r+1)*V]
						mx := slices.Max(row)
						row[rng.IntN(V)], row[rng.IntN(V)] = mx+1, mx+1
					}
				}
				p := pairOf(g, R, V, vals)
				draws := make([]backend.Draw, R)
				for r := range draws {
					draws[r] = backend.Draw{InvTemp: inv, U: rng.Float64()}
				}
				draws[0].U = 0
				got := make([]int32, R)
				g.DrawTokens(got, p.g, draws)
				for r := range R {
					row := vals[r*V : (r+1)*V]
					want := sample.Draw(row, inv, draws[r].U)
					if got[r] == want {
						continue
					}
					// within rounding of the boundary between the two?
					_, cum, z := drawWeights(row, inv)
					u := draws[r].U * z
					if inv == 0 || math.Abs(cum[min(got[r], want)]-u) > 1e-9*z {
						t.Errorf("V %d, T %g, scale %g, row %d, u %g: drew %d, sample.Draw %d", V, temp, scale, r, draws[r].U, got[r], want)
					}
				}
				if temp == 0 {
					continue
				}
				// u just inside the intervals of the heaviest token and of
				// random tokens weighing over 1e-6 of the total
				row := vals[:V]
				e, cum, z := drawWeights(row, inv)
				ks := []int{0}
				for i := range e {
					if e[i] > e[ks[0]] {
						ks[0] = i
					}
				}
				for n := 0; len(ks) < 8 && n < 10000; n++ {
					if k := rng.IntN(V); e[k] > 1e-6*z {
						ks = append(ks, k)
					}
				}
				var us []float64
				var want []int32
				for _, k := range ks {
					for _, f := range []float64{1e-3, 1 - 1e-3} {
						us = append(us, (cum[k]-e[k]+f*e[k])/z)
						want = append(want, int32(k))
					}
				}
				rows := make([]float32, 0, len(us)*V)
				draws = draws[:0]
				for _, u := range us {
					rows = append(rows, row...)
					draws = append(draws, backend.Draw{InvTemp: inv, U: u})
				}
				q := pairOf(g, len(us), V, rows)
				got = make([]int32, len(us))
				g.DrawTokens(got, q.g, draws)
				if !slices.Equal(got, want) {
					t.Errorf("V %d, T %g, scale %g: u inside chosen intervals drew %v, want %v", V, temp, scale, got, want)
				}
				for _, pr := range []pair{p, q} {
					g.Free(pr.g)
				}
			}
		}
	}
}

// TestGenerateDrawn generates from a fixture on the GPU with the draws on
// the device and on the host (engine's Logits option): the same tokens
// for a seed, greedy and at temperature 0.8.
func TestGenerateDrawn(t *testing.T) {
	g := gpu(t, true)
	_, ck := openFixture(t, "tiny-linear")
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, g, bailing.Options{Decay: bailing.DecaySGLang})
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int32{5, 17, 2, 99, 41}
	for _, temp := range []float32{0, 0.8} {
		var outs [2][]int32
		for i, onHost := range []bool{false, true} {
			st := m.NewState()
			drawn := 0
			var err error
			outs[i], _, err = engine.Generate(context.Background(), m, st, prompt, engine.GenerateOptions{
				MaxTokens: 24, Sampler: sample.New(sample.Params{Temperature: temp, Seed: 9}), Stop: []int32{}, Logits: onHost,
				OnToken: func(_ int32, logits []float32) bool {
					if logits == nil {
						drawn++
					}
					return true
				}})
			st.Free()
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{false: 24, true: 0}[onHost]; drawn != want {
				t.Errorf("T %g, on the host %v: %d tokens drawn on the device, want %d", temp, onHost, drawn, want)
			}
		}
		if !slices.Equal(outs[0], outs[1]) {
			t.Errorf("T %g: drawn on the device %v, on the host %v", temp, outs[0], outs[1])
		} else {
			t.Logf("T %g: %v", temp, outs[0])
		}
	}
}

// filteredRef is sample.Sampler's draw with filters, written out plainly:
// the kept tokens in their order, their running probabilities, and u times
// their total; declined reports the draws the backend leaves to the host
// by definition (top-k with fewer than k tokens within 30 of the largest
// scaled logit), selected those that k_draw_sorted cannot hold (top-p over
// every token, or more than drawCap candidates), which the selection
// (k_draw_sel) makes.
func filteredRef(row []float32, d backend.Draw) (ids []int32, cum []float64, r float64, declined, selected bool) {
	V := len(row)
	x := make([]float32, V)
	for i, v := range row {
		x[i] = v * d.InvTemp
	}
	mx := kernels.Max(x)
	var idx []int
	z := 0.0
	if d.TopK > 0 && int(d.TopK) < V {
		near := 0
		for i, v := range x {
			idx = append(idx, i)
			if v >= mx-30 {
				near++
			}
		}
		if near < int(d.TopK) {
			return nil, nil, 0, true, false // (the others weigh under e^-30)
		}
		sortDesc(idx, x)
		idx = idx[:d.TopK]
	} else {
		eps := 1e-4
		if d.MinP > 0 {
			eps = float64(d.MinP)
		}
		cut := mx + float32(math.Log(eps))
		mass := 0.0
		for i, v := range x {
			var w float64
			if v >= mx-30 {
				w = float64(kernels.ExpNeg(v - mx))
			}
			z += w
			if v >= cut {
				idx = append(idx, i)
				mass += w
			}
		}
		if d.MinP <= 0 && mass/z < float64(d.TopP) { // Sample takes every token
			idx = idx[:0]
			for i := range x {
				idx = append(idx, i)
			}
			selected = true
		}
		selected = selected || len(idx) > drawCap
		sortDesc(idx, x)
	}
	probs := make([]float64, len(idx))
	sum := 0.0
	for i, id := range idx {
		probs[i] = math.Exp(float64(x[id] - x[idx[0]]))
		sum += probs[i]
	}
	if z == 0 {
		z = sum
	}
	n := len(idx)
	for d.MinP > 0 && n > 1 && probs[n-1] < float64(d.MinP) {
		n--
	}
	c := 0.0
	for i := 0; d.TopP > 0 && i < n; i++ {
		if c += probs[i] / z; c >= float64(d.TopP) {
			n = i + 1
			break
		}
	}
	tot := 0.0
	for i := range n {
		tot += probs[i]
		ids, cum = append(ids, int32(idx[i])), append(cum, tot)
	}
	return ids, cum, d.U * tot, false, selected
}

// sortDesc orders idx by descending x, lower index first.
func sortDesc(idx []int, x []float32) {
	slices.SortFunc(idx, func(a, b int) int {
		if x[a] != x[b] {
			if x[a] > x[b] {
				return -1
			}
			return 1
		}
		return a - b
	})
}

// TestDrawTokensFiltered draws with top-k, top-p and min-p on the device,
// each call mixing a filtered row, a plain one, a greedy one and another
// filtered one, against sample.Sampler (the same planned number): flat,
// peaked and tied logits at two vocabularies. A token may differ only
// within rounding of a boundary, and a draw may be declined (-1) only where
// filteredRef says the host draws, or for a top-k draw with more than
// drawCap candidates (top-p and min-p without top-k never: the selection
// makes those k_draw_sorted cannot hold, and some must have been made); at
// u just inside chosen kept tokens' intervals the device draws exactly
// them.
func TestDrawTokensFiltered(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewPCG(53, 2))
	filters := []sample.Params{{TopK: 1}, {TopK: 40}, {TopK: 500}, {TopP: 0.9}, {TopP: 0.5}, {MinP: 0.05},
		{TopK: 40, TopP: 0.8}, {TopK: 100, TopP: 0.95, MinP: 0.02}}
	drawn, declined, selected := 0, 0, 0
	for _, V := range []int{1000, 157184} {
		for _, kind := range []string{"flat", "peaked", "tied"} {
			for fi, f := range filters {
				temp := []float32{0.7, 1.5}[fi%2]
				const R = 4
				vals := make([]float32, R*V)
				for i := range vals {
					switch kind {
					case "flat":
						vals[i] = float32(rng.NormFloat64())
					case "peaked":
						vals[i] = float32(rng.NormFloat64()*3 - 2)
					case "tied":
						vals[i] = float32(math.Round(rng.NormFloat64()*4) / 2)
					}
				}
				if kind == "peaked" {
					for r := range R {
						for range 40 {
							vals[r*V+rng.IntN(V)] = 10 + 10*rng.Float32()
						}
					}
				}
				// rows: filtered, plain, greedy, filtered
				params := []sample.Params{f, {}, {}, filters[(fi+3)%len(filters)]}
				params[0].Temperature, params[1].Temperature, params[3].Temperature = temp, temp, temp
				draws := make([]backend.Draw, R)
				want := make([]int32, R)
				for r, p := range params {
					p.Seed = uint64(rng.IntN(1 << 30))
					s := sample.New(p)
					d, ok := s.Plan()
					if !ok {
						t.Fatalf("%+v: not planned", p)
					}
					draws[r] = backend.Draw(d)
					want[r] = s.Sample(vals[r*V : (r+1)*V])
				}
				p := pairOf(g, R, V, vals)
				got := make([]int32, R)
				g.DrawTokens(got, p.g, draws)
				g.Free(p.g)
				for r := range R {
					what := fmt.Sprintf("V %d, %s, row %d %+v", V, kind, r, draws[r])
					row := vals[r*V : (r+1)*V]
					filt := draws[r].InvTemp > 0 && (draws[r].TopK > 0 || draws[r].TopP > 0 || draws[r].MinP > 0)
					if !filt {
						if got[r] != want[r] {
							if _, cum, z := drawWeights(row, draws[r].InvTemp); draws[r].InvTemp == 0 || math.Abs(cum[min(got[r], want[r])]-draws[r].U*z) > 1e-9*z {
								t.Errorf("%s: drew %d, want %d", what, got[r], want[r])
							}
						}
						continue
					}
					ids, cum, u, hostOnly, sel := filteredRef(row, draws[r])
					if got[r] == -1 {
						declined++
						if !hostOnly && (kind == "peaked" || draws[r].TopK == 0 && g.ccMaj >= 9 || draws[r].TopK <= 500 && draws[r].TopP == 0 && draws[r].MinP == 0) {
							t.Errorf("%s: declined", what)
						}
						continue
					}
					drawn++
					if hostOnly {
						t.Errorf("%s: drew %d where fewer than top-k tokens are within 30 of the largest", what, got[r])
						continue
					}
					if sel {
						selected++
					}
					if got[r] != want[r] {
						// within rounding of a boundary of the kept tokens?
						j := slices.Index(ids, want[r])
						if j < 0 || !(math.Abs(cum[j]-u) <= 1e-9*cum[len(cum)-1] || j > 0 && math.Abs(cum[j-1]-u) <= 1e-9*cum[len(cum)-1]) {
							t.Errorf("%s: drew %d, want %d", what, got[r], want[r])
						}
					}
					// u just inside kept tokens' intervals
					var us []float64
					var wantIDs []int32
					tot := cum[len(cum)-1]
					for j := range ids {
						pj := cum[j]
						if j > 0 {
							pj -= cum[j-1]
						}
						if pj > 1e-6*tot && (j < 3 || rng.IntN(len(ids)) < 4) {
							for _, fr := range []float64{1e-3, 1 - 1e-3} {
								us = append(us, (cum[j]-pj+fr*pj)/tot)
								wantIDs = append(wantIDs, ids[j])
							}
						}
					}
					rows := make([]float32, 0, len(us)*V)
					ds := make([]backend.Draw, len(us))
					for k, u := range us {
						rows = append(rows, row...)
						ds[k] = draws[r]
						ds[k].U = u
					}
					q := pairOf(g, len(us), V, rows)
					gotIDs := make([]int32, len(us))
					g.DrawTokens(gotIDs, q.g, ds)
					g.Free(q.g)
					if !slices.Equal(gotIDs, wantIDs) {
						t.Errorf("%s: u inside kept intervals drew %v, want %v", what, gotIDs, wantIDs)
					}
				}
			}
		}
	}
	t.Logf("%d filtered draws made on the device (%d of them by the selection), %d declined", drawn, selected, declined)
	if drawn == 0 || selected == 0 && g.ccMaj >= 9 {
		t.Errorf("%d filtered draws made on the device, %d by the selection: want some of each", drawn, selected)
	}
}
