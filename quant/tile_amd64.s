//go:build amd64 && !purego

#include "textflag.h"

// Tile kernels for Q4_K / Q6_K weights and Q8_K activations (see tile.go).
//
// q4kTile2x4AVX2: two weight rows (SI, R13) against four activation rows
// (DI, R8, R9, R10) with their tileAux entries (R14). Per block, Y0..Y3
// accumulate weight row 0 times activation rows 0..3 and Y4..Y7 weight row 1
// (int32, 32 quants per register as in the Q4_K layout). At the end of the
// block they are reduced to one vector with lane 4*i+r = w_i·x_r, converted,
// multiplied by the lane's d(w_i)·d(x_r) and added to Y15, the float
// accumulator of the eight results.
//
// q4kTile2x8AVX2, q6kTile2x8AVX2: pairs of weight rows against eight
// activation rows. A register holds 16 quants of weight row 0 in its low
// half and the same 16 quants of row 1 in its high half; each activation
// load broadcasts 16 quants to both halves, so one accumulator per
// activation row serves both weight rows, one VPSHUFB builds the scales of
// both rows, and the reduction stays within the 128-bit halves: lane 4*i+r
// of the low (high) result vector is w_i·x_r for activation rows 0..3
// (4..7). The loop over the pairs is in the kernel, which stores the results
// into the output matrix.
//
// Speed (AMD Zen 5, measured with BenchmarkTileKernel and with standalone
// instruction-mix loops not kept in the repository): VPMADDUBSW, VPMADDWD (two
// per 32 products) and the float multiplies share two ports, vector loads
// issue two per cycle, adds, logic and in-lane shuffles use all four vector
// ports. The block loop of the 2x8 kernels runs at the multiply-port bound
// (64 cycles per 2048 products); the per-block work (scales, minimums,
// reduction) costs 10-15 % on top. Cross-lane shuffles, VINSERTI128 and
// VPHADDD compete with the multiplies and are kept out of the loops where
// possible.

// VPSHUFB masks: word s of each 128-bit lane, repeated (s = 0..7).
#define WORDMASK(s) \
	DATA tileWord<>+(32*s+0)(SB)/8, $(0x0100010001000100 + 0x0202020202020202*s) \
	DATA tileWord<>+(32*s+8)(SB)/8, $(0x0100010001000100 + 0x0202020202020202*s) \
	DATA tileWord<>+(32*s+16)(SB)/8, $(0x0100010001000100 + 0x0202020202020202*s) \
	DATA tileWord<>+(32*s+24)(SB)/8, $(0x0100010001000100 + 0x0202020202020202*s)
WORDMASK(0)
WORDMASK(1)
WORDMASK(2)
WORDMASK(3)
WORDMASK(4)
WORDMASK(5)
WORDMASK(6)
WORDMASK(7)
GLOBL tileWord<>(SB), RODATA|NOPTR, $256

// Pair loop of q4kTile2x4AVX2 (like the eight-row one, with nr <= 4 output
// rows): arguments at base(SP): +0 first weight row of the pair, +8 rb,
// +16 pairs left, +24..+48 x0..x3, +56 aux, +64 out (advancing), +72 ldo in
// bytes, +80 nr, +88 nb.

#define T4_ARGS(base) \
	MOVQ w+0(FP), AX \
	MOVQ AX, base+0(SP) \
	MOVQ rb+8(FP), AX \
	MOVQ AX, base+8(SP) \
	MOVQ np+16(FP), AX \
	MOVQ AX, base+16(SP) \
	MOVQ x0+24(FP), AX \
	MOVQ AX, base+24(SP) \
	MOVQ x1+32(FP), AX \
	MOVQ AX, base+32(SP) \
	MOVQ x2+40(FP), AX \
	MOVQ AX, base+40(SP) \
	MOVQ x3+48(FP), AX \
	MOVQ AX, base+48(SP) \
	MOVQ aux+56(FP), AX \
	MOVQ AX, base+56(SP) \
	MOVQ out+72(FP), AX \
	MOVQ AX, base+64(SP) \
	MOVQ ldo+80(FP), AX \
	SHLQ $2, AX \
	MOVQ AX, base+72(SP) \
	MOVQ nr+88(FP), AX \
	MOVQ AX, base+80(SP) \
	MOVQ nb+64(FP), AX \
	MOVQ AX, base+88(SP)

