package bailing_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/internal/fixture"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/synth"
)

// TestKVCacheTypesLongContext runs a random Ling-shaped checkpoint (every
// layer softmax attention, head dim 64, four query heads per KV head, so
// the Q8_0 cache takes its integer dot-product path, in prefill too where
// the cache is tiled) through an 1100-token
// prompt and 24 decode steps with each KV cache type, and compares the
// logits of every position with those of the float32 cache. The decode
// steps run past the point where a single sequence's keys are split over
// the workers. The reduced types must keep the top-1 token of nearly
// every position; their worst rows are logged.
func TestKVCacheTypesLongContext(t *testing.T) {
	if testing.Short() {
		t.Skip("long context")
	}
	base, err := os.ReadFile("../../testdata/tiny-softmax/config.json")
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(base, &c); err != nil {
		t.Fatal(err)
	}
	c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"] = 64, 8, 2
	cfg, _ := json.Marshal(c)
	dir := t.TempDir()
	if err := synth.Write(context.Background(), cfg, dir, synth.Options{Seed: 9}); err != nil {
		t.Fatal(err)
	}
	const P, G = 1100, 24
	prompt := make([]int32, P)
	for i := range prompt {
		prompt[i] = int32((i*131 + 7) % 500)
	}
	// run returns the logits of every prompt position and of G decode
	// steps fed with the tokens in feed (greedy tokens when feed is nil).
	run := func(kv string, feed []int32) (rows [][]float32, toks []int32) {
		m, err := engine.Load(dir, engine.Options{KVCache: kv, Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		V := m.Info().VocabSize
		st := m.NewState()
		defer st.Free()
		req := &model.Request{State: st, Tokens: prompt, All: true}
		if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < P; i++ {
			rows = append(rows, slices.Clone(req.Logits[i*V:(i+1)*V]))
		}
		next := fixture.Argmax(rows[P-1])
		for i := 0; i < G; i++ {
			if feed != nil {
				next = feed[i]
			}
			toks = append(toks, next)
			r := &model.Request{State: st, Tokens: []int32{next}}
			if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, slices.Clone(r.Logits))
			next = fixture.Argmax(r.Logits)
		}
		return rows, toks
	}
	want, toks := run("f32", nil)
	for _, tc := range []struct {
		kv       string
		median   float64 // bound on the median row error
		minAgree float64 // fraction of rows whose top-1 token must agree
	}{
		{"f16", 2e-3, 0.99},
		// q8_0 also rounds the queries to 8 bits per block of 32 (as
		// llama.cpp's Q8_0 attention does), in prefill too where the CPU
		// keeps the cache in tiles: 1,088-1,097 of 1,124 rows agree on
		// this random model, whose top logits are close
		{"q8_0", 2e-2, 0.96},
	} {
		got, _ := run(tc.kv, toks)
		errs := make([]float64, len(want))
		agree, agreeDecode, worstDecode := 0, 0, 0.0
		for i := range want {
			errs[i] = fixture.RowErr(got[i], want[i])
			ok := fixture.Argmax(got[i]) == fixture.Argmax(want[i])
			if ok {
				agree++
			}
			if i >= P {
				worstDecode = max(worstDecode, errs[i])
				if ok {
					agreeDecode++
				}
			}
		}
		sort.Float64s(errs)
		med, p99, worst := errs[len(errs)/2], errs[len(errs)*99/100], errs[len(errs)-1]
		t.Logf("%s vs f32: row error median %.3g, 99th percentile %.3g, worst %.3g; top-1 agreement %d/%d (decode steps: worst %.3g, %d/%d)",
			tc.kv, med, p99, worst, agree, len(want), worstDecode, agreeDecode, G)
		if med > tc.median {
			t.Errorf("%s: median row error %.3g > %g", tc.kv, med, tc.median)
		}
		if float64(agree) < tc.minAgree*float64(len(want)) {
			t.Errorf("%s: top-1 agreement %d/%d", tc.kv, agree, len(want))
		}
	}
}

// TestKVBytes checks that the model's memory figures follow the KV cache
// type: Info.KVBytesPerToken and the KV part of State.Bytes count 4, 2 and
// 34/32 bytes per cached value for f32, f16 and q8_0.
func TestKVBytes(t *testing.T) {
	dir := filepath.Join("..", "..", "testdata", "tiny-softmax")
	var perToken, kvHeld [3]int64
	for i, kv := range []string{"f32", "f16", "q8_0"} {
		m, err := engine.Load(dir, engine.Options{KVCache: kv})
		if err != nil {
			t.Fatal(err)
		}
		info := m.Info()
		st := m.NewState()
		if err := m.Forward(context.Background(), []*model.Request{{State: st, Tokens: []int32{1, 2, 3}}}); err != nil {
			t.Fatal(err)
		}
		perToken[i], kvHeld[i] = info.KVBytesPerToken, st.Bytes()-info.StateBytes
		st.Free()
		m.Close()
	}
	for i, w := range []int64{128, 64, 34} { // bytes per 32 values, ×4
		if perToken[i]*128 != perToken[0]*w || kvHeld[i]*128 != kvHeld[0]*w || kvHeld[i] <= 0 {
			t.Errorf("KV bytes per token %v and held by a state %v (f32, f16, q8_0): want 4 : 2 : 34/32", perToken, kvHeld)
			break
		}
	}
}

// TestAttentionFLOPs checks the attention work the model reports to
// benchmarks against its KV cache: every softmax layer caches 2·Hkv·d
// float32 values per token and does 4·H·d FLOPs per (query, key) pair; every
// other layer is linear attention with 4·H·d² FLOPs per token.
func TestAttentionFLOPs(t *testing.T) {
	for _, name := range []string{"tiny-linear", "tiny-softmax"} {
		dir := filepath.Join("..", "..", "testdata", name)
		raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var c struct {
			Layers  int `json:"num_hidden_layers"`
			Heads   int `json:"num_attention_heads"`
			KVHeads int `json:"num_key_value_heads"`
			HeadDim int `json:"head_dim"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatal(err)
		}
		m, err := engine.Load(dir, engine.Options{KVCache: "f32"})
		if err != nil {
			t.Fatal(err)
		}
		info := m.Info()
		m.Close()
		softmax := info.KVBytesPerToken / int64(4*2*c.KVHeads*c.HeadDim)
		linear := int64(c.Layers) - softmax
		hd := int64(c.Heads * c.HeadDim)
		if softmax <= 0 || info.AttentionFLOPsPerKey != 4*hd*softmax || info.LinearFLOPsPerToken != 4*hd*int64(c.HeadDim)*linear {
			t.Errorf("%s: %d softmax layers of %d by the KV cache; attention FLOPs per key %d, linear FLOPs per token %d",
				name, softmax, c.Layers, info.AttentionFLOPsPerKey, info.LinearFLOPsPerToken)
		}
	}
}
