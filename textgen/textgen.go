// Package textgen turns a loaded model into streamed text. It renders chat
// conversations with the model's template, keeps the model state of a
// conversation across turns (feeding only the new tokens when the rendered
// conversation extends what the state already holds), decodes generated
// tokens incrementally and parses them into reasoning, content and tool
// call events as they arrive.
package textgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
	"github.com/ringo-ai/ringo/tokenizer"
)

// Runner bundles a model with its tokenizer and chat template.
type Runner struct {
	// Model is the language model.
	Model model.Model
	// Tokenizer encodes prompts and decodes output.
	Tokenizer *tokenizer.Tokenizer
	// Template renders conversations into prompts.
	Template *chat.Template

	closer func() error
}

// LoadText loads the tokenizer and chat template of a model directory or a
// GGUF file (whose metadata carries both).
func LoadText(path string) (*tokenizer.Tokenizer, *chat.Template, error) {
	if ggufmodel.IsGGUF(path) {
		return ggufmodel.LoadText(path)
	}
	tok, err := tokenizer.LoadDir(path)
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := chat.LoadTemplate(path)
	if err != nil {
		return nil, nil, err
	}
	return tok, tmpl, nil
}

// Load loads the model, tokenizer and chat template of a model directory
// or a GGUF file.
func Load(dir string, o engine.Options) (*Runner, error) {
	tok, tmpl, err := LoadText(dir)
	if err != nil {
		return nil, err
	}
	m, err := engine.Load(dir, o)
	if err != nil {
		return nil, err
	}
	return &Runner{Model: m, Tokenizer: tok, Template: tmpl, closer: m.Close}, nil
}

// Close releases the model when the Runner was made by Load.
func (r *Runner) Close() error {
	if r.closer == nil {
		return nil
	}
	err := r.closer()
	r.closer = nil
	return err
}

// Options configure one generation.
type Options struct {
	// MaxTokens stops generation after this many tokens (0: until an
	// end-of-sequence token or the context limit).
	MaxTokens int
	// Sampling are the sampler parameters (the zero value is greedy).
	Sampling sample.Params
	// Raw turns off output parsing: all decoded text is reported as
	// content. Special tokens are never reported.
	Raw bool
	// OnEvent, when set, receives reasoning and content deltas and tool
	// calls as they are decoded.
	OnEvent func(chat.Event)
}

// Stats describe the work of one generation.
type Stats struct {
	// PromptTokens is the length of the whole prompt (the rendered
	// conversation), including the part reused from the state.
	PromptTokens int
	// CachedTokens is how many prompt tokens were already in the state and
	// were not fed again.
	CachedTokens int
	// GeneratedTokens counts sampled tokens, including a final stop token.
	GeneratedTokens int
	// Prefill is the time from the start until the first token was sampled.
	Prefill time.Duration
	// Decode is the time from the first sampled token to the end.
	Decode time.Duration
}

// FedTokens is the number of prompt tokens run through the model.
func (s Stats) FedTokens() int { return s.PromptTokens - s.CachedTokens }

// PrefillRate is the prompt processing speed in tokens per second.
func (s Stats) PrefillRate() float64 {
	if s.Prefill <= 0 {
		return 0
	}
	return float64(s.FedTokens()) / s.Prefill.Seconds()
}

// DecodeRate is the generation speed in tokens per second (the first token
// counts towards prefill).
func (s Stats) DecodeRate() float64 {
	if s.Decode <= 0 || s.GeneratedTokens < 2 {
		return 0
	}
	return float64(s.GeneratedTokens-1) / s.Decode.Seconds()
}

// String formats the stats as a one-line summary.
func (s Stats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "prompt %d tokens", s.PromptTokens)
	if s.CachedTokens > 0 {
		fmt.Fprintf(&b, " (%d cached)", s.CachedTokens)
	}
	fmt.Fprintf(&b, ", prefill %.1f tok/s; %d generated, decode %.1f tok/s", s.PrefillRate(), s.GeneratedTokens, s.DecodeRate())
	return b.String()
}

// Result is the outcome of one generation.
type Result struct {
	// Tokens are the generated token ids, without a final stop token.
	Tokens []int32
	// Reasoning, Content and ToolCalls are the parsed output (with Raw,
	// everything is Content).
	Reasoning, Content string
	// ToolCalls are the parsed tool calls.
	ToolCalls []chat.ToolCall
	// Finish says why generation stopped; it is empty when it was
	// interrupted by an error (such as a cancelled context).
	Finish engine.Finish
	// Stats describe the work done.
	Stats Stats
}

