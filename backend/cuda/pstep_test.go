package cuda

import (
	"fmt"
	"math/rand"
	"testing"
	"time"
	"unsafe"
)

// psPhase is one phase of k_pstep's skeleton step (kernels.cu): bytes read
// once, whether they may be asked for ahead of the barriers before them
// (pre), and the latency work before and after the stream in nanoseconds.
type psPhase struct {
	bytes     int64
	pre       bool
	spinPre   int64
	spinAfter int64
}

// psTable lays the phases out back to back from offset 0 and returns
// k_pstep's table (five words a phase) and the bytes they span.
func psTable(ph []psPhase) ([]int64, int64) {
	var tab []int64
	off := int64(0)
	for _, p := range ph {
		pre := int64(0)
		if p.pre {
			pre = 1
		}
		tab = append(tab, off, p.bytes, pre, p.spinPre, p.spinAfter)
		off += (p.bytes + 255) &^ 255
	}
	return tab, off
}

// psRun launches k_pstep over W for steps steps of the table at dev (np
// phases), pmax bytes of shared memory per block.
func (b *Backend) psRun(W, tab uintptr, np, steps, pmax int, bar, out uintptr) {
	b.launch("k_pstep", dim3{b.sms, 1, 1}, dim3{512, 1, 1}, pmax, pArg(W), pArg(tab), iArg(np), iArg(steps), iArg(pmax), pArg(bar), pArg(out))
}

// psPmax is the shared memory k_pstep asks for: what a block may have,
// less a little for its static part.
func (b *Backend) psPmax() int { return (b.smemOptin - 1024) &^ 1023 }

// TestPersistentStep checks that k_pstep reads every byte of every phase
// once per step: the sum of the buffer's 32-bit words over random phases
// (empty ones, ones smaller than a 16-byte chunk per block, ones larger
// than shared memory, asked for ahead or not, with latency work), against
// the host's sum, for several steps and shared-memory sizes (none: every
// byte by plain loads).
func TestPersistentStep(t *testing.T) {
	g := gpu(t, false)
	if g.ccMaj < 9 {
		t.Skip("k_pstep needs sm_90")
	}
	rng := rand.New(rand.NewSource(7))
	ph := []psPhase{
		{bytes: 3 << 20, pre: true, spinPre: 500},
		{bytes: 0, spinPre: 300},
		{bytes: 16 * int64(rng.Intn(7*g.sms)+1), pre: true},
		{bytes: 16 * int64(rng.Intn(1<<18)+1), pre: false, spinAfter: 400},
		{bytes: 5<<20 + 16*int64(rng.Intn(1000)), pre: true},
		{bytes: 0},
		{bytes: 0},
		{bytes: 16 * int64(rng.Intn(1<<16)+1), pre: false},
		{bytes: 1 << 20, pre: true},
	}
	tab, size := psTable(ph)
	host := make([]uint32, size/4)
	for i := range host {
		host[i] = rng.Uint32()
	}
	want := uint32(0)
	for i := 0; i < len(tab); i += 5 {
		for _, v := range host[tab[i]/4 : (tab[i]+tab[i+1])/4] {
			want += v
		}
	}
	d := g.d
	var W, dt, bar, out uintptr
	func() {
		defer g.enter()()
		for _, a := range []struct {
			p *uintptr
			n int64
		}{{&W, size}, {&dt, int64(8 * len(tab))}, {&bar, 256}, {&out, 256}} {
			if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(a.p)), uintptr(a.n)), "cuMemAlloc"); err != nil {
				t.Fatal(err)
			}
		}
		ccall(d.cuMemcpyHtoD, W, uintptr(unsafe.Pointer(&host[0])), uintptr(size))
		ccall(d.cuMemcpyHtoD, dt, uintptr(unsafe.Pointer(&tab[0])), uintptr(8*len(tab)))
		ccall(d.cuMemsetD32Async, bar, 0, 64, 0)
	}()
	t.Cleanup(func() {
		defer g.enter()()
		for _, p := range []uintptr{W, dt, bar, out} {
			ccall(d.cuMemFree, p)
		}
	})
	read := func() uint32 {
		defer g.enter()()
		g.sync()
		var v uint32
		ccall(d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&v)), out, 4)
		ccall(d.cuMemsetD32Async, out, 0, 1, 0)
		g.sync()
		return v
	}
	read()
	for _, steps := range []int{1, 3} {
		for _, pmax := range []int{0, 16384, 4096 + 1024, g.psPmax()} {
			func() {
				defer g.enter()()
				g.psRun(W, dt, len(ph), steps, pmax, bar, out)
			}()
			if got := read(); got != want*uint32(steps) {
				t.Errorf("k_pstep, %d steps, %d bytes of shared memory: sum %#x, want %#x", steps, pmax, got, want*uint32(steps))
			}
		}
	}
}

