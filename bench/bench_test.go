package bench_test

import (
	"context"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/bench"
	"github.com/ringo-ai/ringo/engine"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
)

// rooflines stands in for a device's measured rooflines, so that the test
// does not measure the machine.
type rooflines struct{}

func (rooflines) Rooflines() (float64, float64) { return 100e9, 1e12 }

// TestRunContexts runs the prefill and decode measurements on a fixture
// model, with the contexts decoded one after the other and in turns:
// every context gets its point, in order, with a speed and a roofline
// fraction, and the longer context reads more bytes per token.
func TestRunContexts(t *testing.T) {
	m, err := engine.Load("../testdata/tiny-softmax", engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctxs := []int{16, 200, 16}
	for _, interleave := range []int{0, 1, 2} {
		res, err := bench.Run(context.Background(), "tiny", m, bench.Options{
			Prompt: 8, Gen: 5, Contexts: ctxs, Backend: rooflines{}, Interleave: interleave})
		if err != nil {
			t.Fatal(err)
		}
		if res.PrefillTokS <= 0 || !res.Machine.Device {
			t.Errorf("interleave %v: prefill %v tok/s, machine %+v", interleave, res.PrefillTokS, res.Machine)
		}
		if len(res.Decode) != len(ctxs) {
			t.Fatalf("interleave %v: %d decode points, want %d", interleave, len(res.Decode), len(ctxs))
		}
		for i, p := range res.Decode {
			if p.Context != ctxs[i] || p.DecodeTokS <= 0 || p.Roofline <= 0 {
				t.Errorf("interleave %v: point %d = %+v", interleave, i, p)
			}
			// the median speed over the first context's, per round of
			// turns: ceil(5 / interleave) rounds
			if want := 0; interleave > 0 && i > 0 {
				want = (5 + interleave - 1) / interleave
				if p.Turns != want || p.SpeedVsFirst <= 0 {
					t.Errorf("interleave %v: point %d: speed over the first %v from %d turns, want %d turns", interleave, i, p.SpeedVsFirst, p.Turns, want)
				}
			} else if p.Turns != 0 || p.SpeedVsFirst != 0 {
				t.Errorf("interleave %v: point %d: speed over the first %v from %d turns, want none", interleave, i, p.SpeedVsFirst, p.Turns)
			}
		}
		if a, b := res.Decode[0].BytesPerToken, res.Decode[1].BytesPerToken; b <= a {
			t.Errorf("interleave %v: %d bytes per token at 200, %d at 16", interleave, b, a)
		}
	}
}

// TestMedian checks the median of odd and even counts.
func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := bench.Median(slices.Clone(c.xs)); got != c.want {
			t.Errorf("median of %v = %v, want %v", c.xs, got, c.want)
		}
	}
}

// TestStepWeightBytes checks the weight bytes of a decode step: one
// sequence reads the active bytes, a batch each expert any token selects
// (1 − (1 − k/E)^B of them in expectation), never more than all of them.
func TestStepWeightBytes(t *testing.T) {
	info := model.Info{ActiveBytes: 1000 + 8*100, RoutedBytes: 256 * 100, Experts: 256, ExpertsPerToken: 8}
	for _, c := range []struct {
		batch int
		want  int64
	}{
		{1, 1800},
		{2, 1000 + 1575},   // 256·100·(1 − (31/32)²) = 1575
		{64, 1000 + 22244}, // 256·100·(1 − (31/32)^64) = 22244.1
		{100000, 1000 + 25600},
	} {
		if got := bench.StepWeightBytes(info, c.batch); got != c.want {
			t.Errorf("batch %d: %d bytes, want %d", c.batch, got, c.want)
		}
	}
	dense := model.Info{ActiveBytes: 5000}
	if got := bench.StepWeightBytes(dense, 64); got != 5000 {
		t.Errorf("without experts, batch 64: %d bytes, want 5000", got)
	}
}

// recorder passes Forward on and records, per request, the token each
// decode step fed in and the greedy choice of its logits.
type recorder struct {
	model.Model
	fed, argmax map[*model.Request][]int32
}

func (r *recorder) Forward(ctx context.Context, reqs []*model.Request) error {
	for _, q := range reqs {
		if len(q.Tokens) == 1 {
			r.fed[q] = append(r.fed[q], q.Tokens[0])
		}
	}
	err := r.Model.Forward(ctx, reqs)
	for _, q := range reqs {
		if len(q.Tokens) == 1 {
			r.argmax[q] = append(r.argmax[q], sample.Argmax(q.Logits))
		}
	}
	return err
}

// TestRunSampled checks that with Options.Sample every decode step feeds
// in the token drawn from the step before: greedy here, so each fed token
// is the previous step's argmax, for every sequence of a batch.
func TestRunSampled(t *testing.T) {
	m, err := engine.Load("../testdata/tiny-softmax", engine.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rec := &recorder{Model: m, fed: map[*model.Request][]int32{}, argmax: map[*model.Request][]int32{}}
	res, err := bench.Run(context.Background(), "tiny", rec, bench.Options{
		Prompt: 8, Gen: 6, Contexts: []int{16}, Batch: 2, Backend: rooflines{}, SkipPrefill: true, Sample: &sample.Params{}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sample == nil || len(res.Decode) != 1 || res.Decode[0].DecodeTokS <= 0 {
		t.Fatalf("result %+v", res)
	}
	checked := 0
	for q, fed := range rec.fed {
		am := rec.argmax[q]
		// the untimed first step, then Gen timed ones: from the second
		// timed step on, the fed token is the step before's choice
		for i := 2; i < len(fed); i++ {
			if fed[i] != am[i-1] {
				t.Errorf("request %p: step %d fed %d, the step before chose %d", q, i, fed[i], am[i-1])
			}
			checked++
		}
	}
	if checked < 2*4 {
		t.Errorf("%d steps checked; want at least 8", checked)
	}
}
