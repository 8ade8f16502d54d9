//go:build !linux

package hugepage

func advise([]byte) bool { return false }

// Usage reports how many bytes of this process's memory are mapped with huge
// pages; ok is false where the system does not report it (here).
func Usage() (anon, file int64, ok bool) { return 0, 0, false }

// Advised reports whether b lies in a mapping advised to use huge pages; ok
// is false where that cannot be read (here). For tests.
func Advised(b []byte) (advised, ok bool) { return false, false }

// Available reports whether this system offers transparent huge pages on
// request (never here).
func Available() bool { return false }

// MappedShare reports which share of a file mapping is mapped with huge
// pages; ok is false where that cannot be read (here).
func MappedShare(b []byte, samples int) (share float64, ok bool) { return 0, false }
