package chat

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Tags recognised in model output.
const (
	ThinkOpen     = "<think>"
	ThinkClose    = "</think>"
	ToolCallOpen  = "<tool_call>"
	ToolCallClose = "</tool_call>"
)

// ParserOptions configure a streaming output Parser.
type ParserOptions struct {
	// ThinkingOpen says the prompt already opened a <think> block, so the
	// output starts as reasoning (see PromptOpensThinking).
	ThinkingOpen bool
	// Tools says tools were offered, so <tool_call>…</tool_call> blocks are
	// parsed as tool calls; otherwise they are plain content.
	Tools bool
	// NewID generates tool call ids; nil uses NewToolCallID.
	NewID func() string
}

// PromptOpensThinking reports whether a rendered prompt ends with <think>,
// possibly followed by newlines, so that the model continues with
// reasoning.
func PromptOpensThinking(prompt string) bool {
	return strings.HasSuffix(strings.TrimRight(prompt, "\r\n"), ThinkOpen)
}

// EventKind says what an Event carries.
type EventKind int

const (
	// EventReasoning carries a reasoning (thinking) text delta.
	EventReasoning EventKind = iota + 1
	// EventContent carries a content text delta.
	EventContent
	// EventToolCall carries one complete tool call.
	EventToolCall
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventReasoning:
		return "reasoning"
	case EventContent:
		return "content"
	case EventToolCall:
		return "tool_call"
	}
	return "unknown"
}

// Event is one parsed piece of model output.
type Event struct {
	// Kind is the event kind.
	Kind EventKind
	// Text is the text delta of reasoning and content events.
	Text string
	// ToolCall is the call of an EventToolCall.
	ToolCall *ToolCall
}

type parseState int

const (
	stContent parseState = iota
	stReasoning
	stToolCall
)

// Parser splits streamed model output into reasoning text, content text
// and tool calls. Tags may arrive split anywhere; text that may be the
// start of a tag is held back until it is decided. The result does not
// depend on how the output is split into Feed calls.
//
// Whitespace rules (which make the result round-trip through the chat
// template): newlines right after <think> and right before </think> are
// dropped, as is whitespace right after </think>, leading whitespace
// before any content, whitespace right before a tool call and whitespace
// following a tool call. A <think> at the very start of the output (after
// optional whitespace) opens reasoning. A <tool_call> block whose body is
// not a JSON object with a string "name" stays in the content verbatim.
//
// A Parser is not safe for concurrent use.
type Parser struct {
	opts  ParserOptions
	state parseState
	buf   string // undecided input

	thinkAllowed  bool   // a <think> here would open reasoning
	contentSeen   bool   // non-whitespace content was emitted
	skipLeadingWS bool   // drop whitespace at the start of content
	pendingWS     string // trailing content whitespace held back
	wsBeforeCall  string // pendingWS at the start of the current tool call
	reasonStart   bool   // drop newlines at the start of reasoning
	pendingNL     string // trailing reasoning newlines held back

	events []Event
}

// NewParser returns a Parser.
func NewParser(opts ParserOptions) *Parser {
	p := &Parser{opts: opts}
	if opts.ThinkingOpen {
		p.state = stReasoning
		p.reasonStart = true
	} else {
		p.thinkAllowed = true
		p.skipLeadingWS = true
	}
	return p
}

// Feed consumes more output text and returns the events it completes.
func (p *Parser) Feed(text string) []Event {
	p.buf += text
	p.process(false)
	return p.take()
}

// Close ends the output and returns the remaining events: held-back text,
// and an unterminated tool call as verbatim content.
func (p *Parser) Close() []Event {
	p.process(true)
	switch p.state {
	case stToolCall:
		// Unterminated tool call: verbatim content.
		p.state = stContent
		p.pendingWS = p.wsBeforeCall
		p.wsBeforeCall = ""
		p.emitContent(ToolCallOpen+p.buf, true)
		p.buf = ""
	case stReasoning:
		p.add(EventReasoning, p.pendingNL)
		p.pendingNL = ""
	}
	if p.state == stContent && p.contentSeen && p.pendingWS != "" {
		p.add(EventContent, p.pendingWS)
	}
	p.pendingWS = ""
	return p.take()
}

