//go:build !(linux && (amd64 || arm64))

package cuda

import (
	"fmt"
	"runtime"
)

const dlSupported = false

func dlopen(path string) (uintptr, error) {
	return 0, fmt.Errorf("cuda: not supported on %s/%s", runtime.GOOS, runtime.GOARCH)
}

func dlsym(h uintptr, name string) (uintptr, error) {
	return 0, fmt.Errorf("cuda: not supported on %s/%s", runtime.GOOS, runtime.GOARCH)
}

func ccall(fn uintptr, args ...uintptr) uintptr { panic("cuda: not supported on " + runtime.GOOS) }

func gostring(p uintptr) string { return "" }

func cmem(p uintptr, n int) []byte { panic("cuda: not supported on " + runtime.GOOS) }
