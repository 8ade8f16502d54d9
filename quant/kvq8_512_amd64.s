//go:build amd64 && !purego

#include "textflag.h"

// AVX-512 (F, BW, VL, VNNI) versions of the Q8_0 KV-cache kernels of
// kvq8_amd64.s. See kvq8_512_amd64.go for the Go side.

// KV512_LOADO / KV512_STOREO: the output columns at byte offset R12 of
// row ptroff(o) (o in AX) into/from c0..c3 (64 columns) or c0, c1 (32).
#define KV512_LOADO4(ptroff, c0, c1, c2, c3) \
	MOVQ ptroff(AX), R13 \
	VMOVUPS (R13)(R12*1), c0 \
	VMOVUPS 64(R13)(R12*1), c1 \
	VMOVUPS 128(R13)(R12*1), c2 \
	VMOVUPS 192(R13)(R12*1), c3

#define KV512_STOREO4(ptroff, c0, c1, c2, c3) \
	MOVQ ptroff(AX), R13 \
	VMOVUPS c0, (R13)(R12*1) \
	VMOVUPS c1, 64(R13)(R12*1) \
	VMOVUPS c2, 128(R13)(R12*1) \
	VMOVUPS c3, 192(R13)(R12*1)

#define KV512_LOADO2(ptroff, c0, c1) \
	MOVQ ptroff(AX), R13 \
	VMOVUPS (R13)(R12*1), c0 \
	VMOVUPS 64(R13)(R12*1), c1

#define KV512_STOREO2(ptroff, c0, c1) \
	MOVQ ptroff(AX), R13 \
	VMOVUPS c0, (R13)(R12*1) \
	VMOVUPS c1, 64(R13)(R12*1)

// KV512_ACC2: the first pass of accumQ8_0x4_512 (blocks 0 and 1, 64
// columns) over the c keys of a chunk at DI (+ j·DX): each value row's 64
// int8 converted and scaled once (Z16..Z19), times the weights p[r][j]
// (rows R8..R11, byte offset BX), added to Z0..Z15 (four registers per
// output row). Prefetches the value row 32 keys ahead into L1 (R13
// scratch).
#define KV512_ACC2(lbl) \
	MOVQ DI, SI \
	XORQ BX, BX \
	MOVQ c-16(SP), CX \
lbl: \
	MOVQ DX, R13 \
	SHLQ $5, R13 \
	ADDQ SI, R13 \
	PREFETCHT0 (R13) \
	PREFETCHT0 64(R13) \
	PREFETCHT0 128(R13) \
	VPMOVSXBD 2(SI), Z16 \
	VPMOVSXBD 18(SI), Z17 \
	VPMOVSXBD 36(SI), Z18 \
	VPMOVSXBD 52(SI), Z19 \
	VPBROADCASTW (SI), Y20 \
	VPBROADCASTW 34(SI), Y21 \
	VCVTDQ2PS Z16, Z16 \
	VCVTDQ2PS Z17, Z17 \
	VCVTDQ2PS Z18, Z18 \
	VCVTDQ2PS Z19, Z19 \
	VCVTPH2PS Y20, Z20 \
	VCVTPH2PS Y21, Z21 \
	VMULPS Z20, Z16, Z16 \
	VMULPS Z20, Z17, Z17 \
	VMULPS Z21, Z18, Z18 \
	VMULPS Z21, Z19, Z19 \
	VBROADCASTSS (R8)(BX*1), Z22 \
	VBROADCASTSS (R9)(BX*1), Z23 \
	VBROADCASTSS (R10)(BX*1), Z24 \
	VBROADCASTSS (R11)(BX*1), Z25 \
	VFMADD231PS Z22, Z16, Z0 \
	VFMADD231PS Z22, Z17, Z1 \
	VFMADD231PS Z22, Z18, Z2 \
	VFMADD231PS Z22, Z19, Z3 \
	VFMADD231PS Z23, Z16, Z4 \
	VFMADD231PS Z23, Z17, Z5 \
	VFMADD231PS Z23, Z18, Z6 \
	VFMADD231PS Z23, Z19, Z7 \
	VFMADD231PS Z24, Z16, Z8 \
	VFMADD231PS Z24, Z17, Z9 \
	VFMADD231PS Z24, Z18, Z10 \
	VFMADD231PS Z24, Z19, Z11 \
	VFMADD231PS Z25, Z16, Z12 \
	VFMADD231PS Z25, Z17, Z13 \
	VFMADD231PS Z25, Z18, Z14 \
	VFMADD231PS Z25, Z19, Z15 \
	ADDQ DX, SI \
	ADDQ $4, BX \
	DECQ CX \
	JNZ lbl

