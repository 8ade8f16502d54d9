//go:build unix

package gguf

import (
	"fmt"
	"os"

	"github.com/ringo-ai/ringo/internal/hugepage"
	"golang.org/x/sys/unix"
)

// mapFile maps path read-only into memory.
func mapFile(path string) ([]byte, func() error, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	if size == 0 {
		return []byte{}, func() error { return nil }, nil
	}
	if size != int64(int(size)) {
		return nil, nil, fmt.Errorf("file too large to map (%d bytes)", size)
	}
	b, err := unix.Mmap(int(fd.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("mmap: %w", err)
	}
	// Pages read in through this mapping then come into the page cache as
	// 2 MiB folios and are mapped as such (see package hugepage).
	hugepage.Advise(b)
	return b, func() error { return unix.Munmap(b) }, nil
}

// dropPages advises the kernel that the mapping b is not needed now.
func dropPages(b []byte) error { return unix.Madvise(b, unix.MADV_DONTNEED) }
