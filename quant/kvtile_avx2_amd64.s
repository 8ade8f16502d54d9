//go:build amd64 && !purego

#include "textflag.h"

// AVX2 kernels of the tiled Q8_0 KV layouts (kvtile.go), for CPUs without
// AVX-512 VNNI: the same operations as kvtile_amd64.s on the same tiles,
// eight keys per 32-byte vector instead of 16 per 64-byte one.

// kt2iota: the dword lane numbers, against which a count of valid keys
// becomes a lane mask.
DATA kt2iota<>+0(SB)/4, $0
DATA kt2iota<>+4(SB)/4, $1
DATA kt2iota<>+8(SB)/4, $2
DATA kt2iota<>+12(SB)/4, $3
DATA kt2iota<>+16(SB)/4, $4
DATA kt2iota<>+20(SB)/4, $5
DATA kt2iota<>+24(SB)/4, $6
DATA kt2iota<>+28(SB)/4, $7
GLOBL kt2iota<>(SB), RODATA|NOPTR, $32

// KT2_MASK(reg, y, x): y = the lanes below reg (as int32) all ones, the
// others zero.
#define KT2_MASK(reg, y, x) \
	VMOVD reg, x \
	VPBROADCASTD x, y \
	VPCMPGTD kt2iota<>(SB), y, y

// KT2_ROW(xr, w, t, acc): the four bytes 4w..4w+3 of query row xr's block
// at AX against the keys' signed values Y8 (absolute values Y9): the
// query bytes take the keys' signs (VPSIGNB), so that VPMADDUBSW multiplies
// |k| ≤ 128 by them without saturating, and VPMADDWD adds the pairs.
#define KT2_ROW(xr, w, t, acc) \
	VPBROADCASTD (4+4*w)(xr)(AX*1), t \
	VPSIGNB Y8, t, t \
	VPMADDUBSW t, Y9, t \
	VPMADDWD Y13, t, t \
	VPADDD t, acc, acc

// KT2_DW(w): dword w of the block at BX (four columns of the eight keys of
// this half tile, stored as k+128) against the four query rows.
#define KT2_DW(w) \
	VPXOR (64*w)(BX), Y14, Y8 \
	VPABSB Y8, Y9 \
	KT2_ROW(R8, w, Y10, Y0) \
	KT2_ROW(R9, w, Y11, Y1) \
	KT2_ROW(R10, w, Y10, Y2) \
	KT2_ROW(R11, w, Y11, Y3) \
	PREFETCHT0 (64*w)(BX)(R12*1)

// KT2_SCALE(xr, acc, s): s += float(acc) × key scales (Y12) × the query
// row's block scale at (xr)(AX*1).
#define KT2_SCALE(xr, acc, s) \
	VBROADCASTSS (xr)(AX*1), Y10 \
	VMULPS Y12, Y10, Y10 \
	VCVTDQ2PS acc, acc \
	VFMADD231PS Y10, acc, s

// func dotQ8_0TGAVX2(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int)
// dotQ8_0TG of kvtile_amd64.s for AVX2 (see there for the arguments).
// Tile by tile, half tile (eight keys) by half tile, and for each group:
// per block column, eight 32-byte vectors (four columns of the eight keys)
// meet four broadcast query bytes of each row; the keys' signs move to the
// query bytes (VPSIGNB) and VPMADDUBSW + VPMADDWD sum four products per
// key into each row's eight int32; these are scaled by the keys' and the
// query's scales into the row's eight scores. No correction is needed: the
// keys are made signed again as they are loaded. It prefetches the keys
// eight tiles ahead, as the AVX-512 kernel does.
//
// Frame: the tile's byte offset in the scores at 0(SP), ldo in bytes at
// 8(SP), groups left at 16(SP), blocks left at 24(SP), whether the half
// tile is partial (its stores masked by Y15) at 32(SP).
TEXT ·dotQ8_0TGAVX2(SB), NOSPLIT, $40-56
	MOVL $0x80808080, AX
	VMOVD AX, X14
	VPBROADCASTD X14, Y14
	MOVL $0x00010001, AX
	VMOVD AX, X13
	VPBROADCASTD X13, Y13
	MOVQ ldo+16(FP), AX
	SHLQ $2, AX
	MOVQ AX, 8(SP)
	MOVQ $0, 0(SP)
	MOVQ k+24(FP), SI
	MOVQ ldt+32(FP), R12
	SHLQ $3, R12
	MOVQ n+40(FP), CX

