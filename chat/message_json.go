package chat

import (
	"encoding/json"
	"fmt"
	"strings"
)

// UnmarshalJSON reads a message in the shapes Hugging Face and OpenAI use:
// content may be a string, null, or a list of parts ({"type":"text","text":…}),
// and a tool call's function.arguments may be a JSON string or an object.
func (m *Message) UnmarshalJSON(b []byte) error {
	var raw struct {
		Role             string          `json:"role"`
		Content          json.RawMessage `json:"content"`
		ReasoningContent *string         `json:"reasoning_content"`
		ToolCallID       string          `json:"tool_call_id"`
		Name             string          `json:"name"`
		ToolCalls        []struct {
			ID       string `json:"id"`
			Type     string `json:"type"`
			Function struct {
				Name      string          `json:"name"`
				Arguments json.RawMessage `json:"arguments"`
			} `json:"function"`
		} `json:"tool_calls"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*m = Message{Role: raw.Role, ToolCallID: raw.ToolCallID, Name: raw.Name}
	if raw.ReasoningContent != nil {
		m.ReasoningContent = *raw.ReasoningContent
	}
	content, err := ContentText(raw.Content)
	if err != nil {
		return err
	}
	m.Content = content
	for _, c := range raw.ToolCalls {
		tc := ToolCall{ID: c.ID, Type: c.Type}
		tc.Function.Name = c.Function.Name
		var s string
		switch {
		case len(c.Function.Arguments) == 0 || string(c.Function.Arguments) == "null":
		case json.Unmarshal(c.Function.Arguments, &s) == nil:
			tc.Function.Arguments = s
		default:
			tc.Function.Arguments = string(c.Function.Arguments)
		}
		m.ToolCalls = append(m.ToolCalls, tc)
	}
	return nil
}

// ContentText flattens message content: a string, null (""), or a list of
// parts whose text parts are concatenated.
func ContentText(raw json.RawMessage) (string, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return "", nil
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		return text, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string, null or a list of text parts")
	}
	var sb strings.Builder
	for _, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", fmt.Errorf("content part of type %q is not supported (text only)", p.Type)
		}
		sb.WriteString(*p.Text)
	}
	return sb.String(), nil
}