func (p *Parser) take() []Event {
	ev := p.events
	p.events = nil
	return ev
}

// add appends a text event, merging it with a previous one of its kind.
func (p *Parser) add(kind EventKind, text string) {
	if text == "" {
		return
	}
	if n := len(p.events); n > 0 && p.events[n-1].Kind == kind {
		p.events[n-1].Text += text
		return
	}
	p.events = append(p.events, Event{Kind: kind, Text: text})
}

// tags returns the tags that are significant in the current state.
func (p *Parser) tags() []string {
	switch p.state {
	case stReasoning:
		return []string{ThinkClose}
	case stToolCall:
		return []string{ToolCallClose}
	}
	var t []string
	if p.opts.Tools {
		t = append(t, ToolCallOpen)
	}
	if p.thinkAllowed {
		t = append(t, ThinkOpen)
	}
	return t
}

// process consumes p.buf as far as it is decided (everything when final).
func (p *Parser) process(final bool) {
	for {
		tags := p.tags()
		at, tag := -1, ""
		for _, t := range tags {
			if k := strings.Index(p.buf, t); k >= 0 && (at < 0 || k < at) {
				at, tag = k, t
			}
		}
		if at < 0 {
			keep := 0
			if !final {
				keep = max(partialTagSuffix(p.buf, tags), partialRuneSuffix(p.buf))
			}
			if p.state == stToolCall {
				return // the body is kept whole until the closing tag
			}
			p.emit(p.buf[:len(p.buf)-keep], final)
			p.buf = p.buf[len(p.buf)-keep:]
			return
		}
		before := p.buf[:at]
		p.buf = p.buf[at+len(tag):]
		switch tag {
		case ThinkClose:
			p.emitReasoning(before, false)
			p.pendingNL = ""
			p.state = stContent
			p.skipLeadingWS = true
		case ToolCallClose:
			p.finishToolCall(before)
		case ToolCallOpen:
			p.emitContent(before, false)
			p.wsBeforeCall = p.pendingWS
			p.pendingWS = ""
			p.state = stToolCall
			p.thinkAllowed = false
		case ThinkOpen:
			p.emitContent(before, false)
			if p.thinkAllowed {
				p.pendingWS = ""
				p.state = stReasoning
				p.reasonStart = true
				p.thinkAllowed = false
			} else {
				p.emitContent(ThinkOpen, false)
			}
		}
	}
}

func (p *Parser) emit(text string, final bool) {
	if p.state == stReasoning {
		p.emitReasoning(text, final)
	} else {
		p.emitContent(text, final)
	}
}

// emitContent emits content text, applying the whitespace rules.
func (p *Parser) emitContent(text string, final bool) {
	if text == "" {
		return
	}
	if p.skipLeadingWS {
		text = strings.TrimLeftFunc(text, unicode.IsSpace)
		if text == "" {
			return
		}
		p.skipLeadingWS = false
	}
	// Hold back trailing whitespace when a tool call or <think> might
	// follow; it is dropped before those.
	hold := p.opts.Tools || p.thinkAllowed
	body := text
	if hold {
		body = strings.TrimRightFunc(text, unicode.IsSpace)
	}
	if body == "" {
		p.pendingWS += text
		return
	}
	p.add(EventContent, p.pendingWS+body)
	p.pendingWS = text[len(body):]
	p.contentSeen = true
	p.thinkAllowed = false
}

// emitReasoning emits reasoning text, dropping newlines at its start and
// holding back trailing newlines (dropped before </think>).
func (p *Parser) emitReasoning(text string, final bool) {
	if text == "" {
		return
	}
	if p.reasonStart {
		text = strings.TrimLeft(text, "\r\n")
		if text == "" {
			return
		}
		p.reasonStart = false
	}
	body := strings.TrimRight(text, "\r\n")
	if body == "" {
		p.pendingNL += text
		return
	}
	p.add(EventReasoning, p.pendingNL+body)
	p.pendingNL = text[len(body):]
}

