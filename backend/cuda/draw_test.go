package cuda

import (
	"context"
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
