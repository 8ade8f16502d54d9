package quant

import "encoding/binary"

// Register-tiled K-quant products (Q4_K, Q6_K weights; Q8_K activations) on
// the existing ggml block layout, no repacking. A tile kernel multiplies two
// weight rows by four or eight activation rows: each decoded weight chunk
// serves all the activation rows and each activation load both weight rows,
// and the per-block scaling is done once for the whole tile: the integer
// accumulators are reduced into vectors with one lane per result, scaled by
// the products d(weight)·d(activation) of all results at once and added to
// float accumulators. The minimum (Q4_K) / offset (Q6_K) terms, which need
// per-activation-row sums of the quants, come from tileAux, a small table
// that QActs.Quantize builds for every group of four Q8_K rows. The kernels
// (tile_amd64.s) and their speed are described there.

// tileAuxBytes is the size of the tileAux entry of one group of four
// activation rows and one Q8_K block (256 columns):
//
//	[0:16)    d of rows 0..3 (float32)
//	[16:80)   for k = 0..3: the 32-element sums (int16) of sub-blocks 2k and
//	          2k+1 of rows 0..3: s(r0,2k) s(r0,2k+1) s(r1,2k) ... s(r3,2k+1)
//	[80:208)  for k = 0..7: the same with the 16-element sums (Q8_K bsums)
//
// The pairs match VPMADDWD against a vector holding, per 128-bit half (one
// weight row), a weight row's scales or minimums 2k and 2k+1.
const tileAuxBytes = 208

// useTiles enables the two-weight-row kernels where they exist (package
// tests and benchmarks switch it off to compare with the one-row kernels).
var useTiles = true

// buildTileAux fills aux with the tileAux entries of T Q8_K rows of nb blocks
// (row t at data[t*stride:]): ceil(T/4) groups of nb entries. The last group
// repeats its last row when T is not a multiple of four, as matMulTiles does.
func buildTileAux(aux, data []byte, stride, T, nb int) {
	for g := 0; g < (T+3)/4; g++ {
		for r := 0; r < 4; r++ {
			t := min(4*g+r, T-1)
			for b := 0; b < nb; b++ {
				xb := data[t*stride+b*292 : t*stride+b*292+292]
				e := aux[(g*nb+b)*tileAuxBytes : (g*nb+b+1)*tileAuxBytes]
				le := binary.LittleEndian
				le.PutUint32(e[4*r:], le.Uint32(xb))
				bs := xb[260:292]
				for k := 0; k < 8; k++ {
					// 16-element sums 2k and 2k+1, as stored
					p := le.Uint32(bs[4*k:])
					le.PutUint32(e[80+16*k+4*r:], p)
					// 32-element sum k (the pair's sum)
					v := uint16(p) + uint16(p>>16)
					le.PutUint16(e[16+16*(k/2)+4*r+2*(k%2):], v)
				}
			}
		}
	}
}

// tileKernel multiplies np pairs of weight rows (row n at w[n*rb:], n <
// 2*np) by the four activation rows xs (whose tileAux entries start at aux)
// and stores the results of the first nr (2..4) of them: out[r*ldo+n] =
// w_n · xs[r]. The loop over the pairs is in the kernel.
type tileKernel func(w []byte, rb, np int, xs *[4][]byte, aux []byte, out []float32, ldo, nr int)

// tileKernel8 multiplies np pairs of weight rows (row n at w[n*rb:], n <
// 2*np) by the eight activation rows x[r*s:] (r = 0..7, whose tileAux
// entries start at aux, two groups of four): out[r*ldo+n] = w_n · x_r. The
// loop over the pairs is in the kernel.
type tileKernel8 func(w []byte, rb, np int, x []byte, s int, aux []byte, out []float32, ldo int)

// matMulTiles is matMulX4 for a type with tile kernels: groups of eight
// activation rows are multiplied with pairs of weight rows by t8, the
// remaining groups of four (two or three padded, as in matMulX4Rows) by t2;
// where a kernel is nil, and for an odd last row of a weight tile, x4 takes
// each weight row; a single activation row uses dot. The activation rows are
// taken in passes of at most x4ActBytes, each over the weights in tiles of
// about x4TileBytes.
func matMulTiles(out []float32, ldo int, qa *QActs, w []byte, rb, N int,
	dot func(w, x []byte) float32, x4 func(w []byte, xs *[4][]byte, res *[4]float32),
	t2 tileKernel, t8 tileKernel8) {
	x, s, T := qa.data, qa.stride, qa.T
	nb := qa.K / QKK
	ab := nb * tileAuxBytes // tileAux bytes per group of four rows
	tile := max(1, x4TileBytes/rb)
	if tile > 1 {
		tile &^= 1
	}
	tb := max(8, x4ActBytes/s&^7)
	var xs [4][]byte
	var res4 [4]float32
	for ta := 0; ta < T; ta += tb {
		te := min(T, ta+tb)
		for n0 := 0; n0 < N; n0 += tile {
			n1 := min(N, n0+tile)
			t0 := ta
			for ; t8 != nil && t0+8 <= te; t0 += 8 {
				np := (n1 - n0) / 2
				t8(w[n0*rb:], rb, np, x[t0*s:(t0+8)*s], s, qa.aux[t0/4*ab:(t0/4+2)*ab], out[t0*ldo+n0:], ldo)
				if n := n0 + 2*np; n < n1 {
					wr := w[n*rb : (n+1)*rb]
					for g := 0; g < 8; g += 4 {
						for i := range xs {
							xs[i] = x[(t0+g+i)*s : (t0+g+i+1)*s]
						}
						x4(wr, &xs, &res4)
						for i := 0; i < 4; i++ {
							out[(t0+g+i)*ldo+n] = res4[i]
						}
					}
				}
			}
			for ; t0 < te; t0 += 4 {
				nr := min(4, te-t0)
				if nr == 1 {
					dotRows(out[t0*ldo:], x[t0*s:(t0+1)*s], w, rb, n0, n1, dot)
					continue
				}
				padRows(&xs, x, s, t0, nr)
				n := n0
				if t2 != nil {
					np := (n1 - n0) / 2
					t2(w[n0*rb:], rb, np, &xs, qa.aux[t0/4*ab:(t0/4+1)*ab], out[t0*ldo+n0:], ldo, nr)
					n += 2 * np
				}
				for ; n < n1; n++ {
					x4(w[n*rb:(n+1)*rb], &xs, &res4)
					for i := 0; i < nr; i++ {
						out[(t0+i)*ldo+n] = res4[i]
					}
				}
			}
		}
	}
}
