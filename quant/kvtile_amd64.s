//go:build amd64 && !purego

#include "textflag.h"

// AVX-512 (F, BW, VL, VNNI) kernels of the tiled Q8_0 KV layouts; see
// kvtile.go for the layouts and kvtile_amd64.go for the Go side.

// KT_CORR(xr, off): the correction of query row xr's block at AX:
// −128 × the sum of its 32 int8 (the keys are stored as k+128), into
// off(SP)(BX*1).
#define KT_CORR(xr, off) \
	VPXORD Y0, Y0, Y0 \
	VPDPBUSD 4(xr)(AX*1), Y15, Y0 \
	VEXTRACTI128 $1, Y0, X1 \
	VPADDD X1, X0, X0 \
	VPSHUFD $0x4E, X0, X1 \
	VPADDD X1, X0, X0 \
	VPSHUFD $0xB1, X0, X1 \
	VPADDD X1, X0, X0 \
	VPXORD X2, X2, X2 \
	VPSUBD X0, X2, X0 \
	VMOVD X0, off(SP)(BX*1)

// KT_DW(w): dword w of the block at BX (four columns of the 16 keys)
// against the four query rows' bytes 4w..4w+3 of the block at AX.
#define KT_DW(w) \
	VMOVDQU64 (64*w)(BX), Z4 \
	VPDPBUSD.BCST (4+4*w)(R8)(AX*1), Z4, Z0 \
	VPDPBUSD.BCST (4+4*w)(R9)(AX*1), Z4, Z1 \
	VPDPBUSD.BCST (4+4*w)(R10)(AX*1), Z4, Z2 \
	VPDPBUSD.BCST (4+4*w)(R11)(AX*1), Z4, Z3

// KT_SCALE(xr, acc, s): s += float(acc) × key scales (Z5) × the query
// row's block scale at (xr)(AX*1).
#define KT_SCALE(xr, acc, s) \
	VMULPS.BCST (xr)(AX*1), Z5, Z6 \
	VCVTDQ2PS acc, acc \
	VFMADD231PS Z6, acc, s

// KT_PF(off): prefetches line off of the block column at BX eight tiles
// (the next 128 keys) ahead into L1.
#define KT_PF(off) \
	PREFETCHT0 off(BX)(DX*8)

// func dotQ8_0TG512(gs *tiledGroup, ng, ldo int, k *byte, ldt, n, nb int)
// Scores of ng groups of four query rows (nb blocks of the Q8 activation
// format each; ng·nb ≤ 16) against n keys of a KVTileK tensor (tiles at k,
// k+ldt, ...): group i's rows gs[i].x[0..3] score the block columns from
// byte gs[i].koff of each tile, into gs[i].out[r*ldo + j] for r < gs[i].mr.
// The tiles are visited in order, each for all groups, so that the keys
// are read as one stream. Per tile, group and block column, eight 64-byte
// vectors (four columns of the 16 keys each) meet four broadcast query
// bytes of each row in one VPDPBUSD per row; each row's 16 integer sums
// start at the row's correction, and are scaled by the keys' and the
// query's scales into the row's 16 scores. Along the way it prefetches
// the keys eight tiles ahead, so that the keys of the next call (the next
// 128 keys of an attention pass) arrive while this one and the values'
// kernel run.
//
// Frame: the corrections (16 bytes per group and block) at 0(SP); 16·nb
// at 256(SP), ldo in bytes at 264(SP), the byte offset of the tile's
// scores at 272(SP), groups left at 280(SP), the corrections' end for the
// group at 288(SP).
TEXT ·dotQ8_0TG512(SB), NOSPLIT, $296-56
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Y15

	// the corrections of the rows, group by group and block by block
	MOVQ gs+0(FP), DI
	MOVQ ng+8(FP), CX
	XORQ BX, BX

ktcgroup:
	MOVQ 0(DI), R8
	MOVQ 8(DI), R9
	MOVQ 16(DI), R10
	MOVQ 24(DI), R11
	XORQ AX, AX
	MOVQ nb+48(FP), R13

