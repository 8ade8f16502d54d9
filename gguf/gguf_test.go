package gguf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/quant"
)

var testKVs = []KV{
	{"general.architecture", "bailingmoe2"},
	{"t.u8", uint8(200)}, {"t.i8", int8(-5)}, {"t.u16", uint16(60000)}, {"t.i16", int16(-300)},
	{"t.u32", uint32(4000000000)}, {"t.i32", int32(-7)}, {"t.f32", float32(1.5)}, {"t.bool", true},
	{"t.str", "héllo"}, {"t.u64", uint64(1 << 60)}, {"t.i64", int64(-1 << 60)}, {"t.f64", 2.25},
	{"t.au8", []uint8{1, 2, 3}}, {"t.ai8", []int8{-1, 2}}, {"t.au16", []uint16{7}}, {"t.ai16", []int16{-7, 8}},
	{"t.au32", []uint32{1, 2}}, {"t.ai32", []int32{-1, -2, 3}}, {"t.af32", []float32{0.5, -1}},
	{"t.abool", []bool{true, false, true}}, {"t.astr", []string{"a", "", "Ġt"}},
	{"t.au64", []uint64{9}}, {"t.ai64", []int64{-9}}, {"t.af64", []float64{3.5}},
	{"t.empty", []int32{}}, {"t.nested", []any{[]uint32{1, 2}, []string{"x"}}},
}

type testTensor struct {
	name  string
	typ   quant.Type
	shape []int64
	data  []byte
}

func makeTensors(r *rand.Rand) []testTensor {
	var ts []testTensor
	for i, c := range []struct {
		typ   quant.Type
		shape []int64
	}{
		{quant.F32, []int64{7}}, {quant.F16, []int64{5, 3}}, {quant.BF16, []int64{4, 2, 2}},
		{quant.Q4_0, []int64{64, 3}}, {quant.Q8_0, []int64{32, 1, 2, 2}}, {quant.Q4_K, []int64{256, 2}},
		{quant.Q6_K, []int64{512, 3, 4}}, {quant.F32, []int64{}},
	} {
		n := int64(1)
		for _, d := range c.shape {
			n *= d
		}
		x := make([]float32, n)
		for j := range x {
			x[j] = float32(r.NormFloat64())
		}
		b := make([]byte, quant.RowBytes(c.typ, int(n)))
		if err := quant.Quantize(c.typ, b, x); err != nil {
			panic(err)
		}
		ts = append(ts, testTensor{name: "t" + string(rune('a'+i)) + ".weight", typ: c.typ, shape: c.shape, data: b})
	}
	return ts
}

