package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
)

// Fast mode's tensor-core kernels (MoE, chunked lightning, flash attention)
// round their inputs to BF16 (8 significant bits) and accumulate in FP32, so
// they are compared with the CPU backend at a BF16-level tolerance: the
// largest error relative to the largest reference value (relErr) must stay
// under fastTol.
const fastTol = 3e-2

func TestFastMoE(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(20))
	// T=600 takes moe_mmb (at least 64 rows per expert on average) where D
	// and I are multiples of 8; {8, 256, 512} runs its k pipeline over 8
	// and 4 steps, {8, 72, 136} ends on partial tiles and k steps
	for _, c := range []struct{ E, I, D int }{{16, 32, 64}, {8, 24, 70}, {32, 64, 128}, {8, 256, 512}, {8, 72, 136}} {
		ce, ge, _, _, _ := randExperts(t, g, c.E, c.I, c.D, bf16Weights(rng))
		p := backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{9, 70, 250, 600} { // 16-row tiles below 48 rows per expert, 64-row tiles above
			l := randT(t, g, rng, T, c.E, 3)
			x := randT(t, g, rng, T, c.D, 1)
			d := zeroT(g, T, c.D)
			if T%2 == 0 { // contiguous rows (k_moe_combine4 for the output)
				x, d = contiguousPair(g, x), contiguousPair(g, d)
			}
			host().MoE(d.c, x.c, host().Route(l.c, nil, p), ce)
			r := g.Route(l.g, nil, p)
			q0 := kernelMark(g)
			g.MoE(d.g, x.g, r, ge)
			// the tensor-core kernels, not the FP32 moe_gemm
			if ks := queuedKernels(g, q0); !slices.ContainsFunc(ks, func(n string) bool { return strings.HasPrefix(n, "moe_mm") }) {
				t.Errorf("fast moe %+v T=%d: kernels %v, no moe_mma*/moe_mmb*", c, T, ks)
			}
			compare(t, fmt.Sprintf("fast moe %+v T=%d", c, T), g, d, fastTol)
		}
	}
}

