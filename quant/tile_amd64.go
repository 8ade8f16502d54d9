//go:build amd64 && !purego

package quant

import "unsafe"

// Tile kernels (tile_amd64.s, see tile.go): pairs of weight rows against
// four or eight Q8_K activation rows, written to the output matrix.

//go:noescape
func q4kTile2x4AVX2(w *byte, rb, np int, x0, x1, x2, x3, aux *byte, nb int, out *float32, ldo, nr int)

//go:noescape
func q4kTile2x8AVX2(w *byte, rb, np int, x0 *byte, xs int, aux *byte, auxhi, nb int, out *float32, ldo int)

//go:noescape
func q6kTile2x8AVX2(w *byte, rb, np int, x0 *byte, xs int, aux *byte, auxhi, nb int, out *float32, ldo int)

// tileCall bounds-checks np pairs of weight rows (rows rb bytes apart, nb
// blocks of wbs bytes used), four activation rows, their tileAux entries and
// nr rows of outputs, and calls the kernel k.
func tileCall(k func(w *byte, rb, np int, x0, x1, x2, x3, aux *byte, nb int, out *float32, ldo, nr int), wbs int,
	w []byte, rb, np int, xs *[4][]byte, aux []byte, out []float32, ldo, nr int) {
	nb := len(xs[0]) / 292
	if np <= 0 {
		return
	}
	if nb*wbs > rb || ldo < 2*np || nr < 2 || nr > 4 {
		panic("quant: tile kernel: inconsistent shapes")
	}
	_ = w[2*np*rb-1]
	n := nb*292 - 1
	_, _, _, _ = xs[0][n], xs[1][n], xs[2][n], xs[3][n]
	_ = aux[nb*tileAuxBytes-1]
	_ = out[(nr-1)*ldo+2*np-1]
	k(unsafe.SliceData(w), rb, np, unsafe.SliceData(xs[0]), unsafe.SliceData(xs[1]),
		unsafe.SliceData(xs[2]), unsafe.SliceData(xs[3]), unsafe.SliceData(aux), nb,
		unsafe.SliceData(out), ldo, nr)
}

func q4kTileAVX2(w []byte, rb, np int, xs *[4][]byte, aux []byte, out []float32, ldo, nr int) {
	tileCall(q4kTile2x4AVX2, 144, w, rb, np, xs, aux, out, ldo, nr)
}

// tile8Call bounds-checks np pairs of weight rows (rows rb bytes apart, nb
// blocks of wbs bytes used), eight activation rows s bytes apart, their
// tileAux entries and the outputs, and calls the kernel k.
func tile8Call(k func(w *byte, rb, np int, x0 *byte, xs int, aux *byte, auxhi, nb int, out *float32, ldo int), wbs int,
	w []byte, rb, np int, x []byte, s int, aux []byte, out []float32, ldo int) {
	nb := s / 292
	if np <= 0 {
		return
	}
	if nb*wbs > rb || ldo < 2*np {
		panic("quant: tile kernel: inconsistent shapes")
	}
	_ = w[2*np*rb-1]
	_ = x[7*s+nb*292-1]
	_ = aux[2*nb*tileAuxBytes-1]
	_ = out[7*ldo+2*np-1]
	k(unsafe.SliceData(w), rb, np, unsafe.SliceData(x), s, unsafe.SliceData(aux), nb*tileAuxBytes, nb,
		unsafe.SliceData(out), ldo)
}

func q4kTile8AVX2(w []byte, rb, np int, x []byte, s int, aux []byte, out []float32, ldo int) {
	tile8Call(q4kTile2x8AVX2, 144, w, rb, np, x, s, aux, out, ldo)
}

func q6kTile8AVX2(w []byte, rb, np int, x []byte, s int, aux []byte, out []float32, ldo int) {
	tile8Call(q6kTile2x8AVX2, 210, w, rb, np, x, s, aux, out, ldo)
}

// The tile kernels join avx2Kernels during package variable
// initialization, before dot_amd64.go's init selects that set.
var _ = func() bool {
	avx2Kernels.q4kx2x4 = q4kTileAVX2
	avx2Kernels.q4kx2x8 = q4kTile8AVX2
	avx2Kernels.q6kx2x8 = q6kTile8AVX2
	return true
}()
