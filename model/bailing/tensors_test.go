package bailing

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
)

// recorder is a Source that records the names Load asks for.
type recorder struct {
	checkpoint.Source
	names []string
}

func (r *recorder) Weight(name string, shape ...int) (backend.HostWeight, error) {
	r.names = append(r.names, name)
	return r.Source.Weight(name, shape...)
}

// TestTensorsMatchLoad keeps Tensors (used by synth and inspect) and Load in step,
// and checks that every tensor of the fixture checkpoints is used.
func TestTensorsMatchLoad(t *testing.T) {
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		ck, err := checkpoint.Open(filepath.Join("..", "..", "testdata", dir))
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close()
		rec := &recorder{Source: ck}
		m, err := Load(ck.ConfigJSON, ck.Generation, rec, cpu.New(1), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, ts := range Tensors(m.Config) {
			want = append(want, ts.Name)
		}
		if !slices.Equal(rec.names, want) {
			t.Fatalf("%s: Load read %d tensors, Tensors lists %d", dir, len(rec.names), len(want))
		}
		stored := ck.Tensors.Names()
		slices.Sort(want)
		if !slices.Equal(stored, want) {
			t.Fatalf("%s: checkpoint holds %d tensors, Tensors lists %d", dir, len(stored), len(want))
		}
	}
}

func TestParamCountsMini(t *testing.T) {
	b, err := os.ReadFile("../../testdata/configs/Ring-mini-linear-2.0.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	total, active, emb := ParamCounts(c)
	// technical report: 16.4B total, 957M non-embedding active (lm_head counted as embedding)
	nonEmbActive := active - emb // lm_head has the same size as the embedding
	if total < 16.3e9 || total > 16.5e9 || nonEmbActive < 0.95e9 || nonEmbActive > 0.965e9 {
		t.Fatalf("total %d, non-embedding active %d", total, nonEmbActive)
	}
}
