//go:build amd64 && !purego

#include "textflag.h"

// Block dequantization kernels (AVX2). They compute exactly what the Go
// versions compute (every product and difference rounded to float32, no
// fused multiply-add), so the results are bit-for-bit identical.

// Eight elements: qs bytes at qoff(SI); low nibbles scaled by Y4/Y5 to
// loff(DI), high nibbles by Y6/Y7 to hoff(DI).
#define DQ4K_8(qoff, loff, hoff) \
	VPMOVZXBD qoff(SI), Y8 \
	VPAND     Y15, Y8, Y9 \
	VPSRLD    $4, Y8, Y8 \
	VCVTDQ2PS Y9, Y9 \
	VCVTDQ2PS Y8, Y8 \
	VMULPS    Y4, Y9, Y9 \
	VMULPS    Y6, Y8, Y8 \
	VSUBPS    Y5, Y9, Y9 \
	VSUBPS    Y7, Y8, Y8 \
	VMOVUPS   Y9, loff(DI) \
	VMOVUPS   Y8, hoff(DI)

// The 32 signed 6-bit quants in Y12 (bytes, q-32) to 32 floats at doff(DI),
// the first 16 scaled by soff(SP), the next 16 by soff+4(SP).
#define DQ6K_32(doff, soff) \
	VPSUBB  Y13, Y12, Y12 \
	VMOVDQU Y12, 64(SP) \
	VBROADCASTSS soff(SP), Y4 \
	VBROADCASTSS soff+4(SP), Y5 \
	VPMOVSXBD 64(SP), Y6 \
	VPMOVSXBD 72(SP), Y7 \
	VPMOVSXBD 80(SP), Y8 \
	VPMOVSXBD 88(SP), Y9 \
	VCVTDQ2PS Y6, Y6 \
	VCVTDQ2PS Y7, Y7 \
	VCVTDQ2PS Y8, Y8 \
	VCVTDQ2PS Y9, Y9 \
	VMULPS  Y4, Y6, Y6 \
	VMULPS  Y4, Y7, Y7 \
	VMULPS  Y5, Y8, Y8 \
	VMULPS  Y5, Y9, Y9 \
	VMOVUPS Y6, doff(DI) \
	VMOVUPS Y7, doff+32(DI) \
	VMOVUPS Y8, doff+64(DI) \
	VMOVUPS Y9, doff+96(DI)

// One 128-element half: ql at qloff(SI), qh at qhoff(SI).
#define DQ6K_HALF(qloff, qhoff, doff, soff) \
	VMOVDQU qhoff(SI), Y10 \
	VPSLLW  $4, Y10, Y12 \
	VPAND   Y14, Y12, Y12 \
	VPAND   qloff(SI), Y15, Y11 \
	VPOR    Y11, Y12, Y12 \
	DQ6K_32(doff, soff) \
	VPSLLW  $2, Y10, Y12 \
	VPAND   Y14, Y12, Y12 \
	VPAND   qloff+32(SI), Y15, Y11 \
	VPOR    Y11, Y12, Y12 \
	DQ6K_32(doff+128, soff+8) \
	VPAND   Y14, Y10, Y12 \
	VMOVDQU qloff(SI), Y11 \
	VPSRLW  $4, Y11, Y11 \
	VPAND   Y15, Y11, Y11 \
	VPOR    Y11, Y12, Y12 \
	DQ6K_32(doff+256, soff+16) \
	VPSRLW  $2, Y10, Y12 \
	VPAND   Y14, Y12, Y12 \
	VMOVDQU qloff+32(SI), Y11 \
	VPSRLW  $4, Y11, Y11 \
	VPAND   Y15, Y11, Y11 \
	VPOR    Y11, Y12, Y12 \
	DQ6K_32(doff+384, soff+24)

// ---- Q8_0: y = float32(q) * d.

// func dequantQ8_0AVX2(dst *float32, src *byte, nb int)
TEXT ·dequantQ8_0AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX

dq80loop:
	TESTQ CX, CX
	JZ    dq80done
	MOVWLZX 0(SI), AX
	VMOVD    AX, X0
	VCVTPH2PS X0, X0
	VBROADCASTSS X0, Y0
	VPMOVSXBD 2(SI), Y1
	VCVTDQ2PS Y1, Y1
	VMULPS    Y0, Y1, Y1
	VMOVUPS   Y1, 0(DI)
	VPMOVSXBD 10(SI), Y2
	VCVTDQ2PS Y2, Y2
	VMULPS    Y0, Y2, Y2
	VMOVUPS   Y2, 32(DI)
	VPMOVSXBD 18(SI), Y3
	VCVTDQ2PS Y3, Y3
	VMULPS    Y0, Y3, Y3
	VMOVUPS   Y3, 64(DI)
	VPMOVSXBD 26(SI), Y4
	VCVTDQ2PS Y4, Y4
	VMULPS    Y0, Y4, Y4
	VMOVUPS   Y4, 96(DI)
	ADDQ $34, SI
	ADDQ $128, DI
	DECQ CX
	JMP  dq80loop

dq80done:
	VZEROUPPER
	RET

// ---- Q4_K: y = (d*sc)*q - dmin*m per 32-element sub-block.

// func dequantQ4KAVX2(dst *float32, src *byte, nb int)
TEXT ·dequantQ4KAVX2(SB), NOSPLIT, $64-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVL $0x0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15

