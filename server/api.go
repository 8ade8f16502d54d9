package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/sample"
)

// maxBodyBytes bounds request bodies.
const maxBodyBytes = 32 << 20

// maxStops bounds the number of stop sequences of one request.
const maxStops = 16

// stopList is the "stop" field: null, one string or a list of strings.
type stopList []string

// UnmarshalJSON accepts null, a string or an array of strings.
func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &json.UnmarshalTypeError{Value: "non-string", Type: stopType}
	}
	*s = many
	return nil
}

var stopType = reflect.TypeFor[stopList]()

// streamOptions is the stream_options field.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// commonParams are the fields shared by chat and text completions.
type commonParams struct {
	Model             string         `json:"model"`
	Temperature       *float64       `json:"temperature"`
	TopP              *float64       `json:"top_p"`
	TopK              *int           `json:"top_k"`
	MinP              *float64       `json:"min_p"`
	MaxTokens         *int           `json:"max_tokens"`
	Stop              stopList       `json:"stop"`
	Seed              *int64         `json:"seed"`
	PresencePenalty   *float64       `json:"presence_penalty"`
	FrequencyPenalty  *float64       `json:"frequency_penalty"`
	RepetitionPenalty *float64       `json:"repetition_penalty"`
	N                 *int           `json:"n"`
	Stream            bool           `json:"stream"`
	StreamOptions     *streamOptions `json:"stream_options"`
	User              string         `json:"user"`
}

// chatRequest is the body of POST /v1/chat/completions.
type chatRequest struct {
	commonParams
	Messages            []chatMessageIn            `json:"messages"`
	Tools               []json.RawMessage          `json:"tools"`
	ToolChoice          json.RawMessage            `json:"tool_choice"`
	MaxCompletionTokens *int                       `json:"max_completion_tokens"`
	Logprobs            *bool                      `json:"logprobs"`
	TopLogprobs         *int                       `json:"top_logprobs"`
	ChatTemplateKwargs  map[string]json.RawMessage `json:"chat_template_kwargs"`
}

// chatMessageIn is one input message; content may be a string, null or a
// list of text parts.
type chatMessageIn struct {
	Role             string          `json:"role"`
	Content          json.RawMessage `json:"content"`
	ReasoningContent *string         `json:"reasoning_content"`
	ToolCalls        []toolCallIn    `json:"tool_calls"`
	ToolCallID       string          `json:"tool_call_id"`
	Name             string          `json:"name"`
}

// toolCallIn is an assistant tool call in the input history.
type toolCallIn struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	} `json:"function"`
}

// completionRequest is the body of POST /v1/completions.
type completionRequest struct {
	commonParams
	Prompt   json.RawMessage `json:"prompt"`
	Logprobs *int            `json:"logprobs"`
	Echo     bool            `json:"echo"`
	BestOf   *int            `json:"best_of"`
	Suffix   *string         `json:"suffix"`
}

// decodeBody reads a JSON request body into v, mapping decoding failures to
// OpenAI-shaped 400 errors.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &APIError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest,
				Message: fmt.Sprintf("request body larger than %d bytes", maxBodyBytes)}
		}
		return badRequest("", "read request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("", "empty request body; expected a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			field := strings.TrimPrefix(te.Field, "commonParams.")
			if field == "" {
				return badRequest("", "request body must be a JSON object, not %s", te.Value)
			}
			return badRequest(field, "invalid type for %q: got %s, want %s", field, te.Value, typeName(te))
		case errors.As(err, &se):
			return badRequest("", "invalid JSON in request body at offset %d: %v", se.Offset, err)
		}
		return badRequest("", "invalid request body: %v", err)
	}
	return nil
}

