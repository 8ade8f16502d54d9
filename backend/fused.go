package backend

// AddRMSNormer is implemented by backends that fuse the residual addition
// with the normalisation that follows it (one pass over the row instead of
// two kernels).
type AddRMSNormer interface {
	// AddRMSNorm computes x = x + a, then dst = RMSNorm(x) with weight w over
	// groups of x.Cols (see Backend.RMSNorm). dst must not alias x or a.
	AddRMSNorm(dst, x, a Tensor, w Weight, eps float32)
}

// AddRMSNorm computes x = x + a and dst = RMSNorm(x)·w (one group per row),
// fused when b implements AddRMSNormer and as Add then RMSNorm otherwise;
// the results are the same either way.
func AddRMSNorm(b Backend, dst, x, a Tensor, w Weight, eps float32) {
	if f, ok := b.(AddRMSNormer); ok {
		f.AddRMSNorm(dst, x, a, w, eps)
		return
	}
	b.Add(x, x, a)
	b.RMSNorm(dst, x, w, x.Cols, eps)
}
