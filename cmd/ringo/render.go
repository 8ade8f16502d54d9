package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/ringo-ai/ringo/chat"
	"github.com/ringo-ai/ringo/textgen"
	"github.com/spf13/cobra"
)

// renderRequest is one conversation to render: the arguments of Hugging
// Face's apply_chat_template. Other keys become template variables
// (e.g. "enable_thinking": true).
type renderRequest struct {
	Messages            []chat.Message    `json:"messages"`
	Tools               []json.RawMessage `json:"tools"`
	AddGenerationPrompt bool              `json:"add_generation_prompt"`
	Extra               map[string]any    `json:"-"`
}

func init() {
	var modelPath string
	var jsonl, ids bool
	cmd := &cobra.Command{
		Use:   "render --model M [--jsonl] [--ids]",
		Short: "Render conversations with the model's chat template",
		Long: `render reads a JSON object {"messages": [...], "tools": [...],
"add_generation_prompt": true, ...} from stdin (any other key is passed to
the template, e.g. "enable_thinking": true) and prints the prompt text the
chat template makes of it, as Hugging Face's apply_chat_template does. With
--jsonl every input line is such an object and every output line the JSON
string of its rendering; --ids prints {"rendered": "...", "ids": [...]}
instead (ids from the model's tokenizer, special tokens recognised).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelPath == "" {
				return fmt.Errorf("--model is required")
			}
			tok, tmpl, err := textgen.LoadText(modelPath)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			render := func(data []byte) error {
				var req renderRequest
				if err := json.Unmarshal(data, &req); err != nil {
					return fmt.Errorf("bad input: %w", err)
				}
				var all map[string]any
				json.Unmarshal(data, &all)
				for _, k := range []string{"messages", "tools", "add_generation_prompt"} {
					delete(all, k)
				}
				text, err := tmpl.Render(req.Messages, req.Tools, req.AddGenerationPrompt, all)
				if err != nil {
					return err
				}
				if ids {
					b, _ := json.Marshal(map[string]any{"rendered": text, "ids": tok.Encode(text, true)})
					_, err = fmt.Fprintf(out, "%s\n", b)
					return err
				}
				if jsonl {
					b, _ := json.Marshal(text)
					_, err = fmt.Fprintf(out, "%s\n", b)
					return err
				}
				_, err = io.WriteString(out, text)
				return err
			}
			in := cmd.InOrStdin()
			if !jsonl {
				data, err := io.ReadAll(in)
				if err != nil {
					return err
				}
				return render(data)
			}
			sc := bufio.NewScanner(in)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for n := 1; sc.Scan(); n++ {
				if strings.TrimSpace(sc.Text()) == "" {
					continue
				}
				if err := render(sc.Bytes()); err != nil {
					return fmt.Errorf("line %d: %w", n, err)
				}
			}
			return sc.Err()
		},
	}
	cmd.Flags().StringVar(&modelPath, "model", "", "model directory (tokenizer_config.json, tokenizer.json) or .gguf file")
	cmd.Flags().BoolVar(&jsonl, "jsonl", false, "one JSON object per input line, one JSON string per output line")
	cmd.Flags().BoolVar(&ids, "ids", false, "print {\"rendered\", \"ids\"} JSON per conversation")
	rootCmd.AddCommand(cmd)
}
