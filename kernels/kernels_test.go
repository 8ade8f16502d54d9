package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// withModes runs f with the assembly enabled (when available) and disabled.
func withModes(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	saved, saved512 := useAsm, useAsm512
	defer func() { useAsm, useAsm512 = saved, saved512 }()
	type mode struct {
		name        string
		asm, avx512 bool
	}
	modes := []mode{{"go", false, false}}
	if hasAsm {
		modes = append(modes, mode{"asm", true, false})
	} else {
		t.Log("assembly not available; testing the Go code only")
	}
	if hasAsm512 {
		modes = append(modes, mode{"asm512", true, true})
	}
	for _, m := range modes {
		useAsm, useAsm512 = m.asm, m.avx512
		t.Run(m.name, f)
	}
}

func randF32(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func randBF16(r *rand.Rand, n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = f32ToBF16(float32(r.NormFloat64()))
	}
	return s
}

func randF16(r *rand.Rand, n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		// random sign, exponent in a moderate range (some subnormals), mantissa
		e := uint16(r.IntN(20))
		s[i] = uint16(r.IntN(2))<<15 | e<<10 | uint16(r.IntN(1024))
	}
	return s
}

// close reports whether got is within tol·mag of want, where mag is Σ|terms|.
func close(got, want, mag float64) bool {
	const tol = 1e-5
	return math.Abs(got-want) <= tol*mag+1e-30
}

// refNT computes c[i][j] = Σ_k a[i][k]*b(j,k) in float64 together with Σ|terms|.
func refNT(M, N, K int, a []float32, lda int, b func(j, k int) float64) (val, mag []float64) {
	val = make([]float64, M*N)
	mag = make([]float64, M*N)
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			var s, m float64
			for k := 0; k < K; k++ {
				p := float64(a[i*lda+k]) * b(j, k)
				s += p
				m += math.Abs(p)
			}
			val[i*N+j], mag[i*N+j] = s, m
		}
	}
	return
}

var (
	testT = []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 17, 33}
	testN = []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 64, 67}
	testK = func() []int {
		var ks []int
		for k := 1; k <= 70; k++ {
			ks = append(ks, k)
		}
		return append(ks, 128, 513, 1030)
	}()
)

// shapes yields a reduced cross product so the test stays fast.
func shapes(f func(T, N, K int)) {
	for ti, T := range testT {
		for ni, N := range testN {
			for ki, K := range testK {
				if (ti+ni+ki)%5 != 0 && K > 16 && K != 513 && K != 1030 {
					continue
				}
				if K == 1030 && (T > 9 || N > 13) {
					continue
				}
				f(T, N, K)
			}
		}
	}
}

func TestMatMul(t *testing.T) {
	withModes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, typ := range []string{"f32", "bf16", "f16"} {
			count := 0
			shapes(func(T, N, K int) {
				ldx := K + r.IntN(3)*5
				ldo := N + r.IntN(3)*3
				x := randF32(r, (T-1)*ldx+K)
				out := make([]float32, (T-1)*ldo+N)
				for i := range out {
					out[i] = float32(math.NaN()) // must be overwritten (but not gaps)
				}
				var val, mag []float64
				switch typ {
				case "f32":
					w := randF32(r, N*K)
					val, mag = refNT(T, N, K, x, ldx, func(j, k int) float64 { return float64(w[j*K+k]) })
					MatMulF32(out, ldo, x, ldx, w, T, N, K)
				case "bf16":
					w := randBF16(r, N*K)
					val, mag = refNT(T, N, K, x, ldx, func(j, k int) float64 { return float64(bf16ToF32(w[j*K+k])) })
					MatMulBF16(out, ldo, x, ldx, w, T, N, K)
				case "f16":
					w := randF16(r, N*K)
					val, mag = refNT(T, N, K, x, ldx, func(j, k int) float64 { return float64(f16ToF32(w[j*K+k])) })
					MatMulF16(out, ldo, x, ldx, w, T, N, K)
				}
				for i := 0; i < T; i++ {
					for j := 0; j < N; j++ {
						got := float64(out[i*ldo+j])
						if !close(got, val[i*N+j], mag[i*N+j]) {
							t.Fatalf("%s T=%d N=%d K=%d ldx=%d ldo=%d: out[%d][%d]=%v want %v", typ, T, N, K, ldx, ldo, i, j, got, val[i*N+j])
						}
					}
					for j := N; j < ldo && i < T-1; j++ {
						if !math.IsNaN(float64(out[i*ldo+j])) {
							t.Fatalf("%s T=%d N=%d K=%d: wrote gap out[%d][%d]", typ, T, N, K, i, j)
						}
					}
				}
				count++
			})
			if count < 100 {
				t.Fatalf("only %d shapes", count)
			}
		}
	})
}

