// Package bench measures a model's prefill and decode speed on its backend
// and the machine's rooflines (memory bandwidth, FMA peak), so that every
// figure can be reported as a fraction of what the hardware allows.
package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/kernels"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
)

// Options configure Run.
type Options struct {
	Prompt   int   // prompt tokens for the prefill measurement
	Gen      int   // decode steps per measurement
	Contexts []int // context lengths for the decode-vs-context curve
	Threads  int   // threads used by the backend (for the FMA roofline)
	Batch    int   // sequences decoded together (1: single stream)
	Seed     uint64
	// Backend, when it implements Rooflines, supplies the rooflines (a GPU's
	// memory bandwidth and tensor-core peak) instead of MeasureMachine.
	Backend any
	// SkipPrefill and SkipDecode leave out one of the two measurements.
	SkipPrefill, SkipDecode bool
	// Interleave > 0 decodes the contexts in turns of Interleave steps, so
	// that a machine whose speed drifts affects all of them alike; each
	// context's figure is then the time of its own steps. (A step that
	// follows another context's starts with caches that one filled.)
	Interleave int
	// Sample, when not nil, draws each decode step's next token from its
	// logits with these parameters (a sampler per sequence, seeded from
	// Seed), inside the timed step, as a generation would: the figure then
	// includes the draw, by the backend where it can (backend.Drawer) and
	// on the host otherwise.
	// Nil: random next tokens, the model's step alone.
	Sample *sample.Params
	// HostDraw keeps Sample's draws on the host (the logits read back).
	HostDraw bool
}

// Rooflines is implemented by backends that measure their own device:
// memory bandwidth in bytes/s and peak matrix-product FLOP/s.
type Rooflines interface {
	Rooflines() (bytesPerSec, flopsPerSec float64)
}

// Machine is the measured hardware.
type Machine struct {
	BandwidthGBs float64 `json:"bandwidth_gb_s"` // streaming read bandwidth, all threads
	PeakGFLOPs   float64 `json:"peak_gflop_s"`   // FMA peak of the threads used
	Threads      int     `json:"threads"`
	Device       bool    `json:"device,omitempty"` // the figures are the backend's device rooflines
}

// Point is one decode measurement at a context length.
type Point struct {
	Context       int     `json:"context"`
	DecodeTokS    float64 `json:"decode_tok_s"`
	BytesPerToken int64   `json:"bytes_per_token"`
	Roofline      float64 `json:"roofline_fraction"` // achieved ÷ (bandwidth ÷ bytes per token)
	// SpeedVsFirst (with Options.Interleave, from the second context on)
	// is this context's decode speed over the first context's, the median
	// over the rounds of turns of the two speeds in the same round: a
	// comparison that a drift of the machine's speed lasting longer than a
	// round does not bias, unlike the ratio of the two DecodeTokS.
	SpeedVsFirst float64 `json:"speed_vs_first,omitempty"`
	Turns        int     `json:"turns,omitempty"` // rounds behind SpeedVsFirst
}

// Result is what Run measured.
type Result struct {
	Model        string  `json:"model"`
	Machine      Machine `json:"machine"`
	PromptTokens int     `json:"prompt_tokens"`
	PrefillTokS  float64 `json:"prefill_tok_s"`
	PrefillFLOPs float64 `json:"prefill_flops_per_token"` // weight products (and the output layer, once per prompt)
	// PrefillAttnFLOPs is the attention's share per token: the softmax
	// layers over the causal prompt and the linear layers' recurrence.
	PrefillAttnFLOPs float64 `json:"prefill_attention_flops_per_token"`
	PrefillPeak      float64 `json:"prefill_peak_fraction"` // achieved FLOP/s (weights and attention) ÷ peak
	// PrefillWeightPeak counts the weight products only (the figure that
	// earlier versions reported as the fraction of peak).
	PrefillWeightPeak float64 `json:"prefill_weight_peak_fraction"`
	TTFTms            float64 `json:"ttft_ms"`
	// ColdTTFTms is the first prefill of the process, which pays one-time
	// costs (buffers and GEMM plans for the pass's shapes, kernels and
	// weight pages loaded on first use); the prefill figures above come from
	// a second one.
	ColdTTFTms float64 `json:"cold_ttft_ms"`
	Batch      int     `json:"batch"`
	// Sample is Options.Sample: each decode step includes the draw of the
	// next token with these parameters (nil: it does not), DeviceDraw
	// whether the backend drew them (else the host did).
	Sample     *sample.Params `json:"sample,omitempty"`
	DeviceDraw bool           `json:"device_draw,omitempty"`
	Decode     []Point        `json:"decode"`
	PeakRSSMiB float64        `json:"peak_rss_mib"`
	// HugeFileMiB and HugeAnonMiB are the memory-mapped files (weights) and
	// the heap (caches, states, weights built at load) mapped with huge pages
	// at the end of the decode measurements; -1 where the system does not say.
	HugeFileMiB float64 `json:"huge_pages_file_mib"`
	HugeAnonMiB float64 `json:"huge_pages_heap_mib"`
	WeightBytes int64   `json:"weight_bytes"`
	ActiveBytes int64   `json:"active_bytes_per_token"`
}

