package ggufmodel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/model/bailing"
	"github.com/ringo-ai/ringo/quant"
)

// ConvertOptions configure Convert.
type ConvertOptions struct {
	// Type is the bulk tensor type, one of FileTypes (the zero value is
	// F32); see Plan for the tensors that get another type.
	Type quant.Type
	// Name is general.name (default: the base name of the model directory).
	Name string
	// Progress, if set, is called after each piece of a tensor with the
	// source bytes converted so far and their total.
	Progress func(done, total int64)
	// Note, if set, receives remarks: tensors kept in their stored type,
	// a missing tokenizer.
	Note func(string)
}

// plannedTensor is one GGUF tensor of the output: a single HF tensor or E
// stacked experts.
type plannedTensor struct {
	gguf    string
	hf      []string // one name, or one per expert
	shape   []int    // HF shape of one part ([out, in] or [n])
	typ     quant.Type
	src     quant.Type // stored type of the source (F8 reads as BF16)
	bytes   int64      // source bytes
	stacked bool       // experts stacked into one 3-D tensor
}

// Convert writes the checkpoint in dir (config.json, safetensors weights,
// tokenizer files) as a self-contained GGUF file out, tensor by tensor: each
// weight is read from the memory-mapped safetensors, converted (in pieces of
// at most a few tens of megabytes) and written, so the model is never held in
// memory. The file holds the model metadata (gguf.ModelMeta), the tokenizer
// and chat template when dir has a tokenizer.json, and every tensor the
// engine reads; multi-token-prediction layers are left out. On error the
// partial file is removed.
func Convert(ctx context.Context, dir, out string, o ConvertOptions) (err error) {
	if _, err := parseAmong(o.Type.String(), FileTypes); err != nil {
		return err
	}
	note := o.Note
	if note == nil {
		note = func(string) {}
	}
	ck, err := checkpoint.Open(dir)
	if err != nil {
		return err
	}
	defer ck.Close()
	cfg, err := bailing.ParseConfig(ck.ConfigJSON)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	meta := MetaFromConfig(cfg, ck.Generation)
	meta.Name = o.Name
	if meta.Name == "" {
		meta.Name = filepath.Base(filepath.Clean(dir))
	}
	meta.FileType = FileTypeID(o.Type)
	kvs, err := meta.KVs()
	if err != nil {
		return err
	}
	var tokEOS = -1
	dt, err := ReadDirTokenizer(dir, cfg.VocabSize)
	switch {
	case err == nil:
		tkv, err := dt.Meta.KVs()
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		kvs = append(kvs, tkv...)
		tokEOS = dt.EOS
		if dt.BOS >= 0 {
			meta.BOSTokenID = dt.BOS
			kvs = append(kvs, gguf.KV{Key: gguf.KeyBOSID, Value: uint32(dt.BOS)})
		}
	case errors.Is(err, os.ErrNotExist):
		note("no tokenizer.json: the file holds no tokenizer or chat template")
	default:
		return err
	}
	plan, err := planTensors(ck, cfg, o.Type, note)
	if err != nil {
		return err
	}

	w, err := gguf.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			w.Close()
			os.Remove(out)
		}
	}()
	if err := w.AddKVs(kvs); err != nil {
		return err
	}
	if tokEOS >= 0 { // the tokenizer's EOS; the stop ids stay in eos_token_ids
		if err := w.AddKV(gguf.KeyEOSID, uint32(tokEOS)); err != nil {
			return err
		}
	}
	if !isFloat(o.Type) {
		if err := w.AddKV(gguf.KeyQuantizationVersion, uint32(2)); err != nil {
			return err
		}
	}
	var total int64
	for _, p := range plan {
		ne := make([]int64, 0, 3)
		for i := len(p.shape) - 1; i >= 0; i-- {
			ne = append(ne, int64(p.shape[i]))
		}
		if p.stacked {
			ne = append(ne, int64(len(p.hf)))
		}
		if err := w.AddTensorInfo(p.gguf, p.typ, ne); err != nil {
			return err
		}
		total += p.bytes
	}
	var done int64
	for _, p := range plan {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeTensor(w, ck, p, func(n int64) {
			done += n
			if o.Progress != nil {
				o.Progress(done, total)
			}
		}); err != nil {
			return err
		}
	}
	return w.Close()
}

