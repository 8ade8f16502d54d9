package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Tiled Q8_0 layouts for KV caches, read by the attention kernels of
// kvtile_amd64.s (AVX-512 VNNI) and kvtile_avx2_amd64.s (AVX2).
//
// A tiled tensor keeps its rows in tiles of KVTile consecutive rows. For
// each block column (32 columns) a tile holds KVTileBlockBytes bytes: the
// 16×32 int8 of its rows' Q8_0 blocks, arranged for the kernel that reads
// them, then the 16 float16 scales in row order. A tile of a W-column
// tensor is W/32·544 bytes, the Q8_0 bytes of its 16 rows; its block
// columns follow each other, so the columns of one attention head (whole
// blocks) are contiguous within every tile.
//
// Keys (KVTileK): value e of row i at byte 64·(e/4) + 4·i + e%4, stored
// unsigned (k+128): one 64-byte vector holds four columns of all 16 rows,
// so that VPDPBUSD scores 16 keys against four broadcast bytes of a query.
//
// Values (KVTileV): value e of row i at byte 128·(i/4) + 4·e + i%4: one
// 64-byte vector holds 16 columns of four rows, so that VPDPBUSD adds four
// weighted value rows at once.

// KVTile is the number of rows of a tile.
const KVTile = 16

// KVTileBlockBytes is the size of one block column of a tile.
const KVTileBlockBytes = KVTile*QK + 2*KVTile

// KVLayout selects the arrangement of a tile's int8 values.
type KVLayout uint8

const (
	// KVTileK arranges a tile for the scores of queries against keys.
	KVTileK KVLayout = iota
	// KVTileV arranges a tile for probability-weighted sums of values.
	KVTileV
)

// tileOff is the byte offset of value e (< 32) of row i (< 16) within a
// block column.
func (l KVLayout) tileOff(i, e int) int {
	if l == KVTileK {
		return 64*(e/4) + 4*i + e%4
	}
	return 128*(i/4) + 4*e + i%4
}

// bias is what is added to the int8 values as stored (as bytes).
func (l KVLayout) bias() byte {
	if l == KVTileK {
		return 0x80
	}
	return 0
}

// checkTile panics unless tile holds nb block columns and i is a row.
func checkTile(fn string, tile []byte, i, nb int) {
	if i < 0 || i >= KVTile || len(tile) < nb*KVTileBlockBytes {
		panic(fmt.Sprintf("quant: %s: row %d of a tile of %d bytes, %d blocks", fn, i, len(tile), nb))
	}
}

// PutKVTileBlocks stores src, a row of nb ggml Q8_0 blocks (34 bytes
// each), as row i of a tile whose block columns start at tile[0].
func PutKVTileBlocks(tile []byte, l KVLayout, i int, src []byte, nb int) {
	checkTile("PutKVTileBlocks", tile, i, nb)
	_ = src[nb*34-1]
	for b := 0; b < nb; b++ {
		blk, s := tile[b*KVTileBlockBytes:(b+1)*KVTileBlockBytes], src[b*34:b*34+34]
		if l == KVTileK {
			// four values at a time, each group 64 bytes apart
			for w := 0; w < QK/4; w++ {
				binary.LittleEndian.PutUint32(blk[64*w+4*i:], binary.LittleEndian.Uint32(s[2+4*w:])^0x80808080)
			}
		} else {
			q := blk[128*(i/4)+i%4:]
			for e := 0; e < QK; e++ {
				q[4*e] = s[2+e]
			}
		}
		blk[KVTile*QK+2*i], blk[KVTile*QK+2*i+1] = s[0], s[1]
	}
}

// KVTileBlocks copies row i of a tile (nb block columns) into dst as ggml
// Q8_0 blocks (34 bytes each).
func KVTileBlocks(dst []byte, tile []byte, l KVLayout, i, nb int) {
	checkTile("KVTileBlocks", tile, i, nb)
	_ = dst[nb*34-1]
	bias := l.bias()
	for b := 0; b < nb; b++ {
		blk, d := tile[b*KVTileBlockBytes:(b+1)*KVTileBlockBytes], dst[b*34:b*34+34]
		for e := 0; e < QK; e++ {
			d[2+e] = blk[l.tileOff(i, e)] ^ bias
		}
		d[0], d[1] = blk[KVTile*QK+2*i], blk[KVTile*QK+2*i+1]
	}
}

// StoreKVTileRow quantizes x (32·nb values) to Q8_0, like QuantizeQ8_0Row,
// and stores it as row i of a tile.
func StoreKVTileRow(tile []byte, l KVLayout, i int, x []float32) {
	nb := len(x) / QK
	if len(x)%QK != 0 {
		panic(fmt.Sprintf("quant: StoreKVTileRow: %d values", len(x)))
	}
	var buf [8 * 34]byte
	for b0 := 0; b0 < nb; b0 += 8 {
		n := min(8, nb-b0)
		QuantizeQ8_0Row(buf[:n*34], x[b0*QK:(b0+n)*QK])
		PutKVTileBlocks(tile[b0*KVTileBlockBytes:], l, i, buf[:n*34], n)
	}
}

