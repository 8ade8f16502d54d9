//go:build amd64 && !purego

package quant

import "unsafe"

// Block dequantization kernels (dequant_amd64.s): nb whole blocks.

//go:noescape
func dequantQ4_0AVX2(dst *float32, src *byte, nb int)

//go:noescape
func dequantQ8_0AVX2(dst *float32, src *byte, nb int)

//go:noescape
func dequantQ4KAVX2(dst *float32, src *byte, nb int)

//go:noescape
func dequantQ6KAVX2(dst *float32, src *byte, nb int)

func init() {
	if !hasAVX2 {
		return
	}
	fastDequant = map[Type]func(dst []float32, src []byte, nb int){
		Q4_0: func(dst []float32, src []byte, nb int) {
			_, _ = dst[nb*QK-1], src[nb*18-1]
			dequantQ4_0AVX2(unsafe.SliceData(dst), unsafe.SliceData(src), nb)
		},
		Q8_0: func(dst []float32, src []byte, nb int) {
			_, _ = dst[nb*QK-1], src[nb*34-1]
			dequantQ8_0AVX2(unsafe.SliceData(dst), unsafe.SliceData(src), nb)
		},
		Q4_K: func(dst []float32, src []byte, nb int) {
			_, _ = dst[nb*QKK-1], src[nb*144-1]
			dequantQ4KAVX2(unsafe.SliceData(dst), unsafe.SliceData(src), nb)
		},
		Q6_K: func(dst []float32, src []byte, nb int) {
			_, _ = dst[nb*QKK-1], src[nb*210-1]
			dequantQ6KAVX2(unsafe.SliceData(dst), unsafe.SliceData(src), nb)
		},
	}
}
