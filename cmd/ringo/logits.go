package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/safetensors"
	"github.com/ringo-ai/ringo/sample"
	"github.com/spf13/cobra"
)

func init() {
	var mf modelFlags
	var promptIDs, out string
	var generate int
	cmd := &cobra.Command{
		Use:   "logits --model DIR --prompt-ids 1,2,3 [--generate N] --out FILE.safetensors",
		Short: "Write the logits of a prompt (and a greedy continuation) to a safetensors file",
		Long: `logits runs the prompt through the model in one prefill and writes F32
prompt_logits [T,V] (logits at every prompt position). With --generate N it
also writes I32 generated_ids [N] (greedy) and F32 generated_logits [N,V]: the
logits after appending each generated token, computed through the incremental
cache. --prompt-ids takes a comma-separated list or @file.json (a JSON array).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if mf.model == "" {
				return fmt.Errorf("--model is required")
			}
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			if generate < 0 {
				return fmt.Errorf("--generate must not be negative")
			}
			ids, err := parseIDs(promptIDs)
			if err != nil {
				return err
			}
			m, err := engine.Load(mf.model, mf.options())
			if err != nil {
				return err
			}
			defer m.Close()
			V := m.Info().VocabSize
			for _, id := range ids {
				if id < 0 || int(id) >= V {
					return fmt.Errorf("--prompt-ids: token %d outside the vocabulary of %d", id, V)
				}
			}
			ctx := cmd.Context()
			st := m.NewState()
			defer st.Free()
			req := &model.Request{State: st, Tokens: ids, All: true}
			if err := m.Forward(ctx, []*model.Request{req}); err != nil {
				return err
			}
			promptLogits := append([]float32(nil), req.Logits...)
			last := promptLogits[len(promptLogits)-V:]
			var genIDs []int32
			var genLogits []float32
			for i := 0; i < generate; i++ {
				id := sample.Argmax(last)
				genIDs = append(genIDs, id)
				r := &model.Request{State: st, Tokens: []int32{id}}
				if err := m.Forward(ctx, []*model.Request{r}); err != nil {
					return err
				}
				genLogits = append(genLogits, r.Logits...)
				last = r.Logits
			}
			return writeLogits(out, ids, promptLogits, genIDs, genLogits, V, generate > 0)
		},
	}
	mf.register(cmd, "model directory (Hugging Face layout) or .gguf file")
	cmd.Flags().Lookup("precise").DefValue = "true" // exact float32 logits on every device
	mf.precise = true
	cmd.Flags().StringVar(&promptIDs, "prompt-ids", "", "prompt token ids: 1,2,3 or @file.json")
	cmd.Flags().IntVar(&generate, "generate", 0, "greedy tokens to generate after the prompt")
	cmd.Flags().StringVar(&out, "out", "", "output safetensors file")
	rootCmd.AddCommand(cmd)
}

// parseIDs reads "1,2,3" or "@file.json".
func parseIDs(s string) ([]int32, error) {
	if s == "" {
		return nil, fmt.Errorf("--prompt-ids is required")
	}
	var ids []int32
	if strings.HasPrefix(s, "@") {
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, fmt.Errorf("--prompt-ids: %w", err)
		}
		if err := json.Unmarshal(b, &ids); err != nil {
			return nil, fmt.Errorf("--prompt-ids %s: want a JSON array of token ids: %w", s[1:], err)
		}
	} else {
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
			if err != nil {
				return nil, fmt.Errorf("--prompt-ids: %q is not a token id", f)
			}
			ids = append(ids, int32(v))
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("--prompt-ids: empty prompt")
	}
	return ids, nil
}

func writeLogits(path string, ids []int32, pl []float32, gids []int32, gl []float32, V int, withGen bool) error {
	infos := []safetensors.TensorInfo{
		{Name: "prompt_ids", DType: safetensors.I32, Shape: []int{len(ids)}},
		{Name: "prompt_logits", DType: safetensors.F32, Shape: []int{len(ids), V}},
	}
	if withGen {
		infos = append(infos,
			safetensors.TensorInfo{Name: "generated_ids", DType: safetensors.I32, Shape: []int{len(gids)}},
			safetensors.TensorInfo{Name: "generated_logits", DType: safetensors.F32, Shape: []int{len(gids), V}})
	}
	w, err := safetensors.Create(path, infos, nil)
	if err != nil {
		return err
	}
	put := func(ints []int32, floats []float32) {
		b := make([]byte, 4*(len(ints)+len(floats)))
		for i, v := range ints {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
		}
		for i, v := range floats {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		w.Write(b)
	}
	put(ids, nil)
	put(nil, pl)
	if withGen {
		put(gids, nil)
		put(nil, gl)
	}
	return w.Close()
}