// LoadKVTileRow dequantizes row i of a tile into dst (32·nb values).
func LoadKVTileRow(dst []float32, tile []byte, l KVLayout, i int) {
	nb := len(dst) / QK
	if len(dst)%QK != 0 {
		panic(fmt.Sprintf("quant: LoadKVTileRow: %d values", len(dst)))
	}
	checkTile("LoadKVTileRow", tile, i, nb)
	bias := l.bias()
	for b := 0; b < nb; b++ {
		blk := tile[b*KVTileBlockBytes : (b+1)*KVTileBlockBytes]
		d := getF16(blk[KVTile*QK+2*i:])
		out := dst[b*QK : b*QK+QK]
		for e := range out {
			out[e] = float32(int8(blk[l.tileOff(i, e)]^bias)) * d
		}
	}
}

// checkTiled panics unless a tiled operand of n rows of nb blocks, tiles ldt
// bytes apart, fits in t.
func checkTiled(fn string, t []byte, ldt, n, nb int) {
	tiles := (n + KVTile - 1) / KVTile
	if nb <= 0 || tiles > 1 && ldt < nb*KVTileBlockBytes || len(t) < (tiles-1)*ldt+nb*KVTileBlockBytes {
		panic(fmt.Sprintf("quant: %s: %d rows of %d blocks in %d bytes, tiles %d bytes apart", fn, n, nb, len(t), ldt))
	}
}

// DotQ8_0Tiled computes out[i*ldo+j] = x_i · k_j for i < m and j < n, where
// x_i is the row of nb blocks in the Q8 activation format at x[i*ldx:] and
// k_j row j of a KVTileK tensor: its tile j/16 starts at k[(j/16)·ldt]
// (the first of the nb block columns read). It is DotQ8_0Rows for tiled
// keys; the sums are the same integer dot products, scaled in float32.
// The SIMD kernel prefetches the keys of the next 128 rows as it goes.
func DotQ8_0Tiled(out []float32, ldo int, x []byte, ldx, m int, k []byte, ldt, n, nb int) {
	DotQ8_0TiledHeads(out, ldo, x, ldx, m, 1, k, ldt, n, nb)
}

// DotQ8_0TiledHeads is DotQ8_0Tiled for the m query rows of each of heads
// heads, head h's rows at x[(h·m+i)·ldx:] scoring the nb block columns
// from k[h·nb·KVTileBlockBytes] of each tile into out[(h·m+i)·ldo:]: the
// heads of a cache row side by side, read as one stream where the kernel
// allows.
func DotQ8_0TiledHeads(out []float32, ldo int, x []byte, ldx, m, heads int, k []byte, ldt, n, nb int) {
	if m <= 0 || n <= 0 || heads <= 0 {
		return
	}
	M, rx := heads*m, nb*q8aBlockBytes
	if ldo < n && M > 1 || len(out) < (M-1)*ldo+n || ldx < rx && M > 1 || len(x) < (M-1)*ldx+rx {
		panic(fmt.Sprintf("quant: DotQ8_0Tiled: %d×%d scores, %d blocks: out %d (ld %d), x %d (ld %d)", M, n, nb, len(out), ldo, len(x), ldx))
	}
	checkTiled("DotQ8_0Tiled", k, ldt, n, heads*nb)
	if tiledSIMD() && nb <= 16 {
		// groups of four rows of one head, as many per call as the
		// kernel's corrections allow
		var gs [16]tiledGroup
		ng, most := 0, 16/nb
		for h := 0; h < heads; h++ {
			for i0 := 0; i0 < m; i0 += 4 {
				g := &gs[ng]
				for r := range g.x {
					g.x[r] = &x[(h*m+min(i0+r, m-1))*ldx]
				}
				g.out, g.mr, g.koff = &out[(h*m+i0)*ldo], min(4, m-i0), h*nb*KVTileBlockBytes
				if ng++; ng == most {
					dotQ8_0TG(&gs[0], ng, ldo, &k[0], ldt, n, nb)
					ng = 0
				}
			}
		}
		if ng > 0 {
			dotQ8_0TG(&gs[0], ng, ldo, &k[0], ldt, n, nb)
		}
		return
	}
	for h := 0; h < heads; h++ {
		kh := k[h*nb*KVTileBlockBytes:]
		for i := 0; i < m; i++ {
			xi := x[(h*m+i)*ldx : (h*m+i)*ldx+rx]
			for j := 0; j < n; j++ {
				tile := kh[(j/KVTile)*ldt:]
				jj := j % KVTile
				var s float32
				for b := 0; b < nb; b++ {
					blk, xb := tile[b*KVTileBlockBytes:], xi[b*q8aBlockBytes:]
					var sum int32
					for e := 0; e < QK; e++ {
						sum += int32(int8(blk[KVTileK.tileOff(jj, e)]^0x80)) * int32(int8(xb[4+e]))
					}
					s += float32(sum) * (getF16(blk[KVTile*QK+2*jj:]) * math.Float32frombits(binary.LittleEndian.Uint32(xb)))
				}
				out[(h*m+i)*ldo+j] = s
			}
		}
	}
}

