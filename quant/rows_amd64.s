//go:build amd64 && !purego

#include "textflag.h"

// AVX2 rows kernels: one activation row against n weight rows (rows rb
// bytes apart), the loop over rows in assembly: the AVX2 counterparts of
// dot512_amd64.s's dot*VNNIRows, with the same arguments, for CPUs without
// AVX-512 (decode's products at T = 1, and single rows elsewhere).
//
// Sub-block scales become scale words by VPSHUFB from one register that
// holds them in both 128-bit lanes (Q4_K: [sc0..3 m0..3 sc4..7 m4..7];
// Q6_K: one half's eight scale words), instead of a store to the stack and
// 2-byte broadcast loads back, as the one-row kernels they replace did.
//
// One row at a time, with software prefetches into L2 16 blocks ahead. On
// a 2-core Zen 3 VM (AVX2 only; its streaming bandwidth read 26-34 GB/s),
// both cores streaming from DRAM: random 0.5 MiB Q4_K expert matrices
// 24.9-26.2 GB/s together with PREFETCHT2 1152-4608 bytes ahead against
// 20.0-21.4 without and 19.0 for the old one-row kernel (PREFETCHT0 576
// bytes ahead, the scales through the stack); 2048x2048 Q6_K matrices in
// order 30.3-35.4 GB/s with prefetches 1680-3360 bytes ahead against 22.1-
// 26.2 without (the old kernel: 9.1-9.3 on random matrices). Two rows per
// pass (two interleaved streams) fell to 11.1-11.4 GB/s. In cache (one
// core, 2048x2048): Q4_K 17.6 GB/s against 10.3-14.3, Q6_K 22.7-24.6
// against 15.3-18.1. (The AVX-512 kernels of dot512_amd64.s measured
// faster without prefetches on a Zen 5.)

// ROWS_ARGS loads a rows kernel's arguments: R8 the first row (w), R9 rb,
// R10 n, R11 out.
#define ROWS_ARGS \
	MOVQ w+0(FP), R8 \
	MOVQ rb+8(FP), R9 \
	MOVQ n+16(FP), R10 \
	MOVQ out+40(FP), R11

// ROWS_START starts a row: SI its blocks, DI x's, CX nb, Y10 zero.
#define ROWS_START \
	MOVQ R8, SI \
	MOVQ x+24(FP), DI \
	MOVQ nb+32(FP), CX \
	VXORPS Y10, Y10, Y10

// ROWS_NEXT(y, x): out[i] = the sum of y's eight floats (x: its low half),
// stored at R11; then the next row: R11 on by 4, R8 (the row) on by rb
// (R9), R10 (rows left) one less, its flags for the loop's JNZ.
#define ROWS_NEXT(y, x) \
	VEXTRACTF128 $1, y, X1 \
	VADDPS       X1, x, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VMOVSS X0, 0(R11) \
	ADDQ $4, R11 \
	ADDQ R9, R8 \
	DECQ R10

