package server

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/ringo-ai/ringo/tokenizer"
)

// stopMatcher finds stop sequences in streamed text, across token
// boundaries: text that may be the start of a stop sequence is held back
// until decided, and neither the stop sequence nor anything after it is
// emitted.
type stopMatcher struct {
	stops []string
	buf   string
}

// feed adds text and returns what can be emitted; hit reports that a stop
// sequence was found (out is the text before it).
func (m *stopMatcher) feed(text string) (out string, hit bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	m.buf += text
	at := -1
	for _, s := range m.stops {
		if i := strings.Index(m.buf, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at >= 0 {
		out = m.buf[:at]
		m.buf = ""
		return out, true
	}
	keep := 0
	for _, s := range m.stops {
		for n := min(len(s)-1, len(m.buf)); n > keep; n-- {
			if strings.HasSuffix(m.buf, s[:n]) {
				keep = n
				break
			}
		}
	}
	out = m.buf[:len(m.buf)-keep]
	m.buf = m.buf[len(m.buf)-keep:]
	return out, false
}

// flush returns the held-back text at the end of generation.
func (m *stopMatcher) flush() string {
	out := m.buf
	m.buf = ""
	return out
}

// generation is a handler's view of a running sequence: it turns sampled
// tokens into text, applying stop sequences.
type generation struct {
	s       *Server
	q       *seq
	cancel  context.CancelFunc
	dec     *tokenizer.Decoder
	special func(int32) bool // true: a special token whose text is kept
	stops   stopMatcher
	buf     []tokenEvent

	promptTokens int
	tokens       int // generated tokens received (including a stop token)
	cached       int
	finish       string
	done         bool
}

// outLogprob is the logprob information of one generated token.
type outLogprob struct {
	id int32
	tokenLogprob
}

// startGeneration checks the prompt against the context and queues it.
// The returned generation must be released with cancel.
func (s *Server) startGeneration(ctx context.Context, prompt []int32, g genParams, keepSpecial func(int32) bool) (*generation, error) {
	if len(prompt) == 0 {
		return nil, badRequest("messages", "the prompt is empty")
	}
	if len(prompt) >= s.maxCtx {
		return nil, &APIError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: "messages", Code: "context_length_exceeded",
			Message: fmt.Sprintf("the prompt has %d tokens; this server's context is %d tokens (including at least one generated token)", len(prompt), s.maxCtx)}
	}
	for _, id := range prompt {
		if id < 0 || int(id) >= s.vocab {
			return nil, badRequest("prompt", "token id %d is outside the vocabulary of %d", id, s.vocab)
		}
	}
	qctx, cancel := context.WithCancel(ctx)
	q := &seq{
		ctx:         qctx,
		prompt:      prompt,
		sampling:    g.sampling,
		maxTokens:   g.maxTokens,
		logprobs:    g.logprobs,
		topLogprobs: g.topLogprobs,
		out:         newOutbox(),
	}
	if err := s.sched.submit(q); err != nil {
		cancel()
		return nil, err
	}
	return &generation{s: s, q: q, cancel: cancel, dec: s.tok.NewDecoder(), special: keepSpecial,
		stops: stopMatcher{stops: g.stop}, promptTokens: len(prompt)}, nil
}

// next waits for more output and returns the new text (possibly empty) and
// the logprobs of the tokens it came from. After the last call done is set
// and finish holds the reason.
func (g *generation) next(ctx context.Context) (text string, lps []outLogprob, err error) {
	if g.done {
		return "", nil, nil
	}
	select {
	case <-g.q.out.notify:
	case <-ctx.Done():
		g.cancel()
		return "", nil, fmt.Errorf("waiting for tokens: %w", ctx.Err())
	}
	toks, cached, done, finish, qerr := g.q.out.take(g.buf)
	g.buf = toks
	g.cached = cached
	var sb strings.Builder
	for _, ev := range toks {
		g.tokens++
		if ev.lp != nil && !ev.eos {
			lps = append(lps, outLogprob{ev.id, *ev.lp})
		}
		if ev.eos {
			continue
		}
		if g.s.tok.IsSpecial(ev.id) && (g.special == nil || !g.special(ev.id)) {
			continue
		}
		sb.WriteString(g.dec.Add(ev.id))
	}
	if done && qerr == nil {
		sb.WriteString(g.dec.Flush())
	}
	out, hit := g.stops.feed(sb.String())
	if hit {
		g.cancel() // the scheduler drops the sequence
		g.done, g.finish = true, finishStop
		return out, lps, nil
	}
	if done {
		if qerr != nil {
			g.done = true
			if errCancelled(qerr) {
				return out, lps, fmt.Errorf("generation cancelled: %w", qerr)
			}
			return out, lps, qerr
		}
		out += g.stops.flush()
		g.done, g.finish = true, finish
	}
	return out, lps, nil
}

// usage returns the token counts in OpenAI's shape.
func (g *generation) usage() *usage {
	return &usage{
		PromptTokens:        g.promptTokens,
		CompletionTokens:    g.tokens,
		TotalTokens:         g.promptTokens + g.tokens,
		PromptTokensDetails: &promptTokensDetails{CachedTokens: g.cached},
	}
}

// usage is OpenAI's usage object.
type usage struct {
	PromptTokens        int                  `json:"prompt_tokens"`
	CompletionTokens    int                  `json:"completion_tokens"`
	TotalTokens         int                  `json:"total_tokens"`
	PromptTokensDetails *promptTokensDetails `json:"prompt_tokens_details,omitempty"`
}

// promptTokensDetails reports prompt tokens served from the prefix cache.
type promptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}
