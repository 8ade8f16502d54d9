package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
)

// attnRef computes causal GQA softmax attention in float64 for one query
// row (already scaled) of query head h at position pos, over the cache
// contents kc, vc (positions × Hkv·d, as stored: read back from the cache).
func attnRef(qs []float64, kc, vc []float32, pos, h, G, Hkv, d int) []float64 {
	g := h / G
	s := make([]float64, pos+1)
	mx := math.Inf(-1)
	for j := range s {
		var dot float64
		for i := 0; i < d; i++ {
			dot += qs[i] * float64(kc[j*Hkv*d+g*d+i])
		}
		s[j] = dot
		mx = math.Max(mx, dot)
	}
	var sum float64
	for j := range s {
		s[j] = math.Exp(s[j] - mx)
		sum += s[j]
	}
	out := make([]float64, d)
	for j := range s {
		for i := 0; i < d; i++ {
			out[i] += s[j] / sum * float64(vc[j*Hkv*d+g*d+i])
		}
	}
	return out
}

// TestAttentionPaths runs batches of sequences through Attention with
// every KV cache type, several head shapes (GQA ratios 1, 3, 4, 8; head
// dims that are and are not whole Q8_0 blocks) and 1–3 workers, with a
// schedule that exercises every path: prefills of ragged lengths (query
// blocks, key blocks and causal limits that do not line up), batched and
// batch-1 decode at positions past a thousand (keys split over workers
// and combined), and short chunks.
//
// Each output row is checked against a float64 reference over the cache
// contents as stored (read back), with the query as the kernels see it
// (quantized to Q8 where the integer path is used), so the only
// differences left are float32 rounding and the polynomial exponential:
// any indexing, masking, blocking or combining error shows. Separately,
// the reduced-precision caches are compared with the exact float32
// reference to bound their rounding error.
func TestAttentionPaths(t *testing.T) {
	type shape struct{ H, Hkv, d int }
	shapes := []shape{{8, 2, 32}, {16, 2, 64}, {6, 2, 16}, {4, 4, 32}, {4, 1, 128}}
	schedule := []attnStep{{45, 1}, {300, 0}, {1, 200}, {1, 1}, {1, 0}, {3, 0}, {0, 1}}
	defer func(n int) { attnMinSplit = n }(attnMinSplit)
	attnMinSplit = 64 // split these short sequences as long ones are
	for _, kvt := range kvTestTypes() {
		for _, sh := range shapes {
			for _, workers := range []int{1, 2, 3} {
				name := fmt.Sprintf("%s/H=%d,Hkv=%d,d=%d/workers=%d", kvt, sh.H, sh.Hkv, sh.d, workers)
				t.Run(name, func(t *testing.T) {
					testAttentionSchedule(t, kvt, sh.H, sh.Hkv, sh.d, workers, schedule)
				})
			}
		}
	}
}

// attnStep is one Attention call: the rows of sequences A and B.
type attnStep struct{ nA, nB int }

