package cpu

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
)

// TestFusedFallback checks that the fused helpers, on a backend without the
// fused operations (this one), give exactly what the two plain calls give.
func TestFusedFallback(t *testing.T) {
	b := New(2)
	if _, ok := any(b).(backend.RMSNormRoPEr); ok {
		t.Fatal("the CPU backend implements RMSNormRoPEr: this test no longer checks the fallback")
	}
	if _, ok := any(b).(backend.RMSNormSigmoidMuler); ok {
		t.Fatal("the CPU backend implements RMSNormSigmoidMuler: this test no longer checks the fallback")
	}
	r := rand.New(rand.NewPCG(1, 2))
	weight := func(n int) backend.Weight {
		v := make([]float32, n)
		for i := range v {
			v[i] = r.Float32()*2 - 1
		}
		w, err := b.Upload(backend.HostWeight{Name: "w", Kind: backend.F32, Rows: 1, Cols: n, Data: f32Bytes(v)})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	clone := func(x backend.Tensor) backend.Tensor {
		y := b.Alloc(x.Rows, x.Cols)
		b.Copy(y, x)
		return y
	}
	const eps = 1e-6

	// per-head norm and RoPE over q|k: 3 rows, 6 heads of 128, 64 rotated
	x, w := randTensor(b, r, 3, 6*128, 3), weight(6*128)
	pos, rope := []int32{5, 900, 17}, backend.RoPE{Dim: 64, Theta: 600000}
	want := clone(x)
	b.RMSNorm(want, want, w, 128, eps)
	b.ApplyRoPE(want, 128, rope, pos)
	backend.RMSNormRoPE(b, x, w, 128, eps, rope, pos)
	if !slices.Equal(data(x), data(want)) {
		t.Errorf("RMSNormRoPE differs from RMSNorm then ApplyRoPE")
	}

	// grouped norm and sigmoid gating: 2048 columns in groups of 512
	x, g, w := randTensor(b, r, 3, 2048, 3), randTensor(b, r, 3, 2048, 4), weight(2048)
	want = b.Alloc(3, 2048)
	b.RMSNorm(want, x, w, 512, eps)
	b.SigmoidMul(want, want, g)
	d := b.Alloc(3, 2048)
	backend.RMSNormSigmoidMul(b, d, x, g, w, 512, eps)
	if !slices.Equal(data(d), data(want)) {
		t.Errorf("RMSNormSigmoidMul differs from RMSNorm then SigmoidMul")
	}
	backend.RMSNormSigmoidMul(b, x, x, g, w, 512, eps) // in place
	if !slices.Equal(data(x), data(want)) {
		t.Errorf("RMSNormSigmoidMul in place differs from RMSNorm then SigmoidMul")
	}
}
