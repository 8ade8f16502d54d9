//go:build amd64 && !purego

#include "textflag.h"

// Multi-row kernels: one weight row against four activation rows. Each weight
// block is loaded and unpacked once and multiplied with the four rows, so the
// unpacking cost is shared. The four results are written to res[0..3].
//
// Activation row pointers: DI, R8, R9, R10. Weight pointer: SI.

// Store the horizontal sums of Y10..Y13 into res[0..3] (pointer in AX).
#define HSUM4_STORE \
	VHADDPS Y11, Y10, Y0 \
	VHADDPS Y13, Y12, Y1 \
	VHADDPS Y1, Y0, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS  X1, X0, X0 \
	VMOVUPS X0, 0(AX)

// Row part of one 64-element chunk: lo nibbles (Y0) and hi nibbles (Y1) times
// the row's quants at xoff(P) / xoff+32(P), scaled by Y2 / Y3, into acc.
#define Q4K4_ROW(P, xoff, acc) \
	VPMADDUBSW xoff(P), Y0, Y4 \
	VPMADDUBSW xoff+32(P), Y1, Y5 \
	VPMADDWD   Y2, Y4, Y4 \
	VPMADDWD   Y3, Y5, Y5 \
	VPADDD     Y4, acc, acc \
	VPADDD     Y5, acc, acc

#define Q4K4_CHUNK(off, xoff, soff) \
	VMOVDQU off(SI), Y0 \
	VPSRLW  $4, Y0, Y1 \
	VPAND   Y15, Y0, Y0 \
	VPAND   Y15, Y1, Y1 \
	VPBROADCASTW soff(SP), Y2 \
	VPBROADCASTW soff+2(SP), Y3 \
	Q4K4_ROW(DI, xoff, Y6) \
	Q4K4_ROW(R8, xoff, Y7) \
	Q4K4_ROW(R9, xoff, Y8) \
	Q4K4_ROW(R10, xoff, Y9)

// Block end for one row: F += d*dx*float(acc) - dmin*dx*float(m·bsums).
// Y0 = d, Y1 = dmin (broadcast), Y14 = 16 x int16 mins (m0 m0 m1 m1 ...).
#define Q4K4_FIN(P, acc, F) \
	VCVTDQ2PS acc, acc \
	VBROADCASTSS 0(P), Y5 \
	VMULPS  Y0, Y5, Y2 \
	VFMADD231PS Y2, acc, F \
	VPMADDWD 260(P), Y14, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VMULPS  Y1, Y5, Y5 \
	VFNMADD231PS Y5, Y3, F

#define Q6K4_ROW(P, xoff, acc) \
	VPMADDUBSW xoff(P), Y12, Y10 \
	VPMADDWD   Y11, Y10, Y10 \
	VPADDD     Y10, acc, acc

#define Q6K4_ROWS(xoff, soff) \
	VPBROADCASTW soff(SP), X11 \
	VPBROADCASTW soff+2(SP), X10 \
	VINSERTI128 $1, X10, Y11, Y11 \
	Q6K4_ROW(DI, xoff, Y0) \
	Q6K4_ROW(R8, xoff, Y1) \
	Q6K4_ROW(R9, xoff, Y2) \
	Q6K4_ROW(R10, xoff, Y3)

#define Q6K4_HALF(qloff, qhoff, xoff, soff) \
	VMOVDQU qhoff(SI), Y13 \
	VPSLLW  $4, Y13, Y12 \
	VPAND   Y14, Y12, Y12 \
	VPAND   qloff(SI), Y15, Y9 \
	VPOR    Y9, Y12, Y12 \
	Q6K4_ROWS(xoff, soff) \
	VPSLLW  $2, Y13, Y12 \
	VPAND   Y14, Y12, Y12 \
	VPAND   qloff+32(SI), Y15, Y9 \
	VPOR    Y9, Y12, Y12 \
	Q6K4_ROWS(xoff+32, soff+4) \
	VPAND   Y14, Y13, Y12 \
	VMOVDQU qloff(SI), Y9 \
	VPSRLW  $4, Y9, Y9 \
	VPAND   Y15, Y9, Y9 \
	VPOR    Y9, Y12, Y12 \
	Q6K4_ROWS(xoff+64, soff+8) \
	VPSRLW  $2, Y13, Y12 \
	VPAND   Y14, Y12, Y12 \
	VMOVDQU qloff+32(SI), Y9 \
	VPSRLW  $4, Y9, Y9 \
	VPAND   Y15, Y9, Y9 \
	VPOR    Y9, Y12, Y12 \
	Q6K4_ROWS(xoff+96, soff+12)

// acc = -32 * Σ sc*bsums (Y8 = -sc as 16 x int16)
#define Q6K4_INIT(P, acc) \
	VPMADDWD 260(P), Y8, acc \
	VPSLLD   $5, acc, acc

