package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// LingPattern is the pre-tokenizer regular expression of the Ling 2.0 /
// Ring 2.0 tokenizers. Go's regexp package cannot express it (possessive
// quantifiers and a negative look-ahead), so splitLing implements an exact
// hand-written scanner for it.
const LingPattern = `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`

// GPT2Pattern is the regular expression used by the ByteLevel pre-tokenizer
// when use_regex is true.
const GPT2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

// Character classes used by the scanners. Whitespace follows the Unicode
// White_Space property (Oniguruma's and Rust regex's \s), letters are
// \p{L} and numbers \p{N}.
const (
	clsOther = iota // not whitespace, letter or number
	clsLetter
	clsNumber
	clsSpace
)

var asciiClass = func() (t [128]uint8) {
	for c := 0; c < 128; c++ {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
			t[c] = clsLetter
		case c >= '0' && c <= '9':
			t[c] = clsNumber
		case c == ' ', c >= '\t' && c <= '\r':
			t[c] = clsSpace
		default:
			t[c] = clsOther
		}
	}
	return
}()

// classAt returns the class of the rune starting at s[i] and its width in
// bytes. Invalid UTF-8 bytes are one-byte runes of class "other".
func classAt(s string, i int) (cls uint8, r rune, w int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return asciiClass[c], rune(c), 1
	}
	r, w = utf8.DecodeRuneInString(s[i:])
	switch {
	case unicode.IsLetter(r):
		return clsLetter, r, w
	case unicode.IsNumber(r):
		return clsNumber, r, w
	case unicode.Is(unicode.White_Space, r):
		return clsSpace, r, w
	}
	return clsOther, r, w
}

// isLingContraction reports the length in bytes of a match of
// '(?i:[sdmt]|ll|ve|re) at s[i] (s[i] == '\”), or 0.
func lingContraction(s string, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	switch s[i+1] {
	case 's', 'S', 'd', 'D', 'm', 'M', 't', 'T':
		return 2
	case 'l', 'L':
		if i+2 < len(s) && (s[i+2] == 'l' || s[i+2] == 'L') {
			return 3
		}
	case 'v', 'V', 'r', 'R':
		if i+2 < len(s) && (s[i+2] == 'e' || s[i+2] == 'E') {
			return 3
		}
	case 0xC5:
		// U+017F LATIN SMALL LETTER LONG S case-folds to 's' under
		// Unicode ignore-case matching.
		if i+2 < len(s) && s[i+2] == 0xBF {
			return 3
		}
	}
	return 0
}

// splitLing appends to dst the pieces of s as split (behavior Isolated) by
// LingPattern, and returns dst. Every byte of s belongs to exactly one
// piece: the pattern matches at every position.
func splitLing(s string, dst []string) []string {
	i := 0
	n := len(s)
	for i < n {
		end := lingMatch(s, i)
		dst = append(dst, s[i:end])
		i = end
	}
	return dst
}

// lingMatch returns the end of the leftmost-first match of LingPattern
// starting at s[i]. The alternatives are tried in the pattern's order.
func lingMatch(s string, i int) int {
	n := len(s)
	c0, r0, w0 := classAt(s, i)
	// 1. '(?i:[sdmt]|ll|ve|re)
	if r0 == '\'' {
		if l := lingContraction(s, i); l > 0 {
			return i + l
		}
	}
	// 2. [^\r\n\p{L}\p{N}]?+\p{L}+
	if c0 == clsLetter {
		return scanClass(s, i+w0, clsLetter)
	}
	if c0 != clsNumber && r0 != '\r' && r0 != '\n' && i+w0 < n {
		if c1, _, w1 := classAt(s, i+w0); c1 == clsLetter {
			return scanClass(s, i+w0+w1, clsLetter)
		}
	}
	// 3. \p{N}
	if c0 == clsNumber {
		return i + w0
	}
	// 4.  ?[^\s\p{L}\p{N}]++[\r\n]*
	j := -1
	if r0 == ' ' && i+1 < n {
		if c1, _, _ := classAt(s, i+1); c1 == clsOther {
			j = i + 1
		}
	}
	if j < 0 && c0 == clsOther {
		j = i
	}
	if j >= 0 {
		j = scanClass(s, j, clsOther)
		for j < n && (s[j] == '\r' || s[j] == '\n') {
			j++
		}
		return j
	}
	// Only whitespace remains (c0 == clsSpace).
	// Find the whitespace run [i, e) and the end of its last CR/LF.
	e := i
	lastNL := -1
	prev := i // start of the last rune of the run
	for e < n {
		c, r, w := classAt(s, e)
		if c != clsSpace {
			break
		}
		if r == '\r' || r == '\n' {
			lastNL = e + 1
		}
		prev = e
		e += w
	}
	// 5. \s*[\r\n]
	if lastNL > 0 {
		return lastNL
	}
	// 6. \s+(?!\S)
	if e == n {
		return e
	}
	if prev > i {
		return prev
	}
	// 7. \s+
	return e
}

// scanClass returns the end of the run of runes of class cls starting at j.
func scanClass(s string, j int, cls uint8) int {
	for j < len(s) {
		c, _, w := classAt(s, j)
		if c != cls {
			break
		}
		j += w
	}
	return j
}
