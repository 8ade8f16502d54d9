package cpu

import (
	"fmt"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/quant"
)

// kvType is the element type of a KV cache tensor.
type kvType uint8

const (
	kvF32 kvType = iota // float32 (a plain buffer)
	kvF16               // IEEE half precision (f16buffer)
	kvQ8                // ggml Q8_0 blocks (q8buffer)
)

// parseKVType maps Options.KVCache to a kvType.
func parseKVType(s string) (kvType, error) {
	switch s {
	case "", "f32":
		return kvF32, nil
	case "f16":
		return kvF16, nil
	case "q8_0":
		return kvQ8, nil
	}
	return 0, fmt.Errorf("KV cache type %q: want f32, f16 or q8_0", s)
}

// f16buffer stores a KV cache in IEEE half precision: half the memory and
// half the bytes read per decode step at long context. Values are rounded
// once, when a token's k and v are appended.
type f16buffer struct{ d []uint16 }

func (b *f16buffer) Len() int { return len(b.d) }

// Bytes implements backend.Sizer.
func (b *f16buffer) Bytes() int64 { return 2 * int64(len(b.d)) }

// q8buffer stores a KV cache in ggml Q8_0 blocks: every 32 consecutive
// elements of a row are one block of a float16 scale and 32 int8 (34
// bytes), 0.27 of the float32 size. Element e of the buffer lives in block
// e/32, so a tensor on it needs a stride that is a multiple of 32; rows are
// quantized once, when a token's k and v are appended.
type q8buffer struct{ d []byte }

func (b *q8buffer) Len() int { return len(b.d) / q8BlockBytes * quant.QK }

// Bytes implements backend.Sizer.
func (b *q8buffer) Bytes() int64 { return int64(len(b.d)) }

// q8BlockBytes is the size of one Q8_0 block.
const q8BlockBytes = 34

// AllocKV implements backend.Backend: float16 when the backend was made
// with KVCache "f16", Q8_0 blocks with "q8_0" (float32 if cols is not a
// multiple of 32), else float32.
func (b *Backend) AllocKV(rows, cols int) backend.Tensor {
	switch {
	case b.kv == kvF16:
		return backend.Tensor{Buf: &f16buffer{hugepage.Make[uint16](rows * cols)}, Rows: rows, Cols: cols, Stride: cols}
	case b.kv == kvQ8 && cols%quant.QK == 0:
		return backend.Tensor{Buf: &q8buffer{hugepage.Make[byte](rows * cols / quant.QK * q8BlockBytes)}, Rows: rows, Cols: cols, Stride: cols}
	}
	return b.Alloc(rows, cols)
}

// kvTypeOf reports how t is stored.
func kvTypeOf(t backend.Tensor) kvType {
	switch t.Buf.(type) {
	case *f16buffer:
		return kvF16
	case *q8buffer:
		return kvQ8
	}
	return kvF32
}

// isF16 reports whether t is stored in half precision.
func isF16(t backend.Tensor) bool { return kvTypeOf(t) == kvF16 }

// row16 returns row r of a half-precision tensor.
func row16(t backend.Tensor, r int) []uint16 {
	d := t.Buf.(*f16buffer).d
	o := t.Off + r*t.Stride
	return d[o : o+t.Cols]
}

// q8Aligned reports whether the rows of a Q8_0 tensor are whole blocks.
func q8Aligned(t backend.Tensor) bool { return t.Off%quant.QK == 0 && t.Cols%quant.QK == 0 }

// rowQ8 returns the blocks of row r of a Q8_0 tensor whose rows are whole
// blocks (q8Aligned).
func rowQ8(t backend.Tensor, r int) []byte {
	d := t.Buf.(*q8buffer).d
	o := (t.Off + r*t.Stride) / quant.QK * q8BlockBytes
	return d[o : o+t.Cols/quant.QK*q8BlockBytes]
}