// TestMatMulAsmVsGo compares the assembly and Go paths directly on larger
// shapes (blocking boundaries of the NT path: 64-row panels, 512-wide k).
func TestMatMulAsmVsGo(t *testing.T) {
	if !hasAsm {
		t.Skip("no assembly")
	}
	defer func(s bool) { useAsm = s }(useAsm)
	r := rand.New(rand.NewPCG(3, 4))
	for _, sh := range [][3]int{{1, 200, 1100}, {5, 130, 1030}, {16, 129, 1025}, {64, 67, 515}, {2, 64, 512}, {33, 3, 2048}} {
		T, N, K := sh[0], sh[1], sh[2]
		x := randF32(r, T*K)
		wf := randF32(r, N*K)
		wb := randBF16(r, N*K)
		wh := randF16(r, N*K)
		for _, typ := range []string{"f32", "bf16", "f16"} {
			run := func(asm bool) []float32 {
				useAsm = asm
				out := make([]float32, T*N)
				switch typ {
				case "f32":
					MatMulF32(out, N, x, K, wf, T, N, K)
				case "bf16":
					MatMulBF16(out, N, x, K, wb, T, N, K)
				case "f16":
					MatMulF16(out, N, x, K, wh, T, N, K)
				}
				return out
			}
			a, g := run(true), run(false)
			for i := range a {
				d := math.Abs(float64(a[i] - g[i]))
				if d > 1e-5*math.Sqrt(float64(K))*math.Max(1, math.Abs(float64(g[i]))) {
					t.Fatalf("%s %v: [%d] asm %v go %v", typ, sh, i, a[i], g[i])
				}
			}
		}
	}
}

func TestGemm(t *testing.T) {
	withModes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(5, 6))
		Ms := []int{1, 2, 3, 4, 5, 7, 9, 17, 33}
		Ns := []int{1, 3, 5, 7, 8, 9, 13, 16, 17, 23, 24, 25, 31, 40, 64, 67, 128}
		Ks := []int{1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 64, 70, 128, 300, 513}
		n := 0
		for mi, M := range Ms {
			for ni, N := range Ns {
				for ki, K := range Ks {
					if (mi+ni+ki)%3 != 0 {
						continue
					}
					n++
					for _, acc := range []bool{false, true} {
						for _, nt := range []bool{false, true} {
							lda := K + r.IntN(2)*3
							ldc := N + r.IntN(2)*2
							var ldb int
							var b []float32
							var bf func(j, k int) float64
							if nt {
								ldb = K + r.IntN(2)*4
								b = randF32(r, (N-1)*ldb+K)
								bf = func(j, k int) float64 { return float64(b[j*ldb+k]) }
							} else {
								ldb = N + r.IntN(2)*4
								b = randF32(r, (K-1)*ldb+N)
								bf = func(j, k int) float64 { return float64(b[k*ldb+j]) }
							}
							a := randF32(r, (M-1)*lda+K)
							c := randF32(r, (M-1)*ldc+N)
							c0 := append([]float32(nil), c...)
							val, mag := refNT(M, N, K, a, lda, bf)
							if nt {
								GemmF32NT(acc, M, N, K, a, lda, b, ldb, c, ldc)
							} else {
								GemmF32(acc, M, N, K, a, lda, b, ldb, c, ldc)
							}
							for i := 0; i < M; i++ {
								for j := 0; j < ldc && i*ldc+j < len(c); j++ {
									got := float64(c[i*ldc+j])
									if j >= N {
										if c[i*ldc+j] != c0[i*ldc+j] {
											t.Fatalf("nt=%v M=%d N=%d K=%d: gap written", nt, M, N, K)
										}
										continue
									}
									want, m := val[i*N+j], mag[i*N+j]
									if acc {
										want += float64(c0[i*ldc+j])
										m += math.Abs(float64(c0[i*ldc+j]))
									}
									if !close(got, want, m) {
										t.Fatalf("nt=%v acc=%v M=%d N=%d K=%d lda=%d ldb=%d ldc=%d: c[%d][%d]=%v want %v", nt, acc, M, N, K, lda, ldb, ldc, i, j, got, want)
									}
								}
							}
						}
					}
				}
			}
		}
		if n < 100 {
			t.Fatalf("only %d shapes", n)
		}
	})
}

