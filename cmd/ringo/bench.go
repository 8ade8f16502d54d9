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
	"github.com/ringo-ai/ringo/sample"
	"github.com/spf13/cobra"
)

func init() {
	var mf modelFlags
	var gen int
	var prompts, batches, contexts string
	var asJSON bool
	var interleave int
	var cpuProfile string
	var sampled, hostDraw bool
	var sp sample.Params
	cmd := &cobra.Command{
		Use:   "bench [--model DIR] [--prompt N[,N...]] [--gen N] [--context 1k,8k,32k] [--interleave N] [--threads T] [--batch B[,B...]] [--batch-rows R] [--sample [--temperature T] [--top-p P] [--top-k K] [--host-draw]] [--json]",
		Short: "Measure prefill and decode speed against this machine's rooflines",
		Long: `bench measures prefill tokens/s and time to first token for a random
prompt (the second prefill of the process; the first, which pays one-time
costs such as buffers, GEMM plans and weight pages touched first, is
reported as its own time to first token), and decode tokens/s at each --context length (the context is
synthesized: random KV cache rows and linear states, so no long prefill is
needed). It also measures this machine's streaming memory bandwidth and FMA
peak and prints each figure as a fraction of its roofline: decode as
(weight + state + KV bytes read per step ÷ bandwidth), prefill as
(FLOPs per token × tokens/s ÷ peak). Peak RSS is reported too. With a GPU
backend (--device cuda) the rooflines are the GPU's: HBM read bandwidth and
BF16 tensor-core GEMM peak, both measured.

Several prompt lengths (--prompt 4k,32k) and batch sizes (--batch 1,64) can
be measured with one model load: prefill at every prompt length, decode
at every batch size (at the --context lengths). With --interleave N the
context lengths are decoded in turns of N steps, so that a machine whose
speed drifts affects every length alike (for ratios such as 32K ÷ 1K), and
each length after the first also gets its speed over the first's as the
median over the rounds of turns (speed_vs_first in --json); the first step
of a turn starts with the caches the other length filled.

Decode steps take random tokens and leave their logits unused, so the
figures are the model's steps alone. With --sample each step also draws
its next token from its logits (--temperature, --top-p, --top-k, --min-p
as in run; --temperature 0 is greedy), as a generation does, and the
decode figures include that draw: on the GPU, as run and serve do (the
host draws the top-k draws that keep more than 2,048 candidates), and on
the host with --host-draw or on the CPU.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctxs, err := bench.ParseSizes(contexts)
			if err != nil {
				return fmt.Errorf("--context: %w", err)
			}
			pl, err := bench.ParseSizes(prompts)
			if err != nil || len(pl) == 0 {
				return fmt.Errorf("--prompt: bad list %q", prompts)
			}
			bl, err := bench.ParseSizes(batches)
			if err != nil || len(bl) == 0 {
				return fmt.Errorf("--batch: bad list %q", batches)
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
			var runs []bench.Options
			for i, p := range pl {
				runs = append(runs, bench.Options{Prompt: p, Gen: gen, Contexts: ctxs, Threads: mf.threads, Batch: bl[0], Backend: m.Backend, SkipDecode: i > 0, Interleave: interleave})
			}
			for _, b := range bl[1:] {
				runs = append(runs, bench.Options{Prompt: pl[0], Gen: gen, Contexts: ctxs, Threads: mf.threads, Batch: b, Backend: m.Backend, SkipPrefill: true, Interleave: interleave})
			}
			if sampled {
				if sp.Temperature < 0 || sp.TopK < 0 || sp.TopP < 0 || sp.TopP > 1 {
					return fmt.Errorf("--temperature %v, --top-p %v, --top-k %d: want temperature >= 0, top-p in [0, 1], top-k >= 0", sp.Temperature, sp.TopP, sp.TopK)
				}
				for i := range runs {
					runs[i].Sample, runs[i].HostDraw = &sp, hostDraw
				}
			}
			var results []*bench.Result
			out := cmd.OutOrStdout()
			for i, o := range runs {
				res, err := bench.Run(cmd.Context(), dir, m, o)
				if err != nil {
					return err
				}
				results = append(results, res)
				if asJSON {
					continue
				}
				w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
				if i == 0 {
					fmt.Fprintf(w, "model\t%s (%s)\n", res.Model, m.Backend.Name())
					if res.Machine.Device {
						fmt.Fprintf(w, "device\t%.0f GB/s HBM read bandwidth, %.0f TFLOP/s BF16 tensor-core GEMM peak (both measured)\n", res.Machine.BandwidthGBs, res.Machine.PeakGFLOPs/1e3)
					} else {
						fmt.Fprintf(w, "machine\t%d threads, %.1f GB/s read bandwidth, %.0f GFLOP/s FMA peak\n", res.Machine.Threads, res.Machine.BandwidthGBs, res.Machine.PeakGFLOPs)
					}
					fmt.Fprintf(w, "weights\t%.2f GiB, %.1f MiB read per token\n", float64(res.WeightBytes)/(1<<30), float64(res.ActiveBytes)/(1<<20))
				}
				if !o.SkipPrefill {
					fmt.Fprintf(w, "prefill\t%d tokens: %.1f tok/s, %.1f%% of peak (weight products alone %.1f%%), time to first token %.0f ms (first prefill of the process %.0f ms)\n", res.PromptTokens, res.PrefillTokS, 100*res.PrefillPeak, 100*res.PrefillWeightPeak, res.TTFTms, res.ColdTTFTms)
				}
				for _, p := range res.Decode {
					fmt.Fprintf(w, "decode @ %d ctx, batch %d\t%.2f tok/s, %.1f%% of bandwidth roofline (%.1f MiB/token)%s\n", p.Context, res.Batch, p.DecodeTokS, 100*p.Roofline, float64(p.BytesPerToken)/(1<<20), sampleNote(res))
					if p.Turns > 0 {
						fmt.Fprintf(w, "\t%.3f× the speed @ %d ctx (median of %d interleaved turns)\n", p.SpeedVsFirst, res.Decode[0].Context, p.Turns)
					}
				}
				if i == len(runs)-1 {
					fmt.Fprintf(w, "peak RSS\t%.0f MiB\n", res.PeakRSSMiB)
					if res.HugeFileMiB >= 0 && !res.Machine.Device {
						fmt.Fprintf(w, "huge pages\t%.0f MiB of mapped files, %.0f MiB of heap\n", res.HugeFileMiB, res.HugeAnonMiB)
						if (res.HugeFileMiB+res.HugeAnonMiB)*(1<<20) < 0.5*float64(res.WeightBytes) {
							fmt.Fprintf(w, "\tmost weights sit in 4 KiB pages, which slows decode: see \"Huge pages\" in docs/PERFORMANCE.md\n")
						}
					}
				}
				if err := w.Flush(); err != nil {
					return err
				}
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if len(results) == 1 {
					return enc.Encode(results[0])
				}
				return enc.Encode(results)
			}
			return nil
		},
	}
	mf.register(cmd, "model directory or .gguf file (default: the embedded tiny model)")
	cmd.Flags().StringVar(&prompts, "prompt", "512", "prompt tokens for the prefill measurement (a list measures each: 4k,32k)")
	cmd.Flags().IntVar(&gen, "gen", 32, "decode steps per measurement")
	cmd.Flags().StringVar(&batches, "batch", "1", "sequences decoded together (a list measures each: 1,64)")
	cmd.Flags().StringVar(&contexts, "context", "0", "context lengths for decode, e.g. 1k,8k,32k")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&interleave, "interleave", 0, "decode the --context lengths in turns of this many steps (comparisons on a machine whose speed drifts; 0: one after the other)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measurements to this file")
	cmd.Flags().BoolVar(&sampled, "sample", false, "draw each decode step's next token from its logits, inside the timed step")
	cmd.Flags().BoolVar(&hostDraw, "host-draw", false, "with --sample: draw on the host (the logits read back) where the GPU could draw")
	cmd.Flags().Float32Var(&sp.Temperature, "temperature", defaultTemperature, "with --sample: sampling temperature (0: greedy)")
	cmd.Flags().Float32Var(&sp.TopP, "top-p", 1, "with --sample: nucleus sampling (1: off)")
	cmd.Flags().IntVar(&sp.TopK, "top-k", 0, "with --sample: keep the k most likely tokens (0: off)")
	cmd.Flags().Float32Var(&sp.MinP, "min-p", 0, "with --sample: drop tokens less likely than this fraction of the most likely one (0: off)")
	rootCmd.AddCommand(cmd)
}

// sampleNote describes the draw included in the decode figures, if any.
func sampleNote(res *bench.Result) string {
	p := res.Sample
	if p == nil {
		return ""
	}
	who := "host's"
	if res.DeviceDraw {
		who = "device's"
	}
	n := fmt.Sprintf(", with the %s draw at temperature %g", who, p.Temperature)
	if p.TopP > 0 && p.TopP < 1 {
		n += fmt.Sprintf(", top-p %g", p.TopP)
	}
	if p.TopK > 0 {
		n += fmt.Sprintf(", top-k %d", p.TopK)
	}
	return n
}
