package cuda

import (
	"fmt"
	"hash/maphash"
	"os"
	"slices"
	"time"
	"unsafe"
)

// Deferred execution and CUDA graphs.
//
// Operations do not call the driver: they append commands (kernel launches,
// memsets, device copies, cuBLASLt calls) to a queue, and staged host arrays
// go to a pinned ring. flush issues the queue on the backend's stream: first
// one copy of the ring's new bytes, then the commands. Every Read, Sync,
// Write and Selected flushes and waits (a "step").
//
// A flushed command list is identified by its exact contents (kernels,
// launch shapes, argument words, copy addresses and sizes; staged *values*
// are not part of it: they are read by the ring copy when it runs). The
// second time the same list is flushed it is captured into a CUDA graph
// (stream capture), and from then on the graph is launched instead of the
// individual commands. Per-step data (token ids, positions, spans, KV
// lengths, state pointers) lives in the ring, whose offsets repeat from
// step to step, so a decode step replays one graph as long as the batch
// composition and the attention split count (a power of two of the context
// length) stay the same. cuBLASLt GEMMs are commands too (their plan's
// index and the operand addresses), captured like the kernels.
// Options.NoGraphs or RINGO_CUDA_NO_GRAPHS=1 turns graphs off (the commands
// are then issued one by one, as before).

// command opcodes (low byte of a command's first word)
const (
	opKernel = iota + 1 // fn, gx, gy, gz, bx, by, bz, smem, args... (nargs in bits 8..15)
	opMemset            // ptr, value, n (32-bit words)
	opDtoD              // dst, src, bytes
	opHtoD              // dst, src (pinned host), bytes
	opDtoH              // dst (pinned host), src, bytes
	opLt                // cuBLASLt GEMM: plan index (cublasLt.list), w, x, d
	opLt8               // block-scaled FP8 cuBLASLt GEMM: plan index, w, w scales, x, x scales, d
)

// minGraphKernels is the smallest list worth a graph.
const minGraphKernels = 16

// maxGraphs bounds the graph cache (it is emptied when full): a decode
// shape takes a few graphs (segments, see Backend.flushAfter).
const maxGraphs = 128

type graphEntry struct {
	cmds []uint64
	exec uintptr
	bad  bool // capture failed: always issue eagerly
}

// Stats counts the work the backend has issued.
type Stats struct {
	Steps         int64 // waits (Read, Sync, Write, Selected) after which kernels had run
	Kernels       int64 // kernels run (launched one by one or as graph nodes)
	DriverCalls   int64 // driver calls that queued work: kernel launches, copies, memsets, graph launches, cuBLASLt calls
	GraphLaunches int64 // flushes replayed as a CUDA graph
	Captures      int64 // graphs captured
	Flushes       int64 // times queued work was issued to the stream
}

// stepTiming measures, with RINGO_CUDA_STATS, where a step's wall time
// goes: recording commands on the host before the first flush, issuing them,
// and the GPU's span from the first flush to the end of the step (two events
// per step). A GPU span well below the wall time means the GPU waited for
// the host. Outside that wall time: copying a step's pinned read into Go
// memory after it (read), and the host's time from the end of one step (its
// read copied) to the first command of the next (outside, gaps over 10 ms
// not counted).
type stepTiming struct {
	start      time.Time // first command of the step
	flushed    bool      // the step's first flush happened
	ev         [2]uintptr
	record     time.Duration // sums since the last report
	issue      time.Duration
	wall       time.Duration
	gpu        float64 // ms
	firstFlush time.Time
	read       time.Duration
	outside    time.Duration
	end        time.Time // the last step's end (its read copied)
}

// Stats returns the counters of issued work.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

var graphSeed = maphash.MakeSeed()

// record appends a command (after the waiting AddRMSNormTo, if any).
func (b *Backend) record(words ...uint64) {
	if b.pending() {
		b.emitPending()
	}
	if b.statsEvery > 0 && b.timing.start.IsZero() {
		b.timing.start = time.Now()
		if t := &b.timing; !t.end.IsZero() {
			if d := t.start.Sub(t.end); d < 10*time.Millisecond {
				t.outside += d
			}
			t.end = time.Time{}
		}
	}
	b.queue = append(b.queue, words...)
}

// queueHead is the room kept at the start of the queue for the ring copy.
const queueHead = 4

