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
	kvQ8T               // ggml Q8_0 blocks in tiles of rows (q8tbuffer)
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

// q8tbuffer stores a KV cache in Q8_0 blocks arranged in tiles of
// quant.KVTile rows, for the tiled attention kernels of CPUs with AVX2 (or
// AVX-512 VNNI): keys as quant.KVTileK, values as quant.KVTileV. Its
// tensors have the buffer's row width as stride; column views must cover
// whole blocks to be written or read by the kernels.
type q8tbuffer struct {
	d      []byte
	cols   int
	layout quant.KVLayout
}

func (b *q8tbuffer) Len() int { return len(b.d) / q8BlockBytes * quant.QK }

// Bytes implements backend.Sizer.
func (b *q8tbuffer) Bytes() int64 { return int64(len(b.d)) }

// tileBytes is the size of one tile (quant.KVTile rows).
func (b *q8tbuffer) tileBytes() int { return b.cols / quant.QK * quant.KVTileBlockBytes }

// tiledAt returns the position of a tiled tensor's element (0, 0): row and
// column of its buffer.
func tiledAt(t backend.Tensor) (row, col int) { return t.Off / t.Stride, t.Off % t.Stride }

// tileRow returns the tile holding row r of a tiled tensor, from the block
// column of the tensor's first column on, and the row's index in the tile.
func tileRow(t backend.Tensor, r int) ([]byte, int) {
	buf := t.Buf.(*q8tbuffer)
	R, c := tiledAt(t)
	R += r
	o := R/quant.KVTile*buf.tileBytes() + c/quant.QK*quant.KVTileBlockBytes
	return buf.d[o:], R % quant.KVTile
}

// tiledBytes returns the bytes of a tiled tensor that starts on a tile and
// a block (as the attention kernels read it), from its first tile's first
// block column on, and the distance between tiles.
func tiledBytes(t backend.Tensor) ([]byte, int) {
	buf := t.Buf.(*q8tbuffer)
	R, c := tiledAt(t)
	if R%quant.KVTile != 0 || c%quant.QK != 0 || t.Cols%quant.QK != 0 {
		panic(fmt.Sprintf("cpu: tiled KV view at row %d, column %d, %d columns: not whole tiles and blocks", R, c, t.Cols))
	}
	ldt := buf.tileBytes()
	o := R/quant.KVTile*ldt + c/quant.QK*quant.KVTileBlockBytes
	tiles := max(1, (t.Rows+quant.KVTile-1)/quant.KVTile)
	return buf.d[o : o+(tiles-1)*ldt+t.Cols/quant.QK*quant.KVTileBlockBytes], ldt
}

// AllocKV implements backend.Backend: float16 when the backend was made
// with KVCache "f16", Q8_0 blocks with "q8_0" (float32 if cols is not a
// multiple of 32; in tiles of 16 rows where the CPU runs the tiled
// kernels), else float32.
func (b *Backend) AllocKV(rows, cols int) backend.KV {
	if b.kv == kvQ8 && cols%quant.QK == 0 && quant.TiledKV() && !b.kvRows {
		n := (rows + quant.KVTile - 1) / quant.KVTile * quant.KVTile * cols / quant.QK * q8BlockBytes
		tiled := func(l quant.KVLayout) backend.Tensor {
			return backend.Tensor{Buf: &q8tbuffer{hugepage.Make[byte](n), cols, l}, Rows: rows, Cols: cols, Stride: cols}
		}
		return backend.KV{K: tiled(quant.KVTileK), V: tiled(quant.KVTileV)}
	}
	return backend.KV{K: b.allocKV(rows, cols), V: b.allocKV(rows, cols)}
}

