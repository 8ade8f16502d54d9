// Package sample picks the next token from logits: greedy, or temperature
// sampling with top-k, top-p and min-p filtering, and repetition, presence
// and frequency penalties, reproducible with a seed.
package sample

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sync"

	"github.com/ringo-ai/ringo/kernels"
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
	sums    []float64 // weights' pieces
	keys    []uint64  // sortDescKeys', topK's and drawCut's
	vkeys   []uint32  // drawSelect's value keys,
	qs      []uint64  // weights
	selPos  []int     // and candidates in range
	starts  []int     // drawCut's buckets
	fill    []int
	// u is the uniform number Plan took for the next draw (planned): the
	// next Sample uses it instead of taking its own
	u       float64
	planned bool
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

// Accept records a generated token (and forgets a number Plan took).
func (s *Sampler) Accept(id int32) {
	s.seen[id] = true
	s.counts[id]++
	s.planned = false
}

// Planned is a draw as Plan describes it, for a backend to make where the
// logits are (backend.Drawer; the fields are those of backend.Draw and
// model.Draw, so that the types convert).
type Planned struct {
	InvTemp float32 // 1/temperature; 0: greedy (the filters do not apply)
	U       float64 // the uniform number in [0, 1) the draw takes
	TopK    int32   // Params.TopK (0: off)
	TopP    float32 // Params.TopP (0 or 1: off)
	MinP    float32 // Params.MinP (0: off)
}

// Plan reports whether the next draw depends on the logits alone (no
// penalties), so that a backend can make it where the logits are
// (backend.Drawer), and returns it: greedy, or temperature sampling with
// the filters of Params and u, the uniform number in [0, 1) that Sample
// would take from the seeded generator: Plan takes it now, and a Sample
// before the next Accept uses it, so a seed gives the same tokens whether
// the backend or Sample draws. Without filters the draw is sample.Draw's;
// with them it is Sample's: the candidates (top-k, or the tokens within
// MinP, or 1e-4 for top-p alone, of the most likely one) by descending
// logit, lower id first, then min-p and top-p over their probabilities,
// and the token whose running sum in that order first exceeds u times the
// total kept.
func (s *Sampler) Plan() (Planned, bool) {
	p := s.p
	if rp := p.RepetitionPenalty; rp > 0 && rp != 1 || p.PresencePenalty != 0 || p.FrequencyPenalty != 0 {
		return Planned{}, false
	}
	if p.Temperature <= 0 {
		return Planned{}, true
	}
	if !s.planned {
		s.u, s.planned = s.rng.Float64(), true
	}
	d := Planned{InvTemp: 1 / p.Temperature, U: s.u}
	if p.TopK > 0 {
		d.TopK = int32(min(p.TopK, math.MaxInt32))
	}
	if p.TopP > 0 && p.TopP < 1 {
		d.TopP = p.TopP
	}
	if p.MinP > 0 {
		d.MinP = p.MinP
	}
	return d, true
}

// uniform returns the number Plan took, or else a new one.
func (s *Sampler) uniform() float64 {
	if s.planned {
		s.planned = false
		return s.u
	}
	return s.rng.Float64()
}

// Sample returns the next token for logits (which are not modified).
//
// Top-k keeps the k most likely tokens (ties: lower id first), then the
// probabilities are normalised over what is kept, min-p drops tokens below
// MinP times the most likely one, and top-p keeps the shortest prefix whose
// probability reaches TopP. No full sort of the vocabulary is needed: with
// no filter the draw scans the distribution in id order, the filters sort
// only the tokens that can survive them, and past selectMin of those (flat
// logits: top-p over every token) the draw selects instead of sorting.
func (s *Sampler) Sample(logits []float32) int32 {
	x := append(s.scratch[:0], logits...)
	s.scratch = x
	s.applyPenalties(x)
	if s.p.Temperature <= 0 {
		return Argmax(x)
	}
	mx := scaleMax(x, 1/s.p.Temperature) // (Plan's invTemp)
	topP := s.p.TopP > 0 && s.p.TopP < 1
	if s.p.TopK > 0 && s.p.TopK < len(x) {
		return s.drawSorted(x, s.topK(x, s.p.TopK), 0)
	}
	if !topP && s.p.MinP <= 0 {
		return s.drawAll(x, mx)
	}
	e, z := s.weights(x, mx) // z: the normaliser over the whole vocabulary
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
	if len(idx) > selectMin {
		return s.drawSelect(x, idx, z, mx)
	}
	return s.drawCut(x, idx, z, mx)
}

