package ggufmodel

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/gguf"
	"github.com/ringo-ai/ringo/model/bailing"
)

// Model is an open GGUF model file: its metadata, a weight Source and the
// equivalent of a Hugging Face config.json and generation_config.json, ready
// for bailing.Load.
type Model struct {
	// Path is the file name.
	Path string
	// File is the parsed, memory-mapped file.
	File *gguf.File
	// Meta are the model hyper-parameters read from the metadata.
	Meta *gguf.ModelMeta
	// Source hands out the weights by Hugging Face name.
	Source *Source
	// ConfigJSON is a config.json synthesized from Meta (see ConfigJSON).
	ConfigJSON []byte
	// Generation holds the stop ids (all of Meta.EOSTokenIDs) and bos/pad ids.
	Generation checkpoint.GenerationConfig
}

// Open memory-maps a GGUF model file and reads its model metadata. The
// weights are not touched until Source.Weight is called.
func Open(path string) (*Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := FromFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// FromFile builds a Model over an already open GGUF file (Close closes it).
func FromFile(f *gguf.File) (*Model, error) {
	meta, err := gguf.ReadModelMeta(f)
	if err != nil {
		return nil, fmt.Errorf("read model metadata: %w", err)
	}
	src, err := NewSource(f, meta.Arch)
	if err != nil {
		return nil, err
	}
	cfg, err := ConfigJSON(meta, src)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Path, err)
	}
	m := &Model{Path: f.Path, File: f, Meta: meta, Source: src, ConfigJSON: cfg}
	for _, id := range meta.EOSTokenIDs {
		m.Generation.EOSTokenIDs = append(m.Generation.EOSTokenIDs, int32(id))
	}
	if meta.BOSTokenID >= 0 {
		v := int32(meta.BOSTokenID)
		m.Generation.BOSTokenID = &v
	}
	if meta.PadTokenID >= 0 {
		v := int32(meta.PadTokenID)
		m.Generation.PadTokenID = &v
	}
	return m, nil
}

// Close unmaps the file. Weights handed out by Source must not be used after.
func (m *Model) Close() error { return m.File.Close() }

// shortFloat returns v as JSON-friendly float64: a value that came from a float32
// is printed with the shortest float32 representation (1e-06, not
// 9.999999974752427e-07), so the synthesized config reads like the original.
func shortFloat(v float64) float64 {
	if f := float32(v); float64(f) == v && !math.IsInf(v, 0) {
		r, err := strconv.ParseFloat(strconv.FormatFloat(v, 'g', -1, 32), 64)
		if err == nil {
			return r
		}
	}
	return v
}

// ConfigJSON returns a Hugging Face config.json equivalent of meta, for
// bailing.Load. Facts that GGUF keeps only implicitly are read from the
// tensors of src (may be nil): the vocabulary size (token_embd rows), tied
// embeddings (no output.weight), QK-norm and the router expert bias
// (presence of blk.N.attn_q_norm / blk.N.exp_probs_b).
func ConfigJSON(meta *gguf.ModelMeta, src *Source) ([]byte, error) {
	arch, modelType := bailing.ArchSoftmax, "bailing_moe"
	if meta.Arch == gguf.ArchBailingMoELinear {
		arch, modelType = bailing.ArchLinear, "bailing_moe_linear"
	}
	vocab := meta.VocabSize
	useQKNorm, expertBias, tie := true, false, false
	if src != nil {
		if s := src.Shape("model.word_embeddings.weight"); len(s) == 2 {
			vocab = s[0]
		}
		tie = !src.Has("lm_head.weight")
		useQKNorm = false
		for l := 0; l < meta.NumLayers; l++ {
			p := "model.layers." + strconv.Itoa(l) + "."
			useQKNorm = useQKNorm || src.Has(p+"attention.query_layernorm.weight")
			expertBias = expertBias || src.Has(p+"mlp.gate.expert_bias")
		}
	}
	if vocab <= 0 {
		return nil, fmt.Errorf("vocabulary size unknown (no %s key, tokens or token_embd.weight)", gguf.ArchKey(meta.Arch, gguf.SufVocabSize))
	}
	if meta.HeadDim <= 0 || meta.RotaryDim <= 0 {
		return nil, fmt.Errorf("head dimension %d / rotary dimension %d must be positive", meta.HeadDim, meta.RotaryDim)
	}
	c := map[string]any{
		"architectures":                       []string{arch},
		"model_type":                          modelType,
		"vocab_size":                          vocab,
		"hidden_size":                         meta.HiddenSize,
		"num_hidden_layers":                   meta.NumLayers,
		"num_attention_heads":                 meta.NumHeads,
		"num_key_value_heads":                 meta.NumKVHeads,
		"head_dim":                            meta.HeadDim,
		"intermediate_size":                   meta.IntermediateSize,
		"moe_intermediate_size":               meta.MoEIntermediateSize,
		"moe_shared_expert_intermediate_size": meta.SharedExpertInterSize,
		"num_experts":                         meta.NumExperts,
		"num_experts_per_tok":                 meta.NumExpertsPerTok,
		"num_shared_experts":                  meta.NumSharedExperts,
		"n_group":                             meta.NumExpertGroups,
		"topk_group":                          meta.TopKGroup,
		"norm_topk_prob":                      meta.NormTopKProb,
		"routed_scaling_factor":               shortFloat(meta.RoutedScalingFactor),
		"score_function":                      meta.ScoreFunction,
		"moe_router_enable_expert_bias":       expertBias,
		"first_k_dense_replace":               meta.FirstKDenseReplace,
		"use_qk_norm":                         useQKNorm,
		"use_qkv_bias":                        false,
		"use_bias":                            false,
		"rotary_dim":                          meta.RotaryDim,
		"partial_rotary_factor":               float64(meta.RotaryDim) / float64(meta.HeadDim),
		"rope_theta":                          shortFloat(meta.RopeTheta),
		"max_position_embeddings":             meta.MaxPositionEmbeddings,
		"rms_norm_eps":                        shortFloat(meta.RMSNormEps),
		"hidden_act":                          "silu",
		"tie_word_embeddings":                 tie,
		"num_nextn_predict_layers":            meta.NextNPredictLayers,
	}
	if rs := meta.RopeScaling; rs != nil {
		r := map[string]any{"type": rs.Type, "rope_type": rs.Type, "factor": shortFloat(rs.Factor)}
		if rs.OriginalContext > 0 {
			r["original_max_position_embeddings"] = rs.OriginalContext
		}
		c["rope_scaling"] = r
	} else {
		c["rope_scaling"] = nil
	}
	if meta.Arch == gguf.ArchBailingMoELinear {
		c["layer_group_size"] = meta.LayerGroupSize
		c["group_norm_size"] = meta.GroupNormSize
		c["linear_silu"] = meta.LinearSilu
	}
	if len(meta.EOSTokenIDs) > 0 {
		c["eos_token_id"] = meta.EOSTokenIDs
	}
	if meta.BOSTokenID >= 0 {
		c["bos_token_id"] = meta.BOSTokenID
	}
	if meta.PadTokenID >= 0 {
		c["pad_token_id"] = meta.PadTokenID
	}
	return json.MarshalIndent(c, "", "  ")
}

