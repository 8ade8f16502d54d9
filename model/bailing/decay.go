package bailing

import (
	"fmt"
	"math"
	"os"
)

// DecayConvention selects the layer factor f(l) of the lightning-attention
// decay a_{l,h} = slope_h · f(l) (spec §4.2); sources disagree on it.
type DecayConvention string

// Known decay conventions.
const (
	DecaySGLang DecayConvention = "sglang" // f(l) = 1 − l/(L−1) + 1e-5 (default; SGLang, FLOOD)
	DecayHF     DecayConvention = "hf"     // f(l) = 1 − (l−1)/(L−1) + 1e-5 (HF remote code)
	DecayMLX    DecayConvention = "mlx"    // f(l) = 1 − max(0, l−1)/max(1, L−1) + 1e-5 (mlx-lm)
)

// DecayEnv is the environment variable that selects the convention when no flag does.
const DecayEnv = "RINGO_DECAY_CONVENTION"

// ParseDecayConvention checks a convention name; "" means the environment
// variable, then the default.
func ParseDecayConvention(s string) (DecayConvention, error) {
	if s == "" {
		s = os.Getenv(DecayEnv)
	}
	switch DecayConvention(s) {
	case "":
		return DecaySGLang, nil
	case DecaySGLang, DecayHF, DecayMLX:
		return DecayConvention(s), nil
	}
	return "", fmt.Errorf("unknown decay convention %q (want sglang, hf or mlx)", s)
}

// slopes returns the ALiBi-style per-head base slopes.
func slopes(h int) []float64 {
	pow2 := func(n int) []float64 {
		start := math.Pow(2, -math.Pow(2, -(math.Log2(float64(n))-3)))
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Pow(start, float64(i+1))
		}
		return out
	}
	if l := math.Log2(float64(h)); l == math.Floor(l) {
		return pow2(h)
	}
	p := 1 << int(math.Floor(math.Log2(float64(h))))
	out := pow2(p)
	extra := pow2(2 * p)
	for i := 0; len(out) < h; i += 2 {
		out = append(out, extra[i])
	}
	return out
}

// layerFactor returns f(l) for layer l of L.
func layerFactor(conv DecayConvention, l, L int) float64 {
	if L <= 1 {
		return 1 + 1e-5
	}
	switch conv {
	case DecayHF:
		return 1 - float64(l-1)/float64(L-1) + 1e-5
	case DecayMLX:
		return 1 - float64(max(0, l-1))/float64(max(1, L-1)) + 1e-5
	}
	return 1 - float64(l)/float64(L-1) + 1e-5
}

// Decay returns the per-head decay rates a_{l,h} (λ = exp(−a)) of layer l.
func Decay(conv DecayConvention, heads, l, L int) []float32 {
	f := layerFactor(conv, l, L)
	out := make([]float32, heads)
	for h, s := range slopes(heads) {
		out[h] = float32(s * f)
	}
	return out
}