// F += d*dx*float(acc) (Y8 = d broadcast)
#define Q6K4_FIN(P, acc, F) \
	VCVTDQ2PS acc, acc \
	VBROADCASTSS 0(P), Y9 \
	VMULPS  Y8, Y9, Y9 \
	VFMADD231PS Y9, acc, F

#define Q8A4_ROW(P, xoff, F) \
	VMOVDQU    xoff+4(P), Y3 \
	VPSIGNB    Y0, Y3, Y3 \
	VPMADDUBSW Y3, Y1, Y3 \
	VPMADDWD   Y15, Y3, Y3 \
	VCVTDQ2PS  Y3, Y3 \
	VBROADCASTSS xoff(P), Y4 \
	VMULPS     Y2, Y4, Y4 \
	VFMADD231PS Y4, Y3, F

#define Q8A4_ROWS(xoff) \
	VPSIGNB Y0, Y0, Y1 \
	Q8A4_ROW(DI, xoff, Y10) \
	Q8A4_ROW(R8, xoff, Y11) \
	Q8A4_ROW(R9, xoff, Y12) \
	Q8A4_ROW(R10, xoff, Y13)

#define F16_BCAST(woff, Y) \
	MOVWLZX woff(SI), AX \
	VMOVD    AX, X2 \
	VCVTPH2PS X2, X2 \
	VBROADCASTSS X2, Y

#define Q80_4BLOCK(woff, xoff) \
	F16_BCAST(woff, Y2) \
	VMOVDQU woff+2(SI), Y0 \
	Q8A4_ROWS(xoff)

#define Q40_4BLOCK(woff, xoff) \
	F16_BCAST(woff, Y2) \
	VMOVDQU woff+2(SI), X0 \
	VPSRLW  $4, X0, X1 \
	VINSERTI128 $1, X1, Y0, Y0 \
	VPAND   Y14, Y0, Y0 \
	VPSUBB  Y9, Y0, Y0 \
	Q8A4_ROWS(xoff)

#define X4_PROLOGUE \
	MOVQ w+0(FP), SI \
	MOVQ x0+8(FP), DI \
	MOVQ x1+16(FP), R8 \
	MOVQ x2+24(FP), R9 \
	MOVQ x3+32(FP), R10 \
	MOVQ nb+40(FP), CX \
	VXORPS Y10, Y10, Y10 \
	VXORPS Y11, Y11, Y11 \
	VXORPS Y12, Y12, Y12 \
	VXORPS Y13, Y13, Y13 \
	MOVL $0x00010001, AX \
	VMOVD AX, X15 \
	VPBROADCASTD X15, Y15

#define X4_ADVANCE(wb, xb) \
	ADDQ $wb, SI \
	ADDQ $xb, DI \
	ADDQ $xb, R8 \
	ADDQ $xb, R9 \
	ADDQ $xb, R10

// ---- Q4_K x 4 Q8_K rows.

// func dotQ4KAVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
// w: nb Q4_K blocks (144 bytes); xi: nb Q8_K blocks (292 bytes) each.
TEXT ·dotQ4KAVX2x4(SB), NOSPLIT, $16-56
	MOVQ w+0(FP), SI
	MOVQ x0+8(FP), DI
	MOVQ x1+16(FP), R8
	MOVQ x2+24(FP), R9
	MOVQ x3+32(FP), R10
	MOVQ nb+40(FP), CX
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15

q4k4loop:
	TESTQ CX, CX
	JZ    q4k4done

	// unpack the 6-bit scales (R12) and mins (DX)
	MOVL 4(SI), AX
	MOVL 8(SI), BX
	MOVL 12(SI), DX
	MOVL AX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	MOVL DX, R12
	ANDL $0x0f0f0f0f, R12
	ORL  R11, R12             // sc[4..7]
	MOVL BX, R11
	SHRL $6, R11
	ANDL $0x03030303, R11
	SHLL $4, R11
	SHRL $4, DX
	ANDL $0x0f0f0f0f, DX
	ORL  R11, DX              // m[4..7]
	ANDL $0x3f3f3f3f, AX      // sc[0..3]
	ANDL $0x3f3f3f3f, BX      // m[0..3]
	SHLQ $32, R12
	ORQ  AX, R12
	SHLQ $32, DX
	ORQ  BX, DX
	VMOVQ R12, X3
	VPMOVZXBW X3, X3
	VMOVDQU X3, 0(SP)         // 8 x int16 scales
	VMOVQ DX, X14
	VPUNPCKLBW X14, X14, X14
	VPMOVZXBW X14, Y14        // 16 x int16 mins, each twice

	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	Q4K4_CHUNK(16, 4, 0)
	Q4K4_CHUNK(48, 68, 4)
	Q4K4_CHUNK(80, 132, 8)
	Q4K4_CHUNK(112, 196, 12)

	// d and dmin
	MOVL 0(SI), AX
	VMOVD AX, X0
	VCVTPH2PS X0, X0
	VMOVSHDUP X0, X1
	VBROADCASTSS X0, Y0
	VBROADCASTSS X1, Y1
	Q4K4_FIN(DI, Y6, Y10)
	Q4K4_FIN(R8, Y7, Y11)
	Q4K4_FIN(R9, Y8, Y12)
	Q4K4_FIN(R10, Y9, Y13)

	ADDQ $144, SI
	ADDQ $292, DI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	DECQ CX
	JMP  q4k4loop

