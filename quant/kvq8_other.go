//go:build !amd64 || purego

package quant

// Without assembly the kernels of kvq8.go use the Go code.

func kvSIMD() bool { return false }

func accumQ8_0x4(o, p *[4]*float32, v []byte, ldv, n, nb int) { panic("quant: no SIMD kernels") }

func dotQ8_0x4Rows(out []float32, ldo, mr int, xs *[4][]byte, w []byte, ldw, n, nb int, next []byte) {
	panic("quant: no SIMD kernels")
}

func quantizeQ8aRow(dst []byte, x []float32) { panic("quant: no SIMD kernels") }

func dequantQ8_0Row(dst []float32, src []byte, nb int) {
	for b := 0; b < nb; b++ {
		dequantQ8_0Block(dst[b*QK:], src[b*34:])
	}
}

// kv512 reports that there are no AVX-512 kernels.
func kv512() bool { return false }

// setKV512 reports that there are no AVX-512 kernels to switch on.
func setKV512(on bool) bool { return false }

func tiledSIMD() bool { return false }

// TiledKV reports that the tiled KV-cache kernels do not run here.
func TiledKV() bool { return false }

func dotQ8_0TG(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int) {
	panic("quant: no SIMD kernels")
}

func accumQ8_0T4(o, p *[4]*float32, v *byte, ldt, n, nb int, scr *byte) {
	panic("quant: no SIMD kernels")
}
