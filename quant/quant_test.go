package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func gaussian(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func TestTypeTable(t *testing.T) {
	cases := []struct {
		t          Type
		id, bs, ts int
	}{
		{F32, 0, 1, 4}, {F16, 1, 1, 2}, {Q4_0, 2, 32, 18}, {Q8_0, 8, 32, 34},
		{Q4_K, 12, 256, 144}, {Q6_K, 14, 256, 210}, {Q8_K, 15, 256, 292}, {BF16, 30, 1, 2},
	}
	for _, c := range cases {
		if int(c.t) != c.id || BlockSize(c.t) != c.bs || TypeSize(c.t) != c.ts {
			t.Errorf("%v: id %d bs %d ts %d", c.t, c.t, BlockSize(c.t), TypeSize(c.t))
		}
		p, err := ParseType(c.t.String())
		if err != nil || p != c.t {
			t.Errorf("ParseType(%q) = %v, %v", c.t.String(), p, err)
		}
	}
	if p, err := ParseType("q4_k"); err != nil || p != Q4_K {
		t.Errorf("ParseType(q4_k) = %v %v", p, err)
	}
	if _, err := ParseType("Q9_Z"); err == nil {
		t.Error("ParseType accepted Q9_Z")
	}
	if RowBytes(Q4_K, 2048) != 8*144 {
		t.Error("RowBytes")
	}
	if Type(99).String() != "Type(99)" {
		t.Error(Type(99).String())
	}
}

func TestHalfConversions(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := F16ToF32(h)
		if f != f { // NaN
			if g := F32ToF16(f); F16ToF32(g) == F16ToF32(g) {
				t.Fatalf("NaN %04x -> %04x not NaN", h, g)
			}
			continue
		}
		if g := F32ToF16(f); g != h {
			t.Fatalf("f16 round trip %04x -> %v -> %04x", h, f, g)
		}
		// bf16 round trip
		if g := F32ToBF16(BF16ToF32(h)); g != h && BF16ToF32(h) == BF16ToF32(h) {
			t.Fatalf("bf16 round trip %04x -> %04x", h, g)
		}
	}
	// rounding: compare with the nearest representable by brute force on random values
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		f := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-26)))
		h := F32ToF16(f)
		got := F16ToF32(h)
		// neighbours must not be closer
		for _, nb := range []uint16{h - 1, h + 1} {
			v := F16ToF32(nb)
			if v != v || math.IsInf(float64(v), 0) {
				continue
			}
			if math.Abs(float64(v-f)) < math.Abs(float64(got-f)) {
				t.Fatalf("F32ToF16(%g) = %g, but %g is closer", f, got, v)
			}
		}
	}
	if F32ToF16(1e6) != 0x7c00 || F32ToF16(-1e6) != 0xfc00 {
		t.Error("overflow must give inf")
	}
	if F32ToF16(65504) != 0x7bff || F16ToF32(0x3c00) != 1 || F16ToF32(1) != 5.9604645e-08 {
		t.Error("f16 known values")
	}
	if F32ToBF16(1.00390625) != 0x3f80 || F32ToBF16(1.01171875) != 0x3f82 { // ties to even
		t.Errorf("bf16 rounding: %04x %04x", F32ToBF16(1.00390625), F32ToBF16(1.01171875))
	}
}

// Measured relative RMSE on N(0,1) data (see TestQuantizeError log):
// F16 0.0002, BF16 0.0017, Q8_0 0.0054, Q8_K 0.0070, Q6_K 0.0178,
// Q4_K 0.0714, Q4_0 0.0860. These are what the formats can reach on Gaussian
// data (e.g. Q4_K: 15 levels over ~4σ per 32 values gives ≈ 0.077σ for plain
// rounding; the scale/min search gets it to ≈ 0.071σ), so the bounds are set
// a little above the measurements.
var rmseBound = map[Type]float64{
	F32: 0, F16: 0.0005, BF16: 0.004, Q8_0: 0.006, Q8_K: 0.0075, Q6_K: 0.019, Q4_K: 0.075, Q4_0: 0.09,
}

var allTypes = []Type{F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K, Q8_K}