// Message returns the result as an assistant message for the history.
func (r *Result) Message() chat.Message {
	return chat.Message{Role: "assistant", Content: r.Content, ReasoningContent: r.Reasoning, ToolCalls: r.ToolCalls}
}

// Encode tokenizes a rendered prompt (special tokens written in it are
// recognised).
func (r *Runner) Encode(prompt string) []int32 { return r.Tokenizer.Encode(prompt, true) }

// Generate feeds prompt to st (which may already hold cached, the tokens
// consumed before, used only for the repetition penalty) and streams the
// generated tokens. thinkingOpen says the prompt left a <think> block open.
// The state keeps everything it consumed, also when generation fails.
func (r *Runner) Generate(ctx context.Context, st model.State, cached, prompt []int32, thinkingOpen bool, tools bool, o Options) (Result, error) {
	return r.generate(ctx, st, cached, prompt, thinkingOpen, tools, o, nil)
}

// generate is Generate; prefilled, when set, is called once the state has
// consumed the prompt, before the first sampled token is fed.
func (r *Runner) generate(ctx context.Context, st model.State, cached, prompt []int32, thinkingOpen bool, tools bool, o Options, prefilled func()) (Result, error) {
	res := Result{Stats: Stats{PromptTokens: len(cached) + len(prompt), CachedTokens: len(cached)}}
	if len(prompt) == 0 {
		return res, errors.New("textgen: empty prompt")
	}
	smp := sample.New(o.Sampling)
	smp.AcceptPrompt(cached)
	stop := r.Model.Info().EOS
	isStop := func(id int32) bool {
		for _, s := range stop {
			if id == s {
				return true
			}
		}
		return false
	}
	dec := r.Tokenizer.NewDecoder()
	var parser *chat.Parser
	if !o.Raw {
		parser = chat.NewParser(chat.ParserOptions{ThinkingOpen: thinkingOpen, Tools: tools})
	}
	var reasoning, content strings.Builder
	emit := func(evs []chat.Event) {
		for _, ev := range evs {
			switch ev.Kind {
			case chat.EventReasoning:
				if ev.Text == "" {
					continue
				}
				reasoning.WriteString(ev.Text)
			case chat.EventContent:
				if ev.Text == "" {
					continue
				}
				content.WriteString(ev.Text)
			case chat.EventToolCall:
				res.ToolCalls = append(res.ToolCalls, *ev.ToolCall)
			}
			if o.OnEvent != nil {
				o.OnEvent(ev)
			}
		}
	}
	feed := func(text string) {
		if text == "" {
			return
		}
		if parser == nil {
			emit([]chat.Event{{Kind: chat.EventContent, Text: text}})
			return
		}
		emit(parser.Feed(text))
	}
	start := time.Now()
	var first time.Time
	out, finish, err := engine.Generate(ctx, r.Model, st, prompt, engine.GenerateOptions{
		MaxTokens: o.MaxTokens,
		Sampler:   smp,
		Stop:      stop,
		OnToken: func(id int32, _ []float32) bool {
			if res.Stats.GeneratedTokens == 0 {
				first = time.Now()
				if prefilled != nil {
					prefilled()
				}
			}
			res.Stats.GeneratedTokens++
			if isStop(id) {
				return true
			}
			if r.Tokenizer.IsSpecial(id) && (parser == nil || !parserTag(r.Tokenizer.TokenString(id))) {
				return true // special tokens are not text
			}
			feed(dec.Add(id))
			return true
		},
	})
	end := time.Now()
	if first.IsZero() {
		res.Stats.Prefill = end.Sub(start)
	} else {
		res.Stats.Prefill = first.Sub(start)
		res.Stats.Decode = end.Sub(first)
	}
	feed(dec.Flush())
	if parser != nil {
		emit(parser.Close())
	}
	res.Tokens = out
	res.Finish = finish
	res.Reasoning = reasoning.String()
	res.Content = content.String()
	return res, err
}

// parserTag reports whether a special token is a tag the output parser
// needs to see.
func parserTag(s string) bool {
	switch s {
	case chat.ThinkOpen, chat.ThinkClose, chat.ToolCallOpen, chat.ToolCallClose:
		return true
	}
	return false
}

