//go:build amd64 && !purego

package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// simdSets returns the SIMD kernel sets to check: AVX2 and, where the CPU
// has it, AVX-512 VNNI (the test logs that the VNNI part is skipped where it
// has not). The active set is restored when the test ends.
func simdSets(t testing.TB) []kernelSet {
	if !hasAVX2 {
		t.Skip("no AVX2: only the generic kernels exist on this CPU")
	}
	saved := useVNNI
	t.Cleanup(func() { setVNNI(saved) })
	sets := []kernelSet{avx2Kernels}
	if hasVNNI {
		sets = append(sets, vnniKernels())
	} else {
		t.Log("CPU lacks AVX512F/BW/VL/VNNI or BMI2: VNNI kernels skipped, AVX2 checked")
	}
	return sets
}

// useSet makes ks the active kernel set.
func useSet(ks kernelSet) {
	setVNNI(ks.name == "avx512vnni")
	if kernels.name != ks.name {
		panic("quant: cannot select kernel set " + ks.name)
	}
}

// intDotTypes are the weight types with integer dot kernels.
var intDotTypes = []Type{Q4_0, Q8_0, Q4_K, Q6_K}

// rowKernels returns the one-row and the four-row kernel of ty in ks.
func rowKernels(ks kernelSet, ty Type) (func(w, x []byte) float32, func(w []byte, xs *[4][]byte, res *[4]float32)) {
	switch ty {
	case Q4_0:
		return ks.q4_0, ks.q4_0x4
	case Q8_0:
		return ks.q8_0, ks.q8_0x4
	case Q4_K:
		return ks.q4k, ks.q4kx4
	default:
		return ks.q6k, ks.q6kx4
	}
}

// oracleDot is the pure-Go row kernel of ty.
func oracleDot(ty Type) func(w, x []byte) float32 {
	switch ty {
	case Q4_0:
		return dotQ4_0Go
	case Q8_0:
		return dotQ8_0Go
	case Q4_K:
		return dotQ4KGo
	default:
		return dotQ6KGo
	}
}

// refDot64 is the product of one weight row of ty with one activation row in
// float64 and the sum of the magnitudes of its terms (refKDot64 for the
// K-quants).
func refDot64(ty Type, w, x []byte) (v, mag float64) {
	if ty == Q4_K || ty == Q6_K {
		return refKDot64(ty, w, x)
	}
	for b := 0; b < len(x)/q8aBlockBytes; b++ {
		xb := x[b*q8aBlockBytes:]
		dx := float64(math.Float32frombits(binary.LittleEndian.Uint32(xb)))
		var sum, abs int64
		for j := 0; j < 32; j++ {
			var q int64
			if ty == Q8_0 {
				q = int64(int8(w[b*34+2+j]))
			} else {
				q = int64(w[b*18+2+j%16]>>(4*(j/16))&0xf) - 8
			}
			p := q * int64(int8(xb[4+j]))
			sum += p
			abs += abs64(p)
		}
		bs := 34
		if ty == Q4_0 {
			bs = 18
		}
		d := float64(getF16(w[b*bs:])) * dx
		v += d * float64(sum)
		mag += math.Abs(d) * float64(abs)
	}
	return v, mag
}

// randWeightRows returns n rows of K columns of ty: quantized Gaussian
// values with a large dynamic range in every other row (mode 0), random
// bytes with finite f16 scales (mode 1), or the extremes (mode 2): all
// quants at their maximum (Q4_K/Q4_0 nibbles 15, Q6_K 63) or minimum
// (Q8_0 −128), all 6-bit Q4_K scales and minimums 63, Q6_K scales −128.
func randWeightRows(t testing.TB, r *rand.Rand, ty Type, n, K, mode int) []byte {
	if mode == 0 {
		return randKRows(t, r, ty, n, K, 0) // quantized Gaussians: any type
	}
	rb := RowBytes(ty, K)
	w := make([]byte, n*rb)
	fill := byte(0xff)
	if ty == Q8_0 && r.IntN(2) == 0 {
		fill = 0x80 // −128
	}
	for i := range w {
		if mode == 1 {
			w[i] = byte(r.Uint32())
		} else {
			w[i] = fill
		}
	}
	ts := TypeSize(ty)
	for b := 0; b < len(w)/ts; b++ {
		blk := w[b*ts : (b+1)*ts]
		scale := func(off int) { // finite f16 of either sign, exponent < 16
			if mode == 1 {
				blk[off+1] &^= 0x40
			} else {
				binary.LittleEndian.PutUint16(blk[off:], F32ToF16(float32(r.NormFloat64())))
			}
		}
		switch ty {
		case Q4_0, Q8_0:
			scale(0)
		case Q4_K:
			scale(0)
			scale(2)
		case Q6_K:
			scale(208)
			if mode == 2 {
				for i := 192; i < 208; i++ {
					blk[i] = 0x80 // scales −128
				}
			}
		}
	}
	return w
}