#define T4_PAIR_START(base) \
	MOVQ   base+0(SP), SI \
	MOVQ   base+8(SP), AX \
	LEAQ   (SI)(AX*1), R13 \
	MOVQ   base+24(SP), DI \
	MOVQ   base+32(SP), R8 \
	MOVQ   base+40(SP), R9 \
	MOVQ   base+48(SP), R10 \
	MOVQ   base+56(SP), R14 \
	MOVQ   base+88(SP), CX \
	VXORPS Y15, Y15, Y15

// Store rows 0..nr-1 of Y15 (lane 4*i+r) as out[r*ldo+i], advance to the
// next pair and loop to label while pairs are left.
#define T4_PAIR_END(base, label, skip) \
	MOVQ         base+64(SP), AX \
	MOVQ         base+72(SP), BX \
	MOVQ         base+80(SP), DX \
	VEXTRACTF128 $1, Y15, X1 \
	VUNPCKLPS    X1, X15, X2 \
	VUNPCKHPS    X1, X15, X3 \
	VMOVLPS      X2, (AX) \
	VMOVHPS      X2, (AX)(BX*1) \
	CMPQ         DX, $3 \
	JLT          skip \
	LEAQ         (AX)(BX*2), R11 \
	VMOVLPS      X3, (R11) \
	CMPQ         DX, $4 \
	JLT          skip \
	VMOVHPS      X3, (R11)(BX*1) \
skip: \
	ADDQ         $8, AX \
	MOVQ         AX, base+64(SP) \
	MOVQ         base+8(SP), AX \
	SHLQ         $1, AX \
	ADDQ         AX, base+0(SP) \
	DECQ         base+16(SP) \
	JNZ          label

// Pair loop of the eight-row kernels: the kernel runs over np pairs of
// weight rows (rb bytes apart, pairs 2*rb apart) and stores the two results
// of activation row r for pair p at out[r*ldo+2p], out[r*ldo+2p+1]. The
// arguments are kept at base(SP): +0 first weight row of the pair, +8 rb,
// +16 pairs left, +24 x0, +32 aux, +40 out (advancing), +48 ldo in bytes,
// +56 nb.

#define T8_ARGS(base) \
	MOVQ w+0(FP), AX \
	MOVQ AX, base+0(SP) \
	MOVQ rb+8(FP), AX \
	MOVQ AX, base+8(SP) \
	MOVQ np+16(FP), AX \
	MOVQ AX, base+16(SP) \
	MOVQ x0+24(FP), AX \
	MOVQ AX, base+24(SP) \
	MOVQ aux+40(FP), AX \
	MOVQ AX, base+32(SP) \
	MOVQ out+64(FP), AX \
	MOVQ AX, base+40(SP) \
	MOVQ ldo+72(FP), AX \
	SHLQ $2, AX \
	MOVQ AX, base+48(SP) \
	MOVQ nb+56(FP), AX \
	MOVQ AX, base+56(SP) \
	MOVQ auxhi+48(FP), AX \
	MOVQ AX, 0(SP) \
	MOVQ xs+32(FP), R9 \
	LEAQ (R9)(R9*2), R10

// Set up the pointers of the current pair and clear its float accumulators
// at F(SP) and F+32(SP).
#define T8_PAIR_START(base, F) \
	MOVQ   base+0(SP), SI \
	MOVQ   base+8(SP), AX \
	LEAQ   (SI)(AX*1), R13 \
	MOVQ   base+24(SP), DI \
	LEAQ   (DI)(R9*1), R8 \
	MOVQ   base+32(SP), R14 \
	MOVQ   base+56(SP), CX \
	VXORPS Y0, Y0, Y0 \
	VMOVUPS Y0, F(SP) \
	VMOVUPS Y0, F+32(SP)

// Store the 16 results of the pair (F(SP): rows 0..3, F+32(SP): rows 4..7,
// lane 4*i+r) as out[r*ldo+i], advance to the next pair and loop to label
// while pairs are left.
#define T8_PAIR_END(base, F, label) \
	MOVQ         base+40(SP), AX \
	MOVQ         base+48(SP), BX \
	VMOVUPS      F(SP), Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VUNPCKLPS    X1, X0, X2 \
	VUNPCKHPS    X1, X0, X3 \
	VMOVLPS      X2, (AX) \
	VMOVHPS      X2, (AX)(BX*1) \
	LEAQ         (AX)(BX*2), DX \
	VMOVLPS      X3, (DX) \
	VMOVHPS      X3, (DX)(BX*1) \
	VMOVUPS      F+32(SP), Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VUNPCKLPS    X1, X0, X2 \
	VUNPCKHPS    X1, X0, X3 \
	LEAQ         (AX)(BX*4), DX \
	VMOVLPS      X2, (DX) \
	VMOVHPS      X2, (DX)(BX*1) \
	LEAQ         (DX)(BX*2), DX \
	VMOVLPS      X3, (DX) \
	VMOVHPS      X3, (DX)(BX*1) \
	ADDQ         $8, AX \
	MOVQ         AX, base+40(SP) \
	MOVQ         base+8(SP), AX \
	SHLQ         $1, AX \
	ADDQ         AX, base+0(SP) \
	DECQ         base+16(SP) \
	JNZ          label