// KV512_ACC2P: KV512_ACC2 for rows of more than two blocks, also writing
// the weights p[r][j]·d_j,b of the later blocks b ≥ 2 for the later passes
// (W, see accumQ8_0x4_512; R13 the write pointer, AX and R12 scratch).
#define KV512_ACC2P(lbl, lw, lwone, lwdone) \
	MOVQ DI, SI \
	XORQ BX, BX \
	MOVQ c-16(SP), CX \
	MOVQ scr+48(FP), R13 \
lbl: \
	MOVQ DX, AX \
	SHLQ $5, AX \
	ADDQ SI, AX \
	PREFETCHT0 (AX) \
	PREFETCHT0 64(AX) \
	PREFETCHT0 128(AX) \
	VPMOVSXBD 2(SI), Z16 \
	VPMOVSXBD 18(SI), Z17 \
	VPMOVSXBD 36(SI), Z18 \
	VPMOVSXBD 52(SI), Z19 \
	VPBROADCASTW (SI), Y20 \
	VPBROADCASTW 34(SI), Y21 \
	VCVTDQ2PS Z16, Z16 \
	VCVTDQ2PS Z17, Z17 \
	VCVTDQ2PS Z18, Z18 \
	VCVTDQ2PS Z19, Z19 \
	VCVTPH2PS Y20, Z20 \
	VCVTPH2PS Y21, Z21 \
	VMULPS Z20, Z16, Z16 \
	VMULPS Z20, Z17, Z17 \
	VMULPS Z21, Z18, Z18 \
	VMULPS Z21, Z19, Z19 \
	VBROADCASTSS (R8)(BX*1), Z22 \
	VBROADCASTSS (R9)(BX*1), Z23 \
	VBROADCASTSS (R10)(BX*1), Z24 \
	VBROADCASTSS (R11)(BX*1), Z25 \
	VFMADD231PS Z22, Z16, Z0 \
	VFMADD231PS Z22, Z17, Z1 \
	VFMADD231PS Z22, Z18, Z2 \
	VFMADD231PS Z22, Z19, Z3 \
	VFMADD231PS Z23, Z16, Z4 \
	VFMADD231PS Z23, Z17, Z5 \
	VFMADD231PS Z23, Z18, Z6 \
	VFMADD231PS Z23, Z19, Z7 \
	VFMADD231PS Z24, Z16, Z8 \
	VFMADD231PS Z24, Z17, Z9 \
	VFMADD231PS Z24, Z18, Z10 \
	VFMADD231PS Z24, Z19, Z11 \
	VFMADD231PS Z25, Z16, Z12 \
	VFMADD231PS Z25, Z17, Z13 \
	VFMADD231PS Z25, Z18, Z14 \
	VFMADD231PS Z25, Z19, Z15 \
	VMOVAPS Y22, Y26 \
	VMOVAPS Y23, K2, Y26 \
	VMOVAPS Y24, K3, Y26 \
	VMOVAPS Y25, K4, Y26 \
	LEAQ 68(SI), AX \
	MOVQ nb+40(FP), R12 \
	SUBQ $2, R12 \