// planTensors lists the output tensors in the order bailing.Tensors gives,
// experts stacked per layer and projection, with their types.
func planTensors(ck *checkpoint.Checkpoint, cfg *bailing.Config, target quant.Type, note func(string)) ([]*plannedTensor, error) {
	specs := bailing.Tensors(cfg)
	tied := !ck.Has("lm_head.weight")
	if cfg.TieWordEmbeddings && !tied {
		specs = append(specs, bailing.TensorSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, cfg.HiddenSize}})
	}
	if !cfg.MoeRouterEnableExpertBias {
		for l := cfg.FirstKDenseReplace; l < cfg.NumHiddenLayers; l++ {
			if n := fmt.Sprintf("model.layers.%d.mlp.gate.expert_bias", l); ck.Has(n) {
				specs = append(specs, bailing.TensorSpec{Name: n, Shape: []int{cfg.NumExperts}, F32: true})
			}
		}
	}
	var plan []*plannedTensor
	stacked := map[string]*plannedTensor{}
	notes := &noteSet{}
	arch := MetaFromConfig(cfg, checkpoint.GenerationConfig{}).Arch
	for _, s := range specs {
		shape := s.Shape
		if strings.Contains(s.Name, "shared_experts.") {
			// the stored shared width may differ from the config's (see bailing.Load)
			if st := ck.Shape(s.Name); len(st) == 2 {
				shape = st
			}
		}
		hw, err := ck.Weight(s.Name, shape...)
		if err != nil {
			return nil, err
		}
		src, ok := kindType(hw)
		if !ok {
			src = quant.BF16 // FP8 is widened
		}
		g, ok := gguf.HFToGGUF(arch, s.Name)
		if !ok {
			return nil, fmt.Errorf("tensor %s has no GGUF name", s.Name)
		}
		if _, _, _, isExp := gguf.ExpertIndex(s.Name); isExp {
			if p := stacked[g]; p != nil {
				if !slices.Equal(p.shape, shape) || p.src != src {
					return nil, fmt.Errorf("%s: experts of %s differ in shape or dtype", s.Name, g)
				}
				p.hf = append(p.hf, s.Name)
				p.bytes += int64(len(hw.Data))
				continue
			}
		}
		var t quant.Type
		var n string
		if len(shape) == 1 {
			t = quant.F32 // llama.cpp keeps vectors in F32
		} else {
			t, n = Plan(s.Name, shape[0], shape[1], src, target, tied)
		}
		notes.add(n)
		p := &plannedTensor{gguf: g, hf: []string{s.Name}, shape: shape, typ: t, src: src, bytes: int64(len(hw.Data))}
		if _, _, _, isExp := gguf.ExpertIndex(s.Name); isExp {
			p.stacked = true
			stacked[g] = p
		}
		plan = append(plan, p)
	}
	for _, n := range notes.list() {
		note(n)
	}
	return plan, nil
}

// chunkRows is how many rows of a tensor are converted at once: about 16 Mi
// elements, so the buffers stay small whatever the tensor.
func chunkRows(cols int) int { return max(1, (16<<20)/max(1, cols)) }

// writeTensor streams one planned tensor into w.
func writeTensor(w *gguf.Writer, ck *checkpoint.Checkpoint, p *plannedTensor, progress func(int64)) error {
	pr, pw := io.Pipe()
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for _, name := range p.hf {
			hw, err := ck.Weight(name, p.shape...)
			if err == nil {
				err = checkHost(hw)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			rb := quant.RowBytes(p.typ, hw.Cols)
			step := chunkRows(hw.Cols)
			buf := make([]byte, min(step, hw.Rows)*rb)
			srb := int64(len(hw.Data)) / int64(hw.Rows)
			for r := 0; r < hw.Rows; r += step {
				r1 := min(r+step, hw.Rows)
				b := buf[:(r1-r)*rb]
				if err := encodeRows(hw, p.typ, r, r1, b); err != nil {
					pw.CloseWithError(fmt.Errorf("%s: %w", ck.Dir, err))
					return
				}
				if _, err := pw.Write(b); err != nil {
					return // the reader gave up; its error is reported
				}
				progress(int64(r1-r) * srb)
			}
		}
		pw.Close()
	}()
	err := w.WriteTensorFrom(p.gguf, pr)
	pr.CloseWithError(errors.New("writer stopped")) // unblocks the producer
	<-finished
	if err != nil {
		return fmt.Errorf("write %s: %w", p.gguf, err)
	}
	return nil
}
