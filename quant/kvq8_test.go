package quant

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// kvModes runs f with the SIMD kernels (where there are any) and with the
// pure-Go ones.
func kvModes(t *testing.T, f func(t *testing.T)) {
	defer func() { kvOff = false }()
	t.Run("go", func(t *testing.T) {
		kvOff = true
		f(t)
	})
	kvOff = false
	if !kvSIMD() {
		t.Log("no SIMD kernels on this machine")
		return
	}
	t.Run("avx2", f)
}

// kvRow returns n floats with the kinds of blocks a cache sees: normal
// values, outliers, all-zero and tiny blocks.
func kvRow(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for b := 0; b < n/QK; b++ {
		switch r.IntN(8) {
		case 0:
			clear(x[b*QK : b*QK+QK])
		case 1:
			for i := b * QK; i < b*QK+QK; i++ {
				x[i] *= 1e-3
			}
		case 2:
			x[b*QK+r.IntN(QK)] *= 40
		}
	}
	return x
}

func deqQ8_0(b []byte, nb int) []float32 {
	y := make([]float32, nb*QK)
	for i := 0; i < nb; i++ {
		dequantQ8_0Block(y[i*QK:], b[i*34:])
	}
	return y
}

func deqQ8Act(b []byte, nb int) []float32 {
	y := make([]float32, nb*QK)
	for i := 0; i < nb; i++ {
		d := math.Float32frombits(uint32(b[i*36]) | uint32(b[i*36+1])<<8 | uint32(b[i*36+2])<<16 | uint32(b[i*36+3])<<24)
		for j := 0; j < QK; j++ {
			y[i*QK+j] = d * float32(int8(b[i*36+4+j]))
		}
	}
	return y
}

// TestQuantizeQ8_0Row checks the fast row quantizer against Quantize(Q8_0)
// byte for byte, and the activation quantizer against its block function.
func TestQuantizeQ8_0Row(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	kvModes(t, func(t *testing.T) {
		for _, nb := range []int{1, 4, 7, 8, 9, 16, 33} {
			x := kvRow(r, nb*QK)
			want := make([]byte, nb*34)
			if err := Quantize(Q8_0, want, x); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, nb*34)
			QuantizeQ8_0Row(got, x)
			if !bytes.Equal(got, want) {
				t.Errorf("nb=%d: QuantizeQ8_0Row differs from Quantize(Q8_0)", nb)
			}
			qa := make([]byte, nb*Q8ActBlockBytes)
			QuantizeQ8Act(qa, x)
			wantA := make([]byte, nb*Q8ActBlockBytes)
			for b := 0; b < nb; b++ {
				quantizeQ8aBlock(wantA[b*36:], x[b*QK:b*QK+QK])
			}
			if !bytes.Equal(qa, wantA) {
				t.Errorf("nb=%d: QuantizeQ8Act differs from quantizeQ8aBlock", nb)
			}
		}
	})
}

// TestDequantizeQ8_0Rows checks strided row expansion against Dequantize.
func TestDequantizeQ8_0Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(27, 28))
	const rows, nb, lds, ldd = 5, 3, 3*34 + 7, 3*32 + 5
	src := make([]byte, (rows-1)*lds+nb*34)
	for i := 0; i < rows; i++ {
		QuantizeQ8_0Row(src[i*lds:], kvRow(r, nb*QK))
	}
	dst := make([]float32, (rows-1)*ldd+nb*QK)
	DequantizeQ8_0Rows(dst, ldd, src, lds, rows, nb)
	for i := 0; i < rows; i++ {
		want := make([]float32, nb*QK)
		if err := Dequantize(Q8_0, want, src[i*lds:i*lds+nb*34]); err != nil {
			t.Fatal(err)
		}
		for c, w := range want {
			if dst[i*ldd+c] != w {
				t.Fatalf("row %d col %d: %v, want %v", i, c, dst[i*ldd+c], w)
			}
		}
	}
}

