//go:build unix

package safetensors

import (
	"os"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"golang.org/x/sys/unix"
)

// mapFile maps f read-only. The returned function unmaps it.
func mapFile(f *os.File, size int64) ([]byte, func() error, error) {
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	hugepage.Advise(b) // see package hugepage and gguf's mapFile
	return b, func() error { return unix.Munmap(b) }, nil
}
