package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// preTokenizer splits one piece of text into smaller pieces. Pieces are
// byte strings of the original text; the byte-level mapping is applied by
// the BPE model.
type preTokenizer interface {
	split(s string, dst []string) []string
}

// seqPreTokenizer applies its members in order, each to every piece
// produced by the previous one.
type seqPreTokenizer []preTokenizer

func (p seqPreTokenizer) split(s string, dst []string) []string {
	if len(p) == 0 {
		return append(dst, s)
	}
	cur := p[0].split(s, nil)
	for _, pt := range p[1:] {
		var next []string
		for _, piece := range cur {
			next = pt.split(piece, next)
		}
		cur = next
	}
	return append(dst, cur...)
}

// Split behaviors, as in Hugging Face tokenizers.
const (
	behRemoved = iota
	behIsolated
	behMergedWithPrevious
	behMergedWithNext
	behContiguous
)

// matcher finds the matches of a pattern in s as byte offset pairs.
type matcher interface {
	findAll(s string) [][2]int
}

// splitPreTokenizer is HF's Split pre-tokenizer.
type splitPreTokenizer struct {
	m        matcher
	behavior int
	invert   bool
	ling     bool // pattern is LingPattern with behavior Isolated, not inverted
}

type segment struct {
	start, end int
	match      bool
}

func (p *splitPreTokenizer) split(s string, dst []string) []string {
	if p.ling {
		return splitLing(s, dst)
	}
	if s == "" {
		return dst
	}
	// Segments covering s: matches and the gaps between them.
	var segs []segment
	prev := 0
	for _, m := range p.m.findAll(s) {
		if m[0] == m[1] {
			continue
		}
		if m[0] > prev {
			segs = append(segs, segment{prev, m[0], false})
		}
		segs = append(segs, segment{m[0], m[1], true})
		prev = m[1]
	}
	if prev < len(s) {
		segs = append(segs, segment{prev, len(s), false})
	}
	if p.invert {
		for i := range segs {
			segs[i].match = !segs[i].match
		}
	}
	var out []segment
	switch p.behavior {
	case behRemoved:
		for _, g := range segs {
			if !g.match {
				out = append(out, g)
			}
		}
	case behIsolated:
		out = segs
	case behMergedWithPrevious:
		prevMatch := false
		for _, g := range segs {
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = g.end
			} else {
				out = append(out, g)
			}
			prevMatch = g.match
		}
	case behMergedWithNext:
		prevMatch := false
		for i := len(segs) - 1; i >= 0; i-- {
			g := segs[i]
			if g.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = g.start
			} else {
				out = append(out, g)
			}
			prevMatch = g.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case behContiguous:
		for _, g := range segs {
			if len(out) > 0 && out[len(out)-1].match == g.match {
				out[len(out)-1].end = g.end
			} else {
				out = append(out, g)
			}
		}
	}
	for _, g := range out {
		dst = append(dst, s[g.start:g.end])
	}
	return dst
}

// literalMatcher matches a fixed string.
type literalMatcher string

func (l literalMatcher) findAll(s string) [][2]int {
	var out [][2]int
	if l == "" {
		return nil
	}
	off := 0
	for {
		k := strings.Index(s[off:], string(l))
		if k < 0 {
			return out
		}
		out = append(out, [2]int{off + k, off + k + len(l)})
		off += k + len(l)
	}
}

// regexMatcher matches with a backtracking regular expression engine
// (regexp2), used for patterns without a hand-written scanner.
type regexMatcher struct {
	re *regexp2.Regexp
}

// lingMatcher is the hand-written scanner for LingPattern.
type lingMatcher struct{}

func (lingMatcher) findAll(s string) [][2]int {
	var out [][2]int
	for i := 0; i < len(s); {
		e := lingMatch(s, i)
		out = append(out, [2]int{i, e})
		i = e
	}
	return out
}

func newRegexMatcher(pattern string) (*regexMatcher, error) {
	re, err := compileRegex(pattern)
	if err != nil {
		return nil, err
	}
	return &regexMatcher{re: re}, nil
}

// compileRegex compiles an Oniguruma-style pattern with regexp2, rewriting
// possessive quantifiers (which .NET syntax lacks) as atomic groups.
func compileRegex(pattern string) (*regexp2.Regexp, error) {
	re, err := regexp2.Compile(rewritePossessive(pattern), regexp2.Unicode)
	if err != nil {
		return nil, fmt.Errorf("compile regex %q: %w", pattern, err)
	}
	return re, nil
}

func (m *regexMatcher) findAll(s string) [][2]int {
	runes := []rune(s)
	// Byte offset of every rune index ([]rune maps each invalid byte to
	// one U+FFFD, as utf8.DecodeRuneInString does).
	offs := make([]int, 0, len(runes)+1)
	for i := 0; i < len(s); {
		offs = append(offs, i)
		_, w := utf8.DecodeRuneInString(s[i:])
		i += w
	}
	offs = append(offs, len(s))
	var out [][2]int
	mt, err := m.re.FindRunesMatch(runes)
	for err == nil && mt != nil {
		out = append(out, [2]int{offs[mt.Index], offs[mt.Index+mt.Length]})
		mt, err = m.re.FindNextMatch(mt)
	}
	return out
}