// selectMin is the most candidates a top-p or min-p draw sorts (drawCut);
// more are drawn by selection (drawSelect). The GPU's draws switch at the
// same count (backend/cuda's drawCap; and for top-p over every token at
// any count), so that both make a large draw alike.
const selectMin = 2048

// drawSelect is drawCut's draw for many candidates idx (in id order) found
// by selection instead of sorting, as the GPU makes it (backend/cuda's
// k_draw_sel): the kept prefix of the descKey order ends at the first
// candidate whose running probability reaches top-p of z (or at the last
// weighted one), and the draw is the first kept one whose running
// probability exceeds u times the kept total. Each is the first candidate
// in that order whose running weight reaches a target, found by a radix
// selection on the value half of descKey (digits of 11, 11 and 10 bits,
// each bin weighted by its candidates' probabilities) and then, among the
// candidates of the value found, by id. The probabilities are drawCut's,
// math.Exp(v − mx) (0 below min-p), summed in fixed point (p·2^S, S = 62 −
// bits(V), uint64: exact sums in any order), so the tokens are drawCut's
// unless a target falls within rounding (~2^-S) of a boundary.
func (s *Sampler) drawSelect(x []float32, idx []int, z float64, mx float32) int32 {
	n := len(idx)
	S := 62 - bits.Len(uint(len(x)))
	s.vkeys = slices.Grow(s.vkeys[:0], n)[:n]
	s.qs = slices.Grow(s.qs[:0], n)[:n]
	keys, q := s.vkeys, s.qs
	minP, scale := float64(s.p.MinP), math.Ldexp(1, S)
	fill := func(a, b int) {
		for j := a; j < b; j++ {
			v := x[idx[j]]
			keys[j] = uint32(descKey(v, 0) >> 32)
			p := math.Exp(float64(v - mx))
			if !(p >= minP) { // (and NaN)
				q[j] = 0
				continue
			}
			q[j] = uint64(math.RoundToEven(p * scale)) // (exact: a power of two)
		}
	}
	if n < parallelMin {
		fill(0, n)
	} else {
		inPieces(n, func(_, a, b int) { fill(a, b) })
	}
	var hist0 [selBins]uint64 // the first digit's bins, for both selections
	var tot uint64
	for j, k := range keys {
		hist0[k>>21] += q[j]
		tot += q[j]
	}
	if tot == 0 { // (no finite weight: infinite logits)
		return s.drawCut(x, idx, z, mx)
	}
	target := tot
	if s.p.TopP > 0 && s.p.TopP < 1 {
		if t := math.Ceil(math.Ldexp(float64(s.p.TopP)*z, S)); t < float64(tot) {
			target = max(1, uint64(t))
		}
	}
	kept, _ := s.selectWeight(keys, q, &hist0, target)
	r := math.Floor(s.uniform() * float64(kept)) // the first running weight above u·kept
	t2 := kept
	if r < float64(kept) {
		t2 = uint64(r) + 1
	}
	_, j := s.selectWeight(keys, q, &hist0, t2)
	return int32(idx[j])
}

// selBins is the bins of drawSelect's first two digits (the last has half).
const selBins = 2048

