package cuda

import (
	"os"
	"strconv"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
)

// mfThreads and mfMaxE are MF_THREADS and MF_MAXE in kernels.cu: the
// threads of a moe_fused_bf16 block, and the most experts it routes;
// mfSmem is the most dynamic shared memory it takes (the down
// projections' activations, (topk+1)·I floats), which its grid is sized
// for.
const (
	mfThreads = 512
	mfMaxE    = 512
	mfSmem    = 48 << 10
)

// initMoEFused sizes moe_fused_bf16's grid to the blocks the GPU holds at
// once (its grid barriers need every block resident) and allocates the
// barrier's words.
func (b *Backend) initMoEFused() error {
	d := b.d
	f := b.fns["moe_fused_bf16"]
	var static int32
	ccall(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&static)), cuFuncAttrSharedSizeBytes, f)
	if int(static)+mfSmem > b.smemOptin {
		return nil // off: its shared memory does not fit
	}
	if int(static)+mfSmem > 48<<10 {
		if err := d.check(ccall(d.cuFuncSetAttribute, f, cuFuncAttrMaxDynamicShared, uintptr(mfSmem)), "cuFuncSetAttribute(moe_fused_bf16)"); err != nil {
			return err
		}
	}
	var occ int32
	if err := d.check(ccall(d.cuOccupancyMaxActiveBlocksPerMultiprocessor, uintptr(unsafe.Pointer(&occ)), f, mfThreads, mfSmem),
		"cuOccupancyMaxActiveBlocksPerMultiprocessor(moe_fused_bf16)"); err != nil {
		return err
	}
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_MF_BLOCKS")); err == nil && v >= 1 && v < int(occ) {
		occ = int32(v) // fewer blocks per SM, for comparisons
	}
	b.mfGrid = int(occ) * b.sms
	if b.mfGrid == 0 || os.Getenv("RINGO_CUDA_MOE_FUSED") == "0" {
		return nil
	}
	b.mfSpin, _ = strconv.Atoi(os.Getenv("RINGO_CUDA_MF_SPIN"))
	zero := make([]byte, 256)
	if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&b.mfBar)), 256), "cuMemAlloc(moe_fused barrier)"); err != nil {
		return err
	}
	if err := d.check(ccall(d.cuMemcpyHtoD, b.mfBar, uintptr(unsafe.Pointer(&zero[0])), 256), "cuMemcpyHtoD(moe_fused barrier)"); err != nil {
		return err
	}
	if os.Getenv("RINGO_CUDA_MF_TIMES") != "" {
		n := mfTimeSlots * b.mfGrid * 8 * 8
		if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&b.mfTimes)), uintptr(n)), "cuMemAlloc(moe_fused times)"); err != nil {
			return err
		}
		z := make([]byte, n)
		if err := d.check(ccall(d.cuMemcpyHtoD, b.mfTimes, uintptr(unsafe.Pointer(&z[0])), uintptr(n)), "cuMemcpyHtoD(moe_fused times)"); err != nil {
			return err
		}
		b.weights = append(b.weights, b.mfTimes)
	}
	b.moeFused = true
	return nil
}

// mfTimeSlots is the number of moe_fused_bf16 launches per step whose phase
// times RINGO_CUDA_MF_TIMES records (later launches of a step record none).
const mfTimeSlots = 64

// MoEFusedTimes returns, for each moe_fused_bf16 launch of the last step
// that ran one (up to mfTimeSlots), the mean over its blocks and the
// latest block of each of its eight time points (start, after the PDL
// wait, phase 1 done, past barrier 1, routed, phase 2 done, past barrier 2,
// end), in µs from the earliest block's start; nil unless
// RINGO_CUDA_MF_TIMES is set.
func (b *Backend) MoEFusedTimes() (mean, last [][8]float64) {
	b.Sync()
	if b.mfTimes == 0 {
		return nil, nil
	}
	defer b.enter()()
	n := mfTimeSlots * b.mfGrid * 8
	raw := make([]uint64, n)
	b.must(b.d.check(ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&raw[0])), b.mfTimes, uintptr(8*n)), "cuMemcpyDtoH(moe_fused times)"))
	for s := range mfTimeSlots {
		blk := raw[s*b.mfGrid*8 : (s+1)*b.mfGrid*8]
		t0 := blk[0]
		for i := 0; i < len(blk); i += 8 {
			t0 = min(t0, blk[i])
		}
		if t0 == 0 {
			break
		}
		var m, l [8]float64
		for i := 0; i < len(blk); i += 8 {
			for j := range 8 {
				v := float64(blk[i+j]-t0) / 1e3
				m[j] += v / float64(b.mfGrid)
				l[j] = max(l[j], v)
			}
		}
		mean, last = append(mean, m), append(last, l)
	}
	return mean, last
}

