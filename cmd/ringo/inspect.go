package main

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/spf13/cobra"
)

func init() {
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Print a checkpoint's architecture, layer layout, parameter counts, dtypes and memory needs",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ck, err := checkpoint.Open(args[0])
			if err != nil {
				return err
			}
			defer ck.Close()
			cfg, err := bailing.ParseConfig(ck.ConfigJSON)
			if err != nil {
				return err
			}
			return inspect(ck, cfg)
		},
	}
	rootCmd.AddCommand(cmd)
}

// gib formats a byte count.
func gib(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// count formats a parameter count.
func count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.3f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.3f M", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1f K", float64(n)/1e3)
}

func inspect(ck *checkpoint.Checkpoint, c *bailing.Config) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "directory\t%s\n", ck.Dir)
	fmt.Fprintf(w, "architecture\t%s (%s)\n", c.Architectures[0], c.ModelType)
	fmt.Fprintf(w, "layers\t%d (%d lightning, %d softmax)\n", c.NumHiddenLayers, c.LinearLayerCount(), c.SoftmaxLayerCount())
	var layout strings.Builder
	for l := 0; l < c.NumHiddenLayers; l++ {
		switch {
		case c.IsLinearLayer(l):
			layout.WriteByte('L')
		default:
			layout.WriteByte('S')
		}
	}
	fmt.Fprintf(w, "layout\t%s  (L = lightning/linear, S = softmax; layers 0..%d)\n", layout.String(), c.NumHiddenLayers-1)
	fmt.Fprintf(w, "hidden / heads / kv heads / head dim\t%d / %d / %d / %d (rotary %d, theta %g)\n", c.HiddenSize, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.RopeDim(), c.RopeTheta)
	fmt.Fprintf(w, "ffn\t%d dense layer(s) (%d), %d experts top-%d in %d groups keep %d, %d shared, expert width %d\n", c.FirstKDenseReplace, c.IntermediateSize, c.NumExperts, c.NumExpertsPerTok, c.NGroup, c.TopkGroup, c.NumSharedExperts, c.MoeIntermediateSize)
	total, active, emb := bailing.ParamCounts(c)
	fmt.Fprintf(w, "parameters\t%s total, %s active per token (%s without the output layer), embedding %s\n",
		count(total), count(active), count(active-emb), count(emb))
	dtypes := map[string]int64{}
	var weightBytes int64
	for _, name := range ck.Tensors.Names() {
		t := ck.Tensors.Tensor(name)
		dtypes[t.DType.String()] += int64(t.Elems())
		weightBytes += int64(len(t.Data))
	}
	var ds []string
	for k, v := range dtypes {
		ds = append(ds, k+" "+count(v))
	}
	sort.Strings(ds)
	fmt.Fprintf(w, "dtypes\t%s\n", strings.Join(ds, ", "))
	fmt.Fprintf(w, "weights\t%s in %d file(s), memory-mapped\n", gib(weightBytes), len(ck.Tensors.Files))
	state := int64(c.LinearLayerCount()) * int64(c.NumAttentionHeads*c.HeadDim*c.HeadDim) * 4
	kv := int64(c.SoftmaxLayerCount()) * int64(2*c.NumKeyValueHeads*c.HeadDim) * 4
	fmt.Fprintf(w, "per sequence\t%s linear state + %s KV cache per token (float32)\n", gib(state), gib(kv))
	for _, ctx := range slices.Compact([]int64{4096, int64(c.MaxPositionEmbeddings)}) {
		fmt.Fprintf(w, "memory, 1 sequence of %d tokens\t%s (weights + state + KV cache)\n", ctx, gib(weightBytes+state+ctx*kv))
	}
	return w.Flush()
}