// flush issues everything queued on the stream (as a graph when possible).
func (b *Backend) flush() {
	b.emitPending()
	b.routeEnd = -1 // the queue starts over (see moeVector)
	q := b.queue[queueHead:]
	if b.stageOff > b.flushedOff {
		// the ring's new bytes go first, in one copy
		q = b.queue
		q[0], q[1], q[2], q[3] = opHtoD, uint64(b.stageDev+uintptr(b.flushedOff)), uint64(b.stageHost+uintptr(b.flushedOff)), uint64(b.stageOff-b.flushedOff)
		b.flushedOff = b.stageOff
	}
	if len(q) == 0 {
		return
	}
	if b.statsEvery > 0 {
		t := &b.timing
		now := time.Now()
		if !t.flushed {
			t.flushed, t.firstFlush = true, now
			if !t.start.IsZero() {
				t.record += now.Sub(t.start)
			}
			if t.ev[0] == 0 {
				for i := range t.ev {
					b.must(b.d.check(ccall(b.d.cuEventCreate, uintptr(unsafe.Pointer(&t.ev[i])), 0), "cuEventCreate"))
				}
			}
			ccall(b.d.cuEventRecord, t.ev[0], b.stream)
		}
		defer func() { t.issue += time.Since(now) }()
	}
	defer func() {
		b.queue = b.queue[:queueHead]
		b.pendingKernels = 0
	}()
	b.stats.Flushes++
	b.stepFlushes++
	kernels := countKernels(q)
	if b.graphsOn && kernels >= minGraphKernels && !b.bigStep {
		h := maphash.Bytes(graphSeed, unsafe.Slice((*byte)(unsafe.Pointer(&q[0])), 8*len(q)))
		e := b.graphs[h]
		switch {
		case e == nil || !slices.Equal(e.cmds, q):
			if len(b.graphs) >= maxGraphs {
				b.dropGraphs()
			}
			b.graphs[h] = &graphEntry{cmds: slices.Clone(q)}
		case e.exec != 0:
			b.must(b.d.check(ccall(b.d.cuGraphLaunch, e.exec, b.stream), "cuGraphLaunch"))
			b.stats.GraphLaunches++
			b.stats.DriverCalls++
			b.stats.Kernels += int64(kernels)
			return
		case !e.bad:
			exec, err := b.capture(q)
			if err == nil {
				e.exec = exec
				b.stats.Captures++
				b.must(b.d.check(ccall(b.d.cuGraphLaunch, e.exec, b.stream), "cuGraphLaunch"))
				b.stats.GraphLaunches++
				b.stats.DriverCalls++
				b.stats.Kernels += int64(kernels)
				return
			}
			e.bad = true
			if !b.graphWarned {
				b.graphWarned = true
				fmt.Fprintf(os.Stderr, "cuda: CUDA graph capture failed, running that step eagerly: %v\n", err)
			}
		}
	}
	b.must(b.issue(q))
}

func countKernels(q []uint64) int {
	n := 0
	for i := 0; i < len(q); i += cmdLen(q[i]) {
		if q[i]&0xff == opKernel {
			n++
		}
	}
	return n
}

func cmdLen(h uint64) int {
	switch h & 0xff {
	case opKernel:
		return 9 + int(h>>8&0xff)
	case opMemset, opDtoD, opHtoD, opDtoH:
		return 4
	case opLt:
		return 5
	case opLt8:
		return 7
	}
	panic(fmt.Sprintf("cuda: bad command word %#x", h))
}

