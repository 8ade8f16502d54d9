package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// randQ8KRow returns one Q8_K activation row of K columns: the quantized
// Gaussian values (mode 0, with a random scale) or random quants in
// [-128, 127] with a random finite d and consistent sums (mode 1).
func randQ8KRow(r *rand.Rand, K, mode int) []byte {
	if mode == 0 {
		x := gaussian(r, K)
		s := float32(math.Pow(2, float64(r.IntN(20)-10)))
		for i := range x {
			x[i] *= s
		}
		return QuantizeActivations(Q4_K, x, K, 1, K).data
	}
	row := make([]byte, K/QKK*292)
	for b := 0; b < K/QKK; b++ {
		xb := row[b*292:]
		d := float32(r.NormFloat64()) * float32(math.Pow(2, float64(r.IntN(20)-10)))
		binary.LittleEndian.PutUint32(xb, math.Float32bits(d))
		for j := 0; j < 256; j++ {
			v := r.IntN(256) - 128
			if mode == 1 && r.IntN(4) == 0 { // extremes
				v = []int{-128, 127}[r.IntN(2)]
			}
			xb[4+j] = byte(int8(v))
		}
		for j := 0; j < 16; j++ {
			s := 0
			for l := 0; l < 16; l++ {
				s += int(int8(xb[4+16*j+l]))
			}
			binary.LittleEndian.PutUint16(xb[260+2*j:], uint16(int16(s)))
		}
	}
	return row
}

// randKRows returns n rows of K columns of type ty: quantized Gaussian
// weights, some rows with a large dynamic range (mode 0), or random bytes
// with finite f16 scales (mode 1, K-quants only: any 6-bit / 8-bit scale,
// any quant). Mode 0 works for every type.
func randKRows(t testing.TB, r *rand.Rand, ty Type, n, K, mode int) []byte {
	rb := RowBytes(ty, K)
	w := make([]byte, n*rb)
	if mode == 0 {
		wf := gaussian(r, n*K)
		for i := range wf {
			if (i/K)%2 == 1 {
				wf[i] *= 100 * float32(r.Float64())
			}
		}
		if err := Quantize(ty, w, wf); err != nil {
			t.Fatal(err)
		}
		return w
	}
	for i := range w {
		w[i] = byte(r.Uint32())
	}
	ts := TypeSize(ty)
	for b := 0; b < len(w)/ts; b++ {
		fix := func(off int) { w[b*ts+off+1] &^= 0x40 } // f16 exponent < 16
		switch ty {
		case Q4_K:
			fix(0)
			fix(2)
		case Q6_K:
			fix(208)
		}
	}
	return w
}

