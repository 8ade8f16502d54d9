package cpu

import (
	"runtime"
	"sync"
)

// task is work split into index ranges. Operations keep their task values
// in the Backend, so running one allocates nothing.
type task interface {
	// run processes [lo, hi) as part number part (0 ≤ part < workers).
	run(part, lo, hi int)
}

// pool runs index ranges on a fixed set of worker goroutines. One For runs
// at a time (a Backend is used by one goroutine at a time).
type pool struct {
	n    int
	jobs chan job
	wg   sync.WaitGroup
}

type job struct {
	t            task
	part, lo, hi int
}

func newPool(n int) *pool {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	p := &pool{n: n, jobs: make(chan job, n)}
	for i := 1; i < n; i++ {
		go func() {
			for j := range p.jobs {
				j.t.run(j.part, j.lo, j.hi)
				p.wg.Done()
			}
		}()
	}
	return p
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
	for i := 1; i < parts; i++ {
		lo, hi := i*step, min(n, (i+1)*step)
		if lo >= hi {
			continue
		}
		p.wg.Add(1)
		p.jobs <- job{t, i, lo, hi}
	}
	t.run(0, 0, min(n, step))
	p.wg.Wait()
}
