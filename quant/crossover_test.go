package quant

import (
	"fmt"
	"math/rand/v2"
	"testing"

	fk "github.com/ringo-ai/ringo/kernels"
)

// BenchmarkPathCrossover compares, on one core, the two ways the CPU backend
// multiplies T activation rows by a quantized 512x2048 weight: MatMul
// (activation quantization + integer kernels, "dots") and 16-row panels
// expanded by Dequantize and multiplied by kernels.MatMulF32 ("panels"). It
// reports weight elements × rows per nanosecond.
func BenchmarkPathCrossover(b *testing.B) {
	const N, K, P = 512, 2048, 16
	for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
		r := rand.New(rand.NewPCG(3, 3))
		rb := RowBytes(ty, K)
		w := make([]byte, N*rb)
		if err := Quantize(ty, w, gaussian(r, N*K)); err != nil {
			b.Fatal(err)
		}
		for _, T := range []int{4, 16, 64, 256, 512} {
			x := gaussian(r, T*K)
			out := make([]float32, T*N)
			panel := make([]float32, P*K)
			for _, path := range []string{"dots", "panels"} {
				b.Run(fmt.Sprintf("%v/T=%d/%s", ty, T, path), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						if path == "dots" {
							MatMul(ty, out, N, x, K, w, T, N, K)
							continue
						}
						for r0 := 0; r0 < N; r0 += P {
							Dequantize(ty, panel, w[r0*rb:(r0+P)*rb])
							fk.MatMulF32(out[r0:], N, x, K, panel, T, P, K)
						}
					}
					b.ReportMetric(float64(N*K*T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
				})
			}
		}
	}
}
