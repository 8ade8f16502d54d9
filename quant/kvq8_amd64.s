//go:build amd64 && !purego

#include "textflag.h"

// One pass of accumQ8_0x4AVX2 over all n value rows for 16 columns: the 8
// int8 at off(SI) and off+8(SI) of each row (SI: the row's block, whose
// float16 scale is at 0(SI)), times the row's weights p[r][j], added to
// Y0..Y7 (two registers per output row). BX is the byte offset of j in the
// weight rows R8..R11.
#define ACCUM_PASS(off, lbl) \
	MOVQ DI, SI \
	XORQ BX, BX \
	MOVQ n+32(FP), CX \
lbl: \
	VPMOVSXBD off(SI), Y8 \
	VPMOVSXBD off+8(SI), Y9 \
	VPBROADCASTW (SI), X10 \
	VCVTPH2PS X10, Y10 \
	VCVTDQ2PS Y8, Y8 \
	VCVTDQ2PS Y9, Y9 \
	VMULPS Y10, Y8, Y8 \
	VMULPS Y10, Y9, Y9 \
	VBROADCASTSS (R8)(BX*1), Y11 \
	VFMADD231PS Y11, Y8, Y0 \
	VFMADD231PS Y11, Y9, Y1 \
	VBROADCASTSS (R9)(BX*1), Y12 \
	VFMADD231PS Y12, Y8, Y2 \
	VFMADD231PS Y12, Y9, Y3 \
	VBROADCASTSS (R10)(BX*1), Y13 \
	VFMADD231PS Y13, Y8, Y4 \
	VFMADD231PS Y13, Y9, Y5 \
	VBROADCASTSS (R11)(BX*1), Y14 \
	VFMADD231PS Y14, Y8, Y6 \
	VFMADD231PS Y14, Y9, Y7 \
	ADDQ DX, SI \
	ADDQ $4, BX \
	DECQ CX \
	JNZ lbl

// Load (LOADACC) or store (STOREACC) the 16 output columns at byte offset
// R12 of the four output rows into/from Y0..Y7.
#define LOADACC \
	MOVQ o+0(FP), AX \
	MOVQ 0(AX), R13 \
	VMOVUPS (R13)(R12*1), Y0 \
	VMOVUPS 32(R13)(R12*1), Y1 \
	MOVQ 8(AX), R13 \
	VMOVUPS (R13)(R12*1), Y2 \
	VMOVUPS 32(R13)(R12*1), Y3 \
	MOVQ 16(AX), R13 \
	VMOVUPS (R13)(R12*1), Y4 \
	VMOVUPS 32(R13)(R12*1), Y5 \
	MOVQ 24(AX), R13 \
	VMOVUPS (R13)(R12*1), Y6 \
	VMOVUPS 32(R13)(R12*1), Y7

#define STOREACC \
	MOVQ o+0(FP), AX \
	MOVQ 0(AX), R13 \
	VMOVUPS Y0, (R13)(R12*1) \
	VMOVUPS Y1, 32(R13)(R12*1) \
	MOVQ 8(AX), R13 \
	VMOVUPS Y2, (R13)(R12*1) \
	VMOVUPS Y3, 32(R13)(R12*1) \
	MOVQ 16(AX), R13 \
	VMOVUPS Y4, (R13)(R12*1) \
	VMOVUPS Y5, 32(R13)(R12*1) \
	MOVQ 24(AX), R13 \
	VMOVUPS Y6, (R13)(R12*1) \
	VMOVUPS Y7, 32(R13)(R12*1)

// func accumQ8_0x4AVX2(o, p *[4]*float32, v *byte, ldv, n, nb int)
// For r < 4, c < 32·nb: o[r][c] += Σ_{j<n} p[r][j] · d_j,b · q_j[c], with
// row j of v at v + j·ldv in Q8_0 blocks (f16 d | 32 x int8). n > 0.
// Output columns are done 16 at a time (8 accumulators for the 4 rows),
// each pass running over all n rows, so every converted value is used by
// all four output rows.
TEXT ·accumQ8_0x4AVX2(SB), NOSPLIT, $0-48
	MOVQ p+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	MOVQ v+16(FP), DI
	MOVQ ldv+24(FP), DX
	XORQ R12, R12

accblock:
	LOADACC
	ACCUM_PASS(2, acclo)
	STOREACC
	ADDQ $64, R12
	LOADACC
	ACCUM_PASS(18, acchi)
	STOREACC
	ADDQ $64, R12
	ADDQ $34, DI
	DECQ nb+40(FP)
	JNZ accblock
	VZEROUPPER
	RET

