package cpu

import (
	"fmt"
	"sync/atomic"
	"testing"
)

// countTask counts how often each index is run and checks that no two
// goroutines use one part (per-worker scratch) at the same time.
type countTask struct {
	hits   []atomic.Int32
	busy   []atomic.Bool
	shared atomic.Int32 // runs that found their part busy
	minLen atomic.Int64 // shortest range seen (except the last one)
	n      int
}

func (t *countTask) run(part, lo, hi int) {
	if !t.busy[part].CompareAndSwap(false, true) {
		t.shared.Add(1)
		return
	}
	defer t.busy[part].Store(false)
	if hi < t.n {
		for {
			m := t.minLen.Load()
			if int64(hi-lo) >= m || t.minLen.CompareAndSwap(m, int64(hi-lo)) {
				break
			}
		}
	}
	for i := lo; i < hi; i++ {
		t.hits[i].Add(1)
		for k := 0; k < 200; k++ { // some work, so that workers overlap
			_ = k * i
		}
	}
}

// TestPoolFor checks For with equal and with shrinking ranges
// (guidedSchedule): every index runs once, no two goroutines share a part,
// and no range but the last is shorter than the grain.
func TestPoolFor(t *testing.T) {
	defer func(g bool) { guidedSchedule = g }(guidedSchedule)
	for _, sched := range []string{"equal", "guided"} {
		guidedSchedule = sched == "guided"
		for _, workers := range []int{1, 2, 3, 8} {
			testPoolFor(t, sched, workers)
		}
	}
}

func testPoolFor(t *testing.T, sched string, workers int) {
	p := newPool(workers)
	for _, tt := range []struct{ n, grain int }{
		{1, 1}, {2, 1}, {7, 1}, {8, 1}, {100, 3}, {1000, 8}, {5, 10}, {4097, 64},
	} {
		t.Run(fmt.Sprintf("%s/workers=%d/n=%d/grain=%d", sched, workers, tt.n, tt.grain), func(t *testing.T) {
			for rep := 0; rep < 20; rep++ {
				ct := &countTask{hits: make([]atomic.Int32, tt.n), busy: make([]atomic.Bool, workers), n: tt.n}
				ct.minLen.Store(1 << 62)
				p.For(tt.n, tt.grain, ct)
				for i := range ct.hits {
					if h := ct.hits[i].Load(); h != 1 {
						t.Fatalf("index %d ran %d times", i, h)
					}
				}
				if s := ct.shared.Load(); s != 0 {
					t.Fatalf("%d runs shared a part with another goroutine", s)
				}
				if m := ct.minLen.Load(); m < int64(tt.grain) && m != 1<<62 {
					t.Fatalf("a range of %d indexes, below the grain %d", m, tt.grain)
				}
			}
		})
	}
}
