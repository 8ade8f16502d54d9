//go:build amd64 && !purego

#include "textflag.h"

// Horizontal sum of the 8 floats in Y0 into X0[0].
#define HSUM_Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0

// One Q4_0 x Q8a block at woff(SI)/xoff(DI), accumulated into acc.
#define Q40_BLOCK(woff, xoff, acc) \
	MOVWLZX woff(SI), AX \
	VMOVD    AX, X0 \
	VCVTPH2PS X0, X0 \
	VMULSS  xoff(DI), X0, X0 \
	VBROADCASTSS X0, Y0 \
	VMOVDQU woff+2(SI), X1 \
	VPSRLW  $4, X1, X2 \
	VINSERTI128 $1, X2, Y1, Y1 \
	VPAND   Y15, Y1, Y1 \
	VPSUBB  Y14, Y1, Y1 \
	VMOVDQU xoff+4(DI), Y2 \
	VPSIGNB Y1, Y1, Y3 \
	VPSIGNB Y1, Y2, Y2 \
	VPMADDUBSW Y2, Y3, Y3 \
	VPMADDWD Y13, Y3, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VFMADD231PS Y0, Y3, acc

// func dotQ4_0AVX2(w, x *byte, nb int) float32
// w: nb blocks of {f16 d; 16 bytes nibbles}; x: nb blocks of {f32 d; 32 x int8}.
TEXT ·dotQ4_0AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ nb+16(FP), CX
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x08080808, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x00010001, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13

q40loop2:
	CMPQ CX, $2
	JLT  q40loop
	Q40_BLOCK(0, 0, Y10)
	Q40_BLOCK(18, 36, Y11)
	ADDQ $36, SI
	ADDQ $72, DI
	SUBQ $2, CX
	JMP  q40loop2

q40loop:
	TESTQ CX, CX
	JZ    q40done
	Q40_BLOCK(0, 0, Y10)
	ADDQ $18, SI
	ADDQ $36, DI
	DECQ CX
	JMP  q40loop

q40done:
	VADDPS Y11, Y10, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// One Q8_0 x Q8a block at woff(SI)/xoff(DI), accumulated into acc.
#define Q80_BLOCK(woff, xoff, acc) \
	MOVWLZX woff(SI), AX \
	VMOVD    AX, X0 \
	VCVTPH2PS X0, X0 \
	VMULSS  xoff(DI), X0, X0 \
	VBROADCASTSS X0, Y0 \
	VMOVDQU woff+2(SI), Y1 \
	VMOVDQU xoff+4(DI), Y2 \
	VPSIGNB Y1, Y1, Y3 \
	VPSIGNB Y1, Y2, Y2 \
	VPMADDUBSW Y2, Y3, Y3 \
	VPMADDWD Y13, Y3, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VFMADD231PS Y0, Y3, acc

// func dotQ8_0AVX2(w, x *byte, nb int) float32
// w: nb blocks of {f16 d; 32 x int8}; x: nb blocks of {f32 d; 32 x int8}.
TEXT ·dotQ8_0AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ nb+16(FP), CX
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVL $0x00010001, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13

q80loop2:
	CMPQ CX, $2
	JLT  q80loop
	Q80_BLOCK(0, 0, Y10)
	Q80_BLOCK(34, 36, Y11)
	ADDQ $68, SI
	ADDQ $72, DI
	SUBQ $2, CX
	JMP  q80loop2

q80loop:
	TESTQ CX, CX
	JZ    q80done
	Q80_BLOCK(0, 0, Y10)
	ADDQ $34, SI
	ADDQ $36, DI
	DECQ CX
	JMP  q80loop

q80done:
	VADDPS Y11, Y10, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// One 64-element chunk j of a Q4_K block: 32 qs bytes at off(SI), x quants at
