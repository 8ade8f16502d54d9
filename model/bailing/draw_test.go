package bailing

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/sample"
)

// drawer is the CPU backend (its plain operations only) with a host
// backend.Drawer: sample.Draw over the rows it reads back.
type drawer struct {
	backend.Backend
	on   bool
	rows []int // logit rows per DrawTokens call
}

func (d *drawer) Draws() bool { return d.on }

func (d *drawer) DrawTokens(dst []int32, logits backend.Tensor, draws []backend.Draw) {
	d.rows = append(d.rows, logits.Rows)
	row := make([]float32, logits.Cols)
	for i := range logits.Rows {
		if draws[i].TopK > 0 { // declined
			dst[i] = -1
			continue
		}
		d.Read(logits.RowRange(i, 1), row)
		dst[i] = sample.Draw(row, draws[i].InvTemp, draws[i].U)
	}
}

// TestDrawnTokens runs a pass of requests that ask for their token
// (Request.Draw: greedy, temperature, top-k which the backend declines,
// one that wants every position's logits, which ignores it) and one that
// does not, on a backend that draws and on one that does not: the drawn
// tokens are sample.Draw's over the logits the other returns, in one call
// for the adjacent rows, and the declined one gets its logits.
func TestDrawnTokens(t *testing.T) {
	d := &drawer{Backend: cpu.New(0), on: true}
	m := loadFixtureOn(t, "tiny-linear", d, Options{})
	ref := loadFixtureOn(t, "tiny-linear", &drawer{Backend: cpu.New(0)}, Options{})
	prompts := [][]int32{{5, 17, 2, 99}, {41, 7}, {8, 8, 1}, {300, 12, 8}, {64, 3, 9}}
	draws := []*model.Draw{{InvTemp: 0}, {InvTemp: 1 / 0.7, U: 0.37}, {InvTemp: 1, U: 0.2, TopK: 3}, nil, {InvTemp: 1, U: 0.5}}
	all := []bool{false, false, false, false, true}
	run := func(m *Model, withDraws bool) []*model.Request {
		var reqs []*model.Request
		for i, p := range prompts {
			r := &model.Request{State: m.NewState(), Tokens: p, All: all[i]}
			if withDraws {
				r.Draw = draws[i]
			}
			reqs = append(reqs, r)
		}
		if err := m.Forward(context.Background(), reqs); err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			r.State.Free()
		}
		return reqs
	}
	want := run(ref, true) // (its backend does not draw)
	got := run(m, true)
	V := m.Config.VocabSize
	for i, r := range got {
		if want[i].Drawn {
			t.Fatalf("request %d drawn by a backend that does not draw", i)
		}
		if draws[i] == nil || all[i] || draws[i].TopK > 0 { // (the last declined)
			if r.Drawn || !slices.Equal(r.Logits, want[i].Logits) {
				t.Errorf("request %d: drawn %v, %d logits (want not drawn, the other backend's %d)", i, r.Drawn, len(r.Logits), len(want[i].Logits))
			}
			continue
		}
		w := want[i].Logits
		if len(w) != V {
			t.Fatalf("request %d: %d logits, want %d", i, len(w), V)
		}
		if tok := sample.Draw(w, draws[i].InvTemp, draws[i].U); !r.Drawn || r.Token != tok || len(r.Logits) != 0 {
			t.Errorf("request %d: drawn %v, token %d, %d logits; want token %d, no logits", i, r.Drawn, r.Token, len(r.Logits), tok)
		}
	}
	if !slices.Equal(d.rows, []int{3}) {
		t.Errorf("DrawTokens calls of %v rows, want one of 3", d.rows)
	}
	// a draw outside its domain is an error naming the request
	for _, bad := range []model.Draw{{InvTemp: -1}, {InvTemp: 1, U: 1}, {InvTemp: 1, U: -0.5}, {InvTemp: 1, TopK: -1}, {InvTemp: 1, TopP: 1.5}, {InvTemp: 1, MinP: -0.1}} {
		r := &model.Request{State: m.NewState(), Tokens: []int32{5}, Draw: &bad}
		err := m.Forward(context.Background(), []*model.Request{r})
		r.State.Free()
		if err == nil || !strings.Contains(err.Error(), "request 0: draw") {
			t.Errorf("draw %+v: error %v", bad, err)
		}
	}
	// turned off: logits as usual
	d.on = false
	for i, r := range run(m, true) {
		if r.Drawn || !slices.Equal(r.Logits, want[i].Logits) {
			t.Errorf("backend not drawing, request %d: drawn %v, %d logits", i, r.Drawn, len(r.Logits))
		}
	}
}
