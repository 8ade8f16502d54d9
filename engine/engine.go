// Package engine loads a model (a Hugging Face directory or a GGUF file) onto
// a backend and generates text tokens from it.
package engine

import (
	"context"
	"fmt"

	"github.com/ringo-ai/ringo/backend"
	_ "github.com/ringo-ai/ringo/backend/cpu" // the default backend
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/ggufmodel"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/sample"
)

// Rows per forward pass on a GPU by default (the model's default, 512, suits
// the CPU): long prompts are prefilled in passes of this many tokens. Larger
// passes feed the grouped expert GEMMs more rows per expert (a 32K prompt
// prefills 8 % faster in one pass of 32768 rows than in four of 8192 on an
// H200; docs/GPU.md), but a pass holds up every other stream's next token
// for its whole length, and its activations take several GiB. So
// GPUBatchRows is the default for one stream (run, chat, bench, logits) on
// GPUs of at least GPUBigMemory bytes, and GPUSharedBatchRows for serving
// (Options.Serving) and on smaller GPUs.
const (
	GPUBatchRows       = 32768
	GPUSharedBatchRows = 8192
	GPUBigMemory       = 64 << 30
)

// Options configure Load.
type Options struct {
	Device       string // "cpu" (default), "cuda", "cuda:N"
	Threads      int    // CPU threads (0: all)
	Decay        string // lightning decay convention ("" = $RINGO_DECAY_CONVENTION or sglang)
	MaxBatchRows int    // rows per forward pass (0: the default for the device, see GPUBatchRows)
	// Serving says that concurrent streams share the forward passes (ringo
	// serve): shorter passes by default on a GPU, see GPUSharedBatchRows.
	Serving bool
	// Quantize converts weights while loading: "" keeps them as stored,
	// "Q8_0", "Q6_K", "Q4_K" or "Q4_0" quantize the 2-D weights (the router,
	// norms and biases keep their type; lm_head becomes Q6_K for the 4-bit
	// types; see ggufmodel.Plan). "FP8" makes the bulk matrices E4M3 with
	// 128×128 block scales (see ggufmodel.QuantizingByName): the CUDA
	// backend keeps and multiplies them in FP8, the CPU backend widens them.
	Quantize string
	// Precise asks GPU backends for float32 products everywhere.
	Precise bool
	// KVCache is the KV cache type: "f32" (default), "f16" or "q8_0"
	// (see backend.Options.KVCache).
	KVCache string
	// NoMmap copies the weights into the CPU backend's memory instead of
	// reading them from the memory-mapped file (backend.Options.NoMmap).
	NoMmap bool
}

// Loaded is a model ready to run, with the checkpoint it came from.
type Loaded struct {
	model.Model
	Dir        string                 // the model directory or GGUF file
	Checkpoint *checkpoint.Checkpoint // nil for a GGUF file
	GGUF       *ggufmodel.Model       // nil for a model directory
	Backend    backend.Backend
	// Notes are remarks about loading, e.g. weights left unquantized or a
	// model file mapped in small pages; commands print them.
	Notes []string
}

// Close releases the model and unmaps its files.
func (l *Loaded) Close() error {
	l.Model.Close()
	if l.GGUF != nil {
		return l.GGUF.Close()
	}
	return l.Checkpoint.Close()
}

// WarmTokens is the length of the prompt Warm runs.
const WarmTokens = 64

// Warm runs a short prompt (WarmTokens tokens) and two decode steps on a
// state it then frees, so that the first request does not pay the one-time
// costs of the first forward passes: buffers allocated, GPU kernels and
// library plans loaded on first use, decode steps captured as CUDA graphs,
// and on the CPU the first touch of the weights. It changes nothing else.
func (l *Loaded) Warm(ctx context.Context) error {
	info := l.Info()
	n := min(WarmTokens, max(1, info.MaxContext-2))
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32((i*7919 + 11) % max(1, info.VocabSize))
	}
	st := l.NewState()
	defer st.Free()
	req := &model.Request{State: st, Tokens: toks}
	for step := 0; step < 3; step++ {
		if err := l.Forward(ctx, []*model.Request{req}); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		req.Tokens = toks[:1]
	}
	return nil
}

