// Package server is an OpenAI-compatible HTTP server for ringo models:
// /v1/chat/completions, /v1/completions, /v1/models, /health and /metrics.
//
// One scheduler goroutine owns the model and runs continuous batching: all
// running sequences advance together in each forward pass (one model.Request
// per sequence), new requests join between passes and long prompts are
// prefilled in chunks mixed into the same passes as the decodes. Model
// states are snapshotted at prompt boundaries and at the end of generation
// into a bounded LRU prefix cache, so that a request that extends an
// earlier conversation prefills only its new tokens.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/tokenizer"
)

// Defaults for zero Options fields.
const (
	// DefaultMaxBatch is the default bound on running sequences.
	DefaultMaxBatch = 16
	// DefaultMaxQueue is the default bound on waiting requests.
	DefaultMaxQueue = 64
	// DefaultPrefillChunk is the default bound on prompt tokens per pass.
	DefaultPrefillChunk = 256
)

// statusClientClosed is recorded in metrics for requests whose client went
// away before a response was written (nginx's convention).
const statusClientClosed = 499

// Options configure a Server.
type Options struct {
	// Model runs the forward passes. The server owns it while running: no
	// one else may call Forward concurrently.
	Model model.Model
	// Tokenizer encodes prompts and decodes output.
	Tokenizer *tokenizer.Tokenizer
	// Template renders chat conversations (nil: the built-in Ling template).
	Template *chat.Template
	// ModelName is the id reported by /v1/models and accepted in requests.
	ModelName string
	// MaxBatch bounds the sequences running together (0: DefaultMaxBatch).
	MaxBatch int
	// MaxQueue bounds the requests waiting for a batch slot; more get HTTP
	// 429 (0: DefaultMaxQueue).
	MaxQueue int
	// MaxContext bounds prompt plus generated tokens (0 or more than the
	// model's: the model's context).
	MaxContext int
	// PrefillChunk bounds the prompt tokens run per forward pass
	// (0: DefaultPrefillChunk).
	PrefillChunk int
	// CacheBytes bounds the memory of cached states (0: no prefix cache).
	CacheBytes int64
	// APIKey, when set, is required as "Authorization: Bearer KEY" on /v1/.
	APIKey string
	// Logger receives errors (nil: slog.Default()).
	Logger *slog.Logger

	// testHook, when set, runs in the scheduler for every sampled token.
	testHook func(prompt []int32)
}

// Server serves the OpenAI API for one model. Create it with New and stop
// it with Shutdown or Close.
type Server struct {
	name     string
	tok      *tokenizer.Tokenizer
	tmpl     *chat.Template
	vocab    int
	maxCtx   int
	apiKey   string
	created  int64
	log      *slog.Logger
	sched    *scheduler
	met      *metrics
	draining atomic.Bool
	keepTags map[int32]bool // special tokens whose text the chat parser needs
}

// New starts a server's scheduler. The caller keeps ownership of the model
// (close it after the server).
func New(o Options) (*Server, error) {
	if o.Model == nil || o.Tokenizer == nil {
		return nil, errors.New("server: a model and a tokenizer are required")
	}
	if o.Template == nil {
		o.Template = chat.Default()
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = DefaultMaxQueue
	}
	if o.PrefillChunk <= 0 {
		o.PrefillChunk = DefaultPrefillChunk
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ModelName == "" {
		o.ModelName = "ringo"
	}
	info := o.Model.Info()
	if info.VocabSize <= 0 {
		return nil, fmt.Errorf("server: model reports vocabulary size %d", info.VocabSize)
	}
	maxCtx := info.MaxContext
	if o.MaxContext > 0 && (maxCtx <= 0 || o.MaxContext < maxCtx) {
		maxCtx = o.MaxContext
	}
	if maxCtx <= 1 {
		return nil, fmt.Errorf("server: context of %d tokens is too small (set MaxContext)", maxCtx)
	}
	eos := map[int32]bool{}
	for _, id := range info.EOS {
		eos[id] = true
	}
	if id, ok := o.Tokenizer.EOS(); ok {
		eos[id] = true
	}
	met := newMetrics()
	s := &Server{
		name:     o.ModelName,
		tok:      o.Tokenizer,
		tmpl:     o.Template,
		vocab:    info.VocabSize,
		maxCtx:   maxCtx,
		apiKey:   o.APIKey,
		created:  time.Now().Unix(),
		log:      o.Logger,
		met:      met,
		keepTags: map[int32]bool{},
	}
	for _, tag := range []string{chat.ThinkOpen, chat.ThinkClose, chat.ToolCallOpen, chat.ToolCallClose} {
		if id, ok := o.Tokenizer.TokenID(tag); ok {
			s.keepTags[id] = true
		}
	}
	sc := &scheduler{
		m:        o.Model,
		vocab:    info.VocabSize,
		maxCtx:   maxCtx,
		maxBatch: o.MaxBatch,
		maxQueue: o.MaxQueue,
		chunk:    o.PrefillChunk,
		eos:      eos,
		met:      met,
		log:      o.Logger,
		hook:     o.testHook,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	sc.cache = newPrefixCache(o.CacheBytes, met, sc.free)
	s.sched = sc
	go sc.loop()
	return s, nil
}

// Name returns the served model id.
func (s *Server) Name() string { return s.name }

// Stats is a snapshot of the scheduler's load, for tests and monitoring.
type Stats struct {
	Running      int   // sequences in the batch
	Waiting      int   // sequences in the queue
	States       int   // model states allocated (running and cached)
	CacheEntries int   // prefix cache entries
	CacheBytes   int64 // prefix cache memory
}

// Stats returns the current load.
func (s *Server) Stats() Stats {
	return Stats{
		Running:      int(s.met.running.Load()),
		Waiting:      int(s.met.queueDepth.Load()),
		States:       int(s.met.statesLive.Load()),
		CacheEntries: int(s.met.cacheEntries.Load()),
		CacheBytes:   s.met.cacheBytes.Load(),
	}
}

// Shutdown stops accepting generation requests (they get HTTP 503) and
// waits until the running and waiting sequences finish or ctx ends; then
// it closes the server, cancelling whatever is left. It returns ctx's error
// if sequences had to be cancelled.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var err error
	for s.sched.busy() > 0 {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("server shutdown: %w", ctx.Err())
		case <-t.C:
			continue
		}
		break
	}
	s.Close()
	return err
}