// issue runs the commands one by one on the stream.
func (b *Backend) issue(q []uint64) error {
	d, s := b.d, b.stream
	for i := 0; i < len(q); {
		h := q[i]
		c := q[i : i+cmdLen(h)]
		i += len(c)
		b.stats.DriverCalls++
		var r uintptr
		var what string
		switch h & 0xff {
		case opKernel:
			b.stats.Kernels++
			if b.prof != nil {
				b.prof.mark(b, uintptr(c[1]))
			}
			pb := b.params
			copy(pb.slots[:], c[9:])
			if b.pdl {
				lc := &b.pdlCfg.cfg
				lc.gridX, lc.gridY, lc.gridZ = uint32(c[2]), uint32(c[3]), uint32(c[4])
				lc.blockX, lc.blockY, lc.blockZ = uint32(c[5]), uint32(c[6]), uint32(c[7])
				lc.smem, lc.stream = uint32(c[8]), s
				r = ccall(d.cuLaunchKernelEx, uintptr(unsafe.Pointer(lc)), uintptr(c[1]), uintptr(unsafe.Pointer(&pb.ptrs[0])), 0)
			} else {
				r = ccall(d.cuLaunchKernel, uintptr(c[1]), uintptr(c[2]), uintptr(c[3]), uintptr(c[4]), uintptr(c[5]), uintptr(c[6]), uintptr(c[7]),
					uintptr(c[8]), s, uintptr(unsafe.Pointer(&pb.ptrs[0])), 0)
			}
			if b.prof != nil {
				b.prof.mark(b, 0)
			}
			if int32(r) != 0 {
				what = fmt.Sprintf("cuLaunchKernel(%s, grid %v, block %v, smem %d)", b.fnNames[uintptr(c[1])], c[2:5], c[5:8], c[8])
			}
		case opMemset:
			r, what = ccall(d.cuMemsetD32Async, uintptr(c[1]), uintptr(c[2]), uintptr(c[3]), s), "cuMemsetD32Async"
		case opDtoD:
			r, what = ccall(d.cuMemcpyDtoDAsync, uintptr(c[1]), uintptr(c[2]), uintptr(c[3]), s), "cuMemcpyDtoDAsync"
		case opHtoD:
			r, what = ccall(d.cuMemcpyHtoDAsync, uintptr(c[1]), uintptr(c[2]), uintptr(c[3]), s), "cuMemcpyHtoDAsync(stage)"
		case opDtoH:
			r, what = ccall(d.cuMemcpyDtoHAsync, uintptr(c[1]), uintptr(c[2]), uintptr(c[3]), s), "cuMemcpyDtoHAsync"
		case opLt, opLt8:
			pl := b.lt.list[c[1]]
			if b.prof != nil {
				// named by the product's shape: N outputs, T rows, K inputs
				id := ltProfile + uintptr(pl.id)
				if _, ok := b.fnNames[id]; !ok {
					fp8 := ""
					if pl.key.fp8 {
						fp8 = " fp8"
					}
					b.fnNames[id] = fmt.Sprintf("lt%s %dx%dx%d", fp8, pl.key.t, pl.key.n, pl.key.k)
				}
				b.prof.mark(b, id)
			}
			var err error
			if h&0xff == opLt8 {
				err = b.lt.gemm8(pl, uintptr(c[2]), uintptr(c[3]), uintptr(c[4]), uintptr(c[5]), uintptr(c[6]), b.ltWS, &b.alpha, &b.beta, s)
			} else {
				err = b.lt.gemm(pl, uintptr(c[2]), uintptr(c[3]), uintptr(c[4]), b.ltWS, &b.alpha, &b.beta, s)
			}
			if err != nil {
				return err
			}
			if b.prof != nil {
				b.prof.mark(b, 0)
			}
		}
		if int32(r) != 0 {
			return b.d.check(r, what)
		}
	}
	return nil
}

// capture records q into an instantiated graph.
func (b *Backend) capture(q []uint64) (uintptr, error) {
	d := b.d
	const relaxed = 2 // CU_STREAM_CAPTURE_MODE_RELAXED
	if err := d.check(ccall(d.cuStreamBeginCapture, b.stream, relaxed), "cuStreamBeginCapture"); err != nil {
		return 0, err
	}
	saved := b.stats
	ierr := b.issue(q)
	b.stats = saved
	var g uintptr
	err := d.check(ccall(d.cuStreamEndCapture, b.stream, uintptr(unsafe.Pointer(&g))), "cuStreamEndCapture")
	if ierr != nil {
		err = ierr
	}
	if err != nil {
		if g != 0 {
			ccall(d.cuGraphDestroy, g)
		}
		return 0, err
	}
	var exec uintptr
	err = d.check(ccall(d.cuGraphInstantiate, uintptr(unsafe.Pointer(&exec)), g, 0), "cuGraphInstantiateWithFlags")
	ccall(d.cuGraphDestroy, g)
	return exec, err
}

// dropGraphs empties the graph cache.
func (b *Backend) dropGraphs() {
	if len(b.graphs) == 0 {
		return
	}
	ccall(b.d.cuCtxSynchronize)
	for h, e := range b.graphs {
		if e.exec != 0 {
			ccall(b.d.cuGraphExecDestroy, e.exec)
		}
		delete(b.graphs, h)
	}
}

// drain flushes and waits, keeping the staging ring (safe in the middle of
// an operation).
func (b *Backend) drain() {
	b.flush()
	if b.statsEvery > 0 && b.timing.flushed {
		ccall(b.d.cuEventRecord, b.timing.ev[1], b.stream)
	}
	b.must(b.d.check(ccall(b.d.cuCtxSynchronize), "cuCtxSynchronize (an earlier kernel failed)"))
}