kt2tile:
	// R13: the half tile's byte offset in the key vectors and in the
	// scores (0 or 32); DX: the offset of its scales from its keys
	XORQ R13, R13
	MOVQ $512, DX

kt2half:
	MOVQ R13, AX
	SHRQ $2, AX
	NEGQ AX
	ADDQ CX, AX
	JLE kt2tnext
	MOVQ $0, 32(SP)
	CMPQ AX, $8
	JGE kt2full
	MOVQ $1, 32(SP)
	KT2_MASK(AX, Y15, X15)

kt2full:
	MOVQ gs+0(FP), DI
	MOVQ ng+8(FP), AX
	MOVQ AX, 16(SP)

kt2group:
	MOVQ 0(DI), R8
	MOVQ 8(DI), R9
	MOVQ 16(DI), R10
	MOVQ 24(DI), R11
	MOVQ 48(DI), BX
	ADDQ SI, BX
	ADDQ R13, BX
	MOVQ nb+48(FP), AX
	MOVQ AX, 24(SP)
	XORQ AX, AX
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

kt2blk:
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	KT2_DW(0)
	KT2_DW(1)
	KT2_DW(2)
	KT2_DW(3)
	KT2_DW(4)
	KT2_DW(5)
	KT2_DW(6)
	KT2_DW(7)
	PREFETCHT0 511(BX)(R12*1)
	VCVTPH2PS (BX)(DX*1), Y12
	KT2_SCALE(R8, Y0, Y4)
	KT2_SCALE(R9, Y1, Y5)
	KT2_SCALE(R10, Y2, Y6)
	KT2_SCALE(R11, Y3, Y7)
	ADDQ $544, BX
	ADDQ $36, AX
	DECQ 24(SP)
	JNZ kt2blk

	MOVQ 32(DI), AX
	ADDQ 0(SP), AX
	ADDQ R13, AX
	CMPQ 32(SP), $0
	JNE kt2mask
	VMOVUPS Y4, (AX)
	CMPQ 40(DI), $1
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMOVUPS Y5, (AX)
	CMPQ 40(DI), $2
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMOVUPS Y6, (AX)
	CMPQ 40(DI), $3
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMOVUPS Y7, (AX)
	JMP kt2gnext

kt2mask:
	VMASKMOVPS Y4, Y15, (AX)
	CMPQ 40(DI), $1
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMASKMOVPS Y5, Y15, (AX)
	CMPQ 40(DI), $2
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMASKMOVPS Y6, Y15, (AX)
	CMPQ 40(DI), $3
	JEQ kt2gnext
	ADDQ 8(SP), AX
	VMASKMOVPS Y7, Y15, (AX)

kt2gnext:
	ADDQ $56, DI
	DECQ 16(SP)
	JNZ kt2group
	ADDQ $32, R13
	SUBQ $16, DX
	CMPQ R13, $64
	JLT kt2half

kt2tnext:
	ADDQ $64, 0(SP)
	ADDQ ldt+32(FP), SI
	SUBQ $16, CX
	JGT kt2tile
	VZEROUPPER
	RET

// KV2_HMAX(Y, X, off): the largest of Y's (X: its low half) eight floats,
// at least 1e-30 (X14), into off(SP) (X0, X1 scratch).
#define KV2_HMAX(Y, X, off) \
	VEXTRACTF128 $1, Y, X0 \
	VMAXPS X0, X, X0 \
	VPERMILPS $0x4E, X0, X1 \
	VMAXPS X1, X0, X0 \
	VPERMILPS $0xB1, X0, X1 \
	VMAXPS X1, X0, X0 \
	VMAXSS X14, X0, X0 \
	VMOVSS X0, off(SP)

