package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/quant"
)

// BenchmarkQuantMatMul compares the two quantized MatMul paths over T rows:
// integer dot products against activations quantized to Q8 ("dots") and
// float32 GEMM over expanded weight panels ("panels"). It reports weight
// elements × rows per nanosecond.
func BenchmarkQuantMatMul(b *testing.B) {
	be := New(1)
	r := rand.New(rand.NewPCG(1, 1))
	const N, K = 512, 2048
	for _, typ := range []quant.Type{quant.Q4_K, quant.Q8_0} {
		q, _ := quantPair(&testing.T{}, be, r, typ, N, K)
		for _, T := range []int{1, 16, 64, 256} {
			for _, path := range []string{"dots", "panels"} {
				b.Run(fmt.Sprintf("%v/T=%d/%s", typ, T, path), func(b *testing.B) {
					defer func() { forcePanels = 0 }()
					if path == "dots" {
						forcePanels = 1 << 30
					} else {
						forcePanels = 1
					}
					x := randTensor(be, r, T, K, 1)
					out := be.Alloc(T, N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						be.MatMul(out, x, q)
					}
					b.ReportMetric(float64(N*K*T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
				})
			}
		}
	}
}
