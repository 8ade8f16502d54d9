package synth

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

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
	for _, dir := range []string{a, b} {
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
	m, err := engine.Load(a, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	r := &model.Request{State: m.NewState(), Tokens: []int32{1, 2, 3}}
	if err := m.Forward(context.Background(), []*model.Request{r}); err != nil {
		t.Fatal(err)
	}
	for _, v := range r.Logits {
		if v != v {
			t.Fatal("NaN logits from a synthetic model")
		}
	}
}

func TestWriteRejectsBadConfig(t *testing.T) {
	if err := Write(context.Background(), []byte(`{"architectures":["X"]}`), t.TempDir(), Options{}); err == nil {
		t.Fatal("bad config accepted")
	}
}
