package cuda

import (
	"fmt"
	"os"
	"slices"
	"unsafe"
)

// timeline (RINGO_CUDA_TIMELINE=1 with RINGO_CUDA_STATS, sm_90): the
// kernels are compiled with RINGO_TIMELINE, so that the first block of every
// kernel stores the GPU time (%globaltimer) at which it passed
// griddepcontrol.wait, that is, when the kernel before it had completed.
// The time from one kernel's mark to the next kernel's is the first one's
// share of the step: its work after the wait, its completion, and the next
// one's release. Unlike RINGO_CUDA_PROFILE's events it is measured as the
// step really runs, with CUDA graphs and programmatic dependent launch.
// A step whose marks do not match its kernels one to one (cuBLASLt calls,
// kernels whose first block skips the wait) is counted as skipped; the
// step's last kernel has no share (nothing comes after it).
type timeline struct {
	buf, n uintptr   // device: the marks (tlMax), their count
	host   []uint64  // the marks read back
	fns    []uintptr // this step's kernels, in launch order
	grids  []int     // and their blocks
	sum    map[tlKey]float64
	count  map[tlKey]int
	span   float64 // ns from the first mark to the last, summed over steps
	steps  int
	skip   int
	// probes: tl_probe's sums and counts (device), for looking inside a
	// kernel (see kernels.cu)
	probeSum, probeN uintptr
}

type tlKey struct {
	fn     uintptr
	blocks int
}

const tlMax = 1 << 14 // TL_MAX in kernels.cu

// newTimeline allocates the marks and points the module's tl_buf at them.
func newTimeline(b *Backend) (*timeline, error) {
	d := b.d
	var pbuf, pn, psum, pcnt, size uintptr
	for _, g := range []struct {
		name string
		p    *uintptr
	}{{"tl_buf", &pbuf}, {"tl_n", &pn}, {"tl_probe_sum", &psum}, {"tl_probe_n", &pcnt}} {
		name := cstr(g.name)
		if err := d.check(ccall(d.cuModuleGetGlobal, uintptr(unsafe.Pointer(g.p)), uintptr(unsafe.Pointer(&size)), b.mod, uintptr(unsafe.Pointer(&name[0]))),
			"cuModuleGetGlobal("+g.name+")"); err != nil {
			return nil, err
		}
	}
	t := &timeline{n: pn, probeSum: psum, probeN: pcnt, host: make([]uint64, tlMax), sum: map[tlKey]float64{}, count: map[tlKey]int{}}
	var err error
	if t.buf, err = b.deviceBlock("timeline", 8*tlMax); err != nil {
		return nil, err
	}
	if err := d.check(ccall(d.cuMemcpyHtoD, pbuf, uintptr(unsafe.Pointer(&t.buf)), 8), "cuMemcpyHtoD(tl_buf)"); err != nil {
		return nil, err
	}
	return t, nil
}

// launched notes a kernel of the step being recorded.
func (t *timeline) launched(fn uintptr, grid dim3) {
	t.fns = append(t.fns, fn)
	t.grids = append(t.grids, grid.x*grid.y*grid.z)
}

// collect reads the marks of the step that just ended and resets them.
func (t *timeline) collect(b *Backend) {
	d := b.d
	var n uint32
	ccall(d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&n)), t.n, 4)
	var zero uint32
	ccall(d.cuMemcpyHtoD, t.n, uintptr(unsafe.Pointer(&zero)), 4)
	fns, grids := t.fns, t.grids
	t.fns, t.grids = t.fns[:0], t.grids[:0]
	if n == 0 && len(fns) == 0 {
		return
	}
	if int(n) != len(fns) || n > tlMax {
		t.skip++
		return
	}
	ccall(d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&t.host[0])), t.buf, uintptr(8*n))
	for i := 0; i+1 < int(n); i++ {
		k := tlKey{fns[i], grids[i]}
		t.sum[k] += float64(int64(t.host[i+1] - t.host[i]))
		t.count[k]++
	}
	t.span += float64(int64(t.host[n-1] - t.host[0]))
	t.steps++
}

// report prints each kernel's (name and blocks) share per step, largest
// first, and starts over.
func (t *timeline) report(b *Backend) {
	if t.steps == 0 {
		fmt.Fprintf(os.Stderr, "cuda timeline: no step matched its marks (%d skipped)\n", t.skip)
		t.skip = 0
		return
	}
	keys := make([]tlKey, 0, len(t.sum))
	for k := range t.sum {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, c tlKey) int {
		if t.sum[a] > t.sum[c] {
			return -1
		}
		if t.sum[a] < t.sum[c] {
			return 1
		}
		return 0
	})
	n := float64(t.steps)
	fmt.Fprintf(os.Stderr, "cuda timeline: %d steps (%d skipped), %.1f µs per step from the first kernel's release to the last's\n", t.steps, t.skip, t.span/n/1e3)
	for _, k := range keys[:min(len(keys), 32)] {
		fmt.Fprintf(os.Stderr, "  %-18s %6d blocks %8.1f µs/step  %6.1f launches/step  %6.2f µs each\n", b.fnNames[k.fn], k.blocks, t.sum[k]/n/1e3,
			float64(t.count[k])/n, t.sum[k]/float64(t.count[k])/1e3)
	}
	t.reportProbes(b)
	clear(t.sum)
	clear(t.count)
	t.span, t.steps, t.skip = 0, 0, 0
}

// reportProbes prints the mean of every probe that was hit (µs) and zeroes
// them.
func (t *timeline) reportProbes(b *Backend) {
	var sum [tlProbes]uint64
	var n [tlProbes]uint32
	ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&sum[0])), t.probeSum, 8*tlProbes)
	ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&n[0])), t.probeN, 4*tlProbes)
	for i := range sum {
		if n[i] > 0 {
			fmt.Fprintf(os.Stderr, "  probe %2d: %8.2f µs mean over %d\n", i, float64(sum[i])/float64(n[i])/1e3, n[i])
		}
	}
	clear(sum[:])
	clear(n[:])
	ccall(b.d.cuMemcpyHtoD, t.probeSum, uintptr(unsafe.Pointer(&sum[0])), 8*tlProbes)
	ccall(b.d.cuMemcpyHtoD, t.probeN, uintptr(unsafe.Pointer(&n[0])), 4*tlProbes)
}

const tlProbes = 20 // TL_PROBES in kernels.cu