// Session is a multi-turn conversation whose model state is kept across
// turns. Each turn renders the whole conversation; when the rendering
// begins with exactly the tokens the state holds, only the rest is fed.
// Otherwise the session falls back to a copy of the state saved at the end
// of the previous prompt (before the reply, whose tokens the template may
// render differently, e.g. without its reasoning) when that still matches,
// and else starts over. The saved copy costs as much memory as the state
// itself. A Session is not safe for concurrent use.
type Session struct {
	r *Runner
	// System is the system prompt ("" for none).
	System string
	// Thinking sets the template variable enable_thinking (nil: leave it
	// to the template's default).
	Thinking *bool
	// Tools are OpenAI-style tool objects offered to the model.
	Tools []json.RawMessage
	// Messages is the conversation so far, without the system prompt.
	Messages []chat.Message

	st   model.State
	toks []int32 // the tokens st consumed

	ckpt     model.State // copy of st at the end of the last prompt
	ckptToks []int32
}

// NewSession starts an empty conversation.
func (r *Runner) NewSession() *Session { return &Session{r: r} }

// Conversation returns the messages given to the template: the system
// prompt, if any, followed by Messages.
func (s *Session) Conversation() []chat.Message {
	var msgs []chat.Message
	if s.System != "" {
		msgs = append(msgs, chat.Message{Role: "system", Content: s.System})
	}
	return append(msgs, s.Messages...)
}

// Extra returns the extra template variables of the session.
func (s *Session) Extra() map[string]any {
	if s.Thinking == nil {
		return nil
	}
	return map[string]any{"enable_thinking": *s.Thinking}
}

// Render renders the conversation followed by the assistant generation
// prompt.
func (s *Session) Render() (string, error) {
	return s.r.Template.Render(s.Conversation(), s.Tools, true, s.Extra())
}

// StateTokens returns the tokens the session's model state holds.
func (s *Session) StateTokens() []int32 { return s.toks }

// Send adds a user message and generates the assistant's reply, which is
// added to the history (also when generation was interrupted, then with
// the text produced so far). An error from rendering leaves the history
// unchanged.
func (s *Session) Send(ctx context.Context, user string, o Options) (Result, error) {
	s.Messages = append(s.Messages, chat.Message{Role: "user", Content: user})
	prompt, err := s.Render()
	if err != nil {
		s.Messages = s.Messages[:len(s.Messages)-1]
		return Result{}, err
	}
	ids := s.r.Encode(prompt)
	if len(ids) == 0 {
		s.Messages = s.Messages[:len(s.Messages)-1]
		return Result{}, errors.New("textgen: empty prompt")
	}
	s.prepare(ids)
	cached := s.toks
	feed := ids[len(cached):]
	if len(feed) == 0 {
		// The state already holds the whole prompt, but the logits of its
		// last token are gone: replay from scratch.
		s.resetState()
		cached, feed = nil, ids
	}
	if s.st == nil {
		s.st = s.r.Model.NewState()
	}
	prefilled := func() {
		if s.ckpt != nil {
			s.ckpt.Free()
		}
		s.ckpt = s.st.Fork()
		s.ckptToks = ids
	}
	res, genErr := s.r.generate(ctx, s.st, cached, feed, chat.PromptOpensThinking(prompt), len(s.Tools) > 0, o, prefilled)
	// Record what the state consumed: cached + prompt + generated tokens,
	// cut to the state's length (the last sampled token is not fed, and an
	// interrupted prefill may stop part way).
	all := make([]int32, 0, len(ids)+len(res.Tokens))
	all = append(append(all, ids...), res.Tokens...)
	n := min(s.st.Len(), len(all))
	if s.st.Len() > len(all) {
		s.resetState() // unknown contents: do not reuse
	} else {
		s.toks = all[:n]
	}
	s.Messages = append(s.Messages, res.Message())
	return res, genErr
}

// prepare makes the state hold a prefix of ids, reusing what it can.
func (s *Session) prepare(ids []int32) {
	if s.st != nil && hasPrefix(ids, s.toks) {
		return
	}
	if s.ckpt != nil && hasPrefix(ids, s.ckptToks) {
		if s.st != nil {
			s.st.Free()
		}
		s.st = s.ckpt.Fork()
		s.toks = s.ckptToks
		return
	}
	s.resetState()
}

// Reset clears the history and the model state; the system prompt, thinking
// setting and tools stay.
func (s *Session) Reset() {
	s.Messages = nil
	s.resetState()
}

func (s *Session) resetState() {
	if s.st != nil {
		s.st.Free()
		s.st = nil
	}
	s.toks = nil
	if s.ckpt != nil {
		s.ckpt.Free()
		s.ckpt = nil
	}
	s.ckptToks = nil
}

// Close frees the session's model state.
func (s *Session) Close() { s.resetState() }

// hasPrefix reports whether ids begins with prefix.
func hasPrefix(ids, prefix []int32) bool {
	if len(prefix) > len(ids) {
		return false
	}
	for i, v := range prefix {
		if ids[i] != v {
			return false
		}
	}
	return true
}