// Close cancels every sequence, frees all states and stops the scheduler.
func (s *Server) Close() {
	s.draining.Store(true)
	s.sched.close()
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w}
	endpoint := "other"
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("handler panic", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				writeError(rec, serverError(fmt.Errorf("internal error: %v", p)))
			}
		}
		if rec.status == 0 {
			rec.status = http.StatusOK
			if r.Context().Err() != nil {
				rec.status = statusClientClosed
			}
		}
		s.met.request(endpoint, rec.status)
	}()
	type route struct {
		method string
		h      func(http.ResponseWriter, *http.Request)
		auth   bool
	}
	var rt route
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/v1/chat/completions":
		rt = route{http.MethodPost, s.handleChat, true}
	case path == "/v1/completions":
		rt = route{http.MethodPost, s.handleCompletions, true}
	case path == "/v1/models" || strings.HasPrefix(path, "/v1/models/"):
		rt = route{http.MethodGet, s.handleModels, true}
		path = "/v1/models"
	case path == "/health":
		rt = route{http.MethodGet, s.handleHealth, false}
	case path == "/metrics":
		rt = route{http.MethodGet, s.handleMetrics, false}
	default:
		writeError(rec, &APIError{Status: http.StatusNotFound, Type: typeNotFound, Code: "not_found",
			Message: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
		return
	}
	endpoint = path
	if r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead) {
		rec.Header().Set("Allow", rt.method)
		writeError(rec, &APIError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: "method_not_allowed",
			Message: fmt.Sprintf("%s requires %s, not %s", path, rt.method, r.Method)})
		return
	}
	if rt.auth && !s.authorized(r) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="ringo"`)
		writeError(rec, &APIError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_api_key",
			Message: "missing or invalid API key; send Authorization: Bearer KEY"})
		return
	}
	rt.h(rec, r)
}

// authorized checks the bearer token when an API key is configured.
func (s *Server) authorized(r *http.Request) bool {
	if s.apiKey == "" {
		return true
	}
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.apiKey)) == 1
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting_down"})
		return
	}
	st := s.Stats()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "model": s.name, "running": st.Running, "waiting": st.Waiting})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.met.write(w)
}

// modelObject is an entry of /v1/models.
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	MaxLen  int    `json:"max_model_len"`
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	m := modelObject{ID: s.name, Object: "model", Created: s.created, OwnedBy: "ringo", MaxLen: s.maxCtx}
	if id, ok := strings.CutPrefix(strings.TrimSuffix(r.URL.Path, "/"), "/v1/models/"); ok {
		if id != s.name {
			writeError(w, &APIError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: "model", Code: "model_not_found",
				Message: fmt.Sprintf("the model %q does not exist", id)})
			return
		}
		writeJSON(w, http.StatusOK, m)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []modelObject{m}})
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

// WriteHeader implements http.ResponseWriter.
func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (r *statusRecorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

// Flush implements http.Flusher.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
