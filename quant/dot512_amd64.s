//go:build amd64 && !purego

#include "textflag.h"

// AVX-512 VNNI kernels, for CPUs with AVX512F, AVX512BW, AVX512VL and
// AVX512VNNI (see dot512_amd64.go). They compute the products of
// dot_amd64.s and dotx4_amd64.s (one weight row against one or four
// activation rows) with VPDPBUSD, which multiplies unsigned by signed bytes
// and adds four products into each dword in one instruction, instead of
// VPMADDUBSW + VPMADDWD + VPADDD, and with 512-bit registers.
//
// K-quant sub-block scales. One VPDPBUSD over 64 elements leaves 16 dwords,
// each the sum of four products of one sub-block. Such a sum fits in an
// int16 (at most 4·15·128 = 7680 for Q4_K, 4·63·128 = 32256 for the
// unsigned 6-bit quants of Q6_K), so VPACKSSDW packs the dwords of two
// chunks into words without saturating, and VPMADDWD / VPDPWSSD against a
// vector holding each word's sub-block scale then multiplies by the scales,
// adds adjacent words (always of one sub-block) and accumulates: two
// instructions for the scales of 128 elements.
//
// Weight unpacking. 64 quants of Q4_K are the low and the high nibbles of
// 32 bytes: the bytes are broadcast to both 256-bit halves, the upper half
// is shifted right by 4 (VPSRLVQ) and the nibbles masked, which gives the
// weights in the order of the 64 activations they meet, so VPDPBUSD takes
// the activations straight from memory. Q6_K adds the 2-bit high parts the
// same way (VPSLLVQ / VPSRLVQ of the broadcast qh bytes, then VPTERNLOGD).
//
// No software prefetch (unlike the AVX2 rows kernels): on one Zen 5 core streaming
// weights from DRAM, sequentially or as random 0.5 MiB expert matrices,
// these kernels ran 15..40 % faster without it than with prefetches 4 or
// 16 blocks ahead. Re-checked with the weights in 2 MiB pages and both
// cores streaming random Q4_K matrices (512x2048, 2048x512, 2048x2048): 43-50
// GB/s together without prefetch, 31-41 GB/s with PREFETCHT0 512..4096 bytes
// ahead. Speed: BenchmarkVNNI (in cache), BenchmarkVNNIStream (from DRAM).

// Q4_K: per-qword shift counts that turn 32 bytes of nibbles broadcast to
// both halves into the low nibbles (bytes 0..31) and the high ones (32..63).
DATA q4kShift<>+0(SB)/8, $0x0000000000000000
DATA q4kShift<>+8(SB)/8, $0x0000000000000000
DATA q4kShift<>+16(SB)/8, $0x0000000000000000
DATA q4kShift<>+24(SB)/8, $0x0000000000000000
DATA q4kShift<>+32(SB)/8, $0x0000000000000004
DATA q4kShift<>+40(SB)/8, $0x0000000000000004
DATA q4kShift<>+48(SB)/8, $0x0000000000000004
DATA q4kShift<>+56(SB)/8, $0x0000000000000004
GLOBL q4kShift<>(SB), RODATA|NOPTR, $64

// Q4_K: VPSHUFB controls from [sc0..3 m0..3 sc4..7 m4..7] (in every 128-bit
// lane) to the scale words of a packed pair of chunks: chunks 0,1 (first 64
// bytes) and chunks 2,3.
DATA q4kScaleCtl<>+0(SB)/8, $0x8000800080008000
DATA q4kScaleCtl<>+8(SB)/8, $0x8002800280028002
DATA q4kScaleCtl<>+16(SB)/8, $0x8000800080008000
DATA q4kScaleCtl<>+24(SB)/8, $0x8002800280028002
DATA q4kScaleCtl<>+32(SB)/8, $0x8001800180018001
DATA q4kScaleCtl<>+40(SB)/8, $0x8003800380038003
DATA q4kScaleCtl<>+48(SB)/8, $0x8001800180018001
DATA q4kScaleCtl<>+56(SB)/8, $0x8003800380038003
DATA q4kScaleCtl<>+64(SB)/8, $0x8008800880088008
DATA q4kScaleCtl<>+72(SB)/8, $0x800a800a800a800a
DATA q4kScaleCtl<>+80(SB)/8, $0x8008800880088008
DATA q4kScaleCtl<>+88(SB)/8, $0x800a800a800a800a
DATA q4kScaleCtl<>+96(SB)/8, $0x8009800980098009
DATA q4kScaleCtl<>+104(SB)/8, $0x800b800b800b800b
DATA q4kScaleCtl<>+112(SB)/8, $0x8009800980098009
DATA q4kScaleCtl<>+120(SB)/8, $0x800b800b800b800b
GLOBL q4kScaleCtl<>(SB), RODATA|NOPTR, $128