// MetaFromConfig converts a parsed config.json (and generation_config.json)
// into GGUF model metadata. Stop ids are config eos_token_id followed by the
// generation config's, without duplicates; multi-token-prediction layers are
// not counted (Convert does not store them).
func MetaFromConfig(c *bailing.Config, gen checkpoint.GenerationConfig) *gguf.ModelMeta {
	m := &gguf.ModelMeta{
		Arch:                  gguf.ArchBailingMoE2,
		VocabSize:             c.VocabSize,
		HiddenSize:            c.HiddenSize,
		NumLayers:             c.NumHiddenLayers,
		NumHeads:              c.NumAttentionHeads,
		NumKVHeads:            c.NumKeyValueHeads,
		HeadDim:               c.HeadDim,
		IntermediateSize:      c.IntermediateSize,
		MoEIntermediateSize:   c.MoeIntermediateSize,
		SharedExpertInterSize: c.MoeSharedExpertIntermediateSize,
		NumExperts:            c.NumExperts,
		NumExpertsPerTok:      c.NumExpertsPerTok,
		NumSharedExperts:      c.NumSharedExperts,
		NumExpertGroups:       c.NGroup,
		TopKGroup:             c.TopkGroup,
		RoutedScalingFactor:   c.RoutedScalingFactor,
		NormTopKProb:          c.NormTopkProb,
		ScoreFunction:         c.ScoreFunction,
		FirstKDenseReplace:    c.FirstKDenseReplace,
		RopeTheta:             c.RopeTheta,
		RotaryDim:             c.RopeDim(),
		RMSNormEps:            c.RMSNormEps,
		MaxPositionEmbeddings: c.MaxPositionEmbeddings,
		BOSTokenID:            -1,
		PadTokenID:            -1,
	}
	if m.NumKVHeads == 0 {
		m.NumKVHeads = m.NumHeads
	}
	if c.Linear() {
		m.Arch = gguf.ArchBailingMoELinear
		m.LayerGroupSize = c.LayerGroupSize
		m.GroupNormSize = c.GroupNormSize
		m.LinearSilu = c.LinearSilu
	}
	seen := map[int32]bool{}
	for _, id := range append(append([]int32{}, c.EOSTokenID...), gen.EOSTokenIDs...) {
		if !seen[id] {
			seen[id] = true
			m.EOSTokenIDs = append(m.EOSTokenIDs, int(id))
		}
	}
	switch {
	case len(c.BOSTokenID) > 0:
		m.BOSTokenID = int(c.BOSTokenID[0])
	case gen.BOSTokenID != nil:
		m.BOSTokenID = int(*gen.BOSTokenID)
	}
	switch {
	case len(c.PadTokenID) > 0:
		m.PadTokenID = int(c.PadTokenID[0])
	case gen.PadTokenID != nil:
		m.PadTokenID = int(*gen.PadTokenID)
	}
	return m
}
