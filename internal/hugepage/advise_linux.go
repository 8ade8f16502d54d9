package hugepage

import (
	"os"
	"runtime"
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
	for _, f := range mapping(b) {
		if f[0] == "VmFlags:" {
			return slices.Contains(f[1:], "hg"), true
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

// MappedShare touches one byte at samples places spread over the file
// mapping b, 2 MiB apart at least, and reports which share of them the
// kernel mapped with huge pages (FilePmdMapped of the mapping in
// /proc/self/smaps, over samples × Size). A share near 0 means the file sits
// in the page cache in small pieces. ok is false where that cannot be read
// or b is too short to tell.
func MappedShare(b []byte, samples int) (share float64, ok bool) {
	if samples <= 0 || len(b) < samples*Size {
		return 0, false
	}
	var sink byte
	step := len(b) / samples &^ (Size - 1)
	for i := 0; i < samples; i++ {
		sink += b[i*step]
	}
	runtime.KeepAlive(sink) // the reads are the point
	for _, f := range mapping(b) {
		if f[0] == "FilePmdMapped:" && len(f) >= 2 {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, false
			}
			return min(1, float64(kb<<10)/float64(samples*Size)), true
		}
	}
	return 0, false
}

// mapping returns the fields of the lines of /proc/self/smaps that describe
// the mapping holding the middle of b (nil if none or unreadable).
func mapping(b []byte) [][]string {
	if len(b) == 0 {
		return nil
	}
	addr := uint64(uintptr(unsafe.Pointer(&b[len(b)/2])))
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return nil
	}
	var out [][]string
	inside := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		// a mapping's first line: "start-end perms offset dev inode [path]"
		if lo, hi, found := strings.Cut(f[0], "-"); found {
			a, err1 := strconv.ParseUint(lo, 16, 64)
			z, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 == nil && err2 == nil {
				if inside {
					break
				}
				inside = a <= addr && addr < z
				continue
			}
		}
		if inside {
			out = append(out, f)
		}
	}
	return out
}
