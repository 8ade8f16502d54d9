package ggufmodel

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/ringo-ai/ringo/quant"
)

// LoadTypes are the block formats accepted for quantize-on-load
// (engine.Options.Quantize, --quantize).
var LoadTypes = []quant.Type{quant.Q8_0, quant.Q6_K, quant.Q4_K, quant.Q4_0}

// FileTypes are the tensor types accepted by Convert (ringo quantize --type).
var FileTypes = []quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q8_0, quant.Q6_K, quant.Q4_K, quant.Q4_0}

func parseAmong(s string, allowed []quant.Type) (quant.Type, error) {
	t, err := quant.ParseType(s)
	if err == nil {
		for _, a := range allowed {
			if a == t {
				return t, nil
			}
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = a.String()
	}
	return 0, fmt.Errorf("quantization type %q: want one of %s", s, strings.Join(names, ", "))
}

// ParseLoadType parses a quantize-on-load type name (Q8_0, Q6_K, Q4_K or
// Q4_0, case-insensitive).
func ParseLoadType(s string) (quant.Type, error) { return parseAmong(s, LoadTypes) }

// ParseFileType parses a Convert output type name (F32, F16, BF16, Q8_0,
// Q6_K, Q4_K or Q4_0, case-insensitive).
func ParseFileType(s string) (quant.Type, error) { return parseAmong(s, FileTypes) }

// isFloat reports whether t is a plain float type.
func isFloat(t quant.Type) bool { return t == quant.F32 || t == quant.F16 || t == quant.BF16 }

// FileTypeID returns the llama.cpp general.file_type (enum llama_ftype) of a
// file whose bulk weights are t (Q4_K files use the "Q4_K_S" id: bulk Q4_K
// with a Q6_K output, as written by Convert).
func FileTypeID(t quant.Type) uint32 {
	switch t {
	case quant.F16:
		return 1
	case quant.Q4_0:
		return 2
	case quant.Q8_0:
		return 7
	case quant.Q4_K:
		return 14
	case quant.Q6_K:
		return 18
	case quant.BF16:
		return 32
	}
	return 0 // all F32
}

// Role classifies a tensor for the type policy.
type Role int

// Tensor roles.
const (
	RoleVector Role = iota // 1-D: norms, expert bias
	RoleRouter             // mlp.gate.weight: the MoE router, kept in high precision
	RoleOutput             // lm_head (or the tied embedding table)
	RoleEmbed              // model.word_embeddings.weight
	RoleMatrix             // every other 2-D weight
)

// RoleOf returns the role of a Hugging Face tensor; tied says the embedding
// table is also the output projection (no lm_head).
func RoleOf(name string, rows int, tied bool) Role {
	switch {
	case rows <= 1:
		return RoleVector
	case strings.HasSuffix(name, ".mlp.gate.weight"):
		return RoleRouter
	case name == "lm_head.weight":
		return RoleOutput
	case name == "model.word_embeddings.weight":
		if tied {
			return RoleOutput
		}
		return RoleEmbed
	}
	return RoleMatrix
}

// Plan returns the type a weight is stored in when the model is quantized to
// target, following llama.cpp's habits:
//
//   - 1-D tensors (norms, expert bias) and the router (mlp.gate.weight) keep
//     their type (src);
//   - weights that are already block-quantized keep their type;
//   - the output projection (lm_head, or a tied embedding table) is Q6_K
//     unless the target is Q8_0 or Q6_K;
//   - everything else, the embedding table included, becomes target;
//   - if the columns are not a multiple of the chosen type's block size
//     (K-quants need 256) the weight keeps src, and note says so.
//
// For a float target (F32, F16, BF16) every 2-D weight becomes target. src
// is the stored type (quant.F32, F16, BF16, or a block type).
func Plan(name string, rows, cols int, src, target quant.Type, tied bool) (t quant.Type, note string) {
	role := RoleOf(name, rows, tied)
	if role == RoleVector {
		return src, ""
	}
	if isFloat(target) {
		return target, ""
	}
	if role == RoleRouter || !isFloat(src) {
		return src, ""
	}
	want := target
	if role == RoleOutput && target != quant.Q8_0 && target != quant.Q6_K {
		want = quant.Q6_K
	}
	if bs := quant.BlockSize(want); cols%bs != 0 {
		return src, fmt.Sprintf("%s: %d columns are not a multiple of the %v block size %d; kept as %v", name, cols, want, bs, src)
	}
	return want, ""
}

var digits = regexp.MustCompile(`\.[0-9]+\.`)

// notePattern folds layer and expert numbers out of a note so that
// repeated notes can be counted ("model.layers.N.mlp.experts.N....").
func notePattern(note string) string {
	for {
		n := digits.ReplaceAllString(note, ".N.")
		if n == note {
			return n
		}
		note = n
	}
}

// noteSet collects notes folded by pattern, in first-seen order.
type noteSet struct {
	order []string
	count map[string]int
}

func (s *noteSet) add(note string) {
	if note == "" {
		return
	}
	p := notePattern(note)
	if s.count == nil {
		s.count = map[string]int{}
	}
	if s.count[p] == 0 {
		s.order = append(s.order, p)
	}
	s.count[p]++
}

func (s *noteSet) list() []string {
	out := make([]string, len(s.order))
	for i, p := range s.order {
		if n := s.count[p]; n > 1 {
			out[i] = fmt.Sprintf("%s (%d tensors)", p, n)
		} else {
			out[i] = p
		}
	}
	return out
}
