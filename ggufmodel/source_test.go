package ggufmodel_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
)

// smallFile writes a GGUF file with a stacked expert tensor (3 experts of
// [out 2, in 4], F32, value = 100·e + 10·row + col), a Q8_0 matrix and a norm.
func smallFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "small.gguf")
	w, err := gguf.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.AddKV(gguf.KeyArchitecture, gguf.ArchBailingMoE2))
	must(w.AddTensorInfo("blk.0.ffn_gate_exps.weight", quant.F32, []int64{4, 2, 3}))
	must(w.AddTensorInfo("blk.0.attn_output.weight", quant.Q8_0, []int64{32, 2}))
	must(w.AddTensorInfo("blk.0.attn_norm.weight", quant.F32, []int64{8}))
	var exps []byte
	for e := 0; e < 3; e++ {
		for r := 0; r < 2; r++ {
			for c := 0; c < 4; c++ {
				exps = binary.LittleEndian.AppendUint32(exps, math.Float32bits(float32(100*e+10*r+c)))
			}
		}
	}
	must(w.WriteTensorData("blk.0.ffn_gate_exps.weight", exps))
	q := make([]byte, 2*quant.RowBytes(quant.Q8_0, 32))
	src := make([]float32, 64)
	for i := range src {
		src[i] = float32(i) / 64
	}
	must(quant.Quantize(quant.Q8_0, q, src))
	must(w.WriteTensorData("blk.0.attn_output.weight", q))
	must(w.WriteTensorData("blk.0.attn_norm.weight", make([]byte, 32)))
	must(w.Close())
	return path
}

func TestSourceWeights(t *testing.T) {
	path := smallFile(t)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := ggufmodel.NewSource(f, gguf.ArchBailingMoE2)
	if err != nil {
		t.Fatal(err)
	}
	for e := 0; e < 3; e++ {
		name := fmt.Sprintf("model.layers.0.mlp.experts.%d.gate_proj.weight", e)
		hw, err := src.Weight(name, 2, 4)
		if err != nil {
			t.Fatal(err)
		}
		if hw.Kind != backend.F32 || hw.Rows != 2 || hw.Cols != 4 || len(hw.Data) != 32 {
			t.Fatalf("%s: %+v", name, hw)
		}
		for i := 0; i < 8; i++ {
			if v := math.Float32frombits(binary.LittleEndian.Uint32(hw.Data[4*i:])); v != float32(100*e+10*(i/4)+i%4) {
				t.Fatalf("%s element %d = %g", name, i, v)
			}
		}
	}
	if src.Has("model.layers.0.mlp.experts.3.gate_proj.weight") || !src.Has("model.layers.0.mlp.experts.2.gate_proj.weight") {
		t.Error("Has is wrong about the expert range")
	}
	if s := src.Shape("model.layers.0.attention.dense.weight"); len(s) != 2 || s[0] != 2 || s[1] != 32 {
		t.Errorf("shape %v, want [2 32]", s)
	}
	hw, err := src.Weight("model.layers.0.attention.dense.weight", 2, 32)
	if err != nil || hw.Kind != backend.Quant || hw.QType != uint32(quant.Q8_0) || len(hw.Data) != 68 {
		t.Errorf("quantized weight %+v, %v", hw, err)
	}
	for _, c := range []struct {
		name  string
		shape []int
		want  string
	}{
		{"model.layers.0.input_layernorm.weight", []int{16}, "has shape [8]"},
		{"model.layers.0.attention.dense.weight", []int{32, 2}, "has shape [2 32]"},
		{"model.layers.0.mlp.experts.5.gate_proj.weight", []int{2, 4}, "expert 5 out of range"},
		{"model.layers.1.input_layernorm.weight", []int{8}, "blk.1.attn_norm.weight) is missing"},
		{"model.layers.0.attention.g_proj.weight", []int{8, 8}, "no GGUF name"},
	} {
		_, err := src.Weight(c.name, c.shape...)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.name) {
			t.Errorf("%s %v: error %v, want one naming the file, the tensor and %q", c.name, c.shape, err, c.want)
		}
	}
}

// TestCorruptFiles flips random bytes of a valid GGUF model (header,
// metadata, tensor infos and data) and loads it: every attempt must end in a
// model or an error, never a panic.
func TestCorruptFiles(t *testing.T) {
	path := convert(t, fixtureDir("tiny-softmax"), quant.Q8_0)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.OpenBytes("x", orig)
	if err != nil {
		t.Fatal(err)
	}
	header := int(f.DataOffset)
	rng := rand.New(rand.NewPCG(1, 2))
	loaded, failed := 0, 0
	for i := 0; i < 400; i++ {
		data := bytes.Clone(orig)
		for k := 0; k < 1+rng.IntN(3); k++ {
			pos := rng.IntN(header)
			if i%4 == 3 {
				pos = rng.IntN(len(data))
			}
			data[pos] ^= byte(1 + rng.IntN(255))
		}
		if i%10 == 9 { // truncation
			data = data[:rng.IntN(len(data))]
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("attempt %d: panic: %v", i, r)
				}
			}()
			f, err := gguf.OpenBytes(fmt.Sprintf("corrupt-%d.gguf", i), data)
			if err != nil {
				failed++
				return
			}
			m, err := ggufmodel.FromFile(f)
			if err != nil {
				failed++
				return
			}
			bm, err := bailing.Load(m.ConfigJSON, m.Generation, m.Source, cpu.New(1), bailing.Options{})
			if err != nil {
				failed++
				return
			}
			loaded++
			// run a few tokens: damaged data gives garbage logits, not a crash
			req := &model.Request{State: bm.NewState(), Tokens: []int32{1, 2, 3}}
			_ = bm.Forward(context.Background(), []*model.Request{req})
		}()
	}
	t.Logf("%d corrupt files loaded (data or harmless metadata damage), %d rejected", loaded, failed)
}
