package cuda

import (
	"fmt"
	"strings"

	"github.com/ringo-ai/ringo/backend"
)

// Norms fused into the single-row GEMVs around them (decode at batch 1).
//
// A step's residual update x += a; h = RMSNorm(x) (AddRMSNorm) costs a kernel
// of its own, ~4 µs of a ~1.6 ms Ring-mini step, 39 times. When the kernel
// that produced a is the last command queued (a single-row GEMV or the MoE
// down projection, which own each output element), AddRMSNorm instead sets
// that command's residual argument R, so that it stores a[n] and adds it
// to x[n], and leaves the norm pending. If the next operation is a
// single-row GEMV of h, the norm runs in that GEMV's prologue (every block
// normalises the row into shared memory, block 0 also stores h), else the
// pending norm is queued as k_rmsnorm before any other command (record and
// flush do that), so x and h hold what AddRMSNorm would have stored before
// anything can read them. NormGateMatMul puts the lightning layers' grouped
// norm and sigmoid gate into the prologue of their output projection the
// same way, and NormRoPELightning the QK norm and RoPE into the recurrent
// lightning kernel. RINGO_CUDA_FUSE selects them (parseFuse).

// fuseSet is a set of the fusions above.
type fuseSet uint8

const (
	fuseAdd  fuseSet = 1 << iota // AddRMSNorm into the GEMVs around it
	fuseGate                     // NormGateMatMul
	fuseRope                     // NormRoPELightning
	fuseAll  = fuseAdd | fuseGate | fuseRope
)

// parseFuse reads RINGO_CUDA_FUSE: "" for the default (rope: the others
// made decode slower, see docs/GPU.md), "all" for every fusion, "0" or
// "none" for none, else a comma-separated list of add, gate and rope.
func parseFuse(v string) fuseSet {
	switch v {
	case "":
		return fuseRope
	case "all", "1":
		return fuseAll
	case "0", "none":
		return 0
	}
	var f fuseSet
	for _, name := range strings.Split(v, ",") {
		switch strings.TrimSpace(name) {
		case "add":
			f |= fuseAdd
		case "gate":
			f |= fuseGate
		case "rope":
			f |= fuseRope
		}
	}
	return f
}

// maxFuseK bounds the rows normalised in a GEMV prologue (dynamic shared
// memory of 4·K bytes).
const maxFuseK = 8192

// normFusion tracks the last queued producer and a pending norm.
type normFusion struct {
	// the last queued single-row producer: the index in b.queue of its
	// residual argument word, its output address and width, and the queue
	// length after it (-1: none)
	prodArg, prodN, prodEnd int
	prodOut                 uintptr
	// pending: h = RMSNorm(x)·w over cols values, not yet queued
	pend    bool
	h, x, w uintptr
	cols    int
	eps     float32
}

// markProducer records that the command just queued (its first argument at
// index first in b.queue, launch's result) writes N values at out and adds
// them to a residual row when its argument word number r is set.
func (b *Backend) markProducer(first, r int, out uintptr, N int) {
	if first < 0 {
		b.nf.prodEnd = -1
		return
	}
	b.nf.prodArg, b.nf.prodN, b.nf.prodOut, b.nf.prodEnd = first+r, N, out, len(b.queue)
}

// deferAddNorm fuses x += a into the producer of a and leaves h = RMSNorm(x)·w
// pending, if it can (see above).
func (b *Backend) deferAddNorm(ph, px, pa uintptr, cols int, w *weight, eps float32) bool {
	nf := &b.nf
	if b.fuse&fuseAdd == 0 || nf.prodEnd != len(b.queue) || nf.prodOut != pa || nf.prodN != cols || cols > maxFuseK {
		return false
	}
	b.queue[nf.prodArg] = pArg(px)
	nf.prodEnd = -1
	nf.pend, nf.h, nf.x, nf.w, nf.cols, nf.eps = true, ph, px, w.p, cols, eps
	return true
}

