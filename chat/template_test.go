package chat

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/tokenizer"
)

type chatCase struct {
	Messages            []map[string]json.RawMessage `json:"messages"`
	Tools               []json.RawMessage            `json:"tools"`
	AddGenerationPrompt bool                         `json:"add_generation_prompt"`
	Rendered            string                       `json:"rendered"`
	IDs                 []int32                      `json:"ids"`
}

// toMessage converts a fixture message (HF shape) to a Message.
func toMessage(t *testing.T, m map[string]json.RawMessage) Message {
	t.Helper()
	var msg Message
	str := func(k string) string {
		var s string
		if raw, ok := m[k]; ok {
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("field %s: %v", k, err)
			}
		}
		return s
	}
	msg.Role, msg.Content, msg.ReasoningContent = str("role"), str("content"), str("reasoning_content")
	msg.ToolCallID, msg.Name = str("tool_call_id"), str("name")
	if raw, ok := m["tool_calls"]; ok {
		var calls []struct {
			ID       string `json:"id"`
			Type     string `json:"type"`
			Function struct {
				Name      string          `json:"name"`
				Arguments json.RawMessage `json:"arguments"`
			} `json:"function"`
		}
		if err := json.Unmarshal(raw, &calls); err != nil {
			t.Fatal(err)
		}
		for _, c := range calls {
			tc := ToolCall{ID: c.ID, Type: c.Type}
			tc.Function.Name = c.Function.Name
			var s string
			if json.Unmarshal(c.Function.Arguments, &s) == nil {
				tc.Function.Arguments = s
			} else {
				tc.Function.Arguments = string(c.Function.Arguments)
			}
			msg.ToolCalls = append(msg.ToolCalls, tc)
		}
	}
	return msg
}

func loadChatCases(t *testing.T) []chatCase {
	t.Helper()
	data, err := os.ReadFile("testdata/chat.json")
	if err != nil {
		t.Fatal(err)
	}
	var cs []chatCase
	if err := json.Unmarshal(data, &cs); err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestRenderFixture(t *testing.T) {
	tmpl, err := LoadTemplate("testdata")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.LoadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	cs := loadChatCases(t)
	if len(cs) != 16 {
		t.Fatalf("%d cases", len(cs))
	}
	for i, c := range cs {
		var msgs []Message
		for _, m := range c.Messages {
			msgs = append(msgs, toMessage(t, m))
		}
		for _, tp := range []*Template{tmpl, Default()} {
			got, err := tp.Render(msgs, c.Tools, c.AddGenerationPrompt, nil)
			if err != nil {
				t.Fatalf("case %d: %v", i, err)
			}
			if got != c.Rendered {
				t.Fatalf("case %d: rendered\n%q\nwant\n%q", i, got, c.Rendered)
			}
		}
		if ids := tok.Encode(c.Rendered, true); !slices.Equal(ids, c.IDs) {
			t.Errorf("case %d: ids\n%v\nwant\n%v", i, ids, c.IDs)
		}
	}
}

func TestLoadTemplateForms(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": [{"name": "tool_use", "template": "X"}, {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"}]}`
	if err := os.WriteFile(dir+"/tokenizer_config.json", []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tp, err := LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.Render([]Message{{Role: "user", Content: "hi"}}, nil, false, nil)
	if err != nil || got != "<s>hi</s>" {
		t.Fatalf("got %q %v", got, err)
	}
	// No config: built-in template.
	tp, err = LoadTemplate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if tp.Source() != LingTemplate() || !strings.Contains(tp.Source(), "<role>HUMAN</role>") {
		t.Fatal("fallback template not used")
	}
}

func TestPyTojson(t *testing.T) {
	tp, err := NewTemplate(`{{ x | tojson }}|{{ x|tojson(indent=2) }}`, "", "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tp.Render(nil, nil, false, map[string]any{
		"x": json.RawMessage(`{"b": 1.0, "a": [1e20, 1e-5, 0.5, 12345678901, "\u2028<é>\n\u0001"], "c": {}, "d": null}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"b\": 1.0, \"a\": [1e+20, 1e-05, 0.5, 12345678901, \"\u2028<é>\\n\\u0001\"], \"c\": {}, \"d\": null}|" +
		"{\n  \"b\": 1.0,\n  \"a\": [\n    1e+20,\n    1e-05,\n    0.5,\n    12345678901,\n    \"\u2028<é>\\n\\u0001\"\n  ],\n  \"c\": {},\n  \"d\": null\n}"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
