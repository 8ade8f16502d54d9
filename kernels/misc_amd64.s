//go:build amd64 && !purego

#include "textflag.h"

// Element-wise AVX2 helpers. Every function processes n elements where n is a
// multiple of 8; the Go wrappers handle the remainder.

// func axpyAsm(a float32, x *float32, y *float32, n int)
TEXT ·axpyAsm(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Y0
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DI
	MOVQ n+24(FP), CX
	CMPQ CX, $32
	JL axpy_8
axpy_32:
	VMOVUPS (DI), Y1
	VMOVUPS 32(DI), Y2
	VMOVUPS 64(DI), Y3
	VMOVUPS 96(DI), Y4
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VFMADD231PS 64(SI), Y0, Y3
	VFMADD231PS 96(SI), Y0, Y4
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE axpy_32
axpy_8:
	CMPQ CX, $8
	JL axpy_done
	VMOVUPS (DI), Y1
	VFMADD231PS (SI), Y0, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP axpy_8
axpy_done:
	VZEROUPPER
	RET

// func scaleAsm(a float32, x *float32, n int)
TEXT ·scaleAsm(SB), NOSPLIT, $0-24
	VBROADCASTSS a+0(FP), Y0
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JL scale_8
scale_32:
	VMULPS (DI), Y0, Y1
	VMULPS 32(DI), Y0, Y2
	VMULPS 64(DI), Y0, Y3
	VMULPS 96(DI), Y0, Y4
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE scale_32
scale_8:
	CMPQ CX, $8
	JL scale_done
	VMULPS (DI), Y0, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, DI
	SUBQ $8, CX
	JMP scale_8
scale_done:
	VZEROUPPER
	RET

// func bf16ToF32Asm(dst *float32, src *uint16, n int)
TEXT ·bf16ToF32Asm(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JL bf_8
bf_32:
	VPMOVZXWD (SI), Y0
	VPMOVZXWD 16(SI), Y1
	VPMOVZXWD 32(SI), Y2
	VPMOVZXWD 48(SI), Y3
	VPSLLD $16, Y0, Y0
	VPSLLD $16, Y1, Y1
	VPSLLD $16, Y2, Y2
	VPSLLD $16, Y3, Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE bf_32
bf_8:
	CMPQ CX, $8
	JL bf_done
	VPMOVZXWD (SI), Y0
	VPSLLD $16, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP bf_8
bf_done:
	VZEROUPPER
	RET

// func f16ToF32Asm(dst *float32, src *uint16, n int)
TEXT ·f16ToF32Asm(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JL f16_8
f16_32:
	VCVTPH2PS (SI), Y0
	VCVTPH2PS 16(SI), Y1
	VCVTPH2PS 32(SI), Y2
	VCVTPH2PS 48(SI), Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE f16_32
f16_8:
	CMPQ CX, $8
	JL f16_done
	VCVTPH2PS (SI), Y0
	VMOVUPS Y0, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP f16_8
f16_done:
	VZEROUPPER
	RET

DATA bfconst<>+0(SB)/4, $0x00007fff
DATA bfconst<>+4(SB)/4, $0x00000001
DATA bfconst<>+8(SB)/4, $0x00400000
GLOBL bfconst<>(SB), RODATA|NOPTR, $12

// func f32ToBF16Asm(dst *uint16, src *float32, n int)
// Round to nearest even; NaNs are kept NaN (quiet bit set).
TEXT ·f32ToBF16Asm(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VPBROADCASTD bfconst<>+0(SB), Y10
	VPBROADCASTD bfconst<>+4(SB), Y11
	VPBROADCASTD bfconst<>+8(SB), Y12
tobf_8:
	CMPQ CX, $8
	JL tobf_done
	VMOVUPS (SI), Y0
	VPSRLD $16, Y0, Y1
	VPAND Y11, Y1, Y1
	VPADDD Y10, Y0, Y2
	VPADDD Y1, Y2, Y2
	VPOR Y12, Y0, Y3
	VCMPPS $3, Y0, Y0, Y4
	VBLENDVPS Y4, Y3, Y2, Y2
	VPSRLD $16, Y2, Y2
	VEXTRACTI128 $1, Y2, X3
	VPACKUSDW X3, X2, X2
	VMOVDQU X2, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	SUBQ $8, CX
	JMP tobf_8
tobf_done:
	VZEROUPPER
	RET

// func fmaLoop(n int)
// 12 independent FMA chains, 12*8*2 = 192 flops per iteration.
TEXT ·fmaLoop(SB), NOSPLIT, $0-8
	MOVQ n+0(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	TESTQ CX, CX
	JEQ fma_done
fma_loop:
	VFMADD231PS Y12, Y13, Y0
	VFMADD231PS Y12, Y13, Y1
	VFMADD231PS Y12, Y13, Y2
	VFMADD231PS Y12, Y13, Y3
	VFMADD231PS Y12, Y13, Y4
	VFMADD231PS Y12, Y13, Y5
	VFMADD231PS Y12, Y13, Y6
	VFMADD231PS Y12, Y13, Y7
	VFMADD231PS Y12, Y13, Y8
	VFMADD231PS Y12, Y13, Y9
	VFMADD231PS Y12, Y13, Y10
	VFMADD231PS Y12, Y13, Y11
	DECQ CX
	JNE fma_loop
fma_done:
	VZEROUPPER
	RET

// Constants of expSubAsm, each replicated over 8 lanes (32 bytes): the
// Cephes expf polynomial p0..p5 and 1.0 (also used, as an integer, to
// build 2^n as n<<23 + bits(1.0)).
DATA expvec<>+0(SB)/4, $0x39506967
DATA expvec<>+4(SB)/4, $0x39506967
DATA expvec<>+8(SB)/4, $0x39506967
DATA expvec<>+12(SB)/4, $0x39506967
DATA expvec<>+16(SB)/4, $0x39506967
DATA expvec<>+20(SB)/4, $0x39506967
DATA expvec<>+24(SB)/4, $0x39506967
DATA expvec<>+28(SB)/4, $0x39506967
DATA expvec<>+32(SB)/4, $0x3ab743ce
DATA expvec<>+36(SB)/4, $0x3ab743ce
DATA expvec<>+40(SB)/4, $0x3ab743ce
DATA expvec<>+44(SB)/4, $0x3ab743ce
DATA expvec<>+48(SB)/4, $0x3ab743ce
DATA expvec<>+52(SB)/4, $0x3ab743ce
DATA expvec<>+56(SB)/4, $0x3ab743ce
DATA expvec<>+60(SB)/4, $0x3ab743ce
DATA expvec<>+64(SB)/4, $0x3c088908
DATA expvec<>+68(SB)/4, $0x3c088908
DATA expvec<>+72(SB)/4, $0x3c088908
DATA expvec<>+76(SB)/4, $0x3c088908
DATA expvec<>+80(SB)/4, $0x3c088908
DATA expvec<>+84(SB)/4, $0x3c088908
DATA expvec<>+88(SB)/4, $0x3c088908
DATA expvec<>+92(SB)/4, $0x3c088908
DATA expvec<>+96(SB)/4, $0x3d2aa9c1
DATA expvec<>+100(SB)/4, $0x3d2aa9c1
DATA expvec<>+104(SB)/4, $0x3d2aa9c1
DATA expvec<>+108(SB)/4, $0x3d2aa9c1
DATA expvec<>+112(SB)/4, $0x3d2aa9c1
DATA expvec<>+116(SB)/4, $0x3d2aa9c1
DATA expvec<>+120(SB)/4, $0x3d2aa9c1
DATA expvec<>+124(SB)/4, $0x3d2aa9c1
DATA expvec<>+128(SB)/4, $0x3e2aaaaa
DATA expvec<>+132(SB)/4, $0x3e2aaaaa
DATA expvec<>+136(SB)/4, $0x3e2aaaaa
DATA expvec<>+140(SB)/4, $0x3e2aaaaa
DATA expvec<>+144(SB)/4, $0x3e2aaaaa
DATA expvec<>+148(SB)/4, $0x3e2aaaaa
DATA expvec<>+152(SB)/4, $0x3e2aaaaa
DATA expvec<>+156(SB)/4, $0x3e2aaaaa
DATA expvec<>+160(SB)/4, $0x3f000000
DATA expvec<>+164(SB)/4, $0x3f000000
DATA expvec<>+168(SB)/4, $0x3f000000
DATA expvec<>+172(SB)/4, $0x3f000000
DATA expvec<>+176(SB)/4, $0x3f000000
DATA expvec<>+180(SB)/4, $0x3f000000
DATA expvec<>+184(SB)/4, $0x3f000000
DATA expvec<>+188(SB)/4, $0x3f000000
DATA expvec<>+192(SB)/4, $0x3f800000
DATA expvec<>+196(SB)/4, $0x3f800000
DATA expvec<>+200(SB)/4, $0x3f800000
DATA expvec<>+204(SB)/4, $0x3f800000
DATA expvec<>+208(SB)/4, $0x3f800000
DATA expvec<>+212(SB)/4, $0x3f800000
DATA expvec<>+216(SB)/4, $0x3f800000
DATA expvec<>+220(SB)/4, $0x3f800000
GLOBL expvec<>(SB), RODATA|NOPTR, $224

// Scalar constants of expSubAsm: log2(e), ln(2) split in a high part
// (exact in 9 bits) and a low part, the clamp range of n and the input
// below which the result is flushed to zero (ln of the smallest normal).
DATA expconst<>+0(SB)/4, $0x3fb8aa3b
DATA expconst<>+4(SB)/4, $0x3f318000
DATA expconst<>+8(SB)/4, $0xb95e8083
DATA expconst<>+12(SB)/4, $0xc2fc0000
DATA expconst<>+16(SB)/4, $0x42fe0000
DATA expconst<>+20(SB)/4, $0xc2aeac50
GLOBL expconst<>(SB), RODATA|NOPTR, $24

// EXP8 replaces the 8 floats at off(SI) by exp(x - m) and adds them to Y8.
// A, B, C, D are temporaries. e^x = 2^n · e^r with n = round(x·log2 e),
// r = x - n·ln 2 (in two parts), e^r = 1 + r + r²·p(r).
#define EXP8(off, A, B, C, D) \
	VMOVUPS off(SI), A \
	VSUBPS  Y15, A, A \
	VCMPPS  $5, Y9, A, D \
	VMULPS  Y14, A, B \
	VROUNDPS $0, B, B \
	VMAXPS  Y11, B, B \
	VMINPS  Y10, B, B \
	VFNMADD231PS Y13, B, A \
	VFNMADD231PS Y12, B, A \
	VMOVUPS expvec<>+0(SB), C \
	VFMADD213PS expvec<>+32(SB), A, C \
	VFMADD213PS expvec<>+64(SB), A, C \
	VFMADD213PS expvec<>+96(SB), A, C \
	VFMADD213PS expvec<>+128(SB), A, C \
	VFMADD213PS expvec<>+160(SB), A, C \
	VFMADD213PS expvec<>+192(SB), A, C \
	VFMADD213PS expvec<>+192(SB), A, C \
	VCVTPS2DQ B, B \
	VPSLLD  $23, B, B \
	VPADDD  expvec<>+192(SB), B, B \
	VMULPS  B, C, C \
	VANDPS  D, C, C \
	VMOVUPS C, off(SI) \
	VADDPS  C, Y8, Y8

// func expSubAsm(x *float32, n int, m float32) float32
// x[i] = exp(x[i] - m) for i < n (a multiple of 8); returns the sum.
TEXT ·expSubAsm(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y15
	VBROADCASTSS expconst<>+0(SB), Y14
	VBROADCASTSS expconst<>+4(SB), Y13
	VBROADCASTSS expconst<>+8(SB), Y12
	VBROADCASTSS expconst<>+12(SB), Y11
	VBROADCASTSS expconst<>+16(SB), Y10
	VBROADCASTSS expconst<>+20(SB), Y9
	VXORPS Y8, Y8, Y8
	CMPQ CX, $16
	JL exp_8
exp_16:
	EXP8(0, Y0, Y1, Y2, Y3)
	EXP8(32, Y4, Y5, Y6, Y7)
	ADDQ $64, SI
	SUBQ $16, CX
	CMPQ CX, $16
	JGE exp_16
exp_8:
	CMPQ CX, $8
	JL exp_done
	EXP8(0, Y0, Y1, Y2, Y3)
	ADDQ $32, SI
	SUBQ $8, CX
	JMP exp_8
exp_done:
	VEXTRACTF128 $1, Y8, X0
	VADDPS X0, X8, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func maxAsm(x *float32, n int) float32
// Largest of x[0..n), n a positive multiple of 8.
TEXT ·maxAsm(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0
	VMOVAPS Y0, Y1
	VMOVAPS Y0, Y2
	VMOVAPS Y0, Y3
	ADDQ $32, SI
	SUBQ $8, CX
	CMPQ CX, $32
	JL max_8
max_32:
	VMAXPS (SI), Y0, Y0
	VMAXPS 32(SI), Y1, Y1
	VMAXPS 64(SI), Y2, Y2
	VMAXPS 96(SI), Y3, Y3
	ADDQ $128, SI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE max_32
max_8:
	CMPQ CX, $8
	JL max_done
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	SUBQ $8, CX
	JMP max_8
max_done:
	VMAXPS Y1, Y0, Y0
	VMAXPS Y3, Y2, Y2
	VMAXPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func prefetchAsm(p unsafe.Pointer, ld, rows, lines int)
// PREFETCHT1 of lines cache lines (64 bytes) from each of rows rows ld
// bytes apart, starting at p.
TEXT ·prefetchAsm(SB), NOSPLIT, $0-32
	MOVQ p+0(FP), SI
	MOVQ ld+8(FP), DX
	MOVQ rows+16(FP), CX
	MOVQ lines+24(FP), BX
	TESTQ CX, CX
	JEQ pf_done
	TESTQ BX, BX
	JEQ pf_done
pf_row:
	MOVQ SI, DI
	MOVQ BX, AX
pf_line:
	PREFETCHT1 (DI)
	ADDQ $64, DI
	DECQ AX
	JNE pf_line
	ADDQ DX, SI
	DECQ CX
	JNE pf_row
pf_done:
	RET

// LS_CHUNK(off, t, u): columns off/4 .. off/4+7 of the current row (DI),
// v (R10) and o (R11): t = lam·s + k_i·v, stored back to s, then o +=
// q_i·t (u a temporary).
#define LS_CHUNK(off, t, u) \
	VMULPS off(DI), Y15, t \
	VFMADD231PS off(R10), Y13, t \
	VMOVUPS t, off(DI) \
	VMOVUPS off(R11), u \
	VFMADD231PS t, Y14, u \
	VMOVUPS u, off(R11)

// func lightningStepAsm(s *float32, d int, q, k, v, o *float32, lam float32)
// For each row i < d of the d×d state s (row-major): s_i = lam·s_i +
// k[i]·v, then o += q[i]·s_i. The rows are visited in order, 32 columns
// at a time (d is a positive multiple of 32; o stays in the L1 cache), and
// the state 16 rows ahead is prefetched: the states of a decode step do not
// fit in the caches.
TEXT ·lightningStepAsm(SB), NOSPLIT, $0-52
	MOVQ s+0(FP), DI
	MOVQ d+8(FP), DX
	MOVQ q+16(FP), R8
	MOVQ k+24(FP), R9
	MOVQ v+32(FP), R12
	MOVQ o+40(FP), R13
	VBROADCASTSS lam+48(FP), Y15
	LEAQ (DX*4), AX
	SHLQ $4, AX // 16 rows in bytes
	XORQ CX, CX

lsrow:
	VBROADCASTSS (R9)(CX*4), Y13
	VBROADCASTSS (R8)(CX*4), Y14
	MOVQ R12, R10
	MOVQ R13, R11
	MOVQ DX, BX

lscol:
	PREFETCHT0 (DI)(AX*1)
	PREFETCHT0 64(DI)(AX*1)
	LS_CHUNK(0, Y0, Y4)
	LS_CHUNK(32, Y1, Y5)
	LS_CHUNK(64, Y2, Y6)
	LS_CHUNK(96, Y3, Y7)
	ADDQ $128, DI
	ADDQ $128, R10
	ADDQ $128, R11
	SUBQ $32, BX
	JNZ lscol
	INCQ CX
	CMPQ CX, DX
	JLT lsrow
	VZEROUPPER
	RET

// AVX-512 version of expSubAsm (misc_amd64.s): the same range reduction
// and polynomial (expconst, expvec) on 16 lanes, with VRNDSCALEPS for the
// rounding and VSCALEFPS for the power of two (exact, as the AVX2 code's
// multiplication by 2^n built in the exponent bits).

// EXP16(off, A, B, C): x = exp(x − m) for the 16 floats at off(SI), added
// to Z8. Constants: Z15 m, Z14 log2(e), Z13/Z12 ln2 high/low, Z11/Z10 the
// clamp of n, Z9 the flush-to-zero threshold, Z16..Z22 the polynomial.
#define EXP16(off, A, B, C) \
	VMOVUPS off(SI), A \
	VSUBPS  Z15, A, A \
	VCMPPS  $5, Z9, A, K2 \
	VMULPS  Z14, A, B \
	VRNDSCALEPS $0, B, B \
	VMAXPS  Z11, B, B \
	VMINPS  Z10, B, B \
	VFNMADD231PS Z13, B, A \
	VFNMADD231PS Z12, B, A \
	VMOVAPS Z16, C \
	VFMADD213PS Z17, A, C \
	VFMADD213PS Z18, A, C \
	VFMADD213PS Z19, A, C \
	VFMADD213PS Z20, A, C \
	VFMADD213PS Z21, A, C \
	VFMADD213PS Z22, A, C \
	VFMADD213PS Z22, A, C \
	VSCALEFPS B, C, C \
	VMOVAPS.Z C, K2, C \
	VMOVUPS C, off(SI) \
	VADDPS  C, Z8, Z8

// func expSubAsm512(x *float32, n int, m float32) float32
// x[i] = exp(x[i] - m) for i < n (a multiple of 16); returns the sum.
TEXT ·expSubAsm512(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Z15
	VBROADCASTSS expconst<>+0(SB), Z14
	VBROADCASTSS expconst<>+4(SB), Z13
	VBROADCASTSS expconst<>+8(SB), Z12
	VBROADCASTSS expconst<>+12(SB), Z11
	VBROADCASTSS expconst<>+16(SB), Z10
	VBROADCASTSS expconst<>+20(SB), Z9
	VBROADCASTSS expvec<>+0(SB), Z16
	VBROADCASTSS expvec<>+32(SB), Z17
	VBROADCASTSS expvec<>+64(SB), Z18
	VBROADCASTSS expvec<>+96(SB), Z19
	VBROADCASTSS expvec<>+128(SB), Z20
	VBROADCASTSS expvec<>+160(SB), Z21
	VBROADCASTSS expvec<>+192(SB), Z22
	VPXORD Z8, Z8, Z8
	CMPQ CX, $32
	JL exp16_one

exp16_two:
	EXP16(0, Z0, Z1, Z2)
	EXP16(64, Z3, Z4, Z5)
	ADDQ $128, SI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE exp16_two

exp16_one:
	CMPQ CX, $16
	JL exp16_done
	EXP16(0, Z0, Z1, Z2)
	ADDQ $64, SI
	SUBQ $16, CX
	JMP exp16_one

exp16_done:
	VEXTRACTF64X4 $1, Z8, Y0
	VADDPS Y0, Y8, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// ExpWeights' constants: ExpNeg's polynomial p0..p5, 1 and the exponent
// bias 127 as vectors of eight (memory operands), then log2 e, 1.5·2^23
// and ln 2's two parts (broadcast).
DATA expwvec<>+0(SB)/8, $0x3950696739506967
DATA expwvec<>+8(SB)/8, $0x3950696739506967
DATA expwvec<>+16(SB)/8, $0x3950696739506967
DATA expwvec<>+24(SB)/8, $0x3950696739506967
DATA expwvec<>+32(SB)/8, $0x3ab743ce3ab743ce
DATA expwvec<>+40(SB)/8, $0x3ab743ce3ab743ce
DATA expwvec<>+48(SB)/8, $0x3ab743ce3ab743ce
DATA expwvec<>+56(SB)/8, $0x3ab743ce3ab743ce
DATA expwvec<>+64(SB)/8, $0x3c0889083c088908
DATA expwvec<>+72(SB)/8, $0x3c0889083c088908
DATA expwvec<>+80(SB)/8, $0x3c0889083c088908
DATA expwvec<>+88(SB)/8, $0x3c0889083c088908
DATA expwvec<>+96(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expwvec<>+104(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expwvec<>+112(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expwvec<>+120(SB)/8, $0x3d2aa9c13d2aa9c1
DATA expwvec<>+128(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expwvec<>+136(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expwvec<>+144(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expwvec<>+152(SB)/8, $0x3e2aaaaa3e2aaaaa
DATA expwvec<>+160(SB)/8, $0x3f0000003f000000
DATA expwvec<>+168(SB)/8, $0x3f0000003f000000
DATA expwvec<>+176(SB)/8, $0x3f0000003f000000
DATA expwvec<>+184(SB)/8, $0x3f0000003f000000
DATA expwvec<>+192(SB)/8, $0x3f8000003f800000
DATA expwvec<>+200(SB)/8, $0x3f8000003f800000
DATA expwvec<>+208(SB)/8, $0x3f8000003f800000
DATA expwvec<>+216(SB)/8, $0x3f8000003f800000
DATA expwvec<>+224(SB)/8, $0x0000007f0000007f
DATA expwvec<>+232(SB)/8, $0x0000007f0000007f
DATA expwvec<>+240(SB)/8, $0x0000007f0000007f
DATA expwvec<>+248(SB)/8, $0x0000007f0000007f
GLOBL expwvec<>(SB), RODATA|NOPTR, $256
DATA expwconst<>+0(SB)/4, $0x3fb8aa3b
DATA expwconst<>+4(SB)/4, $0x4b400000
DATA expwconst<>+8(SB)/4, $0x3f318000
DATA expwconst<>+12(SB)/4, $0xb95e8083
GLOBL expwconst<>(SB), RODATA|NOPTR, $16

// func expWeightsAsm(e *float32, x *float32, n int, mx float32, lo float32, z *[4]float64)
// e[i] = x[i] >= lo ? ExpNeg(x[i] - mx) : 0 for i < n (a multiple of 8),
// the same float32 operations in the same order as ExpNeg (no FMA), and
// z[j] += the weights of i = j (mod 4) in order of i (the low and then the
// high half of each eight, widened to float64).
TEXT ·expWeightsAsm(SB), NOSPLIT, $0-40
	MOVQ e+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS mx+24(FP), Y15
	VBROADCASTSS lo+28(FP), Y14
	MOVQ z+32(FP), DX
	VBROADCASTSS expwconst<>+0(SB), Y13
	VBROADCASTSS expwconst<>+4(SB), Y12
	VBROADCASTSS expwconst<>+8(SB), Y11
	VBROADCASTSS expwconst<>+12(SB), Y10
	VMOVUPD (DX), Y6
	TESTQ CX, CX
	JEQ expw_done
expw_loop:
	VMOVUPS (SI), Y0
	VCMPPS $0x1d, Y14, Y0, Y1 // x >= lo (ordered: false for NaN)
	VSUBPS Y15, Y0, Y0        // d = x - mx
	VMULPS Y13, Y0, Y2
	VADDPS Y12, Y2, Y2        // t = d·log2e + 1.5·2^23
	VSUBPS Y12, Y2, Y3        // k = t - 1.5·2^23
	VMULPS Y11, Y3, Y5
	VSUBPS Y5, Y0, Y0         // r = d - k·ln2hi
	VMULPS Y10, Y3, Y5
	VSUBPS Y5, Y0, Y0         // r -= k·ln2lo
	VMULPS expwvec<>+0(SB), Y0, Y4
	VADDPS expwvec<>+32(SB), Y4, Y4
	VMULPS Y0, Y4, Y4
	VADDPS expwvec<>+64(SB), Y4, Y4
	VMULPS Y0, Y4, Y4
	VADDPS expwvec<>+96(SB), Y4, Y4
	VMULPS Y0, Y4, Y4
	VADDPS expwvec<>+128(SB), Y4, Y4
	VMULPS Y0, Y4, Y4
	VADDPS expwvec<>+160(SB), Y4, Y4
	VMULPS Y0, Y0, Y5         // r·r
	VMULPS Y5, Y4, Y4
	VADDPS Y0, Y4, Y4
	VADDPS expwvec<>+192(SB), Y4, Y4
	VPADDD expwvec<>+224(SB), Y2, Y2
	VPSLLD $23, Y2, Y2        // 2^k
	VMULPS Y2, Y4, Y4
	VANDPS Y1, Y4, Y4
	VMOVUPS Y4, (DI)
	VCVTPS2PD X4, Y5
	VADDPD Y5, Y6, Y6
	VEXTRACTF128 $1, Y4, X7
	VCVTPS2PD X7, Y7
	VADDPD Y7, Y6, Y6
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNE expw_loop
expw_done:
	VMOVUPD Y6, (DX)
	VZEROUPPER
	RET
