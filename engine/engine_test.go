package engine

import (
	"context"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/internal/fixture"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/sample"
)

func TestGenerateStops(t *testing.T) {
	m, err := Load("../testdata/tiny-linear", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	prompt := []int32{3, 17, 42, 99}
	// greedy, token limit
	st := m.NewState()
	out, fin, err := Generate(context.Background(), m, st, prompt, GenerateOptions{MaxTokens: 5})
	if err != nil || fin != FinishLength || len(out) != 5 || st.Len() != len(prompt)+4 {
		t.Fatalf("max tokens: %v %v %v, state %d", out, fin, err, st.Len())
	}
	// the first generated token as a stop id ends generation before it
	out2, fin, err := Generate(context.Background(), m, m.NewState(), prompt, GenerateOptions{MaxTokens: 5, Stop: []int32{out[0]}})
	if err != nil || fin != FinishStop || len(out2) != 0 {
		t.Fatalf("stop id: %v %v %v", out2, fin, err)
	}
	// OnToken can stop; sampling with a seed is reproducible
	run := func() []int32 {
		var seen []int32
		_, _, err := Generate(context.Background(), m, m.NewState(), prompt, GenerateOptions{
			MaxTokens: 50, Sampler: sample.New(sample.Params{Temperature: 1, Seed: 9}),
			OnToken: func(id int32, _ []float32) bool { seen = append(seen, id); return len(seen) < 3 },
		})
		if err != nil {
			t.Fatal(err)
		}
		return seen
	}
	a, b := run(), run()
	if len(a) != 3 || len(b) != 3 || a[0] != b[0] || a[1] != b[1] || a[2] != b[2] {
		t.Fatalf("seeded runs: %v vs %v", a, b)
	}
	// cancellation
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Generate(ctx, m, m.NewState(), prompt, GenerateOptions{MaxTokens: 5}); err == nil {
		t.Fatal("cancelled context: no error")
	}
}

func TestLoadErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"bad device":  {Device: "tpu"},
		"bad decay":   {Decay: "nope"},
		"bad kv type": {KVCache: "q2"},
		"bad quant":   {Quantize: "Q3_X"},
		"bad rows":    {MaxBatchRows: -1},
	} {
		if _, err := Load("../testdata/tiny-linear", o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := Load("../testdata/does-not-exist", Options{}); err == nil {
		t.Error("missing directory: no error")
	}
}

// TestNoMmap checks that a model loaded with its weights copied into the
// backend's memory gives the same logits as one reading the mapped files,
// for a model directory and a GGUF file.
func TestNoMmap(t *testing.T) {
	dir := t.TempDir()
	gg := dir + "/tiny.gguf"
	// tiny-softmax has no tokenizer.json: the GGUF needs none for logits
	if err := ggufmodel.Convert(context.Background(), "../testdata/tiny-softmax", gg, ggufmodel.ConvertOptions{Type: quant.Q8_0}); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"../testdata/tiny-linear", gg} {
		mapped := promptLogits(t, path, Options{}, nil)
		copied := promptLogits(t, path, Options{NoMmap: true}, nil)
		for j := range mapped {
			if mapped[j] != copied[j] {
				t.Fatalf("%s: logit %d is %v with the weights copied, %v mapped", path, j, copied[j], mapped[j])
			}
		}
	}
}

// promptLogits loads path with o, runs before (when set) on the loaded
// model, then returns the logits of a fixed four-token prompt.
func promptLogits(t *testing.T, path string, o Options, before func(*Loaded)) []float32 {
	t.Helper()
	m, err := Load(path, o)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if before != nil {
		before(m)
	}
	st := m.NewState()
	defer st.Free()
	req := &model.Request{State: st, Tokens: []int32{3, 17, 42, 99}}
	if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
		t.Fatal(err)
	}
	return req.Logits
}

// TestWarm checks that the warm-up leaves the model as it was: a request
// after it gets the logits a freshly loaded model gives.
func TestWarm(t *testing.T) {
	fresh := promptLogits(t, "../testdata/tiny-linear", Options{}, nil)
	warmed := promptLogits(t, "../testdata/tiny-linear", Options{}, func(m *Loaded) {
		if err := m.Warm(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	for j := range fresh {
		if fresh[j] != warmed[j] {
			t.Fatalf("logit %d is %v after the warm-up, %v without", j, warmed[j], fresh[j])
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m, err := Load("../testdata/tiny-linear", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Warm(ctx); err == nil {
		t.Error("warm-up with a cancelled context: no error")
	}
}

// TestGenerateDrawn generates with the model drawing the tokens and with
// the draws kept on the host (Logits): the same tokens for a seed, with
// OnToken given no logits for the drawn ones; filters keep the draws on
// the host.
func TestGenerateDrawn(t *testing.T) {
	l, err := Load("../testdata/tiny-linear", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	prompt := []int32{3, 17, 42, 99}
	for _, p := range []sample.Params{{}, {Temperature: 0.9, Seed: 4}, {Temperature: 0.9, Seed: 4, TopK: 20}} {
		var outs [2][]int32
		for i, onHost := range []bool{false, true} {
			m := &fixture.DrawModel{Model: l}
			noLogits := 0
			out, _, err := Generate(context.Background(), m, m.NewState(), prompt, GenerateOptions{
				MaxTokens: 12, Sampler: sample.New(p), Stop: []int32{}, Logits: onHost,
				OnToken: func(_ int32, logits []float32) bool {
					if logits == nil {
						noLogits++
					}
					return true
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			want := 12
			if onHost || p.TopK > 0 {
				want = 0
			}
			if m.Drawn.Load() != int64(want) || noLogits != want {
				t.Errorf("%+v, on the host %v: %d drawn by the model, %d without logits, want %d", p, onHost, m.Drawn.Load(), noLogits, want)
			}
			outs[i] = out
		}
		if len(outs[0]) != 12 || !slices.Equal(outs[0], outs[1]) {
			t.Errorf("%+v: drawn by the model %v, on the host %v", p, outs[0], outs[1])
		}
	}
}
