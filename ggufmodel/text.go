package ggufmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/tokenizer"
)

// tokenIDs returns the tokenizer BOS and EOS ids of f
// (tokenizer.ggml.bos_token_id / eos_token_id), -1 when absent.
func tokenIDs(f *gguf.File) (bos, eos int32, err error) {
	get := func(key string) (int32, error) {
		v, err := f.UintOr(key, math.MaxUint64)
		if err != nil {
			return -1, err
		}
		if v == math.MaxUint64 || v > math.MaxInt32 {
			return -1, nil
		}
		return int32(v), nil
	}
	if bos, err = get(gguf.KeyBOSID); err != nil {
		return -1, -1, err
	}
	if eos, err = get(gguf.KeyEOSID); err != nil {
		return -1, -1, err
	}
	return bos, eos, nil
}

// Tokenizer builds the tokenizer stored in the file's tokenizer.ggml.*
// metadata (see tokenizer.FromGGUF).
func (m *Model) Tokenizer() (*tokenizer.Tokenizer, error) {
	tm, err := gguf.ReadTokenizerMeta(m.File)
	if err != nil {
		return nil, fmt.Errorf("%s: tokenizer: %w", m.Path, err)
	}
	bos, eos, err := tokenIDs(m.File)
	if err != nil {
		return nil, fmt.Errorf("%s: tokenizer: %w", m.Path, err)
	}
	t, err := tokenizer.FromGGUF(tm, bos, eos)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return t, nil
}

// ChatTemplate compiles tokenizer.chat_template, with bos_token and
// eos_token set to the strings of the tokenizer's BOS and EOS ids. A file
// without a template gets the built-in Ling template (as a model directory
// without one does, see chat.LoadTemplate).
func (m *Model) ChatTemplate() (*chat.Template, error) {
	src, err := m.File.StringOr(gguf.KeyChatTemplate, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	var bos, eos string
	if toks, err := m.File.Strings(gguf.KeyTokens); err == nil {
		b, e, err := tokenIDs(m.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.Path, err)
		}
		if b >= 0 && int(b) < len(toks) {
			bos = toks[b]
		}
		if e >= 0 && int(e) < len(toks) {
			eos = toks[e]
		}
	}
	if src == "" {
		src = chat.LingTemplate()
		if bos == "" {
			bos = "<|startoftext|>"
		}
		if eos == "" {
			eos = "<|role_end|>"
		}
	}
	t, err := chat.NewTemplate(src, bos, eos)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Path, err)
	}
	return t, nil
}

// LoadText returns the tokenizer and chat template of a GGUF model file
// (what tokenizer.LoadDir and chat.LoadTemplate return for a model
// directory).
func LoadText(path string) (*tokenizer.Tokenizer, *chat.Template, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	m := &Model{Path: path, File: f}
	tok, err := m.Tokenizer()
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := m.ChatTemplate()
	if err != nil {
		return nil, nil, err
	}
	return tok, tmpl, nil
}

// DirTokenizer is the tokenizer of a model directory in GGUF form.
type DirTokenizer struct {
	Meta *gguf.TokenizerMeta
	// BOS and EOS are the ids of tokenizer_config.json's bos_token and
	// eos_token (-1 when not given).
	BOS, EOS int
}

