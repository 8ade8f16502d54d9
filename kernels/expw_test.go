package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpNeg checks ExpNeg against math.Exp: a dense grid from 0 to −30
// (a sampler's weights), random points down to −87, and the ends.
func TestExpNeg(t *testing.T) {
	const tol = 1.2e-7 // about two float32 units in the last place
	check := func(x float32) {
		t.Helper()
		got, want := float64(ExpNeg(x)), math.Exp(float64(x))
		if e := math.Abs(got-want) / want; e > tol || math.IsNaN(got) {
			t.Fatalf("ExpNeg(%v) = %v, want %v (relative error %.3g)", x, got, want, e)
		}
	}
	if ExpNeg(0) != 1 {
		t.Errorf("ExpNeg(0) = %v, want 1", ExpNeg(0))
	}
	for i := 0; i <= 300000; i++ {
		check(-float32(i) * (30 / 300000.0))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(-r.Float32() * 87)
	}
	for _, x := range []float32{-1e-30, -math.SmallestNonzeroFloat32, -0.5 * math.Ln2, -0.5 * math.Ln2 * (1 + 1e-7), -30, -86.9} {
		check(x)
	}
}

// TestExpWeights checks ExpWeights against its definition (ExpNeg of the
// values at or above lo, 0 below; lane sums in order), bit for bit, with
// and without the assembly, at lengths around its eight-value steps.
func TestExpWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	withModes(t, func(t *testing.T) {
		for _, n := range []int{0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 1001, 9824} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * 12)
			}
			mx := float32(math.Inf(-1))
			for _, v := range x {
				mx = max(mx, v)
			}
			lo := mx - 30
			for i := 1; i < n; i += 5 {
				if x[i] != mx {
					x[i] = lo // exactly at the cut: kept
					i += 20
				}
			}
			e := make([]float32, n)
			for i := range e {
				e[i] = float32(math.NaN()) // overwritten
			}
			z := ExpWeights(e, x, mx, lo)
			var want [4]float64
			below := 0
			for i, v := range x {
				var w float32
				if v >= lo {
					w = ExpNeg(v - mx)
				} else {
					below++
				}
				if math.Float32bits(e[i]) != math.Float32bits(w) {
					t.Fatalf("n=%d: weight %d of %v (max %v) is %v, want %v", n, i, v, mx, e[i], w)
				}
				want[i&3] += float64(w)
			}
			if z != want {
				t.Fatalf("n=%d: lane sums %v, want %v", n, z, want)
			}
			if n >= 1001 && below == 0 {
				t.Fatalf("n=%d: no value below lo; the test covers nothing there", n)
			}
		}
	})
}

// BenchmarkExpWeights times ExpWeights over a piece of a 157,184-token
// vocabulary's weights, against math.Exp over the same values.
func BenchmarkExpWeights(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 157184/16)
	for i := range x {
		x[i] = -r.Float32() * 30
	}
	e := make([]float32, len(x))
	b.Run("ExpWeights", func(b *testing.B) {
		for b.Loop() {
			ExpWeights(e, x, 0, -30)
		}
	})
	b.Run("math.Exp", func(b *testing.B) {
		var z float64
		for b.Loop() {
			for i, v := range x {
				e[i] = float32(math.Exp(float64(v)))
				z += float64(e[i])
			}
		}
	})
}
