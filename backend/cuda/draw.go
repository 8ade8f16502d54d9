package cuda

import (
	"fmt"
	"math"

	"github.com/ringo-ai/ringo/backend"
)

// drawBlocks and drawThreads are DRAW_NB and DRAW_T of kernels.cu: the
// blocks of columns per row of k_draw_max and k_draw_sum, and the threads
// of the three draw kernels.
const (
	drawBlocks  = 128
	drawThreads = 256
)

// Draws implements backend.Drawer (RINGO_CUDA_DRAW=0 turns it off).
func (b *Backend) Draws() bool { return b.drawOn }

// DrawTokens implements backend.Drawer with k_draw_max, k_draw_sum and
// k_draw_pick (see kernels.cu), reading back only the tokens, after the
// step's other work (in its graph).
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
	for _, d := range draws {
		if !(d.InvTemp >= 0) || !(d.U >= 0 && d.U < 1) {
			panic(fmt.Sprintf("cuda.DrawTokens: 1/temperature %g, uniform number %g", d.InvTemp, d.U))
		}
	}
	prm := b.drawPrm[:0]
	for _, d := range draws {
		prm = append(prm, int64(math.Float64bits(d.U)), int64(math.Float32bits(d.InvTemp)))
	}
	b.drawPrm = prm
	pp := b.stageI64(prm)
	px, po := b.ptr("DrawTokens", logits), b.ptr("DrawTokens", out)
	// per row and block: the largest value (float), its column (int), the
	// sum of weights (double)
	s := b.scratch(16 * drawBlocks * R)
	pm, pi, ps := s.p, s.p+uintptr(4*drawBlocks*R), s.p+uintptr(8*drawBlocks*R)
	b.launch("k_draw_max", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), lArg(logits.Stride), iArg(V), pArg(pp), pArg(pm), pArg(pi))
	b.launch("k_draw_sum", dim3{drawBlocks, R, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), lArg(logits.Stride), iArg(V), pArg(pp), pArg(pm), pArg(ps))
	b.launch("k_draw_pick", dim3{R, 1, 1}, dim3{drawThreads, 1, 1}, 0, pArg(px), lArg(logits.Stride), iArg(V), pArg(pp), pArg(pm), pArg(pi), pArg(ps), pArg(po))
	b.release(s)
}