// KV2_SUM(a, b): a = float(the eight columns' sums) from the pair sums a
// (columns 0-3) and b (4-7).
#define KV2_SUM(a, b) \
	VPHADDD b, a, a \
	VPERMQ $0xD8, a, a \
	VCVTDQ2PS a, a

// KV2_WQ(src, imm, off): qword imm of src broadcast to 32 bytes, stored at
// off(AX) (the weight vectors of one row and one group of four keys).
#define KV2_WQ(src, imm, off) \
	VPERMQ $imm, src, Y12 \
	VMOVDQU Y12, off(AX)

// KV2_WPAIR(pa, pb, ra, rb): the weights of rows ra and rb (their p·1/P_r
// in pa, pb) for the eight keys of a half tile (Y8: the keys' scales ×
// 32767/D_b), rounded to int16 and stored broadcast: keys 0-3 at
// 32·r(AX), keys 4-7 at 128+32·r(AX).
#define KV2_WPAIR(pa, pb, ra, rb) \
	VMULPS pa, Y8, Y10 \
	VMULPS pb, Y8, Y11 \
	VCVTPS2DQ Y10, Y10 \
	VCVTPS2DQ Y11, Y11 \
	VPACKSSDW Y11, Y10, Y10 \
	KV2_WQ(Y10, 0x00, 32*ra) \
	KV2_WQ(Y10, 0x55, 32*rb) \
	KV2_WQ(Y10, 0xAA, 128+32*ra) \
	KV2_WQ(Y10, 0xFF, 128+32*rb)

// KV2_WHALF(poff, soff): the weights of a half tile, its rows' p at
// poff(R8..R11)(BX*1) and its keys' scales at soff(CX), for the R13 keys
// left (zero past them); then AX to the next half tile, R13 less eight.
#define KV2_WHALF(poff, soff) \
	KT2_MASK(R13, Y15, X15) \
	VMASKMOVPS poff(R8)(BX*1), Y15, Y4 \
	VMASKMOVPS poff(R9)(BX*1), Y15, Y5 \
	VMASKMOVPS poff(R10)(BX*1), Y15, Y6 \
	VMASKMOVPS poff(R11)(BX*1), Y15, Y7 \
	VMULPS Y0, Y4, Y4 \
	VMULPS Y1, Y5, Y5 \
	VMULPS Y2, Y6, Y6 \
	VMULPS Y3, Y7, Y7 \
	VCVTPH2PS soff(CX), Y8 \
	VANDPS Y15, Y8, Y8 \
	VMULPS Y9, Y8, Y8 \
	KV2_WPAIR(Y4, Y5, 0, 1) \
	KV2_WPAIR(Y6, Y7, 2, 3) \
	ADDQ $256, AX \
	SUBQ $8, R13

// KV2_ROWS(g, r, a, b): row r's broadcast weights of key group g of the
// tile times the values Y8 (columns 0-3 of the quarter) and Y9 (4-7).
#define KV2_ROWS(g, r, a, b) \
	VMOVDQU (128*g+32*r)(AX), Y12 \
	VPMADDWD Y12, Y8, Y10 \
	VPADDD Y10, a, a \
	VPMADDWD Y12, Y9, Y11 \
	VPADDD Y11, b, b

// KV2_GROUP(g): key group g (four keys) of the tile at SI, eight columns.
#define KV2_GROUP(g) \
	VPMOVSXBW (128*g)(SI), Y8 \
	VPMOVSXBW (128*g+16)(SI), Y9 \
	KV2_ROWS(g, 0, Y0, Y1) \
	KV2_ROWS(g, 1, Y2, Y3) \
	KV2_ROWS(g, 2, Y4, Y5) \
	KV2_ROWS(g, 3, Y6, Y7)

// KV2_TILE: the four key groups of the tile at SI (their weights at AX),
// then SI and AX to the next tile, CX one less.
#define KV2_TILE \
	KV2_GROUP(0) \
	KV2_GROUP(1) \
	KV2_GROUP(2) \
	KV2_GROUP(3) \
	ADDQ DX, SI \
	ADDQ $512, AX \
	DECQ CX