// Reduce Y0..Y7 (8 x int32 each) to Y0 = [ΣY0, ΣY1, ..., ΣY7]. Uses Y9, Y10.
#define TILE_REDUCE \
	VPUNPCKLDQ  Y1, Y0, Y9 \
	VPUNPCKHDQ  Y1, Y0, Y10 \
	VPADDD      Y10, Y9, Y0 \
	VPUNPCKLDQ  Y3, Y2, Y9 \
	VPUNPCKHDQ  Y3, Y2, Y10 \
	VPADDD      Y10, Y9, Y2 \
	VPUNPCKLDQ  Y5, Y4, Y9 \
	VPUNPCKHDQ  Y5, Y4, Y10 \
	VPADDD      Y10, Y9, Y4 \
	VPUNPCKLDQ  Y7, Y6, Y9 \
	VPUNPCKHDQ  Y7, Y6, Y10 \
	VPADDD      Y10, Y9, Y6 \
	VPUNPCKLQDQ Y2, Y0, Y9 \
	VPUNPCKHQDQ Y2, Y0, Y10 \
	VPADDD      Y10, Y9, Y0 \
	VPUNPCKLQDQ Y6, Y4, Y9 \
	VPUNPCKHQDQ Y6, Y4, Y10 \
	VPADDD      Y10, Y9, Y4 \
	VPERM2I128  $0x20, Y4, Y0, Y9 \
	VPERM2I128  $0x31, Y4, Y0, Y10 \
	VPADDD      Y10, Y9, Y0

// d and dmin of both weight rows: D = [d0 x4 | d1 x4], M = [dmin0 x4 | dmin1 x4].
#define TILE_D(XT, YT, D, M) \
	VMOVD          0(SI), XT \
	VPINSRD        $2, 0(R13), XT, XT \
	VCVTPH2PS      XT, YT \
	VPERMILPS      $0x00, YT, D \
	VPERMILPS      $0x55, YT, M

#define TILE_ZERO \
	VPXOR Y0, Y0, Y0 \
	VPXOR Y1, Y1, Y1 \
	VPXOR Y2, Y2, Y2 \
	VPXOR Y3, Y3, Y3 \
	VPXOR Y4, Y4, Y4 \
	VPXOR Y5, Y5, Y5 \
	VPXOR Y6, Y6, Y6 \
	VPXOR Y7, Y7, Y7

#define TILE_ADVANCE(wb) \
	ADDQ $wb, SI \
	ADDQ $wb, R13 \
	ADDQ $292, DI \
	ADDQ $292, R8 \
	ADDQ $292, R9 \
	ADDQ $292, R10 \
	ADDQ $208, R14

// One activation row against both weight rows: Y9 / Y10 hold 32 quants of
// weight rows 0 / 1, Y11 / Y12 their scales (16 x int16).
#define TILE_ROW(P, xoff, a0, a1) \
	VMOVDQU    xoff(P), Y13 \
	VPMADDUBSW Y13, Y9, Y14 \
	VPMADDWD   Y11, Y14, Y14 \
	VPADDD     Y14, a0, a0 \
	VPMADDUBSW Y13, Y10, Y14 \
	VPMADDWD   Y12, Y14, Y14 \
	VPADDD     Y14, a1, a1

#define TILE_ROWS(xoff) \
	TILE_ROW(DI, xoff, Y0, Y4) \
	TILE_ROW(R8, xoff, Y1, Y5) \
	TILE_ROW(R9, xoff, Y2, Y6) \
	TILE_ROW(R10, xoff, Y3, Y7)

// ---- Q4_K, two weight rows x four activation rows.