ktcorr:
	KT_CORR(R8, 0)
	KT_CORR(R9, 4)
	KT_CORR(R10, 8)
	KT_CORR(R11, 12)
	ADDQ $36, AX
	ADDQ $16, BX
	DECQ R13
	JNZ ktcorr
	ADDQ $56, DI
	DECQ CX
	JNZ ktcgroup

	MOVQ nb+48(FP), AX
	SHLQ $4, AX
	MOVQ AX, 256(SP)
	MOVQ ldo+16(FP), AX
	SHLQ $2, AX
	MOVQ AX, 264(SP)
	MOVQ $0, 272(SP)
	MOVQ k+24(FP), SI
	MOVQ ldt+32(FP), DX
	MOVQ n+40(FP), CX
	MOVL $0xFFFF, AX
	KMOVW AX, K1

kttile:
	CMPQ CX, $16
	JGE ktfull
	// a last partial tile: store the first CX scores
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K1

ktfull:
	MOVQ gs+0(FP), DI
	MOVQ ng+8(FP), AX
	MOVQ AX, 280(SP)
	XORQ R13, R13

ktgroup:
	MOVQ 0(DI), R8
	MOVQ 8(DI), R9
	MOVQ 16(DI), R10
	MOVQ 24(DI), R11
	MOVQ 48(DI), BX
	ADDQ SI, BX
	MOVQ 256(SP), AX
	ADDQ R13, AX
	MOVQ AX, 288(SP)
	XORQ AX, AX
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23

ktblk:
	VPBROADCASTD 0(SP)(R13*1), Z0
	VPBROADCASTD 4(SP)(R13*1), Z1
	VPBROADCASTD 8(SP)(R13*1), Z2
	VPBROADCASTD 12(SP)(R13*1), Z3
	KT_DW(0)
	KT_PF(0)
	KT_DW(1)
	KT_PF(64)
	KT_DW(2)
	KT_PF(128)
	KT_DW(3)
	KT_PF(192)
	KT_DW(4)
	KT_PF(256)
	KT_DW(5)
	KT_PF(320)
	KT_DW(6)
	KT_PF(384)
	KT_DW(7)
	KT_PF(448)
	KT_PF(543)
	VCVTPH2PS 512(BX), Z5
	KT_SCALE(R8, Z0, Z20)
	KT_SCALE(R9, Z1, Z21)
	KT_SCALE(R10, Z2, Z22)
	KT_SCALE(R11, Z3, Z23)
	ADDQ $544, BX
	ADDQ $36, AX
	ADDQ $16, R13
	CMPQ R13, 288(SP)
	JLT ktblk

	MOVQ 32(DI), AX
	ADDQ 272(SP), AX
	VMOVUPS Z20, K1, (AX)
	CMPQ 40(DI), $1
	JEQ ktgnext
	ADDQ 264(SP), AX
	VMOVUPS Z21, K1, (AX)
	CMPQ 40(DI), $2
	JEQ ktgnext
	ADDQ 264(SP), AX
	VMOVUPS Z22, K1, (AX)
	CMPQ 40(DI), $3
	JEQ ktgnext
	ADDQ 264(SP), AX
	VMOVUPS Z23, K1, (AX)

ktgnext:
	ADDQ $56, DI
	DECQ 280(SP)
	JNZ ktgroup
	ADDQ $64, 272(SP)
	ADDQ DX, SI
	SUBQ $16, CX
	JGT kttile
	VZEROUPPER
	RET

// KV_HMAX(Z, Y, off): the largest of Z's (Y: its low half) 16 floats, at least 1e-30, into
// off(SP) (X0, X1 scratch).
#define KV_HMAX(Z, Y, off) \
	VEXTRACTF64X4 $1, Z, Y1 \
	VMAXPS Y1, Y, Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VMAXPS X1, X0, X0 \
	VPERMILPS $0x4E, X0, X1 \
	VMAXPS X1, X0, X0 \
	VPERMILPS $0xB1, X0, X1 \
	VMAXPS X1, X0, X0 \
	VMAXSS X14, X0, X0 \
	VMOVSS X0, off(SP)

