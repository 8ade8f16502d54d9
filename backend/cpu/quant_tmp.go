package cpu

import "fmt"

// Quantized weights arrive with package quant.

func checkQuant(w *weight) error {
	return fmt.Errorf("%s: quantized weights not supported yet", w.name)
}

func dequantRow(w *weight, r int, dst []float32) {}

func matMulQuant(w *weight, out []float32, ldo int, x []float32, ldx int, lo, hi, T int) {}
