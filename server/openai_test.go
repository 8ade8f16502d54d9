package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"
	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/defaultmodel"
)

func TestModelsAndHealth(t *testing.T) {
	ts := newTestServer(t, Options{})
	page, err := ts.client.Models.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != defaultmodel.Name {
		t.Fatalf("models = %+v", page.Data)
	}
	m, err := ts.client.Models.Get(context.Background(), defaultmodel.Name)
	if err != nil || m.ID != defaultmodel.Name {
		t.Fatalf("get model: %v %+v", err, m)
	}
	resp, err := http.Get(ts.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health: %d", resp.StatusCode)
	}
}

func TestChatCompletionRealModel(t *testing.T) {
	ts := newTestServer(t, Options{CacheBytes: 64 << 20})
	msgs := []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Hello there")}
	res, err := chatText(t, ts, msgs, 12, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "chat.completion" || len(res.Choices) != 1 || res.Choices[0].Message.Role != "assistant" {
		t.Fatalf("bad response %+v", res)
	}
	if res.Usage.PromptTokens == 0 || res.Usage.CompletionTokens == 0 || res.Usage.TotalTokens != res.Usage.PromptTokens+res.Usage.CompletionTokens {
		t.Fatalf("usage %+v", res.Usage)
	}
	fr := res.Choices[0].FinishReason
	if fr != "length" && fr != "stop" {
		t.Fatalf("finish_reason %q", fr)
	}
	// streaming gives the same text (greedy), ending with a usage chunk
	stream := ts.client.Chat.Completions.NewStreaming(context.Background(), openai.ChatCompletionNewParams{
		Model: defaultmodel.Name, Messages: msgs, MaxTokens: openai.Int(12), Temperature: openai.Float(0),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var acc openai.ChatCompletionAccumulator
	var text strings.Builder
	var finish string
	var gotUsage bool
	n := 0
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("chunk object %q", c.Object)
		}
		if n == 0 && (len(c.Choices) != 1 || c.Choices[0].Delta.Role != "assistant") {
			t.Fatalf("first chunk %s", c.RawJSON())
		}
		n++
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
			if c.Choices[0].FinishReason != "" {
				finish = c.Choices[0].FinishReason
			}
		} else {
			gotUsage = true
			if c.Usage.CompletionTokens != res.Usage.CompletionTokens || c.Usage.PromptTokens != res.Usage.PromptTokens {
				t.Fatalf("stream usage %+v, want %+v", c.Usage, res.Usage)
			}
			// the identical prompt was just prefilled: it comes from the cache
			if c.Usage.PromptTokensDetails.CachedTokens != res.Usage.PromptTokens {
				t.Fatalf("cached tokens %d, want %d", c.Usage.PromptTokensDetails.CachedTokens, res.Usage.PromptTokens)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != res.Choices[0].Message.Content || finish != fr || !gotUsage {
		t.Fatalf("stream %q (%s, usage %v), non-stream %q (%s)", text.String(), finish, gotUsage, res.Choices[0].Message.Content, fr)
	}
	if acc.Choices[0].Message.Content != text.String() {
		t.Fatalf("accumulator %q", acc.Choices[0].Message.Content)
	}
	waitIdle(t, ts.Server)
}

func TestChatStreamRawFormat(t *testing.T) {
	ts := newTestServer(t, Options{})
	body := `{"model":"` + defaultmodel.Name + `","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`
	resp, err := http.Post(ts.url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	evs := sseEvents(t, resp.Body)
	if len(evs) < 4 || evs[len(evs)-1] != "[DONE]" {
		t.Fatalf("events %q", evs)
	}
	var first, last, usage map[string]any
	json.Unmarshal([]byte(evs[0]), &first)
	json.Unmarshal([]byte(evs[len(evs)-3]), &last)
	json.Unmarshal([]byte(evs[len(evs)-2]), &usage)
	delta := first["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	if delta["role"] != "assistant" || first["object"] != "chat.completion.chunk" {
		t.Fatalf("first chunk %s", evs[0])
	}
	if _, ok := first["usage"]; !ok || first["usage"] != nil {
		t.Fatalf("first chunk should carry usage: null: %s", evs[0])
	}
	if fr := last["choices"].([]any)[0].(map[string]any)["finish_reason"]; fr != "length" && fr != "stop" {
		t.Fatalf("final chunk %s", evs[len(evs)-3])
	}
	if len(usage["choices"].([]any)) != 0 || usage["usage"].(map[string]any)["completion_tokens"] == nil {
		t.Fatalf("usage chunk %s", evs[len(evs)-2])
	}
}

func TestCompletionsRealModel(t *testing.T) {
	ts := newTestServer(t, Options{})
	params := openai.CompletionNewParams{
		Model:       openai.CompletionNewParamsModel(defaultmodel.Name),
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("The quick brown fox")},
		MaxTokens:   openai.Int(10),
		Temperature: openai.Float(0),
		Logprobs:    openai.Int(2),
	}
	res, err := ts.client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Object != "text_completion" || len(res.Choices) != 1 || res.Choices[0].Text == "" {
		t.Fatalf("bad response %s", res.RawJSON())
	}
	lp := res.Choices[0].Logprobs
	if len(lp.Tokens) != 10 || len(lp.TokenLogprobs) != 10 || len(lp.TopLogprobs) != 10 || strings.Join(lp.Tokens, "") != res.Choices[0].Text {
		t.Fatalf("logprobs %s", res.RawJSON())
	}
	for i, top := range lp.TopLogprobs {
		best := float64(-1e30)
		for _, v := range top {
			best = max(best, v)
		}
		if lp.TokenLogprobs[i] > 0 || best < lp.TokenLogprobs[i]-1e-4 { // greedy picks the top token
			t.Fatalf("token %d logprob %v, top %v", i, lp.TokenLogprobs[i], top)
		}
	}
	params.Logprobs = openai.Int(0)
	stream := ts.client.Completions.NewStreaming(context.Background(), params)
	var text strings.Builder
	var finish string
	for stream.Next() {
		c := stream.Current()
		if len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Text)
			if c.Choices[0].FinishReason != "" {
				finish = string(c.Choices[0].FinishReason)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if text.String() != res.Choices[0].Text || finish != string(res.Choices[0].FinishReason) {
		t.Fatalf("stream %q %s, non-stream %q %s", text.String(), finish, res.Choices[0].Text, res.Choices[0].FinishReason)
	}
	// token-id prompt
	_, tok, _ := loadReal(t)
	ids := tok.Encode("The quick brown fox", true)
	ids64 := make([]int64, len(ids))
	for i, id := range ids {
		ids64[i] = int64(id)
	}
	params.Prompt = openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: ids64}
	res2, err := ts.client.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Choices[0].Text != res.Choices[0].Text {
		t.Fatalf("token prompt gave %q, text prompt %q", res2.Choices[0].Text, res.Choices[0].Text)
	}
}

func TestChatLogprobs(t *testing.T) {
	ts := newTestServer(t, Options{})
	res, err := ts.client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: defaultmodel.Name, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hi")},
		MaxTokens: openai.Int(6), Temperature: openai.Float(0), Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3),
	})
	if err != nil {
		t.Fatal(err)
	}
	lp := res.Choices[0].Logprobs.Content
	if len(lp) == 0 || len(lp) > 6 {
		t.Fatalf("logprobs %s", res.RawJSON())
	}
	for _, e := range lp {
		if len(e.TopLogprobs) != 3 || e.TopLogprobs[0].Logprob < e.Logprob-1e-4 || e.TopLogprobs[0].Logprob < e.TopLogprobs[1].Logprob {
			t.Fatalf("entry %+v", e)
		}
	}
}