// selectWeight returns the position j (in keys and q) of the first
// candidate in descKey order whose running weight reaches target (1 ≤
// target ≤ the total weight), and the running weight up to and with it.
// hist0 is the first digit's bins.
func (s *Sampler) selectWeight(keys []uint32, q []uint64, hist0 *[selBins]uint64, target uint64) (through uint64, j int) {
	var a uint64 // the weight before the digits found so far
	// reaches returns the bin of h where the running weight from a reaches
	// target, adding the bins before it to a
	reaches := func(h []uint64) uint32 {
		for b, w := range h {
			if a+w >= target && w > 0 {
				return uint32(b)
			}
			a += w
		}
		panic("sample: selection target past the total weight")
	}
	key := reaches(hist0[:]) << 21
	// the candidates of that first digit, then of the first two
	pos := s.selPos[:0]
	var hist [selBins]uint64
	for j, k := range keys {
		if k>>21 == key>>21 && q[j] > 0 {
			pos = append(pos, j)
			hist[k>>10&(selBins-1)] += q[j]
		}
	}
	key |= reaches(hist[:]) << 10
	clear(hist[:])
	m := 0
	for _, j := range pos {
		if keys[j]>>10 == key>>10 {
			pos[m] = j
			m++
			hist[keys[j]&(selBins/2-1)] += q[j]
		}
	}
	pos = pos[:m]
	s.selPos = pos
	key |= reaches(hist[:selBins/2])
	// the candidates of that value weigh the same: the k-th of them in id
	// order (pos keeps idx's order) is the one
	var qk, k uint64
	for _, j := range pos {
		if keys[j] != key {
			continue
		}
		if qk == 0 {
			qk = q[j]
			k = (target - a + qk - 1) / qk
			through = a + k*qk
		}
		if k--; k == 0 {
			return through, j
		}
	}
	panic("sample: selection found too few tied candidates")
}

// cutBuckets bounds the buckets of drawCut (one per two candidates below
// that).
const cutBuckets = 1 << 16

// drawCut is drawSorted for the candidates idx of a top-p or min-p draw (z:
// the whole vocabulary's weight, mx the largest of x, a candidate): the
// same probabilities, sums and comparisons in the same order, but sorted
// only as far as the draw goes. The candidates go into buckets by value
// (bucket b holds (mx − v)·scale in [b, b+1): a value's bucket never
// decreases as the value does, ties share one), and each bucket is sorted
// by descKey when the draw reaches it, so that the buckets in turn give
// the full sort's order. Sample takes it for at most selectMin candidates;
// with flat logits top-p keeps most of the vocabulary in its candidates
// (every token when those within 1e-4 of the most likely one weigh less
// than top-p), where drawCut took ~10 ms a draw over 157,184 tokens on a
// 2-core machine and drawSelect takes ~3.5.
func (s *Sampler) drawCut(x []float32, idx []int, z float64, mx float32) int32 {
	n := len(idx)
	lo := mx
	for _, id := range idx {
		lo = min(lo, x[id])
	}
	nb, scale := 1, float32(0)
	if lo < mx {
		nb = min(cutBuckets, n/2+1)
		scale = float32(nb) / (mx - lo)
	}
	bucket := func(v float32) int { return min(nb-1, int((mx-v)*scale)) }
	// a counting sort of the keys into the buckets (starts[b]: the first of
	// bucket b; keys[n:] holds them in idx's order meanwhile)
	starts := slices.Grow(s.starts[:0], nb+1)[:nb+1]
	clear(starts)
	s.starts = starts
	keys := slices.Grow(s.keys[:0], 2*n)[:2*n]
	s.keys = keys
	for i, id := range idx {
		keys[n+i] = descKey(x[id], id)
		starts[bucket(x[id])+1]++
	}
	for b := 1; b <= nb; b++ {
		starts[b] += starts[b-1]
	}
	fill := s.fill[:0]
	fill = append(fill, starts[:nb]...)
	s.fill = fill
	for _, k := range keys[n:] {
		b := bucket(x[int(uint32(k))])
		keys[fill[b]] = k
		fill[b]++
	}
	// drawSorted's loops over the kept prefix, a bucket at a time
	lim, topP := float64(s.p.MinP), s.p.TopP > 0 && s.p.TopP < 1
	probs, order := s.probs[:0], idx[:0] // (idx is read no more)
	var c float64
	for b := 0; b < nb; b++ {
		bk := keys[starts[b]:starts[b+1]]
		slices.Sort(bk)
		done := false
		for _, k := range bk {
			id := int(uint32(k))
			p := math.Exp(float64(x[id] - mx))
			if s.p.MinP > 0 && len(probs) > 0 && p < lim {
				done = true // min-p: the rest are below too
				break
			}
			probs, order = append(probs, p), append(order, id)
			if topP {
				if c += p / z; c >= float64(s.p.TopP) {
					done = true
					break
				}
			}
		}
		if done {
			break
		}
	}
	s.probs, s.idx = probs, order
	return s.pick(probs, order)
}

