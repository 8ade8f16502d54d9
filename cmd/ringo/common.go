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
}

func (f *modelFlags) register(cmd *cobra.Command, modelUsage string) {
	cmd.Flags().StringVar(&f.model, "model", "", modelUsage)
	cmd.Flags().StringVar(&f.device, "device", "cpu", "compute device: cpu, cuda or cuda:N")
	cmd.Flags().IntVar(&f.threads, "threads", 0, "CPU threads (0: all cores)")
	cmd.Flags().StringVar(&f.decay, "decay-convention", "", "lightning decay layer factor: sglang (default), hf or mlx (env RINGO_DECAY_CONVENTION)")
}

func (f *modelFlags) options() engine.Options {
	return engine.Options{Device: f.device, Threads: f.threads, Decay: f.decay}
}
