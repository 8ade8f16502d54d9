package cuda

import (
	"time"
	"unsafe"
)

// Rooflines returns the device's measured HBM read bandwidth (bytes/s: a
// streaming read kernel over 4 GiB, best of 3 runs of 10 passes) and BF16
// tensor-core peak (FLOP/s: an 8192×8192×8192 cuBLASLt BF16 GEMM with FP32
// accumulation, best of 3 runs of 10; 0 without cuBLASLt). They are
// measured on the first call only. bench.Run uses them instead of the CPU's
// rooflines.
func (b *Backend) Rooflines() (bytesPerSec, flopsPerSec float64) {
	b.roofOnce.Do(func() { b.roofBW, b.roofFL = b.measureRooflines() })
	return b.roofBW, b.roofFL
}

func (b *Backend) measureRooflines() (bw, fl float64) {
	defer b.enter()()
	d := b.d
	alloc := func(n int) uintptr {
		var p uintptr
		if r := ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n)); int32(r) != 0 {
			return 0
		}
		return p
	}
	best := func(reps int, run func()) float64 { // shortest seconds for reps calls of run
		run()
		b.sync()
		t := 0.0
		for k := 0; k < 3; k++ {
			start := time.Now()
			for i := 0; i < reps; i++ {
				run()
			}
			b.sync()
			if el := time.Since(start).Seconds(); t == 0 || el < t {
				t = el
			}
		}
		return t
	}
	const n = 1 << 30 // floats (4 GiB)
	if p, out := alloc(4*n), alloc(256); p != 0 && out != 0 {
		ccall(d.cuMemsetD32Async, p, 0, n, 0)
		t := best(10, func() {
			b.launch("k_readsum", dim3{b.sms * 8, 1, 1}, dim3{512, 1, 1}, 0, pArg(p), lArg(n/4), pArg(out))
		})
		bw = 10 * 4 * n / t
		b.sync()
		ccall(d.cuMemFree, p)
		ccall(d.cuMemFree, out)
	}
	if b.lt == nil {
		return bw, 0
	}
	const m = 8192
	w, x, y := alloc(2*m*m), alloc(2*m*m), alloc(4*m*m)
	if w != 0 && x != 0 && y != 0 {
		g, bl := flatGrid(m * m)
		b.launch("k_randbf16", g, bl, 0, pArg(w), lArg(m*m), iArg(1))
		b.launch("k_randbf16", g, bl, 0, pArg(x), lArg(m*m), iArg(2))
		if plan, err := b.lt.plan(m, m, m, m, alignOf(y, 4*m)); err == nil {
			t := best(10, func() {
				b.record(opLt, uint64(plan.id), uint64(w), uint64(x), uint64(y))
			})
			fl = 10 * 2 * float64(m) * m * m / t
		}
	}
	b.sync()
	for _, p := range []uintptr{w, x, y} {
		if p != 0 {
			ccall(d.cuMemFree, p)
		}
	}
	return bw, fl
}
