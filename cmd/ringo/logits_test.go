package main

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/safetensors"
)

func readF32(t *testing.T, f *safetensors.File, name string) []float32 {
	t.Helper()
	tt := f.Tensor(name)
	if tt == nil {
		t.Fatalf("output has no %s", name)
	}
	out := make([]float32, tt.Elems())
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(tt.Data[4*i:]))
	}
	return out
}

// TestLogitsCommand runs `ringo logits` on every fixture exactly as the
// external checks do and compares with the reference answers.
func TestLogitsCommand(t *testing.T) {
	for _, tc := range []struct{ dir, decay string }{
		{"tiny-linear", ""}, {"tiny-linear-hfdecay", "hf"}, {"tiny-softmax", ""},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("..", "..", "testdata", tc.dir)
			exp, err := safetensors.Open(filepath.Join(dir, "expected.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer exp.Close()
			ids := exp.Tensor("prompt_ids")
			var list []string
			for i := 0; i < ids.Elems(); i++ {
				list = append(list, itoa(int32(binary.LittleEndian.Uint32(ids.Data[4*i:]))))
			}
			idsFile := filepath.Join(t.TempDir(), "ids.json")
			os.WriteFile(idsFile, []byte("["+strings.Join(list, ",")+"]"), 0o644)
			gen := exp.Tensor("generated_ids").Elems()
			out := filepath.Join(t.TempDir(), "out.safetensors")
			t.Setenv("RINGO_DECAY_CONVENTION", tc.decay)
			rootCmd.SetArgs([]string{"logits", "--model", dir, "--prompt-ids", "@" + idsFile, "--generate", itoa(int32(gen)), "--out", out})
			if err := rootCmd.Execute(); err != nil {
				t.Fatal(err)
			}
			got, err := safetensors.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if s := got.Tensor("prompt_logits").Shape; s[0] != ids.Elems() || got.Tensor("prompt_logits").DType != safetensors.F32 {
				t.Fatalf("prompt_logits shape %v", s)
			}
			if g := got.Tensor("generated_ids"); g.DType != safetensors.I32 || string(g.Data) != string(exp.Tensor("generated_ids").Data) {
				t.Fatal("generated_ids differ")
			}
			V := got.Tensor("prompt_logits").Shape[1]
			for _, name := range []string{"prompt_logits", "generated_logits"} {
				a, b := readF32(t, got, name), readF32(t, exp, name)
				for r := 0; r < len(b)/V; r++ {
					var num, den float64
					for i := r * V; i < (r+1)*V; i++ {
						num = math.Max(num, math.Abs(float64(a[i]-b[i])))
						den = math.Max(den, math.Abs(float64(b[i])))
					}
					if num/den > 1e-4 {
						t.Fatalf("%s row %d: error %.3g", name, r, num/den)
					}
				}
			}
		})
	}
}

func itoa(v int32) string { return strconv.Itoa(int(v)) }

func TestParseIDs(t *testing.T) {
	if ids, err := parseIDs("1, 2,3"); err != nil || len(ids) != 3 || ids[2] != 3 {
		t.Fatalf("got %v %v", ids, err)
	}
	for _, bad := range []string{"", "1,x", "@/nonexistent.json", "1,,2"} {
		if _, err := parseIDs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