// Unpack the 6-bit scales of the Q4_K block at P into R12 (8 bytes) and its
// 6-bit minimums into DX (8 bytes).
#define Q4KT_SCALES(P) \
	MOVL 4(P), AX \
	MOVL 8(P), BX \
	MOVL 12(P), DX \
	MOVL AX, R11 \
	SHRL $6, R11 \
	ANDL $0x03030303, R11 \
	SHLL $4, R11 \
	MOVL DX, R12 \
	ANDL $0x0f0f0f0f, R12 \
	ORL  R11, R12 \
	MOVL BX, R11 \
	SHRL $6, R11 \
	ANDL $0x03030303, R11 \
	SHLL $4, R11 \
	SHRL $4, DX \
	ANDL $0x0f0f0f0f, DX \
	ORL  R11, DX \
	ANDL $0x3f3f3f3f, AX \
	ANDL $0x3f3f3f3f, BX \
	SHLQ $32, R12 \
	ORQ  AX, R12 \
	SHLQ $32, DX \
	ORQ  BX, DX

// One 64-element chunk (32 bytes of nibbles at off, activations at xoff,
// scales of its two sub-blocks at soff(SP) (row 0) and soff+16(SP) (row 1)).
#define Q4KT_CHUNK(off, xoff, soff) \
	VPAND        off(SI), Y8, Y9 \
	VPAND        off(R13), Y8, Y10 \
	VPBROADCASTW soff(SP), Y11 \
	VPBROADCASTW soff+16(SP), Y12 \
	TILE_ROWS(xoff) \
	VMOVDQU      off(SI), Y9 \
	VMOVDQU      off(R13), Y10 \
	VPSRLW       $4, Y9, Y9 \
	VPSRLW       $4, Y10, Y10 \
	VPAND        Y8, Y9, Y9 \
	VPAND        Y8, Y10, Y10 \
	VPBROADCASTW soff+2(SP), Y11 \
	VPBROADCASTW soff+18(SP), Y12 \
	TILE_ROWS(xoff+32)

// Stack: 32: scales as int16, row 0 (16 bytes), row 1 (16 bytes);
// 64: d(w_i)·d(x_r) of the block (8 floats); 96: the pair loop.

// func q4kTile2x4AVX2(w *byte, rb, np int, x0, x1, x2, x3, aux *byte, nb int, out *float32, ldo, nr int)
TEXT ·q4kTile2x4AVX2(SB), NOSPLIT, $192-96
	T4_ARGS(96)
	MOVL $0x0f0f0f0f, AX
	VMOVD AX, X8
	VPBROADCASTD X8, Y8

q4ktpair:
	T4_PAIR_START(96)

q4ktloop:
	TESTQ CX, CX
	JZ    q4ktdone

	Q4KT_SCALES(SI)
	VMOVQ R12, X9
	VMOVQ DX, X10
	Q4KT_SCALES(R13)
	VPINSRQ   $1, R12, X9, X9
	VPINSRQ   $1, DX, X10, X10
	VPMOVZXBW X9, Y9
	VMOVDQU   Y9, 32(SP)

	// minimum term: Y12 = [m(w_i)·s32(x_r)] per lane 4i+r
	VPMOVZXBW      X10, Y9
	VPSHUFD        $0x00, Y9, Y10
	VBROADCASTI128 16(R14), Y11
	VPMADDWD       Y11, Y10, Y12
	VPSHUFD        $0x55, Y9, Y10
	VBROADCASTI128 32(R14), Y11
	VPMADDWD       Y11, Y10, Y10
	VPADDD         Y10, Y12, Y12
	VPSHUFD        $0xaa, Y9, Y10
	VBROADCASTI128 48(R14), Y11
	VPMADDWD       Y11, Y10, Y10
	VPADDD         Y10, Y12, Y12
	VPSHUFD        $0xff, Y9, Y10
	VBROADCASTI128 64(R14), Y11
	VPMADDWD       Y11, Y10, Y10
	VPADDD         Y10, Y12, Y12
	VCVTDQ2PS      Y12, Y12

	// d and dmin of both rows times d of the activation rows
	TILE_D(X10, Y10, Y13, Y14)
	VBROADCASTF128 0(R14), Y11
	VMULPS         Y11, Y14, Y14
	VFNMADD231PS   Y14, Y12, Y15
	VMULPS         Y11, Y13, Y13
	VMOVUPS        Y13, 64(SP)

	TILE_ZERO
	Q4KT_CHUNK(16, 4, 32)
	Q4KT_CHUNK(48, 68, 36)
	Q4KT_CHUNK(80, 132, 40)
	Q4KT_CHUNK(112, 196, 44)

	TILE_REDUCE
	VCVTDQ2PS   Y0, Y0
	VFMADD231PS 64(SP), Y0, Y15

	TILE_ADVANCE(144)
	DECQ CX
	JMP  q4ktloop

