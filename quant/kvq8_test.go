package quant

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// kvModes runs f with the pure-Go kernels and with each SIMD kernel set
// this machine has: AVX2, and AVX-512 (VNNI) where the CPU supports it.
func kvModes(t *testing.T, f func(t *testing.T)) {
	defer func() { kvOff = false; setKV512(true) }()
	t.Run("go", func(t *testing.T) {
		kvOff = true
		f(t)
	})
	kvOff = false
	if !kvSIMD() {
		t.Log("no SIMD kernels on this machine")
		return
	}
	setKV512(false)
	t.Run("avx2", f)
	if !setKV512(true) {
		t.Log("no AVX-512 VNNI on this machine: AVX2 kernels only")
		return
	}
	t.Run("avx512", f)
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

// kvImpl is one implementation of the Q8_0 KV-cache kernels.
type kvImpl struct {
	name string
	set  func() // selects it
}

// kvImpls lists the implementations this machine can run: the pure-Go
// code, AVX2 and AVX-512 VNNI (logging the ones it lacks).
func kvImpls(t testing.TB) []kvImpl {
	impls := []kvImpl{{"go", func() { kvOff = true }}}
	kvOff = false
	if !kvSIMD() {
		t.Log("no SIMD kernels on this machine: pure-Go code only")
		return impls
	}
	impls = append(impls, kvImpl{"avx2", func() { kvOff = false; setKV512(false) }})
	if !setKV512(true) {
		t.Log("no AVX-512 VNNI on this machine: AVX2 and Go checked only")
		return impls
	}
	return append(impls, kvImpl{"avx512", func() { kvOff = false; setKV512(true) }})
}

// kvScale returns a block scale of one of the kinds a cache or query can
// hold: ordinary, zero, tiny or huge (tiny and huge chosen so that the
// products of query and key scales and sums stay normal and finite).
func kvScale(r *rand.Rand, tiny, huge float32) float32 {
	switch r.IntN(8) {
	case 0:
		return 0
	case 1:
		return tiny * (1 + r.Float32())
	case 2:
		return huge * (0.5 + r.Float32()/2)
	}
	return 0.001 + r.Float32()/8
}

// kvQuants fills q with int8 in −127..127: random, all ±127 (random or one
// sign), or zero.
func kvQuants(r *rand.Rand, q []byte) {
	mode := r.IntN(6)
	for i := range q {
		var v int
		switch mode {
		case 0:
			v = 127 * (1 - 2*r.IntN(2))
		case 1:
			v = 127
		case 2:
			v = -127
		case 3:
			v = 0
		default:
			v = r.IntN(255) - 127
		}
		q[i] = byte(int8(v))
	}
}

// kvRandQ8_0 writes nb random Q8_0 blocks (float16 scales from tiny
// subnormals to 60000) to dst.
func kvRandQ8_0(r *rand.Rand, dst []byte, nb int) {
	for b := 0; b < nb; b++ {
		blk := dst[b*34 : b*34+34]
		putF16(blk, kvScale(r, 6e-8, 6e4))
		kvQuants(r, blk[2:])
	}
}

// kvRandQ8Act writes nb random blocks of the Q8 activation format to dst.
func kvRandQ8Act(r *rand.Rand, dst []byte, nb int) {
	for b := 0; b < nb; b++ {
		blk := dst[b*36 : b*36+36]
		binary.LittleEndian.PutUint32(blk, math.Float32bits(kvScale(r, 1e-20, 1e20)))
		kvQuants(r, blk[4:])
	}
}

// kvClose reports whether got is within 1e-5 of the magnitude mag (the sum
// of absolute products) of want.
func kvClose(got, want, mag float64) bool {
	return math.Abs(got-want) <= 1e-5*mag+1e-37
}

// TestKVQ8Implementations checks every implementation of DotQ8_0Rows and
// AccumQ8_0Rows (pure Go, AVX2, AVX-512) against float64 sums and against
// each other, on blocks with extreme quants and scales, for row lengths of
// 1..8 blocks (head dims 32..256) and 17 (beyond the multi-key kernels, the
// per-key fallback), key counts around the kernels' unrolls (groups of 4
// keys, chunks of 32) and query counts that are and are not multiples of
// four, with padded strides whose padding must stay untouched.
func TestKVQ8Implementations(t *testing.T) {
	defer func() { kvOff = false; setKV512(true) }()
	impls := kvImpls(t)
	r := rand.New(rand.NewPCG(31, 32))
	ms := []int{1, 2, 3, 4, 5, 8}
	var i int
	for _, nb := range []int{1, 2, 3, 4, 5, 6, 7, 8, 17} {
		for _, n := range []int{1, 2, 3, 4, 5, 7, 9, 31, 32, 33, 66} {
			m := ms[i%len(ms)]
			i++
			name := fmt.Sprintf("m=%d/n=%d/nb=%d", m, n, nb)
			d := nb * QK
			// scores
			ldx, ldw, ldo := nb*36+36*(i%2), nb*34+17*(i%3), n+i%3
			x := make([]byte, (m-1)*ldx+nb*36)
			for k := 0; k < m; k++ {
				kvRandQ8Act(r, x[k*ldx:], nb)
			}
			w := make([]byte, (n-1)*ldw+nb*34)
			for j := 0; j < n; j++ {
				kvRandQ8_0(r, w[j*ldw:], nb)
			}
			var next []byte
			if i%2 == 0 {
				next = w
			}
			want, mag := make([]float64, m*n), make([]float64, m*n)
			for k := 0; k < m; k++ {
				xk := deqQ8Act(x[k*ldx:], nb)
				for j := 0; j < n; j++ {
					wj := deqQ8_0(w[j*ldw:], nb)
					for c := range xk {
						want[k*n+j] += float64(xk[c]) * float64(wj[c])
						mag[k*n+j] += math.Abs(float64(xk[c]) * float64(wj[c]))
					}
				}
			}
			scores := make([][]float32, len(impls))
			for ii, im := range impls {
				im.set()
				// padding and the memory after out must stay untouched
				buf := make([]float32, (m-1)*ldo+n+ldo+16)
				for k := range buf {
					buf[k] = 12345
				}
				out := buf[:(m-1)*ldo+n]
				DotQ8_0Rows(out, ldo, x, ldx, m, w, ldw, n, nb, next)
				for _, v := range buf[len(out):] {
					if v != 12345 {
						t.Fatalf("%s: DotQ8_0Rows %s: wrote past the output", name, im.name)
					}
				}
				for k := 0; k < m; k++ {
					for j := 0; j < ldo && k*ldo+j < len(out); j++ {
						got := float64(out[k*ldo+j])
						if j >= n {
							if got != 12345 {
								t.Fatalf("%s: DotQ8_0Rows %s: padding of row %d overwritten", name, im.name, k)
							}
							continue
						}
						if !kvClose(got, want[k*n+j], mag[k*n+j]) {
							t.Fatalf("%s: DotQ8_0Rows %s: score[%d][%d] = %v, want %v", name, im.name, k, j, got, want[k*n+j])
						}
						for jj := 0; jj < ii; jj++ {
							if o := float64(scores[jj][k*ldo+j]); !kvClose(got, o, mag[k*n+j]) {
								t.Fatalf("%s: DotQ8_0Rows: score[%d][%d]: %s %v, %s %v", name, k, j, im.name, got, impls[jj].name, o)
							}
						}
					}
				}
				scores[ii] = out
			}
			// weighted sums of values (the keys' rows as values)
			ldp, ldo2 := n+i%2, d+5*(i%2)
			p := make([]float32, (m-1)*ldp+n)
			for k := range p {
				switch r.IntN(6) {
				case 0:
					p[k] = 0
				case 1:
					p[k] = 1
				case 2:
					p[k] = 1e-30
				default:
					p[k] = r.Float32()
				}
			}
			o0 := make([]float32, (m-1)*ldo2+d)
			for k := range o0 {
				o0[k] = float32(r.NormFloat64())
			}
			want2, mag2 := make([]float64, m*d), make([]float64, m*d)
			for k := 0; k < m; k++ {
				for c := 0; c < d; c++ {
					want2[k*d+c], mag2[k*d+c] = float64(o0[k*ldo2+c]), math.Abs(float64(o0[k*ldo2+c]))
				}
				for j := 0; j < n; j++ {
					vj := deqQ8_0(w[j*ldw:], nb)
					for c, v := range vj {
						pv := float64(p[k*ldp+j]) * float64(v)
						want2[k*d+c] += pv
						mag2[k*d+c] += math.Abs(pv)
					}
				}
			}
			outs := make([][]float32, len(impls))
			for ii, im := range impls {
				im.set()
				buf := append(append([]float32(nil), o0...), make([]float32, ldo2+16)...)
				o := buf[:len(o0)]
				AccumQ8_0Rows(o, ldo2, p, ldp, m, w, ldw, n, nb)
				for _, v := range buf[len(o):] {
					if v != 0 {
						t.Fatalf("%s: AccumQ8_0Rows %s: wrote past the output", name, im.name)
					}
				}
				for k := 0; k < m; k++ {
					for c := 0; c < ldo2 && k*ldo2+c < len(o); c++ {
						got := float64(o[k*ldo2+c])
						if c >= d {
							if o[k*ldo2+c] != o0[k*ldo2+c] {
								t.Fatalf("%s: AccumQ8_0Rows %s: padding of row %d changed", name, im.name, k)
							}
							continue
						}
						if !kvClose(got, want2[k*d+c], mag2[k*d+c]) {
							t.Fatalf("%s: AccumQ8_0Rows %s: o[%d][%d] = %v, want %v", name, im.name, k, c, got, want2[k*d+c])
						}
						for jj := 0; jj < ii; jj++ {
							if v := float64(outs[jj][k*ldo2+c]); !kvClose(got, v, mag2[k*d+c]) {
								t.Fatalf("%s: AccumQ8_0Rows: o[%d][%d]: %s %v, %s %v", name, k, c, im.name, got, impls[jj].name, v)
							}
						}
					}
				}
				outs[ii] = o
			}
		}
	}
}

// BenchmarkKVQ8 measures the two attention kernels for 4 query rows against
// kvBenchKeys cached rows of 128 elements (one KV head of a decode step);
// ns/key is per cached row. Each SIMD kernel set of the machine (avx2,
// avx512; the Go code where there is none) is a sub-benchmark.
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
	defer func() { kvOff = false; setKV512(true) }()
	impls := kvImpls(b)
	if len(impls) > 1 {
		impls = impls[1:] // the SIMD kernels only
	}
	for _, im := range impls {
		im.set()
		b.Run(im.name+"/scores", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				DotQ8_0Rows(s, n, x, nb*36, m, kv, nb*34, n, nb, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
		b.Run(im.name+"/accum", func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				AccumQ8_0Rows(o, nb*QK, s, n, m, kv, nb*34, n, nb)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
	}
}

// BenchmarkKVQ8Decode runs the two kernels as one worker of a decode step
// does (backend/cpu/attention.go): a cache of L rows holding 4 KV heads of
// 128 values (K and V), visited in blocks of 128 keys, each block per KV
// head scored (prefetching the values) and then accumulated; ns/key is per
// key and KV head. Without the softmax, so it isolates kernels and memory.
func BenchmarkKVQ8Decode(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const m, nb, heads, blk = 4, 4, 4, 128
	rs := heads * nb * 34 // bytes of a cache row
	defer func() { kvOff = false; setKV512(true) }()
	impls := kvImpls(b)
	if len(impls) > 1 {
		impls = impls[1:]
	}
	for _, L := range []int{1024, 32768} {
		K, V := make([]byte, L*rs), make([]byte, L*rs)
		for j := 0; j < L; j++ {
			kvRandQ8_0(r, K[j*rs:], heads*nb)
			kvRandQ8_0(r, V[j*rs:], heads*nb)
		}
		x := make([]byte, heads*m*nb*36)
		for i := 0; i < heads*m; i++ {
			QuantizeQ8Act(x[i*nb*36:], kvRow(r, nb*QK))
		}
		s := make([]float32, m*blk)
		for i := range s {
			s[i] = r.Float32()
		}
		o := make([]float32, heads*m*nb*QK)
		for _, im := range impls {
			im.set()
			b.Run(fmt.Sprintf("%s/L=%d", im.name, L), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for j0 := 0; j0 < L; j0 += blk {
						for g := 0; g < heads; g++ {
							kb, vb := K[j0*rs+g*nb*34:], V[j0*rs+g*nb*34:]
							DotQ8_0Rows(s, blk, x[g*m*nb*36:], nb*36, m, kb, rs, blk, nb, vb)
							AccumQ8_0Rows(o[g*m*nb*QK:], nb*QK, s, blk, m, vb, rs, blk, nb)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*L*heads), "ns/key")
			})
		}
	}
}

// kvBenchKeys is the number of cached rows of BenchmarkKVQ8 (1024: the
// rows stream from L2; 128 fit in L1).
var kvBenchKeys = 1024
