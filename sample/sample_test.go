package sample

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/kernels"
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

// TestLogSoftmax checks LogSoftmax against the float64 definition, on a
// few logits and on a vocabulary of 157,184 with some far below the rest.
func TestLogSoftmax(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	big := make([]float32, 157184)
	for i := range big {
		big[i] = float32(r.NormFloat64() * 6)
	}
	for _, logits := range [][]float32{{1, 2, 3}, {-1e4, 5, 5, 4.5}, big} {
		out := make([]float32, len(logits))
		LogSoftmax(out, logits)
		mx := math.Inf(-1)
		for _, v := range logits {
			mx = math.Max(mx, float64(v))
		}
		var sum, s float64
		for _, v := range logits {
			sum += math.Exp(float64(v) - mx)
		}
		for i, v := range logits {
			want := float64(v) - mx - math.Log(sum)
			if e := math.Abs(float64(out[i]) - want); e > 2e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("%d logits: log-probability %d of %v is %v, want %v", len(logits), i, v, out[i], want)
			}
			s += math.Exp(float64(out[i]))
		}
		if math.Abs(s-1) > 1e-5 {
			t.Fatalf("%d logits: probabilities sum to %v", len(logits), s)
		}
	}
}

// naiveSample is the plain definition: sort every token by logit, keep the
// top k, normalise, apply min-p and top-p, draw with u ∈ [0, 1).
func naiveSample(logits []float32, p Params, u float64) int32 {
	x := make([]float32, len(logits))
	for i, v := range logits {
		x[i] = v / p.Temperature
	}
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sortDescKeys(idx, x, nil)
	if p.TopK > 0 && p.TopK < len(idx) {
		idx = idx[:p.TopK]
	}
	probs := make([]float64, len(idx))
	var sum float64
	for i, id := range idx {
		probs[i] = math.Exp(float64(x[id] - x[idx[0]]))
		sum += probs[i]
	}
	n := len(idx)
	if p.MinP > 0 {
		for n > 1 && probs[n-1] < float64(p.MinP)*probs[0] {
			n--
		}
	}
	if p.TopP > 0 && p.TopP < 1 {
		var c float64
		for i := 0; i < n; i++ {
			c += probs[i] / sum
			if c >= float64(p.TopP) {
				n = i + 1
				break
			}
		}
	}
	var tot float64
	for _, q := range probs[:n] {
		tot += q
	}
	r := u * tot
	for i, q := range probs[:n] {
		r -= q
		if r < 0 {
			return int32(idx[i])
		}
	}
	return int32(idx[n-1])
}

// TestFiltersMatchDefinition checks the fast filtered sampling against the
// full-sort definition, draw for draw, on random logits of a large vocabulary
// (and of Ring's 157,184 tokens, summed in pieces, for two of the settings).
func TestFiltersMatchDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, c := range []struct {
		p      Params
		vocab  int
		ties   bool    // logits in steps of 0.5: many equal values, and ±0
		spread float64 // the logits' standard deviation (0: 3)
	}{
		{Params{Temperature: 0.7, TopK: 40}, 20000, false, 0},
		{Params{Temperature: 0.7, TopK: 40}, 20000, true, 0},
		{Params{Temperature: 0.9, TopK: 3000}, 20000, true, 0}, // the full sort (k ≥ vocab/8)
		{Params{Temperature: 0.7, TopK: 50}, 157184, true, 0},
		{Params{Temperature: 1, TopP: 0.9}, 20000, false, 0},
		{Params{Temperature: 1.3, TopP: 0.999}, 20000, false, 0}, // reaches past the first candidate cut
		{Params{Temperature: 0.8, MinP: 0.05}, 20000, false, 0},
		{Params{Temperature: 1, MinP: 0.1, TopP: 0.8}, 20000, false, 0},
		{Params{Temperature: 0.6, TopK: 100, TopP: 0.95, MinP: 0.02}, 20000, false, 0},
		{Params{Temperature: 1, TopP: 0.9}, 157184, false, 0},
		{Params{Temperature: 0.8, MinP: 0.05}, 157184, false, 0},
		// more than selectMin candidates (drawSelect): with ties, and top-p
		// over every token of nearly even logits
		{Params{Temperature: 1, TopP: 0.9}, 20000, true, 0},
		{Params{Temperature: 0.8, MinP: 0.01}, 20000, true, 0},
		{Params{Temperature: 0.7, TopP: 0.9}, 157184, false, 0.3},
		{Params{Temperature: 0.7, TopP: 0.5, MinP: 0.5}, 157184, true, 0.3},
	} {
		p := c.p
		p.Seed = 11
		s := New(p)
		ref := rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15))
		for n := 0; n < 30; n++ {
			logits := make([]float32, c.vocab)
			spread := cmp.Or(c.spread, 3)
			for i := range logits {
				logits[i] = float32(r.NormFloat64() * spread)
				if c.ties {
					logits[i] = float32(math.Round(float64(logits[i])*2) / 2)
					if logits[i] == 0 && i%2 == 1 {
						logits[i] = float32(math.Copysign(0, -1))
					}
				}
			}
			got := s.Sample(logits)
			want := naiveSample(logits, p, ref.Float64())
			if got != want {
				t.Fatalf("%+v draw %d: sampled %d, definition gives %d", p, n, got, want)
			}
		}
	}
}

