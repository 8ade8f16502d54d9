package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/internal/fixture"
	"github.com/ringo-ai/ringo/model"
)

// request is one test request: a prompt with sampling settings.
type request struct {
	msg       string
	temp      float64
	seed      int64
	maxTokens int64
}

func testRequests(n int) []request {
	var rs []request
	for i := range n {
		r := request{msg: fmt.Sprintf("Question %d: %s", i, strings.Repeat("tell me more ", i%5)), seed: int64(i), maxTokens: int64(8 + i%9)}
		if i%2 == 1 {
			r.temp = 0.8
		}
		rs = append(rs, r)
	}
	return rs
}

func run(t testing.TB, ts *testServer, r request) (string, error) {
	res, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage(r.msg)}, r.maxTokens, r.seed, r.temp)
	if err != nil {
		return "", err
	}
	return res.Choices[0].Message.Content + "|" + res.Choices[0].FinishReason, nil
}

// TestConcurrentMatchesSequential runs requests one at a time and then all
// at once (batched together, with chunked prefill) and checks each result is
// identical. The cache is off so that both runs compute everything.
func TestConcurrentMatchesSequential(t *testing.T) {
	ts := newTestServer(t, Options{MaxBatch: 8, MaxQueue: 64})
	reqs := testRequests(24)
	want := make([]string, len(reqs))
	for i, r := range reqs {
		var err error
		if want[i], err = run(t, ts, r); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]string, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = run(t, ts, r)
		}()
	}
	wg.Wait()
	for i := range reqs {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if got[i] != want[i] {
			t.Errorf("request %d: concurrent %q, sequential %q", i, got[i], want[i])
		}
	}
	if ts.met.steps.Load() == 0 {
		t.Fatal("no forward steps counted")
	}
	waitIdle(t, ts.Server)
}

// TestSecondTurnReusesState checks that a follow-up chat turn forks the
// cached state of the first and generates exactly what a cold server does.
func TestSecondTurnReusesState(t *testing.T) {
	warm := newTestServer(t, Options{CacheBytes: 64 << 20})
	cold := newTestServer(t, Options{})
	history := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage("What is the capital of France?")}
	first, err := chatText(t, warm, history, 24, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first.Usage.PromptTokensDetails.CachedTokens != 0 {
		t.Fatalf("first turn cached %d tokens", first.Usage.PromptTokensDetails.CachedTokens)
	}
	history = append(history, first.Choices[0].Message.ToParam(), openai.UserMessage("And of Italy? Answer with one word."))
	for turn := 2; turn <= 3; turn++ {
		w, err := chatText(t, warm, history, 24, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := chatText(t, cold, history, 24, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		cached := w.Usage.PromptTokensDetails.CachedTokens
		t.Logf("turn %d: prompt %d tokens, %d cached", turn, w.Usage.PromptTokens, cached)
		if cached == 0 || cached >= int64(w.Usage.PromptTokens)+1 {
			t.Fatalf("turn %d: cached_tokens %d of %d", turn, cached, w.Usage.PromptTokens)
		}
		if c.Usage.PromptTokensDetails.CachedTokens != 0 {
			t.Fatalf("cold server reported cached tokens")
		}
		if w.Choices[0].Message.Content != c.Choices[0].Message.Content || w.Usage.CompletionTokens != c.Usage.CompletionTokens {
			t.Fatalf("turn %d: warm %q, cold %q", turn, w.Choices[0].Message.Content, c.Choices[0].Message.Content)
		}
		history = append(history, w.Choices[0].Message.ToParam(), openai.UserMessage("Thanks. And Spain?"))
	}
	if warm.met.cacheHits.Load() == 0 || warm.met.cachedTokens.Load() == 0 {
		t.Fatal("no cache hits counted")
	}
	waitIdle(t, warm.Server)
}

// TestChunkedPrefillMixesDecodes checks that a long prompt is prefilled in
// chunks of at most PrefillChunk tokens, in the same forward passes as
// running decodes.
func TestChunkedPrefillMixesDecodes(t *testing.T) {
	fm := newFake(t, strings.Repeat("tick ", 200))
	fm.ctx = 8192
	fm.delay = time.Millisecond
	ts := newTestServer(t, Options{Model: fm, PrefillChunk: 64})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if _, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("short")}, 150, 0, 0); err != nil {
			t.Error(err)
		}
	}()
	waitFor(t, func() bool { return ts.met.generatedTokens.Load() > 3 })
	go func() {
		defer wg.Done()
		long := strings.Repeat("many words in a long prompt ", 60)
		if _, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage(long)}, 5, 0, 0); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	fm.mu.Lock()
	defer fm.mu.Unlock()
	mixed := 0
	for _, b := range fm.batches {
		prompt, decode := 0, 0
		for _, n := range b {
			if n > 1 {
				prompt += n
			} else {
				decode++
			}
		}
		if prompt > 64 {
			t.Fatalf("a forward pass ran %d prompt tokens (chunk 64): %v", prompt, b)
		}
		if prompt > 0 && decode > 0 {
			mixed++
		}
	}
	if mixed < 3 {
		t.Fatalf("only %d passes mixed prefill chunks with decodes", mixed)
	}
}

