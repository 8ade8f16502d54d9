package gguf

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// TestMapFileAdvised checks that a mapped model file is advised to use huge
// pages (docs/PERFORMANCE.md, "CPU: huge pages").
func TestMapFileAdvised(t *testing.T) {
	if !hugepage.Available() {
		t.Skip("no transparent huge pages here")
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b, release, err := mapFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if adv, ok := hugepage.Advised(b); !ok || !adv {
		t.Fatalf("mapping advised = %v (readable %v), want true", adv, ok)
	}
}