// allocKV returns one KV tensor stored as rows.
func (b *Backend) allocKV(rows, cols int) backend.Tensor {
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
	case *q8tbuffer:
		return kvQ8T
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
	case kvQ8T:
		layout := t.Buf.(*q8tbuffer).layout
		if tiledAligned(t) {
			tile, i := tileRow(t, r)
			quant.LoadKVTileRow(dst, tile, layout, i)
			return
		}
		// a column view that starts or ends inside a block
		_, c := tiledAt(t)
		var blk [quant.QK]float32
		for e, i := c, 0; i < t.Cols; {
			v := t
			v.Off -= c - e/quant.QK*quant.QK // the view from e's block on
			tile, ti := tileRow(v, r)
			quant.LoadKVTileRow(blk[:], tile, layout, ti)
			n := copy(dst[i:], blk[e%quant.QK:])
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
	case kvQ8T:
		if !tiledAligned(t) {
			_, c := tiledAt(t)
			panic(fmt.Sprintf("cpu: write to a tiled Q8_0 tensor view at column %d, %d columns: not whole blocks", c, t.Cols))
		}
		tile, i := tileRow(t, r)
		quant.StoreKVTileRow(tile, t.Buf.(*q8tbuffer).layout, i, src)
	}
}

// copyMixed copies between tensors of which at least one is not float32.
func copyMixed(dst, src backend.Tensor) {
	dt, st := kvTypeOf(dst), kvTypeOf(src)
	if dt == kvQ8T && st == kvQ8T && tiledAligned(dst) && tiledAligned(src) {
		copyTiled(dst, src)
		return
	}
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

// tiledAligned reports whether the columns of a tiled tensor are whole
// blocks.
func tiledAligned(t backend.Tensor) bool {
	_, c := tiledAt(t)
	return c%quant.QK == 0 && t.Cols%quant.QK == 0
}

// copyTiled copies between tiled tensors whose columns are whole blocks:
// the Q8_0 blocks unchanged, whole tiles at once where both views start on
// a tile and are full rows of the same layout.
func copyTiled(dst, src backend.Tensor) {
	db, sb := dst.Buf.(*q8tbuffer), src.Buf.(*q8tbuffer)
	r := 0
	if dr, _ := tiledAt(dst); db.layout == sb.layout && db.cols == sb.cols && dst.Cols == db.cols && src.Cols == sb.cols &&
		dr%quant.KVTile == 0 && (src.Off/src.Stride)%quant.KVTile == 0 {
		if full := src.Rows / quant.KVTile; full > 0 {
			d, _ := tiledBytes(dst.RowRange(0, full*quant.KVTile))
			s, _ := tiledBytes(src.RowRange(0, full*quant.KVTile))
			copy(d, s)
			r = full * quant.KVTile
		}
	}
	nb := src.Cols / quant.QK
	var raw [64 * q8BlockBytes]byte
	for ; r < src.Rows; r++ {
		st, si := tileRow(src, r)
		dt, di := tileRow(dst, r)
		for b0 := 0; b0 < nb; b0 += 64 {
			n := min(64, nb-b0)
			o := b0 * quant.KVTileBlockBytes
			quant.KVTileBlocks(raw[:n*q8BlockBytes], st[o:], sb.layout, si, n)
			quant.PutKVTileBlocks(dt[o:], db.layout, di, raw[:n*q8BlockBytes], n)
		}
	}
}

// zeroKV clears a tensor of any KV type.
func zeroKV(t backend.Tensor) {
	var zero [64 * q8BlockBytes]byte
	for r := 0; r < t.Rows; r++ {
		switch kvTypeOf(t) {
		case kvF16:
			clear(row16(t, r))
		case kvQ8:
			if !q8Aligned(t) {
				panic(fmt.Sprintf("cpu: Zero of a Q8_0 tensor view at element %d, %d columns: not whole blocks", t.Off, t.Cols))
			}
			clear(rowQ8(t, r))
		case kvQ8T:
			if !tiledAligned(t) {
				panic(fmt.Sprintf("cpu: Zero of a tiled Q8_0 tensor view at element %d, %d columns: not whole blocks", t.Off, t.Cols))
			}
			tile, i := tileRow(t, r)
			for b0, nb := 0, t.Cols/quant.QK; b0 < nb; b0 += 64 {
				n := min(64, nb-b0)
				quant.PutKVTileBlocks(tile[b0*quant.KVTileBlockBytes:], t.Buf.(*q8tbuffer).layout, i, zero[:n*q8BlockBytes], n)
			}
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
