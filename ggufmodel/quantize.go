package ggufmodel

import (
	"fmt"
	"math"
	"sync"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/quant"
)

// QuantizingSource is a checkpoint.Source that converts each weight to the
// type chosen by Plan as it is handed out: the model loader uploads weights
// one at a time, so only the converted copies stay resident (plus whatever
// the page cache keeps of the source file).
type QuantizingSource struct {
	src    checkpoint.Source
	target quant.Type
	fp8    bool // target is FP8 (QuantizingByName), not target
	tied   bool

	mu    sync.Mutex
	notes noteSet
	// bytes of the source and converted weights handed out
	inBytes, outBytes int64
	// squared error and squared values of the converted weights (measure)
	measure        bool
	errSq, valueSq float64
}

var _ checkpoint.Source = (*QuantizingSource)(nil)

// Quantizing wraps src so that its weights are converted to target (one of
// LoadTypes) on the fly, following Plan.
func Quantizing(src checkpoint.Source, target quant.Type) (*QuantizingSource, error) {
	ok := false
	for _, t := range LoadTypes {
		ok = ok || t == target
	}
	if !ok {
		return nil, fmt.Errorf("quantize on load: type %v is not supported (want Q8_0, Q6_K, Q4_K or Q4_0)", target)
	}
	return &QuantizingSource{src: src, target: target, tied: !src.Has("lm_head.weight")}, nil
}

// Has implements checkpoint.Source.
func (q *QuantizingSource) Has(name string) bool { return q.src.Has(name) }

// Shape implements checkpoint.Source.
func (q *QuantizingSource) Shape(name string) []int { return q.src.Shape(name) }

// Weight implements checkpoint.Source: the wrapped source's weight,
// converted to the type Plan chooses.
func (q *QuantizingSource) Weight(name string, shape ...int) (backend.HostWeight, error) {
	hw, err := q.src.Weight(name, shape...)
	if err != nil {
		return hw, err
	}
	q.mu.Lock()
	q.inBytes += int64(len(hw.Data))
	q.mu.Unlock()
	var out backend.HostWeight
	if q.fp8 {
		switch hw.Kind {
		case backend.F32, backend.F16, backend.BF16:
		default:
			q.count(int64(len(hw.Data)))
			return hw, nil
		}
		if RoleOf(name, hw.Rows, q.tied) != RoleMatrix {
			q.count(int64(len(hw.Data)))
			return hw, nil
		}
		out, err = EncodeFP8(hw)
	} else {
		src, ok := kindType(hw)
		if !ok { // FP8: plan as BF16 (what the CPU backend would widen it to)
			src = quant.BF16
		}
		t, note := Plan(name, hw.Rows, hw.Cols, src, q.target, q.tied)
		q.mu.Lock()
		q.notes.add(note)
		q.mu.Unlock()
		if cur, ok := kindType(hw); (ok && cur == t) || (!ok && note != "") || hw.Rows <= 1 {
			q.count(int64(len(hw.Data)))
			return hw, nil
		}
		out, err = Encode(hw, t)
	}
	if err != nil {
		return backend.HostWeight{}, fmt.Errorf("quantize on load: %w", err)
	}
	q.count(int64(len(out.Data) + 4*len(out.Scale)))
	if q.measure {
		e, v, err := sqError(hw, out)
		if err != nil {
			return backend.HostWeight{}, fmt.Errorf("quantize on load: %w", err)
		}
		q.mu.Lock()
		q.errSq += e
		q.valueSq += v
		q.mu.Unlock()
	}
	return out, nil
}

// Measure turns on (or off) measuring the conversion error of the weights
// handed out from now on (it costs a decoding pass per weight); see
// WeightError.
func (q *QuantizingSource) Measure(on bool) { q.measure = on }

// WeightError returns the relative RMS error sqrt(Σ(w−ŵ)² / Σw²) over all
// converted weights measured so far (0 if none).
func (q *QuantizingSource) WeightError() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.valueSq == 0 {
		return 0
	}
	return math.Sqrt(q.errSq / q.valueSq)
}

// sqError returns Σ(a−b)² and Σa² over the elements of two weights of the
// same shape.
func sqError(a, b backend.HostWeight) (errSq, valueSq float64, err error) {
	x := make([]float32, a.Cols)
	y := make([]float32, a.Cols)
	for r := 0; r < a.Rows; r++ {
		if err := rowF32(a, r, x); err != nil {
			return 0, 0, err
		}
		if err := rowF32(b, r, y); err != nil {
			return 0, 0, err
		}
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			errSq += d * d
			valueSq += float64(x[i]) * float64(x[i])
		}
	}
	return errSq, valueSq, nil
}

func (q *QuantizingSource) count(n int64) {
	q.mu.Lock()
	q.outBytes += n
	q.mu.Unlock()
}

// Notes returns the tensors that could not be converted (their columns are
// not a multiple of the block size), folded over layers and experts.
func (q *QuantizingSource) Notes() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.notes.list()
}

// Bytes returns the bytes of the source weights handed out so far and of
// their converted copies.
func (q *QuantizingSource) Bytes() (in, out int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.inBytes, q.outBytes
}
