//go:build amd64 && !purego

package quant

// AVX-512 VNNI kernels of the tiled Q8_0 KV layouts (kvtile_amd64.s).

// tiledSIMD reports whether the kernels of kvtile_amd64.s are in use.
func tiledSIMD() bool { return kv512() && !kvOff }

// TiledKV reports whether this CPU runs the tiled KV-cache kernels
// (AVX-512 VNNI): only then are the tiled layouts faster than rows of
// Q8_0 blocks.
func TiledKV() bool { return kv512() }

// dotQ8_0TG scores ng groups of four query rows (ng·nb ≤ 16) against
// the tiled keys at k, group i's rows against the block columns from byte
// gs[i].koff of each tile (see the assembly).
//
//go:noescape
func dotQ8_0TG(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int)

// accumQ8_0T4 is AccumQ8_0Tiled for four rows (o[r], p[r]), n ≤ 128 keys
// and nb ≤ 8 block columns; scr is a work area of 1 KiB per block column.
//
//go:noescape
func accumQ8_0T4(o, p *[4]*float32, v *byte, ldt, n, nb int, scr *byte)
