package synth

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/safetensors"
)

func TestWriteLoads(t *testing.T) {
	cfg, err := os.ReadFile("../testdata/tiny-linear/config.json")
	if err != nil {
		t.Fatal(err)
	}
	a, b := t.TempDir(), t.TempDir()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	defer func(c int64) { chunkSize = c }(chunkSize)
	chunkSize = 4 << 10 // many chunks per tensor
	for i, dir := range []string{a, b} {
		// the bytes must not depend on the number of workers
		runtime.GOMAXPROCS(1 + 2*i)
		// tiny shards so that the index spans several files
		if err := Write(context.Background(), cfg, dir, Options{DType: safetensors.F32, Seed: 3, ShardSize: 200 << 10}); err != nil {
			t.Fatal(err)
		}
	}
	shards, _ := filepath.Glob(filepath.Join(a, "model-*.safetensors"))
	if len(shards) < 2 {
		t.Fatalf("%d shards", len(shards))
	}
	for _, s := range shards {
		x, _ := os.ReadFile(s)
		y, _ := os.ReadFile(filepath.Join(b, filepath.Base(s)))
		if !bytes.Equal(x, y) {
			t.Fatalf("%s differs between two runs with the same seed", filepath.Base(s))
		}
	}
	checkFinite(t, a)
}

// checkFinite loads the checkpoint in dir and checks that a forward pass
// gives finite logits.
func checkFinite(t *testing.T, dir string) {
	t.Helper()
	m, err := engine.Load(dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r := &model.Request{State: m.NewState(), Tokens: []int32{1, 2, 3}}
	if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Logits {
		if v != v || math.IsInf(float64(v), 0) {
			t.Fatalf("non-finite logit %v from the synthetic model in %s", v, dir)
		}
	}
}

func TestWriteRejectsBadConfig(t *testing.T) {
	if err := Write(context.Background(), []byte(`{"architectures":["X"]}`), t.TempDir(), Options{}); err == nil {
		t.Fatal("bad config accepted")
	}
}

// TestWriteFP8 writes a block-scaled FP8 checkpoint and loads it: the bulk
// matrices must come back as FP8 with their scales, the router and the
// embeddings in BF16, and the model must produce finite logits.
func TestWriteFP8(t *testing.T) {
	cfg, err := os.ReadFile("../testdata/tiny-linear/config.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Write(context.Background(), cfg, dir, Options{DType: safetensors.F8E4M3, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var fp8, scaled int
	for _, name := range ck.Tensors.Names() {
		tn := ck.Tensors.Tensor(name)
		switch {
		case tn.DType == safetensors.F8E4M3:
			fp8++
			hw, err := ck.Weight(name, tn.Shape...)
			if err != nil {
				t.Fatal(err)
			}
			if len(hw.Scale) == 0 || hw.Scale[0] <= 0 {
				t.Fatalf("%s: scales %v", name, hw.Scale[:min(4, len(hw.Scale))])
			}
			for i, b := range hw.Data {
				if b&0x7f == 0x7f {
					t.Fatalf("%s[%d] is NaN", name, i)
				}
			}
			scaled++
		case strings.HasSuffix(name, ".mlp.gate.weight") || name == "model.word_embeddings.weight":
			if tn.DType != safetensors.BF16 {
				t.Errorf("%s is %v, want BF16", name, tn.DType)
			}
		}
	}
	if fp8 == 0 || scaled != fp8 {
		t.Fatalf("%d FP8 tensors, %d with scales", fp8, scaled)
	}
	checkFinite(t, dir)
}

// BenchmarkFillBF16 is the generator's speed on one core (a full-size model is
// ~33 GB, filled by all cores).
func BenchmarkFillBF16(b *testing.B) {
	buf := make([]byte, chunkSize)
	b.SetBytes(chunkSize)
	for i := 0; i < b.N; i++ {
		fill(buf, safetensors.BF16, dist{0, 0.03}, chunkRNG(1, 2, uint64(i)))
	}
}
