package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/checkpoint"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
)

// fusedRun runs f on g with the norm fusion on or off and returns the
// kernels it issued.
func fusedRun(g *Backend, on bool, f func()) int64 {
	saved := g.fuse
	g.fuse = 0
	if on {
		g.fuse = fuseAll
	}
	defer func() { g.fuse = saved }()
	g.Sync()
	before := g.Stats().Kernels
	f()
	g.Sync()
	return g.Stats().Kernels - before
}

// sameTensors reports (as a test error) when got and want, on the GPU,
// differ by more than tol (0: bit-identical values).
func sameTensors(t *testing.T, what string, g *Backend, got, want backend.Tensor, tol float64) {
	t.Helper()
	if e := gpuRelErr(g, got, want); e > tol {
		t.Errorf("%s: relative error %.3g between the fused and unfused kernels (allowed %.3g)", what, e, tol)
	} else {
		t.Logf("%s: relative error %.2g between the fused and unfused kernels", what, e)
	}
}

// TestFusedAddNorm checks AddRMSNorm fused into the single-row GEMVs around
// it (the residual add into the GEMV producing a, the norm into the GEMV
// consuming h, or queued as k_rmsnorm when something else comes next)
// against the same operations unfused, and against the CPU. At 2,048
// columns the sums are those of k_addrmsnorm (bit-identical); at other
// widths their order differs.
func TestFusedAddNorm(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(21))
	for _, kind := range []backend.Kind{backend.BF16, backend.F8E4M3} {
		for _, c := range []struct{ D, K, N int }{{2048, 512, 3000}, {2048, 2048, 7}, {320, 128, 200}, {4096, 64, 9}} {
			for _, next := range []string{"gemv", "other"} {
				what := fmt.Sprintf("%v D=%d K=%d N=%d next=%s", kind, c.D, c.K, c.N, next)
				cd, gd := upload(t, g, hostWeight(rng, "wd", kind, c.D, c.K, 0.1))
				cq, gq := upload(t, g, hostWeight(rng, "wq", kind, c.N, c.D, 0.1))
				cn, gn := upload(t, g, hostWeight(rng, "norm", backend.BF16, 1, c.D, 2))
				o := contiguousPair(g, randT(t, g, rng, 1, c.K, 1)) // aligned: the vector GEMVs
				x0 := randT(t, g, rng, 1, c.D, 3)
				var res [2][4]backend.Tensor // x, a, h, y per setting
				var kernels [2]int64
				for i, on := range []bool{false, true} {
					x, a, h, y := gpuCopy(g, x0.g), g.Alloc(1, c.D), g.Alloc(1, c.D), g.Alloc(1, c.N)
					kernels[i] = fusedRun(g, on, func() {
						g.MatMul(a, o.g, gd)
						backend.AddRMSNorm(g, h, x, a, gn, 1e-6)
						if next == "gemv" {
							g.MatMul(y, h, gq)
						} else {
							g.Add(y.ColRange(0, 1), y.ColRange(0, 1), y.ColRange(0, 1))
						}
					})
					res[i] = [4]backend.Tensor{x, a, h, y}
				}
				tol := 0.0
				if c.D != 2048 {
					tol = 1e-6
				}
				for j, name := range []string{"x", "a", "h", "y"} {
					if name == "y" && next != "gemv" {
						continue
					}
					sameTensors(t, what+": "+name, g, res[1][j], res[0][j], tol)
				}
				// with a GEMV next the norm runs inside it; else it is queued as
				// k_rmsnorm instead of k_addrmsnorm
				if want := kernels[0] - 1; next != "gemv" && kernels[1] != kernels[0] || next == "gemv" && kernels[1] != want {
					t.Errorf("%s: %d kernels fused, %d unfused", what, kernels[1], kernels[0])
				}
				// the CPU
				a, h, y := zeroT(g, 1, c.D), zeroT(g, 1, c.D), zeroT(g, 1, c.N)
				host().MatMul(a.c, o.c, cd)
				backend.AddRMSNorm(host(), h.c, x0.c, a.c, cn, 1e-6)
				host().MatMul(y.c, h.c, cq)
				g.Copy(x0.g, res[1][0])
				g.Copy(h.g, res[1][2])
				g.Copy(y.g, res[1][3])
				compare(t, what+": x against the CPU", g, x0, 2e-2)
				compare(t, what+": h against the CPU", g, h, 2e-2)
				if next == "gemv" {
					compare(t, what+": y against the CPU", g, y, 2e-2)
				}
				for _, r := range res {
					for _, u := range r {
						g.Free(u)
					}
				}
			}
		}
	}
}

