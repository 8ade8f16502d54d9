package main

import (
	"fmt"
	"os"

	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func init() {
	var dir, typ, out, name string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "quantize --model DIR --type Q4_K --out FILE.gguf",
		Short: "Convert a model directory into a self-contained GGUF file",
		Long: `Convert a Hugging Face model directory (config.json, safetensors weights,
tokenizer files) into one GGUF file holding the model metadata, the tokenizer,
the chat template and the weights in the chosen type. The weights are read,
converted and written one tensor at a time, so the model is never held in
memory.

Types: F32, F16, BF16 (plain conversion) and Q8_0, Q6_K, Q4_K, Q4_0 (llama.cpp
block formats). With a block format the norms, the expert bias and the MoE
router keep their precision, and lm_head becomes Q6_K for Q4_K and Q4_0.
Weights whose columns are not a multiple of the block size (256 for the
K-quants, 32 otherwise) keep their stored type; the command lists them.
See docs/QUANTIZATION.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" || out == "" {
				return fmt.Errorf("--model and --out are required")
			}
			t, err := ggufmodel.ParseFileType(typ)
			if err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			var bar *progressbar.ProgressBar
			o := ggufmodel.ConvertOptions{
				Type: t,
				Name: name,
				Note: func(s string) { fmt.Fprintln(os.Stderr, "note:", s) },
			}
			if !quiet {
				o.Progress = func(done, total int64) {
					if bar == nil {
						bar = progressbar.DefaultBytes(total, "quantizing "+t.String())
					}
					bar.Set64(done)
				}
			}
			if err := ggufmodel.Convert(cmd.Context(), dir, out, o); err != nil {
				return err
			}
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(os.Stderr)
			}
			st, err := os.Stat(out)
			if err != nil {
				return err
			}
			fmt.Printf("%s (%s, %.1f MiB)\n", out, t, float64(st.Size())/(1<<20))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "model", "", "model directory (Hugging Face layout)")
	cmd.Flags().StringVar(&typ, "type", "Q4_K", "tensor type: F32, F16, BF16, Q8_0, Q6_K, Q4_K or Q4_0")
	cmd.Flags().StringVar(&out, "out", "", "output GGUF file")
	cmd.Flags().StringVar(&name, "name", "", "general.name (default: the model directory's name)")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	rootCmd.AddCommand(cmd)
}
