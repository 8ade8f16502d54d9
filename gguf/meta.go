package gguf

import (
	"errors"
	"fmt"
	"math"
)

// Metadata keys. Per-architecture keys are "<arch>.<suffix>" (see ArchKey).
const (
	KeyArchitecture        = "general.architecture"
	KeyName                = "general.name"
	KeyFileType            = "general.file_type"
	KeyQuantizationVersion = "general.quantization_version"

	KeyTokenizerModel = "tokenizer.ggml.model"
	KeyTokenizerPre   = "tokenizer.ggml.pre"
	KeyTokens         = "tokenizer.ggml.tokens"
	KeyTokenType      = "tokenizer.ggml.token_type"
	KeyTokenScores    = "tokenizer.ggml.scores"
	KeyMerges         = "tokenizer.ggml.merges"
	KeyBOSID          = "tokenizer.ggml.bos_token_id"
	KeyEOSID          = "tokenizer.ggml.eos_token_id"
	KeyEOTID          = "tokenizer.ggml.eot_token_id"
	KeyPadID          = "tokenizer.ggml.padding_token_id"
	KeyAddBOS         = "tokenizer.ggml.add_bos_token"
	KeyAddEOS         = "tokenizer.ggml.add_eos_token"
	KeyChatTemplate   = "tokenizer.chat_template"
	// KeyEOSIDs is a ringo extension (not read by llama.cpp): all
	// end-of-generation token ids (generation_config eos_token_id list).
	KeyEOSIDs = "tokenizer.ggml.eos_token_ids"
)

// Per-architecture key suffixes (llama.cpp gguf-py constants.py Keys.LLM /
// Keys.Attention / Keys.Rope), plus the Ring-linear additions.
const (
	SufVocabSize              = "vocab_size"
	SufContextLength          = "context_length"
	SufEmbeddingLength        = "embedding_length"
	SufBlockCount             = "block_count"
	SufLeadingDenseBlockCount = "leading_dense_block_count"
	SufFeedForwardLength      = "feed_forward_length"
	SufExpertFFLength         = "expert_feed_forward_length"
	SufExpertSharedFFLength   = "expert_shared_feed_forward_length"
	SufExpertCount            = "expert_count"
	SufExpertUsedCount        = "expert_used_count"
	SufExpertSharedCount      = "expert_shared_count"
	SufExpertGroupCount       = "expert_group_count"
	SufExpertGroupUsedCount   = "expert_group_used_count"
	SufExpertWeightsScale     = "expert_weights_scale"
	SufExpertWeightsNorm      = "expert_weights_norm"
	SufExpertGatingFunc       = "expert_gating_func"
	SufNextNPredictLayers     = "nextn_predict_layers"
	SufHeadCount              = "attention.head_count"
	SufHeadCountKV            = "attention.head_count_kv"
	SufKeyLength              = "attention.key_length"
	SufValueLength            = "attention.value_length"
	SufRMSEps                 = "attention.layer_norm_rms_epsilon"
	SufGroupNormGroups        = "attention.group_norm_groups" // Ring-linear group_norm_size
	SufRopeDimCount           = "rope.dimension_count"
	SufRopeFreqBase           = "rope.freq_base"
	SufRopeScalingType        = "rope.scaling.type"
	SufRopeScalingFactor      = "rope.scaling.factor"
	SufRopeScalingOrigCtx     = "rope.scaling.original_context_length"
	SufLayerGroupSize         = "layer_group_size"        // Ring-linear
	SufFullAttentionInterval  = "full_attention_interval" // llama.cpp qwen3next key, accepted on read
	SufLinearSilu             = "linear_silu"             // Ring-linear
)

// Expert gating function ids (llama.cpp ExpertGatingFuncType).
const (
	GatingSoftmax = 1
	GatingSigmoid = 2
)

// ArchKey returns "<arch>.<suffix>".
func ArchKey(arch, suffix string) string { return arch + "." + suffix }

// RopeScaling describes a rope_scaling block (nil/"none" for plain RoPE).
type RopeScaling struct {
	Type            string  // "none", "linear", "yarn"
	Factor          float64 // scaling factor
	OriginalContext int     // original_max_position_embeddings
}