// synthesizer is implemented by states that can fake a long context for benchmarks.
type synthesizer interface{ Synthesize(n int, seed uint64) }

// MeasureMachine measures streaming read bandwidth over a buffer much
// larger than the caches and the FMA peak of threads cores.
func MeasureMachine(threads int) Machine {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	const n = 256 << 20 / 4 * 4 // 1 GiB of float32
	buf := hugepage.Make[float32](n)
	for i := 0; i < n; i += 1024 {
		buf[i] = 1
	}
	best := 0.0
	for rep := 0; rep < 5; rep++ {
		start := time.Now()
		var wg sync.WaitGroup
		per := n / threads
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func(s []float32) {
				defer wg.Done()
				kernels.SumSquares(s)
			}(buf[t*per : (t+1)*per])
		}
		wg.Wait()
		if gbs := float64(4*n) / time.Since(start).Seconds() / 1e9; gbs > best {
			best = gbs
		}
	}
	// FMA peak: all threads at once, best of three (the machine may be shared)
	var peak float64
	for rep := 0; rep < 3; rep++ {
		var sum float64
		var mu sync.Mutex
		var wg sync.WaitGroup
		for t := 0; t < threads; t++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f := kernels.PeakFLOPS(200 * time.Millisecond)
				mu.Lock()
				sum += f
				mu.Unlock()
			}()
		}
		wg.Wait()
		peak = max(peak, sum)
	}
	return Machine{BandwidthGBs: best, PeakGFLOPs: peak / 1e9, Threads: threads}
}

