//go:build amd64 && !purego

package quant

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// accumQ8_0x4AVX2 (kvq8_amd64.s): for r < 4 and c < 32·nb,
// o[r][c] += Σ_{j<n} p[r][j] · dequant(v + j·ldv)[c].
//
//go:noescape
func accumQ8_0x4AVX2(o, p *[4]*float32, v *byte, ldv, n, nb int)

// The kernels of kvq8.go are called directly (not through function
// values) so that the small arrays of pointers passed to them stay on the
// stack: a decode step allocates nothing.

// kvSIMD reports whether the AVX2 kernels of kvq8.go are in use.
func kvSIMD() bool { return hasAVX2 && !kvOff }

// accumQ8_0x4 is the four-row kernel of AccumQ8_0Rows (slices checked):
// AVX-512 where the CPU has it (kvq8_512_amd64.go), else AVX2.
func accumQ8_0x4(o, p *[4]*float32, v []byte, ldv, n, nb int) {
	if nb <= maxKVBlocks && kv512() {
		accumQ8_0x4Rows512(o, p, v, ldv, n, nb)
		return
	}
	accumQ8_0x4AVX2(o, p, unsafe.SliceData(v), ldv, n, nb)
}

// quantizeQ8aRow quantizes len(x)/32 blocks into the activation format.
func quantizeQ8aRow(dst []byte, x []float32) {
	nb := len(x) / QK
	if nb == 0 {
		return
	}
	_, _ = dst[nb*q8aBlockBytes-1], x[nb*QK-1]
	quantizeQ8aAVX2(unsafe.SliceData(dst), unsafe.SliceData(x), nb)
}

// dequantQ8_0Row expands nb Q8_0 blocks.
func dequantQ8_0Row(dst []float32, src []byte, nb int) {
	if !hasAVX2 {
		for b := 0; b < nb; b++ {
			dequantQ8_0Block(dst[b*QK:], src[b*34:])
		}
		return
	}
	_, _ = dst[nb*QK-1], src[nb*34-1]
	dequantQ8_0AVX2(unsafe.SliceData(dst), unsafe.SliceData(src), nb)
}

// dotQ8_0x4nAVX2 (kvq8_amd64.s) computes the scores of four query rows
// x[0..3] (Q8 activation format) against n Q8_0 key rows of w (ldw bytes
// apart) into out[r*ldo+j] for r < mr; sq holds the query scales per block
// (see the assembly). It prefetches w sixteen rows ahead and the rows of pf
// (same stride) as it goes.
//
//go:noescape
func dotQ8_0x4nAVX2(out *float32, ldo, mr int, x *[4]*byte, sq *float32, w *byte, ldw, n, nb int, pf *byte)

// maxKVBlocks bounds the blocks per row of dotQ8_0x4nAVX2 (head dims up
// to 512); longer rows call dotQ8_0AVX2x4 once per key.
const maxKVBlocks = 16

// dotQ8_0x4Rows runs the four-row multi-key kernel over n key rows
// (bounds checked by the caller, once for all rows), writing the results
// of rows r < mr to out[r*ldo+j] (rows r ≥ mr of a short group repeat the
// last query row; their results are dropped). It uses the AVX-512 kernel
// where the CPU has it (kvq8_512_amd64.go), else the AVX2 one.
func dotQ8_0x4Rows(out []float32, ldo, mr int, xs *[4][]byte, w []byte, ldw, n, nb int, next []byte) {
	if nb > maxKVBlocks {
		var res [4]float32
		rw := nb * 34
		for j := 0; j < n; j++ {
			row := w[j*ldw : j*ldw+rw]
			dotQ8_0AVX2x4(&row[0], &xs[0][0], &xs[1][0], &xs[2][0], &xs[3][0], nb, &res)
			for r := 0; r < mr; r++ {
				out[r*ldo+j] = res[r]
			}
		}
		return
	}
	pf := unsafe.SliceData(w)
	if next != nil {
		pf = unsafe.SliceData(next)
	}
	if kv512() {
		dotQ8_0x4Rows512(out, ldo, mr, xs, w, ldw, n, nb, pf)
		return
	}
	var x [4]*byte
	var sq [8 * maxKVBlocks]float32
	for r := range x {
		x[r] = unsafe.SliceData(xs[r])
		for b := 0; b < nb; b++ {
			d := math.Float32frombits(binary.LittleEndian.Uint32(xs[r][b*q8aBlockBytes:]))
			sq[8*b+r], sq[8*b+4+r] = d, d
		}
	}
	dotQ8_0x4nAVX2(&out[0], ldo, mr, &x, &sq[0], unsafe.SliceData(w), ldw, n, nb, pf)
}
