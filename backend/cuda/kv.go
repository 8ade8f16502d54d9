package cuda

import "github.com/ringo-ai/ringo/backend"

// AllocKV implements backend.Backend: KV caches are float32 on the GPU.
func (b *Backend) AllocKV(rows, cols int) backend.KV {
	return backend.KV{K: b.Alloc(rows, cols), V: b.Alloc(rows, cols)}
}
