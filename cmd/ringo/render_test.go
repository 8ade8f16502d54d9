package main

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestRenderCommand renders every conversation of the chat fixture through
// `ringo render --jsonl --ids` and compares text and ids with transformers'.
func TestRenderCommand(t *testing.T) {
	data, err := os.ReadFile("../../chat/testdata/chat.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []map[string]json.RawMessage
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	var in bytes.Buffer
	for _, c := range cases {
		req := map[string]json.RawMessage{"messages": c["messages"], "tools": c["tools"], "add_generation_prompt": c["add_generation_prompt"]}
		b, _ := json.Marshal(req)
		in.Write(append(b, '\n'))
	}
	var out bytes.Buffer
	rootCmd.SetIn(&in)
	rootCmd.SetOut(&out)
	defer rootCmd.SetIn(nil)
	defer rootCmd.SetOut(nil)
	rootCmd.SetArgs([]string{"render", "--model", "../../chat/testdata", "--jsonl", "--ids"})
	if err := rootCmd.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(cases) {
		t.Fatalf("%d output lines for %d conversations", len(lines), len(cases))
	}
	for i, line := range lines {
		var got struct {
			Rendered string  `json:"rendered"`
			IDs      []int32 `json:"ids"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatal(err)
		}
		var want string
		var ids []int32
		json.Unmarshal(cases[i]["rendered"], &want)
		json.Unmarshal(cases[i]["ids"], &ids)
		if got.Rendered != want {
			t.Errorf("conversation %d: rendered\n%q\nwant\n%q", i, got.Rendered, want)
		}
		if !slices.Equal(got.IDs, ids) {
			t.Errorf("conversation %d: ids differ", i)
		}
	}
}
