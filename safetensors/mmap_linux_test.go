package safetensors

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// TestMapFileAdvised checks that a mapped checkpoint shard is advised to use
// huge pages (docs/PERFORMANCE.md, "CPU: huge pages").
func TestMapFileAdvised(t *testing.T) {
	if !hugepage.Available() {
		t.Skip("no transparent huge pages here")
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, unmap, err := mapFile(f, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	if adv, ok := hugepage.Advised(b); !ok || !adv {
		t.Fatalf("mapping advised = %v (readable %v), want true", adv, ok)
	}
}