// Run measures m. The machine figures are measured first.
func Run(ctx context.Context, name string, m model.Model, o Options) (*Result, error) {
	if o.Prompt <= 0 {
		o.Prompt = 512
	}
	if o.Gen <= 0 {
		o.Gen = 32
	}
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if len(o.Contexts) == 0 {
		o.Contexts = []int{0}
	}
	info := m.Info()
	res := &Result{Model: name, PromptTokens: o.Prompt, Batch: o.Batch, Sample: o.Sample,
		WeightBytes: info.WeightBytes, ActiveBytes: info.ActiveBytes}
	r := rand.New(rand.NewPCG(o.Seed, 7))
	tokens := func(n int) []int32 {
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(r.IntN(info.VocabSize))
		}
		return out
	}
	// warm-up: touch the weights once
	warm := m.NewState()
	if err := m.Forward(ctx, []*model.Request{{State: warm, Tokens: tokens(8)}}); err != nil {
		return nil, err
	}
	warm.Free()
	// prefill
	if !o.SkipPrefill {
		// the first prefill is timed as the cold one; the measurement is
		// the second, of another random prompt of the same length
		var el float64
		for i := range 2 {
			st := m.NewState()
			start := time.Now()
			if err := m.Forward(ctx, []*model.Request{{State: st, Tokens: tokens(o.Prompt)}}); err != nil {
				st.Free()
				return nil, err
			}
			el = time.Since(start).Seconds()
			st.Free()
			if i == 0 {
				res.ColdTTFTms = el * 1000
			}
		}
		res.TTFTms = el * 1000
		res.PrefillTokS = float64(o.Prompt) / el
		res.PrefillFLOPs = float64(info.FLOPsPerToken) + float64(info.OutputFLOPs)/float64(o.Prompt)
		// attention over the prompt itself: (n+1)/2 keys per token on
		// average (causal), and the linear layers' recurrence
		res.PrefillAttnFLOPs = float64(info.AttentionFLOPsPerKey)*float64(o.Prompt+1)/2 + float64(info.LinearFLOPsPerToken)
	}
	// decode at each context
	if o.SkipDecode {
		o.Contexts = nil
	}
	// the sequences of a context length, after one untimed step
	prepare := func(c int) ([]*model.Request, error) {
		reqs := make([]*model.Request, o.Batch)
		for i := range reqs {
			s := m.NewState()
			if c > 0 {
				syn, ok := s.(synthesizer)
				if !ok {
					s.Free()
					for _, q := range reqs[:i] {
						q.State.Free()
					}
					return nil, fmt.Errorf("model state cannot synthesize a context of %d", c)
				}
				syn.Synthesize(c, o.Seed+uint64(i))
			}
			reqs[i] = &model.Request{State: s, Tokens: tokens(1)}
		}
		return reqs, m.Forward(ctx, reqs)
	}
	// step runs one timed decode step of reqs: random tokens in, or (with
	// o.Sample) the tokens its samplers drew from the step before
	type drawer struct {
		smp  *sample.Sampler
		draw model.Draw // the request's Draw (no allocation per step)
	}
	samplers := map[*model.Request]*drawer{}
	step := func(reqs []*model.Request) (time.Duration, error) {
		if o.Sample == nil {
			for _, q := range reqs {
				q.Tokens[0] = int32(r.IntN(info.VocabSize))
			}
		}
		start := time.Now()
		if o.Sample != nil {
			for i, q := range reqs {
				dr := samplers[q]
				if dr == nil {
					p := *o.Sample
					p.Seed = o.Seed + uint64(i)
					dr = &drawer{smp: sample.New(p)}
					samplers[q] = dr
				}
				q.Draw = nil
				if d, ok := dr.smp.Plan(); ok && !o.HostDraw {
					dr.draw = model.Draw(d)
					q.Draw = &dr.draw
				}
			}
		}
		err := m.Forward(ctx, reqs)
		if err == nil && o.Sample != nil {
			for _, q := range reqs {
				smp := samplers[q].smp
				id := q.Token
				if q.Drawn {
					res.DeviceDraw = true
				} else {
					id = smp.Sample(q.Logits)
				}
				q.Tokens[0] = id
				smp.Accept(id)
			}
		}
		return time.Since(start), err
	}
	// point is the decode figure of o.Gen steps at context c that took el
	point := func(c int, el float64) Point {
		tokS := float64(o.Gen*o.Batch) / el
		// bytes per step: the weights the batch reads (once per step) + each
		// sequence's KV cache and state.
		ctxLen := int64(c + o.Gen/2)
		perSeq := info.StateBytes*2 + ctxLen*info.KVBytesPerToken
		stepBytes := StepWeightBytes(info, o.Batch) + int64(o.Batch)*perSeq
		p := Point{Context: c, DecodeTokS: tokS, BytesPerToken: stepBytes / int64(o.Batch)}
		stepsPerS := float64(o.Gen) / el
		p.Roofline = stepsPerS * float64(stepBytes) // divided by the bandwidth below
		return p
	}
	free := func(reqs []*model.Request) {
		for _, q := range reqs {
			q.State.Free()
			delete(samplers, q)
		}
	}
	if o.Interleave > 0 && len(o.Contexts) > 1 {
		sets := make([][]*model.Request, len(o.Contexts))
		for i, c := range o.Contexts {
			reqs, err := prepare(c)
			sets[i] = reqs
			if err != nil {
				for _, s := range sets[:i+1] {
					free(s)
				}
				return nil, err
			}
		}
		el := make([]time.Duration, len(sets))
		var ratios [][]float64 // per context after the first: per round, its speed over the first's
		if len(sets) > 1 {
			ratios = make([][]float64, len(sets))
		}
		turn := make([]time.Duration, len(sets))
		for n0 := 0; n0 < o.Gen; n0 += o.Interleave {
			for i, reqs := range sets {
				turn[i] = 0
				for n := n0; n < min(o.Gen, n0+o.Interleave); n++ {
					d, err := step(reqs)
					if err != nil {
						for _, s := range sets {
							free(s)
						}
						return nil, err
					}
					turn[i] += d
				}
				el[i] += turn[i]
				if i > 0 && turn[i] > 0 {
					ratios[i] = append(ratios[i], turn[0].Seconds()/turn[i].Seconds())
				}
			}
		}
		for i, c := range o.Contexts {
			p := point(c, el[i].Seconds())
			if i > 0 && len(ratios[i]) > 0 {
				p.SpeedVsFirst, p.Turns = median(ratios[i]), len(ratios[i])
			}
			res.Decode = append(res.Decode, p)
			free(sets[i])
		}
		o.Contexts = nil
	}
	for _, c := range o.Contexts {
		reqs, err := prepare(c)
		if err != nil {
			free(reqs)
			return nil, err
		}
		var el time.Duration
		for n := 0; n < o.Gen; n++ {
			d, err := step(reqs)
			if err != nil {
				free(reqs)
				return nil, err
			}
			el += d
		}
		res.Decode = append(res.Decode, point(c, el.Seconds()))
		free(reqs)
	}
	res.PeakRSSMiB = peakRSS() // before the 1 GiB bandwidth buffer
	res.HugeFileMiB, res.HugeAnonMiB = -1, -1
	if anon, file, ok := hugepage.Usage(); ok {
		res.HugeFileMiB, res.HugeAnonMiB = float64(file)/(1<<20), float64(anon)/(1<<20)
	}
	if rl, ok := o.Backend.(Rooflines); ok {
		bw, fl := rl.Rooflines()
		res.Machine = Machine{BandwidthGBs: bw / 1e9, PeakGFLOPs: fl / 1e9, Threads: o.Threads, Device: true}
	} else {
		res.Machine = MeasureMachine(o.Threads)
	}
	res.PrefillPeak = res.PrefillTokS * (res.PrefillFLOPs + res.PrefillAttnFLOPs) / (res.Machine.PeakGFLOPs * 1e9)
	res.PrefillWeightPeak = res.PrefillTokS * res.PrefillFLOPs / (res.Machine.PeakGFLOPs * 1e9)
	for i := range res.Decode {
		res.Decode[i].Roofline /= res.Machine.BandwidthGBs * 1e9
	}
	return res, nil
}