// RouteMoE implements backend.RouteMoEer for one row in fast mode with
// BF16 router, experts and shared expert (D and I multiples of 8, at most
// mfMaxE experts, top-k at most 8): one moe_fused_bf16 launch does the
// router product, the routing and both MoE kernels of MoEShared, with the
// same arithmetic. It returns false otherwise, and when moeFused is off.
func (b *Backend) RouteMoE(dst, x backend.Tensor, router, bias backend.Weight, p backend.RouteParams, ex backend.Experts, gateUp, down backend.Weight) bool {
	e, ok1 := ex.(*experts)
	rw, ok2 := router.(*weight)
	gu, ok3 := gateUp.(*weight)
	dw, ok4 := down.(*weight)
	if !ok1 || !ok2 || !ok3 || !ok4 || !b.moeFused || b.opts.Precise {
		return false
	}
	D, I, E := e.dim, e.inter, e.n
	if x.Rows != 1 || x.Cols != D || dst.Rows != 1 || dst.Cols != D || e.kind != backend.BF16 || D%8 != 0 || I%8 != 0 {
		return false
	}
	if rw.kind != backend.BF16 || rw.rows != E || rw.cols != D || E > mfMaxE {
		return false
	}
	for _, w := range []*weight{rw, gu, dw} {
		if w.kind != backend.BF16 || w.p%16 != 0 {
			return false
		}
	}
	if gu.rows != 2*I || gu.cols != D || dw.rows != D || dw.cols != I {
		return false
	}
	groups := max(1, p.Groups)
	keep := groups
	if p.TopKGroups > 0 && p.TopKGroups < groups {
		keep = p.TopKGroups
	}
	K := p.TopK
	if E%groups != 0 || K <= 0 || K > moeDCMaxTopK || keep*(E/groups) < K || 4*(K+1)*I > mfSmem {
		return false
	}
	// warp routing (route_warps) where groups fit its warps and lanes
	per := E / groups
	fast := per <= 32 && groups <= 32 && keep*per <= 256 && !b.mfSlowRoute
	var pb uintptr
	if bias != nil {
		w, ok := bias.(*weight)
		if !ok || w.kind != backend.F32 || w.rows*w.cols != E {
			return false
		}
		pb = w.p
	}
	defer b.enter()()
	px := b.ptr("RouteMoE", x)
	if px%16 != 0 {
		return false
	}
	scr := b.scratch(4 * (E + (K+1)*I + 2*K))
	var tm uintptr
	if b.mfTimes != 0 && b.mfSlot < mfTimeSlots {
		tm = b.mfTimes + uintptr(b.mfSlot*b.mfGrid*8*8)
		b.mfSlot++
	}
	b.launch("moe_fused_bf16", dim3{b.mfGrid, 1, 1}, dim3{mfThreads, 1, 1}, 4*(K+1)*I, pArg(px), pArg(rw.p), pArg(pb), iArg(E), iArg(groups), iArg(keep), iArg(K),
		bArg(p.Sigmoid), bArg(p.Normalize), fArg(p.Scale), pArg(e.gateUp), pArg(e.down), pArg(gu.p), pArg(dw.p), iArg(I), iArg(D), pArg(scr.p),
		pArg(b.ptr("RouteMoE", dst)), pArg(b.mfBar), iArg(b.mfSpin), bArg(fast), pArg(tm))
	b.release(scr)
	return true
}
