package cuda

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/ggufmodel"
)

// fp8Weight returns a random BF16 weight quantized to FP8 with 128×128
// blocks (ggufmodel.EncodeFP8, the quantize-on-load conversion), or with
// hostWeight's 16×16 blocks when small.
func fp8Weight(t *testing.T, rng *rand.Rand, name string, rows, cols int, small bool) backend.HostWeight {
	t.Helper()
	if small {
		return hostWeight(rng, name, backend.F8E4M3, rows, cols, 0.3)
	}
	hw, err := ggufmodel.EncodeFP8(hostWeight(rng, name, backend.BF16, rows, cols, 0.3))
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// contiguous returns rows×cols random values in freshly allocated
// (16-byte aligned, unpadded) tensors on both backends.
func contiguousT(g *Backend, rng *rand.Rand, rows, cols int) pair {
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = rng.Float32()*2 - 1
	}
	p := pair{host().Alloc(rows, cols), g.Alloc(rows, cols)}
	host().Write(p.c, vals)
	g.Write(p.g, vals)
	return p
}

// TestFastFP8 checks fast mode's FP8 kernels (weights kept in E4M3 with
// block scales: GEMV, the widening to BF16 for prefill GEMMs, embedding,
// expert GEMVs and the grouped expert GEMM) against the CPU backend, which
// widens the same weights to BF16 at upload.
func TestFastFP8(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 {
		t.Skip("FP8 weights need fast mode with tensor cores and cuBLASLt")
	}
	rng := rand.New(rand.NewSource(23))
	for _, c := range []struct {
		N, K  int
		small bool
	}{{100, 96, true}, {256, 384, false}, {200, 2048, false}} {
		hw := fp8Weight(t, rng, "w", c.N, c.K, c.small)
		cw, gw := upload(t, g, hw)
		if k := gw.(*weight).kind; k != backend.F8E4M3 {
			t.Fatalf("%+v: weight stored as %v, want FP8", c, k)
		}
		for _, T := range []int{1, 3, 8, 9, 70} {
			for _, aligned := range []bool{false, true} {
				x := randT(t, g, rng, T, c.K, 1)
				if aligned {
					x = contiguousT(g, rng, T, c.K)
				}
				d := zeroT(g, T, c.N)
				host().MatMul(d.c, x.c, cw)
				g.MatMul(d.g, x.g, gw)
				compare(t, fmt.Sprintf("fp8 matmul %+v T=%d aligned=%v", c, T, aligned), g, d, fastTol)
			}
		}
		ids := []int32{0, int32(c.N - 1), 7, 7, int32(c.N / 2)}
		d := zeroT(g, len(ids), c.K)
		host().Embed(d.c, cw, ids)
		g.Embed(d.g, gw, ids)
		compare(t, fmt.Sprintf("fp8 embed %+v", c), g, d, 1e-2)
	}

	for _, c := range []struct {
		E, I, D int
		small   bool
	}{{16, 32, 64, true}, {8, 128, 256, false}} {
		ce, ge, _, _, _ := randExperts(t, g, c.E, c.I, c.D, func(name string, rows, cols int) backend.HostWeight {
			return fp8Weight(t, rng, name, rows, cols, c.small)
		})
		if k := ge.(*experts).kind; k != backend.F8E4M3 {
			t.Fatalf("%+v: experts stored as %v, want FP8", c, k)
		}
		p := backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{1, 5, 9, 70, 600} {
			l := randT(t, g, rng, T, c.E, 3)
			x := randT(t, g, rng, T, c.D, 1)
			if T%2 == 0 {
				x = contiguousT(g, rng, T, c.D)
			}
			d := zeroT(g, T, c.D)
			host().MoE(d.c, x.c, host().Route(l.c, nil, p), ce)
			g.MoE(d.g, x.g, g.Route(l.g, nil, p), ge)
			compare(t, fmt.Sprintf("fp8 moe %+v T=%d", c, T), g, d, fastTol)
			if T <= GEMVRows {
				sameAsMoE3(t, fmt.Sprintf("fp8 moe %+v T=%d", c, T), g, d.g, func(dst backend.Tensor) bool { g.MoE(dst, x.g, g.Route(l.g, nil, p), ge); return true })
			}
		}
	}
}
