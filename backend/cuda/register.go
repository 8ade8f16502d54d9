package cuda

import "github.com/ringo-ai/ringo/backend"

func init() {
	backend.Register("cuda", func(o backend.Options) (backend.Backend, error) {
		return New(o.Index, Options{Precise: o.Precise})
	})
}