q4ktdone:
	T4_PAIR_END(96, q4ktpair, q4ktstored)
	VZEROUPPER
	RET

// ---- Q4_K, two weight rows x eight activation rows.
// Registers in the block loop: Y0..Y7 accumulators of activation rows 0..7
// (low half: weight row 0, high half: row 1), Y8 = 0x0f bytes, Y9 / Y10 16
// nibble bytes of both rows (two halves of a 32-byte chunk), Y11 their
// quants, Y12 the scales of their sub-block, Y13 activations / products,
// Y15 the scales of the block as int16 (low half row 0, high half row 1).
// Activation row r is at DI + r*R9 (R8 = DI + R9, R10 = 3*R9); the tileAux
// entries of rows 0..3 at R14, of rows 4..7 at R14 + auxhi.

// acc += (Y11 · broadcast(16 activation quants at addr)) * Y12
#define T8_ROW(addr, acc) \
	VBROADCASTI128 addr, Y13 \
	VPMADDUBSW     Y13, Y11, Y13 \
	VPMADDWD       Y12, Y13, Y13 \
	VPADDD         Y13, acc, acc

#define T8_ROWS(xoff) \
	T8_ROW(xoff(DI), Y0) \
	T8_ROW(xoff(R8), Y1) \
	T8_ROW(xoff(DI)(R9*2), Y2) \
	T8_ROW(xoff(R8)(R9*2), Y3) \
	T8_ROW(xoff(DI)(R9*4), Y4) \
	T8_ROW(xoff(R8)(R9*4), Y5) \
	T8_ROW(xoff(DI)(R10*2), Y6) \
	T8_ROW(xoff(R8)(R10*2), Y7)

// One 64-element chunk: 32 nibble bytes at off, activations at xoff, its
// sub-blocks' scale masks at tileWord+ms (low nibbles) and +ms+32 (high).
#define Q4KT8_CHUNK(off, xoff, ms) \
	VMOVDQU     off(SI), X9 \
	VINSERTI128 $1, off(R13), Y9, Y9 \
	VMOVDQU     off+16(SI), X10 \
	VINSERTI128 $1, off+16(R13), Y10, Y10 \
	VPSHUFB     tileWord<>+ms(SB), Y15, Y12 \
	VPAND       Y8, Y9, Y11 \
	T8_ROWS(xoff) \
	VPAND       Y8, Y10, Y11 \
	T8_ROWS(xoff+16) \
	VPSHUFB     tileWord<>+ms+32(SB), Y15, Y12 \
	VPSRLW      $4, Y9, Y11 \
	VPAND       Y8, Y11, Y11 \
	T8_ROWS(xoff+32) \
	VPSRLW      $4, Y10, Y11 \
	VPAND       Y8, Y11, Y11 \
	T8_ROWS(xoff+48)

// Minimum term of rows 0..3 into lo and 4..7 into hi (int32, lane 4*i+r):
// the pairs of minimums k of both weight rows (Y10 = 16 x int16) times the
// tileAux sums (AX = auxhi). Uses Y11, Y12.
#define Q4KT8_MINPAIR(k, imm, lo, hi) \
	VPSHUFD        $imm, Y10, Y11 \
	VBROADCASTI128 16+16*k(R14), Y12 \
	VPMADDWD       Y12, Y11, lo \
	VBROADCASTI128 16+16*k(R14)(AX*1), Y12 \
	VPMADDWD       Y12, Y11, hi

// Reduce Y0..Y7 (rows 0..7, [w0 4 lanes | w1 4 lanes]) to Y0 = rows 0..3
// and Y4 = rows 4..7, lane 4*i+r. Uses Y9, Y10.
#define T8_REDUCE \
	VPUNPCKLDQ  Y1, Y0, Y9 \
	VPUNPCKHDQ  Y1, Y0, Y10 \
	VPADDD      Y10, Y9, Y0 \
	VPUNPCKLDQ  Y3, Y2, Y9 \
	VPUNPCKHDQ  Y3, Y2, Y10 \
	VPADDD      Y10, Y9, Y2 \
	VPUNPCKLDQ  Y5, Y4, Y9 \
	VPUNPCKHDQ  Y5, Y4, Y10 \
	VPADDD      Y10, Y9, Y4 \
	VPUNPCKLDQ  Y7, Y6, Y9 \
	VPUNPCKHDQ  Y7, Y6, Y10 \
	VPADDD      Y10, Y9, Y6 \
	VPUNPCKLQDQ Y2, Y0, Y9 \
	VPUNPCKHQDQ Y2, Y0, Y10 \
	VPADDD      Y10, Y9, Y0 \
	VPUNPCKLQDQ Y6, Y4, Y9 \
	VPUNPCKHQDQ Y6, Y4, Y10 \
	VPADDD      Y10, Y9, Y4