// refKDot64 is the product of one Q4_K or Q6_K weight row with one Q8_K row
// in float64 (exact integer sums, then the block scales), and the sum of the
// magnitudes of its terms, which bounds the rounding error of float32
// kernels.
func refKDot64(ty Type, w, x []byte) (v, mag float64) {
	for b := 0; b < len(x)/292; b++ {
		xb := x[b*292 : b*292+292]
		dx := float64(math.Float32frombits(binary.LittleEndian.Uint32(xb)))
		xq := func(i int) int64 { return int64(int8(xb[4+i])) }
		bs := func(i int) int64 { return int64(int16(binary.LittleEndian.Uint16(xb[260+2*i:]))) }
		switch ty {
		case Q4_K:
			wb := w[b*144 : b*144+144]
			d, dmin := float64(getF16(wb[0:])), float64(getF16(wb[2:]))
			for s := 0; s < 8; s++ {
				sc, m := q4kScaleMin(s, wb[4:16])
				var a, aa int64
				for l := 0; l < 32; l++ {
					q := int64(wb[16+32*(s/2)+l] >> (4 * (s % 2)) & 0xf)
					a += q * xq(32*s+l)
					aa += abs64(q * xq(32*s+l))
				}
				ms := int64(m) * (bs(2*s) + bs(2*s+1))
				v += d*dx*float64(a*int64(sc)) - dmin*dx*float64(ms)
				mag += math.Abs(d*dx)*float64(aa*int64(sc)) + math.Abs(dmin*dx*float64(ms))
			}
		case Q6_K:
			wb := w[b*210 : b*210+210]
			d := float64(getF16(wb[208:]))
			for i := 0; i < 256; i++ {
				h, l := i/128, i%128
				ql := wb[64*h+l%64]
				qh := wb[128+32*h+l%32]
				q := int64(ql>>(4*(l/64))&0xf|(qh>>(2*(l/32))&3)<<4) - 32
				sc := int64(int8(wb[192+i/16]))
				v += d * dx * float64(q*sc*xq(i))
				mag += math.Abs(d * dx * float64(q*sc*xq(i)))
			}
		}
	}
	return v, mag
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// goDot is the pure-Go row kernel of ty, the oracle.
func goDot(ty Type) func(w, x []byte) float32 {
	if ty == Q4_K {
		return dotQ4KGo
	}
	return dotQ6KGo
}

func tileKernelOf(ks kernelSet, ty Type) tileKernel {
	if ty == Q4_K {
		return ks.q4kx2x4
	}
	return ks.q6kx2x4
}

func tileKernel8Of(ks kernelSet, ty Type) tileKernel8 {
	if ty == Q4_K {
		return ks.q4kx2x8
	}
	return ks.q6kx2x8
}

// TestTileKernels calls the tile kernels directly on two weight rows and one
// to four activation rows (the missing ones repeat the last, as in
// matMulTiles), or eight for the eight-row kernels, and compares the results
// with the pure-Go row dot and with the float64 reference, on quantized and
// on random-byte inputs (extreme quants, scales and minimums).
func TestTileKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, ty := range []Type{Q4_K, Q6_K} {
		t2, t8 := tileKernelOf(kernels, ty), tileKernel8Of(kernels, ty)
		if t2 == nil && t8 == nil {
			t.Logf("%v: no tile kernel (%s)", ty, kernels.name)
			continue
		}
		for _, K := range []int{256, 512, 768, 2048} {
			for trial := 0; trial < 30; trial++ {
				wmode, xmode := trial%2, (trial/2)%2
				w := randKRows(t, r, ty, 2, K, wmode)
				rb := RowBytes(ty, K)
				nr := 1 + r.IntN(4)
				s := K / QKK * 292
				data := make([]byte, nr*s)
				for i := 0; i < nr; i++ {
					copy(data[i*s:], randQ8KRow(r, K, xmode))
				}
				aux := make([]byte, K/QKK*tileAuxBytes)
				buildTileAux(aux, data, s, nr, K/QKK)
				var xs [4][]byte
				for i := range xs {
					j := min(i, nr-1)
					xs[i] = data[j*s : (j+1)*s]
				}
				check := func(kernel string, i int, xr []byte, got float32) {
					t.Helper()
					wr := w[i*rb : (i+1)*rb]
					want, mag := refKDot64(ty, wr, xr)
					gd := goDot(ty)(wr, xr)
					if math.Abs(float64(gd)-want) > 1e-5*mag {
						t.Fatalf("%v K=%d trial %d: Go dot %v, float64 reference %v (magnitude %v)", ty, K, trial, gd, want, mag)
					}
					if math.Abs(float64(got)-float64(gd)) > 1e-5*mag || math.IsNaN(float64(got)) {
						t.Fatalf("%v %s K=%d trial %d: result of weight row %d = %v, Go dot %v (float64 %v, magnitude %v)",
							ty, kernel, K, trial, i, got, gd, want, mag)
					}
				}
				if t2 != nil {
					const ldo = 3
					out := make([]float32, 4*ldo)
					for i := range out {
						out[i] = 12345
					}
					t2(w, rb, 1, &xs, aux, out, ldo, max(nr, 2))
					for j := 0; j < 4; j++ {
						if out[j*ldo+2] != 12345 || (j >= max(nr, 2) && (out[j*ldo] != 12345 || out[j*ldo+1] != 12345)) {
							t.Fatalf("%v 2x4 K=%d nr=%d: wrote outside the pair or the rows", ty, K, nr)
						}
						if j < max(nr, 2) {
							for i := 0; i < 2; i++ {
								check(fmt.Sprintf("2x4 nr=%d row %d", nr, j), i, xs[j], out[j*ldo+i])
							}
						}
					}
				}
				if t8 == nil {
					continue
				}
				data8 := make([]byte, 8*s)
				for i := 0; i < 8; i++ {
					copy(data8[i*s:], randQ8KRow(r, K, (xmode+i)%2))
				}
				aux8 := make([]byte, 2*K/QKK*tileAuxBytes)
				buildTileAux(aux8, data8, s, 8, K/QKK)
				const ldo = 3
				out8 := make([]float32, 8*ldo)
				for i := range out8 {
					out8[i] = 12345
				}
				t8(w, rb, 1, data8, s, aux8, out8, ldo)
				for j := 0; j < 8; j++ {
					if out8[j*ldo+2] != 12345 {
						t.Fatalf("%v 2x8 K=%d: wrote outside the pair", ty, K)
					}
					for i := 0; i < 2; i++ {
						check(fmt.Sprintf("2x8 row %d", j), i, data8[j*s:(j+1)*s], out8[j*ldo+i])
					}
				}
			}
		}
	}
}

