package ggufmodel_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/internal/fixture"

	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/synth"
)

func fixtureDir(name string) string { return filepath.Join("..", "testdata", name) }

// convert writes dir as a GGUF file of type typ into a temp dir.
func convert(t testing.TB, dir string, typ quant.Type) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(dir)+"-"+typ.String()+".gguf")
	if err := ggufmodel.Convert(context.Background(), dir, out, ggufmodel.ConvertOptions{Type: typ}); err != nil {
		t.Fatal(err)
	}
	return out
}

// loadGGUF loads a GGUF model (optionally quantized on load) on the CPU.
func loadGGUF(t testing.TB, path string, opts bailing.Options, q quant.Type) *bailing.Model {
	t.Helper()
	gm, err := ggufmodel.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gm.Close() })
	var src checkpoint.Source = gm.Source
	if q != 0 {
		if src, err = ggufmodel.Quantizing(src, q); err != nil {
			t.Fatal(err)
		}
	}
	m, err := bailing.Load(gm.ConfigJSON, gm.Generation, src, cpu.New(0), opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// loadDir loads a safetensors model directory, quantized on load when q != 0.
func loadDir(t testing.TB, dir string, opts bailing.Options, q quant.Type) *bailing.Model {
	t.Helper()
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	var src checkpoint.Source = ck
	if q != 0 {
		if src, err = ggufmodel.Quantizing(src, q); err != nil {
			t.Fatal(err)
		}
	}
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, src, cpu.New(0), opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// logits runs prompt through a fresh state and returns every position's logits.
func logits(t testing.TB, m model.Model, prompt []int32) []float32 {
	t.Helper()
	req := &model.Request{State: m.NewState(), Tokens: prompt, All: true}
	if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
		t.Fatal(err)
	}
	return append([]float32(nil), req.Logits...)
}

// TestFixturesFloatGGUF converts the fixtures to F32 and BF16 GGUF files
// and checks them against the reference logits exactly as
// model/bailing/fixture_test.go does (1e-4 relative row error, same greedy
// continuation).
func TestFixturesFloatGGUF(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		decay bailing.DecayConvention
	}{
		{"tiny-linear", bailing.DecaySGLang},
		{"tiny-linear-hfdecay", bailing.DecayHF},
		{"tiny-softmax", bailing.DecaySGLang},
	} {
		for _, typ := range []quant.Type{quant.F32, quant.BF16} {
			t.Run(tc.dir+"/"+typ.String(), func(t *testing.T) {
				exp := mustExpected(t, fixtureDir(tc.dir))
				path := convert(t, fixtureDir(tc.dir), typ)
				m := loadGGUF(t, path, bailing.Options{Decay: tc.decay}, 0)
				worst, err := fixture.Check(context.Background(), m, exp)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("worst row error %.2g", worst)
			})
		}
	}
}

