//go:build amd64 && !purego

package quant

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// Assembly kernels (dot_amd64.s): the float dot products, over n elements
// with n a multiple of 8. They require AVX2, FMA and F16C. The quantized
// one-row kernels are the rows kernels of rows_amd64.go.

//go:noescape
func dotF32AVX2(w *byte, x *float32, n int) float32

//go:noescape
func dotF16AVX2(w *byte, x *float32, n int) float32

//go:noescape
func dotBF16AVX2(w *byte, x *float32, n int) float32

var avx2Kernels = kernelSet{
	f32: func(w []byte, x []float32) float32 {
		return floatDot(w, x, 4, dotF32AVX2, dotF32Go)
	},
	f16: func(w []byte, x []float32) float32 {
		return floatDot(w, x, 2, dotF16AVX2, dotF16Go)
	},
	bf16: func(w []byte, x []float32) float32 {
		return floatDot(w, x, 2, dotBF16AVX2, dotBF16Go)
	},
	// q4_0, q8_0, q4k and q6k (and the rows kernels): rows_amd64.go
	q4_0x4: q4_0x4AVX2,
	q8_0x4: q8_0x4AVX2,
	q4kx4:  q4kx4AVX2,
	q6kx4:  q6kx4AVX2,
	name:   "avx2",
}

func floatDot(w []byte, x []float32, esize int, asm func(*byte, *float32, int) float32, tail func([]byte, []float32) float32) float32 {
	n := len(x)
	_ = w[esize*n-1]
	n8 := n &^ 7
	var s float32
	if n8 > 0 {
		s = asm(unsafe.SliceData(w), unsafe.SliceData(x), n8)
	}
	if n8 < n {
		s += tail(w[esize*n8:], x[n8:])
	}
	return s
}

// hasAVX2 reports whether the AVX2 kernels can be used on this CPU.
var hasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

func init() {
	selectKernels() // dot512_amd64.go: AVX-512 VNNI where present, else AVX2
}