// TestLoad runs 32 concurrent streams (for RINGO_LOAD_SECONDS, default 3)
// and checks for errors, leaked goroutines and leaked states.
func TestLoad(t *testing.T) {
	secs := 3.0
	if s := os.Getenv("RINGO_LOAD_SECONDS"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("RINGO_LOAD_SECONDS: %v", err)
		}
		secs = v
	} else if testing.Short() {
		secs = 1
	}
	before := runtime.NumGoroutine()
	ts := newTestServer(t, Options{MaxBatch: 16, MaxQueue: 64, CacheBytes: 4 << 20})
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var done, failed, tokens atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage(fmt.Sprintf("worker %d request %d %s", w, i, strings.Repeat("x", i%7)))}
				ctx, cancel := context.WithCancel(context.Background())
				st := ts.client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
					Model: defaultmodel.Name, Messages: msgs, MaxTokens: openai.Int(int64(4 + (w+i)%24)),
					Temperature: openai.Float(0.7), Seed: openai.Int(int64(i)),
					StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
				})
				abandon := (w+i)%11 == 5 // some clients walk away mid-stream
				n := 0
				for st.Next() {
					n++
					if abandon && n == 3 {
						cancel()
						break
					}
					if u := st.Current().Usage; u.TotalTokens > 0 {
						tokens.Add(u.CompletionTokens)
					}
				}
				if err := st.Err(); err != nil && !abandon {
					failed.Add(1)
					t.Errorf("worker %d: %v", w, err)
				}
				st.Close()
				cancel()
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	t.Logf("%d requests, %d tokens in %.1fs; %d steps", done.Load(), tokens.Load(), secs, ts.met.steps.Load())
	if failed.Load() > 0 || done.Load() == 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), done.Load())
	}
	waitIdle(t, ts.Server)
	st := ts.Stats()
	if st.States != st.CacheEntries || st.CacheBytes > 4<<20 {
		t.Fatalf("stats after load: %+v", st)
	}
	// scrape metrics while idle
	resp, err := http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{
		`ringo_requests_total{endpoint="/v1/chat/completions",status="200"}`,
		"ringo_prompt_tokens_total", "ringo_generated_tokens_total", "ringo_queue_depth 0", "ringo_running_sequences 0",
		"ringo_prefix_cache_hits_total", "ringo_prefix_cache_misses_total", "ringo_prefix_cache_evictions_total",
		"ringo_prefix_cache_cached_tokens_total", "ringo_time_to_first_token_seconds_bucket", "ringo_inter_token_latency_seconds_count",
	} {
		if !strings.Contains(string(body), name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	if ts.met.cacheEvictions.Load() == 0 {
		t.Errorf("a 4 MiB cache under load evicted nothing")
	}
	ts.http.CloseClientConnections()
	ts.http.Close()
	ts.Close()
	http.DefaultClient.CloseIdleConnections()
	if st := ts.Stats(); st.States != 0 || st.CacheEntries != 0 {
		t.Fatalf("after close: %+v", st)
	}
	waitGoroutines(t, before+2)
}

func TestShutdownDrains(t *testing.T) {
	fm := newFake(t, strings.Repeat("la ", 40))
	fm.delay = time.Millisecond
	ts := newTestServer(t, Options{Model: fm})
	res := make(chan error, 1)
	go func() {
		r, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("sing")}, 30, 0, 0)
		if err == nil && r.Choices[0].FinishReason != "length" {
			err = fmt.Errorf("finish %q", r.Choices[0].FinishReason)
		}
		res <- err
	}()
	waitFor(t, func() bool { return ts.Stats().Running == 1 })
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	status, body := ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	checkError(t, "after shutdown", status, body, 503, "")

	// a shutdown that times out cancels what runs
	fm2 := newFake(t, strings.Repeat("la ", 1000))
	fm2.delay = 5 * time.Millisecond
	ts2 := newTestServer(t, Options{Model: fm2})
	go func() {
		_, err := chatText(t, ts2, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("sing")}, 1000, 0, 0)
		res <- err
	}()
	waitFor(t, func() bool { return ts2.Stats().Running == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts2.Shutdown(ctx); err == nil {
		t.Fatal("shutdown with a long request did not time out")
	}
	if err := <-res; err == nil {
		t.Fatal("cancelled request succeeded")
	}
	if fm2.live.Load() != 0 {
		t.Fatalf("%d states left after shutdown", fm2.live.Load())
	}
}

func TestPrefixCacheUnit(t *testing.T) {
	fm := &fakeModel{vocab: 10}
	m := newMetrics()
	free := func(s model.State) { s.Free() }
	c := newPrefixCache(600, m, free)
	mk := func(toks ...int32) model.State {
		s := fm.NewState().(*fakeState)
		s.toks = toks
		return s
	}
	c.insert([]int32{1, 2, 3}, mk(1, 2, 3), make([]float32, 10)) // 64+12 + 40 + 12 = 128 bytes
	c.insert([]int32{1, 2, 3, 4, 5}, mk(1, 2, 3, 4, 5), make([]float32, 10))
	c.insert([]int32{7}, mk(7), make([]float32, 10))
	if e := c.lookup([]int32{1, 2, 3, 4, 5, 6}); e == nil || len(e.tokens) != 5 {
		t.Fatalf("longest prefix: %+v", e)
	}
	if e := c.lookup([]int32{1, 2, 3, 4}); e == nil || len(e.tokens) != 3 {
		t.Fatalf("prefix of 4: %+v", e)
	}
	if e := c.lookup([]int32{1, 2}); e != nil {
		t.Fatalf("no entry is a prefix of [1 2]: %+v", e)
	}
	if e := c.lookup([]int32{7}); e == nil {
		t.Fatal("exact match missed")
	}
	// duplicate insert frees the new state
	c.insert([]int32{7}, mk(7), make([]float32, 10))
	if c.len() != 3 || fm.live.Load() != 3 {
		t.Fatalf("entries %d, live %d", c.len(), fm.live.Load())
	}
	// LRU: [1 2 3] was used after [1..5]; [7] most recently. Filling evicts [1..5] first.
	c.lookup([]int32{1, 2, 3})
	c.lookup([]int32{7})
	c.insert([]int32{8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8}, mk(make([]int32, 20)...), make([]float32, 10))
	if c.has([]int32{1, 2, 3, 4, 5}) || !c.has([]int32{7}) || m.cacheEvictions.Load() == 0 {
		t.Fatalf("eviction order wrong: evictions %d", m.cacheEvictions.Load())
	}
	if c.bytes > c.limit || int64(c.len()) != m.cacheEntries.Load() || c.bytes != m.cacheBytes.Load() {
		t.Fatalf("bytes %d limit %d entries %d/%d", c.bytes, c.limit, c.len(), m.cacheEntries.Load())
	}
	// an entry without logits (its last token drawn by the model) serves
	// longer prompts only
	c.clear()
	c.insert([]int32{4, 5}, mk(4, 5), nil)
	if e := c.lookup([]int32{4, 5}); e != nil {
		t.Fatalf("entry without logits served its own tokens: %+v", e)
	}
	if e := c.lookup([]int32{4, 5, 6}); e == nil || len(e.tokens) != 2 {
		t.Fatalf("entry without logits missed a longer prompt: %+v", e)
	}
	// too large for the bound: rejected and freed
	c.insert(make([]int32, 200), mk(make([]int32, 200)...), nil)
	c.clear()
	if fm.live.Load() != 0 || c.len() != 0 || m.cacheBytes.Load() != 0 {
		t.Fatalf("after clear: live %d, entries %d, bytes %d", fm.live.Load(), c.len(), m.cacheBytes.Load())
	}
}

// TestEndOfGenerationSnapshot checks that the state kept at the end of a
// generation (prompt plus completion) serves the next turn, which then
// prefills only the tokens after the completion.
func TestEndOfGenerationSnapshot(t *testing.T) {
	fm := newFake(t, "The capital of France is Paris.")
	ts := newTestServer(t, Options{Model: fm, CacheBytes: 1 << 20})
	history := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Capital of France?")}
	first, err := chatText(t, ts, history, 100, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first.Choices[0].Message.Content != "The capital of France is Paris." || first.Choices[0].FinishReason != "stop" {
		t.Fatalf("first turn %s", first.RawJSON())
	}
	history = append(history, first.Choices[0].Message.ToParam(), openai.UserMessage("And Italy?"))
	second, err := chatText(t, ts, history, 100, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	// the completion minus its end token: everything before <|role_end|>
	want := first.Usage.PromptTokens + first.Usage.CompletionTokens - 1
	if got := second.Usage.PromptTokensDetails.CachedTokens; got != want {
		t.Fatalf("cached_tokens %d, want %d (prompt %d + completion %d - 1)", got, want, first.Usage.PromptTokens, first.Usage.CompletionTokens)
	}
}

// TestDrawnMatchesHost serves greedy and temperature requests, batched,
// with the decode tokens drawn by the model and on the host: the same
// answers; with logprobs the tokens stay on the host; and a second chat
// turn on the drawing server, whose cache entry of the first turn's end
// has no logits, answers as a cold server does.
func TestDrawnMatchesHost(t *testing.T) {
	real, _, _ := loadReal(t)
	dm := &fixture.DrawModel{Model: real}
	drawing := newTestServer(t, Options{Model: dm, MaxBatch: 4, MaxQueue: 64, CacheBytes: 64 << 20})
	host := newTestServer(t, Options{MaxBatch: 4, MaxQueue: 64})
	reqs := testRequests(8)
	got := make([]string, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { got[i], errs[i] = run(t, drawing, r) })
	}
	wg.Wait()
	for i, r := range reqs {
		want, err := run(t, host, r)
		if err != nil || errs[i] != nil {
			t.Fatal(err, errs[i])
		}
		if got[i] != want {
			t.Errorf("request %d: drawn by the model %q, on the host %q", i, got[i], want)
		}
	}
	n := dm.Drawn.Load()
	if n == 0 {
		t.Fatal("the model drew no tokens")
	}
	// logprobs: on the host
	res, err := drawing.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: defaultmodel.Name, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		MaxTokens: openai.Int(6), Temperature: openai.Float(0), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if lp := res.Choices[0].Logprobs.Content; len(lp) != int(res.Usage.CompletionTokens) || dm.Drawn.Load() != n {
		t.Errorf("with logprobs: %d entries for %d tokens, %d tokens drawn by the model", len(lp), res.Usage.CompletionTokens, dm.Drawn.Load()-n)
	}
	// a second turn extends the first's cached end
	history := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the capital of France?")}
	first, err := chatText(t, drawing, history, 12, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	history = append(history, first.Choices[0].Message.ToParam(), openai.UserMessage("And of Italy?"))
	w, err := chatText(t, drawing, history, 12, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := chatText(t, host, history, 12, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w.Choices[0].Message.Content != c.Choices[0].Message.Content || w.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Errorf("second turn: drawing server %q (%d cached), host %q", w.Choices[0].Message.Content, w.Usage.PromptTokensDetails.CachedTokens, c.Choices[0].Message.Content)
	}
	waitIdle(t, drawing.Server)
}
