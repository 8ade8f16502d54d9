package bailing

import (
	"context"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/model"
)

// TestLogitChunks runs a pass whose requests want every position's logits
// (one) and the last position's (another) with the output projection in
// chunks of 3 rows and in one: the same logits, each row in its place.
func TestLogitChunks(t *testing.T) {
	m := loadFixture(t, "tiny-linear", Options{})
	prompt := []int32{5, 17, 2, 99, 41, 7, 300, 12, 8, 64, 3}
	run := func() (all, last []float32) {
		a := &model.Request{State: m.NewState(), Tokens: prompt, All: true}
		l := &model.Request{State: m.NewState(), Tokens: prompt[:7]}
		defer a.State.Free()
		defer l.State.Free()
		if err := m.Forward(context.Background(), []*model.Request{a, l}); err != nil {
			t.Fatal(err)
		}
		return slices.Clone(a.Logits), slices.Clone(l.Logits)
	}
	wantAll, wantLast := run()
	defer func(n int) { maxLogitRows = n }(maxLogitRows)
	maxLogitRows = 3
	gotAll, gotLast := run()
	if !slices.Equal(gotAll, wantAll) || !slices.Equal(gotLast, wantLast) {
		t.Fatalf("logits differ with the output projection in chunks of 3 rows")
	}
	V := m.Config.VocabSize
	if len(gotAll) != len(prompt)*V || len(gotLast) != V {
		t.Fatalf("%d and %d logits, want %d and %d", len(gotAll), len(gotLast), len(prompt)*V, V)
	}
}
