package kernels

import "math"

// Portable implementations. They are the fallback on CPUs without AVX2/FMA
// and the reference the assembly is tested against.

func bf16ToF32(v uint16) float32 { return math.Float32frombits(uint32(v) << 16) }

// f16ToF32 converts an IEEE half-precision bit pattern exactly.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf / NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0: // ±0
		return math.Float32frombits(sign)
	}
	// subnormal: normalise
	e := uint32(113)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// f32ToBF16 rounds to nearest even; NaNs get the quiet bit so they stay NaN.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if f != f {
		return uint16((b | 0x00400000) >> 16)
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func dotF32Generic(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dot16Generic(f16 bool, w []uint16, x []float32) float32 {
	if f16 {
		return dotF16Generic(w, x)
	}
	return dotBF16Generic(w, x)
}

func dotBF16Generic(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += bf16ToF32(w[i]) * x[i]
		s1 += bf16ToF32(w[i+1]) * x[i+1]
		s2 += bf16ToF32(w[i+2]) * x[i+2]
		s3 += bf16ToF32(w[i+3]) * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += bf16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func dotF16Generic(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += f16ToF32(w[i]) * x[i]
		s1 += f16ToF32(w[i+1]) * x[i+1]
		s2 += f16ToF32(w[i+2]) * x[i+2]
		s3 += f16ToF32(w[i+3]) * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += f16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// gemmNTGeneric: c[i][j] (+)= Σ_k a[i][k]*b[j][k].
func gemmNTGeneric(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < M; i++ {
		ar := a[i*lda : i*lda+K]
		cr := c[i*ldc : i*ldc+N]
		for j := range cr {
			s := dotF32Generic(ar, b[j*ldb:j*ldb+K])
			if acc {
				cr[j] += s
			} else {
				cr[j] = s
			}
		}
	}
}

func matmul16Generic(f16 bool, out []float32, ldo int, x []float32, ldx int, w []uint16, T, N, K int) {
	for t := 0; t < T; t++ {
		xr := x[t*ldx : t*ldx+K]
		or := out[t*ldo : t*ldo+N]
		for n := range or {
			or[n] = dot16Generic(f16, w[n*K:n*K+K], xr)
		}
	}
}

// gemmNNGeneric: c[i][j] (+)= Σ_k a[i][k]*b[k][j].
func gemmNNGeneric(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for i := 0; i < M; i++ {
		cr := c[i*ldc : i*ldc+N]
		if !acc {
			clear(cr)
		}
		for k := 0; k < K; k++ {
			av := a[i*lda+k]
			br := b[k*ldb : k*ldb+N]
			for j, bv := range br {
				cr[j] += av * bv
			}
		}
	}
}

// fmaSink keeps fmaLoopGeneric's result alive so that its loop is not
// optimised away.
//
//lint:ignore U1000 written, never read, on purpose
var fmaSink float32

// fmaLoopGeneric performs n*FlopsPerFMALoopIter flops of scalar
// multiply-adds in 8 independent chains.
func fmaLoopGeneric(n int) {
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	m, c := float32(0.999), float32(1e-3)
	for i := 0; i < n*12; i++ {
		s0 = s0*m + c
		s1 = s1*m + c
		s2 = s2*m + c
		s3 = s3*m + c
		s4 = s4*m + c
		s5 = s5*m + c
		s6 = s6*m + c
		s7 = s7*m + c
	}
	fmaSink = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}
