// Package chat renders chat conversations into model prompts with the
// model's Jinja chat template (as Hugging Face transformers'
// apply_chat_template does) and parses streamed model output back into
// reasoning text, content text and tool calls.
package chat

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/ardanlabs/jinja"
)

// ToolCall is one function call made by the assistant.
type ToolCall struct {
	// ID identifies the call (e.g. "call_…"); it may be empty.
	ID string `json:"id,omitempty"`
	// Type is the call type; empty means "function".
	Type string `json:"type,omitempty"`
	// Function is the called function.
	Function FunctionCall `json:"function"`
}

// FunctionCall names the called function and its arguments.
type FunctionCall struct {
	// Name is the function name.
	Name string `json:"name"`
	// Arguments is the JSON text of the arguments (normally an object).
	Arguments string `json:"arguments"`
}

// Message is one conversation turn.
type Message struct {
	// Role is "system", "user", "assistant" or "tool".
	Role string `json:"role"`
	// Content is the message text.
	Content string `json:"content"`
	// ReasoningContent is the assistant's reasoning (thinking) text; when
	// empty it is not passed to the template.
	ReasoningContent string `json:"reasoning_content,omitempty"`
	// ToolCalls are the assistant's function calls.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	// ToolCallID is, for a tool message, the id of the call it answers.
	ToolCallID string `json:"tool_call_id,omitempty"`
	// Name is an optional participant or tool name.
	Name string `json:"name,omitempty"`
}

//go:embed ling_template.jinja
var lingTemplate string

// LingTemplate is the built-in Ling 2.0 / Ring-linear 2.0 chat template,
// used when a model directory has none.
func LingTemplate() string { return lingTemplate }

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	src  string
	tmpl *jinja.Template
	// BOS and EOS are the bos_token and eos_token strings made available
	// to the template (empty when unknown).
	BOS, EOS string
}

// Default returns the built-in Ling/Ring 2.0 template, with bos_token
// <|startoftext|> and eos_token <|role_end|>.
func Default() *Template {
	t, err := NewTemplate(lingTemplate, "<|startoftext|>", "<|role_end|>")
	if err != nil {
		panic(fmt.Sprintf("chat: built-in template does not compile: %v", err))
	}
	return t
}

// tojsonRe finds uses of the tojson filter. The jinja package looks up its
// built-in filters before user-supplied ones, so its tojson (which follows
// Go's string escaping and float formatting) cannot be overridden by
// passing a callable; instead the template source is rewritten to call
// pyTojsonName, a Python json.dumps-compatible implementation (see
// pyjson.go).
var tojsonRe = regexp.MustCompile(`\|\s*tojson\b`)

const pyTojsonName = "ringo_py_tojson"

// NewTemplate compiles a Jinja chat template source.
func NewTemplate(src, bos, eos string) (*Template, error) {
	rewritten := tojsonRe.ReplaceAllString(src, "| "+pyTojsonName)
	t, err := jinja.Compile(rewritten)
	if err != nil {
		return nil, fmt.Errorf("chat: compile template: %w", err)
	}
	return &Template{src: src, tmpl: t, BOS: bos, EOS: eos}, nil
}

// Source returns the template's Jinja source text.
func (t *Template) Source() string { return t.src }

// LoadTemplate reads the chat template of a model directory: the
// chat_template of tokenizer_config.json (a string, or a list of
// {name, template} objects, where "default" or else the first is used),
// else chat_template.jinja, else the built-in Ling template. The bos_token
// and eos_token strings come from tokenizer_config.json when present.
func LoadTemplate(dir string) (*Template, error) {
	var src, bos, eos string
	cfgPath := filepath.Join(dir, "tokenizer_config.json")
	data, err := os.ReadFile(cfgPath)
	switch {
	case err == nil:
		var cfg map[string]json.RawMessage
		if err := json.Unmarshal(data, &cfg); err != nil {
			return nil, fmt.Errorf("chat: parse %s: %w", cfgPath, err)
		}
		bos = tokenName(cfg["bos_token"])
		eos = tokenName(cfg["eos_token"])
		if raw, ok := cfg["chat_template"]; ok {
			src, err = templateFromConfig(raw)
			if err != nil {
				return nil, fmt.Errorf("chat: %s: %w", cfgPath, err)
			}
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		return nil, fmt.Errorf("chat: %w", err)
	}
	if src == "" {
		p := filepath.Join(dir, "chat_template.jinja")
		if b, err := os.ReadFile(p); err == nil {
			src = string(b)
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("chat: %w", err)
		}
	}
	if src == "" {
		src = lingTemplate
		if bos == "" {
			bos = "<|startoftext|>"
		}
		if eos == "" {
			eos = "<|role_end|>"
		}
	}
	t, err := NewTemplate(src, bos, eos)
	if err != nil {
		return nil, fmt.Errorf("%w (model dir %s)", err, dir)
	}
	return t, nil
}

// templateFromConfig decodes tokenizer_config.json's chat_template value.
func templateFromConfig(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", fmt.Errorf("chat_template is neither a string nor a list of {name, template}: %w", err)
	}
	for _, e := range list {
		if e.Name == "default" {
			return e.Template, nil
		}
	}
	if len(list) > 0 {
		return list[0].Template, nil
	}
	return "", nil
}

