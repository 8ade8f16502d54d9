// Package ggufmodel runs Ling 2.0 / Ring-linear 2.0 models stored in GGUF
// files and writes such files from Hugging Face checkpoints.
//
// It provides:
//
//   - Source, a checkpoint.Source over a gguf.File that hands out weights by
//     their Hugging Face names (mapped with gguf.HFToGGUF; stacked expert
//     tensors are split into per-expert views of the mapped bytes);
//   - ConfigJSON, which rebuilds the config.json that bailing.Load expects
//     from the GGUF metadata, so the model code is the same for both formats;
//   - Tokenizer and ChatTemplate, which build the tokenizer and chat template
//     from tokenizer.ggml.* metadata and tokenizer.chat_template;
//   - Quantizing, a Source wrapper that converts weights to a llama.cpp block
//     format while they are loaded (quantize-on-load), with the tensor type
//     policy of Plan;
//   - Convert, which streams a checkpoint directory into a self-contained
//     GGUF file tensor by tensor.
//
// The GGUF tensor and metadata names are documented in gguf/NAMES.md.
package ggufmodel

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/quant"
)

// IsGGUF reports whether path names a GGUF file: it ends in ".gguf" and is
// not a directory.
func IsGGUF(path string) bool {
	if !strings.EqualFold(filepath.Ext(path), ".gguf") {
		return false
	}
	st, err := os.Stat(path)
	return err != nil || !st.IsDir()
}

// Source is a checkpoint.Source over an open GGUF file of architecture
// bailingmoe2 or bailingmoe_linear. Weights are slices of the file mapping
// and stay valid until the file is closed.
type Source struct {
	f    *gguf.File
	arch string
}

var _ checkpoint.Source = (*Source)(nil)

// NewSource returns a Source for f, whose tensors are named as for the GGUF
// architecture arch (gguf.ArchBailingMoE2 or gguf.ArchBailingMoELinear).
func NewSource(f *gguf.File, arch string) (*Source, error) {
	if arch != gguf.ArchBailingMoE2 && arch != gguf.ArchBailingMoELinear {
		return nil, fmt.Errorf("%s: unsupported GGUF architecture %q", f.Path, arch)
	}
	return &Source{f: f, arch: arch}, nil
}

// File returns the underlying GGUF file.
func (s *Source) File() *gguf.File { return s.f }

// lookup resolves a Hugging Face name to its GGUF tensor and, for a
// per-expert name, the expert index (-1 otherwise).
func (s *Source) lookup(name string) (t *gguf.TensorInfo, expert int, ggufName string, err error) {
	g, ok := gguf.HFToGGUF(s.arch, name)
	if !ok {
		return nil, -1, "", fmt.Errorf("%s: tensor %s has no GGUF name for architecture %s", s.f.Path, name, s.arch)
	}
	expert = -1
	if _, e, _, ok := gguf.ExpertIndex(name); ok {
		expert = e
	}
	t = s.f.Tensor(g)
	if t == nil {
		return nil, expert, g, fmt.Errorf("%s: tensor %s (GGUF %s) is missing", s.f.Path, name, g)
	}
	return t, expert, g, nil
}

// hfShape converts a GGUF shape (ggml order) to the Hugging Face shape of
// one tensor: reversed, and without the expert dimension for an expert.
func hfShape(t *gguf.TensorInfo, expert int) ([]int, error) {
	ne := t.Shape
	if expert >= 0 {
		if len(ne) != 3 {
			return nil, fmt.Errorf("stacked expert tensor has %d dimensions %v, want 3 ([in, out, n_expert])", len(ne), ne)
		}
		if int64(expert) >= ne[2] {
			return nil, fmt.Errorf("expert %d out of range: the stacked tensor holds %d experts", expert, ne[2])
		}
		ne = ne[:2]
	}
	out := make([]int, len(ne))
	for i, d := range ne {
		out[len(ne)-1-i] = int(d)
	}
	return out, nil
}

// Has implements checkpoint.Source.
func (s *Source) Has(name string) bool {
	t, e, _, err := s.lookup(name)
	if err != nil {
		return false
	}
	_, err = hfShape(t, e)
	return err == nil
}

// Shape implements checkpoint.Source: the Hugging Face shape ([out, in] for
// matrices) of the named tensor, nil if it is missing.
func (s *Source) Shape(name string) []int {
	t, e, _, err := s.lookup(name)
	if err != nil {
		return nil
	}
	sh, err := hfShape(t, e)
	if err != nil {
		return nil
	}
	return sh
}

// Weight implements checkpoint.Source. shape is the Hugging Face shape
// ([out, in]); the GGUF tensor must have the reversed shape (with the expert
// count appended for stacked experts). The returned Data is a slice of the
// file mapping.
func (s *Source) Weight(name string, shape ...int) (backend.HostWeight, error) {
	t, e, g, err := s.lookup(name)
	if err != nil {
		return backend.HostWeight{}, err
	}
	fail := func(format string, args ...any) (backend.HostWeight, error) {
		return backend.HostWeight{}, fmt.Errorf("%s: tensor %s (GGUF %s): %s", s.f.Path, name, g, fmt.Sprintf(format, args...))
	}
	have, err := hfShape(t, e)
	if err != nil {
		return fail("%v", err)
	}
	if len(shape) < 1 || len(shape) > 2 {
		return fail("requested shape %v must have 1 or 2 dimensions", shape)
	}
	if !slices.Equal(have, shape) {
		return fail("has shape %v (ggml ne %v), want %v", have, t.Shape, shape)
	}
	hw := backend.HostWeight{Name: name, Rows: 1, Cols: shape[0]}
	if len(shape) == 2 {
		hw.Rows, hw.Cols = shape[0], shape[1]
	}
	switch t.Type {
	case quant.F32:
		hw.Kind = backend.F32
	case quant.F16:
		hw.Kind = backend.F16
	case quant.BF16:
		hw.Kind = backend.BF16
	default:
		if !t.Type.Supported() || t.Type == quant.Q8_K {
			return fail("unsupported tensor type %v", t.Type)
		}
		hw.Kind = backend.Quant
		hw.QType = uint32(t.Type)
	}
	if hw.Cols%quant.BlockSize(t.Type) != 0 {
		return fail("%d columns are not a multiple of the %v block size %d", hw.Cols, t.Type, quant.BlockSize(t.Type))
	}
	size, err := quant.TensorBytes(t.Type, int64(hw.Rows)*int64(hw.Cols))
	if err != nil {
		return fail("%v", err)
	}
	off := int64(0)
	if e >= 0 {
		off = int64(e) * size
	}
	if off+size > int64(len(t.Data)) {
		return fail("data of %d bytes too short for %d bytes at %d", len(t.Data), size, off)
	}
	hw.Data = t.Data[off : off+size : off+size]
	return hw, nil
}