// VPSHUFB controls from [sc0..3 m0..3 sc4..7 m4..7] to 16 words of sc[k],
// k = 0..7 (sc[k] is byte k for k < 4, byte k+4 for k >= 4).
DATA q4kAVX2Sc<>+0(SB)/8, $0x8000800080008000
DATA q4kAVX2Sc<>+8(SB)/8, $0x8000800080008000
DATA q4kAVX2Sc<>+16(SB)/8, $0x8000800080008000
DATA q4kAVX2Sc<>+24(SB)/8, $0x8000800080008000
DATA q4kAVX2Sc<>+32(SB)/8, $0x8001800180018001
DATA q4kAVX2Sc<>+40(SB)/8, $0x8001800180018001
DATA q4kAVX2Sc<>+48(SB)/8, $0x8001800180018001
DATA q4kAVX2Sc<>+56(SB)/8, $0x8001800180018001
DATA q4kAVX2Sc<>+64(SB)/8, $0x8002800280028002
DATA q4kAVX2Sc<>+72(SB)/8, $0x8002800280028002
DATA q4kAVX2Sc<>+80(SB)/8, $0x8002800280028002
DATA q4kAVX2Sc<>+88(SB)/8, $0x8002800280028002
DATA q4kAVX2Sc<>+96(SB)/8, $0x8003800380038003
DATA q4kAVX2Sc<>+104(SB)/8, $0x8003800380038003
DATA q4kAVX2Sc<>+112(SB)/8, $0x8003800380038003
DATA q4kAVX2Sc<>+120(SB)/8, $0x8003800380038003
DATA q4kAVX2Sc<>+128(SB)/8, $0x8008800880088008
DATA q4kAVX2Sc<>+136(SB)/8, $0x8008800880088008
DATA q4kAVX2Sc<>+144(SB)/8, $0x8008800880088008
DATA q4kAVX2Sc<>+152(SB)/8, $0x8008800880088008
DATA q4kAVX2Sc<>+160(SB)/8, $0x8009800980098009
DATA q4kAVX2Sc<>+168(SB)/8, $0x8009800980098009
DATA q4kAVX2Sc<>+176(SB)/8, $0x8009800980098009
DATA q4kAVX2Sc<>+184(SB)/8, $0x8009800980098009
DATA q4kAVX2Sc<>+192(SB)/8, $0x800a800a800a800a
DATA q4kAVX2Sc<>+200(SB)/8, $0x800a800a800a800a
DATA q4kAVX2Sc<>+208(SB)/8, $0x800a800a800a800a
DATA q4kAVX2Sc<>+216(SB)/8, $0x800a800a800a800a
DATA q4kAVX2Sc<>+224(SB)/8, $0x800b800b800b800b
DATA q4kAVX2Sc<>+232(SB)/8, $0x800b800b800b800b
DATA q4kAVX2Sc<>+240(SB)/8, $0x800b800b800b800b
DATA q4kAVX2Sc<>+248(SB)/8, $0x800b800b800b800b
GLOBL q4kAVX2Sc<>(SB), RODATA|NOPTR, $256

// VPSHUFB control to the minimum words m0 m0 m1 m1 ... m7 m7 (one per
// 16-element bsum of Q8_K).
DATA q4kAVX2Min<>+0(SB)/8, $0x8005800580048004
DATA q4kAVX2Min<>+8(SB)/8, $0x8007800780068006
DATA q4kAVX2Min<>+16(SB)/8, $0x800d800d800c800c
DATA q4kAVX2Min<>+24(SB)/8, $0x800f800f800e800e
GLOBL q4kAVX2Min<>(SB), RODATA|NOPTR, $32

// One 64-element chunk j of a Q4_K block: 32 bytes of nibbles at off(SI),
// x quants at xoff(DI), xoff+32(DI); scale words of sub-blocks 2j, 2j+1 from
// Y3 with the controls at soff, soff+32 of q4kAVX2Sc; into acc.
#define Q4KR_CHUNK(off, xoff, soff, acc) \
	VMOVDQU off(SI), Y0 \
	VPSRLW  $4, Y0, Y1 \
	VPAND   Y15, Y0, Y0 \
	VPAND   Y15, Y1, Y1 \
	VPMADDUBSW xoff(DI), Y0, Y0 \
	VPMADDUBSW xoff+32(DI), Y1, Y1 \
	VPSHUFB q4kAVX2Sc<>+soff(SB), Y3, Y4 \
	VPSHUFB q4kAVX2Sc<>+soff+32(SB), Y3, Y5 \
	VPMADDWD Y4, Y0, Y0 \
	VPMADDWD Y5, Y1, Y1 \
	VPADDD  Y0, Y1, Y1 \
	VPADDD  Y1, acc, acc

