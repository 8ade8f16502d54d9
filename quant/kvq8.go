package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Kernels for Q8_0 attention caches: keys and values stored as ggml Q8_0
// rows (blocks of a float16 scale and 32 int8), queries quantized to the Q8
// activation format (blocks of a float32 scale and 32 int8, the second
// operand of the Q8_0 integer dot products).

// Q8ActBlockBytes is the size of one block of the Q8 activation format:
// a float32 scale followed by 32 int8 values.
const Q8ActBlockBytes = q8aBlockBytes

// QuantizeQ8_0Row quantizes x (a multiple of 32 elements) into dst in the
// ggml Q8_0 layout (34 bytes per block). It writes the same bytes as
// Quantize(Q8_0, dst, x) but uses the SIMD activation quantizer where there
// is one.
func QuantizeQ8_0Row(dst []byte, x []float32) {
	nb := len(x) / QK
	if len(x)%QK != 0 || len(dst) < nb*34 {
		panic(fmt.Sprintf("quant: QuantizeQ8_0Row: %d elements into %d bytes", len(x), len(dst)))
	}
	if !kvSIMD() {
		for b := 0; b < nb; b++ {
			quantizeQ8_0Block(dst[b*34:], x[b*QK:b*QK+QK])
		}
		return
	}
	// quantize up to 8 blocks at a time in the activation format (same
	// int8 values, float32 scale) and repack with a float16 scale
	var tmp [8 * q8aBlockBytes]byte
	for b0 := 0; b0 < nb; b0 += 8 {
		n := min(8, nb-b0)
		quantizeQ8aRow(tmp[:n*q8aBlockBytes], x[b0*QK:(b0+n)*QK])
		for i := 0; i < n; i++ {
			s, d := tmp[i*q8aBlockBytes:], dst[(b0+i)*34:]
			putF16(d, math.Float32frombits(binary.LittleEndian.Uint32(s)))
			copy(d[2:34], s[4:4+QK])
		}
	}
}

// QuantizeQ8Act quantizes x (a multiple of 32 elements) into dst in the Q8
// activation format (Q8ActBlockBytes per block).
func QuantizeQ8Act(dst []byte, x []float32) {
	nb := len(x) / QK
	if len(x)%QK != 0 || len(dst) < nb*q8aBlockBytes {
		panic(fmt.Sprintf("quant: QuantizeQ8Act: %d elements into %d bytes", len(x), len(dst)))
	}
	if kvSIMD() {
		quantizeQ8aRow(dst[:nb*q8aBlockBytes], x[:nb*QK])
		return
	}
	for b := 0; b < nb; b++ {
		quantizeQ8aBlock(dst[b*q8aBlockBytes:], x[b*QK:b*QK+QK])
	}
}

// DequantizeQ8_0Rows expands rows Q8_0 rows of nb blocks, src[i*lds:]
// (stride in bytes), into dst[i*ldd:] (32·nb float32 each).
func DequantizeQ8_0Rows(dst []float32, ldd int, src []byte, lds, rows, nb int) {
	if rows <= 0 || nb <= 0 {
		return
	}
	d, rs := nb*QK, nb*34
	if ldd < d && rows > 1 || len(dst) < (rows-1)*ldd+d || lds < rs && rows > 1 || len(src) < (rows-1)*lds+rs {
		panic(fmt.Sprintf("quant: DequantizeQ8_0Rows: %d rows of %d blocks: dst %d (ld %d), src %d (ld %d)", rows, nb, len(dst), ldd, len(src), lds))
	}
	for i := 0; i < rows; i++ {
		dequantQ8_0Row(dst[i*ldd:i*ldd+d], src[i*lds:i*lds+rs], nb)
	}
}