// finishToolCall handles a complete <tool_call>body</tool_call> block.
func (p *Parser) finishToolCall(body string) {
	p.state = stContent
	if tc, ok := parseToolCallBody(body); ok {
		if p.opts.NewID != nil {
			tc.ID = p.opts.NewID()
		} else {
			tc.ID = NewToolCallID()
		}
		p.events = append(p.events, Event{Kind: EventToolCall, ToolCall: &tc})
		p.wsBeforeCall = ""
		p.skipLeadingWS = true
		return
	}
	// Malformed: keep everything verbatim as content.
	ws := p.wsBeforeCall
	p.wsBeforeCall = ""
	p.pendingWS = ws
	p.emitContent(ToolCallOpen+body+ToolCallClose, false)
}

// parseToolCallBody decodes {"name": "...", "arguments": {...}}.
func parseToolCallBody(body string) (ToolCall, bool) {
	var raw struct {
		Name       *string         `json:"name"`
		Arguments  json.RawMessage `json:"arguments"`
		Parameters json.RawMessage `json:"parameters"`
	}
	b := []byte(strings.TrimSpace(body))
	if len(b) == 0 || b[0] != '{' {
		return ToolCall{}, false
	}
	if err := json.Unmarshal(b, &raw); err != nil || raw.Name == nil || *raw.Name == "" {
		return ToolCall{}, false
	}
	args := raw.Arguments
	if len(args) == 0 {
		args = raw.Parameters
	}
	var argText string
	switch {
	case len(args) == 0 || string(args) == "null":
		argText = "{}"
	case args[0] == '"':
		// Arguments given as a JSON string holding JSON text.
		if err := json.Unmarshal(args, &argText); err != nil {
			return ToolCall{}, false
		}
	default:
		var buf bytes.Buffer
		if err := json.Compact(&buf, args); err != nil {
			return ToolCall{}, false
		}
		argText = buf.String()
	}
	tc := ToolCall{Type: "function"}
	tc.Function.Name = *raw.Name
	tc.Function.Arguments = argText
	return tc, true
}

// partialTagSuffix returns the length of the longest suffix of s that is a
// proper prefix of one of tags.
func partialTagSuffix(s string, tags []string) int {
	best := 0
	for _, t := range tags {
		for n := len(t) - 1; n > best; n-- {
			if n <= len(s) && strings.HasSuffix(s, t[:n]) {
				best = n
				break
			}
		}
	}
	return best
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewToolCallID returns a random id of the form call_<24 alphanumerics>.
func NewToolCallID() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, 0, 5+len(b))
	out = append(out, "call_"...)
	for _, c := range b {
		out = append(out, idAlphabet[int(c)%len(idAlphabet)])
	}
	return string(out)
}

// ParseAll parses a complete model output in one go.
func ParseAll(text string, opts ParserOptions) (reasoning, content string, calls []ToolCall) {
	p := NewParser(opts)
	var r, c strings.Builder
	for _, evs := range [][]Event{p.Feed(text), p.Close()} {
		for _, e := range evs {
			switch e.Kind {
			case EventReasoning:
				r.WriteString(e.Text)
			case EventContent:
				c.WriteString(e.Text)
			case EventToolCall:
				calls = append(calls, *e.ToolCall)
			}
		}
	}
	return r.String(), c.String(), calls
}

// partialRuneSuffix returns the length of an incomplete UTF-8 sequence at
// the end of s (held back so that events hold whole characters).
func partialRuneSuffix(s string) int {
	for k := 1; k <= 3 && k <= len(s); k++ {
		c := s[len(s)-k]
		if c < utf8.RuneSelf {
			return 0
		}
		if c >= 0xC0 {
			need := 2
			if c >= 0xF0 {
				need = 4
			} else if c >= 0xE0 {
				need = 3
			}
			if need > k {
				return k
			}
			return 0
		}
	}
	return 0
}