q4k4done:
	MOVQ res+48(FP), AX
	HSUM4_STORE
	VZEROUPPER
	RET

// ---- Q6_K x 4 Q8_K rows.
// Registers: Y15 = 0x0f, Y14 = 0x30, Y13 = qh of the current half, Y12 = the
// 6-bit quants of the current part, Y11 = its scales, Y0..Y3 = int
// accumulators, Y4..Y7 = float accumulators (moved to Y10..Y13 at the end).

// func dotQ6KAVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
// w: nb Q6_K blocks (210 bytes); xi: nb Q8_K blocks (292 bytes) each.
TEXT ·dotQ6KAVX2x4(SB), NOSPLIT, $32-56
	MOVQ w+0(FP), SI
	MOVQ x0+8(FP), DI
	MOVQ x1+16(FP), R8
	MOVQ x2+24(FP), R9
	MOVQ x3+32(FP), R10
	MOVQ nb+40(FP), CX
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x30303030, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14

q6k4loop:
	TESTQ CX, CX
	JZ    q6k4done

	VPMOVSXBW 192(SI), Y8     // 16 scales as int16
	VMOVDQU Y8, 0(SP)
	VPXOR   Y9, Y9, Y9
	VPSUBW  Y8, Y9, Y8        // -sc
	Q6K4_INIT(DI, Y0)
	Q6K4_INIT(R8, Y1)
	Q6K4_INIT(R9, Y2)
	Q6K4_INIT(R10, Y3)

	Q6K4_HALF(0, 128, 4, 0)
	Q6K4_HALF(64, 160, 132, 16)

	MOVWLZX 208(SI), AX
	VMOVD    AX, X8
	VCVTPH2PS X8, X8
	VBROADCASTSS X8, Y8
	Q6K4_FIN(DI, Y0, Y4)
	Q6K4_FIN(R8, Y1, Y5)
	Q6K4_FIN(R9, Y2, Y6)
	Q6K4_FIN(R10, Y3, Y7)

	ADDQ $210, SI
	ADDQ $292, DI
	ADDQ $292, R8
	ADDQ $292, R9
	ADDQ $292, R10
	DECQ CX
	JMP  q6k4loop

q6k4done:
	VMOVAPS Y4, Y10
	VMOVAPS Y5, Y11
	VMOVAPS Y6, Y12
	VMOVAPS Y7, Y13
	MOVQ res+48(FP), AX
	HSUM4_STORE
	VZEROUPPER
	RET

// ---- Q8_0 / Q4_0 x 4 internal Q8 rows (blocks of f32 d + 32 x int8).
// Per block: Y0 = the 32 signed weights, Y1 = |Y0|, Y2 = weight scale
// (broadcast); Y15 = 16 x int16 ones; Y10..Y13 = float accumulators.

// func dotQ8_0AVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
TEXT ·dotQ8_0AVX2x4(SB), NOSPLIT, $0-56
	X4_PROLOGUE

q804loop2:
	CMPQ CX, $2
	JLT  q804loop
	Q80_4BLOCK(0, 0)
	Q80_4BLOCK(34, 36)
	X4_ADVANCE(68, 72)
	SUBQ $2, CX
	JMP  q804loop2

q804loop:
	TESTQ CX, CX
	JZ    q804done
	Q80_4BLOCK(0, 0)
	X4_ADVANCE(34, 36)
	DECQ CX
	JMP  q804loop

q804done:
	MOVQ res+48(FP), AX
	HSUM4_STORE
	VZEROUPPER
	RET

// func dotQ4_0AVX2x4(w, x0, x1, x2, x3 *byte, nb int, res *[4]float32)
TEXT ·dotQ4_0AVX2x4(SB), NOSPLIT, $0-56
	X4_PROLOGUE
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x08080808, AX
	VMOVD AX, X9
	VPBROADCASTD X9, Y9

q404loop2:
	CMPQ CX, $2
	JLT  q404loop
	Q40_4BLOCK(0, 0)
	Q40_4BLOCK(18, 36)
	X4_ADVANCE(36, 72)
	SUBQ $2, CX
	JMP  q404loop2

q404loop:
	TESTQ CX, CX
	JZ    q404done
	Q40_4BLOCK(0, 0)
	X4_ADVANCE(18, 36)
	DECQ CX
	JMP  q404loop

q404done:
	MOVQ res+48(FP), AX
	HSUM4_STORE
	VZEROUPPER
	RET