func writeFile(t *testing.T, w *Writer, ts []testTensor, order []int) {
	t.Helper()
	for _, kv := range testKVs {
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range ts {
		if err := w.AddTensorInfo(tt.name, tt.typ, tt.shape); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range order {
		var err error
		if i%2 == 0 {
			err = w.WriteTensorData(ts[i].name, ts[i].data)
		} else {
			err = w.WriteTensorFrom(ts[i].name, bytes.NewReader(ts[i].data))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, f *File, ts []testTensor, align int) {
	t.Helper()
	if f.Alignment != align || f.DataOffset%int64(align) != 0 {
		t.Fatalf("alignment %d data offset %d", f.Alignment, f.DataOffset)
	}
	for _, kv := range testKVs {
		v, ok := f.Meta(kv.Key)
		if !ok || !reflect.DeepEqual(v, kv.Value) {
			t.Errorf("key %s: got %#v want %#v", kv.Key, v, kv.Value)
		}
	}
	if len(f.Tensors) != len(ts) {
		t.Fatalf("%d tensors", len(f.Tensors))
	}
	for i, tt := range ts {
		ti := f.Tensor(tt.name)
		if ti == nil || f.Tensors[i] != ti {
			t.Fatalf("tensor %s missing/out of order", tt.name)
		}
		if ti.Type != tt.typ || !reflect.DeepEqual(ti.Shape, tt.shape) || !bytes.Equal(ti.Data, tt.data) {
			t.Errorf("tensor %s mismatch: %v %v", tt.name, ti.Type, ti.Shape)
		}
		if ti.Offset%int64(align) != 0 {
			t.Errorf("tensor %s offset %d unaligned", tt.name, ti.Offset)
		}
	}
	// typed getters
	if s, err := f.String("t.str"); err != nil || s != "héllo" {
		t.Error(s, err)
	}
	if u, err := f.Uint("t.u64"); err != nil || u != 1<<60 {
		t.Error(u, err)
	}
	if i, err := f.Int("t.i8"); err != nil || i != -5 {
		t.Error(i, err)
	}
	if x, err := f.Float("t.f32"); err != nil || x != 1.5 {
		t.Error(x, err)
	}
	if ss, err := f.Strings("t.astr"); err != nil || len(ss) != 3 {
		t.Error(ss, err)
	}
	if is, err := f.Ints("t.ai32"); err != nil || !reflect.DeepEqual(is, []int64{-1, -2, 3}) {
		t.Error(is, err)
	}
	if fs, err := f.Floats("t.af32"); err != nil || !reflect.DeepEqual(fs, []float64{0.5, -1}) {
		t.Error(fs, err)
	}
	if _, err := f.Uint("t.i8"); err == nil {
		t.Error("negative value accepted as uint")
	}
	if _, err := f.String("nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "nope") {
		t.Error(err)
	}
	if _, err := f.Bool("t.str"); err == nil || !strings.Contains(err.Error(), "t.str") {
		t.Error(err)
	}
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ts := makeTensors(r)
	dir := t.TempDir()
	inOrder := make([]int, len(ts))
	for i := range inOrder {
		inOrder[i] = i
	}
	for _, align := range []int{32, 64} {
		// 1. file via Create, sequential
		path := filepath.Join(dir, "seq.gguf")
		w, err := Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.SetAlignment(align); err != nil {
			t.Fatal(err)
		}
		writeFile(t, w, ts, inOrder)
		f, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if align != 32 {
			if a, _ := f.Uint(KeyAlignment); a != uint64(align) {
				t.Error("alignment key", a)
			}
		}
		checkFile(t, f, ts, align)
		// the mapping's pages dropped from the process read back the same,
		// tensor by tensor and whole; memory outside the mapping is left
		// alone
		heap := []byte{1, 2, 3}
		if err := f.DropRange(heap); err != nil || heap[2] != 3 {
			t.Fatalf("DropRange of heap memory: %v, %v", err, heap)
		}
		for _, tt := range ts {
			if err := f.DropRange(f.Tensor(tt.name).Data); err != nil {
				t.Fatal(err)
			}
		}
		checkFile(t, f, ts, align)
		if err := f.DropPages(); err != nil {
			t.Fatal(err)
		}
		checkFile(t, f, ts, align)
		seq, _ := os.ReadFile(path)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// 2. seekable, out of order: identical bytes
		fh, err := os.Create(filepath.Join(dir, "ooo.gguf"))
		if err != nil {
			t.Fatal(err)
		}
		w = NewWriter(fh)
		w.SetAlignment(align)
		rev := make([]int, len(ts))
		for i := range rev {
			rev[i] = len(ts) - 1 - i
		}
		writeFile(t, w, ts, rev)
		fh.Close()
		ooo, _ := os.ReadFile(fh.Name())
		if !bytes.Equal(seq, ooo) {
			t.Fatalf("out-of-order file differs (%d vs %d bytes)", len(seq), len(ooo))
		}
		// 3. plain io.Writer
		var buf bytes.Buffer
		w = NewWriter(struct{ *bytes.Buffer }{&buf})
		w.SetAlignment(align)
		writeFile(t, w, ts, inOrder)
		if !bytes.Equal(seq, buf.Bytes()) {
			t.Fatal("buffer output differs")
		}
	}
}

func TestWriterErrors(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(struct{ *bytes.Buffer }{&buf})
	if err := w.AddKV("x", struct{}{}); err == nil {
		t.Error("bad value type accepted")
	}
	if err := w.AddTensorInfo("a", quant.Q4_K, []int64{100}); err == nil {
		t.Error("ragged row accepted")
	}
	if err := w.AddTensorInfo("a", quant.F32, []int64{1, 1, 1, 1, 1}); err == nil {
		t.Error("5 dims accepted")
	}
	w.AddTensorInfo("a", quant.F32, []int64{4})
	w.AddTensorInfo("b", quant.F32, []int64{4})
	if err := w.AddTensorInfo("a", quant.F32, []int64{4}); err == nil {
		t.Error("duplicate accepted")
	}
	if err := w.WriteTensorData("b", make([]byte, 16)); err == nil {
		t.Error("out of order on plain writer accepted")
	}
	if err := w.WriteTensorData("a", make([]byte, 15)); err == nil {
		t.Error("wrong size accepted")
	}
	if err := w.WriteTensorData("a", make([]byte, 16)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensorData("a", make([]byte, 16)); err == nil {
		t.Error("double write accepted")
	}
	if err := w.AddKV("late", 1); err == nil {
		t.Error("AddKV after header accepted")
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("missing tensor not reported: %v", err)
	}
}

func sampleFile(t testing.TB) []byte {
	r := rand.New(rand.NewPCG(3, 4))
	ts := makeTensors(r)
	var buf bytes.Buffer
	w := NewWriter(struct{ *bytes.Buffer }{&buf})
	for _, kv := range testKVs {
		w.AddKV(kv.Key, kv.Value)
	}
	for _, tt := range ts {
		w.AddTensorInfo(tt.name, tt.typ, tt.shape)
	}
	for _, tt := range ts {
		if err := w.WriteTensorData(tt.name, tt.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestCorrupt(t *testing.T) {
	good := sampleFile(t)
	if _, err := OpenBytes("good", good); err != nil {
		t.Fatal(err)
	}
	// every truncation must fail cleanly (the last tensor is empty-shaped F32
	// scalar, so only truncations inside data before it matter)
	for n := 0; n < len(good); n++ {
		_, err := OpenBytes("trunc.gguf", good[:n])
		if err == nil {
			// acceptable only if nothing the header references is missing
			f, _ := OpenBytes("x", good[:n])
			last := f.Tensors[len(f.Tensors)-1]
			if f.DataOffset+last.Offset+last.Size() > int64(n) {
				t.Fatalf("truncated at %d accepted", n)
			}
			continue
		}
		if !strings.Contains(err.Error(), "trunc.gguf") {
			t.Fatalf("error does not name the file: %v", err)
		}
	}
	// data truncation error names the tensor
	_, err := OpenBytes("f", good[:len(good)-40])
	if err == nil || !strings.Contains(err.Error(), "tensor") {
		t.Errorf("data truncation: %v", err)
	}
	// random byte flips: no panics
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 3000; i++ {
		b := append([]byte(nil), good...)
		for k := 0; k < 1+r.IntN(4); k++ {
			p := r.IntN(min(len(b), 1200))
			b[p] = byte(r.IntN(256))
		}
		OpenBytes("flip", b)
	}
	bad := append([]byte(nil), good...)
	bad[0] = 'X'
	if _, err := OpenBytes("m", bad); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Error(err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Error("missing file opened")
	}
	empty := filepath.Join(t.TempDir(), "empty.gguf")
	os.WriteFile(empty, nil, 0o644)
	if _, err := Open(empty); err == nil || !strings.Contains(err.Error(), "empty.gguf") {
		t.Error(err)
	}
}

func FuzzOpen(f *testing.F) {
	f.Add(sampleFile(f))
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := OpenBytes("fuzz", b)
		if err != nil {
			return
		}
		for _, ti := range file.Tensors {
			if int64(len(ti.Data)) != ti.Size() {
				t.Fatalf("tensor %s: %d bytes, size %d", ti.Name, len(ti.Data), ti.Size())
			}
		}
		ReadModelMeta(file)
		ReadTokenizerMeta(file)
	})
}

func TestNames(t *testing.T) {
	cases := []struct{ arch, hf, gg string }{
		{ArchBailingMoE2, "model.word_embeddings.weight", "token_embd.weight"},
		{ArchBailingMoE2, "model.norm.weight", "output_norm.weight"},
		{ArchBailingMoE2, "lm_head.weight", "output.weight"},
		{ArchBailingMoE2, "model.layers.3.attention.query_key_value.weight", "blk.3.attn_qkv.weight"},
		{ArchBailingMoE2, "model.layers.3.attention.query_layernorm.weight", "blk.3.attn_q_norm.weight"},
		{ArchBailingMoE2, "model.layers.3.attention.key_layernorm.weight", "blk.3.attn_k_norm.weight"},
		{ArchBailingMoE2, "model.layers.3.attention.dense.weight", "blk.3.attn_output.weight"},
		{ArchBailingMoE2, "model.layers.3.input_layernorm.weight", "blk.3.attn_norm.weight"},
		{ArchBailingMoE2, "model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"},
		{ArchBailingMoE2, "model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight"},
		{ArchBailingMoE2, "model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight"},
		{ArchBailingMoE2, "model.layers.12.mlp.gate.weight", "blk.12.ffn_gate_inp.weight"},
		{ArchBailingMoE2, "model.layers.12.mlp.gate.expert_bias", "blk.12.exp_probs_b.bias"},
		{ArchBailingMoE2, "model.layers.12.mlp.experts.255.up_proj.weight", "blk.12.ffn_up_exps.weight"},
		{ArchBailingMoE2, "model.layers.12.mlp.shared_experts.down_proj.weight", "blk.12.ffn_down_shexp.weight"},
		{ArchBailingMoELinear, "model.layers.0.attention.g_proj.weight", "blk.0.attn_gate.weight"},
		{ArchBailingMoELinear, "model.layers.0.attention.g_norm.weight", "blk.0.attn_gate_norm.weight"},
		{ArchBailingMoELinear, "model.layers.4.attention.query_key_value.weight", "blk.4.attn_qkv.weight"},
	}
	for _, c := range cases {
		g, ok := HFToGGUF(c.arch, c.hf)
		if !ok || g != c.gg {
			t.Errorf("HFToGGUF(%s, %s) = %q %v, want %q", c.arch, c.hf, g, ok, c.gg)
		}
		if _, _, _, isExp := ExpertIndex(c.hf); !isExp {
			if h, ok := GGUFToHF(c.arch, c.gg); !ok || h != c.hf {
				t.Errorf("GGUFToHF(%s) = %q %v", c.gg, h, ok)
			}
		}
	}
	for _, bad := range []string{"model.layers.0.attention.g_proj.weight", "model.mtp.foo", "model.layers.x.mlp.gate.weight",
		"model.layers.01.mlp.gate.weight", "model.layers.1.attention.rotary_emb.inv_freq", "foo"} {
		if g, ok := HFToGGUF(ArchBailingMoE2, bad); ok {
			t.Errorf("HFToGGUF(%s) = %s", bad, g)
		}
	}
	if l, e, s, ok := ExpertIndex("model.layers.7.mlp.experts.31.down_proj.weight"); !ok || l != 7 || e != 31 || s != "model.layers.7.mlp.experts.down_proj.weight" {
		t.Error(l, e, s, ok)
	}
	if a, ok := ArchForHF("BailingMoeLinearV2ForCausalLM"); !ok || a != ArchBailingMoELinear {
		t.Error(a)
	}
}

func ringMini() *ModelMeta {
	return &ModelMeta{
		Arch: ArchBailingMoELinear, Name: "Ring-mini-linear-2.0",
		VocabSize: 157184, HiddenSize: 2048, NumLayers: 20, NumHeads: 16, NumKVHeads: 4, HeadDim: 128,
		IntermediateSize: 5120, MoEIntermediateSize: 512, SharedExpertInterSize: 512,
		NumExperts: 256, NumExpertsPerTok: 8, NumSharedExperts: 1, NumExpertGroups: 8, TopKGroup: 4,
		RoutedScalingFactor: 2.5, NormTopKProb: true, ScoreFunction: "sigmoid", FirstKDenseReplace: 1,
		RopeTheta: 1e6, RotaryDim: 64, RMSNormEps: 1e-6, MaxPositionEmbeddings: 131072,
		LayerGroupSize: 5, GroupNormSize: 4, BOSTokenID: 156891, EOSTokenIDs: []int{156892, 156895}, PadTokenID: 156892,
		FileType: 15,
	}
}

func TestModelMetaRoundTrip(t *testing.T) {
	for _, m := range []*ModelMeta{ringMini(), func() *ModelMeta {
		m := ringMini()
		m.Arch, m.LayerGroupSize, m.GroupNormSize, m.Name = ArchBailingMoE2, 0, 0, "Ling-mini-2.0"
		m.RopeTheta, m.MaxPositionEmbeddings, m.NextNPredictLayers = 600000, 32768, 1
		m.RopeScaling = &RopeScaling{Type: "yarn", Factor: 4, OriginalContext: 32768}
		return m
	}()} {
		kvs, err := m.KVs()
		if err != nil {
			t.Fatal(err)
		}
		tok := &TokenizerMeta{Model: "gpt2", Pre: PreBailingMoE2, Tokens: []string{"a", "b", "Ġ"},
			TokenTypes: []int32{1, 1, 3}, Merges: []string{"a b"}, ChatTemplate: "{{x}}"}
		tkvs, err := tok.KVs()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		w := NewWriter(struct{ *bytes.Buffer }{&buf})
		if err := w.AddKVs(append(kvs, tkvs...)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := OpenBytes("meta.gguf", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadModelMeta(f)
		if err != nil {
			t.Fatal(err)
		}
		want := *m
		want.RopeTheta = float64(float32(want.RopeTheta))
		want.RMSNormEps = float64(float32(want.RMSNormEps))
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("ModelMeta round trip:\n got %+v\nwant %+v", got, &want)
		}
		gt, err := ReadTokenizerMeta(f)
		if err != nil || !reflect.DeepEqual(gt, tok) {
			t.Errorf("tokenizer: %+v %v", gt, err)
		}
		// llama.cpp key spellings
		for _, k := range []string{m.Arch + ".block_count", m.Arch + ".expert_group_used_count", m.Arch + ".rope.dimension_count",
			m.Arch + ".expert_weights_scale", m.Arch + ".leading_dense_block_count", "tokenizer.ggml.pre"} {
			if !f.Has(k) {
				t.Errorf("missing key %s", k)
			}
		}
		if bc, _ := f.Uint(m.Arch + ".block_count"); int(bc) != m.NumLayers+m.NextNPredictLayers {
			t.Error("block_count", bc)
		}
	}
	m := ringMini()
	soft := []int{}
	for l := 0; l < m.NumLayers; l++ {
		if m.IsSoftmaxLayer(l) {
			soft = append(soft, l)
		}
	}
	if !reflect.DeepEqual(soft, []int{4, 9, 14, 19}) {
		t.Error(soft)
	}
	// missing required key names the key
	var buf bytes.Buffer
	w := NewWriter(struct{ *bytes.Buffer }{&buf})
	w.AddKV(KeyArchitecture, ArchBailingMoE2)
	w.Close()
	f, _ := OpenBytes("min.gguf", buf.Bytes())
	if _, err := ReadModelMeta(f); err == nil || !strings.Contains(err.Error(), "bailingmoe2.block_count") || !strings.Contains(err.Error(), "min.gguf") {
		t.Error(err)
	}
}