// KV2_PF(off): the line off of the block column of the tile two ahead
// into L1, of the tile eight ahead (the next call's) into L2.
#define KV2_PF(off) \
	PREFETCHT0 off(SI)(DX*2) \
	PREFETCHT2 off(SI)(DX*8)

// func accumQ8_0T4AVX2(o, p *[4]*float32, v *byte, ldt, n, nb int)
// accumQ8_0T4 of kvtile_amd64.s for AVX2 (see there for the arguments),
// for any nb, with its work area in its own frame. Block column by block
// column, the weights p[r][j]·d_j,b are rounded to 15 bits against their
// bound P_r·D_b, u = round(p/P_r · d·32767/D_b), and stored as int16, each
// row's four weights of a group of four keys broadcast to 32 bytes (so
// that VPMADDWD takes them as they are; zero past n, to the end of the
// last tile). Four passes over the tiles follow, one per eight columns,
// a whole tile (four groups) per step: two vectors of 16 int16 values
// (VPMOVSXBW of four columns × four keys each) meet each row's weights in
// VPMADDWD, whose int32 pair sums (at most 32767 · 127 · 2 each per four
// keys, 2²⁸ over 128 keys) are added across the keys, then combined per
// column and added to o scaled by P_r·D_b/32767. The four rows' outputs
// are all loaded before any is stored, so that rows repeated in o get
// identical values. The first pass prefetches the values two tiles ahead
// into L1, and eight tiles ahead (the next call's, in an attention pass
// over blocks of 128 keys) into L2.
//
// Frame: 1/P_r at 0(SP), P_r at 16(SP), the output scales P_r·D_b/32767
// at 32(SP), D_b at 48(SP), 32767/D_b at 52(SP), the number of tiles at
// 56(SP); the weights from 64(SP), 128 bytes per group of four keys (four
// rows of 32 bytes).
TEXT ·accumQ8_0T4AVX2(SB), 0, $4160-48
	MOVQ p+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	MOVQ ldt+24(FP), DX
	MOVL $0x0DA24260, AX // 1e-30
	VMOVD AX, X14
	MOVQ n+32(FP), AX
	ADDQ $15, AX
	SHRQ $4, AX
	MOVQ AX, 56(SP)

	// P_r: the largest weight of each row
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ n+32(FP), R13
	XORQ BX, BX

kv2pmax:
	KT2_MASK(R13, Y15, X15)
	VMASKMOVPS (R8)(BX*1), Y15, Y0
	VMAXPS Y0, Y4, Y4
	VMASKMOVPS (R9)(BX*1), Y15, Y0
	VMAXPS Y0, Y5, Y5
	VMASKMOVPS (R10)(BX*1), Y15, Y0
	VMAXPS Y0, Y6, Y6
	VMASKMOVPS (R11)(BX*1), Y15, Y0
	VMAXPS Y0, Y7, Y7
	ADDQ $32, BX
	SUBQ $8, R13
	JGT kv2pmax
	KV2_HMAX(Y4, X4, 16)
	KV2_HMAX(Y5, X5, 20)
	KV2_HMAX(Y6, X6, 24)
	KV2_HMAX(Y7, X7, 28)
	MOVL $0x3F800000, AX // 1.0
	VMOVD AX, X2
	VBROADCASTSS X2, X2
	VDIVPS 16(SP), X2, X2
	VMOVUPS X2, 0(SP)

	// block column by block column: DI its first tile, R12 its number
	MOVQ v+16(FP), DI
	XORQ R12, R12

kv2blk:
	// D_b: the largest scale of the block column's keys; 32767/D_b and
	// the output scales P_r·D_b/32767
	VXORPS Y4, Y4, Y4
	MOVQ DI, BX
	MOVQ n+32(FP), R13

