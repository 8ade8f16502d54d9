package ggufmodel_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// TestEncodeFP8 checks every block scale (max |w| / 448) and every value
// (w / scale rounded to E4M3) of EncodeFP8 on ragged shapes, from F32 and
// BF16 weights.
func TestEncodeFP8(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		rows, cols int
		kind       backend.Kind
	}{{1, 5, backend.F32}, {200, 300, backend.F32}, {130, 128, backend.BF16}, {64, 1000, backend.BF16}} {
		n := tc.rows * tc.cols
		vals := make([]float32, n)
		hw := backend.HostWeight{Name: "w", Kind: tc.kind, Rows: tc.rows, Cols: tc.cols}
		switch tc.kind {
		case backend.F32:
			hw.Data = make([]byte, 4*n)
		default:
			hw.Data = make([]byte, 2*n)
		}
		for i := range vals {
			v := float32(rng.NormFloat64()) * 0.02
			if i%97 == 0 {
				v *= 50 // outliers set some block scales
			}
			if i%13 == 0 && i < n/2 {
				v = 0
			}
			if tc.kind == backend.F32 {
				binary.LittleEndian.PutUint32(hw.Data[4*i:], math.Float32bits(v))
			} else {
				h := quant.F32ToBF16(v)
				binary.LittleEndian.PutUint16(hw.Data[2*i:], h)
				v = quant.BF16ToF32(h)
			}
			vals[i] = v
		}
		out, err := ggufmodel.EncodeFP8(hw)
		if err != nil {
			t.Fatal(err)
		}
		B := ggufmodel.FP8Block
		sc := (tc.cols + B - 1) / B
		if out.Kind != backend.F8E4M3 || out.BlockRows != B || out.BlockCols != B || len(out.Scale) != ((tc.rows+B-1)/B)*sc || len(out.Data) != n {
			t.Fatalf("%dx%d: got kind %v, blocks %dx%d, %d scales, %d bytes", tc.rows, tc.cols, out.Kind, out.BlockRows, out.BlockCols, len(out.Scale), len(out.Data))
		}
		amax := make([]float32, len(out.Scale))
		for i, v := range vals {
			j := (i/tc.cols/B)*sc + (i%tc.cols)/B
			amax[j] = max(amax[j], float32(math.Abs(float64(v))))
		}
		for j, a := range amax {
			want := float32(1)
			if a > 0 {
				want = a / 448
			}
			if out.Scale[j] != want {
				t.Fatalf("%dx%d: scale %d = %g, want %g", tc.rows, tc.cols, j, out.Scale[j], want)
			}
		}
		for i, v := range vals {
			s := out.Scale[(i/tc.cols/B)*sc+(i%tc.cols)/B]
			if got, want := out.Data[i], safetensors.F32ToF8E4M3(v/s); got != want {
				t.Fatalf("%dx%d: value %d (%g, scale %g) = %#x, want %#x", tc.rows, tc.cols, i, v, s, got, want)
			}
			back := safetensors.F8E4M3ToF32(out.Data[i]) * s
			if d := math.Abs(float64(back - v)); d > math.Abs(float64(v))/16+float64(s)/1024 {
				t.Fatalf("%dx%d: value %d: %g came back as %g", tc.rows, tc.cols, i, v, back)
			}
		}
	}
	if _, err := ggufmodel.EncodeFP8(backend.HostWeight{Name: "short", Kind: backend.F32, Rows: 2, Cols: 2, Data: make([]byte, 12)}); err == nil {
		t.Error("EncodeFP8 accepted a truncated weight")
	}
}

// TestQuantizingFP8 loads the synthetic 256-wide model quantized to FP8 on
// load: the bulk matrices must arrive as FP8 and the router, embeddings,
// lm_head and vectors as stored; the logits must stay close to the BF16
// model's (measured: top-1 0.562, mean KL 0.0798, weight error 0.0256: E4M3 keeps
// 3 mantissa bits, between Q6_K and Q4_K on this model).
func TestQuantizingFP8(t *testing.T) {
	dir := synthDir(t)
	ref := loadDir(t, dir, bailing.Options{}, 0)
	V := ref.Info().VocabSize
	prompt := ggufmodel.RandomPrompt(64, V, 1)
	want := logits(t, ref, prompt)

	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, err := ggufmodel.QuantizingByName(ck, "FP4"); err == nil {
		t.Error("QuantizingByName accepted FP4")
	}
	qs, err := ggufmodel.QuantizingByName(ck, "fp8")
	if err != nil {
		t.Fatal(err)
	}
	qs.Measure(true)
	kinds := map[backend.Kind]int{}
	for _, name := range []string{"model.layers.0.attention.query_key_value.weight", "model.layers.1.mlp.experts.0.up_proj.weight",
		"model.layers.1.mlp.gate.weight", "lm_head.weight", "model.word_embeddings.weight", "model.norm.weight"} {
		if !ck.Has(name) {
			continue
		}
		hw, err := qs.Weight(name, ck.Shape(name)...)
		if err != nil {
			t.Fatal(err)
		}
		isMatrix := ggufmodel.RoleOf(name, hw.Rows, false) == ggufmodel.RoleMatrix
		if (hw.Kind == backend.F8E4M3) != isMatrix {
			t.Errorf("%s handed out as %v", name, hw.Kind)
		}
		kinds[hw.Kind]++
	}
	if kinds[backend.F8E4M3] < 2 || len(kinds) < 2 {
		t.Fatalf("weights handed out: %v; want FP8 matrices and others as stored", kinds)
	}
	m, err := bailing.Load(ck.ConfigJSON, ck.Generation, qs, cpu.New(0), bailing.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ggufmodel.CompareLogits(want, logits(t, m, prompt), V)
	if err != nil {
		t.Fatal(err)
	}
	werr := qs.WeightError()
	t.Logf("FP8: %v, weight relative RMS error %.4f", a, werr)
	if a.Top1 < 0.562-0.15 || a.MeanKL > 2*0.0798 || werr <= 0 || werr > 0.035 {
		t.Errorf("FP8: top-1 %.3f, mean KL %.4g, weight error %.4f", a.Top1, a.MeanKL, werr)
	}
}
