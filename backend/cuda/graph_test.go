package cuda

import (
	"context"
	"math"
	"testing"

	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
)

// TestGraphsMatchEager decodes the fixture models on a backend with CUDA
// graphs and on one without (Options.NoGraphs): the logits of every step must
// be bit-identical, and the graph backend must have replayed graphs.
func TestGraphsMatchEager(t *testing.T) {
	for _, precise := range []bool{false, true} {
		g := gpu(t, precise)
		if !g.graphsOn {
			t.Skip("CUDA graphs are off (RINGO_CUDA_NO_GRAPHS or an old driver)")
		}
		e, err := New(0, Options{Precise: precise, NoGraphs: true})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
			for _, batch := range []int{1, 2, 9} { // 9 rows: cuBLASLt GEMMs in fast mode
				t.Run(modeName(precise)+"/"+dir+"/batch="+string(rune('0'+batch)), func(t *testing.T) {
					exp, ck := openFixture(t, dir)
					load := func(be *Backend) (*bailing.Model, []*model.Request) {
						m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, be, bailing.Options{})
						if err != nil {
							t.Fatal(err)
						}
						var reqs []*model.Request
						for i := 0; i < batch; i++ {
							st := m.NewState()
							t.Cleanup(st.Free)
							reqs = append(reqs, &model.Request{State: st, Tokens: exp.PromptIDs[:len(exp.PromptIDs)-i]})
						}
						return m, reqs
					}
					mg, rg := load(g)
					me, re := load(e)
					before := g.Stats()
					const steps = 24
					for s := 0; s <= steps; s++ {
						if err := mg.Forward(context.Background(), rg); err != nil {
							t.Fatal(err)
						}
						if err := me.Forward(context.Background(), re); err != nil {
							t.Fatal(err)
						}
						for i := range rg {
							a, b := rg[i].Logits, re[i].Logits
							for j := range a {
								if math.Float32bits(a[j]) != math.Float32bits(b[j]) {
									t.Fatalf("step %d, sequence %d: logit %d is %v with graphs, %v without", s, i, j, a[j], b[j])
								}
							}
							next := []int32{argmax(b)}
							rg[i].Tokens, re[i].Tokens = next, next
						}
					}
					after := g.Stats()
					t.Logf("%d steps: %d graph launches, %d captures, %.1f kernels and %.1f driver calls per step with graphs",
						after.Steps-before.Steps, after.GraphLaunches-before.GraphLaunches, after.Captures-before.Captures,
						float64(after.Kernels-before.Kernels)/float64(after.Steps-before.Steps), float64(after.DriverCalls-before.DriverCalls)/float64(after.Steps-before.Steps))
					if after.GraphLaunches-before.GraphLaunches < steps/2 {
						t.Fatalf("only %d graph launches in %d decode steps", after.GraphLaunches-before.GraphLaunches, steps)
					}
				})
			}
		}
	}
}
