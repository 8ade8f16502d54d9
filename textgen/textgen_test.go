package textgen

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
	"github.com/ringo-ai/ringo/tokenizer"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "textgen-test-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func defaultDir(t *testing.T) string {
	t.Helper()
	dir, err := defaultmodel.Dir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeModel answers every prompt with a fixed script of tokens followed by
// an end-of-sequence token. Its states record every consumed token.
type fakeModel struct {
	vocab   int
	eos     int32
	marker  int32   // the script restarts after this token (</role>)
	script  []int32 // the answer
	forward int     // tokens fed in total
}

type fakeState struct{ toks []int32 }

func (s *fakeState) Len() int              { return len(s.toks) }
func (s *fakeState) Fork() model.State     { return &fakeState{toks: slices.Clone(s.toks)} }
func (s *fakeState) Free()                 {}
func (s *fakeState) Bytes() int64          { return int64(4 * len(s.toks)) }
func (m *fakeModel) NewState() model.State { return &fakeState{} }
func (m *fakeModel) Close() error          { return nil }
func (m *fakeModel) Info() model.Info {
	return model.Info{VocabSize: m.vocab, EOS: []int32{m.eos}, MaxContext: 1 << 20}
}

func (m *fakeModel) Forward(ctx context.Context, reqs []*model.Request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, r := range reqs {
		st := r.State.(*fakeState)
		st.toks = append(st.toks, r.Tokens...)
		m.forward += len(r.Tokens)
		k := 0
		for i := len(st.toks) - 1; i >= 0 && st.toks[i] != m.marker; i-- {
			k++
		}
		next := m.eos
		if k < len(m.script) {
			next = m.script[k]
		}
		r.Logits = make([]float32, m.vocab)
		r.Logits[next] = 1
	}
	return nil
}

func fakeRunner(t *testing.T, answer string) (*Runner, *fakeModel) {
	t.Helper()
	dir := defaultDir(t)
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := chat.LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	eos, _ := tok.TokenID("<|role_end|>")
	marker, _ := tok.TokenID("</role>")
	m := &fakeModel{vocab: tok.VocabSize(), eos: eos, marker: marker, script: tok.Encode(answer, true)}
	return &Runner{Model: m, Tokenizer: tok, Template: tmpl}, m
}

// checkState verifies that the session's state consumed a prefix of the
// rendering of its conversation plus the given next user message.
func checkState(t *testing.T, s *Session) {
	t.Helper()
	got := s.st.(*fakeState).toks
	if !slices.Equal(got, s.toks) {
		t.Fatalf("state consumed %d tokens, session believes %d", len(got), len(s.toks))
	}
}

