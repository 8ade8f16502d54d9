package quant

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// tiledTensor quantizes rows (each nb blocks) into a tiled tensor whose
// tiles are ldt bytes apart, the rows' block columns starting at byte off
// of each tile, and also returns the rows as plain Q8_0 blocks.
func tiledTensor(rows [][]float32, l KVLayout, ldt, off, nb int) (tiled, plain []byte) {
	n := len(rows)
	tiles := (n + KVTile - 1) / KVTile
	tiled = make([]byte, tiles*ldt)
	for i := range tiled {
		tiled[i] = 0xA5 // stale bytes where no row was written
	}
	plain = make([]byte, n*nb*34)
	for j, x := range rows {
		QuantizeQ8_0Row(plain[j*nb*34:], x)
		StoreKVTileRow(tiled[(j/KVTile)*ldt+off:], l, j%KVTile, x)
	}
	// the rows of a partial last tile past n hold finite scales (as a
	// cache's unwritten rows: zero or earlier values)
	for j := n; j < tiles*KVTile; j++ {
		StoreKVTileRow(tiled[(j/KVTile)*ldt+off:], l, j%KVTile, make([]float32, nb*QK))
	}
	return tiled, plain
}

// TestKVTileRows checks that tiled rows hold exactly the Q8_0 blocks of
// QuantizeQ8_0Row, in both layouts, whatever the row.
func TestKVTileRows(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, l := range []KVLayout{KVTileK, KVTileV} {
		for _, nb := range []int{1, 3, 4, 9} {
			tile := make([]byte, nb*KVTileBlockBytes)
			want := make([][]byte, KVTile)
			for i := range want {
				x := kvRow(r, nb*QK)
				want[i] = make([]byte, nb*34)
				QuantizeQ8_0Row(want[i], x)
				StoreKVTileRow(tile, l, i, x)
			}
			for _, i := range r.Perm(KVTile) {
				got := make([]byte, nb*34)
				KVTileBlocks(got, tile, l, i, nb)
				if !bytes.Equal(got, want[i]) {
					t.Fatalf("layout %d, %d blocks: row %d reads back %x, want %x", l, nb, i, got, want[i])
				}
				y := make([]float32, nb*QK)
				LoadKVTileRow(y, tile, l, i)
				if w := deqQ8_0(want[i], nb); fmt.Sprint(y) != fmt.Sprint(w) {
					t.Fatalf("layout %d: LoadKVTileRow(%d) = %v, want %v", l, i, y, w)
				}
				// the raw blocks written back leave the tile unchanged
				before := append([]byte(nil), tile...)
				PutKVTileBlocks(tile, l, i, got, nb)
				if !bytes.Equal(tile, before) {
					t.Fatalf("layout %d: PutKVTileBlocks of row %d's own blocks changed the tile", l, i)
				}
			}
		}
	}
}

// tiledCases are the shapes of the tiled kernel tests: partial tiles, more
// than one value span (128 keys), head views inside wider tiles (off, pad:
// block columns before and after), row groups of 1-4 and repeated rows.
var tiledCases = []struct{ m, n, nb, off, pad int }{
	{1, 1, 1, 0, 0}, {4, 16, 4, 0, 0}, {4, 17, 4, 4, 8}, {3, 100, 4, 8, 4}, {5, 128, 4, 0, 12},
	{8, 129, 4, 12, 0}, {2, 300, 2, 1, 1}, {9, 33, 5, 0, 3}, {4, 64, 10, 2, 0}, {1, 7, 16, 0, 0},
}

// TestDotQ8_0Tiled checks the tiled scores against DotQ8_0Rows on the same
// keys as rows (same integer sums, so only float rounding differs).
func TestDotQ8_0Tiled(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	kvModes(t, func(t *testing.T) {
		for _, c := range tiledCases {
			t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
				ldt := (c.off + c.nb + c.pad) * KVTileBlockBytes
				keys := make([][]float32, c.n)
				for j := range keys {
					keys[j] = kvRow(r, c.nb*QK)
				}
				tiled, plain := tiledTensor(keys, KVTileK, ldt, c.off*KVTileBlockBytes, c.nb)
				qb := c.nb * Q8ActBlockBytes
				x := make([]byte, c.m*qb)
				for i := 0; i < c.m; i++ {
					QuantizeQ8Act(x[i*qb:], kvRow(r, c.nb*QK))
				}
				ldo := c.n + 3
				got := make([]float32, (c.m-1)*ldo+c.n+3)
				for i := range got {
					got[i] = -7
				}
				want := make([]float32, c.m*c.n)
				DotQ8_0Tiled(got, ldo, x, qb, c.m, tiled[c.off*KVTileBlockBytes:], ldt, c.n, c.nb)
				DotQ8_0Rows(want, c.n, x, qb, c.m, plain, c.nb*34, c.n, c.nb, nil)
				for i := 0; i < c.m; i++ {
					for j := 0; j < c.n; j++ {
						g, w := got[i*ldo+j], want[i*c.n+j]
						// both sum the same integers per block; the scaled
						// block sums may be added in another order
						xs, ks := deqQ8Act(x[i*qb:], c.nb), deqQ8_0(plain[j*c.nb*34:], c.nb)
						var mag float64
						for e := range xs {
							mag += math.Abs(float64(xs[e]) * float64(ks[e]))
						}
						if math.Abs(float64(g-w)) > 1e-6*mag+1e-30 {
							t.Fatalf("score [%d][%d] = %v, want %v", i, j, g, w)
						}
					}
					for j := c.n; j < ldo && i < c.m-1; j++ {
						if got[i*ldo+j] != -7 {
							t.Fatalf("out[%d][%d] past the keys was written", i, j)
						}
					}
				}
			})
		}
	})
}

