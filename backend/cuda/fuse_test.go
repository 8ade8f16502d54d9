package cuda

import (
	"context"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/model"
	"github.com/ringo-ai/ringo/model/bailing"
)

// fusedRun runs f on g with the fusion of NormRoPELightning on or off and
// returns the kernels it issued.
func fusedRun(g *Backend, on bool, f func()) int64 {
	saved := g.fuseRope
	g.fuseRope = on
	defer func() { g.fuseRope = saved }()
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

// TestFusedDecode decodes the fixture models at batch 1 (fast mode) with
// the QK norm and RoPE inside the lightning kernel and the MoE layers'
// norm, router and routing in one kernel (k_norm_route, sm_90), each
// layer's input norm in its first GEMV (gemv_bf16v1n/v2n), and without:
// the same
// logits (the same arithmetic), and fewer kernels per fused step for the
// lightning model.
func TestFusedDecode(t *testing.T) {
	g := gpu(t, false)
	u, err := New(0, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	serialBackend(u)
	u.fuseRope, u.normRoute, u.normGEMV = false, false, false
	for _, tc := range []struct {
		dir   string
		decay bailing.DecayConvention
	}{{"tiny-linear", bailing.DecaySGLang}, {"tiny-linear-hfdecay", bailing.DecayHF}} {
		t.Run(tc.dir, func(t *testing.T) {
			exp, ck := openFixture(t, tc.dir)
			load := func(be *Backend) (*bailing.Model, *model.Request) {
				m, err := bailing.Load(ck.ConfigJSON, ck.Generation, ck, be, bailing.Options{Decay: tc.decay})
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
				for j := range rf.Logits {
					if math.Float32bits(rf.Logits[j]) != math.Float32bits(ru.Logits[j]) {
						t.Fatalf("step %d: logit %d is %v fused, %v unfused", s, j, rf.Logits[j], ru.Logits[j])
					}
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
// against the CPU; spans of 1–7 tokens, several per call, up to GEMVRows
// rows; and that more rows are not fused.
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
		{4, 128, 128, false, []int{3, 5}},
		{4, 64, 32, true, []int{1, 0, 7}},
		{4, 16, 8, true, []int{2}}, // the fixtures' head dim
		{2, 256, 0, false, []int{1}},
		{4, 128, 64, true, []int{1, 1, 1, 1, 1, 1, 1, 1, 1}}, // 9 rows: not fused
	} {
		what := fmt.Sprintf("%+v", c)
		Hd := c.H * c.d
		spans, pos, decay := recInputs(rng, c.H, c.spans, 5, 7)
		T := len(pos)
		wlen := c.d
		if c.wfull {
			wlen = 2 * Hd
		}
		cw, gw := upload(t, g, hostWeight(rng, "qknorm", backend.BF16, 1, wlen, 2))
		rope := backend.RoPE{Dim: c.dim, Theta: 600000}
		qk, v := randT(t, g, rng, T, 2*Hd, 3), randT(t, g, rng, T, Hd, 1)
		var outs [2]backend.Tensor
		cs, sts := recStates(g, rng, len(spans), Hd, c.d)
		scale := float32(1 / math.Sqrt(float64(c.d)))
		qk0 := gpuCopy(g, qk.g)
		var kernels [2]int64
		for s, on := range []bool{false, true} {
			outs[s] = g.Alloc(T, Hd)
			x := gpuCopy(g, qk0)
			kernels[s] = fusedRun(g, on, func() {
				backend.NormRoPELightning(g, outs[s], x, v.g, gw, c.d, 1e-6, rope, pos, spans, sts[s], decay, scale)
			})
			if on && T <= GEMVRows {
				sameTensors(t, what+": qk unchanged", g, x, qk0, 0)
			}
			g.Free(x)
		}
		if want := kernels[0] - 1; T > GEMVRows && kernels[1] != kernels[0] || T <= GEMVRows && kernels[1] != want {
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
		for _, o := range outs {
			g.Free(o)
		}
		for _, st := range sts {
			for _, u := range st {
				g.Free(u)
			}
		}
	}
}

// recInputs returns the spans of the lightning tests (one per length in
// lens, the first at position pos0, each pos0+step·i), a random position
// for each of their rows, and H head decays.
func recInputs(rng *rand.Rand, H int, lens []int, pos0, step int) ([]backend.Span, []int32, []float32) {
	var spans []backend.Span
	T := 0
	for i, n := range lens {
		spans = append(spans, backend.Span{Row: T, N: n, Pos: pos0 + step*i})
		T += n
	}
	pos := make([]int32, T)
	for i := range pos {
		pos[i] = int32(rng.Intn(40000))
	}
	decay := make([]float32, H)
	for h := range decay {
		decay[h] = 0.05 + 0.3*float32(h)/float32(H)
	}
	return spans, pos, decay
}

// recStates returns n random [Hd, d] lightning states on the CPU and two
// copies of each on the GPU (for a fused and an unfused run).
func recStates(g *Backend, rng *rand.Rand, n, Hd, d int) ([]backend.Tensor, [2][]backend.Tensor) {
	var cs []backend.Tensor
	var sts [2][]backend.Tensor
	for range n {
		vals := make([]float32, Hd*d)
		for j := range vals {
			vals[j] = rng.Float32()*2 - 1
		}
		st := host().Alloc(Hd, d)
		host().Write(st, vals)
		cs = append(cs, st)
		for s := range sts {
			u := g.Alloc(Hd, d)
			g.Write(u, vals)
			sts[s] = append(sts[s], u)
		}
	}
	return cs, sts
}

// TestNormRoute checks k_norm_route (AddRMSNorm, the router's GEMV and the
// routing in one kernel) against the three kernels it replaces on the same
// GPU: bit-identical residual, norm, logits and routing, on Ring-mini's
// shapes and on smaller, ragged and softmax-scored ones; and that a batch
// of two rows and routers past the kernel's limits take the three kernels.
func TestNormRoute(t *testing.T) {
	g := gpu(t, false)
	if g.ccMaj < 9 {
		t.Skip("k_norm_route needs sm_90 (thread block clusters)")
	}
	rng := rand.New(rand.NewSource(29))
	for _, c := range []struct {
		T, K, E, groups, keep, topk int
		sigmoid, bias, fused        bool
	}{
		{1, 2048, 256, 8, 4, 8, true, true, true}, // Ring-mini
		{1, 4096, 256, 8, 4, 8, true, true, true}, // Ring-flash's hidden size
		{1, 64, 16, 4, 2, 4, true, true, true},    // the fixtures
		{1, 2056, 128, 4, 2, 6, true, false, true},
		{1, 1024, 64, 1, 1, 6, false, false, true},
		{1, 3000, 256, 8, 4, 8, true, true, true},
		{2, 2048, 256, 8, 4, 8, true, true, false},
		{1, 2048, 512, 8, 4, 8, true, true, false},
	} {
		what := fmt.Sprintf("%+v", c)
		_, nw := upload(t, g, hostWeight(rng, "model.layers.1.post_attention_layernorm.weight", backend.BF16, 1, c.K, 1))
		_, rw := upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.weight", backend.BF16, c.E, c.K, 0.05))
		var bias backend.Weight
		if c.bias {
			_, bias = upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.expert_bias", backend.F32, 1, c.E, 0.1))
		}
		p := backend.RouteParams{TopK: c.topk, Groups: c.groups, TopKGroups: c.keep, Sigmoid: c.sigmoid, Normalize: true, Scale: 2.5}
		x0, a := randT(t, g, rng, c.T, c.K, 2), randT(t, g, rng, c.T, c.K, 1)
		var xs, hs, ls [2]backend.Tensor
		var ids [2][]int32
		var wts [2][]float32
		for s, on := range []bool{false, true} {
			saved := g.normRoute
			g.normRoute = on
			xs[s], hs[s], ls[s] = gpuCopy(g, x0.g), g.Alloc(c.T, c.K), g.Alloc(c.T, c.E)
			mark := kernelMark(g)
			r := backend.AddRMSNormRoute(g, hs[s], xs[s], a.g, nw, 1e-6, ls[s], rw, bias, p)
			ks := queuedKernels(g, mark)
			g.normRoute = saved
			ids[s], wts[s] = make([]int32, c.T*c.topk), make([]float32, c.T*c.topk)
			for i := range c.T {
				r.Selected(i, ids[s][i*c.topk:(i+1)*c.topk], wts[s][i*c.topk:(i+1)*c.topk])
			}
			if fused := slices.Contains(ks, "k_norm_route"); fused != (on && c.fused) || fused == slices.Contains(ks, "k_route") {
				t.Errorf("%s: kernels %v", what, ks)
			}
		}
		sameTensors(t, what+": residual", g, xs[1], xs[0], 0)
		sameTensors(t, what+": norm", g, hs[1], hs[0], 0)
		sameTensors(t, what+": logits", g, ls[1], ls[0], 0)
		for i := range ids[0] {
			if ids[1][i] != ids[0][i] || math.Float32bits(wts[1][i]) != math.Float32bits(wts[0][i]) {
				t.Errorf("%s: slot %d: expert %d weight %v fused, %d %v unfused", what, i, ids[1][i], wts[1][i], ids[0][i], wts[0][i])
			}
		}
		if e := gpuRelErr(g, xs[0], x0.g); e == 0 {
			t.Errorf("%s: the residual was not updated", what)
		}
		for s := range xs {
			g.Free(xs[s])
			g.Free(hs[s])
			g.Free(ls[s])
		}
	}
}

// TestNormGEMV checks AddRMSNormTo followed by a one-row GEMV of its output
// (the norm then runs in the GEMV's blocks, gemv_bf16v1n/v2n/v4n) against the
// same operations with the fusion off (k_addrmsnorm, then the GEMV):
// bit-identical product, norm and residual, x unchanged, one kernel fewer;
// against the CPU; and that an operation other than such a GEMV, or two
// rows, leaves the norm to k_addrmsnorm with the same results.
func TestNormGEMV(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(31))
	defer func(on bool, g4 int, tma bool) { g.normGEMV, g.gemv4n, g.bf16TMA = on, g4, tma }(g.normGEMV, g.gemv4n, g.bf16TMA)
	tmaOK := g.ccMaj >= 9 && g.smemOptin >= bf16tSmem+(17<<10)
	for _, c := range []struct {
		T, N, K int
		then    string // "gemv", or "add" (an Add of the norm's output comes first)
		fused   bool
		g4      int  // gemv4n: four rows per warp from this many rows (gemv_bf16v4n)
		tma     bool // gemv_bf16t4n for gemv_bf16v4n, the rows streamed by bulk copies (sm_90)
	}{
		{1, 8192, 2048, "gemv", true, 0, false},    // Ring-mini's qkv|gate: two rows per warp
		{1, 8192, 2048, "gemv", true, 4096, false}, // four rows per warp
		{1, 5000, 2048, "gemv", true, 4096, false}, // four rows per warp, a ragged last block
		{1, 8192, 2048, "gemv", true, 4096, true},  // four rows per warp streamed by bulk copies
		{1, 5000, 2048, "gemv", true, 4096, true},
		{1, 5000, 1800, "gemv", true, 4096, true}, // a last round of one chunk
		{1, 3072, 2048, "gemv", true, 0, false},   // softmax layers' qkv: one row per warp
		{1, 1000, 512, "gemv", true, 0, false},
		{1, 7, 64, "gemv", true, 0, false},
		{1, 3072, 2048, "add", false, 0, false},
		{2, 3072, 2048, "gemv", false, 0, false},
	} {
		if c.tma && !tmaOK {
			continue
		}
		what := fmt.Sprintf("%+v", c)
		g.gemv4n, g.bf16TMA = c.g4, c.tma
		cw, gw := upload(t, g, hostWeight(rng, "w", backend.BF16, c.N, c.K, 0.5))
		cn, nw := upload(t, g, hostWeight(rng, "norm", backend.F32, 1, c.K, 1))
		x, a := randT(t, g, rng, c.T, c.K, 1), randT(t, g, rng, c.T, c.K, 1)
		x0 := gpuCopy(g, x.g)
		type result struct{ h, y, out backend.Tensor }
		var res [2]result
		var kernels [2]int64
		for s, on := range []bool{false, true} {
			r := result{g.Alloc(c.T, c.K), g.Alloc(c.T, c.K), g.Alloc(c.T, c.N)}
			g.normGEMV = on
			g.Sync()
			k0 := g.Stats().Kernels
			mark := kernelMark(g)
			g.AddRMSNormTo(r.h, r.y, x.g, a.g, nw, 1e-6)
			if c.then == "add" {
				g.Add(r.h, r.h, r.h)
			}
			g.MatMul(r.out, r.h, gw)
			want := "gemv_bf16v4n"
			if c.tma {
				want = "gemv_bf16t4n"
			}
			if ks := queuedKernels(g, mark); on && c.g4 > 0 && !slices.Contains(ks, want) {
				t.Errorf("%s: %s did not run: %v", what, want, ks)
			}
			g.Sync()
			kernels[s] = g.Stats().Kernels - k0
			res[s] = r
		}
		g.normGEMV = true
		sameTensors(t, what+": product", g, res[1].out, res[0].out, 0)
		sameTensors(t, what+": norm", g, res[1].h, res[0].h, 0)
		sameTensors(t, what+": residual", g, res[1].y, res[0].y, 0)
		sameTensors(t, what+": x unchanged", g, x.g, x0, 0)
		if fused := kernels[1] == kernels[0]-1; fused != c.fused || !c.fused && kernels[1] != kernels[0] {
			t.Errorf("%s: %d kernels fused, %d not (want fused: %v)", what, kernels[1], kernels[0], c.fused)
		}
		if c.then == "gemv" {
			// the CPU: Add, RMSNorm, MatMul
			h, y, out := zeroT(g, c.T, c.K), zeroT(g, c.T, c.K), zeroT(g, c.T, c.N)
			backend.AddRMSNormTo(host(), h.c, y.c, x.c, a.c, cn, 1e-6)
			host().MatMul(out.c, h.c, cw)
			g.Copy(out.g, res[1].out)
			g.Copy(y.g, res[1].y)
			compare(t, what+": residual against the CPU", g, y, 1e-6)
			compare(t, what+": product against the CPU", g, out, 2e-2)
		}
		for _, r := range res {
			g.Free(r.h)
			g.Free(r.y)
			g.Free(r.out)
		}
		g.Free(x0)
	}
}

// TestNormGEMVPlain checks RMSNorm of one row into another tensor followed
// by a GEMV of its output (the norm then runs in the GEMV's blocks, with a
// and y null) against the same operations with the fusion off (k_rmsnorm,
// then the GEMV): bit-identical product and norm, x unchanged, one kernel
// fewer; against the CPU; and that an operation other than such a GEMV, an
// RMSNorm in place or over groups, leaves the norm to k_rmsnorm.
func TestNormGEMVPlain(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(37))
	defer func(on bool) { g.normPlain = on }(g.normPlain)
	for _, c := range []struct {
		N, K, group int
		then        string // "gemv", "add" (an Add of the norm's output first) or "inplace" (RMSNorm of x in place)
		fused       bool
	}{
		{8192, 2048, 2048, "gemv", true}, // Ring-mini's first qkv|gate: four rows per warp
		{3072, 2048, 2048, "gemv", true}, // one row per warp
		{5000, 2048, 2048, "gemv", true}, // two rows per warp
		{3072, 2048, 2048, "add", false},
		{3072, 2048, 2048, "inplace", false},
		{3072, 2048, 512, "gemv", false}, // groups
		{1000, 512, 512, "gemv", false},  // k_rmsnorm's threads differ from addnorm_row's
		{100, 2560, 2560, "gemv", false}, // and more values than addnorm_row's registers
	} {
		what := fmt.Sprintf("%+v", c)
		cw, gw := upload(t, g, hostWeight(rng, "w", backend.BF16, c.N, c.K, 0.5))
		cn, nw := upload(t, g, hostWeight(rng, "norm", backend.F32, 1, c.K, 1))
		x := randT(t, g, rng, 1, c.K, 1)
		x0 := gpuCopy(g, x.g)
		var h, out [2]backend.Tensor
		var kernels [2]int64
		for s, on := range []bool{false, true} {
			g.normPlain = on
			src := x.g
			if c.then == "inplace" {
				src = gpuCopy(g, x.g)
				h[s] = src
			} else {
				h[s] = g.Alloc(1, c.K)
			}
			out[s] = g.Alloc(1, c.N)
			g.Sync()
			k0 := g.Stats().Kernels
			mark := kernelMark(g)
			g.RMSNorm(h[s], src, nw, c.group, 1e-6)
			if c.then == "add" {
				g.Add(h[s], h[s], h[s])
			}
			g.MatMul(out[s], h[s], gw)
			ks := queuedKernels(g, mark)
			if rn := slices.Contains(ks, "k_rmsnorm"); on && c.fused == rn {
				t.Errorf("%s: fused %v, but the kernels were %v", what, c.fused, ks)
			}
			g.Sync()
			kernels[s] = g.Stats().Kernels - k0
		}
		sameTensors(t, what+": product", g, out[1], out[0], 0)
		sameTensors(t, what+": norm", g, h[1], h[0], 0)
		sameTensors(t, what+": x unchanged", g, x.g, x0, 0)
		if want := kernels[0] - 1; c.fused && kernels[1] != want {
			t.Errorf("%s: %d kernels fused, want %d", what, kernels[1], want)
		}
		// against the CPU (the fused run's results)
		hh, oo := zeroT(g, 1, c.K), zeroT(g, 1, c.N)
		host().RMSNorm(hh.c, x.c, cn, c.group, 1e-6)
		if c.then == "add" {
			host().Add(hh.c, hh.c, hh.c)
		}
		host().MatMul(oo.c, hh.c, cw)
		g.Copy(hh.g, h[1])
		g.Copy(oo.g, out[1])
		compare(t, what+": norm against the CPU", g, hh, 2e-6)
		compare(t, what+": product against the CPU", g, oo, 2e-2)
		for s := range 2 {
			g.Free(h[s])
			g.Free(out[s])
		}
		g.Free(x0)
	}
}

// TestRecGate checks k_lightning_recg (the decode recurrence with the gate
// norm of its output inside it) against k_lightning_rec then
// k_rmsnorm_sigmul on the same GPU: the states and the output within float
// rounding (the two kernels contract the state update into FMAs
// differently, and the fused one sums 8 rows per thread instead of 4), one
// kernel fewer; spans of one token (several per
// call, an empty one among them), and spans of two tokens, which are not
// fused; and against the CPU.
func TestRecGate(t *testing.T) {
	g := gpu(t, false)
	if !g.recGate {
		t.Skip("k_lightning_recg needs sm_90 (clusters of 16 blocks)")
	}
	// how many of each variant's clusters fit at once, and which one runs
	// by default (a report: Ring-flash launches 8 per decode step)
	for _, H := range []int{16, 32} {
		R := 512 / rgJB
		grid, block, smem := dim3{H, rgDim / rgJB, 1}, dim3{rgJB, R, 1}, 4*R*rgJB+4*2*rgDim
		saved := g.recMinB
		g.recMinB = 0
		t.Logf("%d heads: %d clusters of 16 blocks launched; k_lightning_recg fits %d at once, k_lightning_recg2 %d; the default runs %s",
			H, H/rgHeads, g.maxClusters("k_lightning_recg", grid, block, smem), g.maxClusters("k_lightning_recg2", grid, block, smem),
			recgName(g.recgTwo(grid, block, smem)))
		g.recMinB = saved
	}
	rng := rand.New(rand.NewSource(29))
	for _, c := range []struct {
		H     int
		wfull bool
		spans []int
	}{
		{16, true, []int{1}}, // Ring-mini decode
		{32, true, []int{1}}, // Ring-flash decode
		{16, true, []int{1, 1, 1}},
		{8, false, []int{1, 0, 1}},
		{16, true, []int{2}}, // not fused
	} {
		const d, dim = 128, 64
		what := fmt.Sprintf("%+v", c)
		Hd := c.H * d
		spans, pos, decay := recInputs(rng, c.H, c.spans, 3, 11)
		T := len(pos)
		cw, gw := upload(t, g, hostWeight(rng, "qknorm", backend.BF16, 1, 2*Hd, 2))
		glen := rgHeads * d
		if c.wfull {
			glen = Hd
		}
		cgw, ggw := upload(t, g, hostWeight(rng, "gnorm", backend.F32, 1, glen, 2))
		rope := backend.RoPE{Dim: dim, Theta: 600000}
		qk, v, gate := randT(t, g, rng, T, 2*Hd, 3), randT(t, g, rng, T, Hd, 1), randT(t, g, rng, T, Hd, 2)
		// unfused, k_lightning_recg, k_lightning_recg2
		var outs [3]backend.Tensor
		cs, sts2 := recStates(g, rng, len(spans), Hd, d)
		sts := [3][]backend.Tensor{sts2[0], sts2[1], make([]backend.Tensor, len(spans))}
		for i, st := range sts[0] {
			sts[2][i] = g.Alloc(st.Rows, st.Cols)
			g.Copy(sts[2][i], st)
		}
		scale := float32(1 / math.Sqrt(float64(d)))
		var kernels [3]int64
		saved, savedB := g.recGate, g.recMinB
		for s := range outs {
			outs[s] = g.Alloc(T, Hd)
			g.recGate, g.recMinB = s > 0, max(s, 1)
			g.trace, g.launched = true, g.launched[:0]
			kernels[s] = fusedRun(g, true, func() {
				backend.NormRoPELightning(g, outs[s], qk.g, v.g, gw, d, 1e-6, rope, pos, spans, sts[s], decay, scale)
				backend.RMSNormSigmoidMul(g, outs[s], outs[s], gate.g, ggw, rgHeads*d, 1e-6)
			})
			name := recgName(s == 2)
			fused := slices.Contains(g.launched, name)
			g.trace = false
			if want := s > 0 && c.spans[0] == 1; fused != want {
				t.Errorf("%s: %s launched %v, want %v (%v)", what, name, fused, want, g.launched)
			}
		}
		g.recGate, g.recMinB = saved, savedB
		if fused := c.spans[0] == 1; fused && kernels[1] != kernels[0]-1 || !fused && kernels[1] != kernels[0] {
			t.Errorf("%s: %d kernels with the gate fused, %d without", what, kernels[1], kernels[0])
		}
		sameTensors(t, what+": output", g, outs[1], outs[0], 1e-5)
		// the same code at another register budget: the same bits
		sameTensors(t, what+": k_lightning_recg2 output", g, outs[2], outs[1], 0)
		for i := range spans {
			sameTensors(t, fmt.Sprintf("%s: state %d", what, i), g, sts[1][i], sts[0][i], 1e-6)
			sameTensors(t, fmt.Sprintf("%s: k_lightning_recg2 state %d", what, i), g, sts[2][i], sts[1][i], 0)
		}
		o := zeroT(g, T, Hd)
		backend.NormRoPELightning(host(), o.c, qk.c, v.c, cw, d, 1e-6, rope, pos, spans, cs, decay, scale)
		backend.RMSNormSigmoidMul(host(), o.c, o.c, gate.c, cgw, rgHeads*d, 1e-6)
		g.Copy(o.g, outs[1])
		compare(t, what+": output against the CPU", g, o, 1e-4)
		for _, o := range outs {
			g.Free(o)
		}
		for _, st := range sts {
			for _, u := range st {
				g.Free(u)
			}
		}
	}
}
