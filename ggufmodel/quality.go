package ggufmodel

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// RandomPrompt returns n token ids drawn uniformly from [0, vocab) with a
// fixed generator seeded by seed: the same prompt on every machine.
func RandomPrompt(n, vocab int, seed uint64) []int32 {
	r := rand.New(rand.NewPCG(seed, 0x52494e474f)) // "RINGO"
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(r.IntN(vocab))
	}
	return out
}

// Agreement compares the next-token distributions of a quantized model with
// those of a reference, position by position.
type Agreement struct {
	// Positions is the number of compared rows.
	Positions int
	// Top1 is the fraction of positions where both models' most likely
	// token is the same.
	Top1 float64
	// MeanKL and MaxKL are the mean and largest KL(ref ‖ quant) in nats.
	MeanKL, MaxKL float64
}

// String formats the agreement as "top-1 98.4%, KL mean 0.0012 max 0.0100".
func (a Agreement) String() string {
	return fmt.Sprintf("top-1 %.1f%%, KL mean %.4g max %.4g (%d positions)", 100*a.Top1, a.MeanKL, a.MaxKL, a.Positions)
}

// CompareLogits compares rows of V logits (ref and got hold the same number
// of rows): top-1 agreement and KL(softmax(ref) ‖ softmax(got)), computed in
// float64.
func CompareLogits(ref, got []float32, V int) (Agreement, error) {
	if V <= 0 || len(ref) != len(got) || len(ref)%V != 0 {
		return Agreement{}, fmt.Errorf("compare logits: %d and %d values for rows of %d", len(ref), len(got), V)
	}
	var a Agreement
	a.Positions = len(ref) / V
	if a.Positions == 0 {
		return a, nil
	}
	p := make([]float64, V)
	q := make([]float64, V)
	agree := 0
	for r := 0; r < a.Positions; r++ {
		x, y := ref[r*V:(r+1)*V], got[r*V:(r+1)*V]
		if argmax32(x) == argmax32(y) {
			agree++
		}
		logSoftmax(p, x)
		logSoftmax(q, y)
		kl := 0.0
		for i := range p {
			if p[i] > -700 {
				kl += math.Exp(p[i]) * (p[i] - q[i])
			}
		}
		kl = math.Max(kl, 0)
		a.MeanKL += kl
		a.MaxKL = math.Max(a.MaxKL, kl)
	}
	a.MeanKL /= float64(a.Positions)
	a.Top1 = float64(agree) / float64(a.Positions)
	return a, nil
}

func argmax32(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// logSoftmax writes log(softmax(x)) into dst.
func logSoftmax(dst []float64, x []float32) {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	s := 0.0
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	ls := m + math.Log(s)
	for i, v := range x {
		dst[i] = float64(v) - ls
	}
}