kv2dmax:
	KT2_MASK(R13, Y15, X15)
	VCVTPH2PS 512(BX), Y0
	VANDPS Y15, Y0, Y0
	VMAXPS Y0, Y4, Y4
	LEAQ -8(R13), AX
	KT2_MASK(AX, Y15, X15)
	VCVTPH2PS 528(BX), Y0
	VANDPS Y15, Y0, Y0
	VMAXPS Y0, Y4, Y4
	ADDQ DX, BX
	SUBQ $16, R13
	JGT kv2dmax
	KV2_HMAX(Y4, X4, 48)
	VMOVSS 48(SP), X0
	MOVL $0x46FFFE00, AX // 32767
	VMOVD AX, X1
	VDIVSS X0, X1, X1
	VMOVSS X1, 52(SP)
	MOVL $0x38000100, AX // 1/32767
	VMOVD AX, X1
	VMULSS X1, X0, X0
	VBROADCASTSS X0, X0
	VMULPS 16(SP), X0, X0
	VMOVUPS X0, 32(SP)

	// the weights, a half tile (eight keys) at a time, for all of the last
	// tile (zero past n): BX the byte offset in p, CX the tile, AX the
	// half tile's weight vectors
	MOVQ p+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	VBROADCASTSS 0(SP), Y0
	VBROADCASTSS 4(SP), Y1
	VBROADCASTSS 8(SP), Y2
	VBROADCASTSS 12(SP), Y3
	VBROADCASTSS 52(SP), Y9
	MOVQ n+32(FP), R13
	XORQ BX, BX
	LEAQ 64(SP), AX
	MOVQ DI, CX

kv2wt:
	KV2_WHALF(0, 512)
	// the tile's second half: the same tile, its second eight scales
	KV2_WHALF(32, 528)
	ADDQ $64, BX
	ADDQ DX, CX
	TESTQ R13, R13
	JGT kv2wt

	// four passes over the tiles, eight columns each (R13: their byte
	// offset in the key groups and in o)
	MOVQ o+0(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	XORQ R13, R13

kv2quarter:
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5
	VPXOR Y6, Y6, Y6
	VPXOR Y7, Y7, Y7
	LEAQ (DI)(R13*1), SI
	LEAQ 64(SP), AX
	MOVQ 56(SP), CX
	TESTQ R13, R13
	JNZ kv2tile

kv2tilepf:
	// the first pass prefetches
	KV2_PF(0)
	KV2_PF(64)
	KV2_PF(128)
	KV2_PF(192)
	KV2_PF(256)
	KV2_PF(320)
	KV2_PF(384)
	KV2_PF(448)
	KV2_PF(512)
	KV2_PF(543)
	KV2_TILE
	JNZ kv2tilepf
	JMP kv2sum

kv2tile:
	KV2_TILE
	JNZ kv2tile

kv2sum:
	KV2_SUM(Y0, Y1)
	KV2_SUM(Y2, Y3)
	KV2_SUM(Y4, Y5)
	KV2_SUM(Y6, Y7)
	MOVQ R12, BX
	SHLQ $7, BX
	ADDQ R13, BX
	VMOVUPS (R8)(BX*1), Y1
	VMOVUPS (R9)(BX*1), Y3
	VMOVUPS (R10)(BX*1), Y5
	VMOVUPS (R11)(BX*1), Y7
	VBROADCASTSS 32(SP), Y8
	VFMADD231PS Y8, Y0, Y1
	VBROADCASTSS 36(SP), Y8
	VFMADD231PS Y8, Y2, Y3
	VBROADCASTSS 40(SP), Y8
	VFMADD231PS Y8, Y4, Y5
	VBROADCASTSS 44(SP), Y8
	VFMADD231PS Y8, Y6, Y7
	VMOVUPS Y1, (R8)(BX*1)
	VMOVUPS Y3, (R9)(BX*1)
	VMOVUPS Y5, (R10)(BX*1)
	VMOVUPS Y7, (R11)(BX*1)
	ADDQ $32, R13
	CMPQ R13, $128
	JLT kv2quarter
	ADDQ $544, DI
	INCQ R12
	CMPQ R12, nb+40(FP)
	JLT kv2blk
	VZEROUPPER
	RET
