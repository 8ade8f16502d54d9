package ggufmodel

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/internal/hugepage"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

// kindType returns the quant.Type that stores a float HostWeight kind as is.
func kindType(hw backend.HostWeight) (quant.Type, bool) {
	switch hw.Kind {
	case backend.F32:
		return quant.F32, true
	case backend.F16:
		return quant.F16, true
	case backend.BF16:
		return quant.BF16, true
	case backend.Quant:
		return quant.Type(hw.QType), true
	}
	return 0, false
}

// rowF32 decodes row r of a float (or FP8) host weight into dst.
func rowF32(hw backend.HostWeight, r int, dst []float32) error {
	c := hw.Cols
	switch hw.Kind {
	case backend.F32:
		b := hw.Data[4*r*c : 4*(r+1)*c]
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case backend.BF16:
		quant.BF16SliceToF32(dst, hw.Data[2*r*c:2*(r+1)*c])
	case backend.F16:
		quant.F16SliceToF32(dst, hw.Data[2*r*c:2*(r+1)*c])
	case backend.F8E4M3:
		br, bc := hw.BlockRows, hw.BlockCols
		sc := (c + bc - 1) / bc
		b := hw.Data[r*c : (r+1)*c]
		srow := hw.Scale[(r/br)*sc : (r/br+1)*sc]
		for i := range dst {
			dst[i] = safetensors.F8E4M3ToF32(b[i]) * srow[i/bc]
		}
	case backend.Quant:
		rb := quant.RowBytes(quant.Type(hw.QType), c)
		if err := quant.Dequantize(quant.Type(hw.QType), dst, hw.Data[r*rb:(r+1)*rb]); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported weight kind %v", hw.Kind)
	}
	return nil
}

// checkHost validates that hw's data matches its shape and kind.
func checkHost(hw backend.HostWeight) error {
	if hw.Rows <= 0 || hw.Cols <= 0 {
		return fmt.Errorf("%s: bad shape [%d, %d]", hw.Name, hw.Rows, hw.Cols)
	}
	n := int64(hw.Rows) * int64(hw.Cols)
	var want int64
	switch hw.Kind {
	case backend.F32:
		want = 4 * n
	case backend.F16, backend.BF16:
		want = 2 * n
	case backend.F8E4M3:
		want = n
		if _, _, err := hw.ScaleGrid(); err != nil {
			return err
		}
	case backend.Quant:
		t := quant.Type(hw.QType)
		if !t.Supported() || hw.Cols%quant.BlockSize(t) != 0 {
			return fmt.Errorf("%s: cannot decode %v with %d columns", hw.Name, t, hw.Cols)
		}
		want = int64(hw.Rows) * int64(quant.RowBytes(t, hw.Cols))
	default:
		return fmt.Errorf("%s: unsupported weight kind %v", hw.Name, hw.Kind)
	}
	if int64(len(hw.Data)) != want {
		return fmt.Errorf("%s: %d bytes for %v [%d, %d], want %d", hw.Name, len(hw.Data), hw.Kind, hw.Rows, hw.Cols, want)
	}
	return nil
}

// encodeRows converts rows [r0, r1) of hw to type t into dst (exactly
// (r1-r0)·RowBytes(t, Cols) bytes), spreading the rows over all CPUs.
func encodeRows(hw backend.HostWeight, t quant.Type, r0, r1 int, dst []byte) error {
	rb := quant.RowBytes(t, hw.Cols)
	n := r1 - r0
	if len(dst) != n*rb {
		return fmt.Errorf("%s: encode buffer of %d bytes, want %d", hw.Name, len(dst), n*rb)
	}
	if src, ok := kindType(hw); ok && src == t {
		srb := len(hw.Data) / hw.Rows
		copy(dst, hw.Data[r0*srb:r1*srb])
		return nil
	}
	workers := min(runtime.GOMAXPROCS(0), n)
	// at least ~64k elements per worker, so small tensors stay on one goroutine
	if per := 1 + (1<<16)/hw.Cols; n/workers < per {
		workers = max(1, n/per)
	}
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := 0; w < workers; w++ {
		lo, hi := r0+n*w/workers, r0+n*(w+1)/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, hw.Cols)
			for r := lo; r < hi; r++ {
				if err := rowF32(hw, r, buf); err != nil {
					errs[w] = err
					return
				}
				if err := quant.Quantize(t, dst[(r-r0)*rb:(r-r0+1)*rb], buf); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: convert to %v: %w", hw.Name, t, err)
		}
	}
	return nil
}

// Encode returns hw converted to type t (a float type or a supported block
// format) as a new host weight. hw may be F32, F16, BF16, FP8 (with block
// scales) or block-quantized; the conversion runs on all CPUs.
func Encode(hw backend.HostWeight, t quant.Type) (backend.HostWeight, error) {
	if err := checkHost(hw); err != nil {
		return backend.HostWeight{}, err
	}
	if !t.Supported() || t == quant.Q8_K {
		return backend.HostWeight{}, fmt.Errorf("%s: cannot encode to %v", hw.Name, t)
	}
	if hw.Cols%quant.BlockSize(t) != 0 {
		return backend.HostWeight{}, fmt.Errorf("%s: %d columns are not a multiple of the %v block size %d", hw.Name, hw.Cols, t, quant.BlockSize(t))
	}
	out := backend.HostWeight{Name: hw.Name, Rows: hw.Rows, Cols: hw.Cols}
	switch t {
	case quant.F32:
		out.Kind = backend.F32
	case quant.F16:
		out.Kind = backend.F16
	case quant.BF16:
		out.Kind = backend.BF16
	default:
		out.Kind, out.QType = backend.Quant, uint32(t)
	}
	out.Data = hugepage.Make[byte](hw.Rows * quant.RowBytes(t, hw.Cols))
	if err := encodeRows(hw, t, 0, hw.Rows, out.Data); err != nil {
		return backend.HostWeight{}, err
	}
	return out, nil
}