lw: \
	VPBROADCASTW (AX), X27 \
	CMPQ R12, $2 \
	JLT lwone \
	VPBROADCASTW 34(AX), K1, X27 \
	VCVTPH2PS X27, Y27 \
	VMULPS Y26, Y27, Y27 \
	VMOVUPS Y27, (R13) \
	ADDQ $68, AX \
	ADDQ $32, R13 \
	SUBQ $2, R12 \
	JNZ lw \
	JMP lwdone \
lwone: \
	VCVTPH2PS X27, Y27 \
	VMULPS Y26, Y27, Y27 \
	VMOVUPS Y27, (R13) \
	ADDQ $16, R13 \
lwdone: \
	ADDQ DX, SI \
	ADDQ $4, BX \
	DECQ CX \
	JNZ lbl

// KV512_ACC2W: a later pass of accumQ8_0x4_512 (blocks 2p, 2p+1 at DI,
// 64 columns at byte offset R12 = 256p): the values converted (Z16..Z19)
// times the precomputed weights (W), added to Z0..Z15.
#define KV512_ACC2W(lbl) \
	MOVQ DI, SI \
	MOVQ R12, BX \
	SHRQ $3, BX \
	ADDQ scr+48(FP), BX \
	SUBQ $32, BX \
	MOVQ wstr-24(SP), R13 \
	MOVQ c-16(SP), CX \
lbl: \
	VPMOVSXBD 2(SI), Z16 \
	VPMOVSXBD 18(SI), Z17 \
	VPMOVSXBD 36(SI), Z18 \
	VPMOVSXBD 52(SI), Z19 \
	VCVTDQ2PS Z16, Z16 \
	VCVTDQ2PS Z17, Z17 \
	VCVTDQ2PS Z18, Z18 \
	VCVTDQ2PS Z19, Z19 \
	VBROADCASTSS 0(BX), Z20 \
	VBROADCASTSS 4(BX), Z21 \
	VBROADCASTSS 8(BX), Z22 \
	VBROADCASTSS 12(BX), Z23 \
	VBROADCASTSS 16(BX), Z24 \
	VBROADCASTSS 20(BX), Z25 \
	VBROADCASTSS 24(BX), Z26 \
	VBROADCASTSS 28(BX), Z27 \
	VFMADD231PS Z20, Z16, Z0 \
	VFMADD231PS Z20, Z17, Z1 \
	VFMADD231PS Z24, Z18, Z2 \
	VFMADD231PS Z24, Z19, Z3 \
	VFMADD231PS Z21, Z16, Z4 \
	VFMADD231PS Z21, Z17, Z5 \
	VFMADD231PS Z25, Z18, Z6 \
	VFMADD231PS Z25, Z19, Z7 \
	VFMADD231PS Z22, Z16, Z8 \
	VFMADD231PS Z22, Z17, Z9 \
	VFMADD231PS Z26, Z18, Z10 \
	VFMADD231PS Z26, Z19, Z11 \
	VFMADD231PS Z23, Z16, Z12 \
	VFMADD231PS Z23, Z17, Z13 \
	VFMADD231PS Z27, Z18, Z14 \
	VFMADD231PS Z27, Z19, Z15 \
	ADDQ DX, SI \
	ADDQ R13, BX \
	DECQ CX \
	JNZ lbl

// KV512_ACC1W: KV512_ACC2W for the 32 columns of a lone last block, into
// Z0..Z7 (two registers per output row).
#define KV512_ACC1W(lbl) \
	MOVQ DI, SI \
	MOVQ R12, BX \
	SHRQ $3, BX \
	ADDQ scr+48(FP), BX \
	SUBQ $32, BX \
	MOVQ wstr-24(SP), R13 \
	MOVQ c-16(SP), CX \
