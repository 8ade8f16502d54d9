package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/spf13/cobra"
)

func init() {
	var mf modelFlags
	var types string
	var tokens int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "quality --model DIR|FILE.gguf [--types Q8_0,Q6_K,Q4_K,Q4_0] [--tokens N]",
		Short: "Measure how much quantization changes a model's next-token distributions",
		Long: `Run a fixed random-token prompt through the model as stored (or quantized
with --quantize) and through each quantized variant (quantize-on-load, the
same conversion ringo quantize writes), and report per type: the weight
bytes, the relative RMS error of the converted weights, the top-1 agreement
of the next-token predictions and the mean and largest KL(reference ‖ quant)
over all prompt positions. See docs/QUANTIZATION.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if mf.model == "" {
				return fmt.Errorf("--model is required")
			}
			var ts []string
			for _, s := range strings.Split(types, ",") {
				if s = strings.TrimSpace(s); s == "" {
					continue
				}
				if err := ggufmodel.CheckLoadName(s); err != nil {
					return fmt.Errorf("--types: %w", err)
				}
				ts = append(ts, s)
			}
			if tokens < 1 {
				return fmt.Errorf("--tokens must be positive")
			}
			return runQuality(cmd.Context(), os.Stdout, mf, ts, tokens, seed)
		},
	}
	mf.register(cmd, "model directory or GGUF file")
	cmd.Flags().StringVar(&types, "types", "Q8_0,Q6_K,Q4_K,Q4_0", "comma-separated quantization types to compare")
	cmd.Flags().IntVar(&tokens, "tokens", 128, "length of the random prompt")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed of the random prompt")
	rootCmd.AddCommand(cmd)
}

// qualityModel is a model loaded for a quality run.
type qualityModel struct {
	m     *bailing.Model
	qs    *ggufmodel.QuantizingSource // nil when not quantized
	close func() error
}

// loadQualityModel loads path (a model directory or GGUF file), quantized on
// load to q unless q is "", measuring the weight error.
func loadQualityModel(path string, mf modelFlags, q string) (*qualityModel, error) {
	conv, err := bailing.ParseDecayConvention(mf.decay)
	if err != nil {
		return nil, err
	}
	dev := mf.device
	if dev == "" {
		dev = "cpu"
	}
	b, err := backend.Open(dev, backend.Options{Threads: mf.threads})
	if err != nil {
		return nil, err
	}
	var (
		cfgJSON []byte
		gen     checkpoint.GenerationConfig
		src     checkpoint.Source
		qm      = &qualityModel{}
	)
	if ggufmodel.IsGGUF(path) {
		g, err := ggufmodel.Open(path)
		if err != nil {
			return nil, err
		}
		cfgJSON, gen, src, qm.close = g.ConfigJSON, g.Generation, g.Source, g.Close
	} else {
		ck, err := checkpoint.Open(path)
		if err != nil {
			return nil, err
		}
		cfgJSON, gen, src, qm.close = ck.ConfigJSON, ck.Generation, ck, ck.Close
	}
	if q != "" {
		qm.qs, err = ggufmodel.QuantizingByName(src, q)
		if err != nil {
			qm.close()
			return nil, err
		}
		qm.qs.Measure(true)
		src = qm.qs
	}
	if qm.m, err = bailing.Load(cfgJSON, gen, src, b, bailing.Options{Decay: conv}); err != nil {
		qm.close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return qm, nil
}

// promptLogits returns the logits of every position of prompt.
func promptLogits(ctx context.Context, m model.Model, prompt []int32) ([]float32, error) {
	st := m.NewState()
	defer st.Free()
	req := &model.Request{State: st, Tokens: prompt, All: true}
	if err := m.Forward(ctx, []*model.Request{req}); err != nil {
		return nil, err
	}
	return req.Logits, nil
}

// runQuality prints the quality table of ringo quality.
func runQuality(ctx context.Context, w io.Writer, mf modelFlags, types []string, tokens int, seed uint64) error {
	start := time.Now()
	ref, err := loadQualityModel(mf.model, mf, mf.quantize)
	if err != nil {
		return err
	}
	info := ref.m.Info()
	V := info.VocabSize
	prompt := ggufmodel.RandomPrompt(tokens, V, seed)
	want, err := promptLogits(ctx, ref.m, prompt)
	ref.close()
	if err != nil {
		return err
	}
	refName := "as stored"
	if mf.quantize != "" {
		refName = strings.ToUpper(mf.quantize) + " on load"
	}
	fmt.Fprintf(w, "model %s, reference %s (%.2f MiB of weights), %d random tokens (seed %d), vocabulary %d\n",
		mf.model, refName, float64(info.WeightBytes)/(1<<20), tokens, seed, V)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var notes []string // per type: weights kept unquantized
	fmt.Fprintln(tw, "type\tweights MiB\tweight rel. RMSE\ttop-1 agree\tmean KL\tmax KL\t")
	for _, t := range types {
		if err := ctx.Err(); err != nil {
			return err
		}
		qm, err := loadQualityModel(mf.model, mf, t)
		if err != nil {
			return err
		}
		got, err := promptLogits(ctx, qm.m, prompt)
		mib := float64(qm.m.Info().WeightBytes) / (1 << 20)
		werr := qm.qs.WeightError()
		if ns := qm.qs.Notes(); len(ns) > 0 {
			notes = append(notes, fmt.Sprintf("note (%v): %d kinds of weights kept as stored (columns not a multiple of the block size), e.g. %s", t, len(ns), ns[0]))
		}
		qm.close()
		if err != nil {
			return err
		}
		a, err := ggufmodel.CompareLogits(want, got, V)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%v\t%.2f\t%.4f\t%.1f%%\t%.4g\t%.4g\t\n", t, mib, werr, 100*a.Top1, a.MeanKL, a.MaxKL)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(os.Stderr, n)
	}
	fmt.Fprintf(w, "(%.1fs)\n", time.Since(start).Seconds())
	return nil
}