func TestSessionReusesWholeState(t *testing.T) {
	r, m := fakeRunner(t, "Hello there, friend.")
	s := r.NewSession()
	defer s.Close()
	res, err := s.Send(context.Background(), "Hi", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Content != "Hello there, friend." || res.Finish != engine.FinishStop {
		t.Fatalf("turn 1: content %q finish %q", res.Content, res.Finish)
	}
	checkState(t, s)
	held := len(s.toks)
	m.forward = 0
	res, err = s.Send(context.Background(), "How are you?", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkState(t, s)
	if res.Stats.CachedTokens != held {
		t.Fatalf("turn 2 reused %d tokens, want the whole state (%d)", res.Stats.CachedTokens, held)
	}
	// Everything fed must be exactly the new suffix plus generated tokens.
	if want := res.Stats.FedTokens() + len(res.Tokens); m.forward != want {
		t.Fatalf("fed %d tokens, want %d", m.forward, want)
	}
	prompt, _ := r.Template.Render(s.Conversation()[:len(s.Messages)-1], nil, true, nil)
	if ids := r.Encode(prompt); !slices.Equal(s.toks[:len(ids)], ids) {
		t.Fatal("state does not begin with the rendered conversation")
	}
}

func TestSessionFallsBackToCheckpoint(t *testing.T) {
	// The template drops the reasoning of earlier turns, so the second
	// rendering does not contain the generated tokens.
	r, _ := fakeRunner(t, "<think>\nLet me see.\n</think>\n\nYes.")
	s := r.NewSession()
	defer s.Close()
	res, err := s.Send(context.Background(), "Is it?", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reasoning != "Let me see." || res.Content != "Yes." {
		t.Fatalf("turn 1: reasoning %q content %q", res.Reasoning, res.Content)
	}
	p1 := res.Stats.PromptTokens
	res, err = s.Send(context.Background(), "Sure?", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkState(t, s)
	if res.Stats.CachedTokens != p1 {
		t.Fatalf("turn 2 reused %d tokens, want the first prompt (%d)", res.Stats.CachedTokens, p1)
	}
	// A different system prompt changes the start: nothing is reused.
	s.System = "Be brief."
	res, err = s.Send(context.Background(), "Again", Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkState(t, s)
	if res.Stats.CachedTokens != 0 {
		t.Fatalf("turn 3 reused %d tokens after the system prompt changed", res.Stats.CachedTokens)
	}
	s.Reset()
	if len(s.Messages) != 0 || s.st != nil || s.ckpt != nil {
		t.Fatal("Reset kept history or state")
	}
}

func TestSessionCancel(t *testing.T) {
	r, _ := fakeRunner(t, "one two three four five six seven eight")
	s := r.NewSession()
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := s.Send(ctx, "Count", Options{OnEvent: func(chat.Event) {
		if n++; n == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) || res.Finish != "" {
		t.Fatalf("err %v finish %q, want a cancellation", err, res.Finish)
	}
	checkState(t, s)
	if len(s.Messages) != 2 || s.Messages[1].Content == "" {
		t.Fatalf("history after cancel: %+v", s.Messages)
	}
	res, err = s.Send(context.Background(), "Again", Options{})
	if err != nil || res.Content == "" {
		t.Fatalf("after cancel: %q, %v", res.Content, err)
	}
	checkState(t, s)
}

// TestSessionMatchesColdRun checks on the real default model that a second
// turn fed through the kept state gives the same greedy tokens as a fresh
// state fed the whole rendering.
func TestSessionMatchesColdRun(t *testing.T) {
	r, err := Load(defaultDir(t), engine.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cases := []struct {
		max int
		p   sample.Params
	}{
		{6, sample.Params{}},
		{24, sample.Params{}},
		// The repetition penalty must also see the reused tokens.
		{24, sample.Params{Temperature: 0.8, TopK: 40, RepetitionPenalty: 1.3, Seed: 7}},
	}
	for _, c := range cases {
		maxTok := c.max
		s := r.NewSession()
		s.System = "You are terse."
		o := Options{MaxTokens: maxTok, Sampling: c.p}
		if _, err := s.Send(context.Background(), "Hello", o); err != nil {
			t.Fatal(err)
		}
		history := slices.Clone(s.Messages)
		res, err := s.Send(context.Background(), "Tell me more", o)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v: %s", c, res.Stats)
		if res.Stats.CachedTokens == 0 || res.Stats.FedTokens() >= res.Stats.PromptTokens {
			t.Fatalf("turn 2 fed %d of %d prompt tokens", res.Stats.FedTokens(), res.Stats.PromptTokens)
		}
		cold := &Session{r: r, System: s.System, Messages: append(history, chat.Message{Role: "user", Content: "Tell me more"})}
		prompt, err := cold.Render()
		if err != nil {
			t.Fatal(err)
		}
		ids := r.Encode(prompt)
		if len(ids) != res.Stats.PromptTokens {
			t.Fatalf("cold prompt has %d tokens, session %d", len(ids), res.Stats.PromptTokens)
		}
		st := r.Model.NewState()
		want, _, err := engine.Generate(context.Background(), r.Model, st, ids, engine.GenerateOptions{MaxTokens: maxTok, Sampler: sample.New(c.p)})
		st.Free()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Tokens, want) {
			t.Fatalf("%+v: reused state gave %v, cold run %v", c, res.Tokens, want)
		}
		s.Close()
	}
}

func TestStats(t *testing.T) {
	s := Stats{PromptTokens: 10, CachedTokens: 4, GeneratedTokens: 5, Prefill: 1e9, Decode: 2e9}
	if s.FedTokens() != 6 || s.PrefillRate() != 6 || s.DecodeRate() != 2 {
		t.Fatalf("%+v: fed %d prefill %v decode %v", s, s.FedTokens(), s.PrefillRate(), s.DecodeRate())
	}
	if got, want := s.String(), "prompt 10 tokens (4 cached), prefill 6.0 tok/s; 5 generated, decode 2.0 tok/s"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
}