// Q4_K: VPSHUFB control to the minimum words m0 m0 m1 m1 ... m7 m7 (one per
// 16-element bsum).
DATA q4kMinCtl<>+0(SB)/8, $0x8005800580048004
DATA q4kMinCtl<>+8(SB)/8, $0x8007800780068006
DATA q4kMinCtl<>+16(SB)/8, $0x800d800d800c800c
DATA q4kMinCtl<>+24(SB)/8, $0x800f800f800e800e
GLOBL q4kMinCtl<>(SB), RODATA|NOPTR, $32

// Q6_K: per-qword shift counts (left, then right) that move the 2-bit high
// parts of the four 32-element groups of a half to bits 4..5.
DATA q6kShift<>+0(SB)/8, $0x0000000000000004
DATA q6kShift<>+8(SB)/8, $0x0000000000000004
DATA q6kShift<>+16(SB)/8, $0x0000000000000004
DATA q6kShift<>+24(SB)/8, $0x0000000000000004
DATA q6kShift<>+32(SB)/8, $0x0000000000000002
DATA q6kShift<>+40(SB)/8, $0x0000000000000002
DATA q6kShift<>+48(SB)/8, $0x0000000000000002
DATA q6kShift<>+56(SB)/8, $0x0000000000000002
DATA q6kShift<>+64(SB)/8, $0x0000000000000000
DATA q6kShift<>+72(SB)/8, $0x0000000000000000
DATA q6kShift<>+80(SB)/8, $0x0000000000000000
DATA q6kShift<>+88(SB)/8, $0x0000000000000000
DATA q6kShift<>+96(SB)/8, $0x0000000000000002
DATA q6kShift<>+104(SB)/8, $0x0000000000000002
DATA q6kShift<>+112(SB)/8, $0x0000000000000002
DATA q6kShift<>+120(SB)/8, $0x0000000000000002
GLOBL q6kShift<>(SB), RODATA|NOPTR, $128

// Q6_K: VPERMW indices from the 16 scale words to those of a packed pair of
// chunks: chunks 0,1 (first 64 bytes) and chunks 2,3.
DATA q6kScaleIdx<>+0(SB)/8, $0x0000000000000000
DATA q6kScaleIdx<>+8(SB)/8, $0x0004000400040004
DATA q6kScaleIdx<>+16(SB)/8, $0x0001000100010001
DATA q6kScaleIdx<>+24(SB)/8, $0x0005000500050005
DATA q6kScaleIdx<>+32(SB)/8, $0x0002000200020002
DATA q6kScaleIdx<>+40(SB)/8, $0x0006000600060006
DATA q6kScaleIdx<>+48(SB)/8, $0x0003000300030003
DATA q6kScaleIdx<>+56(SB)/8, $0x0007000700070007
DATA q6kScaleIdx<>+64(SB)/8, $0x0008000800080008
DATA q6kScaleIdx<>+72(SB)/8, $0x000c000c000c000c
DATA q6kScaleIdx<>+80(SB)/8, $0x0009000900090009
DATA q6kScaleIdx<>+88(SB)/8, $0x000d000d000d000d
DATA q6kScaleIdx<>+96(SB)/8, $0x000a000a000a000a
DATA q6kScaleIdx<>+104(SB)/8, $0x000e000e000e000e
DATA q6kScaleIdx<>+112(SB)/8, $0x000b000b000b000b
DATA q6kScaleIdx<>+120(SB)/8, $0x000f000f000f000f
GLOBL q6kScaleIdx<>(SB), RODATA|NOPTR, $128

// The 0x0f0f0f0f00000000 mask of the Q4_K scale unpacking.
DATA q4kHiMask<>+0(SB)/8, $0x0f0f0f0f00000000
GLOBL q4kHiMask<>(SB), RODATA|NOPTR, $8

