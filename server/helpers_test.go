package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/tokenizer"
)

// The embedded default model, loaded once for all tests.
var (
	loadOnce  sync.Once
	realModel *engine.Loaded
	realTok   *tokenizer.Tokenizer
	realTmpl  *chat.Template
	loadErr   error
)

func loadReal(t testing.TB) (*engine.Loaded, *tokenizer.Tokenizer, *chat.Template) {
	t.Helper()
	loadOnce.Do(func() {
		dir, err := defaultmodel.Dir()
		if err != nil {
			loadErr = err
			return
		}
		if realModel, loadErr = engine.Load(dir, engine.Options{}); loadErr != nil {
			return
		}
		if realTok, loadErr = tokenizer.LoadDir(dir); loadErr != nil {
			return
		}
		realTmpl, loadErr = chat.LoadTemplate(dir)
	})
	if loadErr != nil {
		t.Fatalf("load default model: %v", loadErr)
	}
	return realModel, realTok, realTmpl
}

// quietLogger discards server logs unless RINGO_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("RINGO_TEST_LOG") != "" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testServer is a Server behind httptest with an openai-go client.
type testServer struct {
	*Server
	http   *httptest.Server
	client openai.Client
	url    string
}

// newTestServer serves o (the real default model unless o.Model is set).
func newTestServer(t testing.TB, o Options) *testServer {
	t.Helper()
	if o.Model == nil {
		m, tok, tmpl := loadReal(t)
		o.Model, o.Tokenizer, o.Template = m, tok, tmpl
	}
	if o.Tokenizer == nil {
		_, tok, tmpl := loadReal(t)
		o.Tokenizer = tok
		if o.Template == nil {
			o.Template = tmpl
		}
	}
	if o.ModelName == "" {
		o.ModelName = defaultmodel.Name
	}
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	ts := &testServer{Server: s, http: hs, url: hs.URL}
	opts := []option.RequestOption{option.WithBaseURL(hs.URL + "/v1/"), option.WithMaxRetries(0)}
	if o.APIKey != "" {
		opts = append(opts, option.WithAPIKey(o.APIKey))
	} else {
		opts = append(opts, option.WithAPIKey("unused"))
	}
	ts.client = openai.NewClient(opts...)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		s.Close()
	})
	return ts
}

// post sends a JSON body and returns the status and body.
func (ts *testServer) post(t testing.TB, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	resp, err := http.Post(ts.url+path, "application/json", rd)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// sseEvents reads a server-sent event stream's data payloads.
func sseEvents(t testing.TB, r io.Reader) []string {
	t.Helper()
	var evs []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			evs = append(evs, d)
		} else if line != "" {
			t.Errorf("unexpected SSE line %q", line)
		}
	}
	return evs
}

// waitIdle waits until no sequence runs or waits and every model state
// left is held by the cache.
func waitIdle(t testing.TB, s *Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Stats()
		if st.Running == 0 && st.Waiting == 0 && st.States == st.CacheEntries {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not idle: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGoroutines waits for the goroutine count to drop to at most n.
func waitGoroutines(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= n {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d, want at most %d\n%s", g, n, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fakeModel is a model.Model whose logits force a scripted token sequence:
// after the last occurrence of marker in a state, it emits script[k] for
// the k-th generated token and then eos. Forward optionally waits on gate
// (one receive per call) or sleeps for delay.
type fakeModel struct {
	vocab  int
	ctx    int
	eos    int32
	marker int32
	script []int32
	delay  time.Duration
	gate   chan struct{}

	mu      sync.Mutex
	batches [][]int // per Forward call: the token count of each request
	live    atomic.Int64
}

type fakeState struct {
	m     *fakeModel
	toks  []int32
	freed bool
}

func (s *fakeState) Len() int { return len(s.toks) }
func (s *fakeState) Fork() model.State {
	s.m.live.Add(1)
	return &fakeState{m: s.m, toks: append([]int32(nil), s.toks...)}
}
func (s *fakeState) Free() {
	if s.freed {
		panic("fakeState freed twice")
	}
	s.freed = true
	s.m.live.Add(-1)
}
func (s *fakeState) Bytes() int64 { return int64(4*len(s.toks) + 64) }

func (m *fakeModel) Info() model.Info {
	return model.Info{Arch: "fake", VocabSize: m.vocab, MaxContext: m.ctx, EOS: []int32{m.eos}}
}
func (m *fakeModel) NewState() model.State { m.live.Add(1); return &fakeState{m: m} }
func (m *fakeModel) Close() error          { return nil }

func (m *fakeModel) Forward(ctx context.Context, reqs []*model.Request) error {
	if m.gate != nil {
		select {
		case <-m.gate:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("fake model: gate timeout")
		}
	}
	if m.delay > 0 {
		time.Sleep(m.delay)
	}
	sizes := make([]int, len(reqs))
	for i, r := range reqs {
		st := r.State.(*fakeState)
		if st.freed {
			panic("fake model: forward on a freed state")
		}
		sizes[i] = len(r.Tokens)
		st.toks = append(st.toks, r.Tokens...)
		k := len(st.toks)
		for j := len(st.toks) - 1; j >= 0; j-- {
			if st.toks[j] == m.marker {
				k = len(st.toks) - 1 - j
				break
			}
		}
		next := m.eos
		if k < len(m.script) {
			next = m.script[k]
		}
		if cap(r.Logits) < m.vocab {
			r.Logits = make([]float32, m.vocab)
		}
		r.Logits = r.Logits[:m.vocab]
		clear(r.Logits)
		// 40 above every other logit: at temperature 1 a stray token has
		// probability vocab·e^-40 ≈ 7e-13 per step (20 gave a few
		// percent per scripted reply, a flaky test)
		r.Logits[next] = 40
	}
	m.mu.Lock()
	m.batches = append(m.batches, sizes)
	m.mu.Unlock()
	return nil
}

// newFake returns a fake model that answers every chat turn with text,
// tokenized by the real tokenizer.
func newFake(t testing.TB, text string) *fakeModel {
	t.Helper()
	_, tok, _ := loadReal(t)
	marker, ok := tok.TokenID("</role>")
	if !ok {
		t.Fatal("no </role> token")
	}
	eos, _ := tok.TokenID("<|role_end|>")
	return &fakeModel{vocab: tok.VocabSize(), ctx: 4096, eos: eos, marker: marker, script: tok.Encode(text, true)}
}

// chatText sends a greedy chat request through openai-go and returns the
// message content and usage.
func chatText(t testing.TB, ts *testServer, msgs []openai.ChatCompletionMessageParamUnion, maxTokens int64, seed int64, temp float64) (*openai.ChatCompletion, error) {
	t.Helper()
	return ts.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model:       defaultmodel.Name,
		Messages:    msgs,
		MaxTokens:   openai.Int(maxTokens),
		Temperature: openai.Float(temp),
		Seed:        openai.Int(seed),
	})
}
