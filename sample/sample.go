// Package sample picks the next token from logits: greedy, or temperature
// sampling with top-k, top-p and min-p filtering, and repetition, presence
// and frequency penalties, reproducible with a seed.
package sample

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Params configure a Sampler. The zero value is greedy decoding.
type Params struct {
	Temperature float32 // 0: greedy (argmax)
	TopK        int     // keep the k most likely tokens (0: all)
	TopP        float32 // keep the smallest set with probability ≥ TopP (0 or 1: all)
	MinP        float32 // drop tokens with p < MinP·p_max (0: off)
	// RepetitionPenalty divides positive (multiplies negative) logits of every
	// token seen in the prompt or output (1 or 0: off), as in Hugging Face.
	RepetitionPenalty float32
	// PresencePenalty and FrequencyPenalty subtract, as in OpenAI's API,
	// presence + frequency·count from the logits of tokens already generated.
	PresencePenalty  float32
	FrequencyPenalty float32
	Seed             uint64 // random seed; equal seeds give equal samples
}

// Sampler draws tokens for one sequence.
type Sampler struct {
	p       Params
	rng     *rand.Rand
	seen    map[int32]bool // prompt and output tokens
	counts  map[int32]int  // output tokens
	scratch []float32
	idx     []int
	probs   []float64
	exps    []float32
}

// New returns a Sampler.
func New(p Params) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)), seen: map[int32]bool{}, counts: map[int32]int{}}
}

// Params returns the sampler's parameters.
func (s *Sampler) Params() Params { return s.p }

// AcceptPrompt records prompt tokens (for the repetition penalty).
func (s *Sampler) AcceptPrompt(ids []int32) {
	for _, id := range ids {
		s.seen[id] = true
	}
}

// Accept records a generated token.
func (s *Sampler) Accept(id int32) {
	s.seen[id] = true
	s.counts[id]++
}

// Sample returns the next token for logits (which are not modified).
//
// Top-k keeps the k most likely tokens (ties: lower id first), then the
// probabilities are normalised over what is kept, min-p drops tokens below
// MinP times the most likely one, and top-p keeps the shortest prefix whose
// probability reaches TopP. No full sort of the vocabulary is needed: with
// no filter the draw scans the distribution in id order, and the filters
// sort only the tokens that can survive them.
func (s *Sampler) Sample(logits []float32) int32 {
	x := append(s.scratch[:0], logits...)
	s.scratch = x
	s.applyPenalties(x)
	if s.p.Temperature <= 0 {
		return Argmax(x)
	}
	inv := 1 / s.p.Temperature
	mx := float32(math.Inf(-1))
	for i := range x {
		x[i] *= inv
		mx = max(mx, x[i])
	}
	topP := s.p.TopP > 0 && s.p.TopP < 1
	if s.p.TopK > 0 && s.p.TopK < len(x) {
		return s.drawSorted(x, s.topK(x, s.p.TopK), 0)
	}
	var z float64 // normaliser over the whole vocabulary
	e := s.exps[:0]
	for _, v := range x {
		q := float32(math.Exp(float64(v - mx)))
		e = append(e, q)
		z += float64(q)
	}
	s.exps = e
	if !topP && s.p.MinP <= 0 {
		r := s.rng.Float64() * z
		for i, q := range e {
			r -= float64(q)
			if r < 0 {
				return int32(i)
			}
		}
		return Argmax(x)
	}
	// Only tokens with p ≥ eps·p_max can survive min-p; for top-p alone,
	// try the tokens above a small relative cut first and fall back to all
	// of them if their mass does not reach TopP.
	eps := float64(s.p.MinP)
	if eps <= 0 {
		eps = 1e-4
	}
	cut := mx + float32(math.Log(eps))
	idx := s.idx[:0]
	var mass float64
	for i, v := range x {
		if v >= cut {
			idx = append(idx, i)
			mass += float64(e[i])
		}
	}
	s.idx = idx
	if s.p.MinP <= 0 && mass/z < float64(s.p.TopP) {
		idx = s.idx[:0]
		for i := range x {
			idx = append(idx, i)
		}
		s.idx = idx
	}
	sortDesc(idx, x)
	return s.drawSorted(x, idx, z)
}

