package bailing_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/synth"
)

// TestConfigVariants builds random checkpoints of the config shapes real
// checkpoints may take (tied embeddings, rotary over the full head, a layer
// count that is not a multiple of the group size, several shared experts, no
// grouped routing, softmax scoring) and checks that each loads, has the
// expected layout, and gives the same logits batched, chunked and one token
// at a time.
func TestConfigVariants(t *testing.T) {
	base, err := os.ReadFile("../../testdata/tiny-linear/config.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(map[string]any)
		softmax []int // expected softmax layers
	}{
		{"tied embeddings", func(c map[string]any) { c["tie_word_embeddings"] = true }, []int{2, 5}},
		{"full rotary", func(c map[string]any) { c["partial_rotary_factor"] = 1.0 }, []int{2, 5}},
		{"7 layers in groups of 3", func(c map[string]any) { c["num_hidden_layers"] = 7 }, []int{2, 5, 6}},
		{"two shared experts", func(c map[string]any) { c["num_shared_experts"] = 2 }, []int{2, 5}},
		{"no grouped routing", func(c map[string]any) { delete(c, "n_group"); delete(c, "topk_group") }, []int{2, 5}},
		{"one group", func(c map[string]any) { c["n_group"] = 1; c["topk_group"] = 1 }, []int{2, 5}},
		{"softmax scores, no normalisation", func(c map[string]any) { c["score_function"] = "softmax"; c["norm_topk_prob"] = false }, []int{2, 5}},
		{"no dense layer", func(c map[string]any) { c["first_k_dense_replace"] = 0 }, []int{2, 5}},
		{"Ling 2.0 (all softmax)", func(c map[string]any) {
			c["architectures"] = []string{bailing.ArchSoftmax}
			c["model_type"] = "bailing_moe"
		}, []int{0, 1, 2, 3, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c map[string]any
			json.Unmarshal(base, &c)
			tc.edit(c)
			cfg, _ := json.Marshal(c)
			dir := t.TempDir()
			if err := synth.Write(context.Background(), cfg, dir, synth.Options{Seed: 5}); err != nil {
				t.Fatal(err)
			}
			m, err := engine.Load(dir, engine.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			info := m.Info()
			var soft []int
			for l, lin := range info.LinearLayer {
				if !lin {
					soft = append(soft, l)
				}
			}
			if len(soft) != len(tc.softmax) {
				t.Fatalf("softmax layers %v, want %v", soft, tc.softmax)
			}
			for i := range soft {
				if soft[i] != tc.softmax[i] {
					t.Fatalf("softmax layers %v, want %v", soft, tc.softmax)
				}
			}
			V := info.VocabSize
			ids := make([]int32, 70)
			for i := range ids {
				ids[i] = int32((i*131 + 7) % V)
			}
			all := &model.Request{State: m.NewState(), Tokens: ids, All: true}
			if err := m.Forward(context.Background(), []*model.Request{all}); err != nil {
				t.Fatal(err)
			}
			st := m.NewState()
			for i, id := range ids {
				r := &model.Request{State: st, Tokens: []int32{id}}
				if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
					t.Fatal(err)
				}
				want := all.Logits[i*V : (i+1)*V]
				var num, den float64
				for j := range want {
					if math.IsNaN(float64(r.Logits[j])) {
						t.Fatal("NaN logits")
					}
					num = math.Max(num, math.Abs(float64(r.Logits[j]-want[j])))
					den = math.Max(den, math.Abs(float64(want[j])))
				}
				if num/den > 1e-4 {
					t.Fatalf("token %d: one-at-a-time differs from prefill by %.3g", i, num/den)
				}
			}
		})
	}
}
