package ggufmodel_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/tokenizer"
)

// defaultModelDir is the embedded default model: a tiny Ring-linear with
// the Ling tokenizer (6000 tokens, vocabulary 6016) and chat template.
var defaultModelDir = filepath.Join("..", "defaultmodel", "files")

// TestTokenizerAndTemplate converts the default model to GGUF and checks
// that the tokenizer and chat template read back from the file behave like
// the directory's: same ids on the tokenizer test cases, same decoding,
// BOS/EOS, template source and rendering.
func TestTokenizerAndTemplate(t *testing.T) {
	path := convert(t, defaultModelDir, quant.Q8_0)
	tok, tmpl, err := ggufmodel.LoadText(path)
	if err != nil {
		t.Fatal(err)
	}
	dirTok, err := tokenizer.LoadDir(defaultModelDir)
	if err != nil {
		t.Fatal(err)
	}
	dirTmpl, err := chat.LoadTemplate(defaultModelDir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != dirTok.VocabSize() {
		t.Errorf("vocab size %d, directory %d", tok.VocabSize(), dirTok.VocabSize())
	}
	for _, f := range []func(*tokenizer.Tokenizer) (int32, bool){(*tokenizer.Tokenizer).BOS, (*tokenizer.Tokenizer).EOS} {
		a, aok := f(tok)
		b, bok := f(dirTok)
		if a != b || aok != bok {
			t.Errorf("BOS/EOS %d %v, directory %d %v", a, aok, b, bok)
		}
	}
	if !slices.Equal(tok.AddedTokens(), dirTok.AddedTokens()) {
		t.Errorf("added tokens differ:\n%v\n%v", tok.AddedTokens(), dirTok.AddedTokens())
	}
	data, err := os.ReadFile(filepath.Join("..", "tokenizer", "testdata", "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Text    string  `json:"text"`
		IDs     []int32 `json:"ids"`
		Decoded string  `json:"decoded"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		got := tok.Encode(c.Text, true)
		if !slices.Equal(got, c.IDs) {
			t.Fatalf("case %d %q: ids %v, want %v", i, c.Text, got, c.IDs)
		}
		if d := tok.Decode(got, false); d != c.Decoded {
			t.Fatalf("case %d: decoded %q, want %q", i, d, c.Decoded)
		}
	}
	if tmpl.Source() != dirTmpl.Source() || tmpl.BOS != dirTmpl.BOS || tmpl.EOS != dirTmpl.EOS {
		t.Errorf("template differs: bos %q/%q eos %q/%q, same source %v", tmpl.BOS, dirTmpl.BOS, tmpl.EOS, dirTmpl.EOS, tmpl.Source() == dirTmpl.Source())
	}
	msgs := []chat.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hello <think> there"}}
	a, err := tmpl.Render(msgs, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dirTmpl.Render(msgs, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("rendered prompts differ:\n%s\n%s", a, b)
	}

	// The engine loads the file; its stop ids are the directory model's.
	lf, err := engine.Load(path, engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	ld, err := engine.Load(defaultModelDir, engine.Options{Threads: 1, Quantize: "q8_0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	if !slices.Equal(lf.Info().EOS, ld.Info().EOS) || lf.Info().VocabSize != ld.Info().VocabSize {
		t.Errorf("GGUF info %+v, directory %+v", lf.Info(), ld.Info())
	}
	prompt := tok.Encode(a, true)
	gf, _, err := engine.Generate(context.Background(), lf, lf.NewState(), prompt, engine.GenerateOptions{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	gd, _, err := engine.Generate(context.Background(), ld, ld.NewState(), prompt, engine.GenerateOptions{MaxTokens: 8})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gf, gd) {
		t.Errorf("greedy continuation from the GGUF file %v, quantize-on-load %v", gf, gd)
	}
	t.Logf("generated %q", tok.Decode(gf, false))
}

// TestFileMetadata checks what Convert stores besides the tensors.
func TestFileMetadata(t *testing.T) {
	path := convert(t, defaultModelDir, quant.Q8_0)
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	meta, err := gguf.ReadModelMeta(f)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Arch != gguf.ArchBailingMoELinear || meta.LayerGroupSize != 2 || meta.GroupNormSize != 2 || meta.VocabSize != 6016 {
		t.Errorf("meta %+v", meta)
	}
	if ft, _ := f.Uint(gguf.KeyFileType); ft != 7 {
		t.Errorf("file type %d, want 7 (MOSTLY_Q8_0)", ft)
	}
	tm, err := gguf.ReadTokenizerMeta(f)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Model != "gpt2" || tm.Pre != gguf.PreBailingMoE2 || len(tm.Tokens) != 6016 || tm.ChatTemplate == "" {
		t.Errorf("tokenizer model %q pre %q, %d tokens, template %d bytes", tm.Model, tm.Pre, len(tm.Tokens), len(tm.ChatTemplate))
	}
	if tm.TokenTypes[4] != gguf.TokenControl || tm.TokenTypes[100] != gguf.TokenNormal || tm.TokenTypes[6010] != gguf.TokenUnused || tm.Tokens[6010] != "[PAD6010]" {
		t.Errorf("token types %d %d %d %q", tm.TokenTypes[4], tm.TokenTypes[100], tm.TokenTypes[6010], tm.Tokens[6010])
	}
	eos, _ := f.Uint(gguf.KeyEOSID)
	ids, _ := f.Ints(gguf.KeyEOSIDs)
	if eos != 4 || !slices.Equal(ids, []int64{1, 4}) {
		t.Errorf("eos_token_id %d (want 4, <|role_end|>), eos_token_ids %v (want [1 4], config + generation_config)", eos, ids)
	}
	gm, err := ggufmodel.FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"eos_token_id": [`, `"rms_norm_eps": 0.000001`, `"tie_word_embeddings": false`, `"moe_router_enable_expert_bias": true`} {
		if !strings.Contains(string(gm.ConfigJSON), want) {
			t.Errorf("config.json lacks %s:\n%s", want, gm.ConfigJSON)
		}
	}
}

// TestEngineQuantizeOption checks engine.Options.Quantize: an unknown type
// is refused, and weights that cannot take the type are reported.
func TestEngineQuantizeOption(t *testing.T) {
	if _, err := engine.Load(fixtureDir("tiny-softmax"), engine.Options{Threads: 1, Quantize: "Q5_K"}); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("Quantize Q5_K: error %v", err)
	}
	l, err := engine.Load(fixtureDir("tiny-softmax"), engine.Options{Threads: 1, Quantize: "Q4_K"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if len(l.Notes) == 0 || !strings.Contains(l.Notes[0], "block size 256") {
		t.Errorf("notes %q", l.Notes)
	}
	if _, err := engine.Load(filepath.Join(t.TempDir(), "missing.gguf"), engine.Options{}); err == nil || !strings.Contains(err.Error(), "missing.gguf") {
		t.Errorf("missing file: error %v", err)
	}
}