func TestQuantizeError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := gaussian(r, 256*256)
	for _, ty := range allTypes {
		buf := make([]byte, RowBytes(ty, len(x)))
		if err := Quantize(ty, buf, x); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, len(x))
		if err := Dequantize(ty, y, buf); err != nil {
			t.Fatal(err)
		}
		var se, ss float64
		for i := range x {
			d := float64(x[i] - y[i])
			se += d * d
			ss += float64(x[i]) * float64(x[i])
		}
		rel := math.Sqrt(se / ss)
		t.Logf("%-5v relative RMSE %.5f (%.2f bits/weight)", ty, rel, float64(8*TypeSize(ty))/float64(BlockSize(ty)))
		if rel > rmseBound[ty] {
			t.Errorf("%v: relative RMSE %.5f > bound %.5f", ty, rel, rmseBound[ty])
		}
		// quantizing the dequantized values again must be (nearly) stable
		buf2 := make([]byte, len(buf))
		if err := Quantize(ty, buf2, y); err != nil {
			t.Fatal(err)
		}
	}
}

func TestQuantizeSpecial(t *testing.T) {
	for _, ty := range allTypes {
		bs := BlockSize(ty)
		n := 256
		zeros := make([]float32, n)
		buf := make([]byte, RowBytes(ty, n))
		if err := Quantize(ty, buf, zeros); err != nil {
			t.Fatal(err)
		}
		y := make([]float32, n)
		if err := Dequantize(ty, y, buf); err != nil {
			t.Fatal(err)
		}
		for i, v := range y {
			if v != 0 {
				t.Fatalf("%v: zeros decode to %v at %d", ty, v, i)
			}
		}
		// constant and single-spike blocks
		for _, pat := range []func(i int) float32{
			func(i int) float32 { return 0.5 },
			func(i int) float32 { return -3 },
			func(i int) float32 {
				if i%bs == 7 {
					return 100
				}
				return 0
			},
		} {
			x := make([]float32, n)
			for i := range x {
				x[i] = pat(i)
			}
			if err := Quantize(ty, buf, x); err != nil {
				t.Fatal(err)
			}
			if err := Dequantize(ty, y, buf); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if math.Abs(float64(x[i]-y[i])) > 0.02*math.Abs(float64(x[i]))+1e-6 && ty != Q4_K && ty != Q4_0 {
					t.Fatalf("%v: x[%d]=%v decodes to %v", ty, i, x[i], y[i])
				}
				if math.Abs(float64(x[i]-y[i])) > 0.1*math.Abs(float64(x[i]))+0.05 {
					t.Fatalf("%v: x[%d]=%v decodes to %v", ty, i, x[i], y[i])
				}
			}
		}
		if bs > 1 {
			if err := Quantize(ty, buf, make([]float32, bs+1)); err == nil {
				t.Errorf("%v: ragged length accepted", ty)
			}
		}
		if err := Quantize(ty, buf[:len(buf)-1], zeros); err == nil {
			t.Errorf("%v: short dst accepted", ty)
		}
		if err := Dequantize(ty, y, buf[:len(buf)-1]); err == nil {
			t.Errorf("%v: short src accepted", ty)
		}
	}
	if err := Quantize(Q5_K, nil, nil); err == nil {
		t.Error("unsupported type accepted")
	}
}