func testAttentionSchedule(t *testing.T, kvt string, H, Hkv, d, workers int, schedule []attnStep) {
	b := New(workers)
	var err error
	if err = setKVTest(b, kvt); err != nil {
		t.Fatal(err)
	}
	exact := New(1) // float32 caches, for the rounding bound
	r := rand.New(rand.NewPCG(uint64(H*1000+d), uint64(workers)))
	G := H / Hkv
	const scale = 0.3
	total := [2]int{}
	for _, st := range schedule {
		total[0] += st.nA
		total[1] += st.nB
	}
	caches, exactC := make([]backend.KV, 2), make([]backend.KV, 2)
	for s := range caches {
		caches[s] = b.AllocKV(total[s], Hkv*d)
		exactC[s] = exact.AllocKV(total[s], Hkv*d)
	}
	want := map[string]kvType{"f32": kvF32, "f16": kvF16, "q8_0": kvQ8, "q8_0/rows": kvQ8}[kvt]
	if want == kvQ8 && quant.TiledKV() && !b.kvRows {
		want = kvQ8T
	}
	if kvTypeOf(caches[0].K) != want && d*Hkv%quant.QK == 0 {
		t.Fatalf("AllocKV gave %v, want %v", kvTypeOf(caches[0].K), want)
	}
	pos := [2]int{}
	worst, worstExact := 0.0, 0.0
	sawSplit := false
	for si, st := range schedule {
		ns := [2]int{st.nA, st.nB}
		var spans, exactSpans []backend.Span
		var kvs, exactKVs []backend.KV
		var seqs []int
		T := 0
		for s, n := range ns {
			if n == 0 {
				continue
			}
			spans = append(spans, backend.Span{Row: T, N: n, Pos: pos[s]})
			kvs = append(kvs, caches[s])
			exactKVs = append(exactKVs, exactC[s])
			seqs = append(seqs, s)
			T += n
		}
		exactSpans = spans
		q, k, v := randTensor(b, r, T, H*d, 1), randTensor(b, r, T, Hkv*d, 1), randTensor(b, r, T, Hkv*d, 1)
		// a few large keys so that the softmax is not flat
		for i := 0; i < T; i += 7 {
			row(k, i)[r.IntN(Hkv*d)] = 6
		}
		out, outExact := b.Alloc(T, H*d), exact.Alloc(T, H*d)
		b.Attention(out, q, k, v, spans, kvs, d, scale)
		sawSplit = sawSplit || len(b.attn.splits) > 0
		exact.Attention(outExact, q, k, v, exactSpans, exactKVs, d, scale)
		for i, sp := range spans {
			s := seqs[i]
			L := sp.Pos + sp.N
			kc, vc := make([]float32, L*Hkv*d), make([]float32, L*Hkv*d)
			b.Read(caches[s].K.RowRange(0, L), kc)
			b.Read(caches[s].V.RowRange(0, L), vc)
			ke, ve := make([]float32, L*Hkv*d), make([]float32, L*Hkv*d)
			exact.Read(exactC[s].K.RowRange(0, L), ke)
			exact.Read(exactC[s].V.RowRange(0, L), ve)
			for qi := 0; qi < sp.N; qi++ {
				if sp.N > 64 && qi%37 != 0 && qi < sp.N-3 {
					continue // long prefills: a sample of rows
				}
				nq := min(attnQBlock, sp.N-qi/attnQBlock*attnQBlock) // rows of this query block
				kt := kvTypeOf(caches[s].K)
				q8 := (kt == kvQ8 && G*nq <= attnQ8Rows || kt == kvQ8T) && d%quant.QK == 0
				for h := 0; h < H; h++ {
					qrow := row(q, sp.Row+qi)[h*d : (h+1)*d]
					qs := make([]float64, d)
					qsc := make([]float32, d)
					for i, x := range qrow {
						qsc[i] = x * scale
						qs[i] = float64(qsc[i])
					}
					if q8 {
						// the integer path sees the query as quantized
						q8ActValues(qs, qsc)
					}
					want := attnRef(qs, kc, vc, sp.Pos+qi, h, G, Hkv, d)
					got := row(out, sp.Row+qi)[h*d : (h+1)*d]
					var num, den float64
					for i := range want {
						num = math.Max(num, math.Abs(float64(got[i])-want[i]))
						den = math.Max(den, math.Abs(want[i]))
					}
					if e := num / den; e > worst {
						worst = e
					}
					if num/den > refTol(kt, d) {
						t.Fatalf("step %d span %d row %d head %d (pos %d): error %.3g vs the float64 reference", si, i, qi, h, sp.Pos+qi, num/den)
					}
					// against exact float32 caches and queries
					for i, x := range qrow {
						qs[i] = float64(x * scale)
					}
					want = attnRef(qs, ke, ve, sp.Pos+qi, h, G, Hkv, d)
					num, den = 0, 0
					for i := range want {
						num = math.Max(num, math.Abs(float64(got[i])-want[i]))
						den = math.Max(den, math.Abs(want[i]))
					}
					worstExact = math.Max(worstExact, num/den)
				}
			}
			pos[s] += sp.N
		}
		// the exact backend must agree with its own reference too
		if b.kv == kvF32 {
			for i := range data(out) {
				if data(out)[i] != data(outExact)[i] && workers == 1 {
					t.Fatalf("step %d: single-worker float32 runs differ", si)
				}
			}
		}
	}
	// rounding of the stored keys and values (and, for q8_0, of the
	// queries): half precision keeps 11 significant bits, Q8_0 7 bits of
	// the largest value of each block of 32
	tol := map[kvType]float64{kvF32: 2e-5, kvF16: 3e-3, kvQ8: 4e-2}[b.kv]
	if Hkv*d%quant.QK != 0 && b.kv == kvQ8 {
		tol = 2e-5 // stored as float32
	}
	t.Logf("worst error %.3g vs the reference over the stored cache, %.3g vs exact float32", worst, worstExact)
	if workers > 1 && !sawSplit { // batch-1 decode is one unit, split over the workers
		t.Error("no call split its keys over the workers")
	}
	if worstExact > tol {
		t.Errorf("error against exact float32 attention %.3g > %g", worstExact, tol)
	}
}