// Horizontal sum of the 16 floats in Z0 into X0[0].
#define HSUM_Z0 \
	VEXTRACTF64X4 $1, Z0, Y1 \
	VADDPS        Y1, Y0, Y0 \
	VEXTRACTF128  $1, Y0, X1 \
	VADDPS        X1, X0, X0 \
	VHADDPS       X0, X0, X0 \
	VHADDPS       X0, X0, X0

// Store the horizontal sums of Z24..Z27 into res[0..3] (pointer in AX).
#define HSUM4Z_STORE \
	VEXTRACTF64X4 $1, Z24, Y0 \
	VADDPS  Y0, Y24, Y10 \
	VEXTRACTF64X4 $1, Z25, Y0 \
	VADDPS  Y0, Y25, Y11 \
	VEXTRACTF64X4 $1, Z26, Y0 \
	VADDPS  Y0, Y26, Y12 \
	VEXTRACTF64X4 $1, Z27, Y0 \
	VADDPS  Y0, Y27, Y13 \
	VHADDPS Y11, Y10, Y0 \
	VHADDPS Y13, Y12, Y1 \
	VHADDPS Y1, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS  X1, X0, X0 \
	VMOVUPS X0, 0(AX)

#define X4_ARGS \
	MOVQ w+0(FP), SI \
	MOVQ x0+8(FP), DI \
	MOVQ x1+16(FP), R8 \
	MOVQ x2+24(FP), R9 \
	MOVQ x3+32(FP), R10 \
	MOVQ nb+40(FP), CX

#define X4_ADVANCE(wb, xb) \
	ADDQ $wb, SI \
	ADDQ $xb, DI \
	ADDQ $xb, R8 \
	ADDQ $xb, R9 \
	ADDQ $xb, R10

// ---- Q4_K (144-byte blocks) x Q8_K (292-byte blocks).

// Z15 = 0x0f bytes, Z14 = nibble shift counts, Z16/Z17 = scale word
// controls, Y18 = minimum word control, R12/R13 = scale unpacking masks.
#define Q4K_CONSTS \
	MOVL $0x0f0f0f0f, AX \
	VPBROADCASTD AX, Z15 \
	VMOVDQU64 q4kShift<>(SB), Z14 \
	VMOVDQU64 q4kScaleCtl<>+0(SB), Z16 \
	VMOVDQU64 q4kScaleCtl<>+64(SB), Z17 \
	VMOVDQU64 q4kMinCtl<>(SB), Y18 \
	MOVQ $0x3f3f3f3f3f3f3f3f, R12 \
	MOVQ $0x3030303030303030, R13

// The 6-bit scales and minimums of the block at SI: Z20 / Z21 = the scale
// words of the packed chunk pairs 0,1 / 2,3, Y22 = the minimum words (m0 m0
// m1 m1 ... m7 m7, one per bsum). Uses AX, BX, DX, Z2, Z3.
#define Q4K_SCALES \
	MOVQ  4(SI), DX /* q0..q7 */ \
	RORXQ $2, DX, BX \
	ANDQ  R12, DX /* sc0..3 m0..3 */ \
	ANDQ  R13, BX /* high 2 bits of sc4..7 m4..7, at bits 4..5 */ \
	MOVL  12(SI), AX \
	ANDL  $0x0f0f0f0f, AX \
	ORQ   AX, BX \
	MOVQ  8(SI), AX \
	SHRQ  $4, AX \
	ANDQ  q4kHiMask<>(SB), AX \
	ORQ   AX, BX /* sc4..7 m4..7 */ \
	VPBROADCASTQ DX, Z3 \
	VPBROADCASTQ BX, Z2 \
	VPUNPCKLQDQ Z2, Z3, Z3 /* sc0..3 m0..3 sc4..7 m4..7 in each lane */ \
	VPSHUFB Z16, Z3, Z20 \
	VPSHUFB Z17, Z3, Z21 \
	VPSHUFB Y18, Y3, Y22

// Weights of the 64-element chunk at off(SI) (32 bytes of nibbles) into dst.
#define Q4K_W(off, dst) \
	VBROADCASTI64X4 off(SI), dst \
	VPSRLVQ Z14, dst, dst \
	VPANDD  Z15, dst, dst

