package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
)

// BenchmarkQuantMatMul compares the two quantized MatMul paths over T rows:
// integer dot products against activations quantized to Q8 ("dots") and
// float32 GEMM over expanded weight panels ("panels"). It reports weight
// elements × rows per nanosecond.
func BenchmarkQuantMatMul(b *testing.B) {
	be := New(1)
	r := rand.New(rand.NewPCG(1, 1))
	const N, K = 512, 2048
	for _, typ := range []quant.Type{quant.Q4_K, quant.Q8_0} {
		q, _ := quantPair(&testing.T{}, be, r, typ, N, K)
		for _, T := range []int{1, 16, 64, 256} {
			for _, path := range []string{"dots", "panels"} {
				b.Run(fmt.Sprintf("%v/T=%d/%s", typ, T, path), func(b *testing.B) {
					defer func() { forcePanels = 0 }()
					if path == "dots" {
						forcePanels = 1 << 30
					} else {
						forcePanels = 1
					}
					x := randTensor(be, r, T, K, 1)
					out := be.Alloc(T, N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						be.MatMul(out, x, q)
					}
					b.ReportMetric(float64(N*K*T)*float64(b.N)/float64(b.Elapsed().Nanoseconds()), "MAC/ns")
				})
			}
		}
	}
}

// benchThreads is the number of workers of the attention benchmarks.
const benchThreads = 2

// BenchmarkAttention measures one batch-1 decode step of softmax attention
// (16 query heads, 4 KV heads, head dim 128: the Ring-mini shape) over a KV
// cache of L keys, for each KV cache type, on two workers.
func BenchmarkAttention(b *testing.B) {
	const H, Hkv, d = 16, 4, 128
	for _, kvt := range []string{"f32", "f16", "q8_0"} {
		for _, L := range []int{1024, 8192, 32768} {
			b.Run(fmt.Sprintf("%s/L=%d", kvt, L), func(b *testing.B) {
				be := New(benchThreads)
				be.kv, _ = parseKVType(kvt)
				r := rand.New(rand.NewPCG(1, uint64(L)))
				kv := be.AllocKV(L, Hkv*d)
				for _, t := range []backend.Tensor{kv.K, kv.V} {
					be.Write(t, data(randTensor(be, r, L, Hkv*d, 1)))
				}
				q, k, v := randTensor(be, r, 1, H*d, 1), randTensor(be, r, 1, Hkv*d, 1), randTensor(be, r, 1, Hkv*d, 1)
				out := be.Alloc(1, H*d)
				sp := []backend.Span{{N: 1, Pos: L - 1}}
				kvs := []backend.KV{kv}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.Attention(out, q, k, v, sp, kvs, d, 0.088)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(L), "ns/key")
			})
		}
	}
}

// BenchmarkAttentionLayers is BenchmarkAttention over four layers' caches
// in turn (q8_0, and q8_0 as rows where this CPU keeps it in tiles), as a decode step visits the Ring-mini's softmax layers:
// at 32K the caches (142 MB) do not fit in the caches of the CPU, so every
// call reads its keys and values from memory. ns/key is per key and layer.
func BenchmarkAttentionLayers(b *testing.B) {
	const H, Hkv, d, layers = 16, 4, 128, 4
	for _, L := range []int{1024, 32768} {
		for _, kvt := range []string{"q8_0", "q8_0/rows"} {
			if kvt == "q8_0/rows" && !quant.TiledKV() {
				continue // the same as q8_0 here
			}
			b.Run(fmt.Sprintf("%s/L=%d", kvt, L), func(b *testing.B) {
				be := New(benchThreads)
				setKVTest(be, kvt)
				r := rand.New(rand.NewPCG(3, uint64(L)))
				var kvs [layers][]backend.KV
				for l := range kvs {
					kv := be.AllocKV(L, Hkv*d)
					for _, t := range []backend.Tensor{kv.K, kv.V} {
						be.Write(t, data(randTensor(be, r, L, Hkv*d, 1)))
					}
					kvs[l] = []backend.KV{kv}
				}
				q, k, v := randTensor(be, r, 1, H*d, 1), randTensor(be, r, 1, Hkv*d, 1), randTensor(be, r, 1, Hkv*d, 1)
				out := be.Alloc(1, H*d)
				sp := []backend.Span{{N: 1, Pos: L - 1}}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.Attention(out, q, k, v, sp, kvs[i%layers], d, 0.088)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(L), "ns/key")
			})
		}
	}
}

// BenchmarkAttentionPrefill measures a 512-token prefill chunk continuing a
// sequence at position P (the Ring-mini shape, two workers).
func BenchmarkAttentionPrefill(b *testing.B) {
	const H, Hkv, d, T = 16, 4, 128, 512
	for _, kvt := range kvTestTypes() {
		for _, P := range []int{0, 4096} {
			b.Run(fmt.Sprintf("%s/P=%d", kvt, P), func(b *testing.B) {
				be := New(benchThreads)
				setKVTest(be, kvt)
				r := rand.New(rand.NewPCG(2, uint64(P)))
				kv := be.AllocKV(P+T, Hkv*d)
				if P > 0 {
					be.Write(kv.K.RowRange(0, P), data(randTensor(be, r, P, Hkv*d, 1)))
					be.Write(kv.V.RowRange(0, P), data(randTensor(be, r, P, Hkv*d, 1)))
				}
				q, k, v := randTensor(be, r, T, H*d, 1), randTensor(be, r, T, Hkv*d, 1), randTensor(be, r, T, Hkv*d, 1)
				out := be.Alloc(T, H*d)
				sp := []backend.Span{{N: T, Pos: P}}
				kvs := []backend.KV{kv}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					be.Attention(out, q, k, v, sp, kvs, d, 0.088)
				}
			})
		}
	}
}