lbl: \
	VPMOVSXBD 2(SI), Z16 \
	VPMOVSXBD 18(SI), Z17 \
	VCVTDQ2PS Z16, Z16 \
	VCVTDQ2PS Z17, Z17 \
	VBROADCASTSS 0(BX), Z20 \
	VBROADCASTSS 4(BX), Z21 \
	VBROADCASTSS 8(BX), Z22 \
	VBROADCASTSS 12(BX), Z23 \
	VFMADD231PS Z20, Z16, Z0 \
	VFMADD231PS Z20, Z17, Z1 \
	VFMADD231PS Z21, Z16, Z2 \
	VFMADD231PS Z21, Z17, Z3 \
	VFMADD231PS Z22, Z16, Z4 \
	VFMADD231PS Z22, Z17, Z5 \
	VFMADD231PS Z23, Z16, Z6 \
	VFMADD231PS Z23, Z17, Z7 \
	ADDQ DX, SI \
	ADDQ R13, BX \
	DECQ CX \
	JNZ lbl

// KV512_ACC1: the only pass of accumQ8_0x4_512 for rows of one block (32
// columns, values scaled as in KV512_ACC2), into Z0..Z7.
#define KV512_ACC1(lbl) \
	MOVQ DI, SI \
	XORQ BX, BX \
	MOVQ c-16(SP), CX \
lbl: \
	MOVQ DX, R13 \
	SHLQ $5, R13 \
	ADDQ SI, R13 \
	PREFETCHT0 (R13) \
	PREFETCHT0 64(R13) \
	PREFETCHT0 128(R13) \
	VPMOVSXBD 2(SI), Z16 \
	VPMOVSXBD 18(SI), Z17 \
	VPBROADCASTW (SI), Y20 \
	VCVTDQ2PS Z16, Z16 \
	VCVTDQ2PS Z17, Z17 \
	VCVTPH2PS Y20, Z20 \
	VMULPS Z20, Z16, Z16 \
	VMULPS Z20, Z17, Z17 \
	VBROADCASTSS (R8)(BX*1), Z22 \
	VBROADCASTSS (R9)(BX*1), Z23 \
	VBROADCASTSS (R10)(BX*1), Z24 \
	VBROADCASTSS (R11)(BX*1), Z25 \
	VFMADD231PS Z22, Z16, Z0 \
	VFMADD231PS Z22, Z17, Z1 \
	VFMADD231PS Z23, Z16, Z2 \
	VFMADD231PS Z23, Z17, Z3 \
	VFMADD231PS Z24, Z16, Z4 \
	VFMADD231PS Z24, Z17, Z5 \
	VFMADD231PS Z25, Z16, Z6 \
	VFMADD231PS Z25, Z17, Z7 \
	ADDQ DX, SI \
	ADDQ $4, BX \
	DECQ CX \
	JNZ lbl

// KV512_PAIR: one pair of key blocks in dotQ8_0x4n512 (pair offset AX in
// the work area DI). Z0 holds the pair's 64 int8 (upper half zero for a
// lone last block), Y1 its two float16 scales (8 copies each). The key
// bytes are made unsigned (k+128 = k XOR 0x80, Z30) for VPDPBUSD and
// rotated within each 128-bit lane by 0..3 dwords; each rotation meets the
// query rows arranged so that dword i of a lane belongs to row i, so four
// VPDPBUSD into one register sum, in each lane, the 16 bytes of all four
// rows: [row0 row1 row2 row3]. The register starts at the pair's
// correction (−128·Σq per lane and row); the sums are scaled by key ×
// query scales and accumulated into acc.
#define KV512_PAIR(acc) \
	VPXORD Z30, Z0, Z0 \
	VPSHUFD $0x39, Z0, Z3 \
	VPSHUFD $0x4E, Z0, Z4 \
	VPSHUFD $0x93, Z0, Z5 \
	VMOVDQU32 256(DI)(AX*1), Z2 \
	VPDPBUSD (DI)(AX*1), Z0, Z2 \
	VPDPBUSD 64(DI)(AX*1), Z3, Z2 \
	VPDPBUSD 128(DI)(AX*1), Z4, Z2 \
	VPDPBUSD 192(DI)(AX*1), Z5, Z2 \
	VCVTPH2PS Y1, Z1 \
	VMULPS 320(DI)(AX*1), Z1, Z1 \
	VCVTDQ2PS Z2, Z2 \
	VFMADD231PS Z1, Z2, acc

