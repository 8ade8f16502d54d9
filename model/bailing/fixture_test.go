package bailing

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/internal/fixture"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
)

func loadFixture(t *testing.T, name string, opts Options) *Model {
	t.Helper()
	return loadFixtureOn(t, name, cpu.New(0), opts)
}

// loadFixtureKV loads a fixture on a CPU backend with KV caches of type kv.
func loadFixtureKV(t *testing.T, name, kv string, opts Options) *Model {
	t.Helper()
	b, err := backend.Open("cpu", backend.Options{KVCache: kv})
	if err != nil {
		t.Fatal(err)
	}
	return loadFixtureOn(t, name, b, opts)
}

func loadFixtureOn(t *testing.T, name string, b backend.Backend, opts Options) *Model {
	t.Helper()
	ck, err := checkpoint.Open(filepath.Join("..", "..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := Load(ck.ConfigJSON, ck.Generation, ck, b, opts)
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
				worst, err := fixture.Check(context.Background(), m, exp)
				if err != nil {
					t.Fatal(err)
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
