package cpu

import (
	"fmt"

	"github.com/ringo-ai/ringo/quant"
)

// checkQuant validates a llama.cpp block-format weight.
func checkQuant(w *weight) error {
	t := quant.Type(w.qtype)
	if !t.Supported() || t == quant.F32 || t == quant.F16 || t == quant.BF16 || t == quant.Q8_K {
		return fmt.Errorf("%s: block format %v is not supported", w.name, t)
	}
	if w.cols%quant.BlockSize(t) != 0 {
		return fmt.Errorf("%s: %d columns are not a multiple of the %v block size %d", w.name, w.cols, t, quant.BlockSize(t))
	}
	if want := quant.RowBytes(t, w.cols); want != w.rowBytes {
		return fmt.Errorf("%s: %d bytes per row, %v needs %d", w.name, w.rowBytes, t, want)
	}
	return nil
}

// dequantRow expands row r of a quantized weight.
func dequantRow(w *weight, r int, dst []float32) {
	if err := quant.Dequantize(quant.Type(w.qtype), dst, w.q[r*w.rowBytes:(r+1)*w.rowBytes]); err != nil {
		panic(err)
	}
}

// matMulQuant computes rows [lo, hi) of out = x·wᵀ for T activation rows
// already quantized in qa.
func matMulQuant(w *weight, out []float32, ldo int, qa *quant.QActs, lo, hi int) {
	quant.MatMulQ(quant.Type(w.qtype), out, ldo, qa, w.q[lo*w.rowBytes:hi*w.rowBytes], hi-lo, w.cols)
}