// func dotQ4KAVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)
// out[i] = row i of w (rows rb bytes apart, nb Q4_K blocks each) · x (nb
// Q8_K blocks), for i < n (n, nb >= 1). Y10 = Σ d·dx·(Σ sc·q·x), Y11 = Σ
// dmin·dx·(Σ m·bsums).
TEXT ·dotQ4KAVX2Rows(SB), NOSPLIT, $0-48
	ROWS_ARGS
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	VMOVDQU q4kAVX2Min<>(SB), Y14
	MOVQ $0x3f3f3f3f3f3f3f3f, R12
	MOVQ $0x3030303030303030, R13
	MOVQ $0x0f0f0f0f00000000, R14

q4krrow:
	ROWS_START
	VXORPS Y11, Y11, Y11

q4krloop:
	PREFETCHT2 2304(SI) // 16 blocks ahead, three lines a block
	PREFETCHT2 2368(SI)
	PREFETCHT2 2432(SI)
	// scales and minimums: DX = sc0..3 m0..3, BX = sc4..7 m4..7
	MOVQ  4(SI), DX
	MOVQ  DX, BX
	SHRQ  $2, BX
	ANDQ  R12, DX
	ANDQ  R13, BX
	MOVL  12(SI), AX
	ANDL  $0x0f0f0f0f, AX
	ORQ   AX, BX
	MOVQ  8(SI), AX
	SHRQ  $4, AX
	ANDQ  R14, AX
	ORQ   AX, BX
	VMOVQ DX, X3
	VPINSRQ $1, BX, X3, X3
	VINSERTI128 $1, X3, Y3, Y3

	// d·dx, dmin·dx
	VCVTPH2PS 0(SI), X2
	VBROADCASTSS 0(DI), X6
	VMULPS X6, X2, X2
	VBROADCASTSS X2, Y12
	VMOVSHDUP X2, X2
	VBROADCASTSS X2, Y13

	// minimums against the bsums
	VPSHUFB Y14, Y3, Y4
	VPMADDWD 260(DI), Y4, Y4
	VCVTDQ2PS Y4, Y4
	VFMADD231PS Y13, Y4, Y11

	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	Q4KR_CHUNK(16, 4, 0, Y8)
	Q4KR_CHUNK(48, 68, 64, Y9)
	Q4KR_CHUNK(80, 132, 128, Y8)
	Q4KR_CHUNK(112, 196, 192, Y9)
	VPADDD Y8, Y9, Y9
	VCVTDQ2PS Y9, Y9
	VFMADD231PS Y12, Y9, Y10

	ADDQ $144, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q4krloop

	VSUBPS Y11, Y10, Y0
	ROWS_NEXT(Y0, X0)
	JNZ  q4krrow
	VZEROUPPER
	RET