// randActRow returns one activation row of K columns for weights of ty:
// Q8_K rows as randQ8KRow (mode 0: quantized Gaussian, mode 1: random quants
// with many −128/127) or with all quants of a block at −128 or at 127 (mode
// 2). The internal Q8_0 rows take quants in [−127, 127] (the range
// quantizeQ8aBlock produces), with many ±127 in mode 1 and all of a block at
// −127 or 127 in mode 2.
func randActRow(r *rand.Rand, ty Type, K, mode int) []byte {
	if ActType(ty) == Q8_0 {
		if mode == 0 {
			x := gaussian(r, K)
			return QuantizeActivations(ty, x, K, 1, K).data
		}
		row := make([]byte, K/QK*q8aBlockBytes)
		for b := 0; b < K/QK; b++ {
			xb := row[b*q8aBlockBytes:]
			binary.LittleEndian.PutUint32(xb, math.Float32bits(float32(r.NormFloat64())))
			ext := []int{-127, 127}[r.IntN(2)]
			for j := 0; j < 32; j++ {
				v := ext
				if mode == 1 && r.IntN(3) != 0 {
					v = r.IntN(255) - 127
				}
				xb[4+j] = byte(int8(v))
			}
		}
		return row
	}
	if mode < 2 {
		return randQ8KRow(r, K, mode)
	}
	row := make([]byte, K/QKK*292)
	for b := 0; b < K/QKK; b++ {
		xb := row[b*292:]
		binary.LittleEndian.PutUint32(xb, math.Float32bits(float32(r.NormFloat64())))
		ext := []int{-128, 127}[r.IntN(2)]
		for j := 0; j < 256; j++ {
			xb[4+j] = byte(int8(ext))
		}
		for j := 0; j < 16; j++ {
			binary.LittleEndian.PutUint16(xb[260+2*j:], uint16(int16(16*ext)))
		}
	}
	return row
}

// TestSIMDDots checks the one-row and four-row kernels of each SIMD kernel
// set (AVX2, and AVX-512 VNNI where the CPU has it) against the pure-Go dot
// and the float64 reference, for every integer weight type, for K from one
// block to 4096 columns (Q4_0/Q8_0 also 1..7 blocks, for the unrolled loops'
// tails) and for weights and activations that are quantized Gaussians,
// random bytes or all at the extremes (see randWeightRows, randActRow).
func TestSIMDDots(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	for _, ks := range simdSets(t) {
		for _, ty := range intDotTypes {
			Ks := []int{256, 512, 768, 2048, 4096}
			if BlockSize(ty) == QK {
				Ks = append(Ks, 32, 64, 96, 128, 160, 224)
			}
			one, x4 := rowKernels(ks, ty)
			oracle := oracleDot(ty)
			for _, K := range Ks {
				for trial := 0; trial < 18; trial++ {
					wmode, xmode := trial%3, (trial/3)%3
					w := randWeightRows(t, r, ty, 1, K, wmode)
					var xs [4][]byte
					for i := range xs {
						xs[i] = randActRow(r, ty, K, (xmode+i)%3)
					}
					check := func(kernel string, xr []byte, got float32) {
						t.Helper()
						want, mag := refDot64(ty, w, xr)
						gd := oracle(w, xr)
						if math.Abs(float64(gd)-want) > 1e-5*mag {
							t.Fatalf("%v K=%d trial %d: Go dot %v, float64 %v (magnitude %v)", ty, K, trial, gd, want, mag)
						}
						if math.Abs(float64(got)-float64(gd)) > 1e-5*mag || math.IsNaN(float64(got)) {
							t.Fatalf("%s %v %s K=%d trial %d (weights mode %d, activations mode %d): %v, Go dot %v (float64 %v, magnitude %v)",
								ks.name, ty, kernel, K, trial, wmode, xmode, got, gd, want, mag)
						}
					}
					check("row", xs[0], one(w, xs[0]))
					if x4 == nil {
						continue
					}
					var res [4]float32
					x4(w, &xs, &res)
					for i := range xs {
						check(fmt.Sprintf("x4 row %d", i), xs[i], res[i])
					}
				}
			}
		}
	}
}

