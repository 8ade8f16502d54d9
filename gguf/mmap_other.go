//go:build !unix

package gguf

import "os"

// mapFile reads the whole file (no mmap on this platform).
func mapFile(path string) ([]byte, func() error, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return b, func() error { return nil }, nil
}

// dropPages does nothing where files are read rather than mapped.
func dropPages([]byte) error { return nil }