// ReadDirTokenizer converts dir/tokenizer.json (byte-level BPE with the Ling
// or GPT-2 pre-tokenizer), tokenizer_config.json (bos/eos token, add_bos/eos)
// and the chat template (tokenizer_config.json chat_template,
// chat_template.jinja or the built-in Ling template) into GGUF tokenizer
// metadata, as llama.cpp's converter does: added special tokens get type
// control, other added tokens user-defined, and ids below vocabSize that no
// token uses become "[PADn]" entries of type unused. It returns nil and
// os.ErrNotExist (wrapped) when dir has no tokenizer.json.
func ReadDirTokenizer(dir string, vocabSize int) (*DirTokenizer, error) {
	path := filepath.Join(dir, "tokenizer.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var j struct {
		AddedTokens []struct {
			ID      int32  `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		PreTokenizer json.RawMessage `json:"pre_tokenizer"`
		Model        struct {
			Type   string           `json:"type"`
			Vocab  map[string]int32 `json:"vocab"`
			Merges json.RawMessage  `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("tokenizer: parse %s: %w", path, err)
	}
	if j.Model.Type != "BPE" && j.Model.Type != "" {
		return nil, fmt.Errorf("tokenizer: %s: model type %q is not byte-level BPE", path, j.Model.Type)
	}
	pre, err := preName(j.PreTokenizer)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	size := vocabSize
	for _, id := range j.Model.Vocab {
		size = max(size, int(id)+1)
	}
	for _, a := range j.AddedTokens {
		size = max(size, int(a.ID)+1)
	}
	tm := &gguf.TokenizerMeta{Model: "gpt2", Pre: pre, Tokens: make([]string, size), TokenTypes: make([]int32, size)}
	for s, id := range j.Model.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer: %s: negative id %d for %q", path, id, s)
		}
		tm.Tokens[id], tm.TokenTypes[id] = s, gguf.TokenNormal
	}
	for _, a := range j.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("tokenizer: %s: invalid added token %d %q", path, a.ID, a.Content)
		}
		tm.Tokens[a.ID], tm.TokenTypes[a.ID] = a.Content, gguf.TokenUserDefined
		if a.Special {
			tm.TokenTypes[a.ID] = gguf.TokenControl
		}
	}
	for i := range tm.Tokens {
		if tm.Tokens[i] == "" {
			tm.Tokens[i], tm.TokenTypes[i] = fmt.Sprintf("[PAD%d]", i), gguf.TokenUnused
		}
	}
	if tm.Merges, err = mergeStrings(j.Model.Merges); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	dt := &DirTokenizer{Meta: tm, BOS: -1, EOS: -1}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	if b, err := os.ReadFile(cfgPath); err == nil {
		var cfg map[string]json.RawMessage
		if err := json.Unmarshal(b, &cfg); err != nil {
			return nil, fmt.Errorf("tokenizer: parse %s: %w", cfgPath, err)
		}
		find := func(key string) int {
			name := tokenizer.TokenName(cfg[key])
			if name == "" {
				return -1
			}
			for id, s := range tm.Tokens {
				if s == name && tm.TokenTypes[id] != gguf.TokenUnused {
					return id
				}
			}
			return -1
		}
		dt.BOS, dt.EOS = find("bos_token"), find("eos_token")
		flag := func(key string) bool {
			var v bool
			return json.Unmarshal(cfg[key], &v) == nil && v
		}
		tm.AddBOS, tm.AddEOS = flag("add_bos_token"), flag("add_eos_token")
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	tmpl, err := chat.LoadTemplate(dir)
	if err != nil {
		return nil, err
	}
	tm.ChatTemplate = tmpl.Source()
	return dt, nil
}

// preName identifies a tokenizer.json pre_tokenizer by its GGUF
// tokenizer.ggml.pre name.
func preName(raw json.RawMessage) (string, error) {
	var p struct {
		Type          string            `json:"type"`
		Pretokenizers []json.RawMessage `json:"pretokenizers"`
		Pattern       map[string]string `json:"pattern"`
		Behavior      string            `json:"behavior"`
		Invert        bool              `json:"invert"`
		UseRegex      *bool             `json:"use_regex"`
		AddPrefix     bool              `json:"add_prefix_space"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", fmt.Errorf("parse pre_tokenizer: %w", err)
	}
	isLing := func(r json.RawMessage) bool {
		var s struct {
			Type     string            `json:"type"`
			Pattern  map[string]string `json:"pattern"`
			Behavior string            `json:"behavior"`
			Invert   bool              `json:"invert"`
		}
		return json.Unmarshal(r, &s) == nil && s.Type == "Split" && s.Pattern["Regex"] == tokenizer.LingPattern &&
			s.Behavior == "Isolated" && !s.Invert
	}
	isPlainByteLevel := func(r json.RawMessage) bool {
		var s struct {
			Type      string `json:"type"`
			AddPrefix bool   `json:"add_prefix_space"`
			UseRegex  *bool  `json:"use_regex"`
		}
		return json.Unmarshal(r, &s) == nil && s.Type == "ByteLevel" && !s.AddPrefix && s.UseRegex != nil && !*s.UseRegex
	}
	switch {
	case p.Type == "Sequence" && len(p.Pretokenizers) == 2 && isLing(p.Pretokenizers[0]) && isPlainByteLevel(p.Pretokenizers[1]):
		return gguf.PreBailingMoE2, nil
	case p.Type == "ByteLevel" && !p.AddPrefix && (p.UseRegex == nil || *p.UseRegex):
		return "gpt2", nil
	}
	return "", fmt.Errorf("pre_tokenizer %s has no GGUF equivalent (want the Ling split or plain GPT-2 byte-level)", strings.TrimSpace(string(raw)))
}

// mergeStrings returns tokenizer.json merges as GGUF "a b" strings (the
// file may use either that form or [a, b] pairs).
func mergeStrings(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("parse merges: %w", err)
	}
	out := make([]string, len(items))
	for i, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			if !strings.Contains(s, " ") {
				return nil, fmt.Errorf("merge %d %q: missing space", i, s)
			}
			out[i] = s
			continue
		}
		var p []string
		if err := json.Unmarshal(it, &p); err != nil || len(p) != 2 {
			return nil, fmt.Errorf("merge %d: neither \"a b\" nor [a, b]: %s", i, it)
		}
		if strings.Contains(p[0], " ") || strings.Contains(p[1], " ") {
			return nil, fmt.Errorf("merge %d %q: a token contains a space, which GGUF's \"a b\" form cannot store", i, p)
		}
		out[i] = p[0] + " " + p[1]
	}
	return out, nil
}