// TestAttentionLongDecode checks batch-1 decode steps at positions past two
// thousand with the default split threshold (caches filled directly), for
// every KV cache type, against the float64 reference over the stored cache.
func TestAttentionLongDecode(t *testing.T) {
	const H, Hkv, d, P = 16, 4, 128, 2100
	for _, kvt := range kvTestTypes() {
		t.Run(kvt, func(t *testing.T) {
			b := New(2)
			if err := setKVTest(b, kvt); err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(31, 32))
			kv := b.AllocKV(P+2, Hkv*d)
			b.Write(kv.K.RowRange(0, P), data(randTensor(b, r, P, Hkv*d, 1)))
			b.Write(kv.V.RowRange(0, P), data(randTensor(b, r, P, Hkv*d, 1)))
			for pos := P; pos < P+2; pos++ {
				q, k, v := randTensor(b, r, 1, H*d, 1), randTensor(b, r, 1, Hkv*d, 1), randTensor(b, r, 1, Hkv*d, 1)
				out := b.Alloc(1, H*d)
				b.Attention(out, q, k, v, []backend.Span{{N: 1, Pos: pos}}, []backend.KV{kv}, d, 0.25)
				if len(b.attn.splits) != 1 || b.attn.splits[0].n != 2 {
					t.Errorf("batch-1 decode on 2 workers: %d split units, want 1 in 2 chunks", len(b.attn.splits))
				}
				kc, vc := make([]float32, (pos+1)*Hkv*d), make([]float32, (pos+1)*Hkv*d)
				b.Read(kv.K.RowRange(0, pos+1), kc)
				b.Read(kv.V.RowRange(0, pos+1), vc)
				for h := 0; h < H; h++ {
					qs := make([]float64, d)
					qsc := make([]float32, d)
					for i, x := range row(q, 0)[h*d : (h+1)*d] {
						qsc[i] = x * 0.25
						qs[i] = float64(qsc[i])
					}
					if b.kv == kvQ8 {
						q8ActValues(qs, qsc)
					}
					tol := refTol(kvTypeOf(kv.K), d)
					want := attnRef(qs, kc, vc, pos, h, H/Hkv, Hkv, d)
					got := row(out, 0)[h*d : (h+1)*d]
					var num, den float64
					for i := range want {
						num = math.Max(num, math.Abs(float64(got[i])-want[i]))
						den = math.Max(den, math.Abs(want[i]))
					}
					if num/den > tol {
						t.Fatalf("pos %d head %d: error %.3g", pos, h, num/den)
					}
				}
			}
		})
	}
}

