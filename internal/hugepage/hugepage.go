// Package hugepage asks the operating system to back large, long-lived
// buffers (weights, KV caches, recurrent states) with transparent huge pages.
//
// Decode streams hundreds of MiB per token through buffers that are touched
// once per step. With 4 KiB pages every 4 KiB of that stream costs a TLB miss,
// which under virtualisation is a two-level page walk: on a 2-core VM this
// halved the speed of the MoE decode (docs/PERFORMANCE.md). 2 MiB pages remove
// almost all of those misses.
//
// Everything here is advice: on systems without transparent huge pages, or
// where they are switched off, the calls do nothing and the buffers work as
// before.
package hugepage

import "unsafe"

// Size is the huge page size assumed for alignment (x86-64 and arm64 Linux
// with 4 KiB base pages).
const Size = 2 << 20

// Min is the smallest buffer worth advising: smaller ones rarely contain a
// whole aligned huge page.
const Min = 2 * Size

// Make returns a zeroed slice of n elements, allocated by the Go runtime and
// advised to use huge pages when it is at least Min bytes long. The advice
// only takes effect for pages not yet touched, which a fresh large allocation
// usually is. It stays with the address range (a separate kernel mapping)
// after the garbage collector frees the slice, so later Go allocations there
// may get huge pages too; that costs at most some memory granularity.
func Make[T any](n int) []T {
	s := make([]T, n)
	if n > 0 {
		var z T
		Advise(unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), n*int(unsafe.Sizeof(z))))
	}
	return s
}

// Advise asks for huge pages on the whole 2 MiB-aligned pages inside b, which
// may be Go memory or a memory mapping. It reports whether the advice was
// given (false for short buffers and on systems without the feature).
func Advise(b []byte) bool {
	if len(b) < Min {
		return false
	}
	p := uintptr(unsafe.Pointer(&b[0]))
	lo := (p + Size - 1) &^ (Size - 1)
	hi := (p + uintptr(len(b))) &^ (Size - 1)
	if hi <= lo {
		return false
	}
	return advise(b[lo-p : hi-p])
}
