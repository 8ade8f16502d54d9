package tokenizer

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"github.com/ringo-ai/ringo/gguf"
)

// lingPreTokenizerJSON is the pre_tokenizer of the Ling 2.0 tokenizer.json,
// which llama.cpp identifies as tokenizer.ggml.pre "bailingmoe2".
var lingPreTokenizerJSON = map[string]any{
	"type": "Sequence",
	"pretokenizers": []any{
		map[string]any{"type": "Split", "pattern": map[string]string{"Regex": LingPattern}, "behavior": "Isolated", "invert": false},
		map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
	},
}

// gpt2PreTokenizerJSON is the plain GPT-2 byte-level pre-tokenizer.
var gpt2PreTokenizerJSON = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true}

// FromGGUF builds a tokenizer from GGUF tokenizer metadata (llama.cpp's
// tokenizer.ggml.* keys). Only byte-level BPE (tokenizer.ggml.model "gpt2")
// is supported; tokenizer.ggml.pre selects the pre-tokenizer: "bailingmoe2"
// (also "bailingmoe", "llada-moe") is the Ling split, "gpt2" the GPT-2 one.
// Tokens of type control (3) become special added tokens, user-defined (4)
// non-special added tokens, unused (5) padding entries are left out, all
// others are BPE vocabulary. bos and eos are the tokenizer's BOS/EOS ids
// (tokenizer.ggml.bos_token_id / eos_token_id), -1 when unknown.
func FromGGUF(m *gguf.TokenizerMeta, bos, eos int32) (*Tokenizer, error) {
	if m.Model != "gpt2" {
		return nil, fmt.Errorf("tokenizer: GGUF tokenizer model %q is not supported (only gpt2 byte-level BPE)", m.Model)
	}
	var pre any
	switch m.Pre {
	case gguf.PreBailingMoE2, "bailingmoe", "llada-moe":
		pre = lingPreTokenizerJSON
	case "gpt2":
		pre = gpt2PreTokenizerJSON
	default:
		return nil, fmt.Errorf("tokenizer: GGUF pre-tokenizer %q is not supported (want %s or gpt2)", m.Pre, gguf.PreBailingMoE2)
	}
	if m.TokenTypes != nil && len(m.TokenTypes) != len(m.Tokens) {
		return nil, fmt.Errorf("tokenizer: GGUF metadata has %d token types for %d tokens", len(m.TokenTypes), len(m.Tokens))
	}
	vocab := make(map[string]int32, len(m.Tokens))
	var added []AddedToken
	for i, s := range m.Tokens {
		typ := int32(gguf.TokenNormal)
		if m.TokenTypes != nil {
			typ = m.TokenTypes[i]
		}
		if typ == gguf.TokenUnused {
			continue
		}
		if s == "" {
			return nil, fmt.Errorf("tokenizer: GGUF token %d is empty", i)
		}
		if !utf8.ValidString(s) {
			return nil, fmt.Errorf("tokenizer: GGUF token %d (%q) is not valid UTF-8", i, s)
		}
		if _, dup := vocab[s]; !dup {
			vocab[s] = int32(i)
		}
		if typ == gguf.TokenControl || typ == gguf.TokenUserDefined {
			added = append(added, AddedToken{ID: int32(i), Content: s, Special: typ == gguf.TokenControl})
		}
	}
	for i, mg := range m.Merges {
		if !utf8.ValidString(mg) {
			return nil, fmt.Errorf("tokenizer: GGUF merge %d (%q) is not valid UTF-8", i, mg)
		}
	}
	merges := m.Merges
	if merges == nil {
		merges = []string{}
	}
	doc := map[string]any{
		"added_tokens":  added,
		"normalizer":    nil,
		"pre_tokenizer": pre,
		"decoder":       map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{
			"type":   "BPE",
			"vocab":  vocab,
			"merges": merges,
		},
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: GGUF metadata: %w", err)
	}
	t, err := FromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: GGUF metadata: %w", err)
	}
	if bos >= 0 && int(bos) < len(t.idToTok) {
		t.bos = bos
	}
	if eos >= 0 && int(eos) < len(t.idToTok) {
		t.eos = eos
	}
	return t, nil
}