// TestAttentionDecodeAllocations checks that decode steps (batch 1, keys
// split over two workers, and a batch of three) allocate nothing once the
// scratch buffers exist, with every KV cache type and a head dim that takes
// the Q8_0 integer path.
func TestAttentionDecodeAllocations(t *testing.T) {
	const H, Hkv, d, P = 16, 4, 128, 1500
	for _, kvt := range kvTestTypes() {
		b := New(2)
		if err := setKVTest(b, kvt); err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(41, 42))
		var kvs []backend.KV
		for range 3 {
			kv := b.AllocKV(P+1, Hkv*d)
			b.Write(kv.K.RowRange(0, P), data(randTensor(b, r, P, Hkv*d, 1)))
			b.Write(kv.V.RowRange(0, P), data(randTensor(b, r, P, Hkv*d, 1)))
			kvs = append(kvs, kv)
		}
		q, k, v := randTensor(b, r, 3, H*d, 1), randTensor(b, r, 3, Hkv*d, 1), randTensor(b, r, 3, Hkv*d, 1)
		out := b.Alloc(3, H*d)
		one := []backend.Span{{N: 1, Pos: P}}
		three := []backend.Span{{Row: 0, N: 1, Pos: P}, {Row: 1, N: 1, Pos: P - 7}, {Row: 2, N: 1, Pos: 300}}
		step := func() {
			b.Attention(out.RowRange(0, 1), q.RowRange(0, 1), k.RowRange(0, 1), v.RowRange(0, 1), one, kvs[:1], d, 0.1)
			b.Attention(out, q, k, v, three, kvs, d, 0.1)
		}
		step()
		if n := testing.AllocsPerRun(10, step); n != 0 {
			t.Errorf("%s: %.1f allocations per decode step", kvt, n)
		}
	}
}

// q8ActValues sets qs to the values the integer attention path sees for the
// query q: q quantized as a Q8 activation row (quant.QuantizeQ8Act: per
// block of quant.QK a float32 scale and int8 quants), then expanded.
func q8ActValues(qs []float64, q []float32) {
	const bb = quant.Q8ActBlockBytes
	blk := make([]byte, len(q)/quant.QK*bb)
	quant.QuantizeQ8Act(blk, q)
	for bi := 0; bi < len(q)/quant.QK; bi++ {
		sc := math.Float32frombits(binary.LittleEndian.Uint32(blk[bi*bb:]))
		for i := 0; i < quant.QK; i++ {
			qs[bi*quant.QK+i] = float64(sc) * float64(int8(blk[bi*bb+4+i]))
		}
	}
}

// kvTestTypes are the KV cache settings the attention tests run: the
// Options.KVCache types and, where this CPU keeps Q8_0 caches in tiles,
// "q8_0/rows" (Q8_0 caches as rows all the same).
func kvTestTypes() []string {
	ts := []string{"f32", "f16", "q8_0"}
	if quant.TiledKV() {
		ts = append(ts, "q8_0/rows")
	}
	return ts
}

// setKVTest sets b up for one of kvTestTypes.
func setKVTest(b *Backend, kvt string) error {
	name, rows := strings.CutSuffix(kvt, "/rows")
	b.kvRows = rows
	var err error
	b.kv, err = parseKVType(name)
	return err
}

// refTol is the error allowed against the float64 reference over the
// stored cache (and the queries as the kernels see them), relative to the
// output's largest value: float32 rounding; for tiled Q8_0 caches also the
// value weights p·d, rounded to 16 bits (15 with the AVX2 kernel) against
// their bound over each 128 keys (quant.AccumQ8_0Tiled): up to 2⁻¹⁷ (2⁻¹⁶)
// of the bound per key, which adds up over a span (seen here: 1.1e-4 on
// an AVX-512 CPU, 1.7e-4 with AVX2; Q8_0 itself rounds each value by up
// to 4e-3 of its block's largest).
func refTol(kt kvType, d int) float64 {
	if kt == kvQ8T && d%quant.QK == 0 {
		return 3e-4
	}
	return 2e-5
}