// KV_TILEMASK: K1 = the keys of the tile at remaining count R13 (all 16,
// or the first R13).
#define KV_TILEMASK(lbl) \
	MOVL $0xFFFF, AX \
	CMPQ R13, $16 \
	JGE lbl \
	MOVL $1, AX \
	MOVQ R13, CX \
	SHLL CX, AX \
	DECL AX \
lbl: \
	KMOVW AX, K1

// KV_WROW(pr, off): row r's weights of the tile for block column b (Z20:
// the keys' scales × 65535/bound): u = round(p'·Z20) < 65536, its high
// bytes to off(DI)(AX*1), its low bytes 512 further.
#define KV_WROW(pr, off) \
	VMULPS pr, Z20, Z21 \
	VCVTPS2DQ Z21, Z21 \
	VPMOVDB Z21, (off+512)(AX) \
	VPSRLD $8, Z21, Z21 \
	VPMOVDB Z21, off(AX)

// KV_GROUP(r, acc): row r's high and low weight bytes of the four keys at
// AX (hi r·128, lo 512 + r·128) times the values Z16, Z17 (16 columns
// each), into acc..acc+3 (hi 0-15, hi 16-31, lo 0-15, lo 16-31).
#define KV_GROUP(r, a0, a1, a2, a3) \
	VPBROADCASTD (128*r)(AX), Z18 \
	VPBROADCASTD (512+128*r)(AX), Z19 \
	VPDPBUSD Z16, Z18, a0 \
	VPDPBUSD Z17, Z18, a1 \
	VPDPBUSD Z16, Z19, a2 \
	VPDPBUSD Z17, Z19, a3

// KV_COMBINE(hi, lo): hi = float(hi·256 + lo).
#define KV_COMBINE(hi, lo) \
	VPSLLD $8, hi, hi \
	VPADDD lo, hi, hi \
	VCVTDQ2PS hi, hi

// func accumQ8_0T4512(o, p *[4]*float32, v *byte, ldt, n, nb int, scr *byte)
// For r < 4, c < 32·nb (nb ≤ 8) and n ≤ 128 keys of a KVTileV tensor
// (tiles at v, v+ldt, ...): o[r][c] += Σ_{j<n} p[r][j] · d_j,b · v_j[c]
// (p ≥ 0, b = c/32).
//
// The weights p[r][j]·d_j,b are bounded by P_r·D_b (the largest p of row
// r, the largest scale of block column b) and rounded to 16 bits against
// that bound: u = round(p/P_r · d·65535/D_b). Their high and low bytes go
// to scr (per block column 1 KiB: hi[r][128], then lo[r][128]). Each block
// column then takes one pass over the keys, four at a time: two 64-byte
// value vectors (16 columns × 4 keys each) meet each row's four broadcast
// high and four low weight bytes in VPDPBUSD; the integer sums (≤ 255 ·
// 128 · 128 each) combine as hi·256 + lo and are added to o scaled by
// P_r·D_b/65535. The four rows' outputs are all loaded before any is
// stored, so that rows repeated in o get identical values. The passes
// prefetch the values eight tiles ahead (the next call's, in an attention
// pass over blocks of 128 keys).
//
// Frame: 1/P_r at 0(SP), 65535/D_b at 16(SP), P_r·D_b/65535 at
// 64(SP)+16b+4r, P_r at 192(SP), D_b at 208(SP).
TEXT ·accumQ8_0T4512(SB), NOSPLIT, $224-56
	MOVQ p+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	MOVQ v+16(FP), SI
	MOVQ ldt+24(FP), DX
	MOVL $0x0DA24260, AX // 1e-30
	VMOVD AX, X14

	// P_r: the largest weight of each row
	VPXORD Z16, Z16, Z16
	VPXORD Z17, Z17, Z17
	VPXORD Z18, Z18, Z18
	VPXORD Z19, Z19, Z19
	MOVQ n+32(FP), R13
	XORQ BX, BX

