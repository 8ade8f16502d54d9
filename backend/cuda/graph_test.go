package cuda

import (
	"context"
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
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
		serialBackend(e)
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

// TestEarlyFlush prefills more than bigStepRows rows on a backend that issues
// such steps every few kernels and on one that issues them at the end, then
// decodes a few steps: the logits must be bit-identical, and the first
// backend must have flushed more often.
func TestEarlyFlush(t *testing.T) {
	g := gpu(t, false)
	defer func(n int) { g.flushKernels = n }(g.flushKernels)
	g.flushKernels = 3
	e, err := New(0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	serialBackend(e)
	e.flushKernels = 0
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		exp, ck := openFixture(t, dir)
		var prompt []int32
		for len(prompt) < 3*bigStepRows/2 {
			prompt = append(prompt, exp.PromptIDs...)
		}
		run := func(be *Backend) ([][]float32, int64) {
			m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, be, bailing.Options{MaxBatchRows: 4 * bigStepRows})
			if err != nil {
				t.Fatal(err)
			}
			st := m.NewState()
			defer st.Free()
			before := be.Stats().Flushes
			req := &model.Request{State: st, Tokens: prompt}
			var out [][]float32
			for s := 0; s < 4; s++ {
				if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
					t.Fatal(err)
				}
				out = append(out, slices.Clone(req.Logits))
				req.Tokens = []int32{argmax(req.Logits)}
			}
			return out, be.Stats().Flushes - before
		}
		got, fg := run(g)
		want, fe := run(e)
		sameSteps(t, dir, got, want, "with early flushes", "without")
		if fg <= fe {
			t.Errorf("%s: %d flushes with a flush every 3 kernels, %d without", dir, fg, fe)
		}
		t.Logf("%s: %d-token prefill and 3 decode steps: %d flushes with a flush every 3 kernels, %d without", dir, len(prompt), fg, fe)
	}
}

// TestDecodeSegments decodes the fixture models on a backend that issues
// each decode step in segments of 16 kernels, each replayed as a graph, and
// on one that issues a step as one graph: bit-identical logits, and more
// graph launches per step with segments.
func TestDecodeSegments(t *testing.T) {
	g := gpu(t, false)
	if !g.graphsOn {
		t.Skip("CUDA graphs are off (RINGO_CUDA_NO_GRAPHS or an old driver)")
	}
	defer func(a, b int) { g.segFirst, g.segRest = a, b }(g.segFirst, g.segRest)
	g.segFirst, g.segRest = 16, 16
	e, err := New(0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	serialBackend(e)
	e.segFirst, e.segRest = 0, 0
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		exp, ck := openFixture(t, dir)
		run := func(be *Backend) ([][]float32, float64) {
			m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, be, bailing.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st := m.NewState()
			defer st.Free()
			req := &model.Request{State: st, Tokens: exp.PromptIDs}
			var out [][]float32
			var before Stats
			const steps = 12
			for s := 0; s <= steps; s++ {
				if s == 4 { // graphs captured
					before = be.Stats()
				}
				if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
					t.Fatal(err)
				}
				out = append(out, slices.Clone(req.Logits))
				req.Tokens = []int32{argmax(req.Logits)}
			}
			after := be.Stats()
			return out, float64(after.GraphLaunches-before.GraphLaunches) / float64(after.Steps-before.Steps)
		}
		got, lg := run(g)
		want, le := run(e)
		sameSteps(t, dir, got, want, "in segments", "in one graph")
		if lg < 2 || le > 1 {
			t.Errorf("%s: %.1f graph launches per decode step in segments of 16 kernels, %.1f in one", dir, lg, le)
		}
		t.Logf("%s: %.1f graph launches per decode step in segments of 16 kernels, %.1f in one", dir, lg, le)
	}
}

// TestTimeline runs a few steps with RINGO_CUDA_TIMELINE on sm_90: every
// kernel marks its release once, so each step's marks match its kernels,
// and every kernel but a step's last gets a positive share.
func TestTimeline(t *testing.T) {
	g := gpu(t, false)
	if !g.pdl {
		t.Skip("the timeline needs programmatic dependent launch (sm_90)")
	}
	t.Setenv("RINGO_CUDA_TIMELINE", "1")
	t.Setenv("RINGO_CUDA_STATS", "1000")
	b, err := New(0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.tl == nil {
		t.Fatal("RINGO_CUDA_TIMELINE did not turn the timeline on")
	}
	rng := rand.New(rand.NewSource(3))
	_, w := upload(t, b, hostWeight(rng, "w", backend.BF16, 512, 256, 1))
	_, nw := upload(t, b, hostWeight(rng, "n", backend.BF16, 1, 256, 1))
	x, a, h, y := b.Alloc(1, 256), b.Alloc(1, 256), b.Alloc(1, 256), b.Alloc(1, 512)
	out := make([]float32, 512)
	const steps = 5
	for range steps {
		b.AddRMSNorm(h, x, a, nw, 1e-6)
		b.MatMul(y, h, w)
		b.Add(x, x, h)
		b.Read(y, out)
	}
	tl := b.tl
	if tl.steps < steps-1 || tl.skip > 1 {
		t.Fatalf("%d steps matched their marks, %d skipped", tl.steps, tl.skip)
	}
	names := map[string]bool{}
	for k, v := range tl.sum {
		if v <= 0 {
			t.Errorf("%s: share %v ns", b.fnNames[k.fn], v)
		}
		names[b.fnNames[k.fn]] = true
	}
	if !names["k_addrmsnorm"] || !names["gemv_bf16v1"] {
		t.Errorf("kernels with a share: %v", names)
	}
	t.Logf("%.1f µs per step from the first release to the last", tl.span/float64(tl.steps)/1e3)
}

// sameSteps fails the test unless every step's logits in got and want
// (made by the setups named a and b) are bit-identical.
func sameSteps(t *testing.T, what string, got, want [][]float32, a, b string) {
	t.Helper()
	for s := range got {
		for j := range got[s] {
			if math.Float32bits(got[s][j]) != math.Float32bits(want[s][j]) {
				t.Fatalf("%s step %d: logit %d is %v %s, %v %s", what, s, j, got[s][j], a, want[s][j], b)
			}
		}
	}
}