// Stack: 0: auxhi; 32 / 64: d(w_i)·d(x_r) of the block, rows 0..3 / 4..7;
// 96 / 128: float accumulators of rows 0..3 / 4..7; 160: the pair loop.

// func q4kTile2x8AVX2(w *byte, rb, np int, x0 *byte, xs int, aux *byte, auxhi, nb int, out *float32, ldo int)
TEXT ·q4kTile2x8AVX2(SB), NOSPLIT, $224-80
	T8_ARGS(160)
	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X8
	VPBROADCASTD X8, Y8

q4kt8pair:
	T8_PAIR_START(160, 96)

q4kt8loop:
	TESTQ CX, CX
	JZ    q4kt8done

	Q4KT_SCALES(SI)
	VMOVQ R12, X15
	VMOVQ DX, X10
	Q4KT_SCALES(R13)
	VPINSRQ   $1, R12, X15, X15
	VPINSRQ   $1, DX, X10, X10
	VPMOVZXBW X15, Y15
	VPMOVZXBW X10, Y10

	MOVQ 0(SP), AX
	Q4KT8_MINPAIR(0, 0x00, Y0, Y1)
	Q4KT8_MINPAIR(1, 0x55, Y2, Y3)
	Q4KT8_MINPAIR(2, 0xaa, Y4, Y5)
	Q4KT8_MINPAIR(3, 0xff, Y6, Y7)
	VPADDD    Y2, Y0, Y0
	VPADDD    Y6, Y4, Y4
	VPADDD    Y4, Y0, Y0
	VPADDD    Y3, Y1, Y1
	VPADDD    Y7, Y5, Y5
	VPADDD    Y5, Y1, Y1
	VCVTDQ2PS Y0, Y0
	VCVTDQ2PS Y1, Y1

	// F -= min term * dmin(w_i)·d(x_r); save d(w_i)·d(x_r)
	TILE_D(X2, Y2, Y4, Y5)
	VBROADCASTF128 0(R14), Y6
	VBROADCASTF128 0(R14)(AX*1), Y7
	VMULPS         Y6, Y4, Y2
	VMOVUPS        Y2, 32(SP)
	VMULPS         Y7, Y4, Y2
	VMOVUPS        Y2, 64(SP)
	VMULPS         Y6, Y5, Y6
	VMULPS         Y7, Y5, Y7
	VMOVUPS        96(SP), Y2
	VFNMADD231PS   Y6, Y0, Y2
	VMOVUPS        Y2, 96(SP)
	VMOVUPS        128(SP), Y2
	VFNMADD231PS   Y7, Y1, Y2
	VMOVUPS        Y2, 128(SP)

	TILE_ZERO
	Q4KT8_CHUNK(16, 4, 0)
	Q4KT8_CHUNK(48, 68, 64)
	Q4KT8_CHUNK(80, 132, 128)
	Q4KT8_CHUNK(112, 196, 192)

	T8_REDUCE
	VCVTDQ2PS   Y0, Y0
	VCVTDQ2PS   Y4, Y4
	VMOVUPS     96(SP), Y1
	VFMADD231PS 32(SP), Y0, Y1
	VMOVUPS     Y1, 96(SP)
	VMOVUPS     128(SP), Y5
	VFMADD231PS 64(SP), Y4, Y5
	VMOVUPS     Y5, 128(SP)

	ADDQ $144, SI
	ADDQ $144, R13
	ADDQ $292, DI
	ADDQ $292, R8
	ADDQ $208, R14
	DECQ CX
	JMP  q4kt8loop

q4kt8done:
	T8_PAIR_END(160, 96, q4kt8pair)
	VZEROUPPER
	RET

// ---- Q6_K, two weight rows x eight activation rows (same layout as
// q4kTile2x8AVX2). The 6-bit quants q (0..63) are multiplied unsigned; the
// offset -32 is applied per block through the 16-element activation sums of
// tileAux: result = d(w)·d(x)·(Σ sc·q·x - 32·Σ sc·bsum). Registers in the
// block loop: Y0..Y7 accumulators, Y8 = 0x0f, Y15 = 0x30 bytes, Y9 / Y10 /
// Y11 16 bytes of ql (low / high 32 of a half) and qh of both rows, Y12 the
// quants, Y13 activations / products, Y14 scratch.