// BenchmarkSample draws over Ring's 157,184 tokens: "flat" logits
// N(0, 2²), where every token is within tailCut of the largest, and
// "peaked" ones like a language model's (N(−2, 3²) and a few dozen tokens
// at 10–20), where most of the vocabulary is not.
func BenchmarkSample(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	flat, peaked, even := make([]float32, 157184), make([]float32, 157184), make([]float32, 157184)
	for i := range flat {
		flat[i] = float32(r.NormFloat64() * 2)
		peaked[i] = float32(r.NormFloat64()*3 - 2)
		even[i] = float32(r.NormFloat64() * 0.3) // (a random model's: top-p takes every token)
	}
	for i := 0; i < 40; i++ {
		peaked[r.IntN(len(peaked))] = float32(10 + 10*r.Float64())
	}
	for _, l := range []struct {
		name   string
		logits []float32
	}{{"flat", flat}, {"peaked", peaked}, {"even", even}} {
		for _, p := range []Params{{Temperature: 0.7}, {Temperature: 0.7, TopP: 0.9}, {Temperature: 0.7, TopK: 40}} {
			b.Run(fmt.Sprintf("%s/T=%.1f/k=%d/p=%.1f", l.name, p.Temperature, p.TopK, p.TopP), func(b *testing.B) {
				s := New(p)
				for i := 0; i < b.N; i++ {
					s.Sample(l.logits)
				}
			})
		}
	}
}

// TestWeightsTail checks the weights of a draw: kernels.ExpNeg(v − max) for
// the tokens within tailCut of the largest, none below, and the same sum
// whether the vocabulary is cut into pieces (parallelMin tokens or more) or
// not, up to the order of the additions.
func TestWeightsTail(t *testing.T) {
	for _, n := range []int{1000, parallelMin, 157184} {
		x := make([]float32, n)
		r := rand.New(rand.NewPCG(5, uint64(n)))
		for i := range x {
			x[i] = float32(r.NormFloat64() * 12)
		}
		mx := x[Argmax(x)]
		s := New(Params{Temperature: 1})
		e, z := s.weights(x, mx)
		if len(e) != n {
			t.Fatalf("%d tokens: %d weights", n, len(e))
		}
		var want float64
		cut := 0
		for i, v := range x {
			w := float32(0)
			if v >= mx-tailCut {
				w = kernels.ExpNeg(v - mx)
			} else {
				cut++
			}
			if e[i] != w {
				t.Fatalf("%d tokens: weight %d (logit %v, max %v) %v, want %v", n, i, v, mx, e[i], w)
			}
			want += float64(w)
		}
		if math.Abs(z-want) > 1e-12*want {
			t.Errorf("%d tokens: sum %v, want %v", n, z, want)
		}
		if cut == 0 {
			t.Errorf("%d tokens: no token below the cut; the test covers nothing there", n)
		}
		if pieces := len(s.sums); (n >= parallelMin) != (pieces == weightChunks) {
			t.Errorf("%d tokens: %d pieces", n, pieces)
		}
	}
}

// TestDrawsIndependentOfCores checks that a seed's draws over a large
// vocabulary (summed in pieces by goroutines) do not depend on how many
// cores run them, with and without top-p.
func TestDrawsIndependentOfCores(t *testing.T) {
	x := make([]float32, 157184)
	r := rand.New(rand.NewPCG(7, 7))
	for i := range x {
		x[i] = float32(r.NormFloat64() * 3)
	}
	for _, p := range []Params{{Temperature: 0.8, Seed: 3}, {Temperature: 0.8, TopP: 0.9, Seed: 3}} {
		draw := func(procs int) []int32 {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			s := New(p)
			out := make([]int32, 40)
			for i := range out {
				out[i] = s.Sample(x)
			}
			return out
		}
		if a, b := draw(1), draw(4); !slices.Equal(a, b) {
			t.Errorf("%+v: draws %v on one core, %v on four", p, a, b)
		}
	}
}