// tokenName reads a special token given as a string or as {"content": …}.
func tokenName(raw json.RawMessage) string {
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

// Render renders a conversation. tools are OpenAI-style tool objects
// ({"type":"function","function":{…}}), passed to the template in their
// original key order; nil or empty means no tools. extra holds additional
// template variables such as enable_thinking; values may be plain Go values
// or json.RawMessage.
//
// Messages are given to the template in the shape transformers uses:
// content is a string, reasoning_content is present only when non-empty,
// tool_calls is a list of {id?, type, function: {name, arguments}} where
// arguments is a mapping when it parses as a JSON object (and the raw
// string otherwise).
func (t *Template) Render(msgs []Message, tools []json.RawMessage, addGenerationPrompt bool, extra map[string]any) (string, error) {
	data := make(map[string]jinja.Value, 8+len(extra))
	for k, v := range extra {
		val, err := goToValue(v)
		if err != nil {
			return "", fmt.Errorf("chat: extra variable %q: %w", k, err)
		}
		data[k] = val
	}
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		v, err := messageValue(m)
		if err != nil {
			return "", fmt.Errorf("chat: message %d: %w", i, err)
		}
		list[i] = v
	}
	data["messages"] = jinja.NewList(list)
	if len(tools) > 0 {
		tl := make([]jinja.Value, len(tools))
		for i, raw := range tools {
			v, err := jsonToValue(raw)
			if err != nil {
				return "", fmt.Errorf("chat: tool %d: %w", i, err)
			}
			tl[i] = v
		}
		data["tools"] = jinja.NewList(tl)
	} else {
		data["tools"] = jinja.None()
	}
	data["add_generation_prompt"] = jinja.NewBool(addGenerationPrompt)
	data["bos_token"] = jinja.NewString(t.BOS)
	data["eos_token"] = jinja.NewString(t.EOS)
	data[pyTojsonName] = jinja.NewCallable(pyTojsonName, pyTojsonFilter)
	out, err := t.tmpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("chat: render template: %w", err)
	}
	return out, nil
}

// messageValue converts a Message to the template's message mapping.
func messageValue(m Message) (jinja.Value, error) {
	v := jinja.NewDict()
	d := v.AsDict()
	d.Set("role", jinja.NewString(m.Role))
	d.Set("content", jinja.NewString(m.Content))
	if m.ReasoningContent != "" {
		d.Set("reasoning_content", jinja.NewString(m.ReasoningContent))
	}
	if len(m.ToolCalls) > 0 {
		calls := make([]jinja.Value, len(m.ToolCalls))
		for i, tc := range m.ToolCalls {
			cv := jinja.NewDict()
			cd := cv.AsDict()
			if tc.ID != "" {
				cd.Set("id", jinja.NewString(tc.ID))
			}
			typ := tc.Type
			if typ == "" {
				typ = "function"
			}
			cd.Set("type", jinja.NewString(typ))
			fv := jinja.NewDict()
			fd := fv.AsDict()
			fd.Set("name", jinja.NewString(tc.Function.Name))
			args := jinja.NewString(tc.Function.Arguments)
			if a := bytes.TrimSpace([]byte(tc.Function.Arguments)); len(a) > 0 && a[0] == '{' {
				if pv, err := jsonToValue(a); err == nil {
					args = pv
				}
			}
			fd.Set("arguments", args)
			cd.Set("function", fv)
			calls[i] = cv
		}
		d.Set("tool_calls", jinja.NewList(calls))
	}
	if m.ToolCallID != "" {
		d.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	if m.Name != "" {
		d.Set("name", jinja.NewString(m.Name))
	}
	return v, nil
}