// TestDotQ8_0TiledHeads checks the scores of several heads at once (the
// heads' block columns side by side in each tile) against DotQ8_0Rows per
// head: groups of rows of several heads share kernel calls, up to 16 block
// columns' corrections, and more heads take more calls.
func TestDotQ8_0TiledHeads(t *testing.T) {
	r := rand.New(rand.NewPCG(47, 48))
	kvModes(t, func(t *testing.T) {
		for _, c := range []struct{ m, heads, n, nb int }{
			{4, 4, 130, 4}, {1, 3, 16, 2}, {6, 2, 40, 4}, {4, 5, 33, 4}, {2, 4, 17, 1}, {3, 2, 64, 9},
		} {
			t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
				W := c.heads * c.nb
				ldt := (W + 1) * KVTileBlockBytes
				keys := make([][]float32, c.n)
				for j := range keys {
					keys[j] = kvRow(r, W*QK)
				}
				tiled, plain := tiledTensor(keys, KVTileK, ldt, 0, W)
				qb := c.nb * Q8ActBlockBytes
				M := c.heads * c.m
				x := make([]byte, M*qb)
				for i := 0; i < M; i++ {
					QuantizeQ8Act(x[i*qb:], kvRow(r, c.nb*QK))
				}
				got := make([]float32, M*c.n)
				DotQ8_0TiledHeads(got, c.n, x, qb, c.m, c.heads, tiled, ldt, c.n, c.nb)
				for h := 0; h < c.heads; h++ {
					want := make([]float32, c.m*c.n)
					DotQ8_0Rows(want, c.n, x[h*c.m*qb:], qb, c.m, plain[h*c.nb*34:], W*34, c.n, c.nb, nil)
					for i := range want {
						g := got[h*c.m*c.n+i]
						if math.Abs(float64(g-want[i])) > 1e-5*math.Abs(float64(want[i]))+1e-4 {
							t.Fatalf("head %d: score %d = %v, want %v", h, i, g, want[i])
						}
					}
				}
			})
		}
	})
}

// TestAccumQ8_0Tiled checks the tiled weighted sums against float64 sums
// of the dequantized values. The assembly rounds each weight p·d to 16
// bits (AVX-512) or 15 (AVX2) against a bound over 128 keys: its error is
// at most ~2⁻¹⁶ of the bound times Σ|v| over the keys, bounded here by
// 2⁻¹⁴ of Σ_j max p · max d · |q_j| (q the int8 values).
func TestAccumQ8_0Tiled(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	kvModes(t, func(t *testing.T) {
		for _, c := range tiledCases {
			for _, kind := range []string{"uniform", "peaked", "zero-row"} {
				t.Run(fmt.Sprintf("%+v/%s", c, kind), func(t *testing.T) {
					ldt := (c.off + c.nb + c.pad) * KVTileBlockBytes
					vals := make([][]float32, c.n)
					for j := range vals {
						vals[j] = kvRow(r, c.nb*QK)
					}
					tiled, plain := tiledTensor(vals, KVTileV, ldt, c.off*KVTileBlockBytes, c.nb)
					d := c.nb * QK
					ldp, ldo := c.n+5, d+7
					p := make([]float32, (c.m-1)*ldp+c.n)
					for i := range p {
						switch kind {
						case "uniform":
							p[i] = r.Float32()
						default:
							p[i] = float32(math.Exp(-20 * r.Float64()))
						}
					}
					if kind == "zero-row" {
						clear(p[:c.n])
					}
					o := make([]float32, (c.m-1)*ldo+d)
					for i := range o {
						o[i] = float32(r.NormFloat64())
					}
					o0 := append([]float32(nil), o...)
					AccumQ8_0Tiled(o, ldo, p, ldp, c.m, tiled[c.off*KVTileBlockBytes:], ldt, c.n, c.nb)
					for i := 0; i < c.m; i++ {
						for k := 0; k < d; k++ {
							want, mag := float64(o0[i*ldo+k]), math.Abs(float64(o0[i*ldo+k]))
							var bound float64
							for j0 := 0; j0 < c.n; j0 += tiledSpan {
								var pm, dm, sq float64
								for j := j0; j < min(c.n, j0+tiledSpan); j++ {
									blk := plain[j*c.nb*34+k/QK*34:]
									dj, qj := float64(getF16(blk)), float64(int8(blk[2+k%QK]))
									pj := float64(p[i*ldp+j])
									want += pj * dj * qj
									mag += math.Abs(pj * dj * qj)
									pm, dm, sq = max(pm, pj), max(dm, dj), sq+math.Abs(qj)
								}
								bound += pm * dm * sq
							}
							tol := 1e-6*mag + 1e-30
							if !kvOff {
								tol += bound / (1 << 14)
							}
							if got := o[i*ldo+k]; math.Abs(float64(got)-want) > tol {
								t.Fatalf("o[%d][%d] = %v, want %v (tolerance %.3g)", i, k, got, want, tol)
							}
						}
						for k := d; k < ldo && i < c.m-1; k++ {
							if o[i*ldo+k] != o0[i*ldo+k] {
								t.Fatalf("padding of row %d changed", i)
							}
						}
					}
				})
			}
		}
	})
}

