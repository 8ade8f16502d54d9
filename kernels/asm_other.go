//go:build !amd64 || purego

package kernels

import "unsafe"

const (
	hasAsm    = false
	hasAsm512 = false
)

// The assembly entry points do not exist on this platform; useAsm is never
// true here, so these are unreachable.

func unreachable() { panic("kernels: assembly path not available") }

func dotF32Asm(a, b []float32) float32           { unreachable(); return 0 }
func dotBF16Asm(w []uint16, x []float32) float32 { unreachable(); return 0 }
func dotF16Asm(w []uint16, x []float32) float32  { unreachable(); return 0 }
func gemmNTAsm(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	unreachable()
}
func gemmNNAsm(acc bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	unreachable()
}
func matmul16Asm(f16 bool, out []float32, ldo int, x []float32, ldx int, w []uint16, T, N, K int) {
	unreachable()
}
func axpyAsm(a float32, x, y *float32, n int)           { unreachable() }
func scaleAsm(a float32, x *float32, n int)             { unreachable() }
func bf16ToF32Asm(dst *float32, src *uint16, n int)     { unreachable() }
func f16ToF32Asm(dst *float32, src *uint16, n int)      { unreachable() }
func f32ToBF16Asm(dst *uint16, src *float32, n int)     { unreachable() }
func fmaLoopAsm(n int)                                  { unreachable() }
func expSubAsm(x *float32, n int, m float32) float32    { unreachable(); return 0 }
func expSubAsm512(x *float32, n int, m float32) float32 { unreachable(); return 0 }
func maxAsm(x *float32, n int) float32                  { unreachable(); return 0 }
func expWeightsAsm(e, x *float32, n int, mx, lo float32, z *[4]float64) {
	unreachable()
}
func prefetchAsm(p unsafe.Pointer, ld, rows, lines int) { unreachable() }
func lightningStepAsm(s *float32, d int, q, k, v, o *float32, lam float32) {
	unreachable()
}
