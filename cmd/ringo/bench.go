package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"text/tabwriter"

	"github.com/ringo-ai/ringo/bench"
	"github.com/ringo-ai/ringo/defaultmodel"
	"github.com/ringo-ai/ringo/engine"
	"github.com/spf13/cobra"
)

func init() {
	var mf modelFlags
	var prompt, gen, batch int
	var contexts string
	var asJSON bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "bench [--model DIR] [--prompt N] [--gen N] [--context 1k,8k,32k] [--threads T] [--batch B] [--json]",
		Short: "Measure prefill and decode speed against this machine's rooflines",
		Long: `bench measures prefill tokens/s and time to first token for a random
prompt, and decode tokens/s at each --context length (the context is
synthesized: random KV cache rows and linear states, so no long prefill is
needed). It also measures this machine's streaming memory bandwidth and FMA
peak and prints each figure as a fraction of its roofline: decode as
(weight + state + KV bytes read per step ÷ bandwidth), prefill as
(FLOPs per token × tokens/s ÷ peak). Peak RSS is reported too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctxs, err := bench.ParseSizes(contexts)
			if err != nil {
				return fmt.Errorf("--context: %w", err)
			}
			dir := mf.model
			if dir == "" {
				if dir, err = defaultmodel.Dir(); err != nil {
					return err
				}
			}
			m, err := engine.Load(dir, mf.options())
			if err != nil {
				return err
			}
			defer m.Close()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			res, err := bench.Run(cmd.Context(), dir, m, bench.Options{Prompt: prompt, Gen: gen, Contexts: ctxs, Threads: mf.threads, Batch: batch})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "model\t%s (%s)\n", res.Model, m.Backend.Name())
			fmt.Fprintf(w, "machine\t%d threads, %.1f GB/s read bandwidth, %.0f GFLOP/s FMA peak\n", res.Machine.Threads, res.Machine.BandwidthGBs, res.Machine.PeakGFLOPs)
			fmt.Fprintf(w, "weights\t%.2f GiB, %.1f MiB read per token\n", float64(res.WeightBytes)/(1<<30), float64(res.ActiveBytes)/(1<<20))
			fmt.Fprintf(w, "prefill\t%d tokens: %.1f tok/s, %.1f%% of FMA peak, time to first token %.0f ms\n", res.PromptTokens, res.PrefillTokS, 100*res.PrefillPeak, res.TTFTms)
			for _, p := range res.Decode {
				fmt.Fprintf(w, "decode @ %d ctx, batch %d\t%.2f tok/s, %.1f%% of bandwidth roofline (%.1f MiB/token)\n", p.Context, res.Batch, p.DecodeTokS, 100*p.Roofline, float64(p.BytesPerToken)/(1<<20))
			}
			fmt.Fprintf(w, "peak RSS\t%.0f MiB\n", res.PeakRSSMiB)
			return w.Flush()
		},
	}
	mf.register(cmd, "model directory or .gguf file (default: the embedded tiny model)")
	cmd.Flags().IntVar(&prompt, "prompt", 512, "prompt tokens for the prefill measurement")
	cmd.Flags().IntVar(&gen, "gen", 32, "decode steps per measurement")
	cmd.Flags().IntVar(&batch, "batch", 1, "sequences decoded together")
	cmd.Flags().StringVar(&contexts, "context", "0", "context lengths for decode, e.g. 1k,8k,32k")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measurements to this file")
	rootCmd.AddCommand(cmd)
}
