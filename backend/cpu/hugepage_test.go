package cpu

import (
	"testing"
	"unsafe"

	"github.com/ringo-ai/ringo/internal/hugepage"
)

// TestBuffersAdvised checks that large activations and KV caches of every
// type are advised to use huge pages (docs/PERFORMANCE.md, "CPU: huge
// pages").
func TestBuffersAdvised(t *testing.T) {
	if !hugepage.Available() {
		t.Skip("no transparent huge pages here")
	}
	const rows, cols = 8192, 512 // 16 MiB in f32, 4.25 MiB in q8_0
	for _, kv := range []kvType{kvF32, kvF16, kvQ8} {
		b := New(1)
		b.kv = kv
		var mem []byte
		switch buf := b.AllocKV(rows, cols).V.Buf.(type) {
		case *buffer:
			mem = unsafe.Slice((*byte)(unsafe.Pointer(&buf.d[0])), 4*len(buf.d))
		case *f16buffer:
			mem = unsafe.Slice((*byte)(unsafe.Pointer(&buf.d[0])), 2*len(buf.d))
		case *q8buffer:
			mem = buf.d
		case *q8tbuffer:
			mem = buf.d
		}
		if adv, ok := hugepage.Advised(mem); !ok || !adv {
			t.Errorf("KV cache type %v: advised = %v (readable %v), want true", kv, adv, ok)
		}
	}
}
