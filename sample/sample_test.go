package sample

import (
	"math"
	"testing"
)

func TestGreedy(t *testing.T) {
	s := New(Params{})
	if got := s.Sample([]float32{0.1, 3, 2, 3}); got != 1 {
		t.Fatalf("greedy picked %d, want 1 (first maximum)", got)
	}
}

func TestSeedReproducible(t *testing.T) {
	logits := make([]float32, 100)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i)))
	}
	draw := func(seed uint64) []int32 {
		s := New(Params{Temperature: 1, Seed: seed})
		var out []int32
		for i := 0; i < 50; i++ {
			out = append(out, s.Sample(logits))
		}
		return out
	}
	a, b, c := draw(1), draw(1), draw(2)
	same := func(x, y []int32) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("same seed gave different samples")
	}
	if same(a, c) {
		t.Fatal("different seeds gave identical 50-token samples")
	}
}

func TestFilters(t *testing.T) {
	logits := []float32{5, 4, 3, 2, 1, 0}
	for _, tc := range []struct {
		name string
		p    Params
		ok   func(int32) bool
	}{
		{"top-k 2", Params{Temperature: 5, TopK: 2}, func(id int32) bool { return id < 2 }},
		{"top-p small", Params{Temperature: 1, TopP: 0.5}, func(id int32) bool { return id == 0 }},
		{"min-p", Params{Temperature: 1, MinP: 0.3}, func(id int32) bool { return id < 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.p)
			seen := map[int32]bool{}
			for i := 0; i < 500; i++ {
				id := s.Sample(logits)
				if !tc.ok(id) {
					t.Fatalf("sampled filtered-out token %d", id)
				}
				seen[id] = true
			}
			if tc.p.TopK == 2 && len(seen) != 2 {
				t.Fatalf("top-k 2 at high temperature sampled %d distinct tokens, want 2", len(seen))
			}
		})
	}
}

func TestDistribution(t *testing.T) {
	// p ∝ exp(logit): 0.5 / 0.5 for equal logits, roughly
	s := New(Params{Temperature: 1, Seed: 7})
	n := 0
	for i := 0; i < 4000; i++ {
		if s.Sample([]float32{0, 0}) == 0 {
			n++
		}
	}
	if n < 1800 || n > 2200 {
		t.Fatalf("equal logits: token 0 drawn %d/4000 times", n)
	}
}

func TestPenalties(t *testing.T) {
	s := New(Params{RepetitionPenalty: 10})
	s.AcceptPrompt([]int32{0})
	if got := s.Sample([]float32{5, 1}); got != 1 {
		t.Fatalf("repetition penalty: picked %d, want 1", got)
	}
	s = New(Params{PresencePenalty: 3})
	s.Accept(0)
	if got := s.Sample([]float32{2, 1}); got != 1 {
		t.Fatalf("presence penalty: picked %d, want 1", got)
	}
	s = New(Params{FrequencyPenalty: 0.4})
	s.Accept(0)
	if got := s.Sample([]float32{2, 1.5}); got != 0 {
		t.Fatalf("frequency penalty once: picked %d, want 0", got)
	}
	s.Accept(0)
	if got := s.Sample([]float32{2, 1.5}); got != 1 {
		t.Fatalf("frequency penalty twice: picked %d, want 1", got)
	}
}

func TestLogSoftmax(t *testing.T) {
	out := make([]float32, 3)
	LogSoftmax(out, []float32{1, 2, 3})
	var s float64
	for _, v := range out {
		s += math.Exp(float64(v))
	}
	if math.Abs(s-1) > 1e-6 {
		t.Fatalf("probabilities sum to %v", s)
	}
}
