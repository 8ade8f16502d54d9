package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
)

// Finish reasons.
const (
	finishStop   = "stop"
	finishLength = "length"
)

// tokenLogprob is the log-probability of a sampled token and the most likely
// alternatives.
type tokenLogprob struct {
	logprob float32
	top     []idLogprob
}

// idLogprob is a token id with its log-probability.
type idLogprob struct {
	id      int32
	logprob float32
}

// tokenEvent is one sampled token.
type tokenEvent struct {
	id  int32
	eos bool // a stop token: ends the sequence and carries no text
	lp  *tokenLogprob
}

// outbox carries a sequence's tokens from the scheduler to its handler
// without ever blocking the scheduler.
type outbox struct {
	mu     sync.Mutex
	toks   []tokenEvent
	cached int // prompt tokens served from the prefix cache
	done   bool
	finish string
	err    error
	notify chan struct{}
}

func newOutbox() *outbox { return &outbox{notify: make(chan struct{}, 1)} }

func (o *outbox) signal() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

func (o *outbox) push(ev tokenEvent) {
	o.mu.Lock()
	o.toks = append(o.toks, ev)
	o.mu.Unlock()
	o.signal()
}

func (o *outbox) setCached(n int) {
	o.mu.Lock()
	o.cached = n
	o.mu.Unlock()
}

// close ends the stream with a finish reason or an error.
func (o *outbox) close(finish string, err error) {
	o.mu.Lock()
	if !o.done {
		o.done, o.finish, o.err = true, finish, err
	}
	o.mu.Unlock()
	o.signal()
}

// take returns the pending tokens and the end state.
func (o *outbox) take(buf []tokenEvent) (toks []tokenEvent, cached int, done bool, finish string, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	toks = append(buf[:0], o.toks...)
	o.toks = o.toks[:0]
	return toks, o.cached, o.done, o.finish, o.err
}

// seq is one generation request as the scheduler sees it.
type seq struct {
	ctx         context.Context
	prompt      []int32
	sampling    sample.Params
	maxTokens   int // 0: until the context is full
	logprobs    bool
	topLogprobs int
	out         *outbox
	enqueued    time.Time

	// owned by the scheduler
	sampler    *sample.Sampler
	state      model.State
	pending    []int32 // prompt tokens not yet run
	generated  []int32
	req        model.Request
	haveLogits bool       // req.Logits already holds the next-token logits
	draw       model.Draw // req.Draw's room: the next token drawn by the model's backend
	prefilling bool       // the current request runs prompt tokens
	ran        bool       // q was in the last forward pass
	lastTok    time.Time
	lpScratch  []float32
}

// scheduler owns the model: one goroutine runs all sequences in batched
// forward passes.
type scheduler struct {
	m        model.Model
	vocab    int
	maxCtx   int
	maxBatch int
	maxQueue int
	chunk    int
	eos      map[int32]bool
	cache    *prefixCache
	met      *metrics
	log      *slog.Logger
	hook     func(prompt []int32) // test hook run while handling each sampled token

	mu      sync.Mutex
	waiting []*seq
	closed  bool
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}

	running []*seq // scheduler goroutine only
}

// submit queues a sequence; it fails when the queue is full or the
// scheduler is closed.
func (s *scheduler) submit(q *seq) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errShuttingDown
	}
	free := s.maxBatch - int(s.met.running.Load())
	if len(s.waiting)-max(free, 0) >= s.maxQueue {
		return errQueueFull
	}
	q.enqueued = time.Now()
	s.waiting = append(s.waiting, q)
	s.met.queueDepth.Store(int64(len(s.waiting)))
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// close stops the scheduler, ending every sequence with errShuttingDown,
// and waits for its goroutine to exit.
func (s *scheduler) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.quit)
	}
	s.mu.Unlock()
	<-s.done
}

// busy returns the number of waiting and running sequences.
func (s *scheduler) busy() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting) + int(s.met.running.Load())
}

func (s *scheduler) newState() model.State {
	s.met.statesLive.Add(1)
	return s.m.NewState()
}

func (s *scheduler) fork(st model.State) model.State {
	s.met.statesLive.Add(1)
	return st.Fork()
}

func (s *scheduler) free(st model.State) {
	if st != nil {
		s.met.statesLive.Add(-1)
		st.Free()
	}
}

// loop is the scheduler goroutine.
func (s *scheduler) loop() {
	defer close(s.done)
	for {
		select {
		case <-s.quit:
			s.shutdown()
			return
		default:
		}
		s.admit()
		s.reap()
		if len(s.running) == 0 {
			select {
			case <-s.wake:
			case <-s.quit:
			}
			continue
		}
		s.step()
	}
}

// shutdown ends all sequences and empties the cache.
func (s *scheduler) shutdown() {
	s.mu.Lock()
	waiting := s.waiting
	s.waiting = nil
	s.met.queueDepth.Store(0)
	s.mu.Unlock()
	for _, q := range waiting {
		q.out.close("", errShuttingDown)
		s.met.cancelled.Add(1)
	}
	for _, q := range s.running {
		s.free(q.state)
		q.state = nil
		q.out.close("", errShuttingDown)
		s.met.cancelled.Add(1)
	}
	s.running = nil
	s.met.running.Store(0)
	s.cache.clear()
}