// BenchmarkLogSoftmax times the log-probabilities of Ring's 157,184 tokens
// (the server's logprobs, once per generated token).
func BenchmarkLogSoftmax(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 157184)
	for i := range x {
		x[i] = float32(r.NormFloat64() * 3)
	}
	dst := make([]float32, len(x))
	for b.Loop() {
		LogSoftmax(dst, x)
	}
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Params
		ok   bool
		want Planned // (U aside)
	}{
		{"greedy", Params{}, true, Planned{}},
		{"greedy, top-k", Params{TopK: 5}, true, Planned{}},
		{"temperature", Params{Temperature: 0.6}, true, Planned{InvTemp: 1 / float32(0.6)}},
		{"top-p 1, repetition 1", Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1}, true, Planned{InvTemp: 1}},
		{"filters", Params{Temperature: 2, TopK: 40, TopP: 0.9, MinP: 0.05}, true, Planned{InvTemp: 0.5, TopK: 40, TopP: 0.9, MinP: 0.05}},
		{"repetition", Params{Temperature: 1, RepetitionPenalty: 1.1}, false, Planned{}},
		{"greedy, repetition", Params{RepetitionPenalty: 1.1}, false, Planned{}},
		{"presence", Params{Temperature: 1, PresencePenalty: 0.5}, false, Planned{}},
		{"frequency", Params{Temperature: 1, FrequencyPenalty: -0.5}, false, Planned{}},
	} {
		d, ok := New(tc.p).Plan()
		if ok != tc.ok {
			t.Errorf("%s: Plan ok %v, want %v", tc.name, ok, tc.ok)
		}
		if (d.U != 0) != (ok && tc.p.Temperature > 0) || !(d.U >= 0 && d.U < 1) {
			t.Errorf("%s: uniform number %g", tc.name, d.U)
		}
		if d.U = 0; d != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, d, tc.want)
		}
	}
	// a seed's tokens are the same whether each draw takes its own number
	// (own), Plan's (planned), or is Draw on Plan's numbers (drawn), over
	// flat and peaked logits
	rng := rand.New(rand.NewPCG(3, 4))
	for _, temp := range []float32{0, 0.6, 1.5} {
		for _, V := range []int{1000, 157184} {
			p := Params{Temperature: temp, Seed: 11}
			own, planned, drawn := New(p), New(p), New(p)
			excused := 0
			for step := range 40 {
				scale := []float64{1, 8}[step%2]
				logits := make([]float32, V)
				for i := range logits {
					logits[i] = float32(rng.NormFloat64() * scale)
				}
				a := own.Sample(logits)
				own.Accept(a)
				d, ok := planned.Plan()
				if d2, _ := planned.Plan(); !ok || d2.U != d.U {
					t.Fatalf("T %g: Plan ok %v, then another number (%g, %g)", temp, ok, d.U, d2.U)
				}
				b := planned.Sample(logits)
				planned.Accept(b)
				d, _ = drawn.Plan()
				inv, u := d.InvTemp, d.U
				c := Draw(logits, inv, u)
				drawn.Accept(c)
				if a != b {
					t.Fatalf("T %g, V %d, step %d: Sample after Plan drew %d, Sample alone %d", temp, V, step, b, a)
				}
				if a != c {
					if !nearBoundary(logits, inv, u, a, c) {
						t.Fatalf("T %g, V %d, step %d: Draw drew %d, Sample %d", temp, V, step, c, a)
					}
					excused++
				}
			}
			if excused > 1 {
				t.Errorf("T %g, V %d: %d of 40 draws fell within rounding of a boundary", temp, V, excused)
			}
		}
	}
}

// nearBoundary reports whether u times the total weight of Draw's
// definition lies within 1e-9 of the total from a boundary between tokens
// a and c (sums in float64).
func nearBoundary(logits []float32, inv float32, u float64, a, c int32) bool {
	if inv <= 0 {
		return false
	}
	_, e := drawWeights(logits, inv)
	var z float64
	for _, w := range e {
		z += float64(w)
	}
	r, cum := u*z, 0.0
	for i := range min(a, c) {
		cum += float64(e[i])
	}
	for i := min(a, c); i < max(a, c); i++ {
		cum += float64(e[i])
		if math.Abs(cum-r) <= 1e-9*z {
			return true
		}
	}
	return false
}