// reasoningOf returns the reasoning_content of a raw message JSON.
func reasoningOf(t testing.TB, raw string) string {
	var m struct {
		ReasoningContent string `json:"reasoning_content"`
	}
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	return m.ReasoningContent
}

var weatherTool = openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
	Name:        "get_weather",
	Description: openai.String("Current weather of a city"),
	Parameters: shared.FunctionParameters{
		"type":       "object",
		"properties": map[string]any{"city": map[string]any{"type": "string"}},
		"required":   []string{"city"},
	},
})

func TestToolCallsAndReasoning(t *testing.T) {
	script := "<think>\nThe user wants the weather.\n</think>\n\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>"
	fm := newFake(t, script)
	ts := newTestServer(t, Options{Model: fm, CacheBytes: 1 << 20})
	params := openai.ChatCompletionNewParams{
		Model:    defaultmodel.Name,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris and Rome?")},
		Tools:    []openai.ChatCompletionToolUnionParam{weatherTool},
	}
	res, err := ts.client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	ch := res.Choices[0]
	if ch.FinishReason != "tool_calls" || len(ch.Message.ToolCalls) != 2 {
		t.Fatalf("response %s", res.RawJSON())
	}
	for i, city := range []string{"Paris", "Rome"} {
		tc := ch.Message.ToolCalls[i]
		if tc.Function.Name != "get_weather" || tc.Function.Arguments != `{"city":"`+city+`"}` || !strings.HasPrefix(tc.ID, "call_") || tc.Type != "function" {
			t.Fatalf("tool call %d: %+v", i, tc)
		}
	}
	if ch.Message.Content != "Let me check." {
		t.Fatalf("content %q", ch.Message.Content)
	}
	if r := reasoningOf(t, ch.Message.RawJSON()); r != "The user wants the weather." {
		t.Fatalf("reasoning %q", r)
	}

	// streaming: the accumulator sees the same calls
	stream := ts.client.Chat.Completions.NewStreaming(context.Background(), params)
	var acc openai.ChatCompletionAccumulator
	var reasoning strings.Builder
	for stream.Next() {
		c := stream.Current()
		acc.AddChunk(c)
		if len(c.Choices) > 0 {
			if f, ok := c.Choices[0].Delta.JSON.ExtraFields["reasoning_content"]; ok {
				var s string
				json.Unmarshal([]byte(f.Raw()), &s)
				reasoning.WriteString(s)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	am := acc.Choices[0]
	if am.FinishReason != "tool_calls" || len(am.Message.ToolCalls) != 2 || am.Message.ToolCalls[1].Function.Arguments != `{"city":"Rome"}` ||
		am.Message.Content != "Let me check." || reasoning.String() != "The user wants the weather." {
		t.Fatalf("stream: %+v reasoning %q", am, reasoning.String())
	}

	// the tool call round trip renders and the follow-up turn reuses state
	msgs := append(params.Messages, ch.Message.ToParam(),
		openai.ToolMessage(`{"temp": 21}`, ch.Message.ToolCalls[0].ID),
		openai.ToolMessage(`{"temp": 25}`, ch.Message.ToolCalls[1].ID))
	params.Messages = msgs
	res2, err := ts.client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Usage.PromptTokensDetails.CachedTokens == 0 {
		t.Fatalf("follow-up turn reused no state: %+v", res2.Usage)
	}

	// tool_choice none: tool calls stay text
	params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")}
	res3, err := ts.client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if len(res3.Choices[0].Message.ToolCalls) != 0 || !strings.Contains(res3.Choices[0].Message.Content, "<tool_call>") || res3.Choices[0].FinishReason != "stop" {
		t.Fatalf("tool_choice none: %s", res3.RawJSON())
	}
	waitIdle(t, ts.Server)
	if got := fm.live.Load(); got != int64(ts.Stats().CacheEntries) {
		t.Fatalf("fake model holds %d states, cache %d", got, ts.Stats().CacheEntries)
	}
}

func TestStopSequences(t *testing.T) {
	fm := newFake(t, "Hello world, this is a stop test. More text follows here.")
	ts := newTestServer(t, Options{Model: fm})
	_, tok, _ := loadReal(t)
	t.Logf("script tokens: %q", func() []string {
		var s []string
		for _, id := range fm.script {
			s = append(s, tok.Decode([]int32{id}, false))
		}
		return s
	}())
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("go")}
	cases := []struct {
		stop []string
		want string
	}{
		{nil, "Hello world, this is a stop test. More text follows here."},
		{[]string{"stop test"}, "Hello world, this is a "},
		{[]string{"ld, th"}, "Hello wor"}, // spans token boundaries
		{[]string{"xyz", "s is"}, "Hello world, thi"},
		{[]string{"More", "world"}, "Hello "}, // the earliest match wins
		{[]string{"H"}, ""},
	}
	for _, c := range cases {
		for _, stream := range []bool{false, true} {
			params := openai.ChatCompletionNewParams{Model: defaultmodel.Name, Messages: msgs,
				Stop: openai.ChatCompletionNewParamsStopUnion{OfStringArray: c.stop}}
			var got, finish string
			if stream {
				st := ts.client.Chat.Completions.NewStreaming(context.Background(), params)
				for st.Next() {
					if ch := st.Current().Choices; len(ch) > 0 {
						got += ch[0].Delta.Content
						if ch[0].FinishReason != "" {
							finish = ch[0].FinishReason
						}
					}
				}
				if err := st.Err(); err != nil {
					t.Fatal(err)
				}
			} else {
				res, err := ts.client.Chat.Completions.New(context.Background(), params)
				if err != nil {
					t.Fatal(err)
				}
				got, finish = res.Choices[0].Message.Content, res.Choices[0].FinishReason
			}
			if got != c.want || finish != "stop" {
				t.Errorf("stop %q stream=%v: got %q (%s), want %q", c.stop, stream, got, finish, c.want)
			}
		}
	}
	waitIdle(t, ts.Server)
	if fm.live.Load() != int64(ts.Stats().CacheEntries) {
		t.Fatalf("state leak: %d live, %d cached", fm.live.Load(), ts.Stats().CacheEntries)
	}
}

func TestStopMatcherSplits(t *testing.T) {
	text := "abcabd then xyz and more"
	for _, stops := range [][]string{{"abd"}, {"xyz", "then"}, {"d t"}, {"more"}, {"zz"}} {
		want := text
		for _, s := range stops {
			if i := strings.Index(text, s); i >= 0 && i < len(want) {
				want = text[:i]
			}
		}
		for step := 1; step <= 5; step++ {
			m := stopMatcher{stops: stops}
			var got strings.Builder
			hit := false
			for i := 0; i < len(text) && !hit; i += step {
				out, h := m.feed(text[i:min(i+step, len(text))])
				got.WriteString(out)
				hit = h
			}
			if !hit {
				got.WriteString(m.flush())
			}
			if got.String() != want {
				t.Errorf("stops %q step %d: %q, want %q", stops, step, got.String(), want)
			}
		}
	}
}

func TestChatTemplateKwargsOpenThinking(t *testing.T) {
	// A template that opens a <think> block when enable_thinking is set, as
	// thinking-model templates do; the output then starts as reasoning.
	src := `{%- for m in messages %}<role>{{ m.role | upper }}</role>{{ m.content }}<|role_end|>{%- endfor %}` +
		`{%- if add_generation_prompt %}<role>ASSISTANT</role>{% if enable_thinking %}<think>
{% endif %}{% endif %}`
	tmpl, err := chat.NewTemplate(src, "", "<|role_end|>")
	if err != nil {
		t.Fatal(err)
	}
	fm := newFake(t, "Plan: be brief.\n</think>\n\nHi!")
	// the fake counts generated tokens from the last </role>: skip the two
	// prompt tokens "<think>" "\n" that follow it
	_, tok, _ := loadReal(t)
	fm.script = append(tok.Encode("<think>\n", true), fm.script...)
	ts := newTestServer(t, Options{Model: fm, Template: tmpl})
	params := openai.ChatCompletionNewParams{Model: defaultmodel.Name, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hey")}}
	res, err := ts.client.Chat.Completions.New(context.Background(), params,
		option.WithJSONSet("chat_template_kwargs", map[string]any{"enable_thinking": true}))
	if err != nil {
		t.Fatal(err)
	}
	msg := res.Choices[0].Message
	if msg.Content != "Hi!" || reasoningOf(t, msg.RawJSON()) != "Plan: be brief." {
		t.Fatalf("thinking on: %s", msg.RawJSON())
	}
	// without the kwarg the prompt lacks "<think>\n" (2 tokens) and the model
	// (scripted from the end of the prompt) writes the tag itself
	res2, err := ts.client.Chat.Completions.New(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	if res.Usage.PromptTokens != res2.Usage.PromptTokens+2 {
		t.Fatalf("prompt tokens with thinking %d, without %d", res.Usage.PromptTokens, res2.Usage.PromptTokens)
	}
	if msg := res2.Choices[0].Message; msg.Content != "Hi!" || reasoningOf(t, msg.RawJSON()) != "Plan: be brief." {
		t.Fatalf("thinking off: %s", msg.RawJSON())
	}
}