// pick draws one of ids with probabilities probs (their sum normalises
// them): the first whose running sum exceeds a uniform number times the
// total, the last if rounding leaves none.
func (s *Sampler) pick(probs []float64, ids []int) int32 {
	var tot float64
	for _, p := range probs {
		tot += p
	}
	r := s.uniform() * tot
	for i, p := range probs {
		r -= p
		if r < 0 {
			return int32(ids[i])
		}
	}
	return int32(ids[len(ids)-1])
}

// tailCut is how far below the largest scaled logit a token still gets a
// weight: the ones further down would each weigh less than e^-tailCut ≈
// 9.4e-14 of the most likely one (at most 1.5e-8 of the total together over
// a 157,184-token vocabulary, below the float32 rounding of the weights
// themselves) and get none, which spares their exponentials: with a
// language model's peaked logits, most of the vocabulary's.
const tailCut = 30

// weightChunks is the number of pieces weights cuts a vocabulary of at
// least parallelMin tokens into, each summed by its own goroutine: a
// constant, so that the sums (and so the draws of a seed) do not depend on
// the machine's cores.
const (
	weightChunks = 16
	parallelMin  = 1 << 15
)

// weights stores the weights exp(v − mx) of x (scaled logits, mx their
// largest) in s.exps as float32 (kernels.ExpNeg, eight at a time where
// there is assembly, the same values either way), none for the tokens more
// than tailCut below mx, and returns them and their sum: each piece's in
// kernels.ExpWeights' four lanes, added as (0 + 1) + (2 + 3); in
// weightChunks pieces summed apart and then in order for large
// vocabularies (their sums in s.sums), in one piece otherwise (s.sums
// empty). So a seed's draws over finite logits are the same on every
// machine.
func (s *Sampler) weights(x []float32, mx float32) (e []float32, z float64) {
	n := len(x)
	e = slices.Grow(s.exps[:0], n)[:n]
	s.exps = e
	part := func(a, b int) float64 {
		z := kernels.ExpWeights(e[a:b], x[a:b], mx, mx-tailCut)
		return (z[0] + z[1]) + (z[2] + z[3])
	}
	s.sums = s.sums[:0]
	if n < parallelMin {
		return e, part(0, n)
	}
	s.sums = slices.Grow(s.sums, weightChunks)[:weightChunks]
	inPieces(n, func(c, a, b int) { s.sums[c] = part(a, b) })
	for _, v := range s.sums {
		z += v
	}
	return e, z
}

// inPieces calls f(c, a, b) for the weightChunks pieces [a, b) of [0, n),
// piece c on its own goroutine, and waits for them.
func inPieces(n int, f func(c, a, b int)) {
	var wg sync.WaitGroup
	for c := range weightChunks {
		wg.Go(func() { f(c, c*n/weightChunks, (c+1)*n/weightChunks) })
	}
	wg.Wait()
}

// scaleMax multiplies x by inv and returns the largest product, in
// weightChunks pieces by goroutines from parallelMin values (the same
// products and maximum either way).
func scaleMax(x []float32, inv float32) float32 {
	part := func(a, b int) float32 {
		kernels.Scale(inv, x[a:b])
		return kernels.Max(x[a:b])
	}
	n := len(x)
	if n < parallelMin {
		return part(0, n)
	}
	var mxs [weightChunks]float32
	inPieces(n, func(c, a, b int) { mxs[c] = part(a, b) })
	mx := mxs[0]
	for _, v := range mxs[1:] {
		mx = max(mx, v)
	}
	return mx
}

// drawAll draws from the whole distribution softmax(x) (x scaled by the
// temperature, mx its largest value), scanning it in id order (past whole
// pieces of weights first where it has their sums): the plain temperature
// sampling without filters.
func (s *Sampler) drawAll(x []float32, mx float32) int32 {
	e, z := s.weights(x, mx)
	r := s.uniform() * z
	i0 := 0
	for c, v := range s.sums {
		if r < v || c == len(s.sums)-1 {
			i0 = c * len(e) / len(s.sums)
			break
		}
		r -= v
	}
	for i := i0; i < len(e); i++ {
		r -= float64(e[i])
		if r < 0 {
			return int32(i)
		}
	}
	return Argmax(x)
}

