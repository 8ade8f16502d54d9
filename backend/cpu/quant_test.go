package cpu

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/quant"
)

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// quantPair returns the same random weight as a quantized upload and as the
// float32 upload of its dequantized values.
func quantPair(t *testing.T, b *Backend, r *rand.Rand, typ quant.Type, N, K int) (q, f backend.Weight) {
	t.Helper()
	src := make([]float32, N*K)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	qb := make([]byte, N*quant.RowBytes(typ, K))
	if err := quant.Quantize(typ, qb, src); err != nil {
		t.Fatal(err)
	}
	deq := make([]float32, N*K)
	if err := quant.Dequantize(typ, deq, qb); err != nil {
		t.Fatal(err)
	}
	q, err := b.Upload(backend.HostWeight{Name: "q", Kind: backend.Quant, QType: uint32(typ), Rows: N, Cols: K, Data: qb})
	if err != nil {
		t.Fatal(err)
	}
	f, err = b.Upload(backend.HostWeight{Name: "f", Kind: backend.F32, Rows: N, Cols: K, Data: f32Bytes(deq)})
	if err != nil {
		t.Fatal(err)
	}
	return q, f
}

// TestQuantMatMul checks the quantized MatMul (activations quantized to
// Q8_0/Q8_K) against the float32 MatMul over the dequantized weight.
func TestQuantMatMul(t *testing.T) {
	b := New(2)
	r := rand.New(rand.NewPCG(9, 9))
	defer func() { forcePanels = 0 }()
	for _, typ := range []quant.Type{quant.Q8_0, quant.Q4_0, quant.Q4_K, quant.Q6_K} {
		for _, T := range []int{1, 3, 17, 70} {
			N, K := 37, 512
			q, f := quantPair(t, b, r, typ, N, K)
			x := randTensor(b, r, T, K, 1)
			a, c := b.Alloc(T, N), b.Alloc(T, N)
			b.MatMul(c, x, f)
			for _, path := range []struct {
				name  string
				force int
			}{{"integer dots", 1 << 30}, {"float panels", 1}} {
				forcePanels = path.force
				b.MatMul(a, x, q)
				if e := maxRelErr(data(a), data(c)); e > 0.02 {
					t.Errorf("%v T=%d %s: quantized vs float error %.3g", typ, T, path.name, e)
				}
			}
			// embedding rows of a quantized table are exact dequantized rows
			e1, e2 := b.Alloc(2, K), b.Alloc(2, K)
			b.Embed(e1, q, []int32{5, 36})
			b.Embed(e2, f, []int32{5, 36})
			if e := maxRelErr(data(e1), data(e2)); e != 0 {
				t.Errorf("%v: embedding rows differ by %.3g", typ, e)
			}
		}
	}
	if _, err := b.Upload(backend.HostWeight{Name: "bad", Kind: backend.Quant, QType: uint32(quant.Q4_K), Rows: 2, Cols: 100, Data: make([]byte, 2*144)}); err == nil {
		t.Error("Q4_K weight with 100 columns accepted")
	}
}

// TestMoEQuantExperts compares MoE over quantized experts with MoE over
// their dequantized float32 copies.
func TestMoEQuantExperts(t *testing.T) {
	b := New(2)
	r := rand.New(rand.NewPCG(4, 4))
	const E, D, I, T = 8, 256, 64, 5
	var gq, uq, dq, gf, uf, df []backend.HostWeight
	mk := func(N, K int) (backend.HostWeight, backend.HostWeight) {
		src := make([]float32, N*K)
		for i := range src {
			src[i] = float32(r.NormFloat64()) * 0.1
		}
		qb := make([]byte, N*quant.RowBytes(quant.Q8_0, K))
		quant.Quantize(quant.Q8_0, qb, src)
		deq := make([]float32, N*K)
		quant.Dequantize(quant.Q8_0, deq, qb)
		return backend.HostWeight{Name: "q", Kind: backend.Quant, QType: uint32(quant.Q8_0), Rows: N, Cols: K, Data: qb},
			backend.HostWeight{Name: "f", Kind: backend.F32, Rows: N, Cols: K, Data: f32Bytes(deq)}
	}
	for e := 0; e < E; e++ {
		a, c := mk(I, D)
		gq, gf = append(gq, a), append(gf, c)
		a, c = mk(I, D)
		uq, uf = append(uq, a), append(uf, c)
		a, c = mk(D, I)
		dq, df = append(dq, a), append(df, c)
	}
	exq, err := b.UploadExperts(gq, uq, dq)
	if err != nil {
		t.Fatal(err)
	}
	exf, _ := b.UploadExperts(gf, uf, df)
	x := randTensor(b, r, T, D, 1)
	logits := randTensor(b, r, T, E, 2)
	rt := b.Route(logits, nil, backend.RouteParams{TopK: 2, Groups: 1, Sigmoid: true, Normalize: true, Scale: 1})
	o1, o2 := b.Alloc(T, D), b.Alloc(T, D)
	b.MoE(o1, x, rt, exq)
	b.MoE(o2, x, rt, exf)
	if e := maxRelErr(data(o1), data(o2)); e > 0.02 {
		t.Fatalf("quantized experts differ by %.3g", e)
	}
}

