package bailing

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Architecture names, as in config.json's "architectures".
const (
	ArchLinear  = "BailingMoeLinearV2ForCausalLM" // Ring-linear 2.0: lightning + softmax layers
	ArchSoftmax = "BailingMoeV2ForCausalLM"       // Ling/Ring 2.0: softmax layers only
)

// Config is config.json of a Bailing MoE V2 or Bailing MoE linear V2 checkpoint (spec §1).
type Config struct {
	Architectures                   []string        `json:"architectures"`
	ModelType                       string          `json:"model_type"`
	VocabSize                       int             `json:"vocab_size"`
	HiddenSize                      int             `json:"hidden_size"`
	NumHiddenLayers                 int             `json:"num_hidden_layers"`
	NumAttentionHeads               int             `json:"num_attention_heads"`
	NumKeyValueHeads                int             `json:"num_key_value_heads"`
	HeadDim                         int             `json:"head_dim"`
	IntermediateSize                int             `json:"intermediate_size"`
	MoeIntermediateSize             int             `json:"moe_intermediate_size"`
	MoeSharedExpertIntermediateSize int             `json:"moe_shared_expert_intermediate_size"`
	NumExperts                      int             `json:"num_experts"`
	NumExpertsPerTok                int             `json:"num_experts_per_tok"`
	NumSharedExperts                int             `json:"num_shared_experts"`
	NGroup                          int             `json:"n_group"`
	TopkGroup                       int             `json:"topk_group"`
	NormTopkProb                    bool            `json:"norm_topk_prob"`
	RoutedScalingFactor             float64         `json:"routed_scaling_factor"`
	ScoreFunction                   string          `json:"score_function"`
	MoeRouterEnableExpertBias       bool            `json:"moe_router_enable_expert_bias"`
	RouterDtype                     string          `json:"router_dtype"`
	FirstKDenseReplace              int             `json:"first_k_dense_replace"`
	LayerGroupSize                  int             `json:"layer_group_size"`
	GroupNormSize                   int             `json:"group_norm_size"`
	LinearSilu                      bool            `json:"linear_silu"`
	UseLinearSilu                   bool            `json:"use_linear_silu"`
	UseQKNorm                       bool            `json:"use_qk_norm"`
	UseQKVBias                      bool            `json:"use_qkv_bias"`
	UseBias                         bool            `json:"use_bias"`
	PartialRotaryFactor             float64         `json:"partial_rotary_factor"`
	RotaryDim                       int             `json:"rotary_dim"`
	RopeTheta                       float64         `json:"rope_theta"`
	RopeScaling                     json.RawMessage `json:"rope_scaling"`
	MaxPositionEmbeddings           int             `json:"max_position_embeddings"`
	RMSNormEps                      float64         `json:"rms_norm_eps"`
	HiddenAct                       string          `json:"hidden_act"`
	TieWordEmbeddings               bool            `json:"tie_word_embeddings"`
	NumNextNPredictLayers           int             `json:"num_nextn_predict_layers"`
	EOSTokenID                      IDList          `json:"eos_token_id"`
	BOSTokenID                      IDList          `json:"bos_token_id"`
	PadTokenID                      IDList          `json:"pad_token_id"`
	TorchDtype                      string          `json:"torch_dtype"`
	QuantizationConfig              *struct {
		QuantMethod     string `json:"quant_method"`
		Fmt             string `json:"fmt"`
		WeightBlockSize []int  `json:"weight_block_size"`
	} `json:"quantization_config"`
}

// IDList is a token id or a list of them (config files use both forms).
type IDList []int32

// UnmarshalJSON accepts null, a number or an array of numbers.
func (l *IDList) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*l = nil
		return nil
	}
	if strings.HasPrefix(s, "[") {
		var v []int32
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*l = v
		return nil
	}
	var v int32
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*l = IDList{v}
	return nil
}

