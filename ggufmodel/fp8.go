package ggufmodel

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/safetensors"
)

// FP8 is the name of the FP8 quantize-on-load format (engine.Options.Quantize,
// --quantize fp8): OCP E4M3 values with one float32 scale per
// FP8Block×FP8Block block, the layout of block-scaled FP8 checkpoints. The
// CUDA backend keeps such weights in FP8; the CPU backend widens them to BF16.
const FP8 = "FP8"

// FP8Block is the block size (rows and columns) of the FP8 weights made by
// EncodeFP8.
const FP8Block = 128

// IsFP8 reports whether a quantize-on-load name is the FP8 format.
func IsFP8(name string) bool { return strings.EqualFold(name, FP8) }

// CheckLoadName validates a quantize-on-load name: FP8 or one of LoadTypes.
func CheckLoadName(name string) error {
	if IsFP8(name) {
		return nil
	}
	if _, err := ParseLoadType(name); err != nil {
		return fmt.Errorf("%w (or FP8)", err)
	}
	return nil
}

// QuantizingByName is Quantizing with the target given by name: FP8 or one
// of LoadTypes. With FP8 the bulk weights (RoleMatrix: attention
// projections, dense and expert FFNs) become FP8 with FP8Block×FP8Block
// block scales; the router, the embedding table, the output projection and
// 1-D weights keep their type, and weights that are already FP8 are handed
// out as they are.
func QuantizingByName(src checkpoint.Source, name string) (*QuantizingSource, error) {
	if IsFP8(name) {
		return &QuantizingSource{src: src, fp8: true, tied: !src.Has("lm_head.weight")}, nil
	}
	t, err := ParseLoadType(name)
	if err != nil {
		return nil, err
	}
	return Quantizing(src, t)
}

// EncodeFP8 converts a 2-D float weight (F32, F16 or BF16) to FP8 E4M3 with
// one float32 scale per FP8Block×FP8Block block: scale = max|w| / 448 over
// the block (1 for an all-zero block) and each value is w / scale rounded to
// the nearest E4M3 value. Rows are spread over all CPUs.
func EncodeFP8(hw backend.HostWeight) (backend.HostWeight, error) {
	if err := checkHost(hw); err != nil {
		return backend.HostWeight{}, err
	}
	switch hw.Kind {
	case backend.F32, backend.F16, backend.BF16:
	default:
		return backend.HostWeight{}, fmt.Errorf("%s: cannot encode %v to FP8", hw.Name, hw.Kind)
	}
	const B = FP8Block
	R, C := hw.Rows, hw.Cols
	sr, sc := (R+B-1)/B, (C+B-1)/B
	out := backend.HostWeight{Name: hw.Name, Kind: backend.F8E4M3, Rows: R, Cols: C,
		Data: hugepage.Make[byte](R * C), Scale: make([]float32, sr*sc), BlockRows: B, BlockCols: B}
	workers := max(1, min(runtime.GOMAXPROCS(0), sr, R*C/(1<<16)))
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, B*C)
			amax := make([]float32, sc)
			for br := sr * w / workers; br < sr*(w+1)/workers; br++ {
				r0, r1 := br*B, min(R, (br+1)*B)
				clear(amax)
				for r := r0; r < r1; r++ {
					row := buf[(r-r0)*C : (r-r0+1)*C]
					if err := rowF32(hw, r, row); err != nil {
						errs[w] = err
						return
					}
					for i, v := range row {
						amax[i/B] = max(amax[i/B], float32(math.Abs(float64(v))))
					}
				}
				scale := out.Scale[br*sc : (br+1)*sc]
				for j, a := range amax {
					scale[j] = 1
					if a > 0 {
						scale[j] = a / 448
					}
				}
				for r := r0; r < r1; r++ {
					row, dst := buf[(r-r0)*C:(r-r0+1)*C], out.Data[r*C:(r+1)*C]
					for i, v := range row {
						dst[i] = safetensors.F32ToF8E4M3(v / scale[i/B])
					}
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return backend.HostWeight{}, fmt.Errorf("%s: convert to FP8: %w", hw.Name, err)
		}
	}
	return out, nil
}