// rowsKernelOf returns the rows kernel of ty in ks (nil where there is none).
func rowsKernelOf(ks kernelSet, ty Type) rowsKernel {
	switch ty {
	case Q4_0:
		return ks.q4_0Rows
	case Q8_0:
		return ks.q8_0Rows
	case Q4_K:
		return ks.q4kRows
	case Q6_K:
		return ks.q6kRows
	}
	return nil
}

// TestSIMDRows calls the rows kernels (one activation row against many
// weight rows) directly, with weight rows padded to a longer stride, and
// compares every output with the pure-Go dot; it also checks that nothing
// after the last output is written.
func TestSIMDRows(t *testing.T) {
	r := rand.New(rand.NewPCG(75, 76))
	for _, ks := range simdSets(t) {
		for _, ty := range intDotTypes {
			rows := rowsKernelOf(ks, ty)
			if rows == nil {
				t.Logf("%s %v: no rows kernel", ks.name, ty)
				continue
			}
			Ks := []int{256, 512, 2048}
			if BlockSize(ty) == QK {
				Ks = append(Ks, 32, 96) // one block, an odd count
			}
			for _, K := range Ks {
				for _, n := range []int{1, 2, 5} {
					rb := RowBytes(ty, K) + 40
					w := make([]byte, n*rb)
					for i := 0; i < n; i++ {
						copy(w[i*rb:], randWeightRows(t, r, ty, 1, K, r.IntN(3)))
					}
					x := randActRow(r, ty, K, r.IntN(3))
					out := make([]float32, n+1)
					out[n] = 12345
					rows(w, rb, x, out[:n])
					if out[n] != 12345 {
						t.Fatalf("%s %v K=%d n=%d: wrote after the last output", ks.name, ty, K, n)
					}
					for i := 0; i < n; i++ {
						wr := w[i*rb : i*rb+RowBytes(ty, K)]
						_, mag := refDot64(ty, wr, x)
						want := oracleDot(ty)(wr, x)
						if math.Abs(float64(out[i])-float64(want)) > 1e-5*mag || math.IsNaN(float64(out[i])) {
							t.Fatalf("%s %v K=%d n=%d row %d: %v, Go dot %v (magnitude %v)", ks.name, ty, K, n, i, out[i], want, mag)
						}
					}
				}
			}
		}
	}
}

// TestSIMDMatMul runs MatMulQ with each SIMD kernel set, with and without the
// tile kernels, on ragged shapes (T = 1..5, odd N, weight tiles of one row
// and of several) and compares every output with the pure-Go dot on the same
// quantized activations; it also checks that nothing outside the N columns
// is written.
func TestSIMDMatMul(t *testing.T) {
	r := rand.New(rand.NewPCG(73, 74))
	savedTile, savedUse := x4TileBytes, useTiles
	defer func() { x4TileBytes, useTiles = savedTile, savedUse }()
	for _, ks := range simdSets(t) {
		useSet(ks)
		for _, ty := range intDotTypes {
			oracle := oracleDot(ty)
			for _, K := range []int{256, 768, 2048} {
				for T := 1; T <= 5; T++ {
					for _, N := range []int{1, 3, 8, 13} {
						useTiles = r.IntN(2) == 0
						x4TileBytes = []int{1, 1000, 16 << 10}[r.IntN(3)]
						w := randWeightRows(t, r, ty, N, K, r.IntN(3))
						qa := QuantizeActivations(ty, gaussian(r, T*K), K, T, K)
						ldo := N + 1
						out := make([]float32, T*ldo)
						for i := range out {
							out[i] = 12345
						}
						MatMulQ(ty, out, ldo, qa, w, N, K)
						rb := RowBytes(ty, K)
						for tt := 0; tt < T; tt++ {
							if out[tt*ldo+N] != 12345 {
								t.Fatalf("%s %v K=%d T=%d N=%d: wrote outside N", ks.name, ty, K, T, N)
							}
							xr := qa.data[tt*qa.stride : (tt+1)*qa.stride]
							for n := 0; n < N; n++ {
								wr := w[n*rb : (n+1)*rb]
								_, mag := refDot64(ty, wr, xr)
								want := oracle(wr, xr)
								got := out[tt*ldo+n]
								if math.Abs(float64(got)-float64(want)) > 1e-5*mag || math.IsNaN(float64(got)) {
									t.Fatalf("%s %v K=%d T=%d N=%d tiles=%v [%d,%d]: %v, Go dot %v (magnitude %v)",
										ks.name, ty, K, T, N, useTiles, tt, n, got, want, mag)
								}
							}
						}
					}
				}
			}
		}
	}
}