// acc += (Y12 · broadcast(16 activation quants at addr)) * Y14
#define T8_ROW6(addr, acc) \
	VBROADCASTI128 addr, Y13 \
	VPMADDUBSW     Y13, Y12, Y13 \
	VPMADDWD       Y14, Y13, Y13 \
	VPADDD         Y13, acc, acc

#define T8_ROWS6(xoff) \
	T8_ROW6(xoff(DI), Y0) \
	T8_ROW6(xoff(R8), Y1) \
	T8_ROW6(xoff(DI)(R9*2), Y2) \
	T8_ROW6(xoff(R8)(R9*2), Y3) \
	T8_ROW6(xoff(DI)(R9*4), Y4) \
	T8_ROW6(xoff(R8)(R9*4), Y5) \
	T8_ROW6(xoff(DI)(R10*2), Y6) \
	T8_ROW6(xoff(R8)(R10*2), Y7)

// Half h (128 elements), 16-byte slice u: ql at qoff = 64h+16u, qh at
// hoff = 128+32h+16u, activations at xoff = 4+128h+16u, scale table entries
// of sub-blocks 8h+u+2q at soff = 224+32*(8h+u).
#define Q6KT8_SLICE(qoff, hoff, xoff, soff) \
	VMOVDQU     qoff(SI), X9 \
	VINSERTI128 $1, qoff(R13), Y9, Y9 \
	VMOVDQU     qoff+32(SI), X10 \
	VINSERTI128 $1, qoff+32(R13), Y10, Y10 \
	VMOVDQU     hoff(SI), X11 \
	VINSERTI128 $1, hoff(R13), Y11, Y11 \
	VPAND       Y8, Y9, Y12 \
	VPSLLW      $4, Y11, Y14 \
	VPAND       Y15, Y14, Y14 \
	VPOR        Y14, Y12, Y12 \
	VMOVDQU     soff(SP), Y14 \
	T8_ROWS6(xoff) \
	VPAND       Y8, Y10, Y12 \
	VPSLLW      $2, Y11, Y14 \
	VPAND       Y15, Y14, Y14 \
	VPOR        Y14, Y12, Y12 \
	VMOVDQU     soff+64(SP), Y14 \
	T8_ROWS6(xoff+32) \
	VPSRLW      $4, Y9, Y12 \
	VPAND       Y8, Y12, Y12 \
	VPAND       Y15, Y11, Y14 \
	VPOR        Y14, Y12, Y12 \
	VMOVDQU     soff+128(SP), Y14 \
	T8_ROWS6(xoff+64) \
	VPSRLW      $4, Y10, Y12 \
	VPAND       Y8, Y12, Y12 \
	VPSRLW      $2, Y11, Y14 \
	VPAND       Y15, Y14, Y14 \
	VPOR        Y14, Y12, Y12 \
	VMOVDQU     soff+192(SP), Y14 \
	T8_ROWS6(xoff+96)

// Scale table entry s (from Y9 = scales 0..7, Y10 = 8..15 of both rows).
#define Q6KT8_STAB(src, m, s) \
	VPSHUFB tileWord<>+32*m(SB), src, Y11 \
	VMOVDQU Y11, 224+32*s(SP)

// Offset pair k: Σ over sub-blocks 2k, 2k+1 of sc·bsum, rows 0..3 into lo and
// 4..7 into hi (src = scales of both rows as int16; AX = auxhi).
#define Q6KT8_OFFPAIR(src, imm, k, lo, hi) \
	VPSHUFD        $imm, src, Y11 \
	VBROADCASTI128 80+16*k(R14), Y12 \
	VPMADDWD       Y12, Y11, Y12 \
	VPADDD         Y12, lo, lo \
	VBROADCASTI128 80+16*k(R14)(AX*1), Y12 \
	VPMADDWD       Y12, Y11, Y12 \
	VPADDD         Y12, hi, hi

// Stack: 0: auxhi; 32 / 64: 32·Σ sc·bsum of rows 0..3 / 4..7 (int32, lane
// 4*i+r); 96 / 128: d(w_i)·d(x_r), rows 0..3 / 4..7; 160 / 192: float
// accumulators; 224: the scales of the 16 sub-blocks of both rows, 32 bytes
// each (low half row 0, high half row 1, as int16); 736: the pair loop.

