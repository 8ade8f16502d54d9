package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulMultiRow runs MatMul over many (ragged) T and N so that every
// path of the multi-row kernels is taken: groups of four rows, groups of two
// or three (padded), single leftover rows, and several weight tiles. The
// results are checked against the float64 reference on the quantized
// activations, like testKernels does.
func TestMatMulMultiRow(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	savedTile, savedAct := x4TileBytes, x4ActBytes
	defer func() { x4TileBytes, x4ActBytes = savedTile, savedAct }()
	for _, ks := range []kernelSet{genericKernels, kernels} {
		saved := kernels
		kernels = ks
		for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
			for _, K := range []int{256, 768} {
				for _, T := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 17} {
					for _, N := range []int{1, 5, 13} {
						x4TileBytes = []int{1, 1000, 16 << 10}[r.IntN(3)]
						x4ActBytes = []int{1, 3000, 256 << 10}[r.IntN(3)]
						x := gaussian(r, T*K)
						wf := gaussian(r, N*K)
						if r.IntN(3) == 0 { // large dynamic range
							for i := range wf {
								wf[i] *= 100 * float32(r.Float64())
							}
						}
						w := make([]byte, N*RowBytes(ty, K))
						if err := Quantize(ty, w, wf); err != nil {
							t.Fatal(err)
						}
						ldo := N + 1
						out := make([]float32, T*ldo)
						for i := range out {
							out[i] = 12345
						}
						MatMul(ty, out, ldo, x, K, w, T, N, K)
						ref := refMatMul(ty, dequantActs(ty, x, T, K), w, T, N, K)
						// per-row single kernel on the same quantized inputs
						qa := QuantizeActivations(ty, x, K, T, K)
						for tt := 0; tt < T; tt++ {
							if out[tt*ldo+N] != 12345 {
								t.Fatalf("%v T=%d N=%d: wrote outside N", ty, T, N)
							}
							for n := 0; n < N; n++ {
								got := out[tt*ldo+n]
								want := ref[tt*N+n]
								var scale float64
								for k := 0; k < K; k++ {
									scale += math.Abs(float64(x[tt*K+k] * wf[n*K+k]))
								}
								if math.Abs(float64(got)-want) > 1e-5*scale+1e-4 {
									t.Fatalf("%s %v K=%d T=%d N=%d [%d,%d]: got %v want %v", ks.name, ty, K, T, N, tt, n, got, want)
								}
								var one float32
								rb := RowBytes(ty, K)
								row, xr := w[n*rb:(n+1)*rb], qa.data[tt*qa.stride:(tt+1)*qa.stride]
								switch ty {
								case Q4_0:
									one = ks.q4_0(row, xr)
								case Q8_0:
									one = ks.q8_0(row, xr)
								case Q4_K:
									one = ks.q4k(row, xr)
								case Q6_K:
									one = ks.q6k(row, xr)
								}
								if math.Abs(float64(got-one)) > 1e-6*scale+1e-6 {
									t.Fatalf("%s %v K=%d T=%d N=%d [%d,%d]: multi-row %v, row kernel %v", ks.name, ty, K, T, N, tt, n, got, one)
								}
							}
						}
					}
				}
			}
		}
		kernels = saved
	}
}

// BenchmarkMatMulQRows measures MatMulQ (activations already quantized) over
// T rows with a 512x2048 weight, in weight elements × rows per nanosecond.
func BenchmarkMatMulQRows(b *testing.B) {
	const N, K = 512, 2048
	for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
		r := rand.New(rand.NewPCG(11, 12))
		w := make([]byte, N*RowBytes(ty, K))
		if err := Quantize(ty, w, gaussian(r, N*K)); err != nil {
			b.Fatal(err)
		}
		for _, T := range []int{1, 4, 16, 64} {
			b.Run(fmt.Sprintf("%v/T=%d", ty, T), func(b *testing.B) {
				qa := QuantizeActivations(ty, gaussian(r, T*K), K, T, K)
				out := make([]float32, T*N)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					MatMulQ(ty, out, N, qa, w, N, K)
				}
				b.ReportMetric(float64(N*K*T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
			})
		}
	}
}

// dequantGo decodes with the Go block functions only.
func dequantGo(t Type, dst []float32, src []byte) {
	bs, ts := BlockSize(t), TypeSize(t)
	for i := 0; i < len(dst)/bs; i++ {
		d, s := dst[i*bs:(i+1)*bs], src[i*ts:(i+1)*ts]
		switch t {
		case Q4_0:
			dequantQ4_0Block(d, s)
		case Q8_0:
			dequantQ8_0Block(d, s)
		case Q4_K:
			dequantQ4KBlock(d, s)
		case Q6_K:
			dequantQ6KBlock(d, s)
		}
	}
}