// sync ends a step: flushes, waits, empties the staging ring and moves
// this step's routings to host memory.
func (b *Backend) sync() {
	b.routeMirror()
	b.drain()
	b.stageOff, b.flushedOff = 0, 0
	b.stageGen++
	b.bigStep, b.stepFlushes = false, 0
	for _, p := range b.overflow {
		ccall(b.d.cuMemFree, p)
	}
	b.overflow = b.overflow[:0]
	b.routeSettle()
	if b.prof != nil {
		b.prof.collect(b)
	}
	if b.tl != nil {
		b.tl.collect(b)
	}
	if b.stats.Kernels == b.kernelsAtSync {
		b.timing.start, b.timing.flushed = time.Time{}, false
		return // no kernels ran: not counted as a step
	}
	b.kernelsAtSync = b.stats.Kernels
	b.stepTimed()
	b.stats.Steps++
	if b.statsEvery > 0 && b.stats.Steps%int64(b.statsEvery) == 0 {
		s, p := b.stats, b.statsLast
		n := float64(s.Steps - p.Steps)
		fmt.Fprintf(os.Stderr, "cuda stats: last %d steps: %.1f kernels/step, %.1f driver calls/step, %d graph launches, %d captures (%d graphs cached)\n",
			int(n), float64(s.Kernels-p.Kernels)/n, float64(s.DriverCalls-p.DriverCalls)/n, s.GraphLaunches-p.GraphLaunches, s.Captures-p.Captures, len(b.graphs))
		b.statsLast = s
		t := &b.timing
		fmt.Fprintf(os.Stderr, "cuda stats: per step %.3f ms wall: %.3f recording before the first flush, %.3f issuing, GPU busy from the first flush to the end %.3f; then %.3f copying reads into Go memory, %.3f on the host before the next step\n",
			ms(t.wall)/n, ms(t.record)/n, ms(t.issue)/n, t.gpu/n, ms(t.read)/n, ms(t.outside)/n)
		t.record, t.issue, t.wall, t.gpu, t.read, t.outside = 0, 0, 0, 0, 0, 0
		if b.prof != nil {
			b.prof.report(int(n))
		}
		if b.tl != nil {
			b.tl.report(b)
		}
	}
}

// stepTimed adds the step that sync just ended to b.timing.
func (b *Backend) stepTimed() {
	t := &b.timing
	if b.statsEvery == 0 || t.start.IsZero() {
		return
	}
	wall := time.Since(t.start)
	t.wall += wall
	t.end = time.Now()
	var g float32
	if t.flushed {
		if ccall(b.d.cuEventElapsedTime, uintptr(unsafe.Pointer(&g)), t.ev[0], t.ev[1]) == 0 {
			t.gpu += float64(g)
		}
	}
	if b.timingEach {
		fmt.Fprintf(os.Stderr, "cuda step %d: %.3f ms wall, %.3f recording before the first flush, GPU busy %.3f from the first flush to the end\n",
			b.stats.Steps, ms(wall), ms(t.firstFlush.Sub(t.start)), g)
	}
	t.start, t.flushed = time.Time{}, false
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// ltProfile is added to a cuBLASLt plan's index to name it among the
// kernels in Backend.fnNames (no function handle is that large).
const ltProfile = uintptr(1) << 62

// profiler (RINGO_CUDA_PROFILE=1, with RINGO_CUDA_STATS): events around
// every kernel and cuBLASLt call (graphs off), GPU time summed per kernel
// name (the cuBLASLt calls per shape, rows×outputs×inputs).
type profiler struct {
	events []uintptr
	used   int
	fns    []uintptr // kernel of each event pair
	ms     map[string]float64
	count  map[string]int
}

func (p *profiler) mark(b *Backend, fn uintptr) {
	if p.used == len(p.events) {
		var e uintptr
		b.must(b.d.check(ccall(b.d.cuEventCreate, uintptr(unsafe.Pointer(&e)), 0), "cuEventCreate"))
		p.events = append(p.events, e)
	}
	ccall(b.d.cuEventRecord, p.events[p.used], b.stream)
	if p.used%2 == 0 {
		p.fns = append(p.fns, fn)
	}
	p.used++
}

func (p *profiler) collect(b *Backend) {
	for i := 0; i+1 < p.used; i += 2 {
		var ms float32
		if ccall(b.d.cuEventElapsedTime, uintptr(unsafe.Pointer(&ms)), p.events[i], p.events[i+1]) == 0 {
			name := b.fnNames[p.fns[i/2]]
			p.ms[name] += float64(ms)
			p.count[name]++
		}
	}
	p.used, p.fns = 0, p.fns[:0]
}

func (p *profiler) report(steps int) {
	type row struct {
		name string
		ms   float64
	}
	var rows []row
	total := 0.0
	for k, v := range p.ms {
		rows = append(rows, row{k, v})
		total += v
	}
	slices.SortFunc(rows, func(a, b row) int {
		if a.ms > b.ms {
			return -1
		}
		return 1
	})
	fmt.Fprintf(os.Stderr, "cuda profile: %.3f ms of kernel time per step\n", total/float64(steps))
	for _, r := range rows[:min(len(rows), 24)] {
		fmt.Fprintf(os.Stderr, "  %-18s %8.1f µs/step  %6.1f launches/step  %6.2f µs each\n", r.name, 1e3*r.ms/float64(steps), float64(p.count[r.name])/float64(steps), 1e3*r.ms/float64(p.count[r.name]))
	}
	clear(p.ms)
	clear(p.count)
}
