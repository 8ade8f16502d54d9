package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/ringo-ai/ringo/defaultmodel"
)

// checkError asserts an OpenAI-shaped error response.
func checkError(t *testing.T, name string, status int, body []byte, wantStatus int, wantParam string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	raw := map[string]map[string]json.RawMessage{}
	if err := json.Unmarshal(body, &e); err != nil || json.Unmarshal(body, &raw) != nil {
		t.Errorf("%s: body is not an error object: %s", name, body)
		return
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][k]; !ok {
			t.Errorf("%s: error lacks %q: %s", name, k, body)
		}
	}
	if status != wantStatus || e.Error.Message == "" || e.Error.Type == "" {
		t.Errorf("%s: status %d, want %d: %s", name, status, wantStatus, body)
	}
	if wantParam != "" && (e.Error.Param == nil || *e.Error.Param != wantParam) {
		t.Errorf("%s: param %v, want %q: %s", name, e.Error.Param, wantParam, body)
	}
}

func TestRequestErrors(t *testing.T) {
	fm := newFake(t, "ok")
	fm.ctx = 64
	ts := newTestServer(t, Options{Model: fm})
	user := `"messages":[{"role":"user","content":"hi"}]`
	long := strings.Repeat("word ", 200)
	cases := []struct {
		name, path, body string
		status           int
		param            string
	}{
		{"bad json", "/v1/chat/completions", `{"messages":`, 400, ""},
		{"not object", "/v1/chat/completions", `[1,2]`, 400, ""},
		{"empty body", "/v1/chat/completions", ``, 400, ""},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-4",` + user + `}`, 404, "model"},
		{"temperature type", "/v1/chat/completions", `{"temperature":"hot",` + user + `}`, 400, "temperature"},
		{"max_tokens type", "/v1/chat/completions", `{"max_tokens":1.5,` + user + `}`, 400, "max_tokens"},
		{"messages type", "/v1/chat/completions", `{"messages":"hi"}`, 400, "messages"},
		{"empty messages", "/v1/chat/completions", `{"messages":[]}`, 400, "messages"},
		{"no messages", "/v1/chat/completions", `{}`, 400, "messages"},
		{"bad role", "/v1/chat/completions", `{"messages":[{"role":"wizard","content":"x"}]}`, 400, "messages[0].role"},
		{"content type", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, 400, "messages[0].content"},
		{"image part", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, 400, "messages[0].content"},
		{"n=2", "/v1/chat/completions", `{"n":2,` + user + `}`, 400, "n"},
		{"temperature range", "/v1/chat/completions", `{"temperature":3,` + user + `}`, 400, "temperature"},
		{"top_p range", "/v1/chat/completions", `{"top_p":0,` + user + `}`, 400, "top_p"},
		{"max_tokens 0", "/v1/chat/completions", `{"max_tokens":0,` + user + `}`, 400, "max_tokens"},
		{"stop type", "/v1/chat/completions", `{"stop":[1],` + user + `}`, 400, "stop"},
		{"top_logprobs w/o logprobs", "/v1/chat/completions", `{"top_logprobs":2,` + user + `}`, 400, "top_logprobs"},
		{"bad tool", "/v1/chat/completions", `{"tools":[{"type":"function"}],` + user + `}`, 400, "tools[0]"},
		{"bad tool_choice", "/v1/chat/completions", `{"tool_choice":"maybe",` + user + `}`, 400, "tool_choice"},
		{"stream_options without stream", "/v1/chat/completions", `{"stream_options":{"include_usage":true},` + user + `}`, 400, "stream_options"},
		{"too long", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + long + `"}]}`, 400, "messages"},
		{"completion no prompt", "/v1/completions", `{"max_tokens":3}`, 400, "prompt"},
		{"completion too long", "/v1/completions", `{"prompt":"` + long + `"}`, 400, "prompt"},
		{"completion bad token", "/v1/completions", `{"prompt":[999999]}`, 400, "prompt"},
		{"completion echo", "/v1/completions", `{"prompt":"x","echo":true}`, 400, "echo"},
		{"no endpoint", "/v1/embeddings", `{}`, 404, ""},
	}
	for _, c := range cases {
		status, body := ts.post(t, c.path, c.body)
		checkError(t, c.name, status, body, c.status, c.param)
	}
	resp, err := http.Get(ts.url + "/v1/chat/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET chat: %d", resp.StatusCode)
	}
	// the server still works
	status, body := ts.post(t, "/v1/chat/completions", `{`+user+`}`)
	if status != 200 {
		t.Fatalf("after errors: %d %s", status, body)
	}
	waitIdle(t, ts.Server)
}