// func dotQ4KVNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)
// out[i] = row i of w (rows rb bytes apart, nb blocks each) · x, for
// i < n (n, nb >= 1). Z10 = Σ d·dx·(Σ sc·q·x) (16 lanes), Y11 = Σ
// dmin·dx·(Σ m·bsums) (8 lanes).
TEXT ·dotQ4KVNNIRows(SB), NOSPLIT, $16-48
	MOVQ w+0(FP), R8
	MOVQ rb+8(FP), R9
	MOVQ n+16(FP), R10
	MOVQ out+40(FP), R11
	Q4K_CONSTS

q4krow:
	MOVQ R8, SI
	MOVQ x+24(FP), DI
	MOVQ nb+32(FP), CX
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11

q4kloop:
	Q4K_SCALES
	VPMADDWD 260(DI), Y22, Y9  // m_j·(bsum[2j] + bsum[2j+1])

	Q4K_W(16, Z0)
	Q4K_W(48, Z1)
	VPXORD   Z4, Z4, Z4
	VPXORD   Z5, Z5, Z5
	VPDPBUSD 4(DI), Z0, Z4
	VPDPBUSD 68(DI), Z1, Z5
	VPACKSSDW Z5, Z4, Z4
	VPMADDWD Z20, Z4, Z8
	Q4K_W(80, Z2)
	Q4K_W(112, Z3)
	VPXORD   Z6, Z6, Z6
	VPXORD   Z7, Z7, Z7
	VPDPBUSD 132(DI), Z2, Z6
	VPDPBUSD 196(DI), Z3, Z7
	VPACKSSDW Z7, Z6, Z6
	VPDPWSSD Z21, Z6, Z8

	VCVTPH2PS 0(SI), X0          // d, dmin (and two unused values)
	VMULPS.BCST 0(DI), X0, X0
	VMOVQ X0, 0(SP)              // d·dx, dmin·dx
	VCVTDQ2PS Z8, Z8
	VFMADD231PS.BCST 0(SP), Z8, Z10
	VCVTDQ2PS Y9, Y9
	VFMADD231PS.BCST 4(SP), Y9, Y11

	ADDQ $144, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q4kloop

	VSUBPS Z11, Z10, Z0
	HSUM_Z0
	VMOVSS X0, 0(R11)
	ADDQ $4, R11
	ADDQ R9, R8
	DECQ R10
	JNZ  q4krow
	VZEROUPPER
	RET

// One row of the four-row kernel: weights in Z0..Z3, scale words in Z20,
// Z21, minimum words in Y22, d and dmin broadcast in Z28, Z29.
#define Q4KX4_ROW(P, F) \
	VPXORD   Z4, Z4, Z4 \
	VPXORD   Z5, Z5, Z5 \
	VPXORD   Z6, Z6, Z6 \
	VPXORD   Z7, Z7, Z7 \
	VPDPBUSD 4(P), Z0, Z4 \
	VPDPBUSD 68(P), Z1, Z5 \
	VPDPBUSD 132(P), Z2, Z6 \
	VPDPBUSD 196(P), Z3, Z7 \
	VPACKSSDW Z5, Z4, Z4 \
	VPACKSSDW Z7, Z6, Z6 \
	VPMADDWD Z20, Z4, Z8 \
	VPDPWSSD Z21, Z6, Z8 \
	VPMADDWD 260(P), Y22, Y9 \
	VCVTDQ2PS Z8, Z8 \
	VCVTDQ2PS Z9, Z9 \
	VMULPS   Z28, Z8, Z8 \
	VFNMADD231PS Z29, Z9, Z8 \
	VFMADD231PS.BCST 0(P), Z8, F

// func dotQ4KVNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
TEXT ·dotQ4KVNNIx4(SB), NOSPLIT, $0-56
	X4_ARGS
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	Q4K_CONSTS
	TESTQ CX, CX
	JZ    q4k4done

q4k4loop:
	Q4K_SCALES
	Q4K_W(16, Z0)
	Q4K_W(48, Z1)
	Q4K_W(80, Z2)
	Q4K_W(112, Z3)
	VPBROADCASTW 0(SI), Y28
	VCVTPH2PS Y28, Z28           // d
	VPBROADCASTW 2(SI), Y29
	VCVTPH2PS Y29, Z29           // dmin
	Q4KX4_ROW(DI, Z24)
	Q4KX4_ROW(R8, Z25)
	Q4KX4_ROW(R9, Z26)
	Q4KX4_ROW(R10, Z27)
	X4_ADVANCE(144, 292)
	DECQ CX
	JNZ  q4k4loop