// TestDequantizeExact checks that Dequantize (SIMD kernels where present)
// gives bit-for-bit the results of the Go block functions, on quantized
// data and on random bytes (any scale, any quant, sub-normal and huge f16
// scales; NaN scales excluded since SIMD conversion quietens NaNs).
func TestDequantizeExact(t *testing.T) {
	t.Logf("fast dequantizers: %d", len(fastDequant))
	r := rand.New(rand.NewPCG(31, 32))
	for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
		for trial := 0; trial < 40; trial++ {
			n := BlockSize(ty) * (1 + r.IntN(9))
			src := make([]byte, RowBytes(ty, n))
			if trial%2 == 0 {
				x := gaussian(r, n)
				for i := range x {
					x[i] *= float32(math.Pow(2, float64(trial-20)))
				}
				if err := Quantize(ty, src, x); err != nil {
					t.Fatal(err)
				}
			} else {
				for i := range src {
					src[i] = byte(r.Uint32())
				}
				// no NaN/Inf f16 scales
				ts := TypeSize(ty)
				for b := 0; b < len(src)/ts; b++ {
					fix := func(off int) { src[b*ts+off+1] &^= 0x40 }
					switch ty {
					case Q4_0, Q8_0:
						fix(0)
					case Q4_K:
						fix(0)
						fix(2)
					case Q6_K:
						fix(208)
					}
				}
			}
			got := make([]float32, n)
			want := make([]float32, n)
			if err := Dequantize(ty, got, src); err != nil {
				t.Fatal(err)
			}
			dequantGo(ty, want, src)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%v trial %d: element %d: %v (%08x), Go %v (%08x)", ty, trial, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
				}
			}
		}
	}
}

// BenchmarkDequantize measures Dequantize of a 16x2048 panel (the panel the
// CPU backend expands), in elements per nanosecond.
func BenchmarkDequantize(b *testing.B) {
	const n = 16 * 2048
	for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
		r := rand.New(rand.NewPCG(1, 2))
		src := make([]byte, RowBytes(ty, n))
		Quantize(ty, src, gaussian(r, n))
		dst := make([]float32, n)
		for _, impl := range []string{"go", "fast"} {
			b.Run(ty.String()+"/"+impl, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if impl == "go" {
						dequantGo(ty, dst, src)
					} else {
						Dequantize(ty, dst, src)
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "elem/ns")
			})
		}
	}
}

// TestQuantizeQ8KExact checks the SIMD Q8_K activation quantizer against the
// Go one byte for byte, including ties of |max| and all-zero blocks.
func TestQuantizeQ8KExact(t *testing.T) {
	if quantQ8KFast == nil {
		t.Skip("no SIMD quantizer")
	}
	r := rand.New(rand.NewPCG(41, 42))
	for trial := 0; trial < 500; trial++ {
		x := gaussian(r, 256)
		s := float32(math.Pow(2, float64(r.IntN(60)-30)))
		for i := range x {
			x[i] *= s
		}
		switch trial % 5 {
		case 1: // tie between +max and -max: the first one wins
			i, j := r.IntN(256), r.IntN(256)
			x[i], x[j] = 10*s, -10*s
		case 2:
			clear(x)
		case 3:
			for i := range x {
				if r.IntN(3) == 0 {
					x[i] = 0
				}
			}
		case 4: // values on rounding boundaries
			for i := range x {
				x[i] = float32(r.IntN(255)-127) / 2
			}
		}
		want := make([]byte, 292)
		got := make([]byte, 292)
		for i := range got {
			got[i] = 0xaa
		}
		quantizeQ8KBlock(want, x)
		quantQ8KFast(got, x)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("trial %d: byte %d: got %#x want %#x", trial, i, got[i], want[i])
			}
		}
	}
}

// TestQuantizeQ8aExact checks the SIMD Q8_0 activation quantizer (rounding
// half away from zero) against the Go one byte for byte.
func TestQuantizeQ8aExact(t *testing.T) {
	if quantQ8aRowFast == nil {
		t.Skip("no SIMD quantizer")
	}
	r := rand.New(rand.NewPCG(43, 44))
	for trial := 0; trial < 500; trial++ {
		nb := 1 + r.IntN(8)
		x := gaussian(r, 32*nb)
		s := float32(math.Pow(2, float64(r.IntN(60)-30)))
		for i := range x {
			x[i] *= s
		}
		switch trial % 4 {
		case 1:
			clear(x[:32])
		case 2: // halves
			for i := range x {
				x[i] = float32(r.IntN(255)-127) / 2
			}
			for b := 0; b < nb; b++ {
				x[32*b+r.IntN(32)] = 127 // d = 1: the halves are ties
			}
		case 3:
			for i := range x {
				x[i] = float32(r.IntN(2001)-1000) / 1000 * 127
			}
		}
		want := make([]byte, nb*q8aBlockBytes)
		got := make([]byte, nb*q8aBlockBytes)
		for b := 0; b < nb; b++ {
			quantizeQ8aBlock(want[b*q8aBlockBytes:], x[32*b:32*b+32])
		}
		quantQ8aRowFast(got, x)
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("trial %d: byte %d: got %#x want %#x", trial, i, got[i], want[i])
			}
		}
	}
}

// BenchmarkX4Blocking compares the activation-row blocking of matMulX4 on
// and off for many rows (512x2048 Q4_K weight).
func BenchmarkX4Blocking(b *testing.B) {
	const N, K = 512, 2048
	r := rand.New(rand.NewPCG(11, 12))
	w := make([]byte, N*RowBytes(Q4_K, K))
	Quantize(Q4_K, w, gaussian(r, N*K))
	saved := x4ActBytes
	defer func() { x4ActBytes = saved }()
	for _, T := range []int{256, 512} {
		qa := QuantizeActivations(Q4_K, gaussian(r, T*K), K, T, K)
		out := make([]float32, T*N)
		for _, ab := range []int{64 << 10, 256 << 10, 1 << 40} {
			b.Run(fmt.Sprintf("T=%d/act=%d", T, ab), func(b *testing.B) {
				x4ActBytes = ab
				for i := 0; i < b.N; i++ {
					MatMulQ(Q4_K, out, N, qa, w, N, K)
				}
				b.ReportMetric(float64(N*K*T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
			})
		}
	}
}