// KV512_QLOAD(xoff, Z): Z = the next pair of query blocks of row xoff(x)
// at byte DX (SI: x), a lone last block (R11 < 2) padded with zeros.
#define KV512_QLOAD(xoff, Z, lone) \
	MOVQ xoff(SI), R12 \
	VMOVDQU 4(R12)(DX*1), Y0 \
	VMOVDQU64 Z0, Z \
	CMPQ R11, $2 \
	JLT lone \
	VINSERTI64X4 $1, 40(R12)(DX*1), Z, Z \
lone:

// KV512_QROT(imm, off): the query pair rotated for key rotation imm
// (VPSHUFD): dword i of each lane from row i (Z10..Z13), stored at off(BX);
// adds 128 times its bytes' sums per lane to Z15.
#define KV512_QROT(imm, off) \
	VPSHUFD imm, Z10, Z14 \
	VPSHUFD imm, Z11, K2, Z14 \
	VPSHUFD imm, Z12, K3, Z14 \
	VPSHUFD imm, Z13, K4, Z14 \
	VMOVDQU64 Z14, off(BX) \
	VPDPBUSD Z14, Z30, Z15

// KV512_QSCALES(off, X): X = the four query rows' float32 scales at byte
// off+DX of each row (SI: x).
#define KV512_QSCALES(off, X) \
	MOVQ 0(SI), R12 \
	VMOVSS off(R12)(DX*1), X \
	MOVQ 8(SI), R12 \
	VINSERTPS $0x10, off(R12)(DX*1), X, X \
	MOVQ 16(SI), R12 \
	VINSERTPS $0x20, off(R12)(DX*1), X, X \
	MOVQ 24(SI), R12 \
	VINSERTPS $0x30, off(R12)(DX*1), X, X

// KV512_KEY(t, acc, ...): the scores of key t of the group at SI (keys
// ≥ CX repeat key CX−1) for the four rows, per lane, into acc (the four
// lanes' sums are the scores). Also prefetches the key 32 rows ahead into L1
// and the next row of pf (R8) into L2.
#define KV512_KEY(t, acc, lpair, lone, lsum) \
	MOVQ $t, R9 \
	LEAQ -1(CX), R10 \
	CMPQ R9, R10 \
	CMOVQGT R10, R9 \
	IMULQ DX, R9 \
	LEAQ (SI)(R9*1), BX \
	MOVQ DX, R9 \
	SHLQ $5, R9 \
	ADDQ BX, R9 \
	PREFETCHT0 (R9) \
	PREFETCHT0 64(R9) \
	PREFETCHT0 128(R9) \
	PREFETCHT1 (R8) \
	PREFETCHT1 64(R8) \
	PREFETCHT1 128(R8) \
	ADDQ DX, R8 \
	VPXORD acc, acc, acc \
	XORQ AX, AX \
	MOVQ nb+64(FP), R11 \
lpair: \
	CMPQ R11, $2 \
	JLT lone \
	VMOVDQU 2(BX), Y0 \
	VINSERTI64X4 $1, 36(BX), Z0, Z0 \
	VPBROADCASTW (BX), Y1 \
	VPBROADCASTW 34(BX), K1, Y1 \
	KV512_PAIR(acc) \
	ADDQ $68, BX \
	ADDQ $384, AX \
	SUBQ $2, R11 \
	JNZ lpair \
	JMP lsum \
lone: \
	VMOVDQU 2(BX), Y0 \
	VPBROADCASTW (BX), Y1 \
	KV512_PAIR(acc) \
lsum:

