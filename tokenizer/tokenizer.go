// Package tokenizer implements the byte-level BPE tokenizers of Hugging Face
// tokenizer.json files, as used by the Ling 2.0 and Ring-linear 2.0 models.
//
// Encoding reproduces the Hugging Face `tokenizers` library: added (special)
// tokens are split out first, the remaining text is pre-tokenized (with an
// exact hand-written scanner for the Ling pre-tokenizer regex and a
// backtracking regex engine for other patterns) and each piece is encoded
// with BPE merges. A Tokenizer is safe for concurrent use.
package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AddedToken is a token of the tokenizer's added vocabulary (special tokens
// such as <|role_end|> and other user-added tokens).
type AddedToken struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// Tokenizer is a byte-level BPE tokenizer loaded from a Hugging Face
// tokenizer.json. It is safe for concurrent use.
type Tokenizer struct {
	model   *bpe
	pre     preTokenizer
	idToTok []string
	special []bool // by id
	added   []AddedToken
	// addedByFirst indexes added tokens by the first byte of their content,
	// longest content first.
	addedByFirst [256][]int
	isAdded      []bool // by id
	byteDecode   map[rune]byte

	bos, eos int32 // -1 when unknown

	// fastLing is set when the pre-tokenizer is exactly the Ling split, so
	// that Encode can scan without building piece slices.
	fastLing bool
}

type tokenizerJSON struct {
	AddedTokens  []AddedToken    `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type                    string           `json:"type"`
		Vocab                   map[string]int32 `json:"vocab"`
		Merges                  json.RawMessage  `json:"merges"`
		UnkToken                *string          `json:"unk_token"`
		IgnoreMerges            bool             `json:"ignore_merges"`
		ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
		ByteFallback            bool             `json:"byte_fallback"`
	} `json:"model"`
}

// Load reads a Hugging Face tokenizer.json file.
func Load(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := FromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: load %s: %w", path, err)
	}
	return t, nil
}

// LoadDir reads dir/tokenizer.json and, when present, the bos_token and
// eos_token names of dir/tokenizer_config.json.
func LoadDir(dir string) (*Tokenizer, error) {
	t, err := Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(cfgPath)
	if os.IsNotExist(err) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var cfg map[string]json.RawMessage
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("tokenizer: parse %s: %w", cfgPath, err)
	}
	if name := TokenName(cfg["bos_token"]); name != "" {
		if id, ok := t.TokenID(name); ok {
			t.bos = id
		}
	}
	if name := TokenName(cfg["eos_token"]); name != "" {
		if id, ok := t.TokenID(name); ok {
			t.eos = id
		}
	}
	return t, nil
}

// TokenName extracts a token string from a tokenizer_config.json value,
// which is either a JSON string or an object with a "content" field. It
// returns "" for anything else.
func TokenName(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var obj struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		return obj.Content
	}
	return ""
}

// FromJSON builds a tokenizer from the contents of a tokenizer.json file.
func FromJSON(data []byte) (*Tokenizer, error) {
	var j tokenizerJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("parse tokenizer.json: %w", err)
	}
	if j.Model.Type != "BPE" && j.Model.Type != "" {
		return nil, fmt.Errorf("unsupported model type %q (only BPE)", j.Model.Type)
	}
	if s := j.Model.ContinuingSubwordPrefix; s != nil && *s != "" {
		return nil, fmt.Errorf("unsupported BPE continuing_subword_prefix %q", *s)
	}
	if s := j.Model.EndOfWordSuffix; s != nil && *s != "" {
		return nil, fmt.Errorf("unsupported BPE end_of_word_suffix %q", *s)
	}
	if j.Model.ByteFallback {
		return nil, fmt.Errorf("unsupported BPE byte_fallback")
	}
	if n := strings.TrimSpace(string(j.Normalizer)); n != "" && n != "null" {
		return nil, fmt.Errorf("unsupported normalizer %s", n)
	}
	pre, byteLevel, err := parsePreTokenizer(j.PreTokenizer)
	if err != nil {
		return nil, err
	}
	if err := checkDecoder(j.Decoder); err != nil {
		return nil, err
	}

	m := &bpe{
		vocab:        j.Model.Vocab,
		merges:       make(map[uint64]mergeInfo),
		unk:          -1,
		ignoreMerges: j.Model.IgnoreMerges,
		byteLevel:    byteLevel,
		b2r:          bytesToUnicode(),
		cache:        make(map[string][]int32),
	}
	if m.vocab == nil {
		m.vocab = map[string]int32{}
	}
	if j.Model.UnkToken != nil {
		if id, ok := m.vocab[*j.Model.UnkToken]; ok {
			m.unk = id
		}
	}
	for b := 0; b < 256; b++ {
		m.byteID[b] = -1
		if id, ok := m.vocab[string(m.b2r[b])]; ok {
			m.byteID[b] = id
		}
	}
	pairs, err := parseMerges(j.Model.Merges)
	if err != nil {
		return nil, err
	}
	for rank, p := range pairs {
		a, okA := m.vocab[p[0]]
		b, okB := m.vocab[p[1]]
		id, okM := m.vocab[p[0]+p[1]]
		if !okA || !okB || !okM {
			return nil, fmt.Errorf("merge %d (%q %q) refers to unknown tokens", rank, p[0], p[1])
		}
		k := pairKey(a, b)
		if _, dup := m.merges[k]; !dup {
			m.merges[k] = mergeInfo{rank: int32(rank), id: id}
		}
	}

	t := &Tokenizer{model: m, pre: pre, bos: -1, eos: -1, byteDecode: map[rune]byte{}}
	if sp, ok := pre.(*splitPreTokenizer); ok && sp.ling {
		t.fastLing = true
	}
	for b := 0; b < 256; b++ {
		t.byteDecode[m.b2r[b]] = byte(b)
	}
	size := 0
	for _, id := range m.vocab {
		if int(id)+1 > size {
			size = int(id) + 1
		}
	}
	for _, a := range j.AddedTokens {
		if int(a.ID)+1 > size {
			size = int(a.ID) + 1
		}
	}
	t.idToTok = make([]string, size)
	t.special = make([]bool, size)
	t.isAdded = make([]bool, size)
	for s, id := range m.vocab {
		if id < 0 {
			return nil, fmt.Errorf("negative token id %d for %q", id, s)
		}
		t.idToTok[id] = s
	}
	for _, a := range j.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("invalid added token %+v", a)
		}
		t.idToTok[a.ID] = a.Content
		t.special[a.ID] = a.Special
		t.isAdded[a.ID] = true
		t.added = append(t.added, a)
	}
	for i, a := range t.added {
		f := a.Content[0]
		t.addedByFirst[f] = append(t.addedByFirst[f], i)
	}
	for f := range t.addedByFirst {
		l := t.addedByFirst[f]
		sort.SliceStable(l, func(x, y int) bool { return len(t.added[l[x]].Content) > len(t.added[l[y]].Content) })
	}
	return t, nil
}

// parseMerges accepts both merge encodings: "a b" strings and ["a","b"]
// pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("parse merges: %w", err)
	}
	out := make([][2]string, len(items))
	for i, it := range items {
		var s string
		if json.Unmarshal(it, &s) == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("merge %d %q: missing space", i, s)
			}
			out[i] = [2]string{a, b}
			continue
		}
		var p []string
		if err := json.Unmarshal(it, &p); err != nil || len(p) != 2 {
			return nil, fmt.Errorf("merge %d: neither \"a b\" nor [a, b]: %s", i, it)
		}
		out[i] = [2]string{p[0], p[1]}
	}
	return out, nil
}

func checkDecoder(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return fmt.Errorf("missing decoder (only ByteLevel is supported)")
	}
	var d struct {
		Type     string            `json:"type"`
		Decoders []json.RawMessage `json:"decoders"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("parse decoder: %w", err)
	}
	if d.Type != "ByteLevel" {
		return fmt.Errorf("unsupported decoder type %q (only ByteLevel)", d.Type)
	}
	return nil
}