// psModel is a decode step's phases for BenchmarkPersistentStep: per
// lightning + MoE layer the qkv|gate product (after the input norm), the
// recurrence (its state read), the output projection (after the gate's
// group norm), the router (after the residual norm; the top-k after it),
// the gate|up pairs (routed: not known ahead) and the down projections,
// then the lm_head and the token's draw. lat scales the latency work (µs:
// norm 1, recurrence 2.5, group norm 0.5, top-k 1.5, draw 3), an estimate
// of what each would take inside one kernel.
func psModel(layers int, qkvg, state, oproj, router, gu, down, lmhead int64, lat float64) []psPhase {
	ns := func(us float64) int64 { return int64(us * lat * 1e3) }
	var ph []psPhase
	for range layers {
		ph = append(ph,
			psPhase{bytes: qkvg, pre: true, spinPre: ns(1)},
			psPhase{bytes: state, pre: true, spinPre: ns(2.5)},
			psPhase{bytes: oproj, pre: true, spinPre: ns(0.5)},
			psPhase{bytes: router, pre: true, spinPre: ns(1), spinAfter: ns(1.5)},
			psPhase{bytes: gu, pre: false},
			psPhase{bytes: down, pre: true})
	}
	return append(ph, psPhase{bytes: lmhead, pre: true, spinPre: ns(1), spinAfter: ns(3)})
}

// BenchmarkPersistentStep asks what a persistent decode kernel could reach
// at batch 1 if its arithmetic were free: k_pstep streams the bytes of a
// whole synthetic Ring-flash-linear-2.0 (FP8, BF16 lm_head) and
// Ring-mini-linear-2.0 step (psModel; every layer as a lightning + MoE one)
// with a grid barrier between phases, its latency work scaled by 0, 1 and
// 2, three ways: each block's first bytes of a phase (up to all its shared
// memory) by bulk copies asked for ahead of the barriers where the phase
// allows, the same asked only after its barrier, and every byte by plain
// loads (no shared memory); against the same bytes read as one phase (the
// skeleton's own streaming rate, no barriers). Each figure is a mean over
// 20 steps after 2 of warm-up, as a percentage of the bytes' time at the
// bandwidth the backend measures (Rooflines). Settings alternate, twice.
// Results: docs/GPU.md, "After the thirty-seventh session".
func BenchmarkPersistentStep(b *testing.B) {
	g := gpu(b, false)
	if g.ccMaj < 9 {
		b.Skip("k_pstep needs sm_90")
	}
	const MB = 1 << 20
	models := []struct {
		name string
		ph   func(lat float64) []psPhase
	}{
		{"Ring-flash", func(lat float64) []psPhase {
			return psModel(32, 16384*4096, 2*MB, 4096*4096, 256*4096*2, 9*2*1024*4096, 9*4096*1024, 157184*4096*2, lat)
		}},
		{"Ring-mini", func(lat float64) []psPhase {
			return psModel(20, 8192*2048, MB, 2048*2048, 256*2048*2, 9*2*512*2048, 9*2048*512, 157184*2048*2, lat)
		}},
	}
	bw, _ := g.Rooflines()
	_, size := psTable(models[0].ph(0))
	bufs := benchBuffers(b, g, int(size), 8*5*1024, 256, 256)
	W, dt, bar, out := bufs[0], bufs[1], bufs[2], bufs[3]
	const steps, warm = 20, 2
	// one phase of the whole step's bytes: the skeleton's own streaming rate
	one := func(bytes int64) time.Duration {
		tab := []int64{0, bytes, 1, 0, 0}
		func() {
			defer g.enter()()
			ccall(g.d.cuMemcpyHtoD, dt, uintptr(unsafe.Pointer(&tab[0])), uintptr(8*len(tab)))
		}()
		el := chainTime(g, 1, func(int) { g.psRun(W, dt, 1, warm, g.psPmax(), bar, out) })
		el2 := chainTime(g, 1, func(int) { g.psRun(W, dt, 1, warm+steps, g.psPmax(), bar, out) })
		return (el2 - el) / steps
	}
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		for range 2 {
			for _, m := range models {
				_, all := psTable(m.ph(0))
				all &^= 255
				per := one(all)
				b.Logf("%-10s the step's %.0f MB as one phase: %7.1f µs, %5.1f %% of the bytes' time (%.0f GB/s)", m.name, float64(all)/1e6, per.Seconds()*1e6,
					100*float64(all)/bw/per.Seconds(), float64(all)/per.Seconds()/1e9)
				for _, lat := range []float64{0, 1, 2} {
					ph := m.ph(lat)
					tab, _ := psTable(ph)
					bytes := int64(0)
					spin := int64(0)
					for _, p := range ph {
						bytes += p.bytes
						spin += p.spinPre + p.spinAfter
					}
					ideal := float64(bytes) / bw
					report := func(name string, per time.Duration) {
						b.Logf("%-10s latency ×%.0f (%5.1f µs a step) %-34s %7.1f µs a step, %5.1f %% of the bytes' %6.1f µs",
							m.name, lat, float64(spin)/1e3, name, per.Seconds()*1e6, 100*ideal/per.Seconds(), ideal*1e6)
					}
					for _, v := range []struct {
						pre  bool
						smem int
					}{{true, g.psPmax()}, {false, g.psPmax()}, {false, 0}} {
						t := append([]int64(nil), tab...)
						for i := 2; i < len(t) && !v.pre; i += 5 {
							t[i] = 0 // no phase asked for ahead
						}
						func() {
							defer g.enter()()
							ccall(g.d.cuMemcpyHtoD, dt, uintptr(unsafe.Pointer(&t[0])), uintptr(8*len(t)))
						}()
						el := chainTime(g, 1, func(int) { g.psRun(W, dt, len(ph), warm, v.smem, bar, out) })
						el2 := chainTime(g, 1, func(int) { g.psRun(W, dt, len(ph), warm+steps, v.smem, bar, out) })
						report(fmt.Sprintf("ahead %v, %d KB shared", v.pre, v.smem>>10), (el2-el)/steps)
					}
				}
			}
		}
	}
}