// Hand-built blocks pin the bit layout to ggml's.
func TestBlockLayouts(t *testing.T) {
	// Q4_0: d=1 (f16 0x3c00), qs[j] = lo j%16, hi 15-j%16.
	b := make([]byte, 18)
	b[0], b[1] = 0x00, 0x3c
	for j := 0; j < 16; j++ {
		b[2+j] = byte(j) | byte(15-j)<<4
	}
	y := make([]float32, 32)
	Dequantize(Q4_0, y, b)
	for j := 0; j < 16; j++ {
		if y[j] != float32(j-8) || y[16+j] != float32(7-j) {
			t.Fatalf("Q4_0 layout: %v", y)
		}
	}
	// Q4_K: d=1, dmin=1; sub-block s has scale s+1 and min 2*s (6-bit packing).
	kb := make([]byte, 144)
	kb[1], kb[3] = 0x3c, 0x3c
	var sc, mn [8]int
	for s := 0; s < 8; s++ {
		sc[s], mn[s] = s+1+(s/4)*40, 2*s+(s%2)*20 // exercise the high bits
	}
	for j := 0; j < 8; j++ {
		if j < 4 {
			kb[4+j] = byte(sc[j])
			kb[4+j+4] = byte(mn[j])
		} else {
			kb[4+j+4] = byte(sc[j]&0xf) | byte(mn[j]&0xf)<<4
			kb[4+j-4] |= byte(sc[j]>>4) << 6
			kb[4+j] |= byte(mn[j]>>4) << 6
		}
	}
	for i := 0; i < 128; i++ {
		kb[16+i] = byte(i%16) | byte((i+3)%16)<<4
	}
	y = make([]float32, 256)
	Dequantize(Q4_K, y, kb)
	for j := 0; j < 4; j++ {
		for l := 0; l < 32; l++ {
			i := 32*j + l
			lo, hi := i%16, (i+3)%16
			if y[64*j+l] != float32(sc[2*j]*lo-mn[2*j]) || y[64*j+32+l] != float32(sc[2*j+1]*hi-mn[2*j+1]) {
				t.Fatalf("Q4_K layout at j=%d l=%d: %v %v", j, l, y[64*j+l], y[64*j+32+l])
			}
		}
	}
}

// ---- kernels

// refDot computes Σ x*W[n] in float64 from dequantized weights.
func refMatMul(ty Type, x []float32, w []byte, T, N, K int) []float64 {
	rb := RowBytes(ty, K)
	wr := make([]float32, K)
	out := make([]float64, T*N)
	for n := 0; n < N; n++ {
		if err := Dequantize(ty, wr, w[n*rb:(n+1)*rb]); err != nil {
			panic(err)
		}
		for t := 0; t < T; t++ {
			var s float64
			for k := 0; k < K; k++ {
				s += float64(x[t*K+k]) * float64(wr[k])
			}
			out[t*N+n] = s
		}
	}
	return out
}

// dequantActs returns the activations as the kernels see them after quantization.
func dequantActs(ty Type, x []float32, T, K int) []float32 {
	qa := QuantizeActivations(ty, x, K, T, K)
	y := make([]float32, T*K)
	switch qa.Kind {
	case F32:
		copy(y, x)
	case Q8_0:
		for i := 0; i < T*K/32; i++ {
			b := qa.data[i*36:]
			d := math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
			for j := 0; j < 32; j++ {
				y[i*32+j] = d * float32(int8(b[4+j]))
			}
		}
	case Q8_K:
		Dequantize(Q8_K, y, qa.data)
	}
	return y
}

var matmulTypes = []Type{F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K}

func testKernels(t *testing.T, ks kernelSet) {
	r := rand.New(rand.NewPCG(5, 6))
	saved := kernels
	kernels = ks
	defer func() { kernels = saved }()
	for _, ty := range matmulTypes {
		kb := max(BlockSize(ty), BlockSize(ActType(ty))) // one block
		for _, K := range []int{kb, 2 * kb, 3 * kb, 7 * kb, 256, 768} {
			if K%kb != 0 {
				continue
			}
			for _, T := range []int{1, 2, 5} {
				for _, N := range []int{1, 3, 17} {
					x := gaussian(r, T*K)
					wf := gaussian(r, N*K)
					w := make([]byte, N*RowBytes(ty, K))
					if err := Quantize(ty, w, wf); err != nil {
						t.Fatal(err)
					}
					// strided output: ldo > N, pre-filled sentinel
					ldo := N + 2
					out := make([]float32, T*ldo)
					for i := range out {
						out[i] = 12345
					}
					// strided input
					ldx := K + 3
					xs := make([]float32, (T-1)*ldx+K)
					for tt := 0; tt < T; tt++ {
						copy(xs[tt*ldx:], x[tt*K:(tt+1)*K])
					}
					MatMul(ty, out, ldo, xs, ldx, w, T, N, K)
					xq := dequantActs(ty, x, T, K)
					ref := refMatMul(ty, xq, w, T, N, K)
					exact := refMatMul(ty, x, w, T, N, K)
					for tt := 0; tt < T; tt++ {
						for n := 0; n < ldo; n++ {
							got := out[tt*ldo+n]
							if n >= N {
								if got != 12345 {
									t.Fatalf("%v: wrote outside N", ty)
								}
								continue
							}
							want := ref[tt*N+n]
							tol := 2e-5*math.Sqrt(float64(K))*2 + 1e-4*math.Abs(want)
							if math.Abs(float64(got)-want) > tol {
								t.Fatalf("%s %v K=%d T=%d N=%d [%d,%d]: got %v want %v (tol %g)", ks.name, ty, K, T, N, tt, n, got, want, tol)
							}
							// against exact activations: activation quantization error only
							e := exact[tt*N+n]
							if math.Abs(float64(got)-e) > 0.05*math.Sqrt(float64(K))+1e-3 {
								t.Fatalf("%s %v K=%d: got %v, exact %v", ks.name, ty, K, got, e)
							}
						}
					}
				}
			}
		}
	}
}

