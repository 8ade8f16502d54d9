//go:build amd64 && !purego

package quant

// Kernels of the tiled Q8_0 KV layouts: AVX-512 VNNI (kvtile_amd64.s)
// where the CPU has it, else AVX2 (kvtile_avx2_amd64.s).

// tiledSIMD reports whether the assembly kernels of the tiled layouts are
// in use.
func tiledSIMD() bool { return hasAVX2 && !kvOff }

// TiledKV reports whether this CPU runs the tiled KV-cache kernels (AVX2
// or AVX-512 VNNI): only then are the tiled layouts faster than rows of
// Q8_0 blocks.
func TiledKV() bool { return hasAVX2 }

// dotQ8_0TG scores ng groups of four query rows (ng·nb ≤ 16) against
// the tiled keys at k, group i's rows against the block columns from byte
// gs[i].koff of each tile (see the assembly).
func dotQ8_0TG(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int) {
	if kv512() {
		dotQ8_0TG512(gs, ng, ldo, k, ldt, n, nb)
		return
	}
	dotQ8_0TGAVX2(gs, ng, ldo, k, ldt, n, nb)
}

// accumQ8_0T4 is AccumQ8_0Tiled for four rows (o[r], p[r]) and n ≤ 128
// keys; scr is a work area of 1 KiB per block column for the AVX-512
// kernel (nb ≤ 8); the AVX2 one (any nb) has its own.
func accumQ8_0T4(o, p *[4]*float32, v *byte, ldt, n, nb int, scr *byte) {
	if kv512() {
		accumQ8_0T4512(o, p, v, ldt, n, nb, scr)
		return
	}
	accumQ8_0T4AVX2(o, p, v, ldt, n, nb)
}

//go:noescape
func dotQ8_0TG512(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int)

//go:noescape
func accumQ8_0T4512(o, p *[4]*float32, v *byte, ldt, n, nb int, scr *byte)

//go:noescape
func dotQ8_0TGAVX2(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int)

//go:noescape
func accumQ8_0T4AVX2(o, p *[4]*float32, v *byte, ldt, n, nb int)
