//go:build amd64 && !purego

package quant

import (
	"unsafe"
)

// AVX-512 kernels of the Q8_0 KV cache (kvq8_512_amd64.s): Q·Kᵀ with
// VPDPBUSD on pairs of blocks, P·V with 512-bit FMAs. They replace the AVX2
// kernels of kvq8_amd64.s where the CPU has AVX-512 F, BW, VL and VNNI.

// hasKV512 reports whether the CPU (and OS) support the AVX-512 kernels.
var hasKV512 = hasAVX512VNNI

// kvKernels set to "avx2" at link time
// (-ldflags=-X=github.com/ringo-ai/ringo/quant.kvKernels=avx2) keeps the
// AVX2 kernels of the Q8_0 KV cache on CPUs with AVX-512, for comparing
// whole programs (e.g. the attention benchmarks of backend/cpu).
var kvKernels string

// useKV512 selects the AVX-512 kernels where the CPU has them; package
// tests and benchmarks switch it with setKV512.
var useKV512 = kvKernels != "avx2"

// kv512 reports whether the AVX-512 kernels are in use.
func kv512() bool { return hasKV512 && useKV512 }

// setKV512 switches between the AVX-512 and the AVX2 kernels of the Q8_0
// KV cache (on CPUs without AVX-512 the AVX2 ones stay) and reports whether
// the AVX-512 ones are now in use.
func setKV512(on bool) bool {
	useKV512 = on
	return kv512()
}

// kv512Small is the longest row (in blocks) served from the small work
// areas below (head dims up to 128, the common case): Go clears a work
// area on every call.
const kv512Small = 4

// dotQ8_0x4n512 is dotQ8_0x4nAVX2 for AVX-512 VNNI (nb ≤ maxKVBlocks); scr
// is a 64-byte aligned work area of 384·⌈nb/2⌉ bytes: per pair of blocks
// the repacked queries (4 × 64 bytes), corrections and scales (2 × 64).
//
//go:noescape
func dotQ8_0x4n512(out *float32, ldo, mr int, x *[4]*byte, scr *byte, w *byte, ldw, n, nb int, pf *byte)

// dotQ8_0x4Rows512 is dotQ8_0x4Rows (after its long-row check) with the
// AVX-512 kernel; pf is the first row to prefetch into L2.
func dotQ8_0x4Rows512(out []float32, ldo, mr int, xs *[4][]byte, w []byte, ldw, n, nb int, pf *byte) {
	var x [4]*byte
	for r := range x {
		x[r] = unsafe.SliceData(xs[r])
	}
	if nb <= kv512Small {
		var buf [kv512Small/2*384 + 63]byte
		dotQ8_0x4n512(&out[0], ldo, mr, &x, align64(&buf[0]), unsafe.SliceData(w), ldw, n, nb, pf)
		return
	}
	var buf [maxKVBlocks/2*384 + 63]byte
	dotQ8_0x4n512(&out[0], ldo, mr, &x, align64(&buf[0]), unsafe.SliceData(w), ldw, n, nb, pf)
}

// align64 returns the first 64-byte aligned address at or after p (within
// the same array when it has 63 spare bytes).
func align64(p *byte) *byte {
	return (*byte)(unsafe.Add(unsafe.Pointer(p), -uintptr(unsafe.Pointer(p))&63))
}

// accumQ8_0x4_512 is accumQ8_0x4AVX2 for AVX-512 (nb ≤ maxKVBlocks); scr
// is a work area of 128·(nb−2)+4 floats (nb > 2): the weights of blocks
// 2.. for a chunk of 32 keys and 16 bytes of slack.
//
//go:noescape
func accumQ8_0x4_512(o, p *[4]*float32, v *byte, ldv, n, nb int, scr *float32)

// accumQ8_0x4Rows512 is accumQ8_0x4 with the AVX-512 kernel.
func accumQ8_0x4Rows512(o, p *[4]*float32, v []byte, ldv, n, nb int) {
	if nb <= kv512Small {
		var w [128*(kv512Small-2) + 4]float32
		accumQ8_0x4_512(o, p, unsafe.SliceData(v), ldv, n, nb, &w[0])
		return
	}
	var w [128*(maxKVBlocks-2) + 4]float32
	accumQ8_0x4_512(o, p, unsafe.SliceData(v), ldv, n, nb, &w[0])
}