func TestMatMulGeneric(t *testing.T) { testKernels(t, genericKernels) }

func TestMatMulActive(t *testing.T) {
	t.Logf("active kernels: %s", KernelName())
	testKernels(t, kernels)
}

// TestKernelsAgree checks the active (SIMD) kernels against the pure-Go ones
// on identical quantized inputs, including extreme values.
func TestKernelsAgree(t *testing.T) {
	if kernels.name == genericKernels.name {
		t.Skip("no SIMD kernels on this machine")
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, ty := range matmulTypes {
		for _, K := range []int{256, 512, 2048, 4096 + 256} {
			for trial := 0; trial < 20; trial++ {
				x := gaussian(r, K)
				wf := gaussian(r, K)
				if trial%5 == 1 {
					for i := range wf {
						wf[i] *= 1000 * float32(r.Float64())
					}
				}
				if trial%5 == 2 {
					for i := range x {
						if r.IntN(4) == 0 {
							x[i] = 0
						}
					}
				}
				w := make([]byte, RowBytes(ty, K))
				Quantize(ty, w, wf)
				qa := QuantizeActivations(ty, x, K, 1, K)
				var a, b float32
				switch ty {
				case F32:
					a, b = genericKernels.f32(w, x), kernels.f32(w, x)
				case F16:
					a, b = genericKernels.f16(w, x), kernels.f16(w, x)
				case BF16:
					a, b = genericKernels.bf16(w, x), kernels.bf16(w, x)
				case Q4_0:
					a, b = genericKernels.q4_0(w, qa.data), kernels.q4_0(w, qa.data)
				case Q8_0:
					a, b = genericKernels.q8_0(w, qa.data), kernels.q8_0(w, qa.data)
				case Q4_K:
					a, b = genericKernels.q4k(w, qa.data), kernels.q4k(w, qa.data)
				case Q6_K:
					a, b = genericKernels.q6k(w, qa.data), kernels.q6k(w, qa.data)
				}
				scale := 0.0
				for i := range x {
					scale += math.Abs(float64(x[i] * wf[i]))
				}
				if math.Abs(float64(a-b)) > 1e-5*scale+1e-6 {
					t.Fatalf("%v K=%d trial %d: generic %v simd %v", ty, K, trial, a, b)
				}
			}
		}
	}
}

// Odd lengths for float kernels (tails not multiple of 8).
func TestFloatTails(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, ty := range []Type{F32, F16, BF16} {
		for K := 1; K < 70; K++ {
			x := gaussian(r, K)
			w := make([]byte, RowBytes(ty, K))
			Quantize(ty, w, gaussian(r, K))
			out := make([]float32, 1)
			MatMul(ty, out, 1, x, K, w, 1, 1, K)
			ref := refMatMul(ty, x, w, 1, 1, K)
			if math.Abs(float64(out[0])-ref[0]) > 1e-4*float64(K) {
				t.Fatalf("%v K=%d: %v vs %v", ty, K, out[0], ref[0])
			}
		}
	}
}

func TestMatMulPanics(t *testing.T) {
	mustPanic := func(name string, f func()) {
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	w := make([]byte, RowBytes(Q4_K, 256)*2)
	x := make([]float32, 256)
	out := make([]float32, 2)
	mustPanic("short w", func() { MatMul(Q4_K, out, 2, x, 256, w, 1, 3, 256) })
	mustPanic("short out", func() { MatMul(Q4_K, out[:1], 2, x, 256, w, 1, 2, 256) })
	mustPanic("short x", func() { MatMul(Q4_K, out, 2, x[:255], 256, w, 1, 2, 256) })
	mustPanic("ragged K", func() { MatMul(Q4_K, out, 2, x, 256, w, 1, 2, 128) })
	mustPanic("Q8_K weight", func() { MatMul(Q8_K, out, 2, x, 256, make([]byte, 600), 1, 2, 256) })
	qa := QuantizeActivations(Q4_0, x, 256, 1, 256)
	mustPanic("act mismatch", func() { MatMulQ(Q4_K, out, 2, qa, w, 2, 256) })
}

// ---- benchmarks: 2048x2048 weight, T=1; SetBytes = weight bytes read.

func benchMatMul(b *testing.B, ty Type, ks kernelSet, T int) {
	const N, K = 2048, 2048
	r := rand.New(rand.NewPCG(11, 12))
	w := make([]byte, N*RowBytes(ty, K))
	if err := Quantize(ty, w, gaussian(r, N*K)); err != nil {
		b.Fatal(err)
	}
	x := gaussian(r, T*K)
	out := make([]float32, T*N)
	saved := kernels
	kernels = ks
	defer func() { kernels = saved }()
	b.SetBytes(int64(len(w)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		MatMul(ty, out, N, x, K, w, T, N, K)
	}
}

func BenchmarkMatMul(b *testing.B) {
	for _, ty := range matmulTypes {
		b.Run(fmt.Sprintf("%v/%s", ty, kernels.name), func(b *testing.B) { benchMatMul(b, ty, kernels, 1) })
	}
}

func BenchmarkMatMulGeneric(b *testing.B) {
	for _, ty := range matmulTypes {
		b.Run(ty.String(), func(b *testing.B) { benchMatMul(b, ty, genericKernels, 1) })
	}
}

func BenchmarkMatMulT8(b *testing.B) {
	for _, ty := range matmulTypes {
		b.Run(ty.String(), func(b *testing.B) { benchMatMul(b, ty, kernels, 8) })
	}
}

func BenchmarkQuantize(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x := gaussian(r, 1<<16)
	for _, ty := range []Type{Q4_0, Q8_0, Q4_K, Q6_K} {
		buf := make([]byte, RowBytes(ty, len(x)))
		b.Run(ty.String(), func(b *testing.B) {
			b.SetBytes(int64(4 * len(x)))
			for i := 0; i < b.N; i++ {
				Quantize(ty, buf, x)
			}
		})
	}
}

// BenchmarkMatMulStream cycles over enough 2048x2048 weight copies (≥ 512 MiB)
// that they cannot stay in cache: the GB/s figure is then comparable with
// DRAM bandwidth.
func BenchmarkMatMulStream(b *testing.B) {
	const N, K = 2048, 2048
	for _, ty := range []Type{BF16, Q8_0, Q6_K, Q4_K, Q4_0} {
		b.Run(ty.String(), func(b *testing.B) {
			r := rand.New(rand.NewPCG(13, 14))
			one := make([]byte, N*RowBytes(ty, K))
			Quantize(ty, one, gaussian(r, N*K))
			copies := (512<<20)/len(one) + 1
			big := make([]byte, copies*len(one))
			for c := 0; c < copies; c++ {
				copy(big[c*len(one):], one)
			}
			x := gaussian(r, K)
			out := make([]float32, N)
			b.SetBytes(int64(len(one)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := i % copies
				MatMul(ty, out, N, x, K, big[c*len(one):(c+1)*len(one)], 1, N, K)
			}
		})
	}
}
