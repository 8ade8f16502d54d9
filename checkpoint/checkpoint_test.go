package checkpoint_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/safetensors"
)

const fixture = "../testdata/tiny-linear"

// copyFixture copies the tiny-linear checkpoint into a temp dir.
func copyFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(fixture, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// load opens dir and builds the model, returning the first error.
func load(dir string) error {
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return err
	}
	defer ck.Close()
	_, err = bailing.Load(ck.ConfigJSON, ck.Generation, ck, cpu.New(1), bailing.Options{})
	return err
}

func editConfig(t *testing.T, dir string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, _ := os.ReadFile(p)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o644)
}

// rewriteShard rewrites shard 2 with one tensor changed by edit (nil drops it).
func rewriteShard(t *testing.T, dir, name string, edit func(ti *safetensors.TensorInfo, data []byte) []byte) {
	t.Helper()
	p := filepath.Join(dir, "model-00002-of-00002.safetensors")
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var infos []safetensors.TensorInfo
	var datas [][]byte
	for _, n := range f.Names() {
		tt := f.Tensor(n)
		ti := safetensors.TensorInfo{Name: n, DType: tt.DType, Shape: tt.Shape}
		d := append([]byte(nil), tt.Data...)
		if n == name {
			d = edit(&ti, d)
			if d == nil {
				continue
			}
		}
		infos = append(infos, ti)
		datas = append(datas, d)
	}
	f.Close()
	w, err := safetensors.Create(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range datas {
		w.Write(d)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptInputs(t *testing.T) {
	// a tensor known to live in shard 2
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	b, _ := os.ReadFile(filepath.Join(fixture, "model.safetensors.index.json"))
	json.Unmarshal(b, &idx)
	var victim string
	for n, f := range idx.WeightMap {
		if f == "model-00002-of-00002.safetensors" && strings.HasSuffix(n, "down_proj.weight") {
			victim = n
			break
		}
	}
	cases := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   []string // substrings of the error
	}{
		{"truncated shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model-00002-of-00002.safetensors")
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-100)
		}, []string{"model-00002-of-00002.safetensors", "truncated"}},
		{"tiny file", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, "model-00001-of-00002.safetensors"), 5)
		}, []string{"model-00001-of-00002.safetensors", "truncated"}},
		{"corrupt header", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model-00001-of-00002.safetensors")
			b, _ := os.ReadFile(p)
			copy(b[8:], "{{{{")
			os.WriteFile(p, b, 0o644)
		}, []string{"model-00001-of-00002.safetensors", "corrupt header"}},
		{"header length beyond file", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "model-00001-of-00002.safetensors")
			b, _ := os.ReadFile(p)
			b[6] = 0x7f
			os.WriteFile(p, b, 0o644)
		}, []string{"model-00001-of-00002.safetensors", "header length"}},
		{"missing shard", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
		}, []string{"model-00002-of-00002.safetensors"}},
		{"missing tensor", func(t *testing.T, dir string) {
			rewriteShard(t, dir, victim, func(*safetensors.TensorInfo, []byte) []byte { return nil })
		}, []string{victim, "missing"}},
		{"wrong shape", func(t *testing.T, dir string) {
			rewriteShard(t, dir, victim, func(ti *safetensors.TensorInfo, d []byte) []byte {
				ti.Shape = []int{ti.Shape[1], ti.Shape[0]}
				return d
			})
		}, []string{victim, "shape", "model-00002-of-00002.safetensors"}},
		{"unsupported dtype", func(t *testing.T, dir string) {
			rewriteShard(t, dir, victim, func(ti *safetensors.TensorInfo, d []byte) []byte {
				ti.DType = safetensors.I16
				return d
			})
		}, []string{victim, "dtype"}},
		{"bad json config", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o644)
		}, []string{"config.json"}},
		{"missing hidden_size", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { delete(m, "hidden_size") })
		}, []string{"hidden_size", "missing"}},
		{"missing layer_group_size", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { delete(m, "layer_group_size") })
		}, []string{"layer_group_size"}},
		{"wrong type", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["num_hidden_layers"] = "six" })
		}, []string{"num_hidden_layers"}},
		{"n_group does not divide experts", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["n_group"] = 3 })
		}, []string{"n_group"}},
		{"kv heads do not divide heads", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["num_key_value_heads"] = 3 })
		}, []string{"num_key_value_heads"}},
		{"group_norm_size does not divide", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["group_norm_size"] = 3 })
		}, []string{"group_norm_size"}},
		{"unknown architecture", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["architectures"] = []string{"LlamaForCausalLM"} })
		}, []string{"architectures", "LlamaForCausalLM"}},
		{"hidden size mismatch with weights", func(t *testing.T, dir string) {
			editConfig(t, dir, func(m map[string]any) { m["hidden_size"] = 32 })
		}, []string{"shape"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyFixture(t)
			tc.break_(t, dir)
			err := load(dir)
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	dir := copyFixture(t)
	editConfig(t, dir, func(m map[string]any) {
		m["some_future_field"] = map[string]any{"x": 1}
		m["auto_map"] = map[string]any{"AutoConfig": "x.Y"}
	})
	if err := load(dir); err != nil {
		t.Fatal(err)
	}
}

func TestGenerationConfigEOS(t *testing.T) {
	for in, want := range map[string][]int32{
		`{"eos_token_id": 5}`:                {5},
		`{"eos_token_id": [156892, 156895]}`: {156892, 156895},
		`{"bos_token_id": 1}`:                nil,
	} {
		g, err := checkpoint.ParseGenerationConfig([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if len(g.EOSTokenIDs) != len(want) {
			t.Fatalf("%s: got %v", in, g.EOSTokenIDs)
		}
	}
	if _, err := checkpoint.ParseGenerationConfig([]byte(`{"eos_token_id": "x"}`)); err == nil {
		t.Fatal("bad eos_token_id accepted")
	}
}
