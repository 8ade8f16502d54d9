package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/backend"
)

func randTensor(b *Backend, r *rand.Rand, rows, cols int, scale float32) backend.Tensor {
	t := b.Alloc(rows, cols)
	d := data(t)
	for i := range d {
		d[i] = (r.Float32()*2 - 1) * scale
	}
	return t
}

func maxRelErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	return num / den
}

// naiveLightning is the recurrence in float64, the oracle for both CPU paths.
func naiveLightning(q, k, v, S0 []float32, T, H, d int, decay []float32, scale float32) (out, S []float32) {
	out = make([]float32, T*H*d)
	S = make([]float32, len(S0))
	for h := 0; h < H; h++ {
		lam := math.Exp(-float64(decay[h]))
		st := make([]float64, d*d)
		for i := range st {
			st[i] = float64(S0[h*d*d+i])
		}
		for t := 0; t < T; t++ {
			for i := 0; i < d; i++ {
				ki := float64(k[t*H*d+h*d+i])
				for j := 0; j < d; j++ {
					st[i*d+j] = lam*st[i*d+j] + ki*float64(v[t*H*d+h*d+j])
				}
			}
			for j := 0; j < d; j++ {
				var o float64
				for i := 0; i < d; i++ {
					o += float64(q[t*H*d+h*d+i]) * st[i*d+j]
				}
				out[t*H*d+h*d+j] = float32(o * float64(scale))
			}
		}
		for i := range st {
			S[h*d*d+i] = float32(st[i])
		}
	}
	return out, S
}

// TestLightningChunkedEqualsRecurrent runs the same tokens through the
// recurrent path, the chunked path and a mix of span lengths (prompt lengths
// that are not multiples of the chunk, prefill continuing from a non-zero
// state) and compares outputs and final states with a float64 recurrence.
func TestLightningChunkedEqualsRecurrent(t *testing.T) {
	b := New(2)
	r := rand.New(rand.NewPCG(1, 2))
	const H, d = 3, 16
	decay := []float32{0.9, 0.05, 0.003}
	for _, T := range []int{1, 15, 16, 63, 64, 65, 150, 300} {
		for _, splits := range [][]int{{T}, {1, T - 1}, {T / 2, T - T/2}, {7, 60, T - 67}} {
			ok := true
			for _, s := range splits {
				if s < 0 {
					ok = false
				}
			}
			if !ok {
				continue
			}
			q := randTensor(b, r, T, H*d, 1)
			k := randTensor(b, r, T, H*d, 1)
			v := randTensor(b, r, T, H*d, 1)
			S0 := randTensor(b, r, H*d, d, 0.5) // non-zero incoming state
			wantO, wantS := naiveLightning(data(q), data(k), data(v), data(S0), T, H, d, decay, 0.25)
			S := b.Alloc(H*d, d)
			b.Copy(S, S0)
			out := b.Alloc(T, H*d)
			row := 0
			for _, n := range splits {
				if n == 0 {
					continue
				}
				sp := []backend.Span{{Row: row, N: n, Pos: row}}
				b.Lightning(out, q, k, v, sp, []backend.Tensor{S}, decay, 0.25)
				row += n
			}
			if e := maxRelErr(data(out), wantO); e > 1e-5 {
				t.Errorf("T=%d splits %v: output error %.3g", T, splits, e)
			}
			if e := maxRelErr(data(S), wantS); e > 1e-5 {
				t.Errorf("T=%d splits %v: state error %.3g", T, splits, e)
			}
		}
	}
}

// TestLightningBatchedSpans checks that several sequences in one call equal
// separate calls.
func TestLightningBatchedSpans(t *testing.T) {
	b := New(2)
	r := rand.New(rand.NewPCG(3, 4))
	const H, d = 2, 8
	decay := []float32{0.5, 0.01}
	lens := []int{1, 40, 3, 100}
	T := 0
	for _, n := range lens {
		T += n
	}
	q, k, v := randTensor(b, r, T, H*d, 1), randTensor(b, r, T, H*d, 1), randTensor(b, r, T, H*d, 1)
	var spans []backend.Span
	var states, ref []backend.Tensor
	row := 0
	for _, n := range lens {
		spans = append(spans, backend.Span{Row: row, N: n, Pos: 5})
		s := randTensor(b, r, H*d, d, 1)
		c := b.Alloc(H*d, d)
		b.Copy(c, s)
		states, ref = append(states, s), append(ref, c)
		row += n
	}
	out := b.Alloc(T, H*d)
	b.Lightning(out, q, k, v, spans, states, decay, 1)
	for i, sp := range spans {
		o := b.Alloc(sp.N, H*d)
		b.Lightning(o, q.RowRange(sp.Row, sp.N), k.RowRange(sp.Row, sp.N), v.RowRange(sp.Row, sp.N), []backend.Span{{N: sp.N}}, []backend.Tensor{ref[i]}, decay, 1)
		if e := maxRelErr(data(out.RowRange(sp.Row, sp.N)), data(o)); e != 0 {
			t.Errorf("span %d: batched differs from alone by %.3g", i, e)
		}
		if e := maxRelErr(data(states[i]), data(ref[i])); e != 0 {
			t.Errorf("span %d: state differs by %.3g", i, e)
		}
	}
}

