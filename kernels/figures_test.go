package kernels

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// TestFigures prints best-of-N throughput figures, which are far more stable
// than benchmark means on a shared machine. Enable with KERNELS_FIGURES=1.
func TestFigures(t *testing.T) {
	if os.Getenv("KERNELS_FIGURES") == "" || !hasAsm {
		t.Skip("set KERNELS_FIGURES=1 (needs the assembly)")
	}
	best := func(n int, f func()) float64 {
		b := time.Hour
		for i := 0; i < n; i++ {
			s := time.Now()
			f()
			if d := time.Since(s); d < b {
				b = d
			}
		}
		return b.Seconds()
	}
	peak := float64(1<<14*FlopsPerFMALoopIter) / best(300, func() { fmaLoopAsm(1 << 14) }) / 1e9
	t.Logf("FMA peak (1 core): %.1f GFLOP/s", peak)
	const N, K = 2048, 2048
	r := rand.New(rand.NewPCG(1, 1))
	wf, wb, wh := randF32(r, N*K), randBF16(r, N*K), randF16(r, N*K)
	for _, T := range []int{1, 64} {
		x := randF32(r, T*K)
		out := make([]float32, T*N)
		for _, c := range []struct {
			name  string
			bytes int
			f     func()
		}{
			{"F32", 4, func() { MatMulF32(out, N, x, K, wf, T, N, K) }},
			{"BF16", 2, func() { MatMulBF16(out, N, x, K, wb, T, N, K) }},
			{"F16", 2, func() { MatMulF16(out, N, x, K, wh, T, N, K) }},
		} {
			s := best(30, c.f)
			t.Logf("MatMul%-4s T=%-2d N=K=2048: %6.1f GB/s  %6.1f GFLOP/s (%3.0f%% of peak)", c.name, T,
				float64(N*K*c.bytes)/s/1e9, 2*float64(T*N*K)/s/1e9, 100*2*float64(T*N*K)/s/1e9/peak)
		}
	}
	{
		// DRAM-resident weights (larger than L3): 256 MiB f32 / 128 MiB bf16.
		const N, K = 32768, 2048
		wf, wb := randF32(r, N*K), randBF16(r, N*K)
		x, out := randF32(r, K), make([]float32, N)
		s := best(5, func() { MatMulF32(out, N, x, K, wf, 1, N, K) })
		s2 := best(5, func() { MatMulBF16(out, N, x, K, wb, 1, N, K) })
		s3 := best(5, func() { benchSink += DotF32(wf, wf) }) // one sequential stream
		t.Logf("DRAM-resident T=1 N=%d K=%d: F32 %.1f GB/s, BF16 %.1f GB/s (DotF32 over the same 256 MiB: %.1f GB/s)", N, K,
			float64(N*K*4)/s/1e9, float64(N*K*2)/s2/1e9, float64(N*K*4)/s3/1e9)
	}
	for _, sh := range [][3]int{{64, 128, 1024}, {1, 128, 1024}} {
		M, N, K := sh[0], sh[1], sh[2]
		a, b, c := randF32(r, M*K), randF32(r, K*N), make([]float32, M*K)
		s := best(50, func() { GemmF32(false, M, N, K, a, K, b, N, c, N) })
		s2 := best(50, func() { GemmF32NT(false, M, K, N, b[:M*N], N, b, N, c, K) })
		fl := 2 * float64(M*N*K) / 1e9
		t.Logf("GemmF32 M=%d N=%d K=%d: %.1f GFLOP/s; GemmF32NT M=%d N=%d K=%d: %.1f GFLOP/s", M, N, K, fl/s, M, K, N, fl/s2)
	}
}