// Q6_K: VPSHUFB controls from 8 scale words (one half's, in both lanes) to
// the scale words of part p = 0..3 of the half: sc[2p] in the low lane (its
// first 16 elements), sc[2p+1] in the high lane.
DATA q6kAVX2Sc<>+0(SB)/8, $0x0100010001000100
DATA q6kAVX2Sc<>+8(SB)/8, $0x0100010001000100
DATA q6kAVX2Sc<>+16(SB)/8, $0x0302030203020302
DATA q6kAVX2Sc<>+24(SB)/8, $0x0302030203020302
DATA q6kAVX2Sc<>+32(SB)/8, $0x0504050405040504
DATA q6kAVX2Sc<>+40(SB)/8, $0x0504050405040504
DATA q6kAVX2Sc<>+48(SB)/8, $0x0706070607060706
DATA q6kAVX2Sc<>+56(SB)/8, $0x0706070607060706
DATA q6kAVX2Sc<>+64(SB)/8, $0x0908090809080908
DATA q6kAVX2Sc<>+72(SB)/8, $0x0908090809080908
DATA q6kAVX2Sc<>+80(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA q6kAVX2Sc<>+88(SB)/8, $0x0b0a0b0a0b0a0b0a
DATA q6kAVX2Sc<>+96(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA q6kAVX2Sc<>+104(SB)/8, $0x0d0c0d0c0d0c0d0c
DATA q6kAVX2Sc<>+112(SB)/8, $0x0f0e0f0e0f0e0f0e
DATA q6kAVX2Sc<>+120(SB)/8, $0x0f0e0f0e0f0e0f0e
GLOBL q6kAVX2Sc<>(SB), RODATA|NOPTR, $128

// q (unsigned 6-bit quants of 32 elements) times the x quants at xoff(DI),
// scaled by the words VPSHUFB picks from scv with the control at coff.
#define Q6KR_PART(q, xoff, coff, scv) \
	VPMADDUBSW xoff(DI), q, q \
	VPSHUFB q6kAVX2Sc<>+coff(SB), scv, Y6 \
	VPMADDWD Y6, q, q \
	VPADDD   q, Y9, Y9

// One 128-element half of a Q6_K block (scale words of the half in scv).
#define Q6KR_HALF(qloff, qhoff, xoff, scv) \
	VMOVDQU qloff(SI), Y0 \
	VMOVDQU qloff+32(SI), Y1 \
	VMOVDQU qhoff(SI), Y2 \
	VPSLLW  $4, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPAND   Y15, Y0, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6KR_PART(Y5, xoff, 0, scv) \
	VPSLLW  $2, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPAND   Y15, Y1, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6KR_PART(Y5, xoff+32, 32, scv) \
	VPAND   Y14, Y2, Y3 \
	VPSRLW  $4, Y0, Y5 \
	VPAND   Y15, Y5, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6KR_PART(Y5, xoff+64, 64, scv) \
	VPSRLW  $2, Y2, Y3 \
	VPAND   Y14, Y3, Y3 \
	VPSRLW  $4, Y1, Y5 \
	VPAND   Y15, Y5, Y5 \
	VPOR    Y3, Y5, Y5 \
	Q6KR_PART(Y5, xoff+96, 96, scv)

// func dotQ6KAVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)
// As dotQ4KAVX2Rows for Q6_K rows (210-byte blocks).
TEXT ·dotQ6KAVX2Rows(SB), NOSPLIT, $0-48
	ROWS_ARGS
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x30303030, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14

q6krrow:
	ROWS_START

q6krloop:
	PREFETCHT2 3360(SI) // 16 blocks ahead, four lines a block
	PREFETCHT2 3424(SI)
	PREFETCHT2 3488(SI)
	PREFETCHT2 3552(SI)
	VPMOVSXBW 192(SI), Y4     // 16 scales as int16
	VPMADDWD 260(DI), Y4, Y9  // sc * bsums
	VPSLLD $5, Y9, Y9         // * 32
	VPXOR  Y8, Y8, Y8
	VPSUBD Y9, Y8, Y9         // Y9 = -32 * Σ sc*bsum
	VPERMQ $0x44, Y4, Y11     // sc0..7 in both lanes
	VPERMQ $0xee, Y4, Y13     // sc8..15 in both lanes
	VPBROADCASTW 208(SI), X0
	VCVTPH2PS X0, X0
	VMULSS  0(DI), X0, X0
	VBROADCASTSS X0, Y12

	Q6KR_HALF(0, 128, 4, Y11)
	Q6KR_HALF(64, 160, 132, Y13)

	VCVTDQ2PS Y9, Y9
	VFMADD231PS Y12, Y9, Y10
	ADDQ $210, SI
	ADDQ $292, DI
	DECQ CX
	JNZ  q6krloop

	ROWS_NEXT(Y10, X10)
	JNZ  q6krrow
	VZEROUPPER
	RET

// Q8R_SCALE(woff, xoff): Y0 = the product of the float16 scale of the
// weight block at woff(SI) and the float scale of the Q8 activation block
// at xoff(DI), broadcast.
#define Q8R_SCALE(woff, xoff) \
	VPBROADCASTW woff(SI), X0 \
	VCVTPH2PS X0, X0 \
	VMULSS  xoff(DI), X0, X0 \
	VBROADCASTSS X0, Y0

// Q8R_DOT(xoff, acc): acc += Y0 × the 32 signed weight bytes Y1 times the
// Q8 activation block's bytes at xoff+4(DI) (the sign trick: |w| times x
// with w's signs; Y13 = 1 words).
#define Q8R_DOT(xoff, acc) \
	VMOVDQU xoff+4(DI), Y2 \
	VPSIGNB Y1, Y1, Y3 \
	VPSIGNB Y1, Y2, Y2 \
	VPMADDUBSW Y2, Y3, Y3 \
	VPMADDWD Y13, Y3, Y3 \
	VCVTDQ2PS Y3, Y3 \
	VFMADD231PS Y0, Y3, acc

// One Q8_0 block at woff(SI) times the Q8 activation block at xoff(DI),
// accumulated into acc.
#define Q80R_BLOCK(woff, xoff, acc) \
	Q8R_SCALE(woff, xoff) \
	VMOVDQU woff+2(SI), Y1 \
	Q8R_DOT(xoff, acc)

// func dotQ8_0AVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)
// As dotQ4KAVX2Rows for Q8_0 rows (34-byte blocks) against Q8 activation
// blocks (36 bytes), two blocks a step.
TEXT ·dotQ8_0AVX2Rows(SB), NOSPLIT, $0-48
	ROWS_ARGS
	MOVL $0x00010001, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13

q80rrow:
	ROWS_START
	VXORPS Y11, Y11, Y11

q80rloop2:
	CMPQ CX, $2
	JLT  q80rloop
	PREFETCHT2 2304(SI) // as far ahead as the K-quant kernels, in bytes
	PREFETCHT2 2368(SI)
	Q80R_BLOCK(0, 0, Y10)
	Q80R_BLOCK(34, 36, Y11)
	ADDQ $68, SI
	ADDQ $72, DI
	SUBQ $2, CX
	JMP  q80rloop2

q80rloop:
	TESTQ CX, CX
	JZ    q80rdone
	Q80R_BLOCK(0, 0, Y10)

q80rdone:
	VADDPS Y11, Y10, Y0
	ROWS_NEXT(Y0, X0)
	JNZ  q80rrow
	VZEROUPPER
	RET

// One Q4_0 block at woff(SI) times the Q8 activation block at xoff(DI)
// (nibbles minus 8, then as Q80R_BLOCK; Y15 = 0x0f, Y14 = 8), into acc.
#define Q40R_BLOCK(woff, xoff, acc) \
	Q8R_SCALE(woff, xoff) \
	VMOVDQU woff+2(SI), X1 \
	VPSRLW  $4, X1, X2 \
	VINSERTI128 $1, X2, Y1, Y1 \
	VPAND   Y15, Y1, Y1 \
	VPSUBB  Y14, Y1, Y1 \
	Q8R_DOT(xoff, acc)

// func dotQ4_0AVX2Rows(w *byte, rb, n int, x *byte, nb int, out *float32)
// As dotQ8_0AVX2Rows for Q4_0 rows (18-byte blocks).
TEXT ·dotQ4_0AVX2Rows(SB), NOSPLIT, $0-48
	ROWS_ARGS
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15
	MOVL $0x08080808, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x00010001, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13

q40rrow:
	ROWS_START
	VXORPS Y11, Y11, Y11

q40rloop2:
	CMPQ CX, $2
	JLT  q40rloop
	PREFETCHT2 2304(SI)
	Q40R_BLOCK(0, 0, Y10)
	Q40R_BLOCK(18, 36, Y11)
	ADDQ $36, SI
	ADDQ $72, DI
	SUBQ $2, CX
	JMP  q40rloop2

q40rloop:
	TESTQ CX, CX
	JZ    q40rdone
	Q40R_BLOCK(0, 0, Y10)

q40rdone:
	VADDPS Y11, Y10, Y0
	ROWS_NEXT(Y0, X0)
	JNZ  q40rrow
	VZEROUPPER
	RET
