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
	// hand-overs, for kernels that mark their end (tl_end): from the wait
	// to the last block's end, from there to the next kernel's wait, and
	// the start of block 0 from the end of the kernel before it
	work, hand, start map[tlKey]float64
	nwork, nstart     map[tlKey]int
	span              float64 // ns from the first mark to the last, summed over steps
	steps             int
	skip              int
	// probes: tl_probe's sums and counts (device), for looking inside a
	// kernel (see kernels.cu)
	probeSum, probeN uintptr
	// blk: tl_blk, the block trace of moe_gd_bf16v (see kernels.cu)
	blk, blkN uintptr
}

type tlKey struct {
	fn     uintptr
	blocks int
}

const tlMax = 1 << 14 // TL_MAX in kernels.cu

// newTimeline allocates the marks and points the module's tl_buf at them.
func newTimeline(b *Backend) (*timeline, error) {
	d := b.d
	var pbuf, pn, psum, pcnt, pblk, pblkn, size uintptr
	for _, g := range []struct {
		name string
		p    *uintptr
	}{{"tl_buf", &pbuf}, {"tl_n", &pn}, {"tl_probe_sum", &psum}, {"tl_probe_n", &pcnt}, {"tl_blk", &pblk}, {"tl_blkn", &pblkn}} {
		name := cstr(g.name)
		if err := d.check(ccall(d.cuModuleGetGlobal, uintptr(unsafe.Pointer(g.p)), uintptr(unsafe.Pointer(&size)), b.mod, uintptr(unsafe.Pointer(&name[0]))),
			"cuModuleGetGlobal("+g.name+")"); err != nil {
			return nil, err
		}
	}
	t := &timeline{n: pn, probeSum: psum, probeN: pcnt, blk: pblk, blkN: pblkn, host: make([]uint64, 3*tlMax), sum: map[tlKey]float64{}, count: map[tlKey]int{},
		work: map[tlKey]float64{}, hand: map[tlKey]float64{}, start: map[tlKey]float64{}, nwork: map[tlKey]int{}, nstart: map[tlKey]int{}}
	var err error
	if t.buf, err = b.deviceBlock("timeline", 3*8*tlMax); err != nil {
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
	for j := range uintptr(3) {
		ccall(d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&t.host[j*tlMax])), t.buf+j*8*tlMax, uintptr(8*n))
	}
	wait, end, start := t.host[:tlMax], t.host[tlMax:2*tlMax], t.host[2*tlMax:]
	for i := 0; i+1 < int(n); i++ {
		k := tlKey{fns[i], grids[i]}
		t.sum[k] += float64(int64(wait[i+1] - wait[i]))
		t.count[k]++
		if e := end[i+1]; e != 0 && e >= wait[i] {
			t.work[k] += float64(e - wait[i])
			t.hand[k] += float64(int64(wait[i+1] - e))
			t.nwork[k]++
			if s := start[i+1]; s != 0 {
				kn := tlKey{fns[i+1], grids[i+1]}
				t.start[kn] += float64(int64(s - e))
				t.nstart[kn]++
			}
		}
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
		fmt.Fprintf(os.Stderr, "  %-18s %6d blocks %8.1f µs/step  %6.1f launches/step  %6.2f µs each", b.fnNames[k.fn], k.blocks, t.sum[k]/n/1e3,
			float64(t.count[k])/n, t.sum[k]/float64(t.count[k])/1e3)
		if c := float64(t.nwork[k]); c > 0 {
			fmt.Fprintf(os.Stderr, "  (last block ends %.2f after the wait, next wait %.2f later, %.0f%%)", t.work[k]/c/1e3, t.hand[k]/c/1e3, 100*c/float64(t.count[k]))
		}
		if c := float64(t.nstart[k]); c > 0 {
			fmt.Fprintf(os.Stderr, "  (block 0 starts %+.2f from the last end before)", t.start[k]/c/1e3)
		}
		fmt.Fprintln(os.Stderr)
	}
	t.reportProbes(b)
	t.reportBlocks(b)
	clear(t.sum)
	clear(t.count)
	for _, m := range []map[tlKey]float64{t.work, t.hand, t.start} {
		clear(m)
	}
	clear(t.nwork)
	clear(t.nstart)
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

const tlProbes = 40 // TL_PROBES in kernels.cu

const tlBlk = 256 * 19 * 4 // TL_BLK in kernels.cu

// tlBlkFields is the number of values in a block trace record (tl_blk):
// launch, block and SM; start, wait, barrier passed, staged rows in, end,
// arrival at the barrier.
const tlBlkFields = 7

