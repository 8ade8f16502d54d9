//go:build linux && (amd64 || arm64)

package cuda

import (
	"unsafe"

	"github.com/ebitengine/purego"
)

// dlSupported reports whether this platform can load the CUDA libraries.
const dlSupported = true

func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

func dlsym(h uintptr, name string) (uintptr, error) { return purego.Dlsym(h, name) }

// ccall calls the C function fn with integer/pointer arguments and returns
// its integer result. Pointers to Go memory passed as uintptr(unsafe.Pointer(p))
// in the call expression are kept alive and unmoved for the call.
//
//go:uintptrescapes
func ccall(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}

// gostring copies a NUL-terminated C string.
func gostring(p uintptr) string {
	if p == 0 {
		return ""
	}
	ptr := *(*unsafe.Pointer)(unsafe.Pointer(&p))
	n := 0
	for *(*byte)(unsafe.Add(ptr, n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(ptr), n))
}

// cmem returns n bytes of C memory at p as a slice.
func cmem(p uintptr, n int) []byte {
	ptr := *(*unsafe.Pointer)(unsafe.Pointer(&p))
	return unsafe.Slice((*byte)(ptr), n)
}