// VocabSize returns the number of token ids (model vocabulary plus added
// tokens): one more than the largest id.
func (t *Tokenizer) VocabSize() int { return len(t.idToTok) }

// TokenID returns the id of a token given in its vocabulary form (byte-level
// characters for model tokens, verbatim content for added tokens).
func (t *Tokenizer) TokenID(s string) (int32, bool) {
	for _, a := range t.added {
		if a.Content == s {
			return a.ID, true
		}
	}
	id, ok := t.model.vocab[s]
	return id, ok
}

// TokenString returns the vocabulary form of a token id, or "" if the id is
// out of range.
func (t *Tokenizer) TokenString(id int32) string {
	if id < 0 || int(id) >= len(t.idToTok) {
		return ""
	}
	return t.idToTok[id]
}

// IsSpecial reports whether id is a special added token.
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// AddedTokens returns the added vocabulary (special and other added tokens).
func (t *Tokenizer) AddedTokens() []AddedToken {
	return append([]AddedToken(nil), t.added...)
}

// BOS returns the id of tokenizer_config.json's bos_token (LoadDir only).
func (t *Tokenizer) BOS() (int32, bool) { return t.bos, t.bos >= 0 }

// EOS returns the id of tokenizer_config.json's eos_token (LoadDir only).
func (t *Tokenizer) EOS() (int32, bool) { return t.eos, t.eos >= 0 }

// isWordRune is the \w of single_word matching.
func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r)
}