func TestAPIKey(t *testing.T) {
	fm := newFake(t, "ok")
	ts := newTestServer(t, Options{Model: fm, APIKey: "sekret"})
	if _, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, 3, 0, 0); err != nil {
		t.Fatalf("with key: %v", err)
	}
	status, body := ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	checkError(t, "no key", status, body, 401, "")
	req, _ := http.NewRequest("GET", ts.url+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("wrong key: %d", resp.StatusCode)
	}
	if resp, err := http.Get(ts.url + "/health"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health needs no key: %v", err)
	}
}

func TestQueueFull(t *testing.T) {
	fm := newFake(t, "one two three")
	fm.gate = make(chan struct{})
	ts := newTestServer(t, Options{Model: fm, MaxBatch: 1, MaxQueue: 1})
	var wg sync.WaitGroup
	results := make(chan error, 2)
	start := func() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, 3, 0, 0)
			results <- err
		}()
	}
	start() // runs (blocked in Forward)
	waitFor(t, func() bool { return ts.Stats().Running == 1 })
	start() // waits
	waitFor(t, func() bool { return ts.Stats().Waiting == 1 })
	status, body := ts.post(t, "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`)
	checkError(t, "queue full", status, body, 429, "")
	var apiErr *openai.Error
	_, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}, 3, 0, 0)
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 {
		t.Fatalf("openai client: %v", err)
	}
	close(fm.gate) // release the model
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, ts.Server)
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestClientDisconnectFreesState(t *testing.T) {
	fm := newFake(t, strings.Repeat("la ", 1000))
	fm.delay = 2 * time.Millisecond
	ts := newTestServer(t, Options{Model: fm, CacheBytes: 1 << 20})
	for _, stream := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			params := openai.ChatCompletionNewParams{Model: defaultmodel.Name,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("sing")}}
			if stream {
				st := ts.client.Chat.Completions.NewStreaming(ctx, params)
				for st.Next() {
				}
				done <- st.Err()
				return
			}
			_, err := ts.client.Chat.Completions.New(ctx, params)
			done <- err
		}()
		waitFor(t, func() bool { return ts.met.generatedTokens.Load() > 5 && ts.Stats().Running == 1 })
		cancel()
		if err := <-done; err == nil {
			t.Fatal("cancelled request succeeded")
		}
		waitIdle(t, ts.Server)
		if ts.met.cancelled.Load() == 0 {
			t.Fatal("no cancellation counted")
		}
		if fm.live.Load() != int64(ts.Stats().CacheEntries) {
			t.Fatalf("state leak: %d live, %d cached", fm.live.Load(), ts.Stats().CacheEntries)
		}
		ts.met.generatedTokens.Store(0)
	}
}

func TestPanicIsolation(t *testing.T) {
	fm := newFake(t, "fine answer here")
	opts := Options{Model: fm, CacheBytes: 1 << 20}
	_, tok, _ := loadReal(t)
	poison := tok.Encode("POISON", true)
	opts.testHook = func(prompt []int32) {
		if containsSeq(prompt, poison) {
			panic("poisoned request")
		}
	}
	ts := newTestServer(t, opts)
	var wg sync.WaitGroup
	errs := make([]error, 12)
	texts := make([]string, 12)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := "hello"
			if i%3 == 0 {
				msg = "POISON"
			}
			res, err := chatText(t, ts, []openai.ChatCompletionMessageParamUnion{openai.UserMessage(msg)}, 10, 0, 0)
			errs[i] = err
			if err == nil {
				texts[i] = res.Choices[0].Message.Content
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if i%3 == 0 {
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 500 {
				t.Errorf("poisoned request %d: %v", i, err)
			}
		} else if err != nil || texts[i] != "fine answer here" {
			t.Errorf("request %d: %q %v", i, texts[i], err)
		}
	}
	waitIdle(t, ts.Server)
	if fm.live.Load() != int64(ts.Stats().CacheEntries) {
		t.Fatalf("state leak: %d live, %d cached", fm.live.Load(), ts.Stats().CacheEntries)
	}
}

func containsSeq(s, sub []int32) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		match := true
		for j := range sub {
			if s[i+j] != sub[j] {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}