// TestNormGateMatMul checks the grouped norm and sigmoid gate computed in
// the prologue of the GEMV that consumes them against RMSNormSigmoidMul
// then MatMul (bit-identical for 256-thread norm blocks: groups of 512,
// Ring-mini's) and against the CPU.
func TestNormGateMatMul(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(22))
	for _, kind := range []backend.Kind{backend.BF16, backend.F8E4M3} {
		for _, c := range []struct {
			K, N, group int
			wfull       bool
		}{{2048, 2048, 512, true}, {2048, 9, 512, false}, {4096, 300, 512, true}, {320, 64, 64, true}, {256, 40, 256, false}} {
			what := fmt.Sprintf("%v %+v", kind, c)
			wlen := c.group
			if c.wfull {
				wlen = c.K
			}
			cw, gw := upload(t, g, hostWeight(rng, "dense", kind, c.N, c.K, 0.1))
			cn, gn := upload(t, g, hostWeight(rng, "gnorm", backend.BF16, 1, wlen, 2))
			x, gate := randT(t, g, rng, 1, c.K, 3), randT(t, g, rng, 1, c.K, 4) // unaligned: read in the prologue
			xs := gpuCopy(g, x.g)
			want, got := g.Alloc(1, c.N), g.Alloc(1, c.N)
			var kernels [2]int64
			kernels[0] = fusedRun(g, false, func() { backend.NormGateMatMul(g, want, xs, gate.g, gn, c.group, 1e-6, gw) })
			kernels[1] = fusedRun(g, true, func() { backend.NormGateMatMul(g, got, x.g, gate.g, gn, c.group, 1e-6, gw) })
			if kernels[1] != 1 || kernels[0] != 2 {
				t.Errorf("%s: %d kernels fused, %d unfused: want 1 and 2", what, kernels[1], kernels[0])
			}
			tol := 0.0
			if c.group != 512 {
				tol = 1e-6
			}
			sameTensors(t, what, g, got, want, tol)
			y := zeroT(g, 1, c.N)
			backend.NormGateMatMul(host(), y.c, x.c, gate.c, cn, c.group, 1e-6, cw)
			g.Copy(y.g, got)
			compare(t, what+" against the CPU", g, y, 2e-2)
			g.Free(xs)
			g.Free(want)
			g.Free(got)
		}
	}
}

// TestFusedDecode decodes the fixture models at batch 1 (fast mode, BF16
// weights: the vector GEMVs) with the norm fusion on and off: the logits
// must agree (the hidden size, 64, gives other norm blocks than 256 threads,
// so the sums' order differs) and the fused steps must issue fewer kernels.
func TestFusedDecode(t *testing.T) {
	g := gpu(t, false)
	u, err := New(0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.fuse = 0
	for _, dir := range []string{"tiny-linear", "tiny-softmax"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join("..", "..", "testdata", dir)
			exp := loadExpected(t, path)
			ck, err := checkpoint.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			load := func(be *Backend) (*bailing.Model, *model.Request) {
				m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, be, bailing.Options{})
				if err != nil {
					t.Fatal(err)
				}
				st := m.NewState()
				t.Cleanup(st.Free)
				return m, &model.Request{State: st, Tokens: exp.PromptIDs}
			}
			mf, rf := load(g)
			mu, ru := load(u)
			var kf, ku int64
			const steps = 16
			for s := 0; s <= steps; s++ {
				bf, bu := g.Stats().Kernels, u.Stats().Kernels
				if err := mf.Forward(context.Background(), []*model.Request{rf}); err != nil {
					t.Fatal(err)
				}
				if err := mu.Forward(context.Background(), []*model.Request{ru}); err != nil {
					t.Fatal(err)
				}
				if s > 0 {
					kf += g.Stats().Kernels - bf
					ku += u.Stats().Kernels - bu
				}
				if e := relErr(rf.Logits, ru.Logits); e > 1e-5 {
					t.Fatalf("step %d: logits differ by %.3g with and without the fused norms", s, e)
				}
				next := []int32{argmax(ru.Logits)}
				rf.Tokens, ru.Tokens = next, next
			}
			t.Logf("%.1f kernels per decode step fused, %.1f unfused", float64(kf)/steps, float64(ku)/steps)
			if kf >= ku {
				t.Errorf("fused decode issued %d kernels, unfused %d", kf, ku)
			}
		})
	}
}

