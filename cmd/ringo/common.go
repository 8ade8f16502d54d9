package main

import (
	"github.com/ringo-ai/ringo/engine"
	"github.com/spf13/cobra"
)

// modelFlags are the flags every command that loads a model shares.
type modelFlags struct {
	model   string
	device  string
	threads int
	decay   string
	// quantize is the quantize-on-load type ("" keeps the stored weights).
	quantize string
	precise  bool
	kvCache  string
	noMmap   bool
	// batchRows bounds the rows of one forward pass (0: the engine's
	// default for the device).
	batchRows int
}

func (f *modelFlags) register(cmd *cobra.Command, modelUsage string) {
	cmd.Flags().StringVar(&f.model, "model", "", modelUsage)
	cmd.Flags().StringVar(&f.device, "device", "cpu", "compute device: cpu, cuda or cuda:N")
	cmd.Flags().IntVar(&f.threads, "threads", 0, "CPU threads (0: all cores)")
	cmd.Flags().StringVar(&f.decay, "decay-convention", "", "lightning decay layer factor: sglang (default), hf or mlx (env RINGO_DECAY_CONVENTION)")
	cmd.Flags().StringVar(&f.quantize, "quantize", "", "quantize weights while loading: Q8_0, Q6_K, Q4_K, Q4_0, or FP8 (E4M3, 128×128 block scales; kept in FP8 by the CUDA backend) (default: as stored)")
	cmd.Flags().BoolVar(&f.precise, "precise", false, "GPU: float32 matrix products everywhere instead of BF16 tensor cores")
	cmd.Flags().StringVar(&f.kvCache, "kv-cache", "f32", "KV cache type of the softmax layers: f32 (exact), f16 (half the memory) or q8_0 (0.27 of the memory, fastest at long context on the CPU)")
	cmd.Flags().BoolVar(&f.noMmap, "no-mmap", false, "CPU: copy the weights into memory (each expert's matrices side by side) instead of reading them from the mapped file: faster decode, but the process holds the weights' size in RAM")
	cmd.Flags().IntVar(&f.batchRows, "batch-rows", 0, "rows per forward pass; longer prompts are prefilled in passes of this many tokens (0: 512 on the CPU; on a GPU 32768, or 8192 for serve and on GPUs under 64 GiB)")
}

func (f *modelFlags) options() engine.Options {
	return engine.Options{Device: f.device, Threads: f.threads, Decay: f.decay, Quantize: f.quantize, Precise: f.precise, KVCache: f.kvCache, NoMmap: f.noMmap,
		MaxBatchRows: f.batchRows}
}
