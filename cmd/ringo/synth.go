package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/ringo-ai/ringo/safetensors"
	"github.com/ringo-ai/ringo/synth"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func init() {
	var cfgPath, out, dtype string
	var seed uint64
	cmd := &cobra.Command{
		Use:   "synth --config FILE.json --out DIR [--dtype bf16|f32|fp8] [--seed N]",
		Short: "Write a random-weight checkpoint of any config (for benchmarks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfgPath == "" || out == "" {
				return fmt.Errorf("--config and --out are required")
			}
			cfg, err := os.ReadFile(cfgPath)
			if err != nil {
				return err
			}
			var dt safetensors.DType
			switch strings.ToLower(dtype) {
			case "bf16":
				dt = safetensors.BF16
			case "f32":
				dt = safetensors.F32
			case "fp8":
				dt = safetensors.F8E4M3
			default:
				return fmt.Errorf("--dtype %q: want bf16, f32 or fp8", dtype)
			}
			var bar *progressbar.ProgressBar
			err = synth.Write(cmd.Context(), cfg, out, synth.Options{DType: dt, Seed: seed, Progress: func(done, total int64) {
				if bar == nil {
					bar = progressbar.DefaultBytes(total, "writing "+out)
				}
				bar.Set64(done)
			}})
			if err != nil {
				return err
			}
			fmt.Println(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&cfgPath, "config", "", "config.json to build")
	cmd.Flags().StringVar(&out, "out", "", "output directory")
	cmd.Flags().StringVar(&dtype, "dtype", "bf16", "weight dtype: bf16, f32, or fp8 (E4M3 matrices with 128x128 block scales, the rest bf16, as the Hub's FP8 checkpoints)")
	cmd.Flags().Uint64Var(&seed, "seed", 0, "random seed")
	rootCmd.AddCommand(cmd)
}