// TestDotQ8_0Rows checks query·key scores of quantized rows against float64
// sums over the dequantized values, for query counts that are and are not
// multiples of four and padded strides.
func TestDotQ8_0Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	kvModes(t, func(t *testing.T) {
		for _, c := range []struct{ m, n, nb, padX, padW, padO int }{
			{1, 1, 1, 0, 0, 0}, {4, 37, 4, 0, 0, 0}, {3, 20, 4, 36, 34 * 3, 5},
			{8, 64, 4, 0, 34 * 12, 0}, {9, 13, 2, 72, 0, 1}, {2, 100, 1, 0, 0, 3}, {5, 7, 8, 0, 17, 0},
		} {
			t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
				rx, rw := c.nb*36, c.nb*34
				ldx, ldw, ldo := rx+c.padX, rw+c.padW, c.n+c.padO
				x := make([]byte, (c.m-1)*ldx+rx)
				for i := 0; i < c.m; i++ {
					QuantizeQ8Act(x[i*ldx:], kvRow(r, c.nb*QK))
				}
				w := make([]byte, (c.n-1)*ldw+rw)
				for j := 0; j < c.n; j++ {
					QuantizeQ8_0Row(w[j*ldw:], kvRow(r, c.nb*QK))
				}
				out := make([]float32, (c.m-1)*ldo+c.n)
				for i := range out {
					out[i] = 12345 // padding must stay untouched
				}
				DotQ8_0Rows(out, ldo, x, ldx, c.m, w, ldw, c.n, c.nb, nil)
				for i := 0; i < c.m; i++ {
					xi := deqQ8Act(x[i*ldx:], c.nb)
					for j := 0; j < c.n; j++ {
						wj := deqQ8_0(w[j*ldw:], c.nb)
						var want, mag float64
						for k := range xi {
							want += float64(xi[k]) * float64(wj[k])
							mag += math.Abs(float64(xi[k]) * float64(wj[k]))
						}
						if got := out[i*ldo+j]; math.Abs(float64(got)-want) > 1e-5*mag+1e-30 {
							t.Fatalf("score[%d][%d] = %v, want %v", i, j, got, want)
						}
					}
					for j := c.n; j < ldo && i < c.m-1; j++ {
						if out[i*ldo+j] != 12345 {
							t.Fatalf("padding of row %d overwritten", i)
						}
					}
				}
			})
		}
	})
}

// TestAccumQ8_0Rows checks the weighted sum of quantized value rows against
// float64 sums over the dequantized values (accumulating into non-zero
// outputs), for row counts that are and are not multiples of four.
func TestAccumQ8_0Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	kvModes(t, func(t *testing.T) {
		for _, c := range []struct{ m, n, nb, padO, padP, padV int }{
			{1, 1, 1, 0, 0, 0}, {4, 37, 4, 0, 0, 0}, {3, 20, 4, 8, 5, 34 * 3},
			{8, 64, 4, 0, 0, 34 * 12}, {9, 13, 2, 1, 2, 0}, {2, 300, 1, 0, 3, 0}, {5, 7, 8, 3, 0, 17},
		} {
			t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
				d, rv := c.nb*QK, c.nb*34
				ldo, ldp, ldv := d+c.padO, c.n+c.padP, rv+c.padV
				v := make([]byte, (c.n-1)*ldv+rv)
				for j := 0; j < c.n; j++ {
					QuantizeQ8_0Row(v[j*ldv:], kvRow(r, d))
				}
				p := make([]float32, (c.m-1)*ldp+c.n)
				for i := range p {
					p[i] = r.Float32()
				}
				o := make([]float32, (c.m-1)*ldo+d)
				for i := range o {
					o[i] = float32(r.NormFloat64())
				}
				o0 := append([]float32(nil), o...)
				AccumQ8_0Rows(o, ldo, p, ldp, c.m, v, ldv, c.n, c.nb)
				for i := 0; i < c.m; i++ {
					for k := 0; k < d; k++ {
						want, mag := float64(o0[i*ldo+k]), math.Abs(float64(o0[i*ldo+k]))
						for j := 0; j < c.n; j++ {
							vj := deqQ8_0(v[j*ldv:], c.nb)
							want += float64(p[i*ldp+j]) * float64(vj[k])
							mag += math.Abs(float64(p[i*ldp+j]) * float64(vj[k]))
						}
						if got := o[i*ldo+k]; math.Abs(float64(got)-want) > 1e-5*mag+1e-30 {
							t.Fatalf("o[%d][%d] = %v, want %v", i, k, got, want)
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
	})
}

// BenchmarkKVQ8 measures the two attention kernels for 4 query rows against
// kvBenchKeys cached rows of 128 elements (one KV head of a decode step);
// ns/key is per cached row.
func BenchmarkKVQ8(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	const m, nb = 4, 4
	n := kvBenchKeys
	x := make([]byte, m*nb*36)
	for i := 0; i < m; i++ {
		QuantizeQ8Act(x[i*nb*36:], kvRow(r, nb*QK))
	}
	kv := make([]byte, n*nb*34)
	for j := 0; j < n; j++ {
		QuantizeQ8_0Row(kv[j*nb*34:], kvRow(r, nb*QK))
	}
	s := make([]float32, m*n)
	o := make([]float32, m*nb*QK)
	b.Run("scores", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			DotQ8_0Rows(s, n, x, nb*36, m, kv, nb*34, n, nb, nil)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
	b.Run("accum", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			AccumQ8_0Rows(o, nb*QK, s, n, m, kv, nb*34, n, nb)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
	})
}

// kvBenchKeys is the number of cached rows of BenchmarkKVQ8 (1024: the
// rows stream from L2; 128 fit in L1).
var kvBenchKeys = 1024