// q8Bytes returns the bytes of a Q8_0 tensor from the first block of row 0
// on, and the row stride in bytes (the tensor must be q8Aligned).
func q8Bytes(t backend.Tensor) ([]byte, int) {
	if t.Rows == 0 {
		return nil, 0
	}
	d := t.Buf.(*q8buffer).d
	o := t.Off / quant.QK * q8BlockBytes
	ld := t.Stride / quant.QK * q8BlockBytes
	return d[o : o+(t.Rows-1)*ld+t.Cols/quant.QK*q8BlockBytes], ld
}

// rowToF32 converts row r of a tensor of any KV type into dst (t.Cols
// values).
func rowToF32(dst []float32, t backend.Tensor, r int) {
	dst = dst[:t.Cols]
	switch kvTypeOf(t) {
	case kvF32:
		copy(dst, row(t, r))
	case kvF16:
		kernels.F16ToF32(dst, row16(t, r))
	case kvQ8:
		if q8Aligned(t) {
			quant.DequantizeQ8_0Rows(dst, t.Cols, rowQ8(t, r), 0, 1, t.Cols/quant.QK)
			return
		}
		// a column view that starts or ends inside a block
		d := t.Buf.(*q8buffer).d
		var blk [quant.QK]float32
		for e, i := t.Off+r*t.Stride, 0; i < t.Cols; {
			b, o := e/quant.QK, e%quant.QK
			quant.DequantizeQ8_0Rows(blk[:], quant.QK, d[b*q8BlockBytes:(b+1)*q8BlockBytes], 0, 1, 1)
			n := copy(dst[i:], blk[o:])
			e, i = e+n, i+n
		}
	}
}

// rowFromF32 stores src (t.Cols values) into row r of a tensor of any KV
// type, rounding as the type requires.
func rowFromF32(t backend.Tensor, r int, src []float32) {
	src = src[:t.Cols]
	switch kvTypeOf(t) {
	case kvF32:
		copy(row(t, r), src)
	case kvF16:
		f32ToF16(row16(t, r), src)
	case kvQ8:
		if !q8Aligned(t) {
			panic(fmt.Sprintf("cpu: write to a Q8_0 tensor view at element %d, %d columns: not whole blocks", t.Off, t.Cols))
		}
		quant.QuantizeQ8_0Row(rowQ8(t, r), src)
	}
}

// copyMixed copies between tensors of which at least one is not float32.
func copyMixed(dst, src backend.Tensor) {
	dt, st := kvTypeOf(dst), kvTypeOf(src)
	for r := 0; r < src.Rows; r++ {
		switch {
		case dt == kvF16 && st == kvF16:
			copy(row16(dst, r), row16(src, r))
		case dt == kvQ8 && st == kvQ8 && q8Aligned(dst) && q8Aligned(src):
			copy(rowQ8(dst, r), rowQ8(src, r))
		case st == kvF32:
			rowFromF32(dst, r, row(src, r))
		case dt == kvF32:
			rowToF32(row(dst, r), src, r)
		default:
			// between two reduced types: through float32, a chunk at a time
			var tmp [256]float32
			for c := 0; c < src.Cols; c += len(tmp) {
				n := min(len(tmp), src.Cols-c)
				rowToF32(tmp[:n], src.ColRange(c, n), r)
				rowFromF32(dst.ColRange(c, n), r, tmp[:n])
			}
		}
	}
}

// zeroKV clears a tensor of any KV type.
func zeroKV(t backend.Tensor) {
	for r := 0; r < t.Rows; r++ {
		switch kvTypeOf(t) {
		case kvF16:
			clear(row16(t, r))
		case kvQ8:
			if !q8Aligned(t) {
				panic(fmt.Sprintf("cpu: Zero of a Q8_0 tensor view at element %d, %d columns: not whole blocks", t.Off, t.Cols))
			}
			clear(rowQ8(t, r))
		default:
			clear(row(t, r))
		}
	}
}

func f32ToF16(dst []uint16, src []float32) {
	for i, v := range src {
		dst[i] = quant.F32ToF16(v)
	}
}