q4k4done:
	MOVQ res+48(FP), AX
	HSUM4Z_STORE
	VZEROUPPER
	RET

// ---- Q6_K (210-byte blocks) x Q8_K.

// Z15 = 0x0f bytes, Z14 = 0x30 bytes, Z16/Z17 = shift counts, Z18/Z19 =
// scale word indices.
#define Q6K_CONSTS \
	MOVL $0x0f0f0f0f, AX \
	VPBROADCASTD AX, Z15 \
	MOVL $0x30303030, AX \
	VPBROADCASTD AX, Z14 \
	VMOVDQU64 q6kShift<>+0(SB), Z16 \
	VMOVDQU64 q6kShift<>+64(SB), Z17 \
	VMOVDQU64 q6kScaleIdx<>+0(SB), Z18 \
	VMOVDQU64 q6kScaleIdx<>+64(SB), Z19

// The unsigned 6-bit weights of one 128-element half of the block at SI
// (64 bytes of low nibbles at qloff, 32 bytes of high parts at qhoff):
// elements 0..63 into wa, 64..127 into wb. Uses Z0, Z1.
#define Q6K_HALF(qloff, qhoff, wa, wb) \
	VMOVDQU64 qloff(SI), Z0 \
	VBROADCASTI64X4 qhoff(SI), Z1 \
	VPSLLVQ Z16, Z1, wa \
	VPANDD  Z14, wa, wa \
	VPTERNLOGD $0xf8, Z15, Z0, wa /* wa |= Z0 & 0x0f */ \
	VPSRLVQ Z17, Z1, wb \
	VPANDD  Z14, wb, wb \
	VPSRLW  $4, Z0, Z0 \
	VPTERNLOGD $0xf8, Z15, Z0, wb

// Scales of the block at SI: Y22 = the 16 scales as words, Z20 / Z21 = the
// scale words of the packed chunk pairs 0,1 / 2,3.
#define Q6K_SCALES \
	VPMOVSXBW 192(SI), Y22 \
	VPERMW Z22, Z18, Z20 \
	VPERMW Z22, Z19, Z21

// Integer dot of the block with the Q8_K block at P into tot (16 lanes):
// Σ sc·(q-32)·x = Σ sc·q·x - 32·Σ sc·bsums. Weights in Z2..Z5.
#define Q6K_DOT(P, tot) \
	VPXORD   Z6, Z6, Z6 \
	VPXORD   Z7, Z7, Z7 \
	VPXORD   Z8, Z8, Z8 \
	VPXORD   Z9, Z9, Z9 \
	VPDPBUSD 4(P), Z2, Z6 \
	VPDPBUSD 68(P), Z3, Z7 \
	VPDPBUSD 132(P), Z4, Z8 \
	VPDPBUSD 196(P), Z5, Z9 \
	VPACKSSDW Z7, Z6, Z6 \
	VPACKSSDW Z9, Z8, Z8 \
	VPMADDWD Z20, Z6, tot \
	VPDPWSSD Z21, Z8, tot \
	VPMADDWD 260(P), Y22, Y12 \
	VPSLLD   $5, Y12, Y12 \
	VPSUBD   Z12, tot, tot

// func dotQ6KVNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)
// As dotQ4KVNNIRows, for Q6_K.
TEXT ·dotQ6KVNNIRows(SB), NOSPLIT, $16-48
	MOVQ w+0(FP), R8
	MOVQ rb+8(FP), R9
	MOVQ n+16(FP), R10
	MOVQ out+40(FP), R11
	Q6K_CONSTS

q6krow:
	MOVQ R8, SI
	MOVQ x+24(FP), DI
	MOVQ nb+32(FP), CX
	VPXORD Z10, Z10, Z10