// emitPending queues a pending norm as k_rmsnorm (x already holds x + a).
func (b *Backend) emitPending() {
	nf := &b.nf
	if !nf.pend {
		return
	}
	nf.pend = false
	b.launch("k_rmsnorm", dim3{1, 1, 1}, dim3{blockFor(nf.cols), 1, 1}, 0,
		pArg(nf.h), lArg(nf.cols), pArg(nf.x), lArg(nf.cols), pArg(nf.w), bArg(false), iArg(nf.cols), iArg(nf.cols), fArg(nf.eps))
}

// gemv1Fusable reports whether w's single-row GEMV has a ...1n variant.
func (b *Backend) gemv1Fusable(w *weight) bool {
	if b.gemvT8 || w.cols > maxFuseK {
		return false
	}
	switch w.kind {
	case backend.BF16:
		return w.cols%8 == 0
	case backend.F8E4M3:
		return true
	}
	return false
}

// gemv1n queues the single-row GEMV of w (output pd) whose activation row is
// computed in its prologue from the row at px (see GvNorm in kernels.cu).
func (b *Backend) gemv1n(pd uintptr, ldd int, px uintptr, w *weight, nw uintptr, wfull bool, gate, h uintptr, group int, eps float32) {
	N, K := w.rows, w.cols
	pro := []uint64{pArg(0), pArg(nw), bArg(wfull), pArg(gate), pArg(h), iArg(group), fArg(eps)}
	var arg int
	if w.kind == backend.F8E4M3 {
		arg = b.launch("gemv_fp81n", dim3{(N + 7) / 8, 1, 1}, dim3{256, 1, 1}, 4*K, append([]uint64{pArg(px), lArg(K), iArg(1), pArg(w.p), iArg(N), iArg(K),
			pArg(w.scale), iArg(w.sc), iArg(w.br), iArg(w.bc), pArg(pd), lArg(ldd)}, pro...)...)
		b.markProducer(arg, 12, pd, N)
		return
	}
	arg = b.launch("gemv_bf16v1n", dim3{(N + 7) / 8, 1, 1}, dim3{256, 1, 1}, 4*K, append([]uint64{pArg(px), lArg(K), iArg(1), pArg(w.p), iArg(N), iArg(K),
		pArg(pd), lArg(ldd)}, pro...)...)
	b.markProducer(arg, 8, pd, N)
}

// consumePending runs the single-row GEMV of w on the pending norm's row h
// (at px) with the norm in its prologue, if it can.
func (b *Backend) consumePending(pd uintptr, ldd int, px uintptr, w *weight) bool {
	nf := &b.nf
	if !nf.pend || px != nf.h || w.cols != nf.cols || !b.gemv1Fusable(w) {
		return false
	}
	nf.pend = false
	b.gemv1n(pd, ldd, nf.x, w, nf.w, true, 0, nf.h, nf.cols, nf.eps)
	return true
}

// NormGateMatMul implements backend.NormGateMatMuler for one row and
// weights with a fused single-row GEMV (BF16, FP8).
func (b *Backend) NormGateMatMul(dst, x, gate backend.Tensor, nwt backend.Weight, group int, eps float32, wt backend.Weight) bool {
	w := wt.(*weight)
	if b.fuse&fuseGate == 0 || x.Rows != 1 || gate.Rows != 1 || dst.Rows != 1 || x.Cols != w.cols || gate.Cols != w.cols || dst.Cols != w.rows || !b.gemv1Fusable(w) {
		return false
	}
	defer b.enter()()
	nw, wfull := normWeight("NormGateMatMul", nwt, x.Cols, group)
	if w.cols%group != 0 {
		panic(fmt.Sprintf("cuda.NormGateMatMul: %d columns, group %d", w.cols, group))
	}
	b.gemv1n(b.ptr("NormGateMatMul", dst), dst.Stride, b.ptr("NormGateMatMul", x), w, nw.p, wfull, b.ptr("NormGateMatMul", gate), 0, group, eps)
	return true
}
