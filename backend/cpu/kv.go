package cpu

import (
	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
)

// f16buffer stores a KV cache in IEEE half precision: half the memory and
// half the bytes read per decode step at long context. Values are rounded
// once, when a token's k and v are appended.
type f16buffer struct{ d []uint16 }

func (b *f16buffer) Len() int { return len(b.d) }

// AllocKV implements backend.Backend: float16 when the backend was made
// with KVCache "f16", else float32.
func (b *Backend) AllocKV(rows, cols int) backend.Tensor {
	if !b.kvF16 {
		return b.Alloc(rows, cols)
	}
	return backend.Tensor{Buf: &f16buffer{make([]uint16, rows*cols)}, Rows: rows, Cols: cols, Stride: cols}
}

// isF16 reports whether t is stored in half precision.
func isF16(t backend.Tensor) bool {
	_, ok := t.Buf.(*f16buffer)
	return ok
}

// row16 returns row r of a half-precision tensor.
func row16(t backend.Tensor, r int) []uint16 {
	d := t.Buf.(*f16buffer).d
	o := t.Off + r*t.Stride
	return d[o : o+t.Cols]
}

// rowsF32 converts n rows of a half-precision tensor, starting at r, into
// dst (n×t.Cols, contiguous).
func rowsF32(dst []float32, t backend.Tensor, r, n int) {
	for i := 0; i < n; i++ {
		kernels.F16ToF32(dst[i*t.Cols:(i+1)*t.Cols], row16(t, r+i))
	}
}

// copyMixed copies between tensors of which at least one is half precision.
func copyMixed(dst, src backend.Tensor) {
	for r := 0; r < src.Rows; r++ {
		switch {
		case isF16(dst) && isF16(src):
			copy(row16(dst, r), row16(src, r))
		case isF16(dst):
			f32ToF16(row16(dst, r), row(src, r))
		case isF16(src):
			kernels.F16ToF32(row(dst, r), row16(src, r))
		default:
			panic("cpu: copyMixed of float32 tensors")
		}
	}
}

func f32ToF16(dst []uint16, src []float32) {
	for i, v := range src {
		dst[i] = quant.F32ToF16(v)
	}
}
