package server

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// sseWriter writes server-sent events.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

// newSSE sends the event-stream headers.
func newSSE(w http.ResponseWriter) *sseWriter {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	e := &sseWriter{w: w, rc: http.NewResponseController(w)}
	e.flush()
	return e
}

func (e *sseWriter) flush() {
	if e.err == nil {
		if err := e.rc.Flush(); err != nil {
			e.err = fmt.Errorf("flush event stream: %w", err)
		}
	}
}

// send writes one "data: JSON" event; after a write error it does nothing
// and returns that error.
func (e *sseWriter) send(v any) error {
	if e.err != nil {
		return e.err
	}
	b, err := json.Marshal(v)
	if err != nil {
		e.err = fmt.Errorf("encode event: %w", err)
		return e.err
	}
	if _, err := fmt.Fprintf(e.w, "data: %s\n\n", b); err != nil {
		e.err = fmt.Errorf("write event: %w", err)
		return e.err
	}
	e.flush()
	return e.err
}

// done writes the final "data: [DONE]" event.
func (e *sseWriter) done() {
	if e.err == nil {
		if _, err := fmt.Fprint(e.w, "data: [DONE]\n\n"); err != nil {
			e.err = err
		}
		e.flush()
	}
}