// rewritePossessive turns X?+ X*+ X++ X{n,m}+ into (?>X?) etc.
func rewritePossessive(p string) string {
	if !strings.Contains(p, "+") {
		return p
	}
	// Split the pattern into atoms; each atom is the text of one element
	// (escape, class, group, char) optionally followed by its quantifier.
	var atoms []string
	i := 0
	for i < len(p) {
		start := i
		switch p[i] {
		case '\\':
			i += 2
			if i <= len(p) && (p[i-1] == 'p' || p[i-1] == 'P') && i < len(p) && p[i] == '{' {
				for i < len(p) && p[i] != '}' {
					i++
				}
				i++
			}
		case '[':
			i++
			if i < len(p) && p[i] == '^' {
				i++
			}
			if i < len(p) && p[i] == ']' {
				i++
			}
			depth := 1
			for i < len(p) && depth > 0 {
				switch p[i] {
				case '\\':
					i++
				case '[':
					depth++
				case ']':
					depth--
				}
				i++
			}
		case '(':
			depth := 0
			for i < len(p) {
				switch p[i] {
				case '\\':
					i++
				case '[':
					// skip class
					i++
					for i < len(p) && p[i] != ']' {
						if p[i] == '\\' {
							i++
						}
						i++
					}
				case '(':
					depth++
				case ')':
					depth--
				}
				i++
				if depth == 0 {
					break
				}
			}
		default:
			_, w := utf8.DecodeRuneInString(p[i:])
			i += w
		}
		if i > len(p) {
			i = len(p)
		}
		atom := p[start:i]
		// Quantifier.
		q := i
		if i < len(p) {
			switch p[i] {
			case '?', '*', '+':
				i++
			case '{':
				if k := strings.IndexByte(p[i:], '}'); k > 0 {
					i += k + 1
				}
			}
		}
		if i > q && i < len(p) && p[i] == '+' && atom != "|" {
			atoms = append(atoms, "(?>"+p[start:i]+")")
			i++
			continue
		}
		atoms = append(atoms, p[start:i])
	}
	return strings.Join(atoms, "")
}

// byteLevelPreTokenizer is HF's ByteLevel pre-tokenizer. The byte-to-char
// mapping itself is done by the model; here only the optional prefix space
// and the optional GPT-2 regex split are applied.
type byteLevelPreTokenizer struct {
	addPrefixSpace bool
	re             matcher // nil when use_regex is false
}

func (p *byteLevelPreTokenizer) split(s string, dst []string) []string {
	if p.addPrefixSpace && !strings.HasPrefix(s, " ") {
		s = " " + s
	}
	if p.re == nil {
		return append(dst, s)
	}
	sp := splitPreTokenizer{m: p.re, behavior: behIsolated}
	return sp.split(s, dst)
}

// digitsPreTokenizer is HF's Digits pre-tokenizer.
type digitsPreTokenizer struct{ individual bool }

func (p digitsPreTokenizer) split(s string, dst []string) []string {
	start := 0
	for i := 0; i < len(s); i++ {
		d := s[i] >= '0' && s[i] <= '9'
		if !d {
			continue
		}
		if i > start {
			dst = append(dst, s[start:i])
		}
		j := i + 1
		if !p.individual {
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
		}
		dst = append(dst, s[i:j])
		start = j
		i = j - 1
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

type preTokJSON struct {
	Type           string            `json:"type"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Pattern        map[string]string `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace bool              `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
	IndividualDig  bool              `json:"individual_digits"`
}

// parsePreTokenizer builds a pre-tokenizer from its HF JSON description.
// It reports whether a ByteLevel pre-tokenizer is part of it.
func parsePreTokenizer(raw json.RawMessage) (preTokenizer, bool, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return seqPreTokenizer(nil), false, nil
	}
	var j preTokJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, false, fmt.Errorf("parse pre_tokenizer: %w", err)
	}
	switch j.Type {
	case "Sequence":
		var seq seqPreTokenizer
		bl := false
		for _, r := range j.Pretokenizers {
			pt, b, err := parsePreTokenizer(r)
			if err != nil {
				return nil, false, err
			}
			bl = bl || b
			if blp, ok := pt.(*byteLevelPreTokenizer); ok && !blp.addPrefixSpace && blp.re == nil {
				continue // identity on byte strings
			}
			seq = append(seq, pt)
		}
		if len(seq) == 1 {
			return seq[0], bl, nil
		}
		return seq, bl, nil
	case "Split":
		sp := &splitPreTokenizer{invert: j.Invert}
		switch j.Behavior {
		case "Removed":
			sp.behavior = behRemoved
		case "Isolated":
			sp.behavior = behIsolated
		case "MergedWithPrevious":
			sp.behavior = behMergedWithPrevious
		case "MergedWithNext":
			sp.behavior = behMergedWithNext
		case "Contiguous":
			sp.behavior = behContiguous
		default:
			return nil, false, fmt.Errorf("split pre-tokenizer: unknown behavior %q", j.Behavior)
		}
		if lit, ok := j.Pattern["String"]; ok {
			sp.m = literalMatcher(lit)
		} else if re, ok := j.Pattern["Regex"]; ok {
			if re == LingPattern {
				sp.m = lingMatcher{}
				sp.ling = sp.behavior == behIsolated && !sp.invert
			} else {
				m, err := newRegexMatcher(re)
				if err != nil {
					return nil, false, fmt.Errorf("split pre-tokenizer: %w", err)
				}
				sp.m = m
			}
		} else {
			return nil, false, fmt.Errorf("split pre-tokenizer: missing pattern")
		}
		return sp, false, nil
	case "ByteLevel":
		bl := &byteLevelPreTokenizer{addPrefixSpace: j.AddPrefixSpace}
		if j.UseRegex == nil || *j.UseRegex {
			m, err := newRegexMatcher(GPT2Pattern)
			if err != nil {
				return nil, false, err
			}
			bl.re = m
		}
		return bl, true, nil
	case "Digits":
		return digitsPreTokenizer{individual: j.IndividualDig}, false, nil
	}
	return nil, false, fmt.Errorf("unsupported pre_tokenizer type %q", j.Type)
}
