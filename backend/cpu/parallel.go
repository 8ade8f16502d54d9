package cpu

import (
	"runtime"
	"sync"
)

// pool runs index ranges on a fixed set of worker goroutines.
type pool struct {
	n    int
	jobs chan job
}

type job struct {
	fn     func(lo, hi int)
	lo, hi int
	wg     *sync.WaitGroup
}

func newPool(n int) *pool {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	p := &pool{n: n, jobs: make(chan job, 4*n)}
	for i := 1; i < n; i++ {
		go func() {
			for j := range p.jobs {
				j.fn(j.lo, j.hi)
				j.wg.Done()
			}
		}()
	}
	return p
}

// For splits [0, n) into about one contiguous piece per worker, each at least
// grain long, and runs fn on the pieces in parallel (the caller runs one).
func (p *pool) For(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	parts := min(p.n, (n+grain-1)/grain)
	if parts <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + parts - 1) / parts
	wg.Add(parts - 1)
	for i := 1; i < parts; i++ {
		lo, hi := i*step, min(n, (i+1)*step)
		if lo >= hi {
			wg.Done()
			continue
		}
		p.jobs <- job{fn, lo, hi, &wg}
	}
	fn(0, min(n, step))
	wg.Wait()
}
