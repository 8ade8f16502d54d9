package cpu

import (
	"math"

	"github.com/ringo-ai/ringo/safetensors"
)

// Temporary pure-Go kernels; replaced by package kernels.

func matMulF32(out []float32, ldo int, x []float32, ldx int, w []float32, T, N, K int) {
	for t := 0; t < T; t++ {
		xr := x[t*ldx : t*ldx+K]
		for n := 0; n < N; n++ {
			wr := w[n*K : n*K+K]
			var s float32
			for k, v := range xr {
				s += v * wr[k]
			}
			out[t*ldo+n] = s
		}
	}
}

func matMulBF16(out []float32, ldo int, x []float32, ldx int, w []uint16, T, N, K int) {
	for t := 0; t < T; t++ {
		xr := x[t*ldx : t*ldx+K]
		for n := 0; n < N; n++ {
			wr := w[n*K : n*K+K]
			var s float32
			for k, v := range xr {
				s += v * math.Float32frombits(uint32(wr[k])<<16)
			}
			out[t*ldo+n] = s
		}
	}
}

func gemmF32(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < M; i++ {
		cr := c[i*ldc : i*ldc+N]
		if !acc {
			clear(cr)
		}
		for k := 0; k < K; k++ {
			av := a[i*lda+k]
			if av == 0 {
				continue
			}
			br := b[k*ldb : k*ldb+N]
			for j, bv := range br {
				cr[j] += av * bv
			}
		}
	}
}

func gemmF32NT(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < M; i++ {
		ar := a[i*lda : i*lda+K]
		for j := 0; j < N; j++ {
			br := b[j*ldb : j*ldb+K]
			var s float32
			for k, v := range ar {
				s += v * br[k]
			}
			if acc {
				c[i*ldc+j] += s
			} else {
				c[i*ldc+j] = s
			}
		}
	}
}

func matMulF16(out []float32, ldo int, x []float32, ldx int, w []uint16, T, N, K int) {
	for t := 0; t < T; t++ {
		xr := x[t*ldx : t*ldx+K]
		for n := 0; n < N; n++ {
			wr := w[n*K : n*K+K]
			var s float32
			for k, v := range xr {
				s += v * safetensors.F16ToF32(wr[k])
			}
			out[t*ldo+n] = s
		}
	}
}