// ModelMeta holds the hyper-parameters of a Ling 2.0 / Ring-linear 2.0 model
// (the config.json fields) in a GGUF-independent form.
type ModelMeta struct {
	Arch string // GGUF architecture: ArchBailingMoE2 or ArchBailingMoELinear
	Name string // general.name (optional)

	VocabSize             int
	HiddenSize            int
	NumLayers             int // num_hidden_layers, not counting MTP layers
	NumHeads              int
	NumKVHeads            int // KV heads of softmax-attention layers
	HeadDim               int
	IntermediateSize      int // dense FFN (first_k_dense_replace layers)
	MoEIntermediateSize   int // per routed expert
	SharedExpertInterSize int // total shared-expert intermediate size
	NumExperts            int
	NumExpertsPerTok      int
	NumSharedExperts      int
	NumExpertGroups       int     // n_group
	TopKGroup             int     // topk_group
	RoutedScalingFactor   float64 // routed_scaling_factor
	NormTopKProb          bool
	ScoreFunction         string // "sigmoid" or "softmax"
	FirstKDenseReplace    int
	RopeTheta             float64
	RotaryDim             int // head_dim * partial_rotary_factor
	RMSNormEps            float64
	MaxPositionEmbeddings int
	RopeScaling           *RopeScaling
	NextNPredictLayers    int

	// Ring-linear only.
	LayerGroupSize int  // layer_group_size (softmax layer every G layers)
	GroupNormSize  int  // group_norm_size: number of groups of the output RMSNorm
	LinearSilu     bool // linear_silu

	BOSTokenID  int   // -1 if none
	EOSTokenIDs []int // first is tokenizer eos; all stop generation
	PadTokenID  int   // -1 if none

	FileType uint32 // general.file_type (llama_ftype); 0 = all F32
}

// KVs returns the GGUF metadata entries for m, using llama.cpp's bailingmoe2
// keys and types (uint32 counts, float32 reals) and the Ring-linear additions
// documented in NAMES.md.
func (m *ModelMeta) KVs() ([]KV, error) {
	if m.Arch != ArchBailingMoE2 && m.Arch != ArchBailingMoELinear {
		return nil, fmt.Errorf("gguf: ModelMeta: unknown architecture %q", m.Arch)
	}
	a := func(s string) string { return ArchKey(m.Arch, s) }
	u := func(v int) uint32 { return uint32(v) }
	kvs := []KV{{KeyArchitecture, m.Arch}}
	if m.Name != "" {
		kvs = append(kvs, KV{KeyName, m.Name})
	}
	gating := uint32(GatingSigmoid)
	switch m.ScoreFunction {
	case "sigmoid", "":
	case "softmax":
		gating = GatingSoftmax
	default:
		return nil, fmt.Errorf("gguf: ModelMeta: unsupported score function %q", m.ScoreFunction)
	}
	kvs = append(kvs,
		KV{a(SufBlockCount), u(m.NumLayers + m.NextNPredictLayers)},
		KV{a(SufContextLength), u(m.MaxPositionEmbeddings)},
		KV{a(SufEmbeddingLength), u(m.HiddenSize)},
		KV{a(SufFeedForwardLength), u(m.IntermediateSize)},
		KV{a(SufHeadCount), u(m.NumHeads)},
		KV{a(SufHeadCountKV), u(m.NumKVHeads)},
		KV{a(SufRopeFreqBase), float32(m.RopeTheta)},
		KV{a(SufRMSEps), float32(m.RMSNormEps)},
		KV{a(SufExpertUsedCount), u(m.NumExpertsPerTok)},
		KV{a(SufExpertGroupCount), u(m.NumExpertGroups)},
		KV{a(SufExpertGroupUsedCount), u(m.TopKGroup)},
		KV{a(SufKeyLength), u(m.HeadDim)},
		KV{a(SufValueLength), u(m.HeadDim)},
		KV{KeyFileType, m.FileType},
		KV{a(SufRopeDimCount), u(m.RotaryDim)},
	)
	if rs := m.RopeScaling; rs != nil && rs.Type != "" && rs.Type != "none" {
		kvs = append(kvs, KV{a(SufRopeScalingType), rs.Type}, KV{a(SufRopeScalingFactor), float32(rs.Factor)})
		if rs.OriginalContext > 0 {
			kvs = append(kvs, KV{a(SufRopeScalingOrigCtx), u(rs.OriginalContext)})
		}
	} else {
		kvs = append(kvs, KV{a(SufRopeScalingType), "none"})
	}
	kvs = append(kvs,
		KV{a(SufLeadingDenseBlockCount), u(m.FirstKDenseReplace)},
		KV{a(SufVocabSize), u(m.VocabSize)},
		KV{a(SufExpertFFLength), u(m.MoEIntermediateSize)},
		KV{a(SufExpertSharedFFLength), u(m.SharedExpertInterSize)},
		KV{a(SufExpertWeightsScale), float32(m.RoutedScalingFactor)},
		KV{a(SufExpertCount), u(m.NumExperts)},
		KV{a(SufExpertSharedCount), u(m.NumSharedExperts)},
		KV{a(SufExpertWeightsNorm), m.NormTopKProb},
		KV{a(SufExpertGatingFunc), gating},
		KV{a(SufNextNPredictLayers), u(m.NextNPredictLayers)},
	)
	if m.Arch == ArchBailingMoELinear {
		if m.LayerGroupSize <= 0 || m.GroupNormSize <= 0 {
			return nil, fmt.Errorf("gguf: ModelMeta: %s needs LayerGroupSize and GroupNormSize > 0", m.Arch)
		}
		kvs = append(kvs,
			KV{a(SufLayerGroupSize), u(m.LayerGroupSize)},
			KV{a(SufGroupNormGroups), u(m.GroupNormSize)},
			KV{a(SufLinearSilu), m.LinearSilu},
		)
	}
	if m.BOSTokenID >= 0 {
		kvs = append(kvs, KV{KeyBOSID, u(m.BOSTokenID)})
	}
	if len(m.EOSTokenIDs) > 0 {
		kvs = append(kvs, KV{KeyEOSID, u(m.EOSTokenIDs[0])})
		ids := make([]uint32, len(m.EOSTokenIDs))
		for i, id := range m.EOSTokenIDs {
			ids[i] = u(id)
		}
		kvs = append(kvs, KV{KeyEOSIDs, ids})
		if len(m.EOSTokenIDs) > 1 {
			kvs = append(kvs, KV{KeyEOTID, ids[1]})
		}
	}
	if m.PadTokenID >= 0 {
		kvs = append(kvs, KV{KeyPadID, u(m.PadTokenID)})
	}
	return kvs, nil
}