// One query row's integer part of a block in dotQ8_0x4nAVX2: the 32 int8
// at xoff+4(P)(AX) times the key block (Y0, |Y0| in Y1), as 8 int32 partial sums
// in dst.
#define QROW(P, xoff, dst) \
	VMOVDQU xoff+4(P)(AX*1), dst \
	VPSIGNB Y0, dst, dst \
	VPMADDUBSW dst, Y1, dst \
	VPMADDWD Y15, dst, dst

// One block of dotQ8_0x4nAVX2 at key offset koff(BX), query offset
// xoff(P)(AX), scales at soff(CX), accumulated into acc.
#define QBLOCK(koff, xoff, soff, acc) \
	VPBROADCASTW koff(BX), X2 \
	VCVTPH2PS X2, Y2 \
	VMULPS soff(CX), Y2, Y2 \
	VMOVDQU koff+2(BX), Y0 \
	VPSIGNB Y0, Y0, Y1 \
	QROW(DI, xoff, Y6) \
	QROW(R8, xoff, Y7) \
	QROW(R9, xoff, Y8) \
	QROW(R10, xoff, Y9) \
	VPHADDD Y7, Y6, Y6 \
	VPHADDD Y9, Y8, Y8 \
	VPHADDD Y8, Y6, Y6 \
	VCVTDQ2PS Y6, Y6 \
	VFMADD231PS Y2, Y6, acc

// func dotQ8_0x4nAVX2(out *float32, ldo, mr int, x *[4]*byte, sq *float32, w *byte, ldw, n, nb int, pf *byte)
// Scores of four query rows x[0..3] (nb blocks of the Q8 activation format:
// f32 d | 32 x int8) against n key rows of nb Q8_0 blocks (w, w+ldw, ...):
// out[r*ldo + j] = x_r · w_j for r < mr (ldo in floats). sq holds, per
// block b, the four query scales twice (8 floats: d_0b d_1b d_2b d_3b d_0b
// ... d_3b).
//
// Per block the four queries' integer sums are reduced together (three
// VPHADDD give the four totals in each 128-bit lane), converted once and
// scaled by the key's scale times the four query scales with one FMA, so
// the float work per block is shared by the four rows; two accumulators
// take alternate blocks. Before key j the kernel prefetches key j+16 into
// L1 and row j of pf (same stride, e.g. the values of the same keys) into
// L2. n, nb > 0, 1 ≤ mr ≤ 4.
TEXT ·dotQ8_0x4nAVX2(SB), NOSPLIT, $0-80
	MOVQ x+24(FP), AX
	MOVQ 0(AX), DI
	MOVQ 8(AX), R8
	MOVQ 16(AX), R9
	MOVQ 24(AX), R10
	MOVQ w+40(FP), SI
	MOVQ ldw+48(FP), DX
	MOVQ out+0(FP), R12
	MOVQ ldo+8(FP), R13
	SHLQ $2, R13
	MOVL $0x00010001, AX
	VMOVD AX, X15
	VPBROADCASTD X15, Y15

dotnkey:
	MOVQ DX, BX
	SHLQ $4, BX
	ADDQ SI, BX
	PREFETCHT0 (BX)
	PREFETCHT0 64(BX)
	PREFETCHT0 128(BX)
	MOVQ pf+72(FP), BX
	PREFETCHT1 (BX)
	PREFETCHT1 64(BX)
	PREFETCHT1 128(BX)
	ADDQ DX, BX
	MOVQ BX, pf+72(FP)
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	MOVQ SI, BX
	XORQ AX, AX
	MOVQ sq+32(FP), CX
	MOVQ nb+64(FP), R11

dotnpair:
	CMPQ R11, $2
	JLT dotnone
	QBLOCK(0, 0, 0, Y10)
	QBLOCK(34, 36, 32, Y11)
	ADDQ $68, BX
	ADDQ $72, AX
	ADDQ $64, CX
	SUBQ $2, R11
	JMP dotnpair

dotnone:
	TESTQ R11, R11
	JEQ dotnsum
	QBLOCK(0, 0, 0, Y10)

dotnsum:
	VADDPS Y11, Y10, Y10
	VEXTRACTF128 $1, Y10, X1
	VADDPS X1, X10, X0
	MOVQ R12, BX
	VMOVSS X0, (BX)
	CMPQ mr+16(FP), $1
	JEQ dotnnext
	ADDQ R13, BX
	VEXTRACTPS $1, X0, (BX)
	CMPQ mr+16(FP), $2
	JEQ dotnnext
	ADDQ R13, BX
	VEXTRACTPS $2, X0, (BX)
	CMPQ mr+16(FP), $3
	JEQ dotnnext
	ADDQ R13, BX
	VEXTRACTPS $3, X0, (BX)

dotnnext:
	ADDQ $4, R12
	ADDQ DX, SI
	DECQ n+56(FP)
	JNZ dotnkey
	VZEROUPPER
	RET
