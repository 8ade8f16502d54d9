package gguf

import (
	"strconv"
	"strings"
)

// Architecture names (general.architecture).
const (
	// ArchBailingMoE2 is llama.cpp's name for Ling/Ring 2.0
	// (BailingMoeV2ForCausalLM, HF model_type "bailing_moe").
	ArchBailingMoE2 = "bailingmoe2"
	// ArchBailingMoELinear is this project's name for Ring-linear 2.0
	// (BailingMoeLinearV2ForCausalLM, HF model_type "bailing_moe_linear").
	// llama.cpp has no such architecture (as of the version consulted); the
	// names follow bailingmoe2 plus the additions documented in NAMES.md.
	ArchBailingMoELinear = "bailingmoe_linear"
)

// ArchForHF returns the GGUF architecture name for a Hugging Face
// "architectures" entry (or model_type), and false if unknown.
func ArchForHF(hfArch string) (string, bool) {
	switch hfArch {
	case "BailingMoeV2ForCausalLM", "bailing_moe":
		return ArchBailingMoE2, true
	case "BailingMoeLinearV2ForCausalLM", "bailing_moe_linear":
		return ArchBailingMoELinear, true
	}
	return "", false
}

// Global (non-layer) tensor names.
var globalNames = map[string]string{
	"model.word_embeddings.weight": "token_embd.weight",
	"model.norm.weight":            "output_norm.weight",
	"lm_head.weight":               "output.weight",
}

// Per-layer HF suffix (after "model.layers.N.") -> GGUF suffix (after "blk.N.").
var layerNames = map[string]string{
	"input_layernorm.weight":              "attn_norm.weight",
	"attention.query_key_value.weight":    "attn_qkv.weight",
	"attention.query_layernorm.weight":    "attn_q_norm.weight",
	"attention.key_layernorm.weight":      "attn_k_norm.weight",
	"attention.dense.weight":              "attn_output.weight",
	"post_attention_layernorm.weight":     "ffn_norm.weight",
	"mlp.gate_proj.weight":                "ffn_gate.weight",
	"mlp.up_proj.weight":                  "ffn_up.weight",
	"mlp.down_proj.weight":                "ffn_down.weight",
	"mlp.gate.weight":                     "ffn_gate_inp.weight",
	"mlp.gate.expert_bias":                "exp_probs_b.bias",
	"mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
	"mlp.shared_experts.up_proj.weight":   "ffn_up_shexp.weight",
	"mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
	"mlp.experts.gate_proj.weight":        "ffn_gate_exps.weight", // stacked [E, I, D]
	"mlp.experts.up_proj.weight":          "ffn_up_exps.weight",
	"mlp.experts.down_proj.weight":        "ffn_down_exps.weight",
	"eh_proj.weight":                      "nextn.eh_proj.weight", // MTP layers
	"enorm.weight":                        "nextn.enorm.weight",
	"hnorm.weight":                        "nextn.hnorm.weight",
	"embed_tokens.weight":                 "nextn.embed_tokens.weight",
	"shared_head.head.weight":             "nextn.shared_head_head.weight",
	"shared_head.norm.weight":             "nextn.shared_head_norm.weight",
	"final_layernorm.weight":              "layer_output_norm.weight",
}

// Additional per-layer names of Ring-linear (lightning-attention layers).
var linearLayerNames = map[string]string{
	"attention.g_proj.weight": "attn_gate.weight",
	"attention.g_norm.weight": "attn_gate_norm.weight",
}

// SkipHF reports whether a Hugging Face tensor is deliberately not stored in
// GGUF (rotary caches, decay slopes, the separate MTP module).
func SkipHF(hfName string) bool {
	return strings.HasPrefix(hfName, "model.mtp") || strings.Contains(hfName, "inv_freq") ||
		strings.Contains(hfName, "slope")
}

// splitLayer parses "prefix.N.rest" and returns N and rest.
func splitLayer(name, prefix string) (int, string, bool) {
	if !strings.HasPrefix(name, prefix) {
		return 0, "", false
	}
	s := name[len(prefix):]
	dot := strings.IndexByte(s, '.')
	if dot <= 0 {
		return 0, "", false
	}
	n, err := strconv.Atoi(s[:dot])
	if err != nil || n < 0 || strconv.Itoa(n) != s[:dot] {
		return 0, "", false
	}
	return n, s[dot+1:], true
}

// ExpertIndex parses a per-expert HF name
// "model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight" and returns N, E
// and the stacked HF name "model.layers.N.mlp.experts.{proj}.weight".
func ExpertIndex(hfName string) (layer, expert int, stacked string, ok bool) {
	layer, rest, ok := splitLayer(hfName, "model.layers.")
	if !ok {
		return 0, 0, "", false
	}
	expert, proj, ok := splitLayer(rest, "mlp.experts.")
	if !ok {
		return 0, 0, "", false
	}
	switch proj {
	case "gate_proj.weight", "up_proj.weight", "down_proj.weight":
	default:
		return 0, 0, "", false
	}
	return layer, expert, "model.layers." + strconv.Itoa(layer) + ".mlp.experts." + proj, true
}

// HFToGGUF maps a Hugging Face tensor name of architecture arch (a GGUF
// architecture name, see ArchForHF) to its GGUF name. Per-expert tensors
// ("mlp.experts.E.gate_proj.weight") map to the stacked 3-D tensor
// ("blk.N.ffn_gate_exps.weight"); use ExpertIndex to find E. ok is false for
// unknown names and for tensors that are not stored (SkipHF).
func HFToGGUF(arch, hfName string) (ggufName string, ok bool) {
	if arch != ArchBailingMoE2 && arch != ArchBailingMoELinear {
		return "", false
	}
	if SkipHF(hfName) {
		return "", false
	}
	if g, ok := globalNames[hfName]; ok {
		return g, true
	}
	if _, _, stacked, ok := ExpertIndex(hfName); ok {
		hfName = stacked
	}
	layer, rest, ok := splitLayer(hfName, "model.layers.")
	if !ok {
		return "", false
	}
	g, ok := layerNames[rest]
	if !ok && arch == ArchBailingMoELinear {
		g, ok = linearLayerNames[rest]
	}
	if !ok {
		return "", false
	}
	return "blk." + strconv.Itoa(layer) + "." + g, true
}

// GGUFToHF is the inverse of HFToGGUF (stacked expert tensors map to the
// stacked HF-style name "model.layers.N.mlp.experts.gate_proj.weight").
func GGUFToHF(arch, ggufName string) (hfName string, ok bool) {
	if arch != ArchBailingMoE2 && arch != ArchBailingMoELinear {
		return "", false
	}
	for h, g := range globalNames {
		if g == ggufName {
			return h, true
		}
	}
	layer, rest, ok := splitLayer(ggufName, "blk.")
	if !ok {
		return "", false
	}
	find := func(m map[string]string) (string, bool) {
		for h, g := range m {
			if g == rest {
				return "model.layers." + strconv.Itoa(layer) + "." + h, true
			}
		}
		return "", false
	}
	if h, ok := find(layerNames); ok {
		return h, true
	}
	if arch == ArchBailingMoELinear {
		return find(linearLayerNames)
	}
	return "", false
}
