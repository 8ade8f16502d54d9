package bailing

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/internal/fixture"

	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
)

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
				exp := mustExpected(t, filepath.Join("..", "..", "testdata", tc.dir))
				m := loadFixture(t, tc.dir, Options{Decay: tc.decay, MaxBatchRows: rows})
				V := m.Info().VocabSize
				st := m.NewState()
				req := &model.Request{State: st, Tokens: exp.PromptIDs, All: true}
				if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
					t.Fatal(err)
				}
				worst := 0.0
				for i := range exp.PromptIDs {
					worst = math.Max(worst, fixture.RowErr(req.Logits[i*V:(i+1)*V], exp.PromptLogits[i*V:(i+1)*V]))
				}
				if worst > 1e-4 {
					t.Fatalf("prompt logits: worst row error %.3g > 1e-4", worst)
				}
				next := fixture.Argmax(req.Logits[len(exp.PromptIDs)*V-V:])
				for i, want := range exp.GeneratedIDs {
					if next != want {
						t.Fatalf("generated token %d: got %d, want %d", i, next, want)
					}
					req := &model.Request{State: st, Tokens: []int32{next}}
					if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
						t.Fatal(err)
					}
					if e := fixture.RowErr(req.Logits, exp.GeneratedLogits[i*V:(i+1)*V]); e > 1e-4 {
						t.Fatalf("generated logits %d: error %.3g > 1e-4", i, e)
					}
					worst = math.Max(worst, fixture.RowErr(req.Logits, exp.GeneratedLogits[i*V:(i+1)*V]))
					next = fixture.Argmax(req.Logits)
				}
				t.Logf("%s rows=%d: %d prompt + %d generated tokens, worst row error %.2g", tc.dir, rows, len(exp.PromptIDs), len(exp.GeneratedIDs), worst)
			})
		}
	}
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
