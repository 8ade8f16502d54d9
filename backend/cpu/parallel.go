package cpu

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
)

// task is work split into index ranges. Operations keep their task values
// in the Backend, so running one allocates nothing.
type task interface {
	// run processes [lo, hi) on worker number part (0 ≤ part < workers),
	// which may call run several times per job, one range after another:
	// part only selects per-worker scratch.
	run(part, lo, hi int)
}

// pool runs index ranges on a fixed set of worker goroutines. One For runs
// at a time (a Backend is used by one goroutine at a time).
//
// A decode step issues a few hundred short parallel operations, so waking a
// parked goroutine for each (a futex round trip, several microseconds) would
// cost a noticeable share of the step. Workers therefore spin on an atomic
// generation counter for a short while after each job and only then park on
// a condition variable.
//
// The ranges (at least chunksPerWorker per worker, at least the grain long;
// with guidedSchedule each a share of what is left, so 9 experts go out as
// 2+1+1+1+1+1+1+1, without it 2+2+2+2+1) are handed out as the workers
// ask for them, so a worker that starts late or runs slower, on a busy core
// or colder memory, does less of the job instead of making the others wait.
type pool struct {
	n     int
	slots []slot
	left  atomic.Int64 // workers still on the current job
	next  atomic.Int64 // first index not yet handed out
	mu    sync.Mutex
	cond  *sync.Cond
	sleep int // workers parked on cond (guarded by mu)
	seq   uint64

	// the current job (written before seq is published)
	t            task
	total, chunk int
	// guided hands out ranges that shrink with what is left of the job
	// (guidedSchedule), down to grain (a multiple of it each)
	guided       bool
	grain, parts int
}

// chunksPerWorker is how many ranges a job is cut into per worker. A few
// let a worker that starts late or runs slower do less of the job; many
// small ones would make each weight stream start over more often.
const chunksPerWorker = 2

// guidedSchedule makes the ranges of a job shrink as it nears its end
// (each a 1/(chunksPerWorker·workers) share of what is left, a multiple of
// the grain, instead of equal ranges), so that the workers finish closer
// together: decode steps ran ~5 % faster with it and prefill 0-5 %
// (in-process A/B on the 2-core machine, docs/PERFORMANCE.md).
// RINGO_CPU_GUIDED=0 turns it off.
var guidedSchedule = os.Getenv("RINGO_CPU_GUIDED") != "0"

// slot wakes one worker: the worker reads the job only after it sees a new
// seq, and the next job is written only after every worker has finished this
// one (For waits for them).
type slot struct {
	seq atomic.Uint64
	_   [56]byte // keep workers' slots on separate cache lines
}

// spinRounds bounds how long an idle worker polls before parking.
const spinRounds = 20000

func newPool(n int) *pool {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	p := &pool{n: n, slots: make([]slot, n)}
	p.cond = sync.NewCond(&p.mu)
	for i := 1; i < n; i++ {
		go p.worker(i)
	}
	return p
}

func (p *pool) worker(i int) {
	s := &p.slots[i]
	var seen uint64
	for {
		// wait for a new job: spin, then park
		for spins := 0; s.seq.Load() == seen; spins++ {
			if spins < spinRounds {
				if spins%64 == 63 {
					runtime.Gosched()
				}
				continue
			}
			p.mu.Lock()
			p.sleep++
			for s.seq.Load() == seen {
				p.cond.Wait()
			}
			p.sleep--
			p.mu.Unlock()
		}
		seen = s.seq.Load()
		p.work(i)
		p.left.Add(-1)
	}
}

// work runs ranges of the current job on worker part until none is left.
func (p *pool) work(part int) {
	n, c := int64(p.total), int64(p.chunk)
	if p.guided {
		g, d := int64(p.grain), int64(chunksPerWorker*p.parts)
		for {
			lo := p.next.Load()
			if lo >= n {
				return
			}
			c := max(g, ((n-lo)/d+g-1)/g*g)
			if !p.next.CompareAndSwap(lo, lo+c) {
				continue
			}
			p.t.run(part, int(lo), int(min(n, lo+c)))
		}
	}
	for {
		lo := p.next.Add(c) - c
		if lo >= n {
			return
		}
		p.t.run(part, int(lo), int(min(n, lo+c)))
	}
}

// For runs t over [0, n) in ranges of at least grain indexes, on at most
// one worker per grain (the caller is worker 0), and returns when all of
// [0, n) is done.
func (p *pool) For(n, grain int, t task) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	parts := min(p.n, (n+grain-1)/grain)
	if parts <= 1 {
		t.run(0, 0, n)
		return
	}
	p.t, p.total = t, n
	p.chunk = max(grain, n/(chunksPerWorker*parts)) // at least chunksPerWorker ranges each
	p.guided, p.grain, p.parts = guidedSchedule, grain, parts
	p.next.Store(0)
	p.left.Store(int64(parts - 1))
	p.seq++
	for i := 1; i < parts; i++ {
		p.slots[i].seq.Store(p.seq)
	}
	p.mu.Lock()
	if p.sleep > 0 {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
	p.work(0)
	for p.left.Load() > 0 {
		runtime.Gosched()
	}
	p.t = nil
}