q6kloop:
	Q6K_SCALES
	Q6K_HALF(0, 128, Z2, Z3)
	Q6K_HALF(64, 160, Z4, Z5)
	Q6K_DOT(DI, Z11)
	VPBROADCASTW 208(SI), X0
	VCVTPH2PS X0, X0
	VMULSS  0(DI), X0, X0
	VMOVSS  X0, 0(SP)            // d·dx
	VCVTDQ2PS Z11, Z11
	VFMADD231PS.BCST 0(SP), Z11, Z10
	ADDQ $210, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q6kloop

	VMOVAPS Z10, Z0
	HSUM_Z0
	VMOVSS X0, 0(R11)
	ADDQ $4, R11
	ADDQ R9, R8
	DECQ R10
	JNZ  q6krow
	VZEROUPPER
	RET

#define Q6KX4_ROW(P, F) \
	Q6K_DOT(P, Z11) \
	VCVTDQ2PS Z11, Z11 \
	VMULPS   Z28, Z11, Z11 \
	VFMADD231PS.BCST 0(P), Z11, F

// func dotQ6KVNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
TEXT ·dotQ6KVNNIx4(SB), NOSPLIT, $0-56
	X4_ARGS
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	Q6K_CONSTS
	TESTQ CX, CX
	JZ    q6k4done

q6k4loop:
	Q6K_SCALES
	Q6K_HALF(0, 128, Z2, Z3)
	Q6K_HALF(64, 160, Z4, Z5)
	VPBROADCASTW 208(SI), Y28
	VCVTPH2PS Y28, Z28           // d
	Q6KX4_ROW(DI, Z24)
	Q6KX4_ROW(R8, Z25)
	Q6KX4_ROW(R9, Z26)
	Q6KX4_ROW(R10, Z27)
	X4_ADVANCE(210, 292)
	DECQ CX
	JNZ  q6k4loop

q6k4done:
	MOVQ res+48(FP), AX
	HSUM4Z_STORE
	VZEROUPPER
	RET

// ---- Q8_0 (34-byte blocks: f16 d, 32 x int8) x internal Q8 activations
// (36-byte blocks: f32 d, 32 x int8). Two blocks per 512-bit vector (one
// per 256-bit half; a single last block takes a 256-bit vector), so that
// one conversion and one FMA serve two blocks. The two blocks' scales
// d(w)·d(x) are formed in an xmm and spread to the halves by VPERMPS
// (cheaper than masked broadcasts and a 512-bit F16C conversion). VPDPBUSD
// needs one unsigned operand: |w| times x·sign(w). This is exact for every
// weight and for activations in [-127, 127], which is what quantizeQ8aBlock
// produces (the AVX2 kernels have the same limit).
// Registers: Z13 = 0, Z12 = q80Idx.

// VPERMPS indices: lanes 0..7 take element 0, lanes 8..15 element 1.
DATA q80Idx<>+0(SB)/8, $0
DATA q80Idx<>+8(SB)/8, $0
DATA q80Idx<>+16(SB)/8, $0
DATA q80Idx<>+24(SB)/8, $0
DATA q80Idx<>+32(SB)/8, $0x0000000100000001
DATA q80Idx<>+40(SB)/8, $0x0000000100000001
DATA q80Idx<>+48(SB)/8, $0x0000000100000001
DATA q80Idx<>+56(SB)/8, $0x0000000100000001
GLOBL q80Idx<>(SB), RODATA|NOPTR, $64

#define Q80_CONSTS \
	VPXORD Z13, Z13, Z13 \
	VMOVDQU64 q80Idx<>(SB), Z12

// Z1 = |w|, K1 = (w < 0) of the two weight blocks at woff(SI), and X4 =
// their scales d(w0), d(w1). Uses AX, BX.
#define Q80_WPAIR(woff) \
	VMOVDQU woff+2(SI), Y0 \
	VINSERTI64X4 $1, woff+36(SI), Z0, Z0 \
	VPMOVB2M Z0, K1 \
	VPABSB  Z0, Z1 \
	MOVWLZX woff(SI), AX \
	MOVWLZX woff+34(SI), BX \
	SHLL    $16, BX \
	ORL     BX, AX \
	VMOVD   AX, X4 \
	VCVTPH2PS X4, X4

