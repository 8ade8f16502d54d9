package hugepage

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

func advise(b []byte) bool {
	return unix.Madvise(b, unix.MADV_HUGEPAGE) == nil
}

// Usage reports how many bytes of this process's memory are mapped with huge
// pages: anonymous memory (Go heap buffers) and file mappings (memory-mapped
// weights). ok is false where the system does not report it.
func Usage() (anon, file int64, ok bool) {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "AnonHugePages":
			anon, ok = n<<10, true
		case "FilePmdMapped":
			file, ok = n<<10, true
		}
	}
	return anon, file, ok
}

// Advised reports whether the memory at the middle of b lies in a mapping
// advised to use huge pages (the "hg" flag in /proc/self/smaps); ok is false
// where that cannot be read. For tests.
func Advised(b []byte) (advised, ok bool) {
	if len(b) == 0 {
		return false, false
	}
	addr := uint64(uintptr(unsafe.Pointer(&b[len(b)/2])))
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return false, false
	}
	inside := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "VmFlags:" {
			if inside {
				return slices.Contains(f[1:], "hg"), true
			}
			continue
		}
		// a mapping's first line: "start-end perms offset dev inode [path]"
		if lo, hi, found := strings.Cut(f[0], "-"); found {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				inside = a <= addr && addr < z
			}
		}
	}
	return false, false
}

// Available reports whether this system offers transparent huge pages on
// request (mode "always" or "madvise").
func Available() bool {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	return err == nil && !strings.Contains(string(b), "[never]")
}
