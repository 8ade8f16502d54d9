package bailing

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/safetensors"
)

// expected is a fixture's reference answers.
type expected struct {
	promptIDs, generatedIDs       []int32
	promptLogits, generatedLogits []float32
}

func loadExpected(t *testing.T, dir string) expected {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(dir, "expected.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ints := func(name string) []int32 {
		tt := f.Tensor(name)
		out := make([]int32, tt.Elems())
		for i := range out {
			out[i] = int32(binary.LittleEndian.Uint32(tt.Data[4*i:]))
		}
		return out
	}
	floats := func(name string) []float32 {
		tt := f.Tensor(name)
		out := make([]float32, tt.Elems())
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(tt.Data[4*i:]))
		}
		return out
	}
	return expected{ints("prompt_ids"), ints("generated_ids"), floats("prompt_logits"), floats("generated_logits")}
}

func loadFixture(t *testing.T, name string, opts Options) *Model {
	t.Helper()
	ck, err := checkpoint.Open(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := Load(ck.ConfigJSON, ck.Generation, ck, cpu.New(0), opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// rowErr returns max|got−want| / max|want| of one row.
func rowErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / den
}

func argmax(v []float32) int32 {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return int32(best)
}

func TestFixtures(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		decay DecayConvention
	}{
		{"tiny-linear", DecaySGLang},
		{"tiny-linear-hfdecay", DecayHF},
		{"tiny-softmax", DecaySGLang},
	} {
		for _, rows := range []int{512, 7} { // one pass, and prefill split over many passes
			t.Run(tc.dir, func(t *testing.T) {
				exp := loadExpected(t, filepath.Join("..", "..", "testdata", tc.dir))
				m := loadFixture(t, tc.dir, Options{Decay: tc.decay, MaxBatchRows: rows})
				V := m.Info().VocabSize
				st := m.NewState()
				req := &model.Request{State: st, Tokens: exp.promptIDs, All: true}
				if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for i := range exp.promptIDs {
					worst = math.Max(worst, rowErr(req.Logits[i*V:(i+1)*V], exp.promptLogits[i*V:(i+1)*V]))
				}
				if worst > 1e-4 {
					t.Fatalf("prompt logits: worst row error %.3g > 1e-4", worst)
				}
				next := argmax(req.Logits[len(exp.promptIDs)*V-V:])
				for i, want := range exp.generatedIDs {
					if next != want {
						t.Fatalf("generated token %d: got %d, want %d", i, next, want)
					}
					req := &model.Request{State: st, Tokens: []int32{next}}
					if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
						t.Fatal(err)
					}
					if e := rowErr(req.Logits, exp.generatedLogits[i*V:(i+1)*V]); e > 1e-4 {
						t.Fatalf("generated logits %d: error %.3g > 1e-4", i, e)
					}
					worst = math.Max(worst, rowErr(req.Logits, exp.generatedLogits[i*V:(i+1)*V]))
					next = argmax(req.Logits)
				}
				t.Logf("%s rows=%d: %d prompt + %d generated tokens, worst row error %.2g", tc.dir, rows, len(exp.promptIDs), len(exp.generatedIDs), worst)
			})
		}
	}
}