// func dotQ8_0x4n512(out *float32, ldo, mr int, x *[4]*byte, scr *byte, w *byte, ldw, n, nb int, pf *byte)
// Scores of four query rows x[0..3] (nb blocks of the Q8 activation
// format) against n key rows of nb Q8_0 blocks (w, w+ldw, ...):
// out[r*ldo + j] = x_r · w_j for r < mr (ldo in floats), like
// dotQ8_0x4nAVX2. scr is a 64-byte aligned work area of 384·⌈nb/2⌉ bytes.
//
// The queries are first repacked into scr, 384 bytes per pair of blocks:
// the four rotations of KV512_PAIR (64 bytes each), the correction (16
// int32) and the query scales (16 float32), in the lane order of
// KV512_PAIR: lanes 0-1 the pair's first block, lanes 2-3 its second, each
// lane [row0 row1 row2 row3].
//
// Per key, each pair of blocks is one 512-bit key vector (two 32-byte
// loads, the blocks being 34 bytes apart), three in-lane rotations and
// four VPDPBUSD; the four rows' 16 sums are converted and scaled with one
// FMA. Groups of four keys share the final reductions and are stored as
// 16-byte pieces of the four output rows (masked for the last keys). Before
// key j the kernel prefetches key j+32 into L1 and row j of pf into L2. n, nb > 0, nb ≤ 16, 1 ≤ mr ≤ 4.
TEXT ·dotQ8_0x4n512(SB), NOSPLIT, $0-80
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z30
	VPXORD Z31, Z31, Z31
	MOVL $0xFF00, AX
	KMOVW AX, K1
	MOVL $0x2222, AX
	KMOVW AX, K2
	MOVL $0x4444, AX
	KMOVW AX, K3
	MOVL $0x8888, AX
	KMOVW AX, K4

	// repack the queries, pair by pair
	MOVQ x+24(FP), SI
	MOVQ scr+32(FP), BX
	XORQ DX, DX
	MOVQ nb+64(FP), R11

prep:
	KV512_QLOAD(0, Z10, q0one)
	KV512_QLOAD(8, Z11, q1one)
	KV512_QLOAD(16, Z12, q2one)
	KV512_QLOAD(24, Z13, q3one)
	VPXORD Z15, Z15, Z15
	KV512_QROT($0xE4, 0)
	KV512_QROT($0x39, 64)
	KV512_QROT($0x4E, 128)
	KV512_QROT($0x93, 192)
	VPSUBD Z15, Z31, Z15
	VMOVDQU32 Z15, 256(BX)
	KV512_QSCALES(0, X1)
	VXORPS X2, X2, X2
	CMPQ R11, $2
	JLT prepone
	KV512_QSCALES(36, X2)

prepone:
	VINSERTF128 $1, X1, Y1, Y1
	VINSERTF128 $1, X2, Y2, Y2
	VINSERTF64X4 $1, Y2, Z1, Z1
	VMOVUPS Z1, 320(BX)
	ADDQ $72, DX
	ADDQ $384, BX
	SUBQ $2, R11
	JGT prep

	MOVQ scr+32(FP), DI
	MOVQ w+40(FP), SI
	MOVQ ldw+48(FP), DX
	MOVQ out+0(FP), R12
	MOVQ ldo+8(FP), R13
	SHLQ $2, R13
	MOVQ n+56(FP), CX
	MOVQ pf+72(FP), R8
	VMOVDQU32 kv512perm<>(SB), Z29
	MOVL $15, AX
	KMOVW AX, K5

kvgroup:
	CMPQ CX, $4
	JGE kvfull
	// last keys: mask the stores; keys past n repeat the last one
	MOVL $1, AX
	SHLL CX, AX
	DECL AX
	KMOVW AX, K5

