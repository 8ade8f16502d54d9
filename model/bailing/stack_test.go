package bailing

import (
	"context"
	"encoding/binary"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/quant"
)

// widenUp is a Source that hands out the dense and shared up projections as
// F32 (an exact widening of BF16), so that gate and up are stored differently.
type widenUp struct{ checkpoint.Source }

func (w widenUp) Weight(name string, shape ...int) (backend.HostWeight, error) {
	hw, err := w.Source.Weight(name, shape...)
	if err != nil || !strings.HasSuffix(name, "up_proj.weight") || strings.Contains(name, ".experts.") || hw.Kind != backend.BF16 {
		return hw, err
	}
	out := hw
	out.Kind, out.Data = backend.F32, make([]byte, 2*len(hw.Data))
	for i := 0; i < len(hw.Data)/2; i++ {
		v := quant.BF16ToF32(binary.LittleEndian.Uint16(hw.Data[2*i:]))
		binary.LittleEndian.PutUint32(out.Data[4*i:], math.Float32bits(v))
	}
	return out, nil
}

// TestGateUpStacking checks that gate and up projections stored alike are
// stacked into one weight, that differently stored ones are kept apart, and
// that both ways give the same logits.
func TestGateUpStacking(t *testing.T) {
	ck, err := checkpoint.Open(filepath.Join("..", "..", "testdata", "tiny-linear"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	run := func(src checkpoint.Source) (*Model, []float32) {
		m, err := Load(ck.ConfigJSON, ck.Generation, src, cpu.New(1), Options{})
		if err != nil {
			t.Fatal(err)
		}
		req := &model.Request{State: m.NewState(), Tokens: []int32{1, 5, 9, 2, 7, 3}, All: true}
		if err := m.Forward(context.Background(), []*model.Request{req}); err != nil {
			t.Fatal(err)
		}
		return m, req.Logits
	}
	stacked, want := run(ck)
	apart, got := run(widenUp{ck})
	nStacked, nApart := 0, 0
	for i := range stacked.layers {
		if stacked.layers[i].ffn.gateUp != nil {
			nStacked++
		}
		if f := apart.layers[i].ffn; f.gate != nil && f.up != nil && f.gateUp == nil {
			nApart++
		}
	}
	if nStacked == 0 || nApart != nStacked {
		t.Fatalf("stacked gate|up in %d layers; kept apart in %d of the widened model's", nStacked, nApart)
	}
	worst := 0.0
	for i := range want {
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
	}
	if worst > 1e-4 {
		t.Errorf("logits differ by up to %g between stacked and separate gate/up", worst)
	}
	if _, ok := stackRows(backend.HostWeight{Kind: backend.F8E4M3, Rows: 100, Cols: 128, BlockRows: 128, BlockCols: 128},
		backend.HostWeight{Kind: backend.F8E4M3, Rows: 100, Cols: 128, BlockRows: 128, BlockCols: 128}); ok {
		t.Error("stackRows stacked FP8 weights whose scale blocks would straddle the seam")
	}
}
