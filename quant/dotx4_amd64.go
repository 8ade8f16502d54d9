//go:build amd64 && !purego

package quant

import "unsafe"

// Multi-row assembly kernels (dotx4_amd64.s): one weight row against four
// activation rows, results in res[0..3].

//go:noescape
func dotQ4KAVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

//go:noescape
func dotQ6KAVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

// x4Call bounds-checks one weight row (nb blocks of wbs bytes) and four
// activation rows (nb blocks of xbs bytes) and calls the kernel k.
func x4Call(k func(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32), wbs, xbs int, w []byte, xs *[4][]byte, res *[4]float32) {
	nb := len(xs[0]) / xbs
	if nb == 0 {
		*res = [4]float32{}
		return
	}
	_ = w[nb*wbs-1]
	n := nb*xbs - 1
	_, _, _, _ = xs[0][n], xs[1][n], xs[2][n], xs[3][n]
	k(unsafe.SliceData(w), unsafe.SliceData(xs[0]), unsafe.SliceData(xs[1]), unsafe.SliceData(xs[2]), unsafe.SliceData(xs[3]), nb, res)
}

func q4kx4AVX2(w []byte, xs *[4][]byte, res *[4]float32) {
	x4Call(dotQ4KAVX2x4, 144, 292, w, xs, res)
}

func q6kx4AVX2(w []byte, xs *[4][]byte, res *[4]float32) {
	x4Call(dotQ6KAVX2x4, 210, 292, w, xs, res)
}

//go:noescape
func dotQ8_0AVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

//go:noescape
func dotQ4_0AVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)

func q8_0x4AVX2(w []byte, xs *[4][]byte, res *[4]float32) {
	x4Call(dotQ8_0AVX2x4, 34, q8aBlockBytes, w, xs, res)
}

func q4_0x4AVX2(w []byte, xs *[4][]byte, res *[4]float32) {
	x4Call(dotQ4_0AVX2x4, 18, q8aBlockBytes, w, xs, res)
}
