//go:build amd64 && !purego

package quant

import "unsafe"

//go:noescape
func quantizeQ8KAVX2(dst *byte, x *float32)

//go:noescape
func quantizeQ8aAVX2(dst *byte, x *float32, nb int)

func init() {
	if hasAVX2 {
		quantQ8KFast = func(dst []byte, x []float32) {
			_, _ = dst[291], x[255]
			quantizeQ8KAVX2(unsafe.SliceData(dst), unsafe.SliceData(x))
		}
		quantQ8aRowFast = func(dst []byte, x []float32) {
			nb := len(x) / QK
			if nb == 0 {
				return
			}
			_, _ = dst[nb*q8aBlockBytes-1], x[nb*QK-1]
			quantizeQ8aAVX2(unsafe.SliceData(dst), unsafe.SliceData(x), nb)
		}
	}
}
