package server

import (
	"encoding/json"
	"net/http"
	"time"
)

// textCompletion is the response (and, streamed, each chunk) of
// /v1/completions.
type textCompletion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   any                `json:"usage,omitempty"`
}

type completionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// completionLogprobs is the legacy logprobs object of text completions.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// completionLogprobs converts token logprobs; offset is the length of the
// text already returned.
func (s *Server) completionLogprobs(lps []outLogprob, offset int) *completionLogprobs {
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, lp := range lps {
		t, _ := s.tokenText(lp.id)
		out.Tokens = append(out.Tokens, t)
		out.TokenLogprobs = append(out.TokenLogprobs, lp.logprob)
		top := map[string]float32{}
		for _, a := range lp.top {
			at, _ := s.tokenText(a.id)
			if _, dup := top[at]; !dup {
				top[at] = a.logprob
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(t)
	}
	return out
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeError(w, errShuttingDown)
		return
	}
	var req completionRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	in, err := req.validate(s)
	if err != nil {
		writeError(w, err)
		return
	}
	ids := in.tokens
	if ids == nil {
		ids = s.tok.Encode(in.text, true)
	}
	g, err := s.startGeneration(r.Context(), ids, in.gen, nil)
	if err != nil {
		if ae := asAPIError(err); ae.Param == "messages" {
			ae2 := *ae
			ae2.Param = "prompt"
			err = &ae2
		}
		writeError(w, err)
		return
	}
	defer g.cancel()
	id, created := newID("cmpl-"), time.Now().Unix()
	if in.gen.stream {
		s.streamCompletion(w, r, g, in.gen, id, created)
		return
	}
	var text []byte
	var lps []outLogprob
	for !g.done {
		t, lp, err := g.next(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				writeError(w, err)
			}
			return
		}
		text = append(text, t...)
		lps = append(lps, lp...)
	}
	finish := g.finish
	ch := completionChoice{Text: string(text), Index: 0, FinishReason: &finish}
	if in.gen.logprobs {
		ch.Logprobs = s.completionLogprobs(lps, 0)
	}
	writeJSON(w, http.StatusOK, textCompletion{ID: id, Object: "text_completion", Created: created, Model: s.name,
		Choices: []completionChoice{ch}, Usage: g.usage()})
}

// streamCompletion sends a text completion as server-sent events.
func (s *Server) streamCompletion(w http.ResponseWriter, r *http.Request, g *generation, gp genParams, id string, created int64) {
	sse := newSSE(w)
	offset := 0
	var pendingLP []outLogprob
	chunk := func(text string, finish *string) textCompletion {
		c := textCompletion{ID: id, Object: "text_completion", Created: created, Model: s.name,
			Choices: []completionChoice{{Text: text, Index: 0, FinishReason: finish}}}
		if gp.logprobs && len(pendingLP) > 0 {
			c.Choices[0].Logprobs = s.completionLogprobs(pendingLP, offset)
			pendingLP = nil
		}
		if gp.usage {
			c.Usage = json.RawMessage("null")
		}
		offset += len(text)
		return c
	}
	for !g.done {
		t, lp, err := g.next(r.Context())
		if err != nil {
			if r.Context().Err() == nil {
				sse.send(asAPIError(err))
				sse.done()
			}
			return
		}
		pendingLP = append(pendingLP, lp...)
		if t == "" {
			continue
		}
		if sse.send(chunk(t, nil)) != nil {
			return
		}
	}
	finish := g.finish
	if sse.send(chunk("", &finish)) != nil {
		return
	}
	if gp.usage {
		if sse.send(textCompletion{ID: id, Object: "text_completion", Created: created, Model: s.name,
			Choices: []completionChoice{}, Usage: g.usage()}) != nil {
			return
		}
	}
	sse.done()
}