// ParseConfig parses and validates config.json. Unknown fields are ignored;
// missing or inconsistent required fields are reported by name.
func ParseConfig(data []byte) (*Config, error) {
	var present map[string]json.RawMessage
	if err := json.Unmarshal(data, &present); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	has := func(k string) bool {
		v, ok := present[k]
		return ok && string(v) != "null"
	}
	if !has("architectures") && c.ModelType != "" {
		switch c.ModelType {
		case "bailing_moe_linear":
			c.Architectures = []string{ArchLinear}
		case "bailing_moe":
			c.Architectures = []string{ArchSoftmax}
		}
	}
	required := []string{"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "rms_norm_eps", "rope_theta"}
	if c.Linear() {
		required = append(required, "layer_group_size")
	}
	if c.Linear() || c.NumHiddenLayers > c.LinearLayerCount() {
		required = append(required, "num_key_value_heads")
	}
	if c.FirstKDenseReplace > 0 {
		required = append(required, "intermediate_size")
	}
	if c.FirstKDenseReplace < c.NumHiddenLayers {
		required = append(required, "num_experts", "num_experts_per_tok", "moe_intermediate_size")
	}
	for _, k := range required {
		if !has(k) {
			return nil, fmt.Errorf("config.json: required field %q is missing", k)
		}
	}
	// defaults of the reference config classes
	if !has("head_dim") && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if !has("partial_rotary_factor") {
		c.PartialRotaryFactor = 1
	}
	if !has("routed_scaling_factor") {
		c.RoutedScalingFactor = 1
	}
	if !has("score_function") {
		c.ScoreFunction = "sigmoid"
	}
	// no group-limited routing: n_group/topk_group absent, null or 0
	if c.NGroup <= 0 {
		c.NGroup = 1
	}
	if c.TopkGroup <= 0 {
		c.TopkGroup = c.NGroup
	}
	if !has("group_norm_size") {
		c.GroupNormSize = 1
	}
	if !has("num_shared_experts") {
		c.NumSharedExperts = 0
	}
	if !has("use_qk_norm") {
		c.UseQKNorm = true
	}
	if !has("moe_shared_expert_intermediate_size") {
		c.MoeSharedExpertIntermediateSize = c.MoeIntermediateSize
	}
	if !has("max_position_embeddings") {
		c.MaxPositionEmbeddings = 32768
	}
	if c.UseLinearSilu {
		c.LinearSilu = true
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	if len(c.Architectures) == 0 {
		return fmt.Errorf("field \"architectures\" is missing (and model_type %q is not known)", c.ModelType)
	}
	if a := c.Architectures[0]; a != ArchLinear && a != ArchSoftmax {
		return fmt.Errorf("field \"architectures\": unsupported architecture %q (want %s or %s)", a, ArchLinear, ArchSoftmax)
	}
	pos := func(name string, v int) error {
		if v <= 0 {
			return fmt.Errorf("field %q must be positive, got %d", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		n string
		v int
	}{
		{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumHiddenLayers},
		{"num_attention_heads", c.NumAttentionHeads}, {"head_dim", c.HeadDim},
	} {
		if err := pos(f.n, f.v); err != nil {
			return err
		}
	}
	if c.Linear() {
		if err := pos("layer_group_size", c.LayerGroupSize); err != nil {
			return err
		}
		if err := pos("group_norm_size", c.GroupNormSize); err != nil {
			return err
		}
		if (c.NumAttentionHeads*c.HeadDim)%c.GroupNormSize != 0 {
			return fmt.Errorf("field \"group_norm_size\" (%d) must divide num_attention_heads·head_dim (%d)", c.GroupNormSize, c.NumAttentionHeads*c.HeadDim)
		}
	}
	if c.SoftmaxLayerCount() > 0 {
		if err := pos("num_key_value_heads", c.NumKeyValueHeads); err != nil {
			return err
		}
		if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
			return fmt.Errorf("field \"num_key_value_heads\" (%d) must divide num_attention_heads (%d)", c.NumKeyValueHeads, c.NumAttentionHeads)
		}
	}
	if c.FirstKDenseReplace < 0 {
		return fmt.Errorf("field \"first_k_dense_replace\" must not be negative")
	}
	if c.FirstKDenseReplace > 0 {
		if err := pos("intermediate_size", c.IntermediateSize); err != nil {
			return err
		}
	}
	if c.FirstKDenseReplace < c.NumHiddenLayers {
		for _, f := range []struct {
			n string
			v int
		}{{"num_experts", c.NumExperts}, {"num_experts_per_tok", c.NumExpertsPerTok}, {"moe_intermediate_size", c.MoeIntermediateSize}, {"n_group", c.NGroup}, {"topk_group", c.TopkGroup}} {
			if err := pos(f.n, f.v); err != nil {
				return err
			}
		}
		if c.NumExpertsPerTok > c.NumExperts {
			return fmt.Errorf("field \"num_experts_per_tok\" (%d) exceeds num_experts (%d)", c.NumExpertsPerTok, c.NumExperts)
		}
		if c.NumExperts%c.NGroup != 0 {
			return fmt.Errorf("field \"n_group\" (%d) must divide num_experts (%d)", c.NGroup, c.NumExperts)
		}
		if c.TopkGroup > c.NGroup {
			return fmt.Errorf("field \"topk_group\" (%d) exceeds n_group (%d)", c.TopkGroup, c.NGroup)
		}
		if c.TopkGroup*(c.NumExperts/c.NGroup) < c.NumExpertsPerTok {
			return fmt.Errorf("field \"topk_group\" (%d) keeps fewer experts than num_experts_per_tok (%d)", c.TopkGroup, c.NumExpertsPerTok)
		}
		if c.ScoreFunction != "sigmoid" && c.ScoreFunction != "softmax" {
			return fmt.Errorf("field \"score_function\": unsupported %q", c.ScoreFunction)
		}
		if c.NumSharedExperts < 0 {
			return fmt.Errorf("field \"num_shared_experts\" must not be negative")
		}
	}
	if c.PartialRotaryFactor <= 0 || c.PartialRotaryFactor > 1 {
		return fmt.Errorf("field \"partial_rotary_factor\" must be in (0, 1], got %v", c.PartialRotaryFactor)
	}
	if r := c.RopeDim(); r%2 != 0 || r > c.HeadDim || r <= 0 {
		return fmt.Errorf("rotary dimension %d (partial_rotary_factor/rotary_dim) must be even and at most head_dim %d", r, c.HeadDim)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("field \"rope_theta\" must be positive")
	}
	if !(c.RMSNormEps > 0) || c.RMSNormEps > 1 {
		return fmt.Errorf("field \"rms_norm_eps\" must be in (0, 1], got %v", c.RMSNormEps)
	}
	if s := strings.TrimSpace(string(c.RopeScaling)); s != "" && s != "null" {
		return fmt.Errorf("field \"rope_scaling\": scaled RoPE (%s) is not supported yet", s)
	}
	if c.HiddenAct != "" && c.HiddenAct != "silu" {
		return fmt.Errorf("field \"hidden_act\": unsupported %q", c.HiddenAct)
	}
	if c.UseQKVBias || c.UseBias {
		return fmt.Errorf("fields \"use_qkv_bias\"/\"use_bias\": biases are not supported")
	}
	for _, id := range c.EOSTokenID {
		if id < 0 || int(id) >= c.VocabSize {
			return fmt.Errorf("field \"eos_token_id\": %d outside the vocabulary", id)
		}
	}
	return nil
}

// Linear reports whether the model has lightning-attention layers.
func (c *Config) Linear() bool {
	return len(c.Architectures) > 0 && c.Architectures[0] == ArchLinear
}

// IsLinearLayer reports whether layer l uses lightning attention (spec §3):
// a layer is softmax iff (l+1) % G == 0 or l >= (L/G)·G.
func (c *Config) IsLinearLayer(l int) bool {
	if !c.Linear() {
		return false
	}
	G, L := c.LayerGroupSize, c.NumHiddenLayers
	return (l+1)%G != 0 && l < (L/G)*G
}

// LinearLayerCount returns the number of lightning-attention layers.
func (c *Config) LinearLayerCount() int {
	n := 0
	for l := 0; l < c.NumHiddenLayers; l++ {
		if c.IsLinearLayer(l) {
			n++
		}
	}
	return n
}

// SoftmaxLayerCount returns the number of softmax-attention layers.
func (c *Config) SoftmaxLayerCount() int { return c.NumHiddenLayers - c.LinearLayerCount() }

// RopeDim returns the number of rotated channels per head.
func (c *Config) RopeDim() int {
	if c.RotaryDim > 0 {
		return c.RotaryDim
	}
	return int(math.Floor(float64(c.HeadDim) * c.PartialRotaryFactor))
}

// SharedIntermediate returns the shared experts' total intermediate size.
func (c *Config) SharedIntermediate() int {
	return c.MoeSharedExpertIntermediateSize * c.NumSharedExperts
}