// IsSoftmaxLayer reports whether layer l uses softmax (GQA) attention: always
// for bailingmoe2; for Ring-linear iff (l+1) % LayerGroupSize == 0 or
// l >= (NumLayers / LayerGroupSize) * LayerGroupSize (HF convention).
func (m *ModelMeta) IsSoftmaxLayer(l int) bool {
	if m.Arch != ArchBailingMoELinear || m.LayerGroupSize <= 0 {
		return true
	}
	g := m.LayerGroupSize
	return (l+1)%g == 0 || l >= (m.NumLayers/g)*g
}

// ReadModelMeta reads a ModelMeta from a GGUF file's metadata. Errors name the
// file and the missing or malformed key.
func ReadModelMeta(f *File) (*ModelMeta, error) {
	arch, err := f.String(KeyArchitecture)
	if err != nil {
		return nil, err
	}
	if arch != ArchBailingMoE2 && arch != ArchBailingMoELinear {
		return nil, fmt.Errorf("gguf: %s: unsupported architecture %q", f.Path, arch)
	}
	m := &ModelMeta{Arch: arch, BOSTokenID: -1, PadTokenID: -1}
	r := metaReader{f: f, arch: arch}
	m.Name, _ = f.StringOr(KeyName, "")
	blocks := r.uint(SufBlockCount, -1)
	m.NextNPredictLayers = r.uint(SufNextNPredictLayers, 0)
	m.NumLayers = blocks - m.NextNPredictLayers
	m.MaxPositionEmbeddings = r.uint(SufContextLength, -1)
	m.HiddenSize = r.uint(SufEmbeddingLength, -1)
	m.IntermediateSize = r.uint(SufFeedForwardLength, -1)
	m.NumHeads = r.uint(SufHeadCount, -1)
	m.NumKVHeads = r.uint(SufHeadCountKV, m.NumHeads)
	m.RopeTheta = r.float(SufRopeFreqBase, 10000)
	m.RMSNormEps = r.float(SufRMSEps, -1)
	m.NumExpertsPerTok = r.uint(SufExpertUsedCount, -1)
	m.NumExpertGroups = r.uint(SufExpertGroupCount, 1)
	m.TopKGroup = r.uint(SufExpertGroupUsedCount, m.NumExpertGroups)
	if m.NumHeads > 0 {
		m.HeadDim = r.uint(SufKeyLength, m.HiddenSize/m.NumHeads)
	}
	m.RotaryDim = r.uint(SufRopeDimCount, m.HeadDim)
	m.FirstKDenseReplace = r.uint(SufLeadingDenseBlockCount, 0)
	m.VocabSize = r.uint(SufVocabSize, 0)
	if m.VocabSize == 0 {
		if toks, err := f.Strings(KeyTokens); err == nil {
			m.VocabSize = len(toks)
		}
	}
	m.MoEIntermediateSize = r.uint(SufExpertFFLength, -1)
	m.NumSharedExperts = r.uint(SufExpertSharedCount, 0)
	m.SharedExpertInterSize = r.uint(SufExpertSharedFFLength, m.MoEIntermediateSize*m.NumSharedExperts)
	m.RoutedScalingFactor = r.float(SufExpertWeightsScale, 1)
	m.NumExperts = r.uint(SufExpertCount, -1)
	m.NormTopKProb = r.bool(SufExpertWeightsNorm, false)
	switch g := r.uint(SufExpertGatingFunc, GatingSoftmax); g {
	case GatingSoftmax:
		m.ScoreFunction = "softmax"
	case GatingSigmoid:
		m.ScoreFunction = "sigmoid"
	default:
		r.fail(fmt.Errorf("gguf: %s: metadata %q: unsupported gating function %d", f.Path, ArchKey(arch, SufExpertGatingFunc), g))
	}
	if st, _ := f.StringOr(ArchKey(arch, SufRopeScalingType), "none"); st != "none" && st != "" {
		m.RopeScaling = &RopeScaling{
			Type:            st,
			Factor:          r.float(SufRopeScalingFactor, 1),
			OriginalContext: r.uint(SufRopeScalingOrigCtx, 0),
		}
	}
	if arch == ArchBailingMoELinear {
		def := -1
		if f.Has(ArchKey(arch, SufFullAttentionInterval)) {
			def = r.uint(SufFullAttentionInterval, -1)
		}
		m.LayerGroupSize = r.uint(SufLayerGroupSize, def)
		m.GroupNormSize = r.uint(SufGroupNormGroups, 1)
		m.LinearSilu = r.bool(SufLinearSilu, false)
	}
	if v, err := f.UintOr(KeyBOSID, math.MaxUint64); err == nil && v != math.MaxUint64 {
		m.BOSTokenID = int(v)
	}
	if v, err := f.UintOr(KeyPadID, math.MaxUint64); err == nil && v != math.MaxUint64 {
		m.PadTokenID = int(v)
	}
	if ids, err := f.Ints(KeyEOSIDs); err == nil {
		for _, id := range ids {
			m.EOSTokenIDs = append(m.EOSTokenIDs, int(id))
		}
	} else if v, err := f.Uint(KeyEOSID); err == nil {
		m.EOSTokenIDs = []int{int(v)}
		if v2, err := f.Uint(KeyEOTID); err == nil && v2 != v {
			m.EOSTokenIDs = append(m.EOSTokenIDs, int(v2))
		}
	}
	if ft, err := f.UintOr(KeyFileType, 0); err == nil {
		m.FileType = uint32(ft)
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

type metaReader struct {
	f    *File
	arch string
	err  error
}

func (r *metaReader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

// uint reads arch.suffix; def < 0 means required.
func (r *metaReader) uint(suffix string, def int) int {
	key := ArchKey(r.arch, suffix)
	if !r.f.Has(key) {
		if def < 0 {
			r.fail(fmt.Errorf("gguf: %s: required metadata %q: %w", r.f.Path, key, ErrNotFound))
			return 0
		}
		return def
	}
	v, err := r.f.Uint(key)
	if err != nil {
		r.fail(err)
		return 0
	}
	if v > math.MaxInt32 {
		r.fail(fmt.Errorf("gguf: %s: metadata %q: value %d out of range", r.f.Path, key, v))
		return 0
	}
	return int(v)
}

func (r *metaReader) float(suffix string, def float64) float64 {
	key := ArchKey(r.arch, suffix)
	if !r.f.Has(key) {
		if def < 0 {
			r.fail(fmt.Errorf("gguf: %s: required metadata %q: %w", r.f.Path, key, ErrNotFound))
		}
		return def
	}
	v, err := r.f.Float(key)
	if err != nil {
		r.fail(err)
	}
	return v
}

func (r *metaReader) bool(suffix string, def bool) bool {
	v, err := r.f.BoolOr(ArchKey(r.arch, suffix), def)
	if err != nil {
		r.fail(err)
	}
	return v
}

// Token types (llama.cpp gguf TokenType).
const (
	TokenNormal      = 1
	TokenUnknown     = 2
	TokenControl     = 3
	TokenUserDefined = 4
	TokenUnused      = 5
	TokenByte        = 6
)

// TokenizerMeta holds the tokenizer metadata of a GGUF file (llama.cpp
// tokenizer.ggml.* keys). For the Ling/Ring family Model is "gpt2" and Pre is
// "bailingmoe2" (PreBailingMoE2).
type TokenizerMeta struct {
	Model        string   // tokenizer.ggml.model, e.g. "gpt2"
	Pre          string   // tokenizer.ggml.pre, e.g. "bailingmoe2"
	Tokens       []string // token strings (byte-level BPE form), index = id
	TokenTypes   []int32  // one of the Token* constants per token
	Merges       []string // "a b" merge rules in priority order
	AddBOS       bool
	AddEOS       bool
	ChatTemplate string // Jinja chat template ("" = none)
}

// PreBailingMoE2 is the tokenizer.ggml.pre value llama.cpp's converter writes
// for the Ling 2.0 tokenizer (also used by Ring-linear 2.0).
const PreBailingMoE2 = "bailingmoe2"

// KVs returns the GGUF metadata entries of t.
func (t *TokenizerMeta) KVs() ([]KV, error) {
	if t.Model == "" {
		return nil, errors.New("gguf: TokenizerMeta: empty Model")
	}
	if t.TokenTypes != nil && len(t.TokenTypes) != len(t.Tokens) {
		return nil, fmt.Errorf("gguf: TokenizerMeta: %d token types for %d tokens", len(t.TokenTypes), len(t.Tokens))
	}
	kvs := []KV{{KeyTokenizerModel, t.Model}}
	if t.Pre != "" {
		kvs = append(kvs, KV{KeyTokenizerPre, t.Pre})
	}
	kvs = append(kvs, KV{KeyTokens, t.Tokens})
	if t.TokenTypes != nil {
		kvs = append(kvs, KV{KeyTokenType, t.TokenTypes})
	}
	if t.Merges != nil {
		kvs = append(kvs, KV{KeyMerges, t.Merges})
	}
	kvs = append(kvs, KV{KeyAddBOS, t.AddBOS}, KV{KeyAddEOS, t.AddEOS})
	if t.ChatTemplate != "" {
		kvs = append(kvs, KV{KeyChatTemplate, t.ChatTemplate})
	}
	return kvs, nil
}

// ReadTokenizerMeta reads the tokenizer metadata of f.
func ReadTokenizerMeta(f *File) (*TokenizerMeta, error) {
	t := &TokenizerMeta{}
	var err error
	if t.Model, err = f.String(KeyTokenizerModel); err != nil {
		return nil, err
	}
	if t.Pre, err = f.StringOr(KeyTokenizerPre, ""); err != nil {
		return nil, err
	}
	if t.Tokens, err = f.Strings(KeyTokens); err != nil {
		return nil, err
	}
	if f.Has(KeyTokenType) {
		ts, err := f.Ints(KeyTokenType)
		if err != nil {
			return nil, err
		}
		if len(ts) != len(t.Tokens) {
			return nil, fmt.Errorf("gguf: %s: %q has %d entries for %d tokens", f.Path, KeyTokenType, len(ts), len(t.Tokens))
		}
		t.TokenTypes = make([]int32, len(ts))
		for i, v := range ts {
			t.TokenTypes[i] = int32(v)
		}
	}
	if f.Has(KeyMerges) {
		if t.Merges, err = f.Strings(KeyMerges); err != nil {
			return nil, err
		}
	}
	if t.AddBOS, err = f.BoolOr(KeyAddBOS, false); err != nil {
		return nil, err
	}
	if t.AddEOS, err = f.BoolOr(KeyAddEOS, false); err != nil {
		return nil, err
	}
	if t.ChatTemplate, err = f.StringOr(KeyChatTemplate, ""); err != nil {
		return nil, err
	}
	return t, nil
}