// BenchmarkKVTiled is BenchmarkKVQ8 (four query rows of one KV head, keys
// in the caches) for the tiled layouts' kernels.
func BenchmarkKVTiled(b *testing.B) {
	if !tiledSIMD() {
		b.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(1, 2))
	const m, nb = 4, 4
	n := kvBenchKeys
	x := make([]byte, m*nb*36)
	for i := 0; i < m; i++ {
		QuantizeQ8Act(x[i*nb*36:], kvRow(r, nb*QK))
	}
	rows := make([][]float32, n)
	for j := range rows {
		rows[j] = kvRow(r, nb*QK)
	}
	ldt := nb * KVTileBlockBytes
	k, _ := tiledTensor(rows, KVTileK, ldt, 0, nb)
	v, _ := tiledTensor(rows, KVTileV, ldt, 0, nb)
	s := make([]float32, m*n)
	for i := range s {
		s[i] = r.Float32()
	}
	o := make([]float32, m*nb*QK)
	b.Run("scores", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			DotQ8_0Tiled(s, n, x, nb*36, m, k, ldt, n, nb)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
	b.Run("accum", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			AccumQ8_0Tiled(o, nb*QK, s, n, m, v, ldt, n, nb)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
	// calls of 128 keys, as the attention makes them
	b.Run("accum128", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for j0 := 0; j0 < n; j0 += 128 {
				AccumQ8_0Tiled(o, nb*QK, s[j0:], n, m, v[j0/KVTile*ldt:], ldt, 128, nb)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}

// BenchmarkKVTiledHeads runs the two tiled kernels as a decode attention
// pass calls them (one thread, no softmax): four KV heads side by side in
// each tile, four query rows each, calls of 128 keys (the scores of all
// heads, then each head's values), over caches of L keys: with L = 1K the
// caches stay in L2/L3, with L = 32K they come from memory, so the two
// show what the loads cost. Each key's tiles hold random bytes with unit
// scales (the kernels' speed does not depend on the values).
func BenchmarkKVTiledHeads(b *testing.B) {
	if !tiledSIMD() {
		b.Skip("no AVX2")
	}
	r := rand.New(rand.NewPCG(1, 2))
	const m, nb, heads, span = 4, 4, 4, 128
	W := heads * nb
	ldt := W * KVTileBlockBytes
	qb := nb * Q8ActBlockBytes
	x := make([]byte, heads*m*qb)
	for i := 0; i < heads*m; i++ {
		QuantizeQ8Act(x[i*qb:], kvRow(r, nb*QK))
	}
	s := make([]float32, heads*m*span)
	for i := range s {
		s[i] = r.Float32()
	}
	o := make([]float32, heads*m*nb*QK)
	for _, L := range []int{1024, 32768} {
		k, v := make([]byte, L/KVTile*ldt), make([]byte, L/KVTile*ldt)
		for _, t := range [][]byte{k, v} {
			for i := range t {
				t[i] = byte(r.Uint32())
			}
			for tile := 0; tile < L/KVTile; tile++ {
				for c := 0; c < W; c++ {
					sc := t[tile*ldt+c*KVTileBlockBytes+KVTile*QK:]
					for j := 0; j < KVTile; j++ {
						sc[2*j], sc[2*j+1] = 0x00, 0x3c // 1.0 in float16
					}
				}
			}
		}
		scores := func(j0 int) { DotQ8_0TiledHeads(s, span, x, qb, m, heads, k[j0/KVTile*ldt:], ldt, span, nb) }
		values := func(j0 int) {
			for h := 0; h < heads; h++ {
				AccumQ8_0Tiled(o[h*m*nb*QK:], nb*QK, s[h*m*span:], span, m, v[j0/KVTile*ldt+h*nb*KVTileBlockBytes:], ldt, span, nb)
			}
		}
		for _, c := range []struct {
			name string
			f    func(int)
		}{{"scores", scores}, {"values", values}, {"both", func(j0 int) { scores(j0); values(j0) }}} {
			b.Run(fmt.Sprintf("%s/L=%d", c.name, L), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for j0 := 0; j0 < L; j0 += span {
						c.f(j0)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*L*heads), "ns/key/head")
			})
		}
	}
}
