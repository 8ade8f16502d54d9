package defaultmodel

import (
	"context"
	"testing"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/tokenizer"
)

func TestDefaultModelRuns(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	m, err := engine.Load(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tok, err := tokenizer.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() > m.Info().VocabSize {
		t.Fatalf("tokenizer has %d ids, model %d", tok.VocabSize(), m.Info().VocabSize)
	}
	tmpl, err := chat.LoadTemplate(dir)
	if err != nil {
		t.Fatal(err)
	}
	text, err := tmpl.Render([]chat.Message{{Role: "user", Content: "Hello"}}, nil, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := m.NewState()
	out, _, err := engine.Generate(context.Background(), m, st, tok.Encode(text, true), engine.GenerateOptions{MaxTokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 || st.Len() == 0 {
		t.Fatalf("generated %d tokens, state length %d", len(out), st.Len())
	}
	if dir2, err := Dir(); err != nil || dir2 != dir {
		t.Fatalf("second Dir() = %q, %v; want %q", dir2, err, dir)
	}
}
