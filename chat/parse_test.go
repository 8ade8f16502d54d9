package chat

import (
	"math/rand"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

type parseCase struct {
	name      string
	opts      ParserOptions
	in        string
	reasoning string
	content   string
	calls     []FunctionCall
}

var parseCases = []parseCase{
	{name: "plain", in: "Hello world", content: "Hello world"},
	{name: "empty", in: ""},
	{name: "thinking open", opts: ParserOptions{ThinkingOpen: true},
		in: "\nlet me think\n</think>\n\nThe answer", reasoning: "let me think", content: "The answer"},
	{name: "think tag at start", in: "<think>\nr\n\nmore\n</think>\n\nans", reasoning: "r\n\nmore", content: "ans"},
	{name: "think after whitespace", in: "\n <think>r</think>ans", reasoning: "r", content: "ans"},
	{name: "think not at start", in: "hi <think>x</think>", content: "hi <think>x</think>"},
	{name: "unterminated reasoning", opts: ParserOptions{ThinkingOpen: true}, in: "abc\n", reasoning: "abc\n"},
	{name: "literal lt", in: "a < b <thi", content: "a < b <thi"},
	{name: "literal close", opts: ParserOptions{ThinkingOpen: true}, in: "x </thin y</think>z", reasoning: "x </thin y", content: "z"},
	{name: "tool calls", opts: ParserOptions{Tools: true},
		in:      "calling\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"u\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"v\": [1, 2]}}\n</tool_call>",
		content: "calling", calls: []FunctionCall{{"a", `{"u":1}`}, {"b", `{"v":[1,2]}`}}},
	{name: "tool call only", opts: ParserOptions{Tools: true},
		in:    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"巴黎\"}}\n</tool_call>",
		calls: []FunctionCall{{"get_weather", `{"city":"巴黎"}`}}},
	{name: "reasoning then call", opts: ParserOptions{ThinkingOpen: true, Tools: true},
		in:        "r</think>\n\n<tool_call>{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": 1}\"}</tool_call>\n",
		reasoning: "r", calls: []FunctionCall{{"f", `{"a": 1}`}}},
	{name: "no arguments", opts: ParserOptions{Tools: true}, in: "<tool_call>{\"name\":\"f\"}</tool_call>", calls: []FunctionCall{{"f", `{}`}}},
	{name: "malformed", opts: ParserOptions{Tools: true},
		in: "x <tool_call>{bad json}</tool_call> y", content: "x <tool_call>{bad json}</tool_call> y"},
	{name: "missing name", opts: ParserOptions{Tools: true},
		in: "x\n<tool_call>{\"arguments\": {}}</tool_call>", content: "x\n<tool_call>{\"arguments\": {}}</tool_call>"},
	{name: "unterminated call", opts: ParserOptions{Tools: true},
		in: "a <tool_call>{\"name\":", content: "a <tool_call>{\"name\":"},
	{name: "tools not offered", in: "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>",
		content: "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>"},
	{name: "text after call", opts: ParserOptions{Tools: true},
		in: "<tool_call>{\"name\":\"f\",\"arguments\":{}}</tool_call>\n\nDone. ", calls: []FunctionCall{{"f", `{}`}}, content: "Done. "},
	{name: "trailing whitespace kept", opts: ParserOptions{Tools: true}, in: "a  b\n\n", content: "a  b\n\n"},
	{name: "unicode", opts: ParserOptions{Tools: true, ThinkingOpen: true},
		in:        "思考😀\u3000</think>\u3000日本語\u3000<tool_call>{\"name\":\"é\",\"arguments\":{\"k\":\"ü\"}}</tool_call>",
		reasoning: "思考😀\u3000", content: "日本語", calls: []FunctionCall{{"é", `{"k":"ü"}`}}},
}

// collect runs the parser over the chunks and returns the merged event
// sequence (adjacent text events of one kind joined, ids cleared).
func collect(opts ParserOptions, chunks []string) []Event {
	p := NewParser(opts)
	var all []Event
	add := func(evs []Event) {
		for _, e := range evs {
			if e.Kind != EventToolCall && e.Text == "" {
				continue
			}
			if e.Kind == EventToolCall {
				if !strings.HasPrefix(e.ToolCall.ID, "call_") {
					panic("bad id " + e.ToolCall.ID)
				}
				tc := *e.ToolCall
				tc.ID = ""
				e.ToolCall = &tc
			} else if !utf8.ValidString(e.Text) {
				panic("invalid UTF-8 event text")
			}
			if n := len(all); n > 0 && e.Kind != EventToolCall && all[n-1].Kind == e.Kind {
				all[n-1].Text += e.Text
				continue
			}
			all = append(all, e)
		}
	}
	for _, c := range chunks {
		add(p.Feed(c))
	}
	add(p.Close())
	return all
}

func TestParseAll(t *testing.T) {
	for _, c := range parseCases {
		t.Run(c.name, func(t *testing.T) {
			r, ct, calls := ParseAll(c.in, c.opts)
			if r != c.reasoning || ct != c.content {
				t.Errorf("reasoning %q content %q; want %q %q", r, ct, c.reasoning, c.content)
			}
			var fc []FunctionCall
			for _, tc := range calls {
				if tc.Type != "function" || !strings.HasPrefix(tc.ID, "call_") {
					t.Errorf("bad call %+v", tc)
				}
				fc = append(fc, tc.Function)
			}
			if !reflect.DeepEqual(fc, c.calls) {
				t.Errorf("calls %+v want %+v", fc, c.calls)
			}
		})
	}
}

func TestParseSplitInvariance(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, c := range parseCases {
		want := collect(c.opts, []string{c.in})
		check := func(chunks []string) {
			t.Helper()
			if got := collect(c.opts, chunks); !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: chunks %q\n got %+v\nwant %+v", c.name, chunks, got, want)
			}
		}
		for i := 0; i <= len(c.in); i++ {
			check([]string{c.in[:i], c.in[i:]})
		}
		bytes := make([]string, len(c.in))
		for i := 0; i < len(c.in); i++ {
			bytes[i] = c.in[i : i+1]
		}
		check(bytes)
		for k := 0; k < 200; k++ {
			var chunks []string
			s := c.in
			for len(s) > 0 {
				n := 1 + rng.Intn(len(s))
				if n > 6 {
					n = 1 + rng.Intn(6)
				}
				chunks = append(chunks, s[:n])
				s = s[n:]
			}
			check(chunks)
		}
	}
}

func TestPromptOpensThinking(t *testing.T) {
	for s, want := range map[string]bool{
		"<role>ASSISTANT</role><think>\n": true,
		"<role>ASSISTANT</role><think>":   true,
		"<role>ASSISTANT</role>":          false,
		"<think>x":                        false,
	} {
		if PromptOpensThinking(s) != want {
			t.Errorf("%q", s)
		}
	}
}

// TestParseRoundTrip renders a parsed assistant turn with the template and
// checks it reproduces the model output's layout.
func TestParseRoundTrip(t *testing.T) {
	out := "\n<think>\nr2\n</think>\n\na2"
	r, c, calls := ParseAll(out, ParserOptions{})
	if r != "r2" || c != "a2" || len(calls) != 0 {
		t.Fatalf("%q %q %v", r, c, calls)
	}
	msgs := []Message{{Role: "user", Content: "q"}, {Role: "assistant", Content: c, ReasoningContent: r}}
	got, err := Default().Render(msgs, nil, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got, "<role>ASSISTANT</role>\n<think>\nr2\n</think>\n\na2<|role_end|>") {
		t.Fatalf("%q", got)
	}
}