kvpmax:
	KV_TILEMASK(kvpm1)
	VMOVUPS.Z (R8)(BX*1), K1, Z0
	VMAXPS Z0, Z16, Z16
	VMOVUPS.Z (R9)(BX*1), K1, Z0
	VMAXPS Z0, Z17, Z17
	VMOVUPS.Z (R10)(BX*1), K1, Z0
	VMAXPS Z0, Z18, Z18
	VMOVUPS.Z (R11)(BX*1), K1, Z0
	VMAXPS Z0, Z19, Z19
	ADDQ $64, BX
	SUBQ $16, R13
	JGT kvpmax
	KV_HMAX(Z16, Y16, 192)
	KV_HMAX(Z17, Y17, 196)
	KV_HMAX(Z18, Y18, 200)
	KV_HMAX(Z19, Y19, 204)
	MOVL $0x3F800000, AX // 1.0
	VMOVD AX, X2
	VBROADCASTSS X2, X2
	VDIVPS 192(SP), X2, X2
	VMOVUPS X2, 0(SP)

	// D_b: the largest scale of each block column; 65535/D_b and the
	// output scales P_r·D_b/65535
	XORQ R12, R12
	MOVQ SI, DI

kvdmax:
	VPXORD Z16, Z16, Z16
	MOVQ DI, BX
	MOVQ n+32(FP), R13

kvdmaxt:
	KV_TILEMASK(kvdm1)
	VMOVDQU16.Z 512(BX), K1, Y0
	VCVTPH2PS Y0, Z0
	VMAXPS Z0, Z16, Z16
	ADDQ DX, BX
	SUBQ $16, R13
	JGT kvdmaxt
	KV_HMAX(Z16, Y16, 208)
	VMOVSS 208(SP), X0
	MOVL $0x477FFF00, AX // 65535
	VMOVD AX, X1
	VDIVSS X0, X1, X1
	VMOVSS X1, 16(SP)(R12*4)
	MOVL $0x37800080, AX // 1/65535
	VMOVD AX, X1
	VMULSS X1, X0, X0
	VBROADCASTSS X0, X0
	VMULPS 192(SP), X0, X0
	MOVQ R12, AX
	SHLQ $4, AX
	VMOVUPS X0, 64(SP)(AX*1)
	ADDQ $544, DI
	INCQ R12
	CMPQ R12, nb+40(FP)
	JLT kvdmax

	// the weights, tile by tile
	MOVQ n+32(FP), R13
	XORQ BX, BX
	MOVQ scr+48(FP), DI

kvwt:
	KV_TILEMASK(kvwm1)
	VMOVUPS.Z (R8)(BX*1), K1, Z16
	VMOVUPS.Z (R9)(BX*1), K1, Z17
	VMOVUPS.Z (R10)(BX*1), K1, Z18
	VMOVUPS.Z (R11)(BX*1), K1, Z19
	VMULPS.BCST 0(SP), Z16, Z16
	VMULPS.BCST 4(SP), Z17, Z17
	VMULPS.BCST 8(SP), Z18, Z18
	VMULPS.BCST 12(SP), Z19, Z19
	MOVQ DI, AX
	MOVQ SI, CX
	XORQ R12, R12

kvwb:
	VMOVDQU16.Z 512(CX), K1, Y20
	VCVTPH2PS Y20, Z20
	VMULPS.BCST 16(SP)(R12*4), Z20, Z20
	KV_WROW(Z16, 0)
	KV_WROW(Z17, 128)
	KV_WROW(Z18, 256)
	KV_WROW(Z19, 384)
	ADDQ $1024, AX
	ADDQ $544, CX
	INCQ R12
	CMPQ R12, nb+40(FP)
	JLT kvwb
	ADDQ $64, BX
	ADDQ $16, DI
	ADDQ DX, SI
	SUBQ $16, R13
	JGT kvwt

	// one pass over the keys per block column
	XORQ R12, R12