// randQ4K is a random Q4_K weight of rows×cols for the benchmarks, every
// block's scales (d, dmin) a small FP16 value so that the products stay finite.
func randQ4K(r *rand.Rand, rows, cols int) backend.HostWeight {
	qb := make([]byte, rows*quant.RowBytes(quant.Q4_K, cols))
	for i := range qb {
		qb[i] = byte(r.Uint32())
	}
	for o := 0; o < len(qb); o += 144 {
		qb[o], qb[o+1], qb[o+2], qb[o+3] = 0x00, 0x1c, 0x00, 0x1c
	}
	return backend.HostWeight{Name: "w", Kind: backend.Quant, QType: uint32(quant.Q4_K), Rows: rows, Cols: cols, Data: qb}
}

// BenchmarkMoEDecode measures one batch-1 decode MoE step at Ring-mini's
// shapes (256 Q4_K experts of 2048 → 512 → 2048, top 8, the experts' three
// matrices side by side in huge pages as with --no-mmap) on two workers, a
// new random selection each step so that the weights come from DRAM: the
// experts of one layer (453 MB), or of Ring-mini's 19 MoE layers, a layer
// per step in turn (8.6 GB of memory). It reports expert weight bytes per
// second.
func BenchmarkMoEDecode(b *testing.B) {
	const E, D, I, K = 256, 2048, 512, 8
	r := rand.New(rand.NewPCG(3, 4))
	// one random matrix of each shape, copied for every expert (the
	// backend copies uploads into its own huge pages with noMmap)
	gw, uw, dw := randQ4K(r, I, D), randQ4K(r, I, D), randQ4K(r, D, I)
	for _, layers := range []int{1, 19} {
		b.Run(fmt.Sprintf("layers=%d", layers), func(b *testing.B) {
			be := New(benchThreads)
			be.noMmap = true
			var exs []backend.Experts
			for l := 0; l < layers; l++ {
				var gate, up, down []backend.HostWeight
				for e := 0; e < E; e++ {
					gate, up, down = append(gate, gw), append(up, uw), append(down, dw)
				}
				ex, err := be.UploadExperts(gate, up, down)
				if err != nil {
					b.Fatal(err)
				}
				exs = append(exs, ex)
			}
			x, dst := randTensor(be, r, 1, D, 1), be.Alloc(1, D)
			logits := make([]backend.Tensor, 64)
			for i := range logits {
				logits[i] = randTensor(be, r, 1, E, 3)
			}
			p := backend.RouteParams{TopK: K, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 2.5}
			b.SetBytes(int64(K * 3 * I * quant.RowBytes(quant.Q4_K, D)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				be.MoE(dst, x, be.Route(logits[i%len(logits)], nil, p), exs[i%layers])
			}
		})
	}
}

// BenchmarkDecodeProducts times single-row products at Ring-mini's decode
// shapes with weights from DRAM (a different copy each iteration, 40 copies
// in all): "small" is a MoE layer's router (BF16 256×2048), shared expert
// gate|up (Q4_K 1024×2048) and down (Q4_K 2048×512) with the SwiGLU between
// them, as four operations; "large" the qkv|gate product (Q4_K 8192×2048).
// Bytes/s counts the weights read.
func BenchmarkDecodeProducts(b *testing.B) {
	const D, I, copies = 2048, 512, 40
	r := rand.New(rand.NewPCG(5, 6))
	bf := func(rows, cols int) backend.HostWeight {
		d := make([]byte, 2*rows*cols)
		for i := 0; i < len(d); i += 2 {
			d[i], d[i+1] = byte(r.Uint32()), 0x3c
		}
		return backend.HostWeight{Name: "model.layers.1.mlp.gate.weight", Kind: backend.BF16, Rows: rows, Cols: cols, Data: d}
	}
	be := New(benchThreads)
	be.noMmap = true
	up := func(hw backend.HostWeight) backend.Weight {
		w, err := be.Upload(hw)
		if err != nil {
			b.Fatal(err)
		}
		return w
	}
	var router, gu, down, qkv []backend.Weight
	hr, hg, hd, hq := bf(256, D), randQ4K(r, 2*I, D), randQ4K(r, D, I), randQ4K(r, 8192, D)
	for range copies {
		router, gu, down, qkv = append(router, up(hr)), append(gu, up(hg)), append(down, up(hd)), append(qkv, up(hq))
	}
	x := randTensor(be, r, 1, D, 1)
	logits, g, out, y := be.Alloc(1, 256), be.Alloc(1, 2*I), be.Alloc(1, D), be.Alloc(1, 8192)
	b.Run("small", func(b *testing.B) {
		b.SetBytes(int64(len(hr.Data) + len(hg.Data) + len(hd.Data)))
		for i := 0; i < b.N; i++ {
			c := i % copies
			be.MatMul(logits, x, router[c])
			be.MatMul(g, x, gu[c])
			be.SiLUMul(g.ColRange(0, I), g.ColRange(0, I), g.ColRange(I, I))
			be.MatMul(out, g.ColRange(0, I), down[c])
		}
	})
	b.Run("large", func(b *testing.B) {
		b.SetBytes(int64(len(hq.Data)))
		for i := 0; i < b.N; i++ {
			be.MatMul(y, x, qkv[i%copies])
		}
	})
}
