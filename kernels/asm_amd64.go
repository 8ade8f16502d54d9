//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// hasAsm: the assembly needs AVX2 (integer widening, 256-bit ops), FMA and
// F16C (VCVTPH2PS). x/sys/cpu already checks OS support for YMM state.
var hasAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

// hasAsm512: the AVX-512 kernels (expSubAsm512) need AVX512F besides.
var hasAsm512 = hasAsm && cpu.X86.HasAVX512F

// Hand-written element-wise kernels (misc_amd64.s); n is a multiple of 8.

//go:noescape
func axpyAsm(a float32, x *float32, y *float32, n int)

//go:noescape
func scaleAsm(a float32, x *float32, n int)

//go:noescape
func bf16ToF32Asm(dst *float32, src *uint16, n int)

//go:noescape
func f16ToF32Asm(dst *float32, src *uint16, n int)

//go:noescape
func f32ToBF16Asm(dst *uint16, src *float32, n int)

//go:noescape
func expSubAsm(x *float32, n int, m float32) float32

// expWeightsAsm is ExpWeights' loop over n (a multiple of 8) values, adding
// into z.
//
//go:noescape
func expWeightsAsm(e *float32, x *float32, n int, mx, lo float32, z *[4]float64)

// expSubAsm512 is expSubAsm on 16 lanes (n a multiple of 16).
//
//go:noescape
func expSubAsm512(x *float32, n int, m float32) float32

//go:noescape
func maxAsm(x *float32, n int) float32

//go:noescape
func prefetchAsm(p unsafe.Pointer, ld, rows, lines int)

//go:noescape
func lightningStepAsm(s *float32, d int, q, k, v, o *float32, lam float32)

// fmaLoop runs n iterations of 12 independent 8-lane FMAs.
func fmaLoop(n int)

func fmaLoopAsm(n int) { fmaLoop(n) }

// Blocking parameters of the T>1 (NT) path: a panel of ntNB weight rows by
// ntKB columns (120 KiB as float32) is kept in L2 while every group of four
// activation rows (4×ntKB floats, L1) is multiplied by it, three weight
// rows at a time, in the 4×3 register tile. Converted bf16/f16 panels are
// stored with a row stride of ntKB+bufPad floats so that rows do not alias
// to the same cache sets. The conversion buffer lives on the stack
// (~124 KiB), so the calling goroutine's stack grows once to hold it.
const (
	ntNB   = 60
	ntKB   = 512
	bufPad = 16
	bufMax = ntNB * (ntKB + bufPad)
	// NN (GemmF32) k block: a 24-column strip of B of nnKB rows stays in L1.
	nnKB = 256
)

func dotF32Asm(a, b []float32) float32 {
	var r float32
	dotF32K(&a[0], 0, &b[0], 0, len(a), &r, 0, false)
	return r
}

func dot16Asm(f16 bool, w []uint16, x []float32) float32 {
	n := len(w)
	n8 := n &^ 7
	var r float32
	if n8 > 0 {
		if f16 {
			dotF16K(&x[0], 0, &w[0], 0, n8, &r, 0, false)
		} else {
			dotBF16K(&x[0], 0, &w[0], 0, n8, &r, 0, false)
		}
	}
	if n8 < n {
		r += dot16Generic(f16, w[n8:], x[n8:n])
	}
	return r
}

func dotBF16Asm(w []uint16, x []float32) float32 { return dot16Asm(false, w, x) }
func dotF16Asm(w []uint16, x []float32) float32  { return dot16Asm(true, w, x) }

// gemmNTAsm: c[i][j] (+)= Σ_k a[i][k]*b[j][k]; dimensions are positive and
// the slices have been bounds-checked.
func gemmNTAsm(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	if M == 1 {
		// Matrix-vector: stream four weight rows at a time.
		n := 0
		for ; n+4 <= N; n += 4 {
			ntF32_1x4(&a[0], 0, &b[n*ldb], ldb, K, &c[n], 0, acc)
		}
		if n < N {
			ntTileF32(1, N-n, &a[0], 0, &b[n*ldb], ldb, K, &c[n], 0, acc)
		}
		return
	}
	for n0 := 0; n0 < N; n0 += ntNB {
		nc := min(ntNB, N-n0)
		for k0 := 0; k0 < K; k0 += ntKB {
			kc := min(ntKB, K-k0)
			ntInner(acc || k0 > 0, M, nc, kc, a[k0:], lda, b[n0*ldb+k0:], ldb, c[n0:], ldc)
		}
	}
}

// ntInner runs the register tiles over an M×N block of c for one k block.
func ntInner(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for t0 := 0; t0 < M; t0 += 4 {
		mr := min(4, M-t0)
		for j0 := 0; j0 < N; j0 += 3 {
			nr := min(3, N-j0)
			ntTileF32(mr, nr, &a[t0*lda], lda, &b[j0*ldb], ldb, K, &c[t0*ldc+j0], ldc, acc)
		}
	}
}

// matmul16Asm is MatMul with bf16 (f16=false) or f16 weights.
func matmul16Asm(f16 bool, out []float32, ldo int, x []float32, ldx int, w []uint16, T, N, K int) {
	if T == 1 {
		k8 := K &^ 7
		n := 0
		for ; n+4 <= N; n += 4 {
			if f16 {
				ntF16_1x4(&x[0], 0, &w[n*K], K, k8, &out[n], 0, false)
			} else {
				ntBF16_1x4(&x[0], 0, &w[n*K], K, k8, &out[n], 0, false)
			}
		}
		if n < N {
			if f16 {
				mvTileF16(N-n, &x[0], &w[n*K], K, k8, &out[n])
			} else {
				mvTileBF16(N-n, &x[0], &w[n*K], K, k8, &out[n])
			}
		}
		if k8 < K {
			for n := 0; n < N; n++ {
				out[n] += dot16Generic(f16, w[n*K+k8:n*K+K], x[k8:K])
			}
		}
		return
	}
	// Convert a panel of weights to float32 once and reuse it for all T rows.
	var buf [bufMax]float32
	for n0 := 0; n0 < N; n0 += ntNB {
		nc := min(ntNB, N-n0)
		for k0 := 0; k0 < K; k0 += ntKB {
			kc := min(ntKB, K-k0)
			ldb := kc + bufPad
			for j := 0; j < nc; j++ {
				src := w[(n0+j)*K+k0 : (n0+j)*K+k0+kc]
				dst := buf[j*ldb : j*ldb+kc]
				if f16 {
					F16ToF32(dst, src)
				} else {
					BF16ToF32(dst, src)
				}
			}
			ntInner(k0 > 0, T, nc, kc, x[k0:], ldx, buf[:], ldb, out[n0:], ldo)
		}
	}
}

// gemmNNAsm: c[i][j] (+)= Σ_k a[i][k]*b[k][j].
func gemmNNAsm(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	for k0 := 0; k0 < K; k0 += nnKB {
		kc := min(nnKB, K-k0)
		ac := acc || k0 > 0
		for n0 := 0; n0 < N; {
			nv, ncol := 0, N-n0
			switch {
			case ncol >= 24:
				nv, ncol = 3, 24
			case ncol >= 16:
				nv, ncol = 2, 16
			case ncol >= 8:
				nv, ncol = 1, 8
			}
			for i0 := 0; i0 < M; i0 += 4 {
				mr := min(4, M-i0)
				nnTileF32(mr, nv, &a[i0*lda+k0], lda, &b[k0*ldb+n0], ldb, kc, &c[i0*ldc+n0], ldc, ac, ncol)
			}
			n0 += ncol
		}
	}
}
