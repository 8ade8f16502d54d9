package bailing

import "fmt"

// TensorSpec names one checkpoint tensor and its shape ([out, in] for matrices).
type TensorSpec struct {
	Name  string
	Shape []int
	// Expert is true for routed-expert weights (only TopK of NumExperts are read per token).
	Expert bool
	// F32 marks tensors stored in float32 in released checkpoints (expert bias).
	F32 bool
}

// Elems returns the element count.
func (t TensorSpec) Elems() int64 {
	n := int64(1)
	for _, s := range t.Shape {
		n *= int64(s)
	}
	return n
}

// Tensors lists every tensor a checkpoint of this config holds, in the
// order Load reads them.
func Tensors(c *Config) []TensorSpec {
	D, V := c.HiddenSize, c.VocabSize
	H, Hkv, d := c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim
	var out []TensorSpec
	add := func(name string, shape ...int) { out = append(out, TensorSpec{Name: name, Shape: shape}) }
	add("model.word_embeddings.weight", V, D)
	add("model.norm.weight", D)
	if !c.TieWordEmbeddings {
		add("lm_head.weight", V, D)
	}
	for i := 0; i < c.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", D)
		add(p+"post_attention_layernorm.weight", D)
		if c.IsLinearLayer(i) {
			add(p+"attention.query_key_value.weight", 3*H*d, D)
			add(p+"attention.g_proj.weight", H*d, D)
			add(p+"attention.g_norm.weight", H*d)
		} else {
			add(p+"attention.query_key_value.weight", (H+2*Hkv)*d, D)
		}
		if c.UseQKNorm {
			add(p+"attention.query_layernorm.weight", d)
			add(p+"attention.key_layernorm.weight", d)
		}
		add(p+"attention.dense.weight", D, H*d)
		if i < c.FirstKDenseReplace {
			I := c.IntermediateSize
			add(p+"mlp.gate_proj.weight", I, D)
			add(p+"mlp.up_proj.weight", I, D)
			add(p+"mlp.down_proj.weight", D, I)
			continue
		}
		E, I := c.NumExperts, c.MoeIntermediateSize
		add(p+"mlp.gate.weight", E, D)
		if c.MoeRouterEnableExpertBias {
			out = append(out, TensorSpec{Name: p + "mlp.gate.expert_bias", Shape: []int{E}, F32: true})
		}
		for e := 0; e < E; e++ {
			q := fmt.Sprintf("%smlp.experts.%d.", p, e)
			out = append(out,
				TensorSpec{Name: q + "gate_proj.weight", Shape: []int{I, D}, Expert: true},
				TensorSpec{Name: q + "up_proj.weight", Shape: []int{I, D}, Expert: true},
				TensorSpec{Name: q + "down_proj.weight", Shape: []int{D, I}, Expert: true})
		}
		if c.NumSharedExperts > 0 {
			SI := c.SharedIntermediate()
			add(p+"mlp.shared_experts.gate_proj.weight", SI, D)
			add(p+"mlp.shared_experts.up_proj.weight", SI, D)
			add(p+"mlp.shared_experts.down_proj.weight", D, SI)
		}
	}
	return out
}

// ParamCounts returns total parameters, parameters read per token (active:
// TopK of the routed experts), and the embedding table size (counted in
// total, and in active only through lm_head).
func ParamCounts(c *Config) (total, active, embedding int64) {
	for _, t := range Tensors(c) {
		n := t.Elems()
		total += n
		switch {
		case t.Expert:
			active += n * int64(c.NumExpertsPerTok) / int64(c.NumExperts)
		case t.Name == "model.word_embeddings.weight":
			embedding = n
		default:
			active += n
		}
	}
	return total, active, embedding
}
