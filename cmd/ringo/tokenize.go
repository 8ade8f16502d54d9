package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ringo-ai/ringo/textgen"
	"github.com/ringo-ai/ringo/tokenizer"
)

// newTokenizeCmd builds `ringo tokenize`.
func newTokenizeCmd() *cobra.Command {
	var (
		modelDir  string
		jsonl     bool
		noSpecial bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize --model DIR [--jsonl] [--no-special]",
		Short: "Print the token ids of text read from stdin",
		Long: `Tokenize reads stdin and prints token ids.

By default the whole input is one text and its ids are printed on one line,
separated by spaces. With --jsonl every input line is a JSON string and the
corresponding output line is the JSON array of its ids. Special tokens
written in the text become their ids (as Hugging Face's encode does) unless
--no-special is given. No BOS/EOS tokens are added.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if modelDir == "" {
				return errors.New("tokenize: --model DIR is required")
			}
			tok, _, err := textgen.LoadText(modelDir)
			if err != nil {
				return fmt.Errorf("tokenize: %w", err)
			}
			return runTokenize(tok, cmd.InOrStdin(), cmd.OutOrStdout(), jsonl, !noSpecial)
		},
	}
	cmd.Flags().StringVar(&modelDir, "model", "", "model directory holding tokenizer.json, or a .gguf file")
	cmd.Flags().BoolVar(&jsonl, "jsonl", false, "read one JSON string per line, write one JSON array of ids per line")
	cmd.Flags().BoolVar(&noSpecial, "no-special", false, "encode special-token text as plain text")
	return cmd
}

func init() {
	rootCmd.AddCommand(newTokenizeCmd())
}

// runTokenize tokenizes in and writes the ids to out.
func runTokenize(tok *tokenizer.Tokenizer, in io.Reader, out io.Writer, jsonl, allowSpecial bool) error {
	w := bufio.NewWriter(out)
	if !jsonl {
		data, err := io.ReadAll(in)
		if err != nil {
			return fmt.Errorf("tokenize: read stdin: %w", err)
		}
		buf := make([]byte, 0, 16)
		for i, id := range tok.Encode(string(data), allowSpecial) {
			if i > 0 {
				w.WriteByte(' ')
			}
			w.Write(strconv.AppendInt(buf[:0], int64(id), 10))
		}
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			return fmt.Errorf("tokenize: write: %w", err)
		}
		return nil
	}
	r := bufio.NewReader(in)
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("tokenize: read stdin: %w", err)
		}
		if line == "" && err == io.EOF {
			break
		}
		trimmed := strings.TrimRight(line, "\r\n")
		var text string
		if jerr := json.Unmarshal([]byte(trimmed), &text); jerr != nil {
			return fmt.Errorf("tokenize: line %d: not a JSON string: %w", lineNo, jerr)
		}
		ids := tok.Encode(text, allowSpecial)
		if ids == nil {
			ids = []int32{}
		}
		enc, merr := json.Marshal(ids)
		if merr != nil {
			return fmt.Errorf("tokenize: line %d: %w", lineNo, merr)
		}
		w.Write(enc)
		w.WriteByte('\n')
		if err == io.EOF {
			break
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("tokenize: write: %w", err)
	}
	return nil
}