// BenchmarkVNNI compares the AVX2 and the AVX-512 VNNI kernels in MatMulQ
// (activations already quantized, one core) for T=1 (decode) and T=4,
// alternating the two sets, on K=2048 weights of N=512 and N=2048 rows
// (0.6..4.5 MB, in L2/L3: the kernels' speed is measured, not DRAM's) and
// on the 2048x512 shape of a Ling-mini expert's down projection. T=4 runs
// the default dispatch (for Q4_K/Q6_K the AVX2 tile kernels of tile.go
// where the set uses them) and, for those types, also the four-row kernels
// alone ("/x4", useTiles off). It reports weight elements × rows per ns
// (MAC/ns) and weight bytes per ns (GB/s).
func BenchmarkVNNI(b *testing.B) {
	if !hasVNNI {
		b.Skip("CPU lacks AVX512F/BW/VL/VNNI")
	}
	savedVNNI, savedTiles := useVNNI, useTiles
	defer func() { setVNNI(savedVNNI); useTiles = savedTiles }()
	for _, ty := range []Type{Q4_K, Q6_K, Q8_0} {
		for _, sh := range []struct{ N, K int }{{512, 2048}, {2048, 2048}, {2048, 512}} {
			N, K := sh.N, sh.K
			r := rand.New(rand.NewPCG(5, 6))
			w := randWeightRows(b, r, ty, N, K, 0)
			for _, T := range []int{1, 4} {
				qa := QuantizeActivations(ty, gaussian(r, T*K), K, T, K)
				out := make([]float32, T*N)
				paths := []string{""}
				if T > 1 && (ty == Q4_K || ty == Q6_K) {
					paths = append(paths, "/x4")
				}
				for _, path := range paths {
					for _, impl := range []string{"avx2", "vnni", "avx2", "vnni"} {
						b.Run(fmt.Sprintf("%v/N=%d/K=%d/T=%d%s/%s", ty, N, K, T, path, impl), func(b *testing.B) {
							setVNNI(impl == "vnni")
							useTiles = path == ""
							for i := 0; i < b.N; i++ {
								MatMulQ(ty, out, N, qa, w, N, K)
							}
							ns := float64(b.Elapsed().Nanoseconds())
							b.ReportMetric(float64(N*K*T)*float64(b.N)/ns, "MAC/ns")
							b.ReportMetric(float64(len(w))*float64(b.N)/ns, "GB/s")
						})
					}
				}
			}
		}
	}
}

// BenchmarkVNNIStream compares the AVX2 and the VNNI kernels at T=1 with
// the weights coming from DRAM: a pool of at least 512 MiB of copies of one
// weight matrix, taken in order ("seq": 2048x2048, like BenchmarkMatMulStream)
// or in a random order ("experts": 512x2048, the gate/up matrix of a
// Ling-mini expert, cold on every call as in MoE decode). It reports weight
// bytes per second.
func BenchmarkVNNIStream(b *testing.B) {
	if !hasVNNI {
		b.Skip("CPU lacks AVX512F/BW/VL/VNNI")
	}
	saved := useVNNI
	defer setVNNI(saved)
	for _, pattern := range []string{"seq", "experts"} {
		N, K := 2048, 2048
		if pattern == "experts" {
			N = 512
		}
		for _, ty := range []Type{Q4_K, Q6_K, Q8_0} {
			r := rand.New(rand.NewPCG(13, 14))
			one := randWeightRows(b, r, ty, N, K, 0)
			copies := (512<<20)/len(one) + 1
			pool := hugepage.Make[byte](copies * len(one)) // as model weights are
			for c := 0; c < copies; c++ {
				copy(pool[c*len(one):], one)
			}
			order := make([]int, copies)
			for i := range order {
				order[i] = i
			}
			if pattern == "experts" {
				r.Shuffle(copies, func(i, j int) { order[i], order[j] = order[j], order[i] })
			}
			qa := QuantizeActivations(ty, gaussian(r, K), K, 1, K)
			out := make([]float32, N)
			for _, impl := range []string{"avx2", "vnni", "avx2", "vnni"} {
				b.Run(fmt.Sprintf("%s/%v/%s", pattern, ty, impl), func(b *testing.B) {
					setVNNI(impl == "vnni")
					b.SetBytes(int64(len(one)))
					for i := 0; i < b.N; i++ {
						c := order[i%copies]
						MatMulQ(ty, out, N, qa, pool[c*len(one):(c+1)*len(one)], N, K)
					}
				})
			}
		}
	}
}