func TestDotAndVector(t *testing.T) {
	withModes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for n := 0; n <= 140; n++ {
			if n > 80 && n%7 != 0 {
				continue
			}
			a, b := randF32(r, n), randF32(r, n)
			wb, wh := randBF16(r, n), randF16(r, n)
			var s, m, sb, mb, sh, mh, ss float64
			for i := 0; i < n; i++ {
				p := float64(a[i]) * float64(b[i])
				s += p
				m += math.Abs(p)
				p = float64(bf16ToF32(wb[i])) * float64(b[i])
				sb += p
				mb += math.Abs(p)
				p = float64(f16ToF32(wh[i])) * float64(b[i])
				sh += p
				mh += math.Abs(p)
				ss += float64(a[i]) * float64(a[i])
			}
			if got := DotF32(a, b); !close(float64(got), s, m) {
				t.Fatalf("DotF32 n=%d: %v want %v", n, got, s)
			}
			if got := DotBF16(wb, b); !close(float64(got), sb, mb) {
				t.Fatalf("DotBF16 n=%d: %v want %v", n, got, sb)
			}
			if got := DotF16(wh, b); !close(float64(got), sh, mh) {
				t.Fatalf("DotF16 n=%d: %v want %v", n, got, sh)
			}
			if got := SumSquares(a); !close(float64(got), ss, ss) {
				t.Fatalf("SumSquares n=%d: %v want %v", n, got, ss)
			}

			y := randF32(r, n)
			y0 := append([]float32(nil), y...)
			Axpy(0.75, a, y)
			for i := range y {
				want := float64(y0[i]) + 0.75*float64(a[i])
				if !close(float64(y[i]), want, math.Abs(float64(y0[i]))+math.Abs(0.75*float64(a[i]))) {
					t.Fatalf("Axpy n=%d [%d]: %v want %v", n, i, y[i], want)
				}
			}
			x := randF32(r, n)
			x0 := append([]float32(nil), x...)
			Scale(-1.5, x)
			for i := range x {
				if x[i] != -1.5*x0[i] {
					t.Fatalf("Scale n=%d [%d]", n, i)
				}
			}

			// conversions are exact
			dst := make([]float32, n)
			BF16ToF32(dst, wb)
			for i := range dst {
				if math.Float32bits(dst[i]) != uint32(wb[i])<<16 {
					t.Fatalf("BF16ToF32 n=%d [%d]", n, i)
				}
			}
			F16ToF32(dst, wh)
			for i := range dst {
				if dst[i] != f16ToF32(wh[i]) {
					t.Fatalf("F16ToF32 n=%d [%d]: %v want %v", n, i, dst[i], f16ToF32(wh[i]))
				}
			}
		}
	})
}

func TestF16Special(t *testing.T) {
	cases := map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: float32(math.Ldexp(1, -24)),
		0x03ff: float32(math.Ldexp(1023, -24)), 0x0400: float32(math.Ldexp(1, -14)), 0x3555: 0.333251953125,
	}
	withModes(t, func(t *testing.T) {
		for h, want := range cases {
			src := make([]uint16, 9)
			for i := range src {
				src[i] = h
			}
			dst := make([]float32, 9)
			F16ToF32(dst, src)
			for i := range dst {
				if dst[i] != want {
					t.Fatalf("%#04x: %v want %v", h, dst[i], want)
				}
			}
		}
		src := []uint16{0x7c00, 0xfc00, 0x7e00, 0x7c01, 0x8000, 0, 0, 0, 0x7c00}
		dst := make([]float32, len(src))
		F16ToF32(dst, src)
		if !math.IsInf(float64(dst[0]), 1) || !math.IsInf(float64(dst[1]), -1) || !math.IsNaN(float64(dst[2])) ||
			!math.IsNaN(float64(dst[3])) || math.Float32bits(dst[4]) != 0x80000000 || !math.IsInf(float64(dst[8]), 1) {
			t.Fatalf("specials: %v", dst)
		}
	})
}