// median returns the median of xs (not empty), which it sorts.
func median(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// peakRSS reads VmHWM from /proc (0 where unavailable).
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// ParseSizes parses "1k,8k,32k" into token counts.
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(strings.ToLower(f))
		if f == "" {
			continue
		}
		mul := 1
		switch {
		case strings.HasSuffix(f, "k"):
			mul, f = 1024, strings.TrimSuffix(f, "k")
		case strings.HasSuffix(f, "m"):
			mul, f = 1<<20, strings.TrimSuffix(f, "m")
		}
		v, err := strconv.Atoi(f)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, v*mul)
	}
	return out, nil
}

// StepWeightBytes is the weight bytes a decode step of batch sequences
// reads: every weight but the routed experts once, and each routed expert
// that some token of the batch selects once — with routing spread evenly
// (random routers, trained balanced ones) the expected share of experts
// selected is 1 − (1 − k/E)^batch, k/E for one sequence.
func StepWeightBytes(info model.Info, batch int) int64 {
	if info.Experts <= 0 || info.RoutedBytes <= 0 || batch <= 1 {
		return info.ActiveBytes
	}
	p := float64(info.ExpertsPerToken) / float64(info.Experts)
	one := info.RoutedBytes * int64(info.ExpertsPerToken) / int64(info.Experts) // as in ActiveBytes
	return info.ActiveBytes - one + int64(float64(info.RoutedBytes)*(1-math.Pow(1-p, float64(batch))))
}