// synthDir writes (once per test binary) the random-weight Ring-linear model
// of testdata/synth256.json (seed 7), whose matrices all have a multiple of
// 256 columns, so that the K-quants apply to every weight.
func synthDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("ringo-ggufmodel-synth256-%d", os.Getpid()))
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors.index.json")); err == nil {
		return dir
	}
	cfg, err := os.ReadFile(filepath.Join("testdata", "synth256.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := synth.Write(context.Background(), cfg, dir, synth.Options{Seed: 7}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	os.RemoveAll(filepath.Join(os.TempDir(), fmt.Sprintf("ringo-ggufmodel-synth256-%d", os.Getpid())))
	os.Exit(code)
}

// qualityCase is a model and, per type, the measured top-1 agreement and
// mean KL of its GGUF file against the unquantized model on 64 random
// tokens (docs/QUANTIZATION.md). Random-weight models have nearly flat
// next-token distributions and routers with near ties, so a small weight
// error flips some argmaxes and expert choices: the numbers are far worse
// than for a trained model, but they are deterministic and ordered by type.
type qualityCase struct {
	dir      string
	measured map[quant.Type][2]float64 // top-1, mean KL
}

var qualityCases = []qualityCase{
	// measured with the CPU backend's integer-dot kernels (activations
	// quantized to Q8_0/Q8_K, as llama.cpp does)
	{"tiny-linear", map[quant.Type][2]float64{quant.Q8_0: {0.766, 0.0264}, quant.Q4_0: {0.328, 0.2374}}},
	{"tiny-softmax", map[quant.Type][2]float64{quant.Q8_0: {0.859, 0.00535}, quant.Q4_0: {0.484, 0.1115}}},
	{"synth256", map[quant.Type][2]float64{quant.Q8_0: {0.938, 0.00594}, quant.Q6_K: {0.688, 0.0623}, quant.Q4_K: {0.344, 0.1419}, quant.Q4_0: {0.234, 0.2305}}},
}

// maxWeightError bounds the relative RMS weight error per type (uniform
// random weights; measured Q8_0 0.0054 (fixtures) / 0.0038 (synth256),
// Q6_K 0.0133, Q4_K 0.0543 (lm_head Q6_K), Q4_0 0.0857 / 0.0647).
var maxWeightError = map[quant.Type]float64{quant.Q8_0: 0.007, quant.Q6_K: 0.018, quant.Q4_K: 0.07, quant.Q4_0: 0.11}

// TestQuantizedQuality converts the fixtures (Q8_0, Q4_0) and the synthetic
// 256-wide model (all types) to GGUF, and checks the GGUF model's logits
// against the unquantized safetensors model: top-1 agreement at least the
// measured value minus 0.15 and mean KL at most 2× the measured value, KL
// growing as the types get smaller, bit-identical logits between the GGUF
// file and quantize-on-load of the same checkpoint, and the weight error.
func TestQuantizedQuality(t *testing.T) {
	for _, tc := range qualityCases {
		dir := fixtureDir(tc.dir)
		types := []quant.Type{quant.Q8_0, quant.Q4_0}
		if tc.dir == "synth256" {
			dir = synthDir(t)
			types = []quant.Type{quant.Q8_0, quant.Q6_K, quant.Q4_K, quant.Q4_0}
		}
		ref := loadDir(t, dir, bailing.Options{}, 0)
		V := ref.Info().VocabSize
		prompt := ggufmodel.RandomPrompt(64, V, 1)
		want := logits(t, ref, prompt)
		lastKL := 0.0
		for _, typ := range types {
			t.Run(tc.dir+"/"+typ.String(), func(t *testing.T) {
				path := convert(t, dir, typ)
				got := logits(t, loadGGUF(t, path, bailing.Options{}, 0), prompt)
				a, err := ggufmodel.CompareLogits(want, got, V)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("%s %v: %v", tc.dir, typ, a)
				m := tc.measured[typ]
				if a.Top1 < m[0]-0.15 || a.MeanKL > 2*m[1] {
					t.Errorf("%v: top-1 %.3f (min %.3f), mean KL %.4g (max %.4g)", typ, a.Top1, m[0]-0.15, a.MeanKL, 2*m[1])
				}
				if a.MeanKL <= lastKL {
					t.Errorf("%v: mean KL %.4g not above that of the larger type (%.4g)", typ, a.MeanKL, lastKL)
				}
				lastKL = a.MeanKL

				ck, err := checkpoint.Open(dir)
				if err != nil {
					t.Fatal(err)
				}
				defer ck.Close()
				qs, err := ggufmodel.Quantizing(ck, typ)
				if err != nil {
					t.Fatal(err)
				}
				qs.Measure(true)
				m2, err := bailing.Load(ck.ConfigJSON, ck.Generation, qs, cpu.New(0), bailing.Options{})
				if err != nil {
					t.Fatal(err)
				}
				onLoad := logits(t, m2, prompt)
				for i := range onLoad {
					if onLoad[i] != got[i] {
						t.Fatalf("quantize-on-load logit %d = %g, GGUF file %g", i, onLoad[i], got[i])
					}
				}
				werr := qs.WeightError()
				t.Logf("%s %v: weight relative RMS error %.4f", tc.dir, typ, werr)
				if werr <= 0 || werr > maxWeightError[typ] {
					t.Errorf("%v: weight error %.4f outside (0, %.3f]", typ, werr, maxWeightError[typ])
				}
			})
		}
	}
}

// TestTypePlan checks the tensor types written for a Q4_K file of the
// synthetic model and a Q4_K file of a 64-wide fixture (where the K-quants
// do not fit and the weights stay BF16).
func TestTypePlan(t *testing.T) {
	check := func(path string, want map[string]quant.Type) {
		t.Helper()
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for name, typ := range want {
			ti := f.Tensor(name)
			if ti == nil {
				t.Fatalf("%s: no tensor %s", path, name)
			}
			if ti.Type != typ {
				t.Errorf("%s: %s is %v, want %v", filepath.Base(path), name, ti.Type, typ)
			}
		}
	}
	check(convert(t, synthDir(t), quant.Q4_K), map[string]quant.Type{
		"token_embd.weight":           quant.Q4_K,
		"output.weight":               quant.Q6_K,
		"output_norm.weight":          quant.F32,
		"blk.1.ffn_gate_inp.weight":   quant.BF16,
		"blk.1.exp_probs_b.bias":      quant.F32,
		"blk.1.ffn_down_exps.weight":  quant.Q4_K,
		"blk.1.attn_qkv.weight":       quant.Q4_K,
		"blk.0.attn_gate.weight":      quant.Q4_K,
		"blk.0.attn_gate_norm.weight": quant.F32,
	})
	var notes []string
	out := filepath.Join(t.TempDir(), "q4k.gguf")
	err := ggufmodel.Convert(context.Background(), fixtureDir("tiny-linear"), out, ggufmodel.ConvertOptions{
		Type: quant.Q4_K, Note: func(s string) { notes = append(notes, s) }})
	if err != nil {
		t.Fatal(err)
	}
	check(out, map[string]quant.Type{"token_embd.weight": quant.BF16, "blk.1.ffn_gate_exps.weight": quant.BF16})
	if len(notes) == 0 || !strings.Contains(strings.Join(notes, "\n"), "not a multiple of the Q4_K block size 256") {
		t.Errorf("notes %q do not explain the fallback", notes)
	}
	t.Logf("notes: %s", strings.Join(notes, "; "))
}

// mustExpected loads a fixture's reference answers.
func mustExpected(t *testing.T, dir string) *fixture.Expected {
	t.Helper()
	e, err := fixture.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