// TestNormRoPELightning checks the QK norm and RoPE inside the recurrent
// lightning kernel against RMSNormRoPE then Lightning on the GPU (the same
// values: bit-identical outputs and states), that qk is left unchanged, and
// against the CPU; spans of 1–15 tokens, several per call.
func TestNormRoPELightning(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(23))
	for _, c := range []struct {
		H, d, dim int
		wfull     bool
		spans     []int
	}{
		{16, 128, 64, true, []int{1}}, // Ring-mini decode
		{16, 128, 64, true, []int{1, 1, 1}},
		{4, 128, 128, false, []int{3, 15}},
		{4, 64, 32, true, []int{1, 0, 7}},
		{4, 16, 8, true, []int{2}}, // the fixtures' head dim
		{2, 256, 0, false, []int{1}},
	} {
		what := fmt.Sprintf("%+v", c)
		Hd := c.H * c.d
		var spans []backend.Span
		T := 0
		for i, n := range c.spans {
			spans = append(spans, backend.Span{Row: T, N: n, Pos: 5 + 7*i})
			T += n
		}
		pos := make([]int32, T)
		for i := range pos {
			pos[i] = int32(rng.Intn(40000))
		}
		wlen := c.d
		if c.wfull {
			wlen = 2 * Hd
		}
		cw, gw := upload(t, g, hostWeight(rng, "qknorm", backend.BF16, 1, wlen, 2))
		decay := make([]float32, c.H)
		for h := range decay {
			decay[h] = 0.05 + 0.3*float32(h)/float32(c.H)
		}
		rope := backend.RoPE{Dim: c.dim, Theta: 600000}
		qk, v := randT(t, g, rng, T, 2*Hd, 3), randT(t, g, rng, T, Hd, 1)
		var outs [2]backend.Tensor
		var sts [2][]backend.Tensor
		var cs []backend.Tensor
		for range spans {
			vals := make([]float32, Hd*c.d)
			for j := range vals {
				vals[j] = rng.Float32()*2 - 1
			}
			st := host().Alloc(Hd, c.d)
			host().Write(st, vals)
			cs = append(cs, st)
			for s := range sts {
				u := g.Alloc(Hd, c.d)
				g.Write(u, vals)
				sts[s] = append(sts[s], u)
			}
		}
		scale := float32(1 / math.Sqrt(float64(c.d)))
		qk0 := gpuCopy(g, qk.g)
		var kernels [2]int64
		for s, on := range []bool{false, true} {
			outs[s] = g.Alloc(T, Hd)
			x := gpuCopy(g, qk0)
			kernels[s] = fusedRun(g, on, func() {
				backend.NormRoPELightning(g, outs[s], x, v.g, gw, c.d, 1e-6, rope, pos, spans, sts[s], decay, scale)
			})
			if on {
				sameTensors(t, what+": qk unchanged", g, x, qk0, 0)
			}
			g.Free(x)
		}
		if kernels[1] != kernels[0]-1 {
			t.Errorf("%s: %d kernels fused, %d unfused", what, kernels[1], kernels[0])
		}
		sameTensors(t, what+": output", g, outs[1], outs[0], 0)
		for i := range spans {
			sameTensors(t, fmt.Sprintf("%s: state %d", what, i), g, sts[1][i], sts[0][i], 0)
		}
		o := zeroT(g, T, Hd)
		backend.NormRoPELightning(host(), o.c, qk.c, v.c, cw, c.d, 1e-6, rope, pos, spans, cs, decay, scale)
		g.Copy(o.g, outs[1])
		compare(t, what+": output against the CPU", g, o, 1e-4)
		g.Free(qk0)
		g.Free(outs[0])
		g.Free(outs[1])
		for _, st := range sts {
			for _, u := range st {
				g.Free(u)
			}
		}
	}
}

func TestParseFuse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want fuseSet
	}{
		{"", fuseRope}, {"all", fuseAll}, {"1", fuseAll}, {"0", 0}, {"none", 0},
		{"add", fuseAdd}, {"gate,rope", fuseGate | fuseRope}, {" add , rope", fuseAdd | fuseRope}, {"bogus", 0},
	} {
		if got := parseFuse(c.in); got != c.want {
			t.Errorf("parseFuse(%q) = %b, want %b", c.in, got, c.want)
		}
	}
}
