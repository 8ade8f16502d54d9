package cpu

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// task is work split into index ranges. Operations keep their task values
// in the Backend, so running one allocates nothing.
type task interface {
	// run processes [lo, hi) as part number part (0 ≤ part < workers).
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
type pool struct {
	n     int
	slots []slot
	left  atomic.Int64 // assigned parts not yet finished
	mu    sync.Mutex
	cond  *sync.Cond
	sleep int // workers parked on cond (guarded by mu)
	seq   uint64
}

// slot hands one job to one worker: the job is written, then seq is
// published; the worker reads the job only after it sees a new seq, and the
// next job is written only after the worker has finished this one (For
// waits for every assigned part).
type slot struct {
	seq    atomic.Uint64
	t      task
	lo, hi int
	_      [64]byte // keep workers' slots on separate cache lines
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
		s.t.run(i, s.lo, s.hi)
		p.left.Add(-1)
	}
}

// For splits [0, n) into at most one contiguous part per worker, each at
// least grain long, and runs t on the parts in parallel (the caller runs
// part 0).
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
	step := (n + parts - 1) / parts
	p.seq++
	var assigned int64
	for i := 1; i < parts; i++ {
		lo, hi := i*step, min(n, (i+1)*step)
		if lo < hi {
			assigned++
		}
	}
	p.left.Store(assigned)
	for i := 1; i < parts; i++ {
		lo, hi := i*step, min(n, (i+1)*step)
		if lo >= hi {
			continue
		}
		s := &p.slots[i]
		s.t, s.lo, s.hi = t, lo, hi
		s.seq.Store(p.seq)
	}
	p.mu.Lock()
	if p.sleep > 0 {
		p.cond.Broadcast()
	}
	p.mu.Unlock()
	t.run(0, 0, min(n, step))
	for p.left.Load() > 0 {
		runtime.Gosched()
	}
}