// TestNoMmap checks that a backend with Options.NoMmap keeps copies of the
// weights (the results do not change when the uploaded bytes do) laid out
// as it says (each expert's gate, up and down side by side), and computes
// exactly what a backend reading the uploaded bytes computes, for
// quantized, BF16 and float32 experts and a quantized matrix.
func TestNoMmap(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 6))
	const E, D, I, T = 6, 256, 256, 3
	mk := func(kind backend.Kind, N, K int) backend.HostWeight {
		src := make([]float32, N*K)
		for i := range src {
			src[i] = float32(r.NormFloat64()) * 0.1
		}
		switch kind {
		case backend.Quant:
			qb := make([]byte, N*quant.RowBytes(quant.Q4_K, K))
			quant.Quantize(quant.Q4_K, qb, src)
			return backend.HostWeight{Name: "q", Kind: kind, QType: uint32(quant.Q4_K), Rows: N, Cols: K, Data: qb}
		case backend.BF16:
			b := make([]byte, 2*N*K)
			for i, v := range src {
				binary.LittleEndian.PutUint16(b[2*i:], quant.F32ToBF16(v))
			}
			return backend.HostWeight{Name: "bf16", Kind: kind, Rows: N, Cols: K, Data: b}
		}
		return backend.HostWeight{Name: "f32", Kind: kind, Rows: N, Cols: K, Data: f32Bytes(src)}
	}
	for _, kind := range []backend.Kind{backend.Quant, backend.BF16, backend.F32} {
		var g, u, d []backend.HostWeight
		for e := 0; e < E; e++ {
			g, u, d = append(g, mk(kind, I, D)), append(u, mk(kind, I, D)), append(d, mk(kind, D, I))
		}
		w := mk(backend.Quant, 40, D)
		mapped, own := New(2), New(2)
		own.noMmap = true
		var outs [2][2][]float32
		for i, b := range []*Backend{mapped, own} {
			ex, err := b.UploadExperts(g, u, d)
			if err != nil {
				t.Fatal(err)
			}
			mw, err := b.Upload(w)
			if err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				// the copies: scribbling over the uploaded bytes changes nothing
				for _, hw := range append(append(append(append([]backend.HostWeight{}, g...), u...), d...), w) {
					for k := range hw.Data {
						hw.Data[k] = 0x55
					}
				}
				// and an expert's matrices lie side by side
				e := ex.(*experts)
				if kind == backend.Quant {
					end := unsafe.Pointer(unsafe.SliceData(e.gate[1].q[len(e.gate[1].q)-1:]))
					if gap := uintptr(unsafe.Pointer(unsafe.SliceData(e.up[1].q))) - uintptr(end); gap > 64 {
						t.Errorf("%v: expert 1's up matrix starts %d bytes after its gate", kind, gap)
					}
				}
			}
			rr := rand.New(rand.NewPCG(7, 7))
			x := randTensor(b, rr, T, D, 1)
			logits := randTensor(b, rr, T, E, 2)
			rt := b.Route(logits, nil, backend.RouteParams{TopK: 2, Groups: 1, Sigmoid: true, Normalize: true, Scale: 1})
			o, m := b.Alloc(T, D), b.Alloc(T, 40)
			b.MoE(o, x, rt, ex)
			b.MatMul(m, x, mw)
			outs[i] = [2][]float32{data(o), data(m)}
		}
		for j, what := range []string{"MoE", "MatMul"} {
			if e := maxRelErr(outs[1][j], outs[0][j]); e != 0 {
				t.Errorf("%v: %s with copied weights differs by %.3g", kind, what, e)
			}
		}
	}
}

// TestRoute checks group-limited selection against a brute-force reading of spec §6.
func TestRoute(t *testing.T) {
	b := New(1)
	r := rand.New(rand.NewPCG(1, 1))
	const E, G, KG, K = 16, 4, 2, 4
	logits := randTensor(b, r, 50, E, 3)
	bias := make([]float32, E)
	for i := range bias {
		bias[i] = float32(r.NormFloat64()) * 0.1
	}
	bw, _ := b.Upload(backend.HostWeight{Name: "bias", Kind: backend.F32, Rows: 1, Cols: E, Data: f32Bytes(bias)})
	rt := b.Route(logits, bw, backend.RouteParams{TopK: K, Groups: G, TopKGroups: KG, Sigmoid: true, Normalize: true, Scale: 2.5})
	ids, w := make([]int32, K), make([]float32, K)
	for row := 0; row < 50; row++ {
		lr := data(logits.RowRange(row, 1))
		s, c := make([]float64, E), make([]float64, E)
		for e := range s {
			s[e] = 1 / (1 + math.Exp(-float64(lr[e])))
			c[e] = s[e] + float64(bias[e])
		}
		// group score = sum of top 2; keep KG best groups
		type gs struct {
			g int
			v float64
		}
		var groups []gs
		for g := 0; g < G; g++ {
			m1, m2 := math.Inf(-1), math.Inf(-1)
			for e := g * 4; e < g*4+4; e++ {
				if c[e] > m1 {
					m1, m2 = c[e], m1
				} else if c[e] > m2 {
					m2 = c[e]
				}
			}
			groups = append(groups, gs{g, m1 + m2})
		}
		keep := map[int]bool{}
		for n := 0; n < KG; n++ {
			best := -1
			for i, g := range groups {
				if !keep[g.g] && (best < 0 || g.v > groups[best].v) {
					best = i
				}
			}
			keep[groups[best].g] = true
		}
		chosen := map[int]bool{}
		var order []int
		for n := 0; n < K; n++ {
			best := -1
			for e := 0; e < E; e++ {
				if keep[e/4] && !chosen[e] && (best < 0 || c[e] > c[best]) {
					best = e
				}
			}
			chosen[best] = true
			order = append(order, best)
		}
		var sum float64
		for _, e := range order {
			sum += s[e]
		}
		rt.Selected(row, ids, w)
		for i, e := range order {
			if int(ids[i]) != e {
				t.Fatalf("row %d: selected %v, want %v", row, ids, order)
			}
			if want := s[e] / sum * 2.5; math.Abs(float64(w[i])-want) > 1e-5 {
				t.Fatalf("row %d: weight %v, want %v", row, w[i], want)
			}
		}
	}
}
