package backend

// AddRMSNormer is implemented by backends that fuse the residual addition
// with the normalisation that follows it (one pass over the row instead of
// two kernels).
type AddRMSNormer interface {
	// AddRMSNorm computes x = x + a, then dst = RMSNorm(x) with weight w over
	// groups of x.Cols (see Backend.RMSNorm). dst must not alias x or a.
	AddRMSNorm(dst, x, a Tensor, w Weight, eps float32)
}

// AddRMSNorm computes x = x + a and dst = RMSNorm(x)·w (one group per row),
// fused when b implements AddRMSNormer and as Add then RMSNorm otherwise;
// the results are the same either way.
func AddRMSNorm(b Backend, dst, x, a Tensor, w Weight, eps float32) {
	if f, ok := b.(AddRMSNormer); ok {
		f.AddRMSNorm(dst, x, a, w, eps)
		return
	}
	b.Add(x, x, a)
	b.RMSNorm(dst, x, w, x.Cols, eps)
}

// AddRMSNormToer is implemented by backends that fuse a residual addition
// into a new buffer with the normalisation that follows it.
type AddRMSNormToer interface {
	// AddRMSNormTo computes y = x + a, then dst = RMSNorm(y) with weight w
	// over groups of y.Cols; x and a are left unchanged. dst, y and x must
	// not overlap one another.
	AddRMSNormTo(dst, y, x, a Tensor, w Weight, eps float32)
}

// AddRMSNormTo computes y = x + a and dst = RMSNorm(y)·w (one group per
// row), fused when b implements AddRMSNormToer and as Add then RMSNorm
// otherwise; the results are the same either way, and the same as
// AddRMSNorm's in place.
func AddRMSNormTo(b Backend, dst, y, x, a Tensor, w Weight, eps float32) {
	if f, ok := b.(AddRMSNormToer); ok {
		f.AddRMSNormTo(dst, y, x, a, w, eps)
		return
	}
	b.Add(y, x, a)
	b.RMSNorm(dst, y, w, y.Cols, eps)
}

// RMSNormRoPEr is implemented by backends that fuse the per-head RMSNorm of
// q|k with the rotary embedding that follows it (one pass over each head).
type RMSNormRoPEr interface {
	// RMSNormRoPE normalises, in place, every head (headDim columns) of every
	// row of x with weight w (length headDim or x.Cols, see Backend.RMSNorm),
	// then rotates it by position pos[r] (see Backend.ApplyRoPE).
	RMSNormRoPE(x Tensor, w Weight, headDim int, eps float32, rope RoPE, pos []int32)
}

// RMSNormRoPE computes x = RoPE(RMSNorm(x)·w) per head of headDim columns,
// fused when b implements RMSNormRoPEr and as RMSNorm (group headDim) then
// ApplyRoPE otherwise; the results are the same either way.
func RMSNormRoPE(b Backend, x Tensor, w Weight, headDim int, eps float32, rope RoPE, pos []int32) {
	if f, ok := b.(RMSNormRoPEr); ok {
		f.RMSNormRoPE(x, w, headDim, eps, rope, pos)
		return
	}
	b.RMSNorm(x, x, w, headDim, eps)
	b.ApplyRoPE(x, headDim, rope, pos)
}

// RMSNormSigmoidMuler is implemented by backends that fuse a (grouped)
// RMSNorm with the sigmoid gating that follows it.
type RMSNormSigmoidMuler interface {
	// RMSNormSigmoidMul computes dst = RMSNorm(x)·w ⊙ sigmoid(gate), the norm
	// over every group of `group` columns (see Backend.RMSNorm). dst may alias
	// x but not gate.
	RMSNormSigmoidMul(dst, x, gate Tensor, w Weight, group int, eps float32)
}

// RMSNormSigmoidMul computes dst = RMSNorm(x)·w ⊙ sigmoid(gate), fused when b
// implements RMSNormSigmoidMuler and as RMSNorm then SigmoidMul otherwise;
// the results are the same either way. dst may alias x but not gate.
func RMSNormSigmoidMul(b Backend, dst, x, gate Tensor, w Weight, group int, eps float32) {
	if f, ok := b.(RMSNormSigmoidMuler); ok {
		f.RMSNormSigmoidMul(dst, x, gate, w, group, eps)
		return
	}
	b.RMSNorm(dst, x, w, group, eps)
	b.SigmoidMul(dst, dst, gate)
}