// TestMoEWGMMA checks the prefill expert GEMMs on wgmma (moe_mmb_gu_wg,
// moe_mmb_wg) against the same kernels on mma.sync: the same BF16 products
// accumulated in FP32 over the same k16 steps in the same order, which the
// H200 gives bit for bit (relative error 0; 1e-6 allowed). Shapes as
// TestFastMoE's with rows enough for moe_mmb: full and partial 128-row
// tiles and k steps, N not a multiple of the 128-column tile.
func TestMoEWGMMA(t *testing.T) {
	g := gpu(t, false)
	if !g.wgmma {
		t.Skip("no wgmma (sm_90 only)")
	}
	rng := rand.New(rand.NewSource(24))
	ssuf := ""
	if g.mmbStage {
		ssuf = "s"
	}
	defer func(yb bool) { g.moeYB = yb }(g.moeYB)
	g.moeYB = false
	for _, c := range []struct{ E, I, D int }{{16, 32, 64}, {8, 256, 512}, {8, 72, 136}, {4, 512, 2048}} {
		_, ge, _, _, _ := randExperts(t, g, c.E, c.I, c.D, bf16Weights(rng))
		p := backend.RouteParams{TopK: 2, Groups: 2, TopKGroups: 1, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{600, 1500} {
			x := contiguousPair(g, randT(t, g, rng, T, c.D, 1)).g
			r := g.Route(randT(t, g, rng, T, c.E, 3).g, nil, p)
			// moe runs the MoE into dst, checking that the named kernels ran
			moe := func(dst backend.Tensor, what string, kernels ...string) {
				q0 := kernelMark(g)
				g.MoE(dst, x, r, ge)
				ks := queuedKernels(g, q0)
				for _, k := range kernels {
					if !slices.Contains(ks, k) {
						t.Errorf("%+v T=%d: kernels %v, not the %s ones (no %s)", c, T, ks, what, k)
					}
				}
			}
			// same checks that two outputs agree bit for bit (1e-6 allowed)
			same := func(a, b backend.Tensor, what string) {
				if e := gpuRelErr(g, a, b); e > 1e-6 || math.IsNaN(e) {
					t.Errorf("%+v T=%d: relative error %.3g between %s", c, T, e, what)
				} else {
					t.Logf("%+v T=%d: relative error %.2g between %s", c, T, e, what)
				}
			}
			got, want := g.Alloc(T, c.D), g.Alloc(T, c.D)
			moe(got, "wgmma", "moe_mmb_gu_wg", "moe_mmb_wg")
			g.wgmma = false
			moe(want, "mma.sync", "moe_mmb_gu", "moe_mmb")
			g.wgmma = true
			same(got, want, "wgmma and mma.sync")
			// the expert outputs in BF16: the same on both, within BF16
			// rounding of the FP32 ones
			g.moeYB = true
			yb, ybm := g.Alloc(T, c.D), g.Alloc(T, c.D)
			moe(yb, "BF16-output", "moe_mmb_yb_wg"+ssuf, "k_moe_combine4b")
			g.wgmma = false
			moe(ybm, "BF16-output mma.sync", "moe_mmb_yb")
			g.wgmma = true
			same(yb, ybm, "wgmma and mma.sync with BF16 outputs")
			if g.mmbStage { // and the outputs stored directly from registers
				g.mmbStage = false
				moe(ybm, "direct-store", "moe_mmb_gu_wg", "moe_mmb_yb_wg")
				g.mmbStage = true
				same(yb, ybm, "BF16 outputs stored through shared memory and directly")
			}
			g.moeYB = false
			if e := gpuRelErr(g, yb, got); e > 4e-3 || e == 0 || math.IsNaN(e) {
				t.Errorf("%+v T=%d: relative error %.3g of BF16 expert outputs against FP32 ones (want (0, 4e-3])", c, T, e)
			} else {
				t.Logf("%+v T=%d: relative error %.2g of BF16 expert outputs against FP32 ones", c, T, e)
			}
			g.Free(got)
			g.Free(want)
			g.Free(yb)
			g.Free(ybm)
		}
	}
}

func TestFastLightning(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(21))
	for _, c := range []struct{ H, d int }{{2, 128}, {3, 64}, {4, 16}} {
		spans := []backend.Span{{Row: 0, N: 1, Pos: 5}, {Row: 1, N: 7, Pos: 0}, {Row: 8, N: 40, Pos: 3}, {Row: 48, N: 150, Pos: 0}, {Row: 198, N: 0, Pos: 2}, {Row: 198, N: 64, Pos: 9}, {Row: 262, N: 129, Pos: 0}}
		for _, aligned := range []bool{false, true} { // k_ltc_*'s loads of 4 or 16 bytes
			ks := checkLightning(t, g, rng, fmt.Sprintf("fast lightning (aligned %v)", aligned), c.H, c.d, 391, spans, 0.002, fastTol, aligned)
			// the chunked spans on tensor cores for head dims 64 and 128
			want := "k_lightning_chunk"
			if c.d == 64 || c.d == 128 {
				want = "k_ltc_out"
			}
			if !slices.ContainsFunc(ks, func(n string) bool { return strings.HasPrefix(n, want) }) {
				t.Errorf("fast lightning H=%d d=%d: kernels %v, none %s*", c.H, c.d, ks, want)
			}
		}
	}
}

