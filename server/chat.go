package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/ringo-ai/ringo/chat"
)

// chatCompletion is the non-streaming response of /v1/chat/completions.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage"`
}

type chatChoice struct {
	Index        int            `json:"index"`
	Message      chatMessageOut `json:"message"`
	Logprobs     *chatLogprobs  `json:"logprobs"`
	FinishReason string         `json:"finish_reason"`
}

type chatMessageOut struct {
	Role             string        `json:"role"`
	Content          *string       `json:"content"`
	ReasoningContent *string       `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCallOut `json:"tool_calls,omitempty"`
}

type toolCallOut struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id"`
	Type     string       `json:"type"`
	Function functionCall `json:"function"`
}

type functionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// chatChunk is one streamed chat.completion.chunk.
type chatChunk struct {
	ID      string            `json:"id"`
	Object  string            `json:"object"`
	Created int64             `json:"created"`
	Model   string            `json:"model"`
	Choices []chatChunkChoice `json:"choices"`
	Usage   any               `json:"usage,omitempty"`
}

type chatChunkChoice struct {
	Index        int           `json:"index"`
	Delta        chatDelta     `json:"delta"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatDelta struct {
	Role             string        `json:"role,omitempty"`
	Content          *string       `json:"content,omitempty"`
	ReasoningContent *string       `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCallOut `json:"tool_calls,omitempty"`
}

// chatLogprobs is the logprobs object of chat completions.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
	Refusal []chatTokenLogprob `json:"refusal"`
}

type chatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// tokenText returns the text of one token and its bytes.
func (s *Server) tokenText(id int32) (string, []int) {
	t := s.tok.Decode([]int32{id}, false)
	b := make([]int, len(t))
	for i := 0; i < len(t); i++ {
		b[i] = int(t[i])
	}
	return t, b
}

func (s *Server) chatLogprobs(lps []outLogprob) *chatLogprobs {
	out := &chatLogprobs{Content: []chatTokenLogprob{}}
	for _, lp := range lps {
		t, b := s.tokenText(lp.id)
		e := chatTokenLogprob{Token: t, Logprob: lp.logprob, Bytes: b, TopLogprobs: []chatTopLogprob{}}
		for _, a := range lp.top {
			at, ab := s.tokenText(a.id)
			e.TopLogprobs = append(e.TopLogprobs, chatTopLogprob{Token: at, Logprob: a.logprob, Bytes: ab})
		}
		out.Content = append(out.Content, e)
	}
	return out
}

// newID returns a response id with the given prefix.
func newID(prefix string) string {
	return prefix + strings.TrimPrefix(chat.NewToolCallID(), "call_")
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, errShuttingDown)
		return
	}
	var req chatRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	in, err := req.validate(s)
	if err != nil {
		writeError(w, err)
		return
	}
	prompt, err := s.tmpl.Render(in.messages, in.tools, true, in.extra)
	if err != nil {
		writeError(w, badRequest("messages", "cannot render the chat template: %v", err))
		return
	}
	ids := s.tok.Encode(prompt, true)
	g, err := s.startGeneration(r.Context(), ids, in.gen, func(id int32) bool { return s.keepTags[id] })
	if err != nil {
		writeError(w, err)
		return
	}
	defer g.cancel()
	parser := chat.NewParser(chat.ParserOptions{ThinkingOpen: chat.PromptOpensThinking(prompt), Tools: in.tools != nil})
	id, created := newID("chatcmpl-"), time.Now().Unix()
	if in.gen.stream {
		s.streamChat(w, r, g, parser, in.gen, id, created)
		return
	}
	var content, reasoning strings.Builder
	var calls []toolCallOut
	var lps []outLogprob
	collect := func(evs []chat.Event) {
		for _, e := range evs {
			switch e.Kind {
			case chat.EventContent:
				content.WriteString(e.Text)
			case chat.EventReasoning:
				reasoning.WriteString(e.Text)
			case chat.EventToolCall:
				calls = append(calls, toolCallOut{ID: e.ToolCall.ID, Type: "function",
					Function: functionCall{Name: e.ToolCall.Function.Name, Arguments: e.ToolCall.Function.Arguments}})
			}
		}
	}
	for !g.done {
		text, lp, err := g.next(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				writeError(w, err)
			}
			return
		}
		lps = append(lps, lp...)
		collect(parser.Feed(text))
	}
	collect(parser.Close())
	msg := chatMessageOut{Role: "assistant", ToolCalls: calls}
	if c := content.String(); c != "" || len(calls) == 0 {
		msg.Content = &c
	}
	if rc := reasoning.String(); rc != "" {
		msg.ReasoningContent = &rc
	}
	finish := g.finish
	if len(calls) > 0 && finish == finishStop {
		finish = "tool_calls"
	}
	choice := chatChoice{Index: 0, Message: msg, FinishReason: finish}
	if in.gen.logprobs {
		choice.Logprobs = s.chatLogprobs(lps)
	}
	writeJSON(w, http.StatusOK, chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: s.name,
		Choices: []chatChoice{choice}, Usage: g.usage()})
}

// streamChat sends a chat completion as chat.completion.chunk events.
func (s *Server) streamChat(w http.ResponseWriter, r *http.Request, g *generation, parser *chat.Parser, gp genParams, id string, created int64) {
	sse := newSSE(w)
	chunk := func(d chatDelta, lp *chatLogprobs, finish *string) chatChunk {
		c := chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.name,
			Choices: []chatChunkChoice{{Index: 0, Delta: d, Logprobs: lp, FinishReason: finish}}}
		if gp.usage {
			c.Usage = json.RawMessage("null")
		}
		return c
	}
	empty := ""
	if sse.send(chunk(chatDelta{Role: "assistant", Content: &empty}, nil, nil)) != nil {
		return
	}
	nCalls := 0
	var pendingLP []outLogprob
	emit := func(evs []chat.Event) error {
		for _, e := range evs {
			var d chatDelta
			switch e.Kind {
			case chat.EventContent:
				t := e.Text
				d.Content = &t
			case chat.EventReasoning:
				t := e.Text
				d.ReasoningContent = &t
			case chat.EventToolCall:
				i := nCalls
				nCalls++
				d.ToolCalls = []toolCallOut{{Index: &i, ID: e.ToolCall.ID, Type: "function",
					Function: functionCall{Name: e.ToolCall.Function.Name, Arguments: e.ToolCall.Function.Arguments}}}
			default:
				continue
			}
			var lp *chatLogprobs
			if gp.logprobs && len(pendingLP) > 0 {
				lp = s.chatLogprobs(pendingLP)
				pendingLP = nil
			}
			if err := sse.send(chunk(d, lp, nil)); err != nil {
				return err
			}
		}
		return nil
	}
	for !g.done {
		text, lp, err := g.next(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				sse.send(asAPIError(err))
				sse.done()
			}
			return
		}
		pendingLP = append(pendingLP, lp...)
		if emit(parser.Feed(text)) != nil {
			return
		}
	}
	if emit(parser.Close()) != nil {
		return
	}
	finish := g.finish
	if nCalls > 0 && finish == finishStop {
		finish = "tool_calls"
	}
	var lp *chatLogprobs
	if gp.logprobs && len(pendingLP) > 0 {
		lp = s.chatLogprobs(pendingLP)
	}
	if sse.send(chunk(chatDelta{}, lp, &finish)) != nil {
		return
	}
	if gp.usage {
		if sse.send(chatChunk{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.name,
			Choices: []chatChunkChoice{}, Usage: g.usage()}) != nil {
			return
		}
	}
	sse.done()
}