dq4kloop:
	TESTQ CX, CX
	JZ    dq4kdone
	// unpack the 6-bit scales (R12) and mins (DX), 8 bytes each
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL AX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	MOVL DX, R12
	ANDL $0x0f0f0f0f, R12
	ORL  R11, R12
	MOVL BX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	SHRL $4, DX
	ANDL $0x0f0f0f0f, DX
	ORL  R11, DX
	ANDL $0x3f3f3f3f, AX
	ANDL $0x3f3f3f3f, BX
	SHLQ $32, R12
	ORQ  AX, R12
	SHLQ $32, DX
	ORQ  BX, DX
	// d, dmin
	MOVL 0(SI), AX
	VMOVD AX, X0
	VCVTPH2PS X0, X0
	VMOVSHDUP X0, X1
	VBROADCASTSS X0, Y0
	VBROADCASTSS X1, Y1
	// 0(SP): d*sc[0..7], 32(SP): dmin*m[0..7]
	VMOVQ R12, X2
	VPMOVZXBD X2, Y2
	VCVTDQ2PS Y2, Y2
	VMULPS    Y0, Y2, Y2
	VMOVUPS   Y2, 0(SP)
	VMOVQ DX, X3
	VPMOVZXBD X3, Y3
	VCVTDQ2PS Y3, Y3
	VMULPS    Y1, Y3, Y3
	VMOVUPS   Y3, 32(SP)
	VBROADCASTSS 0(SP), Y4
	VBROADCASTSS 32(SP), Y5
	VBROADCASTSS 4(SP), Y6
	VBROADCASTSS 36(SP), Y7
	DQ4K_8(16, 0, 128)
	DQ4K_8(24, 32, 160)
	DQ4K_8(32, 64, 192)
	DQ4K_8(40, 96, 224)
	VBROADCASTSS 8(SP), Y4
	VBROADCASTSS 40(SP), Y5
	VBROADCASTSS 12(SP), Y6
	VBROADCASTSS 44(SP), Y7
	DQ4K_8(48, 256, 384)
	DQ4K_8(56, 288, 416)
	DQ4K_8(64, 320, 448)
	DQ4K_8(72, 352, 480)
	VBROADCASTSS 16(SP), Y4
	VBROADCASTSS 48(SP), Y5
	VBROADCASTSS 20(SP), Y6
	VBROADCASTSS 52(SP), Y7
	DQ4K_8(80, 512, 640)
	DQ4K_8(88, 544, 672)
	DQ4K_8(96, 576, 704)
	DQ4K_8(104, 608, 736)
	VBROADCASTSS 24(SP), Y4
	VBROADCASTSS 56(SP), Y5
	VBROADCASTSS 28(SP), Y6
	VBROADCASTSS 60(SP), Y7
	DQ4K_8(112, 768, 896)
	DQ4K_8(120, 800, 928)
	DQ4K_8(128, 832, 960)
	DQ4K_8(136, 864, 992)
	ADDQ $144, SI
	ADDQ $1024, DI
	DECQ CX
	JMP  dq4kloop

dq4kdone:
	VZEROUPPER
	RET

// ---- Q6_K: y = (d*sc)*(q-32) per 16-element sub-block.

// func dequantQ6KAVX2(dst *float32, src *byte, nb int)
TEXT ·dequantQ6KAVX2(SB), NOSPLIT, $96-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x30303030, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x20202020, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13

dq6kloop:
	TESTQ CX, CX
	JZ    dq6kdone
	MOVWLZX 208(SI), AX
	VMOVD    AX, X0
	VCVTPH2PS X0, X0
	VBROADCASTSS X0, Y0
	// 0(SP): d*sc[0..15]
	VPMOVSXBD 192(SI), Y1
	VPMOVSXBD 200(SI), Y2
	VCVTDQ2PS Y1, Y1
	VCVTDQ2PS Y2, Y2
	VMULPS    Y0, Y1, Y1
	VMULPS    Y0, Y2, Y2
	VMOVUPS   Y1, 0(SP)
	VMOVUPS   Y2, 32(SP)
	DQ6K_HALF(0, 128, 0, 0)
	DQ6K_HALF(64, 160, 512, 32)
	ADDQ $210, SI
	ADDQ $1024, DI
	DECQ CX
	JMP  dq6kloop

dq6kdone:
	VZEROUPPER
	RET

// ---- Q4_0: y = float32(q-8) * d.

// func dequantQ4_0AVX2(dst *float32, src *byte, nb int)
TEXT ·dequantQ4_0AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ nb+16(FP), CX
	MOVL $0x0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $8, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14

dq40loop:
	TESTQ CX, CX
	JZ    dq40done
	MOVWLZX 0(SI), AX
	VMOVD    AX, X0
	VCVTPH2PS X0, X0
	VBROADCASTSS X0, Y0
	VPMOVZXBD 2(SI), Y1
	VPAND     Y15, Y1, Y2
	VPSRLD    $4, Y1, Y1
	VPSUBD    Y14, Y2, Y2
	VPSUBD    Y14, Y1, Y1
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y1, Y1
	VMULPS    Y0, Y2, Y2
	VMULPS    Y0, Y1, Y1
	VMOVUPS   Y2, 0(DI)
	VMOVUPS   Y1, 64(DI)
	VPMOVZXBD 10(SI), Y1
	VPAND     Y15, Y1, Y2
	VPSRLD    $4, Y1, Y1
	VPSUBD    Y14, Y2, Y2
	VPSUBD    Y14, Y1, Y1
	VCVTDQ2PS Y2, Y2
	VCVTDQ2PS Y1, Y1
	VMULPS    Y0, Y2, Y2
	VMULPS    Y0, Y1, Y1
	VMOVUPS   Y2, 32(DI)
	VMOVUPS   Y1, 96(DI)
	ADDQ $18, SI
	ADDQ $128, DI
	DECQ CX
	JMP  dq40loop

dq40done:
	VZEROUPPER
	RET