// TestMatMulTiles runs MatMulQ with the tile kernels over ragged shapes (odd
// N, T not a multiple of four, T = 1..9, several K, weight tiles of one row
// and of several, several passes over the activation rows) and compares each
// output with the pure-Go row dot on the same quantized activations; it also
// checks that nothing outside the N columns is written, and that the result
// equals the one-row kernels' within rounding.
func TestMatMulTiles(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	savedTile, savedAct, savedUse := x4TileBytes, x4ActBytes, useTiles
	defer func() { x4TileBytes, x4ActBytes, useTiles = savedTile, savedAct, savedUse }()
	for _, ty := range []Type{Q4_K, Q6_K} {
		if tileKernelOf(kernels, ty) == nil && tileKernel8Of(kernels, ty) == nil {
			t.Logf("%v: no tile kernel (%s)", ty, kernels.name)
			continue
		}
		for _, K := range []int{256, 512, 1024} {
			for _, T := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 27} {
				for _, N := range []int{1, 2, 3, 5, 8, 13, 31} {
					x4TileBytes = []int{1, 1000, 3000, 16 << 10}[r.IntN(4)]
					x4ActBytes = []int{1, 5000, 256 << 10}[r.IntN(3)]
					w := randKRows(t, r, ty, N, K, r.IntN(2))
					x := gaussian(r, T*K)
					qa := QuantizeActivations(ty, x, K, T, K)
					ldo := N + 1
					out := make([]float32, T*ldo)
					old := make([]float32, T*ldo)
					for i := range out {
						out[i], old[i] = 12345, 12345
					}
					useTiles = true
					MatMulQ(ty, out, ldo, qa, w, N, K)
					useTiles = false
					MatMulQ(ty, old, ldo, qa, w, N, K)
					rb := RowBytes(ty, K)
					for tt := 0; tt < T; tt++ {
						if out[tt*ldo+N] != 12345 {
							t.Fatalf("%v K=%d T=%d N=%d: wrote outside N", ty, K, T, N)
						}
						xr := qa.data[tt*qa.stride : (tt+1)*qa.stride]
						for n := 0; n < N; n++ {
							wr := w[n*rb : (n+1)*rb]
							_, mag := refKDot64(ty, wr, xr)
							want := goDot(ty)(wr, xr)
							got := out[tt*ldo+n]
							if math.Abs(float64(got)-float64(want)) > 1e-5*mag || math.IsNaN(float64(got)) {
								t.Fatalf("%v K=%d T=%d N=%d [%d,%d]: tiles %v, Go dot %v (magnitude %v)", ty, K, T, N, tt, n, got, want, mag)
							}
							if o := old[tt*ldo+n]; math.Abs(float64(got)-float64(o)) > 1e-5*mag {
								t.Fatalf("%v K=%d T=%d N=%d [%d,%d]: tiles %v, one-row kernels %v", ty, K, T, N, tt, n, got, o)
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkTiles compares the tile kernels ("tiles") with the one-row
// four-activation-row kernels ("x4") in MatMulQ at the shapes of a Ling-mini
// prefill: routed experts (512x2048 gate/up and 2048x512 down, 4..64 rows
// each, some not a multiple of 8), and dense projections (T=512: 2048x2048,
// T=128: 5120x2048). It reports weight elements ×
// rows per nanosecond (MAC/ns; GFLOP/s is twice that).
func BenchmarkTiles(b *testing.B) {
	saved := useTiles
	defer func() { useTiles = saved }()
	shapes := []struct{ N, K, T int }{
		{512, 2048, 4}, {512, 2048, 8}, {512, 2048, 13}, {512, 2048, 16}, {512, 2048, 32}, {512, 2048, 64},
		{2048, 512, 6}, {2048, 512, 16}, {2048, 512, 64},
		{2048, 2048, 512}, {5120, 2048, 128},
	}
	for _, ty := range []Type{Q4_K, Q6_K} {
		if tileKernelOf(kernels, ty) == nil && tileKernel8Of(kernels, ty) == nil {
			continue
		}
		for _, sh := range shapes {
			r := rand.New(rand.NewPCG(7, 8))
			w := randKRows(b, r, ty, sh.N, sh.K, 0)
			qa := QuantizeActivations(ty, gaussian(r, sh.T*sh.K), sh.K, sh.T, sh.K)
			out := make([]float32, sh.T*sh.N)
			for _, path := range []string{"x4", "tiles", "x4", "tiles"} {
				b.Run(fmt.Sprintf("%v/N=%d/K=%d/T=%d/%s", ty, sh.N, sh.K, sh.T, path), func(b *testing.B) {
					useTiles = path == "tiles"
					for i := 0; i < b.N; i++ {
						MatMulQ(ty, out, sh.N, qa, w, sh.N, sh.K)
					}
					b.ReportMetric(float64(sh.N*sh.K*sh.T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
				})
			}
		}
	}
}

// BenchmarkTileKernel times the kernels alone on L1-resident data (two
// weight rows, eight activation rows of 2048 columns): the one-row kernel
// four times ("x4"), the 2x4 tile kernel twice ("2x4") and the 2x8 tile
// kernel once ("2x8"), in MAC/ns.
func BenchmarkTileKernel(b *testing.B) {
	const K = 2048
	for _, ty := range []Type{Q4_K, Q6_K} {
		t2, t8 := tileKernelOf(kernels, ty), tileKernel8Of(kernels, ty)
		x4 := kernels.q4kx4
		if ty == Q6_K {
			x4 = kernels.q6kx4
		}
		if x4 == nil {
			continue
		}
		r := rand.New(rand.NewPCG(9, 9))
		w := randKRows(b, r, ty, 2, K, 0)
		rb := RowBytes(ty, K)
		qa := QuantizeActivations(ty, gaussian(r, 8*K), K, 8, K)
		var xs [2][4][]byte
		for i := 0; i < 8; i++ {
			xs[i/4][i%4] = qa.data[i*qa.stride : (i+1)*qa.stride]
		}
		ab := K / QKK * tileAuxBytes
		report := func(b *testing.B) {
			b.ReportMetric(float64(16*K)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
		}
		out := make([]float32, 8*2)
		b.Run(ty.String()+"/x4", func(b *testing.B) {
			var res [4]float32
			for i := 0; i < b.N; i++ {
				for g := range xs {
					x4(w[:rb], &xs[g], &res)
					x4(w[rb:], &xs[g], &res)
				}
			}
			report(b)
		})
		if t2 != nil {
			b.Run(ty.String()+"/2x4", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					t2(w, rb, 1, &xs[0], qa.aux, out, 2, 4)
					t2(w, rb, 1, &xs[1], qa.aux[ab:], out[8:], 2, 4)
				}
				report(b)
			})
		}
		if t8 != nil {
			b.Run(ty.String()+"/2x8", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					t8(w, rb, 1, qa.data, qa.stride, qa.aux, out, 2)
				}
				report(b)
			})
		}
	}
}