// NormRoPELightninger is implemented by backends that fuse the per-head
// RMSNorm and RoPE of q and k into the lightning attention that consumes
// them (decode: inside the recurrent step).
type NormRoPELightninger interface {
	// NormRoPELightning computes Lightning(dst, q, k, v, spans, states,
	// decay, scale) where q|k = qk (two halves of H·headDim columns, H =
	// len(decay)) after RMSNormRoPE(qk, w, headDim, eps, rope, pos), leaving
	// qk unchanged. It returns false, having done nothing, when the backend
	// cannot fuse these spans or shapes.
	NormRoPELightning(dst, qk, v Tensor, w Weight, headDim int, eps float32, rope RoPE, pos []int32, spans []Span, states []Tensor, decay []float32, scale float32) bool
}

// NormRoPELightning is RMSNormRoPE(b, qk, ...) then b.Lightning over the two
// halves of qk, fused when b implements NormRoPELightninger and accepts the
// spans; qk's contents afterwards are unspecified. The results are the
// same either way.
func NormRoPELightning(b Backend, dst, qk, v Tensor, w Weight, headDim int, eps float32, rope RoPE, pos []int32, spans []Span, states []Tensor, decay []float32, scale float32) {
	if f, ok := b.(NormRoPELightninger); ok && f.NormRoPELightning(dst, qk, v, w, headDim, eps, rope, pos, spans, states, decay, scale) {
		return
	}
	RMSNormRoPE(b, qk, w, headDim, eps, rope, pos)
	Hd := qk.Cols / 2
	b.Lightning(dst, qk.ColRange(0, Hd), qk.ColRange(Hd, Hd), v, spans, states, decay, scale)
}

// SharedMoEer is implemented by backends that fuse a MoE layer's shared
// expert into the routed experts' kernels (fewer launches in decode).
type SharedMoEer interface {
	// MoEShared computes dst = MoE(x) + (silu(x·gateᵀ) ⊙ x·upᵀ)·downᵀ, the
	// routed experts ex selected by rt (see Backend.MoE) plus one shared
	// SwiGLU expert with gateUp = [gate; up] stacked ([2I, D]) and down
	// [D, I]. It returns false, having done nothing, when the backend cannot
	// fuse these operands; the caller then runs the plain operations (MoE,
	// MatMul, SiLUMul, MatMul, Add), whose results are the same up to the
	// rounding of the order of the additions.
	MoEShared(dst, x Tensor, rt Routing, ex Experts, gateUp, down Weight) bool
}

// AddRMSNormRouter is implemented by backends that fuse a MoE layer's entry
// in decode: the residual add and norm, the router product and the routing.
type AddRMSNormRouter interface {
	// AddRMSNormRoute computes AddRMSNorm(dst, x, a, w, eps), then logits =
	// dst·routerᵀ, and returns Route(logits, bias, p). It returns nil,
	// having done nothing, when the backend cannot fuse these operands.
	AddRMSNormRoute(dst, x, a Tensor, w Weight, eps float32, logits Tensor, router, bias Weight, p RouteParams) Routing
}

// AddRMSNormRoute computes x = x + a, dst = RMSNorm(x)·w, logits = dst·routerᵀ
// and returns the routing of the logits, fused when b implements
// AddRMSNormRouter and accepts the operands, and as AddRMSNorm, MatMul and
// Route otherwise; the results are the same either way.
func AddRMSNormRoute(b Backend, dst, x, a Tensor, w Weight, eps float32, logits Tensor, router, bias Weight, p RouteParams) Routing {
	if f, ok := b.(AddRMSNormRouter); ok {
		if r := f.AddRMSNormRoute(dst, x, a, w, eps, logits, router, bias, p); r != nil {
			return r
		}
	}
	AddRMSNorm(b, dst, x, a, w, eps)
	b.MatMul(logits, dst, router)
	return b.Route(logits, bias, p)
}