// admit moves waiting sequences into the running batch (dropping cancelled
// ones) and attaches their states, from the prefix cache when possible.
func (s *scheduler) admit() {
	s.mu.Lock()
	var admitted []*seq
	kept := s.waiting[:0]
	for _, q := range s.waiting {
		switch {
		case q.ctx.Err() != nil:
			q.out.close("", q.ctx.Err())
			s.met.cancelled.Add(1)
		case len(s.running)+len(admitted) < s.maxBatch:
			admitted = append(admitted, q)
		default:
			kept = append(kept, q)
		}
	}
	clear(s.waiting[len(kept):])
	s.waiting = kept
	s.met.queueDepth.Store(int64(len(kept)))
	s.met.running.Store(int64(len(s.running) + len(admitted)))
	s.mu.Unlock()
	for _, q := range admitted {
		s.start(q)
	}
}

// start prepares an admitted sequence.
func (s *scheduler) start(q *seq) {
	q.sampler = sample.New(q.sampling)
	q.sampler.AcceptPrompt(q.prompt)
	q.req.Logits, q.req.Draw, q.req.Drawn = nil, nil, false
	s.met.promptTokens.Add(int64(len(q.prompt)))
	if e := s.cache.lookup(q.prompt); e != nil {
		q.state = s.fork(e.state)
		n := len(e.tokens)
		q.pending = q.prompt[n:]
		if len(q.pending) == 0 {
			q.req.Logits = append(q.req.Logits[:0], e.logits...)
			q.haveLogits = true
		}
		q.out.setCached(n)
		s.met.cacheHits.Add(1)
		s.met.cachedTokens.Add(int64(n))
	} else {
		q.state = s.newState()
		q.pending = q.prompt
		if s.cache.enabled() {
			s.met.cacheMisses.Add(1)
		}
	}
	q.req.State = q.state
	s.running = append(s.running, q)
}

// reap drops running sequences whose request was cancelled.
func (s *scheduler) reap() {
	kept := s.running[:0]
	for _, q := range s.running {
		if err := q.ctx.Err(); err != nil {
			s.free(q.state)
			q.state = nil
			q.out.close("", err)
			s.met.cancelled.Add(1)
			s.met.e2e.observe(time.Since(q.enqueued).Seconds())
			continue
		}
		kept = append(kept, q)
	}
	clear(s.running[len(kept):])
	s.running = kept
	s.met.running.Store(int64(len(kept)))
}

// step runs one batched forward pass: one token for every decoding
// sequence plus prompt chunks (at most s.chunk prompt tokens in all), then
// samples the next token of every sequence whose logits are ready.
func (s *scheduler) step() {
	var reqs []*model.Request
	var inBatch []*seq
	budget := s.chunk
	rows := 0
	for _, q := range s.running {
		q.prefilling, q.ran = false, false
		switch {
		case q.haveLogits:
			continue
		case len(q.pending) > 0:
			if budget == 0 {
				continue
			}
			n := min(len(q.pending), budget)
			budget -= n
			q.req.Tokens = q.pending[:n]
			q.pending = q.pending[n:]
			q.prefilling = true
			q.req.Draw = nil // (the prefix cache keeps the prompt's logits)
		default:
			q.req.Tokens = q.generated[len(q.generated)-1:]
			// a decode step's token drawn where the logits are, when the
			// backend can, the request has no penalties and wants no
			// logprobs (the same tokens as the host's draw)
			q.req.Draw = nil
			if d, ok := q.sampler.Plan(); ok && !q.logprobs {
				q.draw = model.Draw(d)
				q.req.Draw = &q.draw
			}
		}
		q.ran = true
		rows += len(q.req.Tokens)
		reqs = append(reqs, &q.req)
		inBatch = append(inBatch, q)
	}
	if len(reqs) > 0 {
		if err := s.forward(reqs); err != nil {
			s.log.Error("forward pass failed", "sequences", len(reqs), "err", err)
			failed := map[*seq]bool{}
			for _, q := range inBatch {
				failed[q] = true
				s.fail(q, fmt.Errorf("model forward pass: %w", err))
			}
			s.running = slices.DeleteFunc(s.running, func(q *seq) bool { return failed[q] })
			s.met.running.Store(int64(len(s.running)))
			return
		}
		s.met.steps.Add(1)
		s.met.stepRows.Add(int64(rows))
	}
	var ready []*seq
	for _, q := range s.running {
		if q.haveLogits || (q.ran && len(q.pending) == 0) {
			ready = append(ready, q)
		}
	}
	evs, errs := s.sampleAll(ready)
	ended := map[*seq]bool{}
	for i, q := range ready {
		if errs[i] != nil {
			s.fail(q, errs[i])
			ended[q] = true
		} else if !s.commit(q, evs[i]) {
			ended[q] = true
		}
	}
	kept := s.running[:0]
	for _, q := range s.running {
		if !ended[q] {
			kept = append(kept, q)
		}
	}
	clear(s.running[len(kept):])
	s.running = kept
	s.met.running.Store(int64(len(kept)))
}