// xoff(DI) and xoff+32(DI), scales (int16) at soff(SP) and soff+2(SP).
#define Q4K_CHUNK(off, xoff, soff) \
	VMOVDQU off(SI), Y0 \
	VPSRLW  $4, Y0, Y1 \
	VPAND   Y15, Y0, Y0 \
	VPAND   Y15, Y1, Y1 \
	VPMADDUBSW xoff(DI), Y0, Y0 \
	VPMADDUBSW xoff+32(DI), Y1, Y1 \
	VPBROADCASTW soff(SP), Y4 \
	VPBROADCASTW soff+2(SP), Y5 \
	VPMADDWD Y4, Y0, Y0 \
	VPMADDWD Y5, Y1, Y1 \
	VPADDD  Y0, Y9, Y9 \
	VPADDD  Y1, Y9, Y9

// func dotQ4KAVX2(w, x *byte, nb int) float32
// w: nb Q4_K blocks (144 bytes); x: nb Q8_K blocks (292 bytes).
TEXT ·dotQ4KAVX2(SB), NOSPLIT, $16-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ nb+16(FP), CX
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15

q4kloop:
	TESTQ CX, CX
	JZ    q4kdone
	// software prefetch ~4 blocks ahead: single-core DRAM streams (cold
	// expert matrices) otherwise stall on every line
	PREFETCHT0 576(SI)
	PREFETCHT0 640(SI)
	PREFETCHT0 704(SI)
	// d = f16(w.d) * x.d ; dmin = f16(w.dmin) * x.d
	MOVWLZX 0(SI), AX
	VMOVD    AX, X0
	VCVTPH2PS X0, X0
	MOVWLZX 2(SI), AX
	VMOVD    AX, X1
	VCVTPH2PS X1, X1
	VMOVSS  0(DI), X2
	VMULSS  X2, X0, X0
	VMULSS  X2, X1, X1
	VBROADCASTSS X0, Y12
	VBROADCASTSS X1, Y13

	// unpack 6-bit scales and mins
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL AX, R8
	ANDL $0x3f3f3f3f, R8      // sc[0..3]
	MOVL BX, R9
	ANDL $0x3f3f3f3f, R9      // m[0..3]
	MOVL DX, R10
	ANDL $0x0f0f0f0f, R10
	MOVL AX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	ORL  R11, R10             // sc[4..7]
	MOVL DX, R11
	SHRL $4, R11
	ANDL $0x0f0f0f0f, R11
	MOVL BX, R12
	SHRL $6, R12
	ANDL $0x03030303, R12
	SHLL $4, R12
	ORL  R12, R11             // m[4..7]
	SHLQ $32, R10
	ORQ  R8, R10
	SHLQ $32, R11
	ORQ  R9, R11
	VMOVQ R10, X3
	VPMOVZXBW X3, X3
	VMOVDQU X3, 0(SP)         // 8 x int16 scales
	VMOVQ R11, X4
	VPUNPCKLBW X4, X4, X4     // m0 m0 m1 m1 ...
	VPMOVZXBW X4, Y4
	VPMADDWD 260(DI), Y4, Y4  // m_j * (bsum[2j] + bsum[2j+1])
	VCVTDQ2PS Y4, Y4
	VFMADD231PS Y13, Y4, Y11

	VPXOR Y9, Y9, Y9
	Q4K_CHUNK(16, 4, 0)
	Q4K_CHUNK(48, 68, 4)
	Q4K_CHUNK(80, 132, 8)
	Q4K_CHUNK(112, 196, 12)
	VCVTDQ2PS Y9, Y9
	VFMADD231PS Y12, Y9, Y10

	ADDQ $144, SI
	ADDQ $292, DI
	DECQ CX
	JMP  q4kloop

q4kdone:
	VSUBPS Y11, Y10, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// q (Y register, unsigned 6-bit quants of 32 elements) times x quants at
// xoff(DI), scaled by int16 scales at soff(SP) (low 16 elements) and
// soff+2(SP) (high 16), accumulated into Y9.
#define Q6K_PART(q, xoff, soff) \
	VPMADDUBSW xoff(DI), q, q \
	VPBROADCASTW soff(SP), X6 \
	VPBROADCASTW soff+2(SP), X7 \
	VINSERTI128 $1, X7, Y6, Y6 \
	VPMADDWD Y6, q, q \
	VPADDD   q, Y9, Y9