func TestF32ToBF16(t *testing.T) {
	withModes(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		special := []uint32{
			0x3f800000, 0x3f808000, 0x3f818000, 0x3f807fff, 0x3f808001, // ties to even, around ties
			0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, // max finite rounds to inf
			0x7f800001, 0xff800001, 0x7fc00000, 0x7fffffff, // NaNs (incl. low-payload signalling)
			0x00000001, 0x80000000, 0x00008000, 0x00018000,
		}
		for n := 0; n < 100; n++ {
			src := make([]float32, n)
			for i := range src {
				if r.IntN(3) == 0 {
					src[i] = math.Float32frombits(special[r.IntN(len(special))])
				} else {
					src[i] = math.Float32frombits(r.Uint32())
				}
			}
			dst := make([]uint16, n)
			F32ToBF16(dst, src)
			for i, v := range src {
				b := math.Float32bits(v)
				got := dst[i]
				if v != v {
					if f := bf16ToF32(got); f == f || got>>15 != uint16(b>>31) {
						t.Fatalf("NaN %#x -> %#x", b, got)
					}
					continue
				}
				// reference: nearest, ties to even, via float64 arithmetic
				lo := b &^ 0xffff
				rem := b & 0xffff
				want := uint16(lo >> 16)
				if rem > 0x8000 || rem == 0x8000 && want&1 == 1 {
					want++
				}
				if got != want {
					t.Fatalf("F32ToBF16(%#08x) = %#04x want %#04x", b, got, want)
				}
			}
		}
	})
}

func TestBoundsPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic on short weights")
		}
	}()
	MatMulF32(make([]float32, 4), 4, make([]float32, 8), 8, make([]float32, 31), 1, 4, 8)
}

func TestNoAllocs(t *testing.T) {
	x := make([]float32, 64*256)
	w := make([]uint16, 100*256)
	wf := make([]float32, 100*256)
	out := make([]float32, 64*100)
	for _, T := range []int{1, 64} {
		allocs := testing.AllocsPerRun(5, func() {
			MatMulBF16(out, 100, x, 256, w, T, 100, 256)
			MatMulF16(out, 100, x, 256, w, T, 100, 256)
			MatMulF32(out, 100, x, 256, wf, T, 100, 256)
			GemmF32(true, T, 100, 256, x, 256, wf, 100, out, 100)
			_ = DotBF16(w[:256], x)
		})
		if allocs != 0 {
			t.Fatalf("T=%d: %v allocations", T, allocs)
		}
	}
}

func TestPeakFLOPS(t *testing.T) {
	f := PeakFLOPS(20e6)
	if !(f > 1e8) {
		t.Fatalf("PeakFLOPS = %v", f)
	}
	t.Logf("peak %.1f GFLOP/s (asm=%v)", f/1e9, useAsm)
}

var benchSink float32