kvfull:
	KV512_KEY(0, Z8, k0pair, k0one, k0sum)
	KV512_KEY(1, Z9, k1pair, k1one, k1sum)
	KV512_KEY(2, Z10, k2pair, k2one, k2sum)
	KV512_KEY(3, Z11, k3pair, k3one, k3sum)
	// lanes of Z8..Z11 to [key0 key1 key2 key3] (each [row0..row3]), then
	// to [row0 row1 row2 row3] (each [key0..key3])
	VSHUFF32X4 $0x88, Z9, Z8, Z12
	VSHUFF32X4 $0xDD, Z9, Z8, Z13
	VADDPS Z13, Z12, Z12
	VSHUFF32X4 $0x88, Z11, Z10, Z13
	VSHUFF32X4 $0xDD, Z11, Z10, Z14
	VADDPS Z14, Z13, Z13
	VSHUFF32X4 $0x88, Z13, Z12, Z14
	VSHUFF32X4 $0xDD, Z13, Z12, Z15
	VADDPS Z15, Z14, Z14
	VPERMPS Z14, Z29, Z14
	MOVQ R12, BX
	VMOVUPS X14, K5, (BX)
	CMPQ mr+16(FP), $1
	JEQ kvnext
	ADDQ R13, BX
	VEXTRACTF32X4 $1, Z14, K5, (BX)
	CMPQ mr+16(FP), $2
	JEQ kvnext
	ADDQ R13, BX
	VEXTRACTF32X4 $2, Z14, K5, (BX)
	CMPQ mr+16(FP), $3
	JEQ kvnext
	ADDQ R13, BX
	VEXTRACTF32X4 $3, Z14, K5, (BX)

kvnext:
	ADDQ $16, R12
	LEAQ (SI)(DX*4), SI
	SUBQ $4, CX
	JGT kvgroup
	VZEROUPPER
	RET

// output order of the four-key scores (see dotQ8_0x4n512)
DATA kv512perm<>+0(SB)/4, $0
DATA kv512perm<>+4(SB)/4, $4
DATA kv512perm<>+8(SB)/4, $8
DATA kv512perm<>+12(SB)/4, $12
DATA kv512perm<>+16(SB)/4, $1
DATA kv512perm<>+20(SB)/4, $5
DATA kv512perm<>+24(SB)/4, $9
DATA kv512perm<>+28(SB)/4, $13
DATA kv512perm<>+32(SB)/4, $2
DATA kv512perm<>+36(SB)/4, $6
DATA kv512perm<>+40(SB)/4, $10
DATA kv512perm<>+44(SB)/4, $14
DATA kv512perm<>+48(SB)/4, $3
DATA kv512perm<>+52(SB)/4, $7
DATA kv512perm<>+56(SB)/4, $11
DATA kv512perm<>+60(SB)/4, $15
GLOBL kv512perm<>(SB), RODATA|NOPTR, $64

// func accumQ8_0x4_512(o, p *[4]*float32, v *byte, ldv, n, nb int, scr *float32)
// For r < 4, c < 32·nb: o[r][c] += Σ_{j<n} p[r][j] · d_j,b · q_j[c], like
// accumQ8_0x4AVX2. The keys are done in chunks of up to 32, each in passes
// of 64 output columns (16 accumulators for the four rows; 32 for a lone
// last block) over the chunk's value rows, so that every converted value
// is used by all four output rows. The first pass (blocks 0 and 1) scales
// the values by their block's scale; it also writes the weights
// W[jj][b-2][r] = p[r][j]·d_j,b of the other blocks (scr, 16·(nb-2) bytes
// per key, +16 bytes of slack), one multiplication per pair of blocks, so
// that the later passes need no multiplications besides their FMAs. The
// first pass prefetches the value rows 32 keys ahead (for callers that do
// not prefetch them already). n > 0, 0 < nb ≤ 16.
TEXT ·accumQ8_0x4_512(SB), NOSPLIT, $32-56
	MOVL $0xF0, AX
	KMOVW AX, K1
	MOVL $0x22, AX
	KMOVW AX, K2
	MOVL $0x44, AX
	KMOVW AX, K3
	MOVL $0x88, AX
	KMOVW AX, K4
	MOVQ p+8(FP), AX
	MOVQ 0(AX), R8
	MOVQ 8(AX), R9
	MOVQ 16(AX), R10
	MOVQ 24(AX), R11
	MOVQ v+16(FP), DI
	MOVQ DI, vbase-8(SP)
	MOVQ ldv+24(FP), DX
	MOVQ nb+40(FP), AX
	SUBQ $2, AX
	SHLQ $4, AX
	MOVQ AX, wstr-24(SP)