func TestFastAttention(t *testing.T) {
	g := gpu(t, false)
	defer func(fa2, fa3, fa4, fa4w bool) { g.fa2, g.fa3, g.fa4, g.fa4w = fa2, fa3, fa4, fa4w }(g.fa2, g.fa3, g.fa4, g.fa4w)
	hasFA4, hasFA4W := g.fa4, g.fa4w
	rng := rand.New(rand.NewSource(22))
	for _, c := range []struct{ H, Hkv, hd int }{{8, 2, 128}, {4, 4, 64}, {8, 2, 64}, {4, 2, 16}} {
		caches := make([]backend.KV, 2)
		gc := make([]backend.KV, 2)
		for i := range caches {
			// contiguous caches and output: the BF16 copies that k_fattn2..4
			// read need rows of 16-byte multiples, the output even strides
			kp, vp := contiguousPair(g, zeroT(g, 2400, c.Hkv*c.hd)), contiguousPair(g, zeroT(g, 2400, c.Hkv*c.hd))
			caches[i], gc[i] = backend.KV{K: kp.c, V: vp.c}, backend.KV{K: kp.g, V: vp.g}
		}
		for _, spans := range [][]backend.Span{
			{{Row: 0, N: 37, Pos: 0}, {Row: 37, N: 270, Pos: 0}},
			{{Row: 0, N: 100, Pos: 37}, {Row: 100, N: 130, Pos: 270}},
			{{Row: 0, N: 2, Pos: 400}, {Row: 2, N: 1, Pos: 40}},
			{{Row: 0, N: 1, Pos: 402}, {Row: 1, N: 200, Pos: 41}},
		} {
			T := spans[1].Row + spans[1].N
			q := randT(t, g, rng, T, c.H*c.hd, 1)
			k, v := randT(t, g, rng, T, c.Hkv*c.hd, 1), randT(t, g, rng, T, c.Hkv*c.hd, 1)
			scale := float32(1 / math.Sqrt(float64(c.hd)))
			o := contiguousPair(g, zeroT(g, T, c.H*c.hd))
			host().Attention(o.c, q.c, k.c, v.c, spans, caches, c.hd, scale)
			nans := make([]float32, T*c.H*c.hd)
			for i := range nans {
				nans[i] = float32(math.NaN())
			}
			// prefill runs k_fattn (FP32 caches), k_fattn2, k_fattn3,
			// which needs 8-byte aligned query rows, and on sm_90 with head
			// dim 128 k_fattn4 with tiles of 64 and 128 keys (the caches
			// get the same keys again: Attention stores them first)
			var fa3, fa4 backend.Tensor
			for _, kern := range []string{"fattn", "fattn2", "fattn3", "fattn4", "fattn4w"} {
				if kern == "fattn4" && (!hasFA4 || c.hd != 128) || kern == "fattn4w" && (!hasFA4W || c.hd != 128) {
					continue
				}
				wg := kern == "fattn4" || kern == "fattn4w"
				g.fa2, g.fa3, g.fa4, g.fa4w = kern != "fattn", kern == "fattn3" || wg, wg, kern == "fattn4w"
				qg := q.g
				if g.fa3 {
					qg = contiguousPair(g, q).g
				}
				g.Write(o.g, nans) // a kernel that writes nothing must fail
				q0 := kernelMark(g)
				g.Attention(o.g, qg, k.g, v.g, spans, gc, c.hd, scale)
				// the kernel meant is the one that ran (prefill spans of
				// head dim 64 or 128; the decode kernels where no span has
				// more than GEMVRows rows, or for other head dims)
				want := map[string]string{"fattn": "k_fattn", "fattn2": "k_fattn2_", "fattn3": "k_fattn3_", "fattn4": "k_fattn4_", "fattn4w": "k_fattn4w_"}[kern]
				if maxRows(spans) <= GEMVRows || c.hd != 64 && c.hd != 128 {
					want = "k_attn"
				}
				if ks := queuedKernels(g, q0); !slices.ContainsFunc(ks, func(n string) bool { return strings.HasPrefix(n, want) }) {
					t.Errorf("%+v spans %v %s: kernels %v, none %s*", c, spans, kern, ks, want)
				}
				compare(t, fmt.Sprintf("fast attention %+v spans %v %s", c, spans, kern), g, o, fastTol)
				against := func(ref backend.Tensor, name string, tol float64) {
					if e := gpuRelErr(g, o.g, ref); e > tol || math.IsNaN(e) {
						t.Errorf("%+v spans %v: relative error %.3g between k_%s and k_%s", c, spans, e, kern, name)
					} else {
						t.Logf("%+v spans %v: relative error %.2g between k_%s and k_%s", c, spans, e, kern, name)
					}
				}
				switch kern {
				case "fattn3":
					fa3 = gpuCopy(g, o.g)
				case "fattn4":
					// wgmma against mma.sync: the same BF16 products in the
					// same order (bit-identical on the H200)
					against(fa3, "fattn3", 1e-6)
					fa4 = gpuCopy(g, o.g)
				case "fattn4w":
					// the running maxima per 128 keys instead of 64: the
					// BF16 probabilities round differently
					against(fa4, "fattn4", 4e-3)
				}
			}
			for _, u := range []backend.Tensor{fa3, fa4} {
				if u.Rows > 0 {
					g.Free(u)
				}
			}
		}
	}
}

// TestRooflines checks that the device rooflines are plausible.
func TestRooflines(t *testing.T) {
	g := gpu(t, false)
	bw, fl := g.Rooflines()
	t.Logf("rooflines: %.0f GB/s HBM read, %.0f TFLOP/s BF16 GEMM", bw/1e9, fl/1e12)
	if bw <= 0 || fl <= 0 {
		t.Errorf("rooflines %g B/s, %g FLOP/s", bw, fl)
	}
}

