//go:build amd64 && !purego

package quant

// AVX2 rows kernels (rows_amd64.s): out[i] = (row i of w, rows rb bytes
// apart, nb blocks each) · x for i < n; n, nb >= 1. They run the products
// at T = 1 and those of single rows for Q4_0, Q8_0, Q4_K and Q6_K, in place
// of one-row kernels called once per row from Go (Q4_K and Q6_K ones that
// stored their scales to the stack and read them back). One core from DRAM,
// 2048x2048: Q8_0 10.6-11.6 GB/s with the one-row kernel, 16.7-18.1 with
// the rows kernel's prefetches, the same in cache; Q4_0, bound by its
// arithmetic, 6.7-7.0 against 7.6-7.9. The AVX-512 VNNI set replaces all
// of them but the Q4_0 ones, which it inherits (not measured on such a CPU).

//go:noescape
func dotQ4KAVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ6KAVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ8_0AVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)

//go:noescape
func dotQ4_0AVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)

// The rows kernels join avx2Kernels during package variable initialization,
// before dot_amd64.go's init selects that set.
var _ = func() bool {
	setRows(&avx2Kernels.q4kRows, &avx2Kernels.q4k, dotQ4KAVX2Rows, 144, 292)
	setRows(&avx2Kernels.q6kRows, &avx2Kernels.q6k, dotQ6KAVX2Rows, 210, 292)
	setRows(&avx2Kernels.q8_0Rows, &avx2Kernels.q8_0, dotQ8_0AVX2Rows, 34, q8aBlockBytes)
	setRows(&avx2Kernels.q4_0Rows, &avx2Kernels.q4_0, dotQ4_0AVX2Rows, 18, q8aBlockBytes)
	return true
}()
