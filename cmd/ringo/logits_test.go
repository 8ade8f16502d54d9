package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/internal/fixture"
)

// TestLogitsCommand runs `ringo logits` on every fixture exactly as the
// external checks do and compares with the reference answers.
func TestLogitsCommand(t *testing.T) {
	for _, tc := range []struct{ dir, decay string }{
		{"tiny-linear", ""}, {"tiny-linear-hfdecay", "hf"}, {"tiny-softmax", ""},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			dir := filepath.Join("..", "..", "testdata", tc.dir)
			exp, err := fixture.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			var list []string
			for _, id := range exp.PromptIDs {
				list = append(list, itoa(id))
			}
			idsFile := filepath.Join(t.TempDir(), "ids.json")
			os.WriteFile(idsFile, []byte("["+strings.Join(list, ",")+"]"), 0o644)
			out := filepath.Join(t.TempDir(), "out.safetensors")
			t.Setenv("RINGO_DECAY_CONVENTION", tc.decay)
			rootCmd.SetArgs([]string{"logits", "--model", dir, "--prompt-ids", "@" + idsFile, "--generate", itoa(int32(len(exp.GeneratedIDs))), "--out", out})
			if err := rootCmd.Execute(); err != nil {
				t.Fatal(err)
			}
			got, err := fixture.LoadFile(out) // checks the tensor names and dtypes
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.PromptIDs, exp.PromptIDs) || !slices.Equal(got.GeneratedIDs, exp.GeneratedIDs) {
				t.Fatalf("ids differ: prompt %v generated %v, want %v %v", got.PromptIDs, got.GeneratedIDs, exp.PromptIDs, exp.GeneratedIDs)
			}
			if len(got.PromptLogits) != len(exp.PromptLogits) || len(got.GeneratedLogits) != len(exp.GeneratedLogits) {
				t.Fatalf("logits shapes differ: %d and %d values, want %d and %d", len(got.PromptLogits), len(got.GeneratedLogits), len(exp.PromptLogits), len(exp.GeneratedLogits))
			}
			V := len(exp.PromptLogits) / len(exp.PromptIDs)
			for _, c := range []struct {
				name      string
				got, want []float32
			}{{"prompt_logits", got.PromptLogits, exp.PromptLogits}, {"generated_logits", got.GeneratedLogits, exp.GeneratedLogits}} {
				for r := 0; r < len(c.want)/V; r++ {
					if e := fixture.RowErr(c.got[r*V:(r+1)*V], c.want[r*V:(r+1)*V]); e > fixture.Tolerance {
						t.Fatalf("%s row %d: error %.3g", c.name, r, e)
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
