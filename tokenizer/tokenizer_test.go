package tokenizer

import (
	"encoding/json"
	"math/rand"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

type tokCase struct {
	Text               string  `json:"text"`
	IDs                []int32 `json:"ids"`
	Decoded            string  `json:"decoded"`
	DecodedSkipSpecial string  `json:"decoded_skip_special"`
}

var (
	loadOnce sync.Once
	testTok  *Tokenizer
	testErr  error
)

func fixture(t testing.TB) *Tokenizer {
	t.Helper()
	loadOnce.Do(func() { testTok, testErr = LoadDir("testdata") })
	if testErr != nil {
		t.Fatal(testErr)
	}
	return testTok
}

func loadCases(t testing.TB) []tokCase {
	t.Helper()
	data, err := os.ReadFile("testdata/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cs []tokCase
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestCases(t *testing.T) {
	tk := fixture(t)
	cs := loadCases(t)
	if len(cs) != 400 {
		t.Fatalf("got %d cases", len(cs))
	}
	fails := 0
	for i, c := range cs {
		got := tk.Encode(c.Text, true)
		if !slices.Equal(got, c.IDs) {
			fails++
			if fails < 10 {
				t.Errorf("case %d %q: encode\n got %v\nwant %v", i, c.Text, got, c.IDs)
			}
		}
		if d := tk.Decode(c.IDs, false); d != c.Decoded {
			t.Errorf("case %d: decode %q want %q", i, d, c.Decoded)
		}
		if d := tk.Decode(c.IDs, true); d != c.DecodedSkipSpecial {
			t.Errorf("case %d: decode skip %q want %q", i, d, c.DecodedSkipSpecial)
		}
	}
	if fails > 0 {
		t.Errorf("%d encode failures", fails)
	}
}

func TestLoadDirSpecials(t *testing.T) {
	tk := fixture(t)
	if id, ok := tk.BOS(); !ok || tk.TokenString(id) != "<|startoftext|>" {
		t.Errorf("bos %d %v", id, ok)
	}
	if id, ok := tk.EOS(); !ok || tk.TokenString(id) != "<|role_end|>" {
		t.Errorf("eos %d %v", id, ok)
	}
	id, ok := tk.TokenID("<|role_end|>")
	if !ok || !tk.IsSpecial(id) {
		t.Errorf("role_end %d %v", id, ok)
	}
	if tk.VocabSize() < 6000 {
		t.Errorf("vocab size %d", tk.VocabSize())
	}
	// Special tokens as plain text when not allowed.
	withS := tk.Encode("a<|role_end|>b", true)
	noS := tk.Encode("a<|role_end|>b", false)
	if !slices.Contains(withS, id) || slices.Contains(noS, id) {
		t.Errorf("allowSpecial: %v / %v", withS, noS)
	}
	if tk.Decode(noS, false) != "a<|role_end|>b" {
		t.Errorf("round trip %q", tk.Decode(noS, false))
	}
}

func TestStreamingDecoder(t *testing.T) {
	tk := fixture(t)
	cs := loadCases(t)
	rng := rand.New(rand.NewSource(1))
	var all []int32
	for _, c := range cs {
		all = append(all, c.IDs...)
	}
	// Random id sequences too, which produce invalid UTF-8.
	seqs := [][]int32{all}
	for _, c := range cs {
		seqs = append(seqs, c.IDs)
	}
	for k := 0; k < 200; k++ {
		n := rng.Intn(30)
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(rng.Intn(tk.VocabSize() + 2))
		}
		seqs = append(seqs, s)
	}
	for _, skip := range []bool{false, true} {
		for i, s := range seqs {
			d := tk.NewDecoder()
			d.SetSkipSpecial(skip)
			var sb strings.Builder
			for _, id := range s {
				out := d.Add(id)
				if !utf8.ValidString(out) {
					t.Fatalf("seq %d: invalid UTF-8 chunk %q", i, out)
				}
				sb.WriteString(out)
			}
			sb.WriteString(d.Flush())
			if want := tk.Decode(s, skip); sb.String() != want {
				t.Fatalf("seq %d skip=%v: stream %q\nwant %q", i, skip, sb.String(), want)
			}
		}
	}
}

func TestLossyUTF8(t *testing.T) {
	for in, want := range map[string]string{
		"a\xe4\xb8b":       "a\uFFFDb",
		"\xe4\xb8":         "\uFFFD",
		"\x80\x80":         "\uFFFD\uFFFD",
		"\xf0\x9f\x98":     "\uFFFD",
		"\xed\xa0\x80":     "\uFFFD\uFFFD\uFFFD",
		"\xf4\x90\x80\x80": "\uFFFD\uFFFD\uFFFD\uFFFD",
		"ok\xc3":           "ok\uFFFD",
		"\xe0\x80":         "\uFFFD\uFFFD",
	} {
		if got := lossyUTF8([]byte(in)); got != want {
			t.Errorf("lossy(%q) = %q want %q", in, got, want)
		}
	}
}

var fuzzAlphabet = []string{
	"a", "b", "Z", "x", "é", "É", "ñ", "ß", "ö", "и", "Я", "α", "中", "文", "日本", "한", "ا", "ก", "्",
	"0", "1", "9", "٣", "²", "Ⅻ", "½",
	" ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u00a0", "\u3000", "\u2028", "\v", "\f",
	".", ",", "!", "?", "'", "\"", "-", "_", "(", ")", "{", "}", "<", ">", "/", "\\", "@", "#", "$", "%", "&", "*", "+", "=",
	"'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'t", "'x",
	"😀", "👍🏽", "🇫🇷", "\u200d", "\u0301", "…", "—", "“", "”", "€", "·",
	"<|role_end|>", "<role>", "</think>",
}

func randomText(rng *rand.Rand) string {
	n := rng.Intn(24)
	var sb strings.Builder
	for i := 0; i < n; i++ {
		sb.WriteString(fuzzAlphabet[rng.Intn(len(fuzzAlphabet))])
	}
	return sb.String()
}

func TestLingScannerMatchesRegex(t *testing.T) {
	m, err := newRegexMatcher(LingPattern)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(42))
	check := func(s string) {
		var want []string
		prev := 0
		for _, sp := range m.findAll(s) {
			if sp[0] > prev {
				want = append(want, s[prev:sp[0]])
			}
			want = append(want, s[sp[0]:sp[1]])
			prev = sp[1]
		}
		if prev < len(s) {
			want = append(want, s[prev:])
		}
		got := splitLing(s, nil)
		if !slices.Equal(got, want) {
			t.Fatalf("text %q:\n got %q\nwant %q", s, got, want)
		}
	}
	for i := 0; i < 20000; i++ {
		check(randomText(rng))
	}
	for _, c := range loadCases(t) {
		check(c.Text)
	}
}

func TestRewritePossessive(t *testing.T) {
	for in, want := range map[string]string{
		`a?+b`:                 `(?>a?)b`,
		`[^\r\n\p{L}]?+\p{L}+`: `(?>[^\r\n\p{L}]?)\p{L}+`,
		`x[^\s]++y`:            `x(?>[^\s]+)y`,
		`(ab)*+c`:              `(?>(ab)*)c`,
		`\p{N}{1,3}+`:          `(?>\p{N}{1,3})`,
		`a+b`:                  `a+b`,
	} {
		if got := rewritePossessive(in); got != want {
			t.Errorf("rewrite(%q) = %q want %q", in, got, want)
		}
	}
}

// TestGenericSplitMatchesLing checks the regexp2 fallback path against the
// hand-written scanner on the full encoder.
func TestGenericSplitMatchesLing(t *testing.T) {
	tk := fixture(t)
	data, err := os.ReadFile("testdata/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	// Same pattern written differently (an extra no-op group) to force the
	// regex engine.
	alt := strings.Replace(string(data), `|\\s+(?!\\S)|\\s+"`, `|(?:\\s+(?!\\S))|\\s+"`, 1)
	if alt == string(data) {
		t.Fatal("pattern not found in tokenizer.json")
	}
	gen, err := FromJSON([]byte(alt))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 2000; i++ {
		s := randomText(rng)
		if a, b := tk.Encode(s, true), gen.Encode(s, true); !slices.Equal(a, b) {
			t.Fatalf("%q: %v vs %v", s, a, b)
		}
	}
}

func TestMergesPairForm(t *testing.T) {
	data, err := os.ReadFile("testdata/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	model := raw["model"].(map[string]any)
	merges := model["merges"].([]any)
	for i, m := range merges {
		if p, ok := m.([]any); ok {
			merges[i] = p[0].(string) + " " + p[1].(string)
		}
	}
	data2, _ := json.Marshal(raw)
	tk2, err := FromJSON(data2)
	if err != nil {
		t.Fatal(err)
	}
	tk := fixture(t)
	for _, c := range loadCases(t)[:100] {
		if !slices.Equal(tk.Encode(c.Text, true), tk2.Encode(c.Text, true)) {
			t.Fatalf("string-form merges differ on %q", c.Text)
		}
	}
}

func TestConcurrentEncode(t *testing.T) {
	tk, err := LoadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	cs := loadCases(t)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range cs {
				if !slices.Equal(tk.Encode(c.Text, true), c.IDs) {
					t.Errorf("concurrent mismatch on %q", c.Text)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkEncode(b *testing.B) {
	tk := fixture(b)
	cs := loadCases(b)
	total := 0
	for _, c := range cs {
		total += len(c.Text)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, c := range cs {
			tk.Encode(c.Text, true)
		}
	}
}

// BenchmarkEncodeCold measures encoding without the per-word cache.
func BenchmarkEncodeCold(b *testing.B) {
	tk := fixture(b)
	cs := loadCases(b)
	total := 0
	for _, c := range cs {
		total += len(c.Text)
	}
	b.SetBytes(int64(total))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tk.model.mu.Lock()
		tk.model.cache = make(map[string][]int32)
		tk.model.mu.Unlock()
		for _, c := range cs {
			tk.Encode(c.Text, true)
		}
	}
}
