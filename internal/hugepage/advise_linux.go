package hugepage

import (
	"os"
	"strconv"
	"strings"

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