// unfusedSharedMoE computes dst = MoE(x) + (silu(x·gateᵀ) ⊙ x·upᵀ)·downᵀ
// with the plain operations (what the model runs without MoEShared).
func unfusedSharedMoE(b backend.Backend, dst, x backend.Tensor, r backend.Routing, ex backend.Experts, gateUp, down backend.Weight) {
	T := x.Rows
	D, I := down.Shape()
	gu, s := b.Alloc(T, 2*I), b.Alloc(T, D)
	g, u := gu.ColRange(0, I), gu.ColRange(I, I)
	b.MoE(dst, x, r, ex)
	b.MatMul(gu, x, gateUp)
	b.SiLUMul(g, g, u)
	b.MatMul(s, g, down)
	b.Add(dst, dst, s)
	b.Free(gu)
	b.Free(s)
}

// TestMoEShared checks the shared expert fused into the vector MoE kernels
// (fast mode, T <= GEMVRows) against the CPU's MoE, SwiGLU and Add, and
// against the GPU's own unfused sequence (the same FP32 arithmetic, the
// shared row added after the routed sum as Add does), and that it declines,
// leaving dst untouched, where it cannot fuse.
func TestMoEShared(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(22))
	const E = 16
	for _, c := range []struct{ I, D int }{{64, 128}, {128, 256}, {64, 256}, {128, 128}, {64, 2048}} {
		ce, ge, gate, up, down := randExperts(t, g, E, c.I, c.D, bf16Weights(rng))
		cgu, ggu := upload(t, g, hostWeight(rng, "shared gate_up", backend.BF16, 2*c.I, c.D, 0.3))
		cdn, gdn := upload(t, g, hostWeight(rng, "shared down", backend.BF16, c.D, c.I, 0.3))
		for _, k := range []int{2, 8} {
			p := backend.RouteParams{TopK: k, Groups: 1, TopKGroups: 1, Sigmoid: true, Normalize: true, Scale: 2.5}
			for _, T := range []int{1, 3, 8} {
				what := fmt.Sprintf("moe+shared %+v k=%d T=%d", c, k, T)
				l := randT(t, g, rng, T, E, 3)
				x := randT(t, g, rng, T, c.D, 1)
				if T%2 == 1 { // contiguous rows (no copy to aligned scratch)
					x = contiguousPair(g, x)
				}
				d := randT(t, g, rng, T, c.D, 1) // overwritten
				unfusedSharedMoE(host(), d.c, x.c, host().Route(l.c, nil, p), ce, cgu, cdn)
				if !g.MoEShared(d.g, x.g, g.Route(l.g, nil, p), ge, ggu, gdn) {
					t.Fatalf("%s: MoEShared declined", what)
				}
				compare(t, what, g, d, 1e-4)
				// the shared expert's blocks started before the PDL wait
				// (RINGO_CUDA_GU_EARLY; contiguous x, right after the
				// routing) or after it
				early := g.Alloc(T, c.D)
				saved := g.guEarly
				g.guEarly = !saved
				g.MoEShared(early, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
				g.guEarly = saved
				if e := gpuRelErr(g, early, d.g); e != 0 {
					t.Errorf("%s: relative error %.3g with moe_gu's shared blocks early=%v", what, e, !saved)
				}
				g.Free(early)
				// moe_dc's L2 requests for its rows before the PDL wait
				// (RINGO_CUDA_DC_PRE), and with them the rows' first
				// chunks in registers (RINGO_CUDA_DC_REG, on), change
				// nothing
				pre := g.Alloc(T, c.D)
				g.dcPre = !g.dcPre
				g.MoEShared(pre, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
				g.dcPre = !g.dcPre
				if e := gpuRelErr(g, pre, d.g); e != 0 {
					t.Errorf("%s: relative error %.3g with moe_dc's early requests %v", what, e, !g.dcPre)
				}
				g.Free(pre)
				// one row: moe_gd_bf16v (the default where it fits) against
				// moe_gu + moe_dc2, early or not, with each staging order,
				// the shared pairs in slot order or spread with their rows
				// staged, either grid barrier and each way of loading:
				// the same sums
				if T == 1 {
					// gdPair runs the MoE with moe_gd (the variant gdKernel
					// names, where it fits) and with moe_gu + moe_dc2 and
					// returns moe_gd's relative error against the two
					gdPair := func(what string) float64 {
						fused, two := g.Alloc(T, c.D), g.Alloc(T, c.D)
						defer g.Free(fused)
						defer g.Free(two)
						savedF := g.moeFused
						for _, on := range []bool{true, false} {
							g.moeFused = on && savedF
							dst := two
							if on {
								dst = fused
							}
							k, q0 := g.gdKernel(), kernelMark(g)
							g.MoEShared(dst, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
							if ks := queuedKernels(g, q0); on && savedF != slices.Contains(ks, k) {
								t.Errorf("%s: kernels %v, with %s %v", what, ks, k, savedF)
							}
						}
						g.moeFused = savedF
						return gpuRelErr(g, fused, two)
					}
					for i := range 40 {
						early, stage, spre, flip := i%2 == 0, i/2%5, i/10%2 == 1, i < 20
						savedE, savedS, savedL, savedP, savedB, savedD, savedQ := g.guEarly, g.dcSplit, g.gdStage, g.gdSharedPre, g.gdFlip, g.gdNA, g.gdPipe
						g.guEarly, g.dcSplit, g.gdStage, g.gdSharedPre, g.gdFlip, g.gdNA, g.gdPipe = early, 2, stage, spre, flip, i/4%2 == 0, i/8%2 == 1
						e := gdPair(what)
						g.guEarly, g.dcSplit, g.gdStage, g.gdSharedPre, g.gdFlip, g.gdNA, g.gdPipe = savedE, savedS, savedL, savedP, savedB, savedD, savedQ
						if e != 0 || math.IsNaN(e) {
							t.Errorf("%s: relative error %.3g of moe_gd_bf16v against moe_gu + moe_dc2 (early %v, staging %d, shared pairs spread %v, flip barrier %v, rows past L1 %v, pipelined %v)", what, e, early, stage, spre, flip, i/4%2 == 0, i/8%2 == 1)
						}
					}
					// moe_gd_bf16v (the knobs compiled in at their defaults;
					// the loop above ran moe_gd_bf16v_any) and its variants
					// for comparisons, early or not: the same sums
					for _, v := range append([]string{""}, gdVariants...) {
						for _, early := range []bool{true, false} {
							savedE, savedV := g.guEarly, g.gdVar
							g.guEarly, g.gdVar = early, v
							e := gdPair(what)
							g.guEarly, g.gdVar = savedE, savedV
							if e != 0 || math.IsNaN(e) {
								t.Errorf("%s: relative error %.3g of moe_gd_bf16v variant %q against moe_gu + moe_dc2 (early %v)", what, e, v, early)
							}
						}
					}
				}
				// moe_dc with two or three warps per output row against
				// one (RINGO_CUDA_DC_SPLIT), with and without the shared
				// expert: the same sums in another order
				for _, sp := range []int{2, 3} {
					for _, shared := range []bool{true, false} {
						split, one := g.Alloc(T, c.D), g.Alloc(T, c.D)
						for _, on := range []int{sp, 1} {
							dst := one
							if on > 1 {
								dst = split
							}
							saved := g.dcSplit
							g.dcSplit = on
							if shared {
								g.MoEShared(dst, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
							} else {
								g.MoE(dst, x.g, g.Route(l.g, nil, p), ge)
							}
							g.dcSplit = saved
						}
						if e := gpuRelErr(g, split, one); e > 1e-5 {
							t.Errorf("%s: relative error %.3g with moe_dc split over %d warps (shared %v)", what, e, sp, shared)
						}
						g.Free(split)
						g.Free(one)
					}
				}
				sameAsMoE3(t, what, g, d.g, func(dst backend.Tensor) bool { return g.MoEShared(dst, x.g, g.Route(l.g, nil, p), ge, ggu, gdn) })
				u := g.Alloc(T, c.D)
				unfusedSharedMoE(g, u, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
				if e := gpuRelErr(g, d.g, u); e > 1e-5 {
					t.Errorf("%s: relative error %.3g against the unfused GPU operations", what, e)
				} else {
					t.Logf("%s: relative error %.2g against the unfused GPU operations", what, e)
				}
				g.Free(u)
			}
		}
		// cases it declines: the grouped path (T > GEMVRows), a shared
		// expert of another width, precise mode
		p := backend.RouteParams{TopK: 2, Groups: 1, TopKGroups: 1, Sigmoid: true, Normalize: true, Scale: 2.5}
		_, ogu := upload(t, g, hostWeight(rng, "shared gate_up", backend.BF16, 2*(c.I+8), c.D, 0.3))
		_, odn := upload(t, g, hostWeight(rng, "shared down", backend.BF16, c.D, c.I+8, 0.3))
		gp := gpu(t, true)
		gpe, err := gp.UploadExperts(gate, up, down)
		if err != nil {
			t.Fatal(err)
		}
		_, pgu := upload(t, gp, hostWeight(rng, "shared gate_up", backend.BF16, 2*c.I, c.D, 0.3))
		_, pdn := upload(t, gp, hostWeight(rng, "shared down", backend.BF16, c.D, c.I, 0.3))
		for _, dc := range []struct {
			what string
			b    *Backend
			T    int
			ex   backend.Experts
			gu   backend.Weight
			dn   backend.Weight
		}{
			{"T=9", g, 9, ge, ggu, gdn},
			{"shared I+8", g, 3, ge, ogu, odn},
			{"precise", gp, 3, gpe, pgu, pdn},
		} {
			l := randT(t, dc.b, rng, dc.T, E, 3)
			x := randT(t, dc.b, rng, dc.T, c.D, 1)
			d := randT(t, dc.b, rng, dc.T, c.D, 1)
			before, after := make([]float32, dc.T*c.D), make([]float32, dc.T*c.D)
			dc.b.Read(d.g, before)
			if dc.b.MoEShared(d.g, x.g, dc.b.Route(l.g, nil, p), dc.ex, dc.gu, dc.dn) {
				t.Errorf("%+v %s: MoEShared did not decline", c, dc.what)
			}
			dc.b.Read(d.g, after)
			for i := range before {
				if math.Float32bits(before[i]) != math.Float32bits(after[i]) {
					t.Errorf("%+v %s: dst changed at %d: %g → %g", c, dc.what, i, before[i], after[i])
					break
				}
			}
		}
	}
}

// TestMoESharedPrefill checks the shared expert beside moe_mmb (prefill,
// fast mode, BF16): against the CPU's MoE, SwiGLU and Add (fastTol: BF16
// activations), and against the GPU's own unfused sequence, which rounds
// the same values to BF16 for the same cuBLASLt products and adds the
// shared row after the routed sum as the combine does (1e-5: cuBLASLt may
// pick another algorithm for other alignments).
func TestMoESharedPrefill(t *testing.T) {
	g := gpu(t, false)
	if !g.mmb || !g.mma || g.lt == nil {
		t.Skip("no moe_mmb or cuBLASLt on this GPU")
	}
	rng := rand.New(rand.NewSource(23))
	for _, c := range []struct{ E, I, SI, D int }{{16, 32, 32, 64}, {8, 72, 96, 136}, {8, 256, 256, 512}} {
		ce, ge, _, _, _ := randExperts(t, g, c.E, c.I, c.D, bf16Weights(rng))
		cgu, ggu := upload(t, g, hostWeight(rng, "shared gate_up", backend.BF16, 2*c.SI, c.D, 0.3))
		cdn, gdn := upload(t, g, hostWeight(rng, "shared down", backend.BF16, c.D, c.SI, 0.3))
		p := backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{600, 1000} {
			what := fmt.Sprintf("moe+shared prefill %+v T=%d", c, T)
			l := randT(t, g, rng, T, c.E, 3)
			x := randT(t, g, rng, T, c.D, 1)
			d := zeroT(g, T, c.D)
			if T == 600 { // contiguous rows (k_moe_combine4 for the output)
				x, d = contiguousPair(g, x), contiguousPair(g, d)
			}
			unfusedSharedMoE(host(), d.c, x.c, host().Route(l.c, nil, p), ce, cgu, cdn)
			q0 := kernelMark(g)
			if !g.MoEShared(d.g, x.g, g.Route(l.g, nil, p), ge, ggu, gdn) {
				t.Fatalf("%s: MoEShared declined", what)
			}
			prefix := func(p string) func(string) bool { return func(n string) bool { return strings.HasPrefix(n, p) } }
			if ks := queuedKernels(g, q0); !slices.ContainsFunc(ks, prefix("moe_mmb_gu")) ||
				T == 600 && !slices.ContainsFunc(ks, prefix("k_moe_combine4")) {
				t.Errorf("%s: kernels %v", what, ks)
			}
			compare(t, what, g, d, fastTol)
			u := g.Alloc(T, c.D)
			unfusedSharedMoE(g, u, x.g, g.Route(l.g, nil, p), ge, ggu, gdn)
			if e := gpuRelErr(g, d.g, u); e > 1e-5 || math.IsNaN(e) {
				t.Errorf("%s: relative error %.3g against the unfused GPU operations", what, e)
			} else {
				t.Logf("%s: relative error %.2g against the unfused GPU operations", what, e)
			}
			g.Free(u)
		}
	}
}

// maxRows is the most rows of any span.
func maxRows(spans []backend.Span) int {
	n := 0
	for _, sp := range spans {
		n = max(n, sp.N)
	}
	return n
}

// queuedKernels names the kernels g has queued since kernelMark returned
// from, whether or not the queue was issued meanwhile.
func queuedKernels(g *Backend, from int) []string {
	return slices.Clone(g.launched[from:])
}

// settledKernels is queuedKernels after the operation that waits for the
// next one, if any (a one-row product that may carry the router's partial
// logits, a norm that may join the GEMV after it), has been queued on its
// own.
func settledKernels(g *Backend, from int) []string {
	func() {
		defer g.enter()()
		g.emitPending()
	}()
	return queuedKernels(g, from)
}

// kernelMark starts recording the kernels g queues (Backend.trace) and
// returns the position for queuedKernels.
func kernelMark(g *Backend) int {
	g.trace = true
	return len(g.launched)
}

// bf16Weights makes random BF16 weights for randExperts.
func bf16Weights(rng *rand.Rand) func(name string, rows, cols int) backend.HostWeight {
	return func(name string, rows, cols int) backend.HostWeight {
		return hostWeight(rng, name, backend.BF16, rows, cols, 0.3)
	}
}

// sameAsMoE3 checks that run, a decode-sized MoE on g that wrote got with
// the two-kernel decode MoE, gives the same values with the three-kernel
// one (moe3: gate|up, then the down projections and their sum in two more
// kernels): the same FP32 operations in the same order, up to the
// compiler's choice of fused multiply-adds.
func sameAsMoE3(t *testing.T, what string, g *Backend, got backend.Tensor, run func(dst backend.Tensor) bool) {
	t.Helper()
	want := g.Alloc(got.Rows, got.Cols)
	defer g.Free(want)
	saved := g.moe3
	g.moe3 = true
	ok := run(want)
	g.moe3 = saved
	if !ok {
		t.Fatalf("%s: declined with moe3", what)
	}
	if e := gpuRelErr(g, got, want); e > 1e-6 {
		t.Errorf("%s: relative error %.3g between the two- and three-kernel MoE", what, e)
	}
}

// reblock gives an FP8 host weight square scale blocks of b rows and
// columns (new random scales).
func reblock(rng *rand.Rand, hw backend.HostWeight, b int) backend.HostWeight {
	hw.BlockRows, hw.BlockCols = b, b
	hw.Scale = make([]float32, ((hw.Rows+b-1)/b)*((hw.Cols+b-1)/b))
	for i := range hw.Scale {
		hw.Scale[i] = 0.5 / 200 * (0.5 + rng.Float32())
	}
	return hw
}

// TestGEMVSingleRow checks the decode GEMVs against the CPU, and the ones
// compiled for one activation row (gemv_bf16v1, gemv_fp81) against those for
// up to 8 (the same sums in the same order): rows longer than the first
// loads, ragged last chunks, grids with a partial last block.
func TestGEMVSingleRow(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(9))
	// FP8 in 16×16 blocks and in DeepSeek-style checkpoints' 128×128
	for _, kb := range []struct {
		kind  backend.Kind
		block int
	}{{backend.BF16, 0}, {backend.F8E4M3, 16}, {backend.F8E4M3, 128}} {
		kind := kb.kind
		for _, nk := range [][2]int{{1, 2048}, {7, 256}, {200, 2064}, {3000, 5120}, {9, 4112}, {2048, 4112}, {4099, 2048}, {33, 8}} {
			N, K := nk[0], nk[1]
			hw := hostWeight(rng, "w", kind, N, K, 0.5)
			if kb.block == 128 {
				if K%128 != 0 {
					continue
				}
				hw = reblock(rng, hw, 128)
			}
			cw, gw := upload(t, g, hw)
			for _, T := range []int{1, 3, 8} {
				what := fmt.Sprintf("%v/%d N=%d K=%d T=%d", kind, kb.block, N, K, T)
				x := randT(t, g, rng, T, K, 1)
				d := zeroT(g, T, N)
				host().MatMul(d.c, x.c, cw)
				saved, saved8 := g.gemv2, g.fp8Rows
				g.gemv2, g.fp8Rows = 0, 1 // one row per warp
				g.MatMul(d.g, x.g, gw)
				g.gemv2, g.fp8Rows = saved, saved8
				compare(t, what, g, d, 2e-2)
				if T == 1 {
					got := gpuCopy(g, d.g)
					g.gemvT8 = true
					g.MatMul(got, x.g, gw)
					g.gemvT8 = false
					if e := gpuRelErr(g, got, d.g); e > 1e-6 {
						t.Errorf("%s: the kernel for 8 rows differs from the one for 1 by %.3g", what, e)
					} else if e != 0 {
						t.Logf("%s: the kernels for 8 rows and for 1 differ by %.3g (FMA contraction)", what, e)
					}
					g.Free(got)
					if gw.(*weight).kind == backend.BF16 { // (one row of weights is kept in F32)
						// two rows per warp: the same sums as one
						got := gpuCopy(g, d.g)
						g.gemv2 = 1
						mark := kernelMark(g)
						g.MatMul(got, x.g, gw)
						ks := queuedKernels(g, mark)
						g.gemv2 = saved
						sameTensors(t, what+": two rows per warp", g, got, d.g, 0)
						if !slices.Equal(ks, []string{"gemv_bf16v2"}) {
							t.Errorf("%s: kernels %v, want gemv_bf16v2", what, ks)
						}
						g.Free(got)
					}
					if gw.(*weight).kind == backend.F8E4M3 && N >= 2048 {
						// two, four and eight rows per warp (four and eight
						// from fp8Rows4Min and fp8Rows8Min rows, both set to
						// min here): the same sums as one
						// (tma: gemv_fp8t8, eight rows per warp streamed by
						// bulk copies, sm_90; v3: gemv_fp8v3's three rows
						// per warp where gemv_fp8v2 would run; t9:
						// gemv_fp8t9's nine warps where gemv_fp8t8 would)
						// (early: gemv_fp8t8e, its refills asked for as each
						// round is taken)
						for _, v := range []struct {
							rows, min int
							want      string
							tma       bool
							v3, t9    int
							early     bool
						}{{2, 0, "gemv_fp8v2", false, 0, 0, false}, {4, 0, "gemv_fp8v4", false, 0, 0, false}, {4, N + 1, "gemv_fp8v2", false, 0, 0, false},
							{8, 0, "gemv_fp8v8", false, 0, 0, false}, {8, N + 1, "gemv_fp8v2", false, 0, 0, false}, {8, 0, "gemv_fp8t8", true, 0, 0, false},
							{2, 0, "gemv_fp8v3", false, 2, 0, false}, {8, 0, "gemv_fp8t9", true, 0, 2, false}, {8, 0, "gemv_fp8t8e", true, 0, 0, true}} {
							if v.tma && (g.ccMaj < 9 || g.smemOptin < fp8t9Smem+1024) {
								continue
							}
							got := gpuCopy(g, d.g)
							saved, savedMin, saved8, savedT, savedV3, savedT9, savedM, savedL := g.fp8Rows, g.fp8Rows4Min, g.fp8Rows8Min, g.fp8TMA, g.fp8V3, g.fp8T9, g.gvMMA, g.fp8T8Late
							// (gvMMA off: gemv_fp8v2's register form, whose sums are gemv_fp81's; TestGEMVMMA has the other)
							g.fp8Rows, g.fp8Rows4Min, g.fp8Rows8Min, g.fp8TMA, g.fp8V3, g.fp8T9, g.gvMMA, g.fp8T8Late = v.rows, v.min, v.min, v.tma, v.v3, v.t9, false, !v.early
							mark := kernelMark(g)
							g.MatMul(got, x.g, gw)
							ks := settledKernels(g, mark) // gemv_fp8v2 waits for a routing that may take it
							g.fp8Rows, g.fp8Rows4Min, g.fp8Rows8Min, g.fp8TMA, g.fp8V3, g.fp8T9, g.gvMMA, g.fp8T8Late = saved, savedMin, saved8, savedT, savedV3, savedT9, savedM, savedL
							sameTensors(t, fmt.Sprintf("%s: %s", what, v.want), g, got, d.g, 0)
							if !slices.Equal(ks, []string{v.want}) {
								t.Errorf("%s: kernels %v with %d rows per warp from %d rows, want %s", what, ks, v.rows, v.min, v.want)
							}
							g.Free(got)
						}
					}
				}
			}
		}
	}
}