// findAdded finds the leftmost-longest added token in text[from:]. It
// returns the matched span (extended by lstrip/rstrip whitespace) and the
// token id, or start = -1 when there is none.
func (t *Tokenizer) findAdded(text string, from int, allowSpecial bool) (start, end int, id int32) {
	for i := from; i < len(text); i++ {
		cands := t.addedByFirst[text[i]]
		for _, ci := range cands {
			a := &t.added[ci]
			if a.Special && !allowSpecial {
				continue
			}
			if !strings.HasPrefix(text[i:], a.Content) {
				continue
			}
			s, e := i, i+len(a.Content)
			if a.SingleWord {
				if r, _ := utf8.DecodeLastRuneInString(text[:s]); s > 0 && isWordRune(r) {
					continue
				}
				if r, _ := utf8.DecodeRuneInString(text[e:]); e < len(text) && isWordRune(r) {
					continue
				}
			}
			if a.LStrip {
				for s > from {
					r, w := utf8.DecodeLastRuneInString(text[:s])
					if !unicode.IsSpace(r) {
						break
					}
					s -= w
				}
			}
			if a.RStrip {
				for e < len(text) {
					r, w := utf8.DecodeRuneInString(text[e:])
					if !unicode.IsSpace(r) {
						break
					}
					e += w
				}
			}
			return s, e, a.ID
		}
	}
	return -1, -1, -1
}

// Encode converts text to token ids without adding BOS/EOS or other
// post-processing tokens. With allowSpecial, special tokens written in the
// text become their ids (as Hugging Face's encode does); otherwise special
// tokens are encoded as plain text. Non-special added tokens are always
// recognised.
func (t *Tokenizer) Encode(text string, allowSpecial bool) []int32 {
	out := make([]int32, 0, len(text)/3+1)
	var pieces []string
	pos := 0
	for pos < len(text) {
		s, e, id := -1, -1, int32(-1)
		if len(t.added) > 0 {
			s, e, id = t.findAdded(text, pos, allowSpecial)
		}
		seg := text[pos:]
		if s >= 0 {
			seg = text[pos:s]
		}
		if t.fastLing {
			for i := 0; i < len(seg); {
				e := lingMatch(seg, i)
				out = t.model.encodeWord(seg[i:e], out)
				i = e
			}
		} else if seg != "" {
			pieces = t.pre.split(seg, pieces[:0])
			for _, p := range pieces {
				out = t.model.encodeWord(p, out)
			}
		}
		if s < 0 {
			break
		}
		out = append(out, id)
		pos = e
	}
	return out
}

// Decode converts token ids back to text. Byte sequences that are not valid
// UTF-8 are replaced by U+FFFD (one per maximal invalid subpart, as Rust's
// String::from_utf8_lossy does). With skipSpecial, special tokens are
// omitted. Unknown ids are ignored.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) string {
	var buf []byte
	for _, id := range ids {
		buf = t.appendTokenBytes(buf, id, skipSpecial)
	}
	return lossyUTF8(buf)
}

// appendTokenBytes appends the raw bytes of one token.
func (t *Tokenizer) appendTokenBytes(buf []byte, id int32, skipSpecial bool) []byte {
	if id < 0 || int(id) >= len(t.idToTok) {
		return buf
	}
	if skipSpecial && t.special[id] {
		return buf
	}
	tok := t.idToTok[id]
	if !t.model.byteLevel && !t.isAdded[id] {
		return append(buf, tok...)
	}
	// ByteLevel decoder: map every char back to its byte; a token with a
	// char outside the byte alphabet is used verbatim.
	start := len(buf)
	for _, r := range tok {
		b, ok := t.byteDecode[r]
		if !ok {
			return append(buf[:start], tok...)
		}
		buf = append(buf, b)
	}
	return buf
}

// lossyUTF8 converts b to a string replacing each maximal invalid subpart
// with U+FFFD.
func lossyUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, w := utf8.DecodeRune(b)
		if r != utf8.RuneError || w > 1 {
			sb.Write(b[:w])
			b = b[w:]
			continue
		}
		n := invalidPrefixLen(b)
		sb.WriteRune(utf8.RuneError)
		b = b[n:]
	}
	return sb.String()
}

// invalidPrefixLen returns the length of the maximal invalid subpart at the
// start of b (b does not start with a valid sequence): the longest prefix
// that could begin a valid sequence, at least 1 byte.
func invalidPrefixLen(b []byte) int {
	need, lo, hi := seqInfo(b[0])
	if need == 0 {
		return 1
	}
	i := 1
	for ; i <= need && i < len(b); i++ {
		c := b[i]
		l, h := byte(0x80), byte(0xBF)
		if i == 1 {
			l, h = lo, hi
		}
		if c < l || c > h {
			return i
		}
	}
	return i
}

// seqInfo returns, for a lead byte, the number of continuation bytes it
// needs and the allowed range of the first continuation byte (need = 0 for
// a byte that cannot start a multi-byte sequence).
func seqInfo(c byte) (need int, lo, hi byte) {
	switch {
	case c >= 0xC2 && c <= 0xDF:
		return 1, 0x80, 0xBF
	case c == 0xE0:
		return 2, 0xA0, 0xBF
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		return 2, 0x80, 0xBF
	case c == 0xED:
		return 2, 0x80, 0x9F
	case c == 0xF0:
		return 3, 0x90, 0xBF
	case c >= 0xF1 && c <= 0xF3:
		return 3, 0x80, 0xBF
	case c == 0xF4:
		return 3, 0x80, 0x8F
	}
	return 0, 0, 0
}