// func q6kTile2x8AVX2(w *byte, rb, np int, x0 *byte, xs int, aux *byte, auxhi, nb int, out *float32, ldo int)
TEXT ·q6kTile2x8AVX2(SB), 0, $800-80
	T8_ARGS(736)

q6kt8pair:
	T8_PAIR_START(736, 160)

q6kt8loop:
	TESTQ CX, CX
	JZ    q6kt8done

	VMOVQ     192(SI), X9
	VPINSRQ   $1, 192(R13), X9, X9
	VPMOVSXBW X9, Y9                  // scales 0..7 [w0 | w1]
	VMOVQ     200(SI), X10
	VPINSRQ   $1, 200(R13), X10, X10
	VPMOVSXBW X10, Y10                // scales 8..15
	Q6KT8_STAB(Y9, 0, 0)
	Q6KT8_STAB(Y9, 1, 1)
	Q6KT8_STAB(Y9, 2, 2)
	Q6KT8_STAB(Y9, 3, 3)
	Q6KT8_STAB(Y9, 4, 4)
	Q6KT8_STAB(Y9, 5, 5)
	Q6KT8_STAB(Y9, 6, 6)
	Q6KT8_STAB(Y9, 7, 7)
	Q6KT8_STAB(Y10, 0, 8)
	Q6KT8_STAB(Y10, 1, 9)
	Q6KT8_STAB(Y10, 2, 10)
	Q6KT8_STAB(Y10, 3, 11)
	Q6KT8_STAB(Y10, 4, 12)
	Q6KT8_STAB(Y10, 5, 13)
	Q6KT8_STAB(Y10, 6, 14)
	Q6KT8_STAB(Y10, 7, 15)

	MOVQ  0(SP), AX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	Q6KT8_OFFPAIR(Y9, 0x00, 0, Y0, Y1)
	Q6KT8_OFFPAIR(Y9, 0x55, 1, Y0, Y1)
	Q6KT8_OFFPAIR(Y9, 0xaa, 2, Y0, Y1)
	Q6KT8_OFFPAIR(Y9, 0xff, 3, Y0, Y1)
	Q6KT8_OFFPAIR(Y10, 0x00, 4, Y0, Y1)
	Q6KT8_OFFPAIR(Y10, 0x55, 5, Y0, Y1)
	Q6KT8_OFFPAIR(Y10, 0xaa, 6, Y0, Y1)
	Q6KT8_OFFPAIR(Y10, 0xff, 7, Y0, Y1)
	VPSLLD  $5, Y0, Y0
	VPSLLD  $5, Y1, Y1
	VMOVDQU Y0, 32(SP)
	VMOVDQU Y1, 64(SP)

	// d(w_i)·d(x_r)
	MOVWLZX        208(SI), BX
	VMOVD          BX, X2
	VPINSRW        $4, 208(R13), X2, X2
	VCVTPH2PS      X2, Y2
	VPERMILPS      $0x00, Y2, Y2
	VBROADCASTF128 0(R14), Y3
	VMULPS         Y3, Y2, Y3
	VMOVUPS        Y3, 96(SP)
	VBROADCASTF128 0(R14)(AX*1), Y3
	VMULPS         Y3, Y2, Y3
	VMOVUPS        Y3, 128(SP)

	MOVL         $0x0f0f0f0f, AX
	VMOVD        AX, X8
	VPBROADCASTD X8, Y8
	MOVL         $0x30303030, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	TILE_ZERO
	Q6KT8_SLICE(0, 128, 4, 224)
	Q6KT8_SLICE(16, 144, 20, 256)
	Q6KT8_SLICE(64, 160, 132, 480)
	Q6KT8_SLICE(80, 176, 148, 512)

	T8_REDUCE
	VPSUBD      32(SP), Y0, Y0
	VPSUBD      64(SP), Y4, Y4
	VCVTDQ2PS   Y0, Y0
	VCVTDQ2PS   Y4, Y4
	VMOVUPS     160(SP), Y1
	VFMADD231PS 96(SP), Y0, Y1
	VMOVUPS     Y1, 160(SP)
	VMOVUPS     192(SP), Y5
	VFMADD231PS 128(SP), Y4, Y5
	VMOVUPS     Y5, 192(SP)

	ADDQ $210, SI
	ADDQ $210, R13
	ADDQ $292, DI
	ADDQ $292, R8
	ADDQ $208, R14
	DECQ CX
	JMP  q6kt8loop

q6kt8done:
	T8_PAIR_END(736, 160, q6kt8pair)
	VZEROUPPER
	RET
