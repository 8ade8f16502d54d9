package hugepage

import (
	"os"
	"runtime"
	"testing"
)

func TestAdvise(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want bool // on a system with transparent huge pages
	}{
		{"empty", 0, false},
		{"short", Min - 1, false},
		{"two pages", Min + Size, true},
		{"large", 64 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := make([]byte, tt.n)
			want := tt.want && runtime.GOOS == "linux" && Available()
			if got := Advise(b); got != want {
				t.Errorf("Advise(%d bytes) = %v, want %v", tt.n, got, want)
			}
		})
	}
}

func TestMake(t *testing.T) {
	s := Make[float32](3 << 20)
	if len(s) != 3<<20 {
		t.Fatalf("len %d", len(s))
	}
	for i := range s {
		if s[i] != 0 {
			t.Fatalf("s[%d] = %v, want 0", i, s[i])
		}
		s[i] = float32(i)
	}
	if s[len(s)-1] != float32(len(s)-1) {
		t.Fatal("write lost")
	}
	if len(Make[uint16](0)) != 0 {
		t.Fatal("Make(0) not empty")
	}
}

func TestUsage(t *testing.T) {
	anon, file, ok := Usage()
	if runtime.GOOS == "linux" {
		if _, err := os.Stat("/proc/self/smaps_rollup"); err == nil && !ok {
			t.Fatal("Usage found nothing in /proc/self/smaps_rollup")
		}
	}
	if anon < 0 || file < 0 {
		t.Fatalf("Usage = %d, %d", anon, file)
	}
}