kvblk:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	MOVQ R12, AX
	IMULQ $544, AX
	MOVQ v+16(FP), SI
	ADDQ AX, SI
	MOVQ R12, AX
	SHLQ $10, AX
	ADDQ scr+48(FP), AX
	MOVQ n+32(FP), CX
	ADDQ $3, CX
	SHRQ $2, CX
	XORQ BX, BX

kvgrp:
	PREFETCHT0 (SI)(DX*8)
	PREFETCHT0 64(SI)(DX*8)
	VMOVDQU64 (SI), Z16
	VMOVDQU64 64(SI), Z17
	KV_GROUP(0, Z0, Z1, Z2, Z3)
	KV_GROUP(1, Z4, Z5, Z6, Z7)
	KV_GROUP(2, Z8, Z9, Z10, Z11)
	KV_GROUP(3, Z12, Z13, Z14, Z15)
	ADDQ $4, AX
	ADDQ $128, SI
	INCQ BX
	CMPQ BX, $4
	JNE kvgnext
	XORQ BX, BX
	LEAQ -512(SI)(DX*1), SI

kvgnext:
	DECQ CX
	JNZ kvgrp

	KV_COMBINE(Z0, Z2)
	KV_COMBINE(Z1, Z3)
	KV_COMBINE(Z4, Z6)
	KV_COMBINE(Z5, Z7)
	KV_COMBINE(Z8, Z10)
	KV_COMBINE(Z9, Z11)
	KV_COMBINE(Z12, Z14)
	KV_COMBINE(Z13, Z15)
	MOVQ R12, BX
	SHLQ $7, BX
	MOVQ o+0(FP), CX
	MOVQ 0(CX), AX
	VMOVUPS (AX)(BX*1), Z2
	VMOVUPS 64(AX)(BX*1), Z3
	MOVQ 8(CX), AX
	VMOVUPS (AX)(BX*1), Z6
	VMOVUPS 64(AX)(BX*1), Z7
	MOVQ 16(CX), AX
	VMOVUPS (AX)(BX*1), Z10
	VMOVUPS 64(AX)(BX*1), Z11
	MOVQ 24(CX), AX
	VMOVUPS (AX)(BX*1), Z14
	VMOVUPS 64(AX)(BX*1), Z15
	MOVQ R12, AX
	SHLQ $4, AX
	VFMADD231PS.BCST 64(SP)(AX*1), Z0, Z2
	VFMADD231PS.BCST 64(SP)(AX*1), Z1, Z3
	VFMADD231PS.BCST 68(SP)(AX*1), Z4, Z6
	VFMADD231PS.BCST 68(SP)(AX*1), Z5, Z7
	VFMADD231PS.BCST 72(SP)(AX*1), Z8, Z10
	VFMADD231PS.BCST 72(SP)(AX*1), Z9, Z11
	VFMADD231PS.BCST 76(SP)(AX*1), Z12, Z14
	VFMADD231PS.BCST 76(SP)(AX*1), Z13, Z15
	MOVQ 0(CX), AX
	VMOVUPS Z2, (AX)(BX*1)
	VMOVUPS Z3, 64(AX)(BX*1)
	MOVQ 8(CX), AX
	VMOVUPS Z6, (AX)(BX*1)
	VMOVUPS Z7, 64(AX)(BX*1)
	MOVQ 16(CX), AX
	VMOVUPS Z10, (AX)(BX*1)
	VMOVUPS Z11, 64(AX)(BX*1)
	MOVQ 24(CX), AX
	VMOVUPS Z14, (AX)(BX*1)
	VMOVUPS Z15, 64(AX)(BX*1)
	INCQ R12
	CMPQ R12, nb+40(FP)
	JLT kvblk
	VZEROUPPER
	RET