// tiledGroup is four query rows of one head for dotQ8_0TG (its layout is
// read by the assembly): the rows, where the first of their scores go,
// how many of the rows to store, and the byte offset of the head's first
// block column in a tile.
type tiledGroup struct {
	x    [4]*byte
	out  *float32
	mr   int
	koff int
}

// AccumQ8_0Tiled adds weighted sums of the rows of a KVTileV tensor (laid
// out as for DotQ8_0Tiled) to m float32 rows:
//
//	o[i*ldo+c] += Σ_{j<n} p[i*ldp+j] · v_j[c]   for i < m, c < 32·nb.
//
// The weights must not be negative (probabilities). The SIMD kernels
// round the products p·(scale of v_j's block) to 16 bits (AVX-512) or 15
// (AVX2) against their bound over each 128 keys (integer dot products),
// and prefetch the values of the next 128 rows as they go; the Go code is
// exact.
func AccumQ8_0Tiled(o []float32, ldo int, p []float32, ldp, m int, v []byte, ldt, n, nb int) {
	if m <= 0 || n <= 0 {
		return
	}
	d := nb * QK
	if ldo < d && m > 1 || len(o) < (m-1)*ldo+d || ldp < n && m > 1 || len(p) < (m-1)*ldp+n {
		panic(fmt.Sprintf("quant: AccumQ8_0Tiled: %d rows, %d values, %d blocks: o %d (ld %d), p %d (ld %d)", m, n, nb, len(o), ldo, len(p), ldp))
	}
	checkTiled("AccumQ8_0Tiled", v, ldt, n, nb)
	if tiledSIMD() {
		// the AVX2 kernel takes all block columns with the work area in
		// its frame; for the AVX-512 one Go clears a work area on every
		// call, one per block column, the small area for head dims up to
		// 128
		switch {
		case !kv512():
			accumTiled(o, ldo, p, ldp, m, v, ldt, n, nb, nb, nil)
		case nb <= tiledSmallBlocks:
			var scr [tiledSmallBlocks * tiledBlockScratch]byte
			accumTiled(o, ldo, p, ldp, m, v, ldt, n, nb, tiledSmallBlocks, &scr[0])
		default:
			var scr [tiledMaxBlocks * tiledBlockScratch]byte
			accumTiled(o, ldo, p, ldp, m, v, ldt, n, nb, tiledMaxBlocks, &scr[0])
		}
		return
	}
	var deq [QK]float32
	for j := 0; j < n; j++ {
		tile, jj := v[(j/KVTile)*ldt:], j%KVTile
		for b := 0; b < nb; b++ {
			blk := tile[b*KVTileBlockBytes:]
			s := getF16(blk[KVTile*QK+2*jj:])
			for e := range deq {
				deq[e] = float32(int8(blk[KVTileV.tileOff(jj, e)])) * s
			}
			for i := 0; i < m; i++ {
				w := p[i*ldp+j]
				oi := o[i*ldo+b*QK : i*ldo+b*QK+QK]
				for e, x := range deq {
					oi[e] += w * x
				}
			}
		}
	}
}

// tiledSpan is the most keys of one call of the value kernel (its 16-bit
// weights sum into int32 without overflow over 128 keys); tiledMaxBlocks
// the most block columns per call of the AVX-512 kernel, each taking
// tiledBlockScratch bytes of its work area; tiledSmallBlocks those of the
// small work area.
const (
	tiledSpan         = 128
	tiledMaxBlocks    = 8
	tiledSmallBlocks  = 4
	tiledBlockScratch = 1024
)

// accumTiled is the SIMD part of AccumQ8_0Tiled: kernel calls of up to
// step block columns, with the work area scr (nil for the AVX2 kernel).
func accumTiled(o []float32, ldo int, p []float32, ldp, m int, v []byte, ldt, n, nb, step int, scr *byte) {
	for i0 := 0; i0 < m; i0 += 4 {
		for j0 := 0; j0 < n; j0 += tiledSpan {
			for b0 := 0; b0 < nb; b0 += step {
				var os, ps [4]*float32
				for r := range os {
					// a short group repeats its last row: the repeated rows
					// compute and store identical values
					i := min(i0+r, m-1)
					os[r], ps[r] = &o[i*ldo+b0*QK], &p[i*ldp+j0]
				}
				accumQ8_0T4(&os, &ps, &v[(j0/KVTile)*ldt+b0*KVTileBlockBytes], ldt, min(tiledSpan, n-j0), min(step, nb-b0), scr)
			}
		}
	}
}