// topK returns the indices of the k largest values of x, sorted descending
// (ties: lower index first).
func (s *Sampler) topK(x []float32, k int) []int {
	idx := s.idx[:0]
	for i := range x {
		idx = append(idx, i)
	}
	s.idx = idx
	partialSort(idx, x, k)
	return idx[:k]
}

// drawSorted applies min-p and top-p to candidates sorted by descending
// logit and draws one. z normalises the probabilities (0: normalise over
// the candidates).
func (s *Sampler) drawSorted(x []float32, idx []int, z float64) int32 {
	mx := x[idx[0]]
	probs := s.probs[:0]
	var sum float64
	for _, id := range idx {
		p := math.Exp(float64(x[id] - mx))
		probs = append(probs, p)
		sum += p
	}
	s.probs = probs
	if z == 0 {
		z = sum
	}
	n := len(idx)
	if s.p.MinP > 0 {
		lim := float64(s.p.MinP) * probs[0]
		for n > 1 && probs[n-1] < lim {
			n--
		}
	}
	if s.p.TopP > 0 && s.p.TopP < 1 {
		var c float64
		for i := 0; i < n; i++ {
			c += probs[i] / z
			if c >= float64(s.p.TopP) {
				n = i + 1
				break
			}
		}
	}
	var tot float64
	for _, p := range probs[:n] {
		tot += p
	}
	r := s.rng.Float64() * tot
	for i, p := range probs[:n] {
		r -= p
		if r < 0 {
			return int32(idx[i])
		}
	}
	return int32(idx[n-1])
}

// sortDesc orders idx by descending x (ties: lower index first).
func sortDesc(idx []int, x []float32) {
	sort.Slice(idx, func(i, j int) bool {
		if x[idx[i]] != x[idx[j]] {
			return x[idx[i]] > x[idx[j]]
		}
		return idx[i] < idx[j]
	})
}

func (s *Sampler) applyPenalties(x []float32) {
	if rp := s.p.RepetitionPenalty; rp > 0 && rp != 1 {
		for id := range s.seen {
			if int(id) < len(x) {
				if x[id] > 0 {
					x[id] /= rp
				} else {
					x[id] *= rp
				}
			}
		}
	}
	if s.p.PresencePenalty != 0 || s.p.FrequencyPenalty != 0 {
		for id, c := range s.counts {
			if int(id) < len(x) {
				x[id] -= s.p.PresencePenalty + s.p.FrequencyPenalty*float32(c)
			}
		}
	}
}

// partialSort orders the first k entries of idx by descending x (ties: lower index first).
func partialSort(idx []int, x []float32, k int) {
	less := func(a, b int) bool {
		if x[a] != x[b] {
			return x[a] > x[b]
		}
		return a < b
	}
	if k < len(idx)/8 {
		// selection into a small sorted prefix
		top := idx[:0:0]
		for _, id := range idx {
			if len(top) < k {
				top = append(top, id)
				sort.Slice(top, func(i, j int) bool { return less(top[i], top[j]) })
				continue
			}
			if less(id, top[k-1]) {
				j := sort.Search(k, func(i int) bool { return less(id, top[i]) })
				copy(top[j+1:], top[j:k-1])
				top[j] = id
			}
		}
		copy(idx, top)
		return
	}
	sort.Slice(idx, func(i, j int) bool { return less(idx[i], idx[j]) })
}

// Argmax returns the index of the largest value (the lowest such index).
func Argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// LogSoftmax writes log-probabilities of logits into dst.
func LogSoftmax(dst, logits []float32) {
	mx := float32(math.Inf(-1))
	for _, v := range logits {
		mx = max(mx, v)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - mx))
	}
	l := float32(math.Log(sum)) + mx
	for i, v := range logits {
		dst[i] = v - l
	}
}
