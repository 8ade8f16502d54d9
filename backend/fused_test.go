package backend

import (
	"fmt"
	"slices"
	"testing"
)

// recorder is a Backend that records the calls of the operations the fused
// helpers fall back to (any other operation panics on the nil Backend).
type recorder struct {
	Backend
	calls []string
}

func (r *recorder) RMSNorm(dst, x Tensor, w Weight, group int, eps float32) {
	r.calls = append(r.calls, fmt.Sprintf("RMSNorm(%d,%d,%d,%g)", dst.Off, x.Off, group, eps))
}

func (r *recorder) ApplyRoPE(x Tensor, headDim int, rope RoPE, pos []int32) {
	r.calls = append(r.calls, fmt.Sprintf("ApplyRoPE(%d,%d,%d,%v)", x.Off, headDim, rope.Dim, pos))
}

func (r *recorder) SigmoidMul(dst, x, gate Tensor) {
	r.calls = append(r.calls, fmt.Sprintf("SigmoidMul(%d,%d,%d)", dst.Off, x.Off, gate.Off))
}

func (r *recorder) Add(dst, x, y Tensor) {
	r.calls = append(r.calls, fmt.Sprintf("Add(%d,%d,%d)", dst.Off, x.Off, y.Off))
}

func (r *recorder) MatMul(dst, x Tensor, w Weight) {
	r.calls = append(r.calls, fmt.Sprintf("MatMul(%d,%d)", dst.Off, x.Off))
}

func (r *recorder) Route(logits Tensor, bias Weight, p RouteParams) Routing {
	r.calls = append(r.calls, fmt.Sprintf("Route(%d,%d)", logits.Off, p.TopK))
	return nil
}

// fusing is a recorder that also implements the fused operations.
type fusing struct{ recorder }

func (f *fusing) RMSNormRoPE(x Tensor, w Weight, headDim int, eps float32, rope RoPE, pos []int32) {
	f.calls = append(f.calls, fmt.Sprintf("RMSNormRoPE(%d,%d,%g,%d,%v)", x.Off, headDim, eps, rope.Dim, pos))
}

func (f *fusing) RMSNormSigmoidMul(dst, x, gate Tensor, w Weight, group int, eps float32) {
	f.calls = append(f.calls, fmt.Sprintf("RMSNormSigmoidMul(%d,%d,%d,%d,%g)", dst.Off, x.Off, gate.Off, group, eps))
}

func (f *fusing) AddRMSNormTo(dst, y, x, a Tensor, w Weight, eps float32) {
	f.calls = append(f.calls, fmt.Sprintf("AddRMSNormTo(%d,%d,%d,%d,%g)", dst.Off, y.Off, x.Off, a.Off, eps))
}

// picked is a Routing returned by fusing.AddRMSNormRoute.
type picked struct{ Routing }

func (f *fusing) AddRMSNormRoute(dst, x, a Tensor, w Weight, eps float32, logits Tensor, router, bias Weight, p RouteParams) Routing {
	f.calls = append(f.calls, fmt.Sprintf("AddRMSNormRoute(%d,%d,%d,%g,%d,%d)", dst.Off, x.Off, a.Off, eps, logits.Off, p.TopK))
	return picked{}
}

// declining implements AddRMSNormRouter but accepts nothing.
type declining struct{ recorder }

func (d *declining) AddRMSNormRoute(dst, x, a Tensor, w Weight, eps float32, logits Tensor, router, bias Weight, p RouteParams) Routing {
	d.calls = append(d.calls, "declined")
	return nil
}

// TestFusedHelpers checks that the fused helpers call the fused operation
// when the backend has it and the two plain operations, in order and on the
// right tensors, when it does not. (backend/cpu checks the fallback's values.)
func TestFusedHelpers(t *testing.T) {
	x, d, g := Tensor{Off: 1}, Tensor{Off: 2}, Tensor{Off: 3}
	rope, pos := RoPE{Dim: 64, Theta: 1e4}, []int32{7, 3}
	for _, c := range []struct {
		name  string
		run   func(b Backend)
		plain []string
		fused []string
	}{
		{"RMSNormRoPE", func(b Backend) { RMSNormRoPE(b, x, nil, 128, 0.5, rope, pos) },
			[]string{"RMSNorm(1,1,128,0.5)", "ApplyRoPE(1,128,64,[7 3])"},
			[]string{"RMSNormRoPE(1,128,0.5,64,[7 3])"}},
		{"RMSNormSigmoidMul", func(b Backend) { RMSNormSigmoidMul(b, d, x, g, nil, 512, 0.25) },
			[]string{"RMSNorm(2,1,512,0.25)", "SigmoidMul(2,2,3)"},
			[]string{"RMSNormSigmoidMul(2,1,3,512,0.25)"}},
		{"RMSNormSigmoidMul in place", func(b Backend) { RMSNormSigmoidMul(b, x, x, g, nil, 512, 0.25) },
			[]string{"RMSNorm(1,1,512,0.25)", "SigmoidMul(1,1,3)"},
			[]string{"RMSNormSigmoidMul(1,1,3,512,0.25)"}},
		{"AddRMSNormTo", func(b Backend) { AddRMSNormTo(b, d, Tensor{Off: 5}, x, g, nil, 0.5) },
			[]string{"Add(5,1,3)", "RMSNorm(2,5,0,0.5)"},
			[]string{"AddRMSNormTo(2,5,1,3,0.5)"}},
		{"AddRMSNormRoute", func(b Backend) { AddRMSNormRoute(b, d, x, g, nil, 0.5, Tensor{Off: 4}, nil, nil, RouteParams{TopK: 8}) },
			[]string{"Add(1,1,3)", "RMSNorm(2,1,0,0.5)", "MatMul(4,2)", "Route(4,8)"},
			[]string{"AddRMSNormRoute(2,1,3,0.5,4,8)"}},
	} {
		r, f := &recorder{}, &fusing{}
		c.run(r)
		c.run(f)
		if !slices.Equal(r.calls, c.plain) {
			t.Errorf("%s without the fused operation: calls %q, want %q", c.name, r.calls, c.plain)
		}
		if !slices.Equal(f.calls, c.fused) {
			t.Errorf("%s with the fused operation: calls %q, want %q", c.name, f.calls, c.fused)
		}
	}
}

// TestAddRMSNormRouteDeclined checks that a backend declining the fused
// routing gets the plain operations, and that the fused one's routing is
// returned.
func TestAddRMSNormRouteDeclined(t *testing.T) {
	d := &declining{}
	AddRMSNormRoute(d, Tensor{Off: 2}, Tensor{Off: 1}, Tensor{Off: 3}, nil, 0.5, Tensor{Off: 4}, nil, nil, RouteParams{TopK: 8})
	want := []string{"declined", "Add(1,1,3)", "RMSNorm(2,1,0,0.5)", "MatMul(4,2)", "Route(4,8)"}
	if !slices.Equal(d.calls, want) {
		t.Errorf("calls %q, want %q", d.calls, want)
	}
	if _, ok := AddRMSNormRoute(&fusing{}, Tensor{}, Tensor{}, Tensor{}, nil, 0, Tensor{}, nil, nil, RouteParams{}).(picked); !ok {
		t.Error("the fused operation's routing was not returned")
	}
}