func typeName(te *json.UnmarshalTypeError) string {
	if te.Type == nil {
		return "another type"
	}
	switch te.Type.Kind().String() {
	case "int", "int64", "int32":
		return "integer"
	case "float64", "float32":
		return "number"
	case "bool":
		return "boolean"
	case "string":
		return "string"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return te.Type.String()
}

// genParams are validated generation settings.
type genParams struct {
	sampling    sample.Params
	maxTokens   int // 0: until the context is full
	stop        []string
	logprobs    bool
	topLogprobs int
	stream      bool
	usage       bool // stream_options.include_usage
}

// validate checks the common fields and converts them.
func (c *commonParams) validate(s *Server) (genParams, error) {
	var g genParams
	if c.Model != "" && c.Model != s.name {
		return g, &APIError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
			Message: fmt.Sprintf("the model %q does not exist; this server serves %q", c.Model, s.name)}
	}
	if c.N != nil && *c.N != 1 {
		return g, badRequest("n", "only n=1 is supported, got %d", *c.N)
	}
	p := sample.Params{Temperature: 1}
	if v := c.Temperature; v != nil {
		if !finite(*v) || *v < 0 || *v > 2 {
			return g, badRequest("temperature", "temperature must be between 0 and 2, got %v", *v)
		}
		p.Temperature = float32(*v)
	}
	if v := c.TopP; v != nil {
		if !finite(*v) || *v <= 0 || *v > 1 {
			return g, badRequest("top_p", "top_p must be in (0, 1], got %v", *v)
		}
		p.TopP = float32(*v)
	}
	if v := c.TopK; v != nil {
		if *v < -1 {
			return g, badRequest("top_k", "top_k must be -1 (off), 0 (off) or positive, got %d", *v)
		}
		p.TopK = max(*v, 0)
	}
	if v := c.MinP; v != nil {
		if !finite(*v) || *v < 0 || *v > 1 {
			return g, badRequest("min_p", "min_p must be in [0, 1], got %v", *v)
		}
		p.MinP = float32(*v)
	}
	if v := c.PresencePenalty; v != nil {
		if !finite(*v) || *v < -2 || *v > 2 {
			return g, badRequest("presence_penalty", "presence_penalty must be between -2 and 2, got %v", *v)
		}
		p.PresencePenalty = float32(*v)
	}
	if v := c.FrequencyPenalty; v != nil {
		if !finite(*v) || *v < -2 || *v > 2 {
			return g, badRequest("frequency_penalty", "frequency_penalty must be between -2 and 2, got %v", *v)
		}
		p.FrequencyPenalty = float32(*v)
	}
	if v := c.RepetitionPenalty; v != nil {
		if !finite(*v) || *v <= 0 || *v > 10 {
			return g, badRequest("repetition_penalty", "repetition_penalty must be in (0, 10], got %v", *v)
		}
		p.RepetitionPenalty = float32(*v)
	}
	if c.Seed != nil {
		p.Seed = uint64(*c.Seed)
	} else {
		p.Seed = rand.Uint64()
	}
	g.sampling = p
	if v := c.MaxTokens; v != nil {
		if *v < 1 {
			return g, badRequest("max_tokens", "max_tokens must be at least 1, got %d", *v)
		}
		g.maxTokens = *v
	}
	if len(c.Stop) > maxStops {
		return g, badRequest("stop", "at most %d stop sequences are supported, got %d", maxStops, len(c.Stop))
	}
	for _, st := range c.Stop {
		if st != "" {
			g.stop = append(g.stop, st)
		}
	}
	g.stream = c.Stream
	if c.StreamOptions != nil {
		if !c.Stream {
			return g, badRequest("stream_options", "stream_options is only allowed when stream is true")
		}
		g.usage = c.StreamOptions.IncludeUsage
	}
	return g, nil
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// chatInput is a validated chat request ready for the template.
type chatInput struct {
	gen      genParams
	messages []chat.Message
	tools    []json.RawMessage // nil: no tools offered
	extra    map[string]any
}

// validate checks a chat request.
func (r *chatRequest) validate(s *Server) (*chatInput, error) {
	g, err := r.commonParams.validate(s)
	if err != nil {
		return nil, err
	}
	if v := r.MaxCompletionTokens; v != nil {
		if *v < 1 {
			return nil, badRequest("max_completion_tokens", "max_completion_tokens must be at least 1, got %d", *v)
		}
		g.maxTokens = *v
	}
	if r.Logprobs != nil && *r.Logprobs {
		g.logprobs = true
	}
	if v := r.TopLogprobs; v != nil {
		if *v < 0 || *v > 20 {
			return nil, badRequest("top_logprobs", "top_logprobs must be between 0 and 20, got %d", *v)
		}
		if !g.logprobs && *v > 0 {
			return nil, badRequest("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		g.topLogprobs = *v
	}
	if len(r.Messages) == 0 {
		return nil, badRequest("messages", "messages must be a non-empty array")
	}
	in := &chatInput{gen: g}
	for i, m := range r.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		role := m.Role
		switch role {
		case "developer":
			role = "system"
		case "system", "user", "assistant", "tool":
		case "":
			return nil, badRequest(param+".role", "message %d has no role", i)
		default:
			return nil, badRequest(param+".role", "message %d has unknown role %q", i, m.Role)
		}
		text, err := contentText(m.Content)
		if err != nil {
			return nil, badRequest(param+".content", "message %d: %v", i, err)
		}
		if text == nil && !(role == "assistant" && len(m.ToolCalls) > 0) {
			return nil, badRequest(param+".content", "message %d (%s) has no content", i, role)
		}
		cm := chat.Message{Role: role, ToolCallID: m.ToolCallID, Name: m.Name}
		if text != nil {
			cm.Content = *text
		}
		if m.ReasoningContent != nil {
			cm.ReasoningContent = *m.ReasoningContent
		}
		for j, tc := range m.ToolCalls {
			if tc.Function.Name == "" {
				return nil, badRequest(fmt.Sprintf("%s.tool_calls[%d].function.name", param, j), "tool call without a function name")
			}
			args, err := argumentsText(tc.Function.Arguments)
			if err != nil {
				return nil, badRequest(fmt.Sprintf("%s.tool_calls[%d].function.arguments", param, j), "%v", err)
			}
			c := chat.ToolCall{ID: tc.ID, Type: tc.Type}
			c.Function.Name, c.Function.Arguments = tc.Function.Name, args
			cm.ToolCalls = append(cm.ToolCalls, c)
		}
		in.messages = append(in.messages, cm)
	}
	for i, t := range r.Tools {
		var tool struct {
			Type     string `json:"type"`
			Function *struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if err := json.Unmarshal(t, &tool); err != nil || tool.Function == nil || tool.Function.Name == "" {
			return nil, badRequest(fmt.Sprintf("tools[%d]", i), "each tool must be {\"type\":\"function\",\"function\":{\"name\":…}}")
		}
		if tool.Type != "" && tool.Type != "function" {
			return nil, badRequest(fmt.Sprintf("tools[%d].type", i), "unsupported tool type %q", tool.Type)
		}
	}
	useTools := len(r.Tools) > 0
	if tc := bytes.TrimSpace(r.ToolChoice); len(tc) > 0 && string(tc) != "null" {
		var mode string
		if err := json.Unmarshal(tc, &mode); err == nil {
			switch mode {
			case "none":
				useTools = false
			case "auto", "required":
			default:
				return nil, badRequest("tool_choice", "tool_choice must be none, auto, required or a function, got %q", mode)
			}
		} else {
			var named struct {
				Type     string `json:"type"`
				Function struct {
					Name string `json:"name"`
				} `json:"function"`
			}
			if err := json.Unmarshal(tc, &named); err != nil || named.Function.Name == "" {
				return nil, badRequest("tool_choice", "tool_choice must be a string or {\"type\":\"function\",\"function\":{\"name\":…}}")
			}
		}
	}
	if useTools {
		in.tools = r.Tools
	}
	if len(r.ChatTemplateKwargs) > 0 {
		in.extra = map[string]any{}
		for k, v := range r.ChatTemplateKwargs {
			switch k {
			case "messages", "tools", "add_generation_prompt":
				return nil, badRequest("chat_template_kwargs."+k, "%q cannot be set through chat_template_kwargs", k)
			}
			in.extra[k] = v
		}
	}
	return in, nil
}

// contentText extracts message content: a string, null (nil) or an array
// of {"type":"text","text":…} parts (concatenated, see chat.ContentText).
func contentText(raw json.RawMessage) (*string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if raw[0] != '"' && raw[0] != '[' {
		return nil, errors.New("content must be a string or an array of text parts")
	}
	s, err := chat.ContentText(raw)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// argumentsText normalises tool call arguments given as a JSON string or
// as an object.
func argumentsText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "{}", nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("invalid arguments string: %w", err)
		}
		return s, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", fmt.Errorf("invalid arguments: %w", err)
	}
	return buf.String(), nil
}

// completionInput is a validated text completion request.
type completionInput struct {
	gen    genParams
	text   string  // prompt text (when given as text)
	tokens []int32 // prompt ids (when given as ids)
}

// validate checks a completion request.
func (r *completionRequest) validate(s *Server) (*completionInput, error) {
	g, err := r.commonParams.validate(s)
	if err != nil {
		return nil, err
	}
	if r.Echo {
		return nil, badRequest("echo", "echo is not supported")
	}
	if r.BestOf != nil && *r.BestOf != 1 {
		return nil, badRequest("best_of", "only best_of=1 is supported")
	}
	if r.Suffix != nil && *r.Suffix != "" {
		return nil, badRequest("suffix", "suffix is not supported")
	}
	if v := r.Logprobs; v != nil {
		if *v < 0 || *v > 20 {
			return nil, badRequest("logprobs", "logprobs must be between 0 and 20, got %d", *v)
		}
		g.logprobs, g.topLogprobs = true, *v
	}
	in := &completionInput{gen: g}
	raw := bytes.TrimSpace(r.Prompt)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "prompt is required")
	}
	var str string
	var strs []string
	var ids []int32
	var idss [][]int32
	switch {
	case json.Unmarshal(raw, &str) == nil:
		in.text = str
	case json.Unmarshal(raw, &strs) == nil:
		if len(strs) != 1 {
			return nil, badRequest("prompt", "only one prompt per request is supported, got %d", len(strs))
		}
		in.text = strs[0]
	case json.Unmarshal(raw, &ids) == nil:
		in.tokens = ids
	case json.Unmarshal(raw, &idss) == nil:
		if len(idss) != 1 {
			return nil, badRequest("prompt", "only one prompt per request is supported, got %d", len(idss))
		}
		in.tokens = idss[0]
	default:
		return nil, badRequest("prompt", "prompt must be a string, an array of one string, or token ids")
	}
	if in.tokens == nil && in.text == "" {
		return nil, badRequest("prompt", "prompt must not be empty")
	}
	if in.tokens != nil && len(in.tokens) == 0 {
		return nil, badRequest("prompt", "prompt must not be empty")
	}
	return in, nil
}
