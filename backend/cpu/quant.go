package cpu

import (
	"fmt"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/kernels"
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

// panelMinRows is, per block format, the batch size from which a quantized
// MatMul expands panels of weight rows to float32 and runs the float GEMM
// kernel instead of integer dot products against Q8-quantized activations.
// Measured with BenchmarkQuantMatMul and quant's BenchmarkPathCrossover
// (docs/PERFORMANCE.md): the 4-row integer kernels win at every batch size
// for the K-quants and Q8_0; Q4_0 gains from panels from about 16 rows.
var panelMinRows = map[quant.Type]int{quant.Q4_0: 16}

// forcePanels, for tests and benchmarks, overrides panelMinRows (0: off).
var forcePanels = 0

// usePanels reports whether a T-row product with w takes the panel path.
func usePanels(w *weight, T int) bool {
	if w.kind != backend.Quant {
		return false
	}
	if forcePanels != 0 {
		return T >= forcePanels
	}
	n, ok := panelMinRows[quant.Type(w.qtype)]
	return ok && T >= n
}

const quantPanelRows = 16

// matMulQuantPanels computes rows [lo, hi) of out = x·wᵀ (T rows of x) by
// expanding quantPanelRows weight rows at a time into buf.
func matMulQuantPanels(w *weight, out []float32, ldo int, x []float32, ldx, T, lo, hi int, buf *[]float32) {
	K := w.cols
	*buf = grow(*buf, quantPanelRows*K)
	for r0 := lo; r0 < hi; r0 += quantPanelRows {
		n := min(quantPanelRows, hi-r0)
		p := (*buf)[:n*K]
		if err := quant.Dequantize(quant.Type(w.qtype), p, w.q[r0*w.rowBytes:(r0+n)*w.rowBytes]); err != nil {
			panic(err)
		}
		kernels.MatMulF32(out[r0-lo:], ldo, x, ldx, p, T, n, K)
	}
}
