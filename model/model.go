// Package model defines what every language model architecture provides to
// the engine: per-sequence state that can be extended, forked and dropped,
// and a batched forward pass that returns logits.
package model

import "context"

// Info describes a loaded model.
type Info struct {
	Arch        string  // config architecture name
	VocabSize   int     // rows of the output layer
	MaxContext  int     // max_position_embeddings
	EOS         []int32 // ids that end generation (config and generation_config)
	Layers      int
	LinearLayer []bool // per layer: lightning attention (true) or softmax
	// WeightBytes is the stored size of all weights; ActiveBytes the weight
	// bytes read to compute one token (routed experts counted TopK/E, the
	// embedding table one row).
	WeightBytes, ActiveBytes int64
	// RoutedBytes is the stored size of all routed experts (0 without MoE),
	// of which a token reads ExpertsPerToken/Experts (in ActiveBytes); a
	// batch reads each expert that any of its tokens selects once.
	RoutedBytes              int64
	Experts, ExpertsPerToken int
	// KVBytesPerToken is the KV cache growth per token; StateBytes the fixed
	// per-sequence state (linear attention), both as stored by the backend.
	KVBytesPerToken, StateBytes int64
	// FLOPsPerToken is 2·(active multiply-accumulates) of the weight products
	// of the layers, excluding attention over the context and the output
	// layer, whose cost is OutputFLOPs for each token whose logits are wanted.
	FLOPsPerToken, OutputFLOPs int64
	// AttentionFLOPsPerKey is 2·(multiply-accumulates) of the softmax
	// layers' attention per (query token, visible key) pair: Q·Kᵀ and P·V
	// over all query heads. A fresh prompt of n tokens sees n(n+1)/2 pairs.
	AttentionFLOPsPerKey int64
	// LinearFLOPsPerToken is 2·(multiply-accumulates) of the linear
	// attention layers per token in the recurrent form: the state update
	// kᵀv and the readout q·S, head dim² each per head.
	LinearFLOPsPerToken int64
}

// State is one sequence's cache (KV cache and linear-attention states).
type State interface {
	// Len is the number of tokens the state has consumed.
	Len() int
	// Fork returns an independent copy that continues identically.
	Fork() State
	// Free releases the state's memory; it must not be used afterwards.
	Free()
	// Bytes is the memory the state holds.
	Bytes() int64
}

// Request asks Forward to append Tokens to State.
type Request struct {
	State  State
	Tokens []int32
	// All selects logits for every token (len(Tokens)·VocabSize values);
	// otherwise only the last token's logits are returned.
	All bool
	// Logits receives the result; it is grown as needed and reused.
	Logits []float32
	// Draw, when not nil (and All is false), asks for the next token
	// instead of its logits where the backend can draw it where the logits
	// are (backend.Drawer), as sample.Sampler.Plan describes. Forward then
	// sets Drawn and Token and leaves Logits empty; otherwise (also where
	// the backend declines that draw) it fills Logits.
	Draw  *Draw
	Drawn bool
	Token int32
}

// Draw is a Request's token draw (see Request.Draw; sample.Planned and
// backend.Draw convert to and from it).
type Draw struct {
	InvTemp float32 // 1/temperature; 0: greedy
	U       float64 // uniform number in [0, 1)
	TopK    int32   // 0: off
	TopP    float32 // 0: off
	MinP    float32 // 0: off
}

// Model is a loaded language model.
type Model interface {
	Info() Info
	// NewState returns an empty sequence state.
	NewState() State
	// Forward runs all requests as one batch, extending each state, and
	// fills each request's Logits. It is not safe for concurrent use.
	Forward(ctx context.Context, reqs []*Request) error
	// Close releases the model's weights.
	Close() error
}
