//go:build !linux

package hugepage

func advise([]byte) bool { return false }

// Usage reports how many bytes of this process's memory are mapped with huge
// pages; ok is false where the system does not report it (here).
func Usage() (anon, file int64, ok bool) { return 0, 0, false }