// reportBlocks prints moe_gd_bf16v's block trace (µs from block 0's wait,
// over the launches whose blocks were all recorded): each group of blocks'
// mean start, wait, arrival at the grid barrier, barrier passed, staged
// rows in and end; then, per launch, the block that ended last and the
// median block; then the spread of the arrivals at the barrier (the
// barrier waits for the last one), by rank and by how many of the launch's
// blocks shared the block's SM.
func (t *timeline) reportBlocks(b *Backend) {
	var n uint32
	ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&n)), t.blkN, 4)
	if n == 0 {
		return
	}
	type rec = [tlBlkFields]uint64
	// every slot (a launch's blocks by the barrier's generation, which is
	// never 0), then zeroed so that the next report sees only new launches
	recs := make([]rec, tlBlk)
	ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&recs[0])), t.blk, uintptr(8*tlBlkFields*tlBlk))
	ccall(b.d.cuMemsetD32Async, t.blk, 0, uintptr(2*tlBlkFields*tlBlk), 0)
	byGen := map[uint32][]rec{}
	for _, r := range recs {
		if gen := uint32(r[0] >> 32); gen != 0 {
			byGen[gen] = append(byGen[gen], r)
		}
	}
	const g, nv = 32, 6
	// the times in print order: start, wait, arrival, barrier, staged, end
	order := [nv]int{1, 2, 6, 3, 4, 5}
	block := func(r rec) int { return int(r[0]>>12) & 0xfffff }
	sm := func(r rec) int { return int(r[0] & 0xfff) }
	var groups [][nv + 1]float64 // sums of the times; count
	var last, med [nv]float64
	ranks := []float64{0, 0.1, 0.5, 0.9, 1}
	arrRank := make([]float64, len(ranks))
	var arrBy [3][2]float64 // by blocks on the SM (1, 2, more): sum, count
	sms := map[int]int{}
	launches := 0
	for _, rs := range byGen {
		nb := 0
		var base uint64
		for _, r := range rs {
			nb = max(nb, block(r)+1)
			if block(r) == 0 {
				base = r[2]
			}
		}
		if base == 0 || len(rs) != nb {
			continue
		}
		launches++
		rel := func(r rec) (v [nv]float64) {
			for j, f := range order {
				v[j] = float64(int64(r[f]-base)) / 1e3
			}
			return v
		}
		for len(groups) < (nb+g-1)/g {
			groups = append(groups, [nv + 1]float64{})
		}
		perSM := map[int]int{}
		for _, r := range rs {
			perSM[sm(r)]++
		}
		for _, r := range rs {
			v, gi := rel(r), block(r)/g
			for j := range nv {
				groups[gi][j] += v[j]
			}
			groups[gi][nv]++
			k := min(perSM[sm(r)], 3) - 1
			arrBy[k][0] += v[2]
			arrBy[k][1]++
		}
		slices.SortFunc(rs, func(x, y rec) int { return int(int64(x[5] - y[5])) })
		for j, v := range rel(rs[len(rs)-1]) {
			last[j] += v
		}
		for j, v := range rel(rs[len(rs)/2]) {
			med[j] += v
		}
		sms[sm(rs[len(rs)-1])]++
		slices.SortFunc(rs, func(x, y rec) int { return int(int64(x[6] - y[6])) })
		for i, q := range ranks {
			arrRank[i] += rel(rs[int(q*float64(len(rs)-1))])[2]
		}
	}
	if launches == 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "moe_gd_bf16v blocks, %d launches, µs from block 0's wait: start, wait, arrival at the barrier, barrier passed, staged rows in, end\n", launches)
	row := func(name string, v []float64, d float64) {
		fmt.Fprintf(os.Stderr, "  %-16s", name)
		for _, x := range v {
			fmt.Fprintf(os.Stderr, " %7.2f", x/d)
		}
		fmt.Fprintln(os.Stderr)
	}
	for gi, a := range groups {
		if a[nv] > 0 {
			row(fmt.Sprintf("blocks %3d-%3d", gi*g, gi*g+g-1), a[:nv], a[nv])
		}
	}
	l := float64(launches)
	row("last to end", last[:], l)
	row("median block", med[:], l)
	fmt.Fprintf(os.Stderr, "  the last block's SM: %d SMs, most often %v\n", len(sms), topCounts(sms, 6))
	fmt.Fprintf(os.Stderr, "  arrivals at the barrier, first, 10 %%, median, 90 %%, last:")
	for _, a := range arrRank {
		fmt.Fprintf(os.Stderr, " %.2f", a/l)
	}
	fmt.Fprintf(os.Stderr, "\n  mean arrival by the launch's blocks on the block's SM:")
	for k, a := range arrBy {
		if a[1] > 0 {
			fmt.Fprintf(os.Stderr, " %d: %.2f (%.0f blocks per launch)", k+1, a[0]/a[1], a[1]/l)
		}
	}
	fmt.Fprintln(os.Stderr)
	var zero uint32
	ccall(b.d.cuMemcpyHtoD, t.blkN, uintptr(unsafe.Pointer(&zero)), 4)
}

// topCounts returns the k keys of m with the largest counts, as "key×count".
func topCounts(m map[int]int, k int) []string {
	keys := make([]int, 0, len(m))
	for x := range m {
		keys = append(keys, x)
	}
	slices.SortFunc(keys, func(a, c int) int { return m[c] - m[a] })
	var out []string
	for _, x := range keys[:min(k, len(keys))] {
		out = append(out, fmt.Sprintf("%d×%d", x, m[x]))
	}
	return out
}
