package cuda

import (
	"fmt"
	"math"

	"github.com/ringo-ai/ringo/backend"
)

// drawBlocks, drawThreads, drawCap, drawBins and drawSelThreads are
// DRAW_NB, DRAW_T, DRAW_CAP, DRAW_HB and DRAW_SEL_T of kernels.cu: the
// blocks of columns per row of the draw kernels, their threads, the most
// candidates of a sorted filtered draw, the bins of the selection's first
// digit and k_draw_sel's threads per block.
const (
	drawBlocks     = 128
	drawThreads    = 256
	drawCap        = 2048
	drawBins       = 2048
	drawSelThreads = 1024
	drawSelCluster = 8 // DRAW_SEL_CL: k_draw_sel's blocks per row
)

// Draws implements backend.Drawer (RINGO_CUDA_DRAW=0 turns it off).
func (b *Backend) Draws() bool { return b.drawOn }

// DrawTokens implements backend.Drawer with k_draw_max, k_draw_sum and
// k_draw_pick, and for draws with filters k_draw_kcut, k_draw_cand and
// k_draw_sorted (see kernels.cu), reading back only the tokens, after the
// step's other work (in its graph). Top-p and min-p draws without top-k
// that k_draw_sorted cannot hold (more than drawCap candidates, or top-p
// over every token: its candidates within 1e-4 of the most likely token
// weigh less than top-p, as with flat logits) are made by a radix
// selection instead (k_draw_selp, k_draw_sel; sm_90 and later). It
// declines (-1) only a top-k draw with more than drawCap candidates or with
// fewer than k tokens within 30 of the largest scaled logit (and before
// sm_90 the draws the selection would make).
func (b *Backend) DrawTokens(dst []int32, logits backend.Tensor, draws []backend.Draw) {
	R := logits.Rows
	if len(dst) < R || len(draws) < R {
		panic(fmt.Sprintf("cuda.DrawTokens: %d logit rows, room for %d tokens, %d draws", R, len(dst), len(draws)))
	}
	if R == 0 {
		return
	}
	out := b.Alloc(1, R) // the tokens, as int32 bits
	b.drawLaunch(out, logits, draws[:R])
	buf := b.drawOut
	if cap(buf) < R {
		buf = make([]float32, R)
		b.drawOut = buf
	}
	buf = buf[:R]
	b.Read(out, buf)
	b.Free(out)
	for i, v := range buf {
		dst[i] = int32(math.Float32bits(v))
	}
}

// drawLaunch queues the draw kernels of logits' rows into out.
func (b *Backend) drawLaunch(out, logits backend.Tensor, draws []backend.Draw) {
	defer b.enter()()
	R, V := logits.Rows, logits.Cols
	prm := b.drawPrm[:0]
	filtered, sel := false, false
	for _, d := range draws {
		if !(d.InvTemp >= 0) || !(d.U >= 0 && d.U < 1) || d.TopK < 0 || !(d.TopP >= 0 && d.TopP <= 1) || !(d.MinP >= 0 && d.MinP <= 1) {
			panic(fmt.Sprintf("cuda.DrawTokens: draw %+v", d))
		}
		if int(d.TopK) >= V {
			d.TopK = 0 // (sample keeps every token)
		}
		if d.TopP >= 1 {
			d.TopP = 0
		}
		eps := 1e-4 // sample's candidates: within min-p, or 1e-4, of the most likely token
		if d.MinP > 0 {
			eps = float64(d.MinP)
		}
		lcut := float32(math.Log(eps))
		filtered = filtered || d.InvTemp > 0 && (d.TopK > 0 || d.TopP > 0 || d.MinP > 0)
		// (k_draw_sel's cluster needs sm_90; older GPUs leave those draws to the host)
		sel = sel || b.ccMaj >= 9 && d.InvTemp > 0 && d.TopK == 0 && (d.TopP > 0 || d.MinP > 0)
		prm = append(prm, int64(math.Float64bits(d.U)), int64(uint64(math.Float32bits(d.InvTemp))|uint64(math.Float32bits(lcut))<<32),
			int64(uint64(uint32(d.TopK))|uint64(math.Float32bits(d.TopP))<<32), int64(math.Float32bits(d.MinP)))
	}
	b.drawPrm = prm
	pp := b.stageI64(prm)
	px, po := b.ptr("DrawTokens", logits), b.ptr("DrawTokens", out)
	// per row and block: the largest value (float), its column (int), the
	// sums of weights (double: all, the filtered candidates'), the top-k
	// histogram (256 ints); per row the filtered draw's state (4 ints) and
	// candidates (drawCap keys)
	nb := drawBlocks * R
	s := b.scratch(4*nb + 4*nb + 8*nb + 8*nb + 4*256*nb + 16*R + 8*drawCap*R)
	pm := s.p
	pi := pm + uintptr(4*nb)
	ps := pi + uintptr(4*nb)
	pmass := ps + uintptr(8*nb)
	ph := pmass + uintptr(8*nb)
	st := ph + uintptr(4*256*nb)
	cand := st + uintptr(16*R)
	// the selection's first histogram (drawBins per row) and weights (V per
	// row), both 64-bit, when a draw may need them
	var sq scratch
	var ph1, pq uintptr
	if sel {
		sq = b.scratch(8*drawBins*R + 8*V*R)
		ph1 = sq.p
		pq = ph1 + uintptr(8*drawBins*R)
	}
	// (the arguments written out: a slice built per call would be an
	// allocation per token)
	ld := lArg(logits.Stride)
	b.launch("k_draw_max", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(pm), pArg(pi))
	b.launch("k_draw_sum", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(pm), pArg(ps), pArg(pmass), pArg(ph))
	if filtered {
		b.launch("k_draw_kcut", dim3{R, 1, 1}, dim3{drawThreads, 1, 1}, 0, pArg(pp), pArg(pm), pArg(ps), pArg(pmass), pArg(ph), pArg(st), pArg(ph1))
		b.launch("k_draw_cand", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(st), pArg(cand))
	}
	if sel {
		b.launch("k_draw_selp", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(st), pArg(pq), pArg(ph1))
	}
	b.launch("k_draw_pick", dim3{R, 1, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(pm), pArg(pi), pArg(ps), pArg(po))
	if filtered {
		b.launch("k_draw_sorted", dim3{R, 1, 1}, dim3{1024, 1, 1}, 0, pArg(px), ld, pArg(pp), pArg(ps), pArg(st), pArg(cand), pArg(po))
	}
	if sel {
		b.launch("k_draw_sel", dim3{drawSelCluster, R, 1}, dim3{drawSelThreads, 1, 1}, 0, pArg(px), ld, iArg(V), pArg(pp), pArg(ps), pArg(st), pArg(pq), pArg(ph1), pArg(po))
		b.release(s, sq)
		return
	}
	b.release(s)
}