// One 128-element half h of a Q6_K block.
#define Q6K_HALF(qloff, qhoff, xoff, soff) \
	VMOVDQU qloff(SI), Y0 \
	VMOVDQU qloff+32(SI), Y1 \
	VMOVDQU qhoff(SI), Y2 \
	VPSLLW  $4, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPAND   Y15, Y0, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6K_PART(Y5, xoff, soff) \
	VPSLLW  $2, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPAND   Y15, Y1, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6K_PART(Y5, xoff+32, soff+4) \
	VPAND   Y14, Y2, Y3 \
	VPSRLW  $4, Y0, Y5 \
	VPAND   Y15, Y5, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6K_PART(Y5, xoff+64, soff+8) \
	VPSRLW  $2, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPSRLW  $4, Y1, Y5 \
	VPAND   Y15, Y5, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6K_PART(Y5, xoff+96, soff+12)

// func dotQ6KAVX2(w, x *byte, nb int) float32
// w: nb Q6_K blocks (210 bytes); x: nb Q8_K blocks (292 bytes).
TEXT ·dotQ6KAVX2(SB), NOSPLIT, $32-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ nb+16(FP), CX
	VXORPS Y10, Y10, Y10
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x30303030, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14

q6kloop:
	TESTQ CX, CX
	JZ    q6kdone
	MOVWLZX 208(SI), AX
	VMOVD    AX, X0
	VCVTPH2PS X0, X0
	VMULSS  0(DI), X0, X0
	VBROADCASTSS X0, Y12

	VPMOVSXBW 192(SI), Y4     // 16 scales as int16
	VMOVDQU Y4, 0(SP)
	VPMADDWD 260(DI), Y4, Y9  // sc * bsums
	VPSLLD $5, Y9, Y9         // * 32
	VPXOR  Y8, Y8, Y8
	VPSUBD Y9, Y8, Y9         // Y9 = -32 * Σ sc*bsum

	Q6K_HALF(0, 128, 4, 0)
	Q6K_HALF(64, 160, 132, 16)

	VCVTDQ2PS Y9, Y9
	VFMADD231PS Y12, Y9, Y10
	ADDQ $210, SI
	ADDQ $292, DI
	DECQ CX
	JMP  q6kloop

q6kdone:
	VMOVAPS Y10, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotF32AVX2(w *byte, x *float32, n int) float32   (n % 8 == 0)
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

f32loop32:
	CMPQ CX, $32
	JLT  f32loop8
	VMOVUPS 0(SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS 64(SI), Y6
	VMOVUPS 96(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  f32loop32

f32loop8:
	CMPQ CX, $8
	JLT  f32done
	VMOVUPS 0(SI), Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  f32loop8

f32done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotF16AVX2(w *byte, x *float32, n int) float32   (n % 8 == 0)
TEXT ·dotF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

f16loop32:
	CMPQ CX, $32
	JLT  f16loop8
	VCVTPH2PS 0(SI), Y4
	VCVTPH2PS 16(SI), Y5
	VCVTPH2PS 32(SI), Y6
	VCVTPH2PS 48(SI), Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  f16loop32

f16loop8:
	CMPQ CX, $8
	JLT  f16done
	VCVTPH2PS 0(SI), Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  f16loop8

f16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET

// func dotBF16AVX2(w *byte, x *float32, n int) float32   (n % 8 == 0)
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

bf16loop32:
	CMPQ CX, $32
	JLT  bf16loop8
	VPMOVZXWD 0(SI), Y4
	VPMOVZXWD 16(SI), Y5
	VPMOVZXWD 32(SI), Y6
	VPMOVZXWD 48(SI), Y7
	VPSLLD $16, Y4, Y4
	VPSLLD $16, Y5, Y5
	VPSLLD $16, Y6, Y6
	VPSLLD $16, Y7, Y7
	VFMADD231PS 0(DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ $64, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP  bf16loop32

bf16loop8:
	CMPQ CX, $8
	JLT  bf16done
	VPMOVZXWD 0(SI), Y4
	VPSLLD $16, Y4, Y4
	VFMADD231PS 0(DI), Y4, Y0
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP  bf16loop8

bf16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VZEROUPPER
	MOVSS X0, ret+24(FP)
	RET