// naiveAttention is causal GQA softmax attention in float64 over full K, V.
func naiveAttention(q, k, v []float32, T, H, Hkv, d int, scale float64) []float32 {
	out := make([]float32, T*H*d)
	for h := 0; h < H; h++ {
		g := h / (H / Hkv)
		for t := 0; t < T; t++ {
			s := make([]float64, t+1)
			mx := math.Inf(-1)
			for j := 0; j <= t; j++ {
				var dot float64
				for i := 0; i < d; i++ {
					dot += float64(q[t*H*d+h*d+i]) * float64(k[j*Hkv*d+g*d+i])
				}
				s[j] = dot * scale
				mx = math.Max(mx, s[j])
			}
			var sum float64
			for j := range s {
				s[j] = math.Exp(s[j] - mx)
				sum += s[j]
			}
			for i := 0; i < d; i++ {
				var o float64
				for j := range s {
					o += s[j] / sum * float64(v[j*Hkv*d+g*d+i])
				}
				out[t*H*d+h*d+i] = float32(o)
			}
		}
	}
	return out
}

func TestAttentionIncremental(t *testing.T) {
	b := New(2)
	r := rand.New(rand.NewPCG(5, 6))
	const H, Hkv, d, T = 4, 2, 8, 70
	q, k, v := randTensor(b, r, T, H*d, 1), randTensor(b, r, T, Hkv*d, 1), randTensor(b, r, T, Hkv*d, 1)
	want := naiveAttention(data(q), data(k), data(v), T, H, Hkv, d, 0.3)
	for _, splits := range [][]int{{T}, {33, 37}, {1, 1, 1, 67}} {
		kv := backend.KV{K: b.Alloc(T, Hkv*d), V: b.Alloc(T, Hkv*d)}
		out := b.Alloc(T, H*d)
		row := 0
		for _, n := range splits {
			sp := backend.Span{Row: 0, N: n, Pos: row}
			b.Attention(out.RowRange(row, n), q.RowRange(row, n), k.RowRange(row, n), v.RowRange(row, n), []backend.Span{sp}, []backend.KV{kv}, d, 0.3)
			row += n
		}
		if e := maxRelErr(data(out), want); e > 1e-5 {
			t.Errorf("splits %v: error %.3g", splits, e)
		}
	}
}

// TestAttentionF16Cache runs the same incremental attention with a
// half-precision KV cache (longer than one expansion chunk) and checks it
// against the float64 reference with a half-precision tolerance.
func TestAttentionF16Cache(t *testing.T) {
	b := New(2)
	b.kv = kvF16
	r := rand.New(rand.NewPCG(7, 8))
	const H, Hkv, d, T = 4, 2, 8, 300
	q, k, v := randTensor(b, r, T, H*d, 1), randTensor(b, r, T, Hkv*d, 1), randTensor(b, r, T, Hkv*d, 1)
	want := naiveAttention(data(q), data(k), data(v), T, H, Hkv, d, 0.3)
	for _, splits := range [][]int{{T}, {260, 40}, {1, 1, 298}} {
		kv := b.AllocKV(T, Hkv*d)
		if !isF16(kv.K) {
			t.Fatal("AllocKV did not give a half-precision tensor")
		}
		out := b.Alloc(T, H*d)
		row := 0
		for _, n := range splits {
			sp := backend.Span{Row: 0, N: n, Pos: row}
			b.Attention(out.RowRange(row, n), q.RowRange(row, n), k.RowRange(row, n), v.RowRange(row, n), []backend.Span{sp}, []backend.KV{kv}, d, 0.3)
			row += n
		}
		if e := maxRelErr(data(out), want); e > 2e-3 {
			t.Errorf("splits %v: error %.3g", splits, e)
		}
		// copy, read back and write round trips
		c := b.AllocKV(T, Hkv*d).K
		b.Copy(c, kv.K)
		got := make([]float32, T*Hkv*d)
		b.Read(c, got)
		if e := maxRelErr(got, data(k)); e > 1e-3 {
			t.Errorf("f16 cache holds keys with error %.3g", e)
		}
	}
}