// Load opens a Hugging Face model directory, or a GGUF file (a path ending
// in .gguf), and builds the model on the chosen backend.
func Load(dir string, o Options) (*Loaded, error) {
	conv, err := bailing.ParseDecayConvention(o.Decay)
	if err != nil {
		return nil, err
	}
	if o.MaxBatchRows < 0 {
		return nil, fmt.Errorf("rows per forward pass: %d (want 0 for the default, or more)", o.MaxBatchRows)
	}
	dev := o.Device
	if dev == "" {
		dev = "cpu"
	}
	// with NoMmap, the mapped GGUF file's pages of each copied weight are
	// released as loading goes (the file is opened below)
	var mapped *gguf.File
	copied := func(src []byte) {
		if mapped != nil {
			mapped.DropRange(src)
		}
	}
	b, err := backend.Open(dev, backend.Options{Threads: o.Threads, Precise: o.Precise, KVCache: o.KVCache, NoMmap: o.NoMmap, Copied: copied})
	if err != nil {
		return nil, err
	}
	l := &Loaded{Dir: dir, Backend: b}
	var (
		cfgJSON []byte
		gen     checkpoint.GenerationConfig
		src     checkpoint.Source
		closer  func() error
	)
	if ggufmodel.IsGGUF(dir) {
		if l.GGUF, err = ggufmodel.Open(dir); err != nil {
			return nil, err
		}
		cfgJSON, gen, src, closer = l.GGUF.ConfigJSON, l.GGUF.Generation, l.GGUF.Source, l.GGUF.Close
		mapped = l.GGUF.File
		if b.Name() == "cpu" && !o.NoMmap {
			// the CPU reads the weights from the mapping on every token
			if share, ok := l.GGUF.File.HugePageShare(64); ok && share < 0.5 {
				l.Notes = append(l.Notes, fmt.Sprintf("%s: only %.0f%% of the sampled weights are mapped with 2 MiB pages (the file is cached in small pieces); "+
					"decode is up to 1.5x slower until the file leaves the page cache, e.g. dd if=FILE iflag=nocache count=0 (docs/PERFORMANCE.md, \"CPU: huge pages\")", dir, 100*share))
			}
		}
	} else {
		if l.Checkpoint, err = checkpoint.Open(dir); err != nil {
			return nil, err
		}
		cfgJSON, gen, src, closer = l.Checkpoint.ConfigJSON, l.Checkpoint.Generation, l.Checkpoint, l.Checkpoint.Close
	}
	var qs *ggufmodel.QuantizingSource
	if o.Quantize != "" {
		qs, err = ggufmodel.QuantizingByName(src, o.Quantize)
		if err != nil {
			closer()
			return nil, err
		}
		src = qs
	}
	rows := o.MaxBatchRows
	if rows == 0 && b.Name() != "cpu" {
		rows = GPUSharedBatchRows
		if dm, ok := b.(backend.DeviceMemory); ok && !o.Serving {
			if _, total := dm.Memory(); total >= GPUBigMemory {
				rows = GPUBatchRows
			}
		}
	}
	m, err := bailing.Load(cfgJSON, gen, src, b, bailing.Options{Decay: conv, MaxBatchRows: rows})
	if err != nil {
		closer()
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	l.Model = m
	if qs != nil {
		l.Notes = qs.Notes()
	}
	if o.NoMmap && b.Name() == "cpu" && l.GGUF != nil {
		// the weights were copied: the mapped file's pages need not stay
		// in this process (they stay in the page cache, clean)
		if err := l.GGUF.File.DropPages(); err != nil {
			l.Notes = append(l.Notes, fmt.Sprintf("%s: releasing the mapped file's pages: %v", dir, err))
		}
	}
	return l, nil
}

// Finish says why generation stopped.
type Finish string

// Finish reasons, as in OpenAI's API.
const (
	FinishStop   Finish = "stop"   // an end-of-sequence token
	FinishLength Finish = "length" // the token limit
)

// GenerateOptions configure Generate.
type GenerateOptions struct {
	MaxTokens int             // stop after this many tokens (0: until EOS or the context is full)
	Sampler   *sample.Sampler // nil: greedy
	Stop      []int32         // ids that end generation (nil: the model's EOS ids)
	// OnToken is called with each generated token and the logits it was
	// sampled from (nil where the backend drew the token, unless Logits);
	// returning false stops generation (FinishStop).
	OnToken func(id int32, logits []float32) bool
	// Logits keeps every draw on the host, so that OnToken gets the logits.
	// Otherwise a backend that can draws the tokens where the logits are
	// (backend.Drawer, sample.Sampler.Plan: every draw without penalties):
	// the same tokens for a seed, without reading the logits back.
	Logits bool
}

// Generate appends prompt to st (which may already hold earlier tokens) and
// samples tokens until a stop id, MaxTokens or the context limit. Stop ids
// are reported to OnToken but not included in the returned tokens.
func Generate(ctx context.Context, m model.Model, st model.State, prompt []int32, o GenerateOptions) ([]int32, Finish, error) {
	info := m.Info()
	stop := o.Stop
	if stop == nil {
		stop = info.EOS
	}
	smp := o.Sampler
	if smp == nil {
		smp = sample.New(sample.Params{})
	}
	smp.AcceptPrompt(prompt)
	req := &model.Request{State: st, Tokens: prompt}
	var draw model.Draw
	var out []int32
	for {
		if info.MaxContext > 0 && st.Len()+len(req.Tokens) > info.MaxContext {
			return out, FinishLength, nil
		}
		req.Draw = nil
		if d, ok := smp.Plan(); ok && !o.Logits {
			req.Draw = &draw
			draw = model.Draw(d)
		}
		if err := m.Forward(ctx, []*model.Request{req}); err != nil {
			return out, "", err
		}
		id, logits := req.Token, []float32(nil)
		if !req.Drawn {
			id, logits = smp.Sample(req.Logits), req.Logits
		}
		smp.Accept(id)
		if o.OnToken != nil && !o.OnToken(id, logits) {
			return out, FinishStop, nil
		}
		for _, s := range stop {
			if id == s {
				return out, FinishStop, nil
			}
		}
		out = append(out, id)
		if o.MaxTokens > 0 && len(out) >= o.MaxTokens {
			return out, FinishLength, nil
		}
		req.Tokens = []int32{id}
	}
}
