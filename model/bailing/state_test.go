package bailing

import (
	"context"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/internal/fixture"
	"github.com/ringo-ai/ringo/model"
)

func greedy(t *testing.T, m *Model, st model.State, first []int32, n int) ([]int32, [][]float32) {
	t.Helper()
	var ids []int32
	var logits [][]float32
	req := &model.Request{State: st, Tokens: first}
	for i := 0; i < n; i++ {
		if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
			t.Fatal(err)
		}
		logits = append(logits, slices.Clone(req.Logits))
		id := fixture.Argmax(req.Logits)
		ids = append(ids, id)
		req.Tokens = []int32{id}
	}
	return ids, logits
}

// TestForkContinuesIdentically forks a state after the prompt and checks
// that the fork and the original generate the same tokens and logits, and
// that advancing one does not disturb the other.
func TestForkContinuesIdentically(t *testing.T) {
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		t.Run(dir, func(t *testing.T) {
			exp := mustExpected(t, "../../testdata/"+dir)
			m := loadFixture(t, dir, Options{})
			st := m.NewState()
			prompt := exp.PromptIDs[:100]
			req := &model.Request{State: st, Tokens: prompt}
			if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
				t.Fatal(err)
			}
			next := fixture.Argmax(req.Logits)
			fork := st.Fork()
			if fork.Len() != st.Len() {
				t.Fatalf("fork length %d, original %d", fork.Len(), st.Len())
			}
			idsA, logA := greedy(t, m, st, []int32{next}, 10)
			idsB, logB := greedy(t, m, fork, []int32{next}, 10)
			if !slices.Equal(idsA, idsB) {
				t.Fatalf("fork generated %v, original %v", idsB, idsA)
			}
			for i := range logA {
				if !slices.Equal(logA[i], logB[i]) {
					t.Fatalf("step %d: logits differ", i)
				}
			}
			fork.Free()
		})
	}
}

// TestPrefillInPieces checks that a prompt fed in several Forward calls (a
// prefill continuing from a non-zero state) equals one call, and that a
// batch of different sequences equals running them one by one.
func TestPrefillInPieces(t *testing.T) {
	exp := mustExpected(t, "../../testdata/tiny-linear")
	m := loadFixture(t, "tiny-linear", Options{})
	V := m.Info().VocabSize
	p := exp.PromptIDs
	whole := &model.Request{State: m.NewState(), Tokens: p}
	if err := m.Forward(context.Background(), []*model.Request{whole}); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{1, 63, 64, 65, 149} {
		st := m.NewState()
		a := &model.Request{State: st, Tokens: p[:cut]}
		b := &model.Request{State: st, Tokens: p[cut:]}
		for _, r := range []*model.Request{a, b} {
			if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
				t.Fatal(err)
			}
		}
		if e := fixture.RowErr(b.Logits, whole.Logits); e > 1e-5 {
			t.Errorf("cut %d: last logits differ by %.3g", cut, e)
		}
	}
	// batch: three sequences of different lengths together
	reqs := []*model.Request{
		{State: m.NewState(), Tokens: p[:10], All: true},
		{State: m.NewState(), Tokens: p[:150], All: true},
		{State: m.NewState(), Tokens: p[40:41], All: true},
	}
	if err := m.Forward(context.Background(), reqs); err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		alone := &model.Request{State: m.NewState(), Tokens: r.Tokens, All: true}
		if err := m.Forward(context.Background(), []*model.Request{alone}); err != nil {
			t.Fatal(err)
		}
		for j := range r.Tokens {
			if e := fixture.RowErr(r.Logits[j*V:(j+1)*V], alone.Logits[j*V:(j+1)*V]); e > 1e-5 {
				t.Fatalf("request %d row %d: batched differs from alone by %.3g", i, j, e)
			}
		}
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	m := loadFixture(t, "tiny-linear", Options{})
	other := loadFixture(t, "tiny-softmax", Options{})
	for name, req := range map[string]*model.Request{
		"token out of range": {State: m.NewState(), Tokens: []int32{999999}},
		"negative token":     {State: m.NewState(), Tokens: []int32{-1}},
		"no tokens":          {State: m.NewState()},
		"foreign state":      {State: other.NewState(), Tokens: []int32{1}},
	} {
		if err := m.Forward(context.Background(), []*model.Request{req}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Forward(ctx, []*model.Request{{State: m.NewState(), Tokens: []int32{1}}}); err == nil {
		t.Error("cancelled context: no error")
	}
}

// TestDecodeAllocations checks that a decode step allocates nothing once
// the workspaces exist (weights BF16, CPU backend).
func TestDecodeAllocations(t *testing.T) {
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		m := loadFixture(t, dir, Options{})
		st := m.NewState()
		req := &model.Request{State: st, Tokens: []int32{1, 2, 3}}
		reqs := []*model.Request{req}
		if err := m.Forward(context.Background(), reqs); err != nil {
			t.Fatal(err)
		}
		st.(*State).reserve(200) // KV growth is amortised; exclude it here
		req.Tokens = []int32{5}
		ctx := context.Background()
		n := testing.AllocsPerRun(50, func() {
			if err := m.Forward(ctx, reqs); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %.1f allocations per decode step", dir, n)
		}
	}
}

// TestF16KVCache checks the half-precision KV cache against the exact
// float32 path on the softmax fixture: same greedy tokens, small error.
func TestF16KVCache(t *testing.T) {
	exp := mustExpected(t, "../../testdata/tiny-softmax")
	ck, err := checkpoint.Open("../../testdata/tiny-softmax")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	b, err := backend.Open("cpu", backend.Options{KVCache: "f16"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(ck.ConfigJSON, ck.Generation, ck, b, Options{})
	if err != nil {
		t.Fatal(err)
	}
	V := m.Info().VocabSize
	st := m.NewState()
	req := &model.Request{State: st, Tokens: exp.PromptIDs, All: true}
	if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
		t.Fatal(err)
	}
	worst := 0.0
	for i := range exp.PromptIDs {
		worst = max(worst, fixture.RowErr(req.Logits[i*V:(i+1)*V], exp.PromptLogits[i*V:(i+1)*V]))
	}
	ids, _ := greedy(t, m, st.Fork(), []int32{fixture.Argmax(req.Logits[len(req.Logits)-V:])}, len(exp.GeneratedIDs)-1)
	ids = append([]int32{fixture.Argmax(req.Logits[len(req.Logits)-V:])}, ids...)
	t.Logf("f16 KV cache: worst prompt row error %.2g", worst)
	if worst > 5e-3 {
		t.Fatalf("f16 KV cache: prompt logits error %.3g", worst)
	}
	if !slices.Equal(ids, exp.GeneratedIDs) {
		t.Fatalf("f16 KV cache generated %v, want %v", ids, exp.GeneratedIDs)
	}
	if _, err := backend.Open("cpu", backend.Options{KVCache: "q3"}); err == nil {
		t.Fatal("unknown KV cache type accepted")
	}
}