// F += the products of the two weight blocks (Q80_WPAIR) with the two
// activation blocks at xoff(P).
#define Q80_XPAIR(P, xoff, F) \
	VMOVDQU xoff+4(P), Y2 \
	VINSERTI64X4 $1, xoff+40(P), Z2, Z2 \
	VPSUBB  Z2, Z13, K1, Z2 \
	VPXORD  Z3, Z3, Z3 \
	VPDPBUSD Z2, Z1, Z3 \
	VCVTDQ2PS Z3, Z3 \
	VMOVSS  xoff(P), X5 \
	VINSERTPS $0x10, xoff+36(P), X5, X5 \
	VMULPS  X4, X5, X5 \
	VPERMPS Z5, Z12, Z5 \
	VFMADD231PS Z5, Z3, F

// Y1 = |w|, Y0 = w, Y4 = its scale, for one weight block at 0(SI).
#define Q80_W1 \
	VMOVDQU 2(SI), Y0 \
	VPABSB  Y0, Y1 \
	VPBROADCASTW 0(SI), X4 \
	VCVTPH2PS X4, Y4

// F += the product of one weight block (Q80_W1) with the activation block
// at 0(P) (Y5: scratch).
#define Q80_X1(P, F) \
	VMOVDQU 4(P), Y2 \
	VPSIGNB Y0, Y2, Y2 \
	VPXORD  Y3, Y3, Y3 \
	VPDPBUSD Y2, Y1, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VMULPS.BCST 0(P), Y4, Y5 \
	VFMADD231PS Y5, Y3, F

// func dotQ8_0VNNIRows(w *byte, rb, n int, x *byte, nb int, out *float32)
// As dotQ4KVNNIRows, for Q8_0.
TEXT ·dotQ8_0VNNIRows(SB), NOSPLIT, $0-48
	MOVQ w+0(FP), R8
	MOVQ rb+8(FP), R9
	MOVQ n+16(FP), R10
	MOVQ out+40(FP), R11
	Q80_CONSTS

q80row:
	MOVQ R8, SI
	MOVQ x+24(FP), DI
	MOVQ nb+32(FP), CX
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z14, Z14, Z14

q80loop4:
	CMPQ CX, $4
	JLT  q80pair
	Q80_WPAIR(0)
	Q80_XPAIR(DI, 0, Z10)
	Q80_WPAIR(68)
	Q80_XPAIR(DI, 72, Z11)
	ADDQ $136, SI
	ADDQ $144, DI
	SUBQ $4, CX
	JMP  q80loop4

q80pair:
	CMPQ CX, $2
	JLT  q80one
	Q80_WPAIR(0)
	Q80_XPAIR(DI, 0, Z10)
	ADDQ $68, SI
	ADDQ $72, DI
	SUBQ $2, CX

q80one:
	TESTQ CX, CX
	JZ    q80end
	Q80_W1
	Q80_X1(DI, Y14)

q80end:
	VADDPS Z11, Z10, Z0
	VADDPS Z14, Z0, Z0
	HSUM_Z0
	VMOVSS X0, 0(R11)
	ADDQ $4, R11
	ADDQ R9, R8
	DECQ R10
	JNZ  q80row
	VZEROUPPER
	RET

// func dotQ8_0VNNIx4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
TEXT ·dotQ8_0VNNIx4(SB), NOSPLIT, $0-56
	X4_ARGS
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	Q80_CONSTS

q804pair:
	CMPQ CX, $2
	JLT  q804one
	Q80_WPAIR(0)
	Q80_XPAIR(DI, 0, Z24)
	Q80_XPAIR(R8, 0, Z25)
	Q80_XPAIR(R9, 0, Z26)
	Q80_XPAIR(R10, 0, Z27)
	X4_ADVANCE(68, 72)
	SUBQ $2, CX
	JMP  q804pair

q804one:
	TESTQ CX, CX
	JZ    q804done
	VPXORD Y6, Y6, Y6
	VPXORD Y7, Y7, Y7
	VPXORD Y8, Y8, Y8
	VPXORD Y9, Y9, Y9
	Q80_W1
	Q80_X1(DI, Y6)
	Q80_X1(R8, Y7)
	Q80_X1(R9, Y8)
	Q80_X1(R10, Y9)
	VADDPS Z6, Z24, Z24
	VADDPS Z7, Z25, Z25
	VADDPS Z8, Z26, Z26
	VADDPS Z9, Z27, Z27

q804done:
	MOVQ res+48(FP), AX
	HSUM4Z_STORE
	VZEROUPPER
	RET