func BenchmarkFMAPeak(b *testing.B) {
	if !hasAsm {
		b.Skip("no assembly")
	}
	const iters = 1 << 14
	for b.Loop() {
		fmaLoopAsm(iters)
	}
	b.ReportMetric(float64(b.N)*iters*FlopsPerFMALoopIter/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func benchMatMul(b *testing.B, typ string, T int) {
	const N, K = 2048, 2048
	r := rand.New(rand.NewPCG(1, 1))
	x := randF32(r, T*K)
	out := make([]float32, T*N)
	var f func()
	switch typ {
	case "f32":
		w := randF32(r, N*K)
		f = func() { MatMulF32(out, N, x, K, w, T, N, K) }
		b.SetBytes(N * K * 4)
	case "bf16":
		w := randBF16(r, N*K)
		f = func() { MatMulBF16(out, N, x, K, w, T, N, K) }
		b.SetBytes(N * K * 2)
	case "f16":
		w := randF16(r, N*K)
		f = func() { MatMulF16(out, N, x, K, w, T, N, K) }
		b.SetBytes(N * K * 2)
	}
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(b.N)*2*float64(T)*N*K/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func benchModes(b *testing.B, typ string) {
	for _, T := range []int{1, 64} {
		b.Run(fmt.Sprintf("T=%d", T), func(b *testing.B) { benchMatMul(b, typ, T) })
	}
}

func BenchmarkMatMulBF16(b *testing.B) { benchModes(b, "bf16") }
func BenchmarkMatMulF32(b *testing.B)  { benchModes(b, "f32") }
func BenchmarkMatMulF16(b *testing.B)  { benchModes(b, "f16") }

func BenchmarkGemmF32(b *testing.B) {
	// attention P·V (M queries × seq) · (seq × head_dim), and Q·Kᵀ
	for _, sh := range [][3]int{{64, 128, 1024}, {1, 128, 1024}} {
		M, N, K := sh[0], sh[1], sh[2]
		r := rand.New(rand.NewPCG(1, 1))
		a, bb, c := randF32(r, M*K), randF32(r, K*N), make([]float32, M*N)
		b.Run(fmt.Sprintf("NN/M=%d,N=%d,K=%d", M, N, K), func(b *testing.B) {
			for b.Loop() {
				GemmF32(false, M, N, K, a, K, bb, N, c, N)
			}
			b.ReportMetric(float64(b.N)*2*float64(M*N*K)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		// Q·Kᵀ: M queries × head_dim(N) against K keys: C[M][K]
		b.Run(fmt.Sprintf("NT/M=%d,N=%d,K=%d", M, K, N), func(b *testing.B) {
			c2 := make([]float32, M*K)
			for b.Loop() {
				GemmF32NT(false, M, K, N, bb[:M*N], N, bb, N, c2, K)
			}
			b.ReportMetric(float64(b.N)*2*float64(M*N*K)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkDotF32(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x, y := randF32(r, 4096), randF32(r, 4096)
	b.SetBytes(4096 * 8)
	for b.Loop() {
		benchSink += DotF32(x, y)
	}
}

// TestExpSub checks the softmax exponentials against math.Exp over the
// whole float32 range of results (and beyond: large negative arguments
// flush to zero, −Inf gives 0, NaN stays NaN), for every length modulo 16.
func TestExpSub(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var xs []float32
	for v := -110.0; v <= 88.7; v += 0.0173 {
		xs = append(xs, float32(v))
	}
	for range 20000 {
		xs = append(xs, float32(r.NormFloat64()*10), -float32(r.ExpFloat64()*30))
	}
	xs = append(xs, 0, -0, 1e-30, -1e-30, -87.33, -87.34, -88, -103, -104, -200, -1e30, float32(math.Inf(-1)))
	withModes(t, func(t *testing.T) {
		worst := 0.0
		defer func() { t.Logf("worst relative error %.3g", worst) }()
		for _, shift := range []float32{0, 3.5, -20} {
			for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 33, len(xs)} {
				x := make([]float32, n)
				for i := range x {
					x[i] = xs[(i*7919+n)%len(xs)] + shift
				}
				in := append([]float32(nil), x...)
				sum := ExpSub(x, shift)
				var want float64
				for i, v := range in {
					e := math.Exp(float64(v) - float64(shift))
					if float32(e) == 0 && float64(v)-float64(shift) > -87 {
						t.Fatalf("bad test input %v", v)
					}
					want += float64(x[i])
					tol := 4e-7 * e
					if e < 0x1p-126 {
						tol = 0x1p-126
					}
					if math.IsInf(float64(float32(e)), 1) {
						if !math.IsInf(float64(x[i]), 1) {
							t.Errorf("n=%d: exp(%v) = %v, want +Inf", n, float64(v)-float64(shift), x[i])
						}
						continue
					}
					if d := math.Abs(float64(x[i]) - e); e >= 0x1p-126 && d/e > worst {
						worst = d / e
					}
					if d := math.Abs(float64(x[i]) - e); d > tol {
						t.Errorf("n=%d: exp(%v) = %v, want %v (rel. error %.3g)", n, float64(v)-float64(shift), x[i], e, d/e)
					}
				}
				if want > math.MaxFloat32 {
					if !math.IsInf(float64(sum), 1) {
						t.Errorf("n=%d: sum %v, want +Inf", n, sum)
					}
				} else if math.Abs(float64(sum)-want) > 1e-5*math.Abs(want) {
					t.Errorf("n=%d: sum %v, want %v", n, sum, want)
				}
			}
		}
		x := []float32{float32(math.NaN()), float32(math.Inf(-1)), float32(math.Inf(1)), 0, 0, 0, 0, 0, float32(math.NaN())}
		ExpSub(x, 0)
		if !math.IsNaN(float64(x[0])) || x[1] != 0 || !math.IsInf(float64(x[2]), 1) || x[3] != 1 || !math.IsNaN(float64(x[8])) {
			t.Errorf("special values: %v", x)
		}
	})
}

// TestMax checks Max against a plain loop for every length modulo 32 and
// for maxima at every position.
func TestMax(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	withModes(t, func(t *testing.T) {
		if m := Max(nil); !math.IsInf(float64(m), -1) {
			t.Errorf("Max(nil) = %v", m)
		}
		for n := 1; n < 80; n++ {
			x := randF32(r, n)
			for i := range x {
				x[i] -= 100
			}
			for p := 0; p < n; p++ {
				x[p] += 1000
				if m := Max(x); m != x[p] {
					t.Fatalf("n=%d: max at %d = %v, got %v", n, p, x[p], m)
				}
				x[p] -= 1000
			}
		}
	})
}

func BenchmarkExpSub(b *testing.B) {
	saved := useAsm512
	defer func() { useAsm512 = saved }()
	for _, on := range []bool{false, true} {
		if on && !hasAsm512 {
			continue
		}
		useAsm512 = on
		b.Run(map[bool]string{false: "avx2", true: "avx512"}[on], func(b *testing.B) {
			x := make([]float32, 128) // a block of attention scores
			for j := range x {
				x[j] = -float32(j) / 16
			}
			b.SetBytes(int64(4 * len(x)))
			for i := 0; i < b.N; i++ {
				ExpSub(x, 1) // the values stay in (0, 1]
			}
		})
	}
}

// TestGating checks SiLUMul, SiLU and SigmoidMul (in every mode) against
// float64 math on inputs from −200 to 200, ragged lengths around the
// vector width and the chunk size, and in place: within 1e-6 of the
// result's magnitude, or 1e-30 absolute where the result underflows.
func TestGating(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	sig := func(v float32) float64 { return 1 / (1 + math.Exp(-float64(v))) }
	withModes(t, func(t *testing.T) {
		for _, n := range []int{0, 1, 7, 8, 9, 255, 256, 257, 1000} {
			g, u := make([]float32, n), make([]float32, n)
			for i := range g {
				switch i % 5 {
				case 0:
					g[i] = float32(r.NormFloat64() * 4)
				case 1:
					g[i] = float32(r.Float64()*400 - 200)
				case 2:
					g[i] = []float32{0, -0, 88, -88, 89, -89, 1e-30, -87.5}[r.IntN(8)]
				default:
					g[i] = float32(r.NormFloat64())
				}
				u[i] = float32(r.NormFloat64())
			}
			check := func(what string, got []float32, want func(i int) float64) {
				t.Helper()
				for i, v := range got {
					w := want(i)
					if d := math.Abs(float64(v) - w); d > 1e-6*math.Abs(w) && d > 1e-30 {
						t.Fatalf("%s n=%d: [%d] (gate %v) = %v, want %v", what, n, i, g[i], v, w)
					}
				}
			}
			d := make([]float32, n)
			SiLUMul(d, g, u)
			check("SiLUMul", d, func(i int) float64 { return float64(g[i]) * sig(g[i]) * float64(u[i]) })
			SigmoidMul(d, u, g)
			check("SigmoidMul", d, func(i int) float64 { return float64(u[i]) * sig(g[i]) })
			x := append([]float32(nil), g...)
			SiLU(x, x) // in place
			check("SiLU", x, func(i int) float64 { return float64(g[i]) * sig(g[i]) })
		}
	})
}

// BenchmarkSiLUMul measures the SwiGLU gate of one Ring-mini expert (512
// values) with the Go code (math.Exp) and with the vector exponential.
func BenchmarkSiLUMul(b *testing.B) {
	g, u, d := make([]float32, 512), make([]float32, 512), make([]float32, 512)
	for i := range g {
		g[i], u[i] = float32(i%37)/7-2.5, 0.5
	}
	saved := useAsm
	defer func() { useAsm = saved }()
	for _, asm := range []bool{false, true} {
		if asm && !hasAsm {
			continue
		}
		name := "go"
		if asm {
			name = "asm"
		}
		b.Run(name, func(b *testing.B) {
			useAsm = asm
			for i := 0; i < b.N; i++ {
				SiLUMul(d, g, u)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(d)), "ns/value")
		})
	}
}

// TestLightningStep checks LightningStep against float64 arithmetic (every
// mode), and with the assembly against Scale and Axpy row by row, whose
// rounding it must repeat bit for bit, for head dims with and without the
// one-pass kernel.
func TestLightningStep(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	withModes(t, func(t *testing.T) {
		for _, d := range []int{8, 16, 64, 100, 128, 192} {
			vec := func(n int) []float32 {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				return x
			}
			S, q, k, v, o := vec(d*d), vec(d), vec(d), vec(d), vec(d)
			lam := float32(0.97)
			S0, o0 := append([]float32(nil), S...), append([]float32(nil), o...)
			LightningStep(S, q, k, v, o, lam)
			for i := 0; i < d; i++ {
				for j := 0; j < d; j++ {
					want := float64(lam)*float64(S0[i*d+j]) + float64(k[i])*float64(v[j])
					if math.Abs(float64(S[i*d+j])-want) > 1e-5*(math.Abs(want)+1) {
						t.Fatalf("d=%d: S[%d][%d] = %v, want %v", d, i, j, S[i*d+j], want)
					}
				}
			}
			for j := 0; j < d; j++ {
				want, mag := float64(o0[j]), math.Abs(float64(o0[j]))
				for i := 0; i < d; i++ {
					s := float64(lam)*float64(S0[i*d+j]) + float64(k[i])*float64(v[j])
					want += float64(q[i]) * s
					mag += math.Abs(float64(q[i]) * s)
				}
				if math.Abs(float64(o[j])-want) > 1e-5*mag {
					t.Fatalf("d=%d: o[%d] = %v, want %v", d, j, o[j], want)
				}
			}
			// the row-by-row form with the same kernels
			S2, o2 := append([]float32(nil), S0...), append([]float32(nil), o0...)
			for i := 0; i < d; i++ {
				s := S2[i*d : (i+1)*d]
				Scale(lam, s)
				Axpy(k[i], v, s)
				Axpy(q[i], s, o2)
			}
			for i := range S {
				if math.Float32bits(S[i]) != math.Float32bits(S2[i]) {
					t.Fatalf("d=%d: S[%d] = %v, row by row %v", d, i, S[i], S2[i])
				}
			}
			for j := range o {
				if math.Float32bits(o[j]) != math.Float32bits(o2[j]) {
					t.Fatalf("d=%d: o[%d] = %v, row by row %v", d, j, o[j], o2[j])
				}
			}
		}
	})
}

// BenchmarkLightningStep measures one token of one head at d = 128 (64 KiB
// of state, in the caches) with the one-pass kernel and row by row.
func BenchmarkLightningStep(b *testing.B) {
	const d = 128
	S, q, k, v, o := make([]float32, d*d), make([]float32, d), make([]float32, d), make([]float32, d), make([]float32, d)
	for i := range q {
		q[i], k[i], v[i] = 0.01, 0.02, 0.03
	}
	b.Run("fused", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			LightningStep(S, q, k, v, o, 0.9)
		}
	})
	b.Run("rows", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			for r := 0; r < d; r++ {
				s := S[r*d : (r+1)*d]
				Scale(0.9, s)
				Axpy(k[r], v, s)
				Axpy(q[r], s, o)
			}
		}
	})
}

// BenchmarkLightningStepMem is BenchmarkLightningStep over the states of
// 16 layers × 16 heads in turn (16 MiB, out of the caches, as in decode).
func BenchmarkLightningStepMem(b *testing.B) {
	const d, heads = 128, 256
	S := make([]float32, heads*d*d)
	for i := range S {
		S[i] = 1e-3 // touched: the pages are real, not the zero page
	}
	q, k, v, o := make([]float32, d), make([]float32, d), make([]float32, d), make([]float32, d)
	for i := range q {
		q[i], k[i], v[i] = 0.01, 0.02, 0.03
	}
	b.Run("fused", func(b *testing.B) {
		b.SetBytes(2 * 4 * d * d) // read and written
		for i := 0; i < b.N; i++ {
			h := i % heads
			LightningStep(S[h*d*d:(h+1)*d*d], q, k, v, o, 0.9)
		}
	})
	b.Run("rows", func(b *testing.B) {
		b.SetBytes(2 * 4 * d * d)
		for i := 0; i < b.N; i++ {
			h := i % heads
			Sh := S[h*d*d : (h+1)*d*d]
			for r := 0; r < d; r++ {
				s := Sh[r*d : (r+1)*d]
				Scale(0.9, s)
				Axpy(k[r], v, s)
				Axpy(q[r], s, o)
			}
		}
	})
}
