package bench_test

import (
	"context"
	"testing"

	"github.com/ringo-ai/ringo/bench"
	"github.com/ringo-ai/ringo/engine"
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
		}
		if a, b := res.Decode[0].BytesPerToken, res.Decode[1].BytesPerToken; b <= a {
			t.Errorf("interleave %v: %d bytes per token at 200, %d at 16", interleave, b, a)
		}
	}
}