// DotQ8_0Rows computes out[i*ldo+j] = x_i · w_j for i < m and j < n, where
// x_i is the row of nb blocks in the Q8 activation format at x[i*ldx:] and
// w_j the row of nb Q8_0 blocks at w[j*ldw:] (strides in bytes): the scores
// of m quantized queries against n cached keys. Groups of four query rows
// share each key row (the four-row integer kernel). If next is not nil,
// its rows (same stride; e.g. the values of the same keys, used next) are
// prefetched along the way.
func DotQ8_0Rows(out []float32, ldo int, x []byte, ldx, m int, w []byte, ldw, n, nb int, next []byte) {
	if m <= 0 || n <= 0 {
		return
	}
	rx, rw := nb*q8aBlockBytes, nb*34
	if ldo < n && m > 1 || len(out) < (m-1)*ldo+n || ldx < rx && m > 1 || len(x) < (m-1)*ldx+rx || ldw < rw && n > 1 || len(w) < (n-1)*ldw+rw {
		panic(fmt.Sprintf("quant: DotQ8_0Rows: %d×%d scores, %d blocks: out %d (ld %d), x %d (ld %d), w %d (ld %d)", m, n, nb, len(out), ldo, len(x), ldx, len(w), ldw))
	}
	if !kvSIMD() {
		for i := 0; i < m; i++ {
			xi := x[i*ldx : i*ldx+rx]
			o := out[i*ldo : i*ldo+n]
			for j := range o {
				o[j] = dotQ8_0Go(w[j*ldw:j*ldw+rw], xi)
			}
		}
		return
	}
	for i0 := 0; i0 < m; i0 += 4 {
		// a short group repeats its last row, which computes and stores
		// the same values again
		var xs [4][]byte
		for r := range xs {
			i := min(i0+r, m-1)
			xs[r] = x[i*ldx : i*ldx+rx]
		}
		dotQ8_0x4Rows(out[i0*ldo:], ldo, min(4, m-i0), &xs, w, ldw, n, nb, next)
	}
}

// AccumQ8_0Rows adds weighted sums of Q8_0 rows to m float32 rows:
//
//	o[i*ldo+c] += Σ_{j<n} p[i*ldp+j] · v_j[c]   for i < m, c < 32·nb,
//
// where v_j is the dequantized row of nb Q8_0 blocks at v[j*ldv:] (stride
// in bytes): the probability-weighted sum of cached values. Groups of four
// rows share each dequantized value row.
func AccumQ8_0Rows(o []float32, ldo int, p []float32, ldp, m int, v []byte, ldv, n, nb int) {
	if m <= 0 || n <= 0 || nb <= 0 {
		return
	}
	d, rv := nb*QK, nb*34
	if ldo < d && m > 1 || len(o) < (m-1)*ldo+d || ldp < n && m > 1 || len(p) < (m-1)*ldp+n || ldv < rv && n > 1 || len(v) < (n-1)*ldv+rv {
		panic(fmt.Sprintf("quant: AccumQ8_0Rows: %d rows, %d values, %d blocks: o %d (ld %d), p %d (ld %d), v %d (ld %d)", m, n, nb, len(o), ldo, len(p), ldp, len(v), ldv))
	}
	if !kvSIMD() {
		accumQ8_0Go(o, ldo, p, ldp, m, v, ldv, n, nb)
		return
	}
	for i0 := 0; i0 < m; i0 += 4 {
		var os, ps [4]*float32
		for r := range os {
			// a short group repeats its last row: the repeated rows compute
			// and store identical values
			i := min(i0+r, m-1)
			os[r], ps[r] = &o[i*ldo], &p[i*ldp]
		}
		accumQ8_0x4(&os, &ps, v, ldv, n, nb)
	}
}

// kvOff disables the SIMD kernels of this file (tests of the Go code).
var kvOff bool

func accumQ8_0Go(o []float32, ldo int, p []float32, ldp, m int, v []byte, ldv, n, nb int) {
	var deq [QK]float32
	for j := 0; j < n; j++ {
		row := v[j*ldv:]
		for b := 0; b < nb; b++ {
			blk := row[b*34 : b*34+34]
			s := getF16(blk)
			for c := range deq {
				deq[c] = float32(int8(blk[2+c])) * s
			}
			for i := 0; i < m; i++ {
				w := p[i*ldp+j]
				oi := o[i*ldo+b*QK : i*ldo+b*QK+QK]
				for c, x := range deq {
					oi[c] += w * x
				}
			}
		}
	}
}
