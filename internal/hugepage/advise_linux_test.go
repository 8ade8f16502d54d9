package hugepage

import (
	"testing"

	"golang.org/x/sys/unix"
)

// TestAdvised checks Advised against a buffer advised by Make and a fresh
// anonymous mapping that is not.
func TestAdvised(t *testing.T) {
	if !Available() {
		t.Skip("no transparent huge pages here")
	}
	big := Make[byte](16 << 20)
	if adv, ok := Advised(big); !ok || !adv {
		t.Fatalf("Advised(Make(16 MiB)) = %v, %v; want true, true", adv, ok)
	}
	plain, err := unix.Mmap(-1, 0, 8<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(plain)
	if adv, ok := Advised(plain); !ok || adv {
		t.Fatalf("Advised(plain mapping) = %v, %v; want false, true", adv, ok)
	}
	if !Advise(plain) {
		t.Fatal("Advise(plain mapping) failed")
	}
	if adv, ok := Advised(plain); !ok || !adv {
		t.Fatalf("Advised(plain mapping after Advise) = %v, %v; want true, true", adv, ok)
	}
}

// TestMappedShare maps a file cached in 2 MiB pieces (written through
// Writer) and checks that MappedShare sees most of its samples as huge
// pages where the kernel caches files that way, and rejects short buffers.
func TestMappedShare(t *testing.T) {
	if _, ok := MappedShare(make([]byte, Size), 4); ok {
		t.Fatal("MappedShare of a 2 MiB buffer with 4 samples: ok")
	}
	if !Available() {
		t.Skip("no transparent huge pages here")
	}
	// the same 32 MiB written in 2 MiB pieces (Writer) and in 64 KiB ones
	share := func(piece int) float64 {
		path := t.TempDir() + "/f"
		fd, err := unix.Open(path, unix.O_CREAT|unix.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		var w interface{ Write([]byte) (int, error) } = fdWriter(fd)
		hw := NewWriter(fdWriter(fd), 0)
		if piece == Size {
			w = hw
		}
		buf := make([]byte, piece)
		for off := 0; off < 32<<20; off += piece {
			if _, err := w.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		if err := hw.Flush(); err != nil {
			t.Fatal(err)
		}
		b, err := unix.Mmap(fd, 0, 32<<20, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(b)
		Advise(b)
		s, ok := MappedShare(b, 8)
		if !ok {
			t.Fatal("MappedShare: not readable")
		}
		if s < 0 || s > 1 {
			t.Fatalf("share %v out of [0, 1]", s)
		}
		return s
	}
	huge, small := share(Size), share(64<<10)
	t.Logf("share of huge pages: %.2f written in 2 MiB pieces, %.2f in 64 KiB ones", huge, small)
	// whether the page cache uses 2 MiB folios depends on the kernel, the
	// filesystem and free memory; where it did for the first file, the
	// second must show fewer
	if huge >= 0.9 && small >= huge {
		t.Fatalf("64 KiB writes gave share %.2f, 2 MiB writes %.2f", small, huge)
	}
}

type fdWriter int

func (f fdWriter) Write(p []byte) (int, error) { return unix.Write(int(f), p) }