// forward runs the model, turning a panic into an error.
func (s *scheduler) forward(reqs []*model.Request) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return s.m.Forward(context.Background(), reqs)
}

// fail ends a sequence with an internal error.
func (s *scheduler) fail(q *seq, err error) {
	s.free(q.state)
	q.state = nil
	q.out.close("", serverError(err))
	s.met.failed.Add(1)
}

// sampleNext draws q's next token from q.req.Logits, or takes the one the
// model drew. It touches only q, so the sequences of one step are sampled
// in parallel; a panic is returned as an error.
func (s *scheduler) sampleNext(q *seq) (ev tokenEvent, err error) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("sequence failed", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error: %v", r)
		}
	}()
	if s.hook != nil {
		s.hook(q.prompt)
	}
	if q.req.Drawn && !q.haveLogits {
		id := q.req.Token
		q.sampler.Accept(id)
		return tokenEvent{id: id, eos: s.eos[id]}, nil // (no logprobs asked for)
	}
	logits := q.req.Logits[:s.vocab]
	id := q.sampler.Sample(logits)
	q.sampler.Accept(id)
	ev = tokenEvent{id: id, eos: s.eos[id]}
	if q.logprobs {
		ev.lp = q.logprob(logits, id)
	}
	return ev, nil
}

// sampleAll samples the next token of every ready sequence, in parallel
// when there are several.
func (s *scheduler) sampleAll(ready []*seq) ([]tokenEvent, []error) {
	evs := make([]tokenEvent, len(ready))
	errs := make([]error, len(ready))
	workers := min(len(ready), runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i, q := range ready {
			evs[i], errs[i] = s.sampleNext(q)
		}
		return evs, errs
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ready) {
					return
				}
				evs[i], errs[i] = s.sampleNext(ready[i])
			}
		}()
	}
	wg.Wait()
	return evs, errs
}

// commit records q's sampled token: it snapshots the prompt state after a
// completed prefill, hands the token to the handler and ends the sequence
// when it is finished. It reports whether q keeps running. A panic ends
// only this sequence.
func (s *scheduler) commit(q *seq, ev tokenEvent) (keep bool) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("sequence failed", "panic", r, "stack", string(debug.Stack()))
			s.fail(q, fmt.Errorf("internal error: %v", r))
			keep = false
		}
	}()
	if q.prefilling && s.cache.enabled() && !s.cache.has(q.prompt) {
		// snapshot at the prompt boundary
		s.cache.insert(q.prompt, s.fork(q.state), q.req.Logits[:s.vocab])
	}
	q.haveLogits = false
	q.prefilling = false
	q.generated = append(q.generated, ev.id)
	now := time.Now()
	if len(q.generated) == 1 {
		s.met.ttft.observe(now.Sub(q.enqueued).Seconds())
	} else {
		s.met.itl.observe(now.Sub(q.lastTok).Seconds())
	}
	q.lastTok = now
	s.met.generatedTokens.Add(1)
	q.out.push(ev)
	finish := ""
	switch {
	case ev.eos:
		finish = finishStop
	case q.maxTokens > 0 && len(q.generated) >= q.maxTokens:
		finish = finishLength
	case q.state.Len()+1 >= s.maxCtx:
		finish = finishLength
	}
	if finish == "" {
		return true
	}
	// Keep the final state: it has consumed the prompt and every generated
	// token but the last, which is what a follow-up turn extends.
	// (Without the logits of its last token when the model drew it: such an
	// entry serves only prompts that extend it.)
	key := append(slices.Clone(q.prompt), q.generated[:len(q.generated)-1]...)
	var logits []float32
	if !q.req.Drawn {
		logits = q.req.Logits[:s.vocab]
	}
	s.cache.insert(key, q.state, logits)
	q.state = nil
	q.out.close(finish, nil)
	s.met.e2e.observe(time.Since(q.enqueued).Seconds())
	return false
}

// logprob computes the log-probability of id and the top alternatives.
func (q *seq) logprob(logits []float32, id int32) *tokenLogprob {
	if cap(q.lpScratch) < len(logits) {
		q.lpScratch = make([]float32, len(logits))
	}
	lp := q.lpScratch[:len(logits)]
	sample.LogSoftmax(lp, logits)
	r := &tokenLogprob{logprob: lp[id]}
	k := q.topLogprobs
	if k <= 0 {
		return r
	}
	top := make([]idLogprob, 0, k+1)
	for i, v := range lp {
		if len(top) == k && v <= top[k-1].logprob {
			continue
		}
		j := len(top)
		if j == k {
			j--
		} else {
			top = append(top, idLogprob{})
		}
		for j > 0 && top[j-1].logprob < v {
			top[j] = top[j-1]
			j--
		}
		top[j] = idLogprob{int32(i), v}
	}
	r.top = top
	return r
}

// errCancelled reports whether err is a context cancellation.
func errCancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