// topK returns the indices of the k largest values of x, sorted descending
// (ties: lower index first).
func (s *Sampler) topK(x []float32, k int) []int {
	idx := s.idx[:0]
	if k >= len(x)/8 {
		for i := range x {
			idx = append(idx, i)
		}
		s.idx = idx
		s.keys = sortDescKeys(idx, x, s.keys)
		return idx[:k]
	}
	// selection into a small sorted prefix of keys, in id order: once it
	// holds k, a value not above its last one's cannot enter (an equal
	// value has a higher id than every key there), which a plain
	// comparison rules out for most of the vocabulary
	top := slices.Grow(s.keys[:0], k)
	thr := float32(math.Inf(-1))
	for i, v := range x {
		if len(top) == k && v <= thr {
			continue
		}
		key := descKey(v, i)
		if len(top) < k {
			j, _ := slices.BinarySearch(top, key)
			top = slices.Insert(top, j, key)
		} else if key < top[k-1] {
			j, _ := slices.BinarySearch(top, key)
			copy(top[j+1:], top[j:k-1])
			top[j] = key
		} else {
			continue
		}
		if len(top) == k {
			thr = x[int(uint32(top[k-1]))]
		}
	}
	s.keys = top
	for _, key := range top {
		idx = append(idx, int(uint32(key)))
	}
	s.idx = idx
	return idx
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
	return s.pick(probs[:n], idx[:n])
}

// sortDescKeys orders idx by descending x (ties: lower index first),
// sorting descKey's packed keys: integers, without a comparison function
// (with sort.Slice the sort took about a third of a top-p draw's 7.6 ms
// over 157,184 tokens). keys is the room for the keys, grown as needed and
// returned, so that a Sampler reuses it from draw to draw.
func sortDescKeys(idx []int, x []float32, keys []uint64) []uint64 {
	keys = slices.Grow(keys[:0], len(idx))[:len(idx)]
	for i, id := range idx {
		keys[i] = descKey(x[id], id)
	}
	slices.Sort(keys)
	for i, k := range keys {
		idx[i] = int(uint32(k))
	}
	return keys
}

// descKey packs token id's value v so that ascending keys order tokens by
// descending value, then ascending id: v's bits made order-preserving (the
// sign bit flipped for v >= 0, every bit for v < 0; -0 counted as +0, as
// the comparison v != w does) and inverted in the high half, id in the
// low. Ids are below 2^32.
func descKey(v float32, id int) uint64 {
	if v == 0 {
		v = 0
	}
	b := math.Float32bits(v)
	if b&(1<<31) != 0 {
		b = ^b
	} else {
		b |= 1 << 31
	}
	return uint64(^b)<<32 | uint64(uint32(id))
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

// LogSoftmax writes log-probabilities of logits into dst (as long as
// logits). The normaliser sums the weights of kernels.ExpWeights, which
// dst holds meanwhile: tokens more than tailCut below the largest logit
// add nothing to it (under 1.5e-8 of it over 157,184 tokens), and each
// weight is within about two float32 units in the last place.
func LogSoftmax(dst, logits []float32) {
	dst = dst[:len(logits)]
	mx := kernels.Max(logits)
	z := kernels.ExpWeights(dst, logits, mx, mx-tailCut)
	l := float32(math.Log((z[0]+z[1])+(z[2]+z[3]))) + mx
	for i, v := range logits {
		dst[i] = v - l
	}
}

// Draw is the draw that Plan describes, in the plainest form: a reference
// for backends that draw where the logits are (backend.Drawer), whose sums
// may be taken in another order (so that the token differs only when u
// times the total falls within rounding of a boundary between two tokens).
func Draw(logits []float32, invTemp float32, u float64) int32 {
	if invTemp <= 0 {
		return Argmax(logits)
	}
	x, e := drawWeights(logits, invTemp)
	var z float64
	for _, w := range e {
		z += float64(w)
	}
	r := u * z
	for i, w := range e {
		r -= float64(w)
		if r < 0 {
			return int32(i)
		}
	}
	return Argmax(x)
}

// drawWeights returns Draw's scaled logits and their weights.
func drawWeights(logits []float32, invTemp float32) (x, e []float32) {
	x = make([]float32, len(logits))
	for i, v := range logits {
		x[i] = v * invTemp
	}
	mx := kernels.Max(x)
	e = make([]float32, len(x))
	for i, v := range x {
		if v >= mx-tailCut {
			e[i] = kernels.ExpNeg(v - mx)
		}
	}
	return x, e
}