accchunk:
	MOVQ n+32(FP), CX
	CMPQ CX, $32
	JLE accc
	MOVQ $32, CX

accc:
	MOVQ CX, c-16(SP)
	MOVQ o+0(FP), AX
	MOVQ vbase-8(SP), DI
	XORQ R12, R12
	CMPQ nb+40(FP), $2
	JLT accnb1
	KV512_LOADO4(0, Z0, Z1, Z2, Z3)
	KV512_LOADO4(8, Z4, Z5, Z6, Z7)
	KV512_LOADO4(16, Z8, Z9, Z10, Z11)
	KV512_LOADO4(24, Z12, Z13, Z14, Z15)
	CMPQ nb+40(FP), $2
	JEQ accnb2
	KV512_ACC2P(accp0, accw, accwone, accwdone)
	JMP accp0done

accnb2:
	KV512_ACC2(accp0nb2)

accp0done:
	MOVQ o+0(FP), AX
	XORQ R12, R12
	KV512_STOREO4(0, Z0, Z1, Z2, Z3)
	KV512_STOREO4(8, Z4, Z5, Z6, Z7)
	KV512_STOREO4(16, Z8, Z9, Z10, Z11)
	KV512_STOREO4(24, Z12, Z13, Z14, Z15)
	MOVQ $256, R12
	ADDQ $68, DI
	MOVQ nb+40(FP), CX
	SUBQ $2, CX
	JEQ accnext
	MOVQ CX, nbl-32(SP)

accpair:
	CMPQ nbl-32(SP), $2
	JLT accone
	KV512_LOADO4(0, Z0, Z1, Z2, Z3)
	KV512_LOADO4(8, Z4, Z5, Z6, Z7)
	KV512_LOADO4(16, Z8, Z9, Z10, Z11)
	KV512_LOADO4(24, Z12, Z13, Z14, Z15)
	KV512_ACC2W(acc2wloop)
	KV512_STOREO4(0, Z0, Z1, Z2, Z3)
	KV512_STOREO4(8, Z4, Z5, Z6, Z7)
	KV512_STOREO4(16, Z8, Z9, Z10, Z11)
	KV512_STOREO4(24, Z12, Z13, Z14, Z15)
	ADDQ $256, R12
	ADDQ $68, DI
	SUBQ $2, nbl-32(SP)
	JNZ accpair
	JMP accnext

accone:
	KV512_LOADO2(0, Z0, Z1)
	KV512_LOADO2(8, Z2, Z3)
	KV512_LOADO2(16, Z4, Z5)
	KV512_LOADO2(24, Z6, Z7)
	KV512_ACC1W(acc1wloop)
	KV512_STOREO2(0, Z0, Z1)
	KV512_STOREO2(8, Z2, Z3)
	KV512_STOREO2(16, Z4, Z5)
	KV512_STOREO2(24, Z6, Z7)
	JMP accnext

accnb1:
	KV512_LOADO2(0, Z0, Z1)
	KV512_LOADO2(8, Z2, Z3)
	KV512_LOADO2(16, Z4, Z5)
	KV512_LOADO2(24, Z6, Z7)
	KV512_ACC1(acc1loop)
	KV512_STOREO2(0, Z0, Z1)
	KV512_STOREO2(8, Z2, Z3)
	KV512_STOREO2(16, Z4, Z5)
	KV512_STOREO2(24, Z6, Z7)

accnext:
	MOVQ c-16(SP), CX
	SUBQ CX, n+32(FP)
	JEQ accdone
	LEAQ (R8)(CX*4), R8
	LEAQ (R9)(CX*4), R9
	LEAQ (R10)(CX*4), R10
	LEAQ (R11)(CX*4), R11
	IMULQ DX, CX
	ADDQ CX, vbase-8(SP)
	JMP accchunk

accdone:
	VZEROUPPER
	RET
