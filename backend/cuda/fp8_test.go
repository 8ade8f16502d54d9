package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/ggufmodel"
)

// fp8Weight returns a random BF16 weight quantized to FP8 with 128×128
// blocks (ggufmodel.EncodeFP8, the quantize-on-load conversion), or with
// hostWeight's 16×16 blocks when small.
func fp8Weight(t *testing.T, rng *rand.Rand, name string, rows, cols int, small bool) backend.HostWeight {
	t.Helper()
	if small {
		return hostWeight(rng, name, backend.F8E4M3, rows, cols, 0.3)
	}
	hw, err := ggufmodel.EncodeFP8(hostWeight(rng, name, backend.BF16, rows, cols, 0.3))
	if err != nil {
		t.Fatal(err)
	}
	return hw
}

// contiguous returns rows×cols random values in freshly allocated
// (16-byte aligned, unpadded) tensors on both backends.
func contiguousT(g *Backend, rng *rand.Rand, rows, cols int) pair {
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = rng.Float32()*2 - 1
	}
	p := pair{host().Alloc(rows, cols), g.Alloc(rows, cols)}
	host().Write(p.c, vals)
	g.Write(p.g, vals)
	return p
}

// TestFastFP8 checks fast mode's FP8 kernels (weights kept in E4M3 with
// block scales: GEMV, the widening to BF16 for prefill GEMMs, embedding,
// expert GEMVs and the grouped expert GEMM) against the CPU backend, which
// widens the same weights to BF16 at upload.
func TestFastFP8(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 {
		t.Skip("FP8 weights need fast mode with tensor cores and cuBLASLt")
	}
	rng := rand.New(rand.NewSource(23))
	for _, c := range []struct {
		N, K  int
		small bool
	}{{100, 96, true}, {256, 384, false}, {200, 2048, false}} {
		hw := fp8Weight(t, rng, "w", c.N, c.K, c.small)
		cw, gw := upload(t, g, hw)
		if k := gw.(*weight).kind; k != backend.F8E4M3 {
			t.Fatalf("%+v: weight stored as %v, want FP8", c, k)
		}
		for _, T := range []int{1, 3, 8, 9, 70} {
			for _, aligned := range []bool{false, true} {
				x := randT(t, g, rng, T, c.K, 1)
				if aligned {
					x = contiguousT(g, rng, T, c.K)
				}
				d := zeroT(g, T, c.N)
				host().MatMul(d.c, x.c, cw)
				q0 := kernelMark(g)
				g.MatMul(d.g, x.g, gw)
				tol := fastTol
				if slices.Contains(queuedKernels(g, q0), "k_quant_fp8") {
					tol = fp8GEMMTol // the rows in E4M3: the block-scaled FP8 GEMM
				}
				compare(t, fmt.Sprintf("fp8 matmul %+v T=%d aligned=%v", c, T, aligned), g, d, tol)
			}
		}
		ids := []int32{0, int32(c.N - 1), 7, 7, int32(c.N / 2)}
		d := zeroT(g, len(ids), c.K)
		host().Embed(d.c, cw, ids)
		g.Embed(d.g, gw, ids)
		compare(t, fmt.Sprintf("fp8 embed %+v", c), g, d, 1e-2)
	}

	for _, c := range []struct {
		E, I, D int
		small   bool
	}{{16, 32, 64, true}, {8, 128, 256, false}} {
		ce, ge, _, _, _ := randExperts(t, g, c.E, c.I, c.D, func(name string, rows, cols int) backend.HostWeight {
			return fp8Weight(t, rng, name, rows, cols, c.small)
		})
		if k := ge.(*experts).kind; k != backend.F8E4M3 {
			t.Fatalf("%+v: experts stored as %v, want FP8", c, k)
		}
		p := backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{1, 5, 9, 70, 600} {
			l := randT(t, g, rng, T, c.E, 3)
			x := randT(t, g, rng, T, c.D, 1)
			if T%2 == 0 {
				x = contiguousT(g, rng, T, c.D)
			}
			d := zeroT(g, T, c.D)
			host().MoE(d.c, x.c, host().Route(l.c, nil, p), ce)
			q0 := kernelMark(g)
			g.MoE(d.g, x.g, g.Route(l.g, nil, p), ge)
			ks := queuedKernels(g, q0) // before compare reads (and empties the queue)
			compare(t, fmt.Sprintf("fp8 moe %+v T=%d", c, T), g, d, fastTol)
			if T == 600 && g.wgmma && g.mmbFP8 {
				// the grouped GEMM on wgmma, its weights widened in shared
				// memory; against moe_mma64_fp8 (the same BF16 products)
				if !slices.Contains(ks, "moe_mmb_gu_wg8") {
					t.Errorf("fp8 moe %+v T=%d: kernels %v, no moe_mmb_gu_wg8", c, T, ks)
				}
				o := g.Alloc(T, c.D)
				g.mmbFP8 = false
				q0 = kernelMark(g)
				g.MoE(o, x.g, g.Route(l.g, nil, p), ge)
				if ks := queuedKernels(g, q0); !slices.ContainsFunc(ks, func(n string) bool { return strings.HasPrefix(n, "moe_mma") && strings.HasSuffix(n, "_fp8") }) {
					t.Errorf("fp8 moe %+v T=%d: kernels %v with RINGO_CUDA_MMB_FP8=0, no moe_mma*_fp8", c, T, ks)
				}
				g.mmbFP8 = true
				e := gpuRelErr(g, d.g, o)
				t.Logf("fp8 moe %+v T=%d: moe_mmb_*_wg8 against moe_mma*_fp8: relative error %.3g", c, T, e)
				if e > 1e-2 || math.IsNaN(e) {
					t.Errorf("fp8 moe %+v T=%d: moe_mmb_*_wg8 differs from moe_mma*_fp8 by %.3g", c, T, e)
				}
				g.Free(o)
			}
			if T <= GEMVRows {
				sameAsMoE3(t, fmt.Sprintf("fp8 moe %+v T=%d", c, T), g, d.g, func(dst backend.Tensor) bool { g.MoE(dst, x.g, g.Route(l.g, nil, p), ge); return true })
				// two gate|up pairs per warp (moe_gu2_fp8) and moe_dcl*_fp8
				// (each warp's rows' slots one after another), early or
				// not: the same sums, against moe_gu_fp8 + moe_dc_fp8
				run := func(pairs, dcl int, early bool) backend.Tensor {
					o := g.Alloc(T, c.D)
					savedP, savedL, savedR, savedM := g.guPairs, g.dclRows, g.dcReg, g.dcMMA
					g.guPairs, g.dclRows, g.dcReg, g.dcMMA = pairs, dcl, early, false
					mark := kernelMark(g)
					g.MoE(o, x.g, g.Route(l.g, nil, p), ge)
					ks := queuedKernels(g, mark)
					g.guPairs, g.dclRows, g.dcReg, g.dcMMA = savedP, savedL, savedR, savedM
					want := []string{"moe_gu_fp8", "moe_dc_fp8"}
					if pairs > 1 {
						want[0] = fmt.Sprintf("moe_gu%d_fp8", pairs)
					}
					if dcl > 0 {
						want[1] = map[int]string{1: "moe_dcl_fp8", 2: "moe_dcl2_fp8", 4: "moe_dcl4_fp8"}[dcl]
					}
					for _, k := range want {
						if !slices.Contains(ks, k) {
							t.Errorf("fp8 moe %+v T=%d: kernels %v, no %s", c, T, ks, k)
						}
					}
					return o
				}
				base := run(1, 0, true)
				for i, dcl := range []int{0, 1, 2, 4, 1, 2, 4} {
					pairs, early := []int{1, 2, 4}[i%3], i < 4
					o := run(pairs, dcl, early)
					sameTensors(t, fmt.Sprintf("fp8 moe %+v T=%d: %d pairs per warp, moe_dcl rows %d (early %v)", c, T, pairs, dcl, early), g, o, base, 0)
					g.Free(o)
				}
				g.Free(base)
			}
		}
	}
}

// fp8GEMMTol bounds the block-scaled FP8 GEMM's error relative to the
// largest output: its rows quantized to E4M3 (3 mantissa bits, each value
// rounded by up to 2^-4 of itself) give 2–3.5e-2 on random rows.
const fp8GEMMTol = 6e-2

// TestFP8BlockScaledGEMM checks prefill products of FP8 weights with 128×128
// blocks on cuBLASLt's block-scaled FP8 GEMM (the rows quantized to E4M3 per
// 128 values by k_quant_fp8) against the same products with the weight
// widened to BF16: they differ by the rows' quantization only. Both layouts
// of the rows' scales run: the backend's must match, and the other must not
// (every 128 values of a row have their own scale, so a wrong layout shows).
func TestFP8BlockScaledGEMM(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 || os.Getenv("RINGO_CUDA_FP8_GEMM") == "0" || g.ccMaj < 9 {
		t.Skip("no FP8 weights in this mode, RINGO_CUDA_FP8_GEMM=0, or no block-scaled FP8 GEMMs before Hopper")
	}
	defer func(on, mn bool) { g.fp8GEMM, g.fp8ScaleMN = on, mn }(g.fp8GEMM, g.fp8ScaleMN)
	def := g.fp8ScaleMN
	rng := rand.New(rand.NewSource(25))
	for _, c := range []struct{ N, K int }{{256, 384}, {208, 2048}, {384, 512}} {
		_, gw := upload(t, g, fp8Weight(t, rng, "w", c.N, c.K, false))
		if gw.(*weight).ltScale == 0 {
			t.Fatalf("%+v: no cuBLASLt scales for a weight of 128x128 blocks", c)
		}
		// every row count takes the FP8 GEMM: cuBLASLt has none for 9 or
		// 17 rows on the H200, so those go in padded to 16 and 32
		for _, T := range []int{9, 17, 64, 320} {
			// every 128 values of a row at their own scale (2^-8 to 2^8), so
			// that the rows' scales matter and a wrong layout shows
			vals := make([]float32, T*c.K)
			for i := range vals {
				if i%128 == 0 {
					f := float32(math.Ldexp(1, rng.Intn(17)-8))
					for j := i; j < min(i+128, len(vals)); j++ {
						vals[j] = (rng.Float32()*2 - 1) * f
					}
				}
			}
			x := g.Alloc(T, c.K)
			g.Write(x, vals)
			got, want := g.Alloc(T, c.N), g.Alloc(T, c.N)
			g.fp8GEMM = false
			g.MatMul(want, x, gw)
			for _, mn := range []bool{def, !def} {
				g.fp8GEMM, g.fp8ScaleMN = true, mn
				q0 := kernelMark(g)
				g.MatMul(got, x, gw)
				ks := queuedKernels(g, q0)
				fp8 := slices.Contains(ks, "k_quant_fp8") && !slices.Contains(ks, "k_fp8_bf16")
				e := gpuRelErr(g, got, want)
				switch {
				case !fp8:
					t.Errorf("%+v T=%d: kernels %v, not the block-scaled FP8 GEMM", c, T, ks)
				default:
					if T%16 != 0 && !slices.Contains(ks, "k_copy") && !slices.Contains(ks, "k_bf16_f32") {
						t.Logf("%+v T=%d: cuBLASLt took %d rows as they are (kernels %v)", c, T, T, ks)
					}
					t.Logf("%+v T=%d: scales token-major %v: relative error %.3g against the weight widened to BF16", c, T, mn, e)
					if mn == def && (e > fp8GEMMTol || e == 0 || math.IsNaN(e)) {
						t.Errorf("%+v T=%d: relative error %.3g of the FP8 GEMM against the widened weight (want (0, 6e-2])", c, T, e)
					}
					if mn != def && e < 0.3 {
						t.Errorf("%+v T=%d: the other layout of the rows' scales gives %.3g too: the test does not tell them apart", c, T, e)
					}
				}
			}
			g.Free(got)
			g.Free(want)
			g.Free(x)
		}
	}
}

// TestFP8MMAMoE checks the decode MoE on tensor cores (sm_90): the default
// (moe_gummat9q for one token's gate|up pairs, its activations as three
// E4M3 parts; moe_dcmmatw for the down projections, FP16 activations) and
// the same with moe_gummat9w against the float32 path, and each of
// moe_dcmmat, moe_dcmmatw, moe_dcmmatq, moe_gummat9w and moe_gummat9q
// against the kernels before them (moe_gu2_fp8, moe_dcl2_fp8) within
// tolerance: 128×128 scale blocks, with and without a shared expert, the
// rows asked for before the wait or not, 1 and 3 rows, shapes whose rounds
// are refilled (1,536 columns: three rounds of moe_gummat9w; 1,024: two of
// moe_dcmmatw, four of moe_dcmmat). moe_gummat9w and moe_gummat9q run here
// whatever the grid's fill (guMMAAnyGrid).
func TestFP8MMAMoE(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 || g.ccMaj < 9 {
		t.Skip("the MoE on tensor cores needs fast mode and sm_90")
	}
	defer func(reg, dcm, wide, gum, op bool, q8 int) {
		g.dcReg, g.dcMMA, g.dcWide, g.guMMA, g.dcOnePass, g.mmaE4M3, g.guMMAAnyGrid = reg, dcm, wide, gum, op, q8, false
	}(g.dcReg, g.dcMMA, g.dcWide, g.guMMA, g.dcOnePass, g.mmaE4M3)
	if !g.dcMMA || !g.dcWide || !g.guMMA || !g.dcOnePass || g.mmaE4M3 != 1 {
		t.Errorf("moe_dcmmatw1 and moe_gummat9q are not the defaults on sm_90")
	}
	g.guMMAAnyGrid = true
	// two blocks per SM, Ring-flash's one wave of 256 (9 slots of 1,024 columns)
	for _, k := range []struct {
		name string
		smem int
	}{{"moe_dcmmatw", dcmmatSmem(9, 1024, true)}, {"moe_dcmmatq", dcmmatqSmem(9, 1024)}} {
		t.Logf("%s: two blocks per SM with 9 slots of 1,024 columns: %v", k.name, g.allResident(k.name, 32*9, k.smem, 2*g.sms))
	}
	rng := rand.New(rand.NewSource(43))
	const E, I, D = 8, 1024, 1536
	mk := func(name string, rows, cols int) backend.HostWeight {
		return reblock(rng, hostWeight(rng, name, backend.F8E4M3, rows, cols, 0.5), 128)
	}
	ce, ge, _, _, _ := randExperts(t, g, E, I, D, mk)
	_, ggu := upload(t, g, mk("shared gate_up", 2*I, D))
	_, gdn := upload(t, g, mk("shared down", D, I))
	p := backend.RouteParams{TopK: 4, Groups: 1, TopKGroups: 1, Sigmoid: true, Normalize: true, Scale: 2.5}
	// q8: moe_gummat9q and moe_dcmmatq (E4M3 activations) in place of
	// moe_gummat9w and moe_dcmmatw; op: moe_dcmmatw1 (one pass of loads)
	// in place of moe_dcmmatw
	type setting struct{ dcm, wide, gum, q8, op bool }
	kernels := func(c setting, T int) []string {
		gu, dc := "moe_gu2_fp8", "moe_dcl2_fp8"
		if c.gum && T == 1 {
			gu = map[bool]string{false: "moe_gummat9w", true: "moe_gummat9q"}[c.q8]
		}
		if c.dcm {
			dc = map[bool]string{false: "moe_dcmmat", true: "moe_dcmmatw"}[c.wide]
			if c.wide && c.q8 {
				dc = "moe_dcmmatq"
			} else if c.wide && c.op {
				dc = "moe_dcmmatw1"
			}
		}
		return []string{gu, dc}
	}
	for _, T := range []int{1, 3} {
		l := randT(t, g, rng, T, E, 3)
		x := contiguousT(g, rng, T, D)
		for _, shared := range []bool{false, true} {
			for _, early := range []bool{true, false} {
				run := func(c setting, o backend.Tensor) {
					g.dcReg, g.dcMMA, g.dcWide, g.guMMA, g.dcOnePass, g.mmaE4M3 = early, c.dcm, c.wide, c.gum, c.op, map[bool]int{false: 0, true: 3}[c.q8]
					mark := kernelMark(g)
					if shared {
						if !g.MoEShared(o, x.g, g.Route(l.g, nil, p), ge, ggu, gdn) {
							t.Fatalf("MoEShared declined")
						}
					} else {
						g.MoE(o, x.g, g.Route(l.g, nil, p), ge)
					}
					ks := queuedKernels(g, mark)
					for _, k := range kernels(c, T) {
						if !slices.Contains(ks, k) {
							t.Errorf("T=%d shared=%v early=%v %+v: kernels %v, no %s", T, shared, early, c, ks, k)
						}
					}
				}
				base := g.Alloc(T, D)
				run(setting{}, base)
				wide := zeroT(g, T, D) // moe_dcmmatw's, for moe_dcmmatw1
				for _, c := range []setting{{true, true, true, false, false}, {true, false, false, false, false}, {true, true, false, false, false},
					{false, false, true, false, false}, {true, true, true, true, false}, {false, false, true, true, false}, {true, true, false, true, false},
					{true, true, false, false, true}} {
					what := fmt.Sprintf("%v T=%d shared=%v early=%v", kernels(c, T), T, shared, early)
					d := zeroT(g, T, D)
					run(c, d.g)
					if c.dcm && c.wide && c.gum && !shared {
						host().MoE(d.c, x.c, host().Route(l.c, nil, p), ce)
						compare(t, what+" against the float32 path", g, d, fastTol)
					}
					switch c {
					case setting{true, true, false, false, false}:
						g.Copy(wide.g, d.g)
					case setting{true, true, false, false, true}:
						sameTensors(t, what+" against moe_dcmmatw", g, d.g, wide.g, 0)
					}
					if e := gpuRelErr(g, d.g, base); e > 2e-3 || math.IsNaN(e) {
						t.Errorf("%s: relative error %.3g against moe_gu2_fp8 + moe_dcl2_fp8", what, e)
					} else {
						t.Logf("%s: relative error %.2g against moe_gu2_fp8 + moe_dcl2_fp8", what, e)
					}
					g.Free(d.g)
				}
				g.Free(base)
				g.Free(wide.g)
			}
		}
	}
}

// TestRoutePartials checks gemv_fp8v2r + k_route_p (routePartials: the
// router's partial logits in the blocks of the FP8 product before
// AddRMSNormRoute, the default on sm_90) against gemv_fp8v2 + k_norm_route: the
// product, the residual and the norm bit for bit, the logits within 1e-5,
// the same experts and weights within 1e-5 (their sums differ in order).
func TestRoutePartials(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 || g.ccMaj < 9 {
		t.Skip("k_route_p needs fast mode and sm_90 (thread block clusters)")
	}
	defer func(on, m bool) { g.routePartials, g.gvMMA = on, m }(g.routePartials, g.gvMMA)
	if !g.routePartials {
		t.Errorf("the router's partial logits are not the default on sm_90")
	}
	g.gvMMA = false // the register form, whose products gemv_fp8v2 matches bit for bit (TestGEMVMMA has the other)
	rng := rand.New(rand.NewSource(53))
	for _, c := range []struct{ K, E, groups, keep, topk int }{{4096, 256, 8, 4, 8}, {2048, 256, 8, 4, 8}, {3072, 64, 1, 1, 6}} {
		what := fmt.Sprintf("%+v", c)
		_, wo := upload(t, g, reblock(rng, hostWeight(rng, "o_proj", backend.F8E4M3, c.K, c.K, 0.5), 128))
		_, nw := upload(t, g, hostWeight(rng, "model.layers.1.post_attention_layernorm.weight", backend.BF16, 1, c.K, 1))
		_, rw := upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.weight", backend.BF16, c.E, c.K, 0.05))
		_, bias := upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.expert_bias", backend.F32, 1, c.E, 0.1))
		p := backend.RouteParams{TopK: c.topk, Groups: c.groups, TopKGroups: c.keep, Sigmoid: true, Normalize: true, Scale: 2.5}
		x0, in := randT(t, g, rng, 1, c.K, 2), randT(t, g, rng, 1, c.K, 1)
		var outs, xs, hs, ls [2]backend.Tensor
		var ids [2][]int32
		var wts [2][]float32
		for s, on := range []bool{false, true} {
			g.routePartials = on
			outs[s], xs[s], hs[s], ls[s] = g.Alloc(1, c.K), gpuCopy(g, x0.g), g.Alloc(1, c.K), g.Alloc(1, c.E)
			mark := kernelMark(g)
			g.MatMul(outs[s], in.g, wo)
			r := backend.AddRMSNormRoute(g, hs[s], xs[s], outs[s], nw, 1e-6, ls[s], rw, bias, p)
			ks := queuedKernels(g, mark)
			ids[s], wts[s] = make([]int32, c.topk), make([]float32, c.topk)
			r.Selected(0, ids[s], wts[s])
			if got := slices.Contains(ks, "k_route_p") && slices.Contains(ks, "gemv_fp8v2r"); got != on {
				t.Errorf("%s: kernels %v", what, ks)
			}
		}
		sameTensors(t, what+": product", g, outs[1], outs[0], 0)
		sameTensors(t, what+": residual", g, xs[1], xs[0], 0)
		sameTensors(t, what+": norm", g, hs[1], hs[0], 0)
		if e := gpuRelErr(g, ls[1], ls[0]); e > 1e-5 || math.IsNaN(e) {
			t.Errorf("%s: logits differ by %.3g", what, e)
		} else {
			t.Logf("%s: logits differ by %.2g", what, e)
		}
		for i := range ids[0] {
			if ids[1][i] != ids[0][i] || math.Abs(float64(wts[1][i]-wts[0][i])) > 1e-5*math.Abs(float64(wts[0][i])) {
				t.Errorf("%s: slot %d: expert %d weight %v from partials, %d %v", what, i, ids[1][i], wts[1][i], ids[0][i], wts[0][i])
			}
		}
		for s := range xs {
			g.Free(outs[s])
			g.Free(xs[s])
			g.Free(hs[s])
			g.Free(ls[s])
		}
	}
}

// TestGEMVMMA checks gemv_fp8v2m and gemv_fp8v2rm (gvMMA: the one-row FP8
// products on tensor cores, the activations as three E4M3 parts) against the
// float32 path and gemv_fp8v2 (within 2e-2 and 1e-2), and
// gemv_fp8v2rm's router partials against k_norm_route applied to its
// product: the residual and the norm bit for bit, the logits within 1e-5,
// the same experts.
func TestGEMVMMA(t *testing.T) {
	g := gpu(t, false)
	if !g.fp8 || g.ccMaj < 9 || !g.routePartials {
		t.Skip("gemv_fp8v2rm needs fast mode, sm_90 and the router's partial logits")
	}
	if !g.gvMMA {
		t.Errorf("gemv_fp8v2m is not the default on sm_90")
	}
	defer func(on, rp bool) { g.gvMMA, g.routePartials = on, rp }(g.gvMMA, g.routePartials)
	rng := rand.New(rand.NewSource(61))
	p := backend.RouteParams{TopK: 8, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 2.5}
	for _, c := range []struct{ N, K, E int }{{4096, 4096, 256}, {2048, 2048, 256}, {4096, 1024, 64}, {2048, 3072, 256}} {
		what := fmt.Sprintf("%+v", c)
		if c.E == 64 {
			p.Groups, p.TopKGroups = 1, 1
		} else {
			p.Groups, p.TopKGroups = 8, 4
		}
		cwo, wo := upload(t, g, reblock(rng, hostWeight(rng, "o_proj", backend.F8E4M3, c.N, c.K, 0.5), 128))
		_, nw := upload(t, g, hostWeight(rng, "model.layers.1.post_attention_layernorm.weight", backend.BF16, 1, c.N, 1))
		_, rw := upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.weight", backend.BF16, c.E, c.N, 0.05))
		_, bias := upload(t, g, hostWeight(rng, "model.layers.1.mlp.gate.expert_bias", backend.F32, 1, c.E, 0.1))
		x0, in := randT(t, g, rng, 1, c.N, 2), randT(t, g, rng, 1, c.K, 1)
		ref, out := g.Alloc(1, c.N), g.Alloc(1, c.N)
		d := zeroT(g, 1, c.N) // d.c: the float32 path's product, d.g: gemv_fp8v2m's
		host().MatMul(d.c, in.c, cwo)
		got := d.g
		g.gvMMA = false
		g.MatMul(ref, in.g, wo)
		settledKernels(g, kernelMark(g)) // launched now, not when the next operation comes
		g.gvMMA = true
		mark := kernelMark(g)
		g.MatMul(got, in.g, wo)
		if ks := settledKernels(g, mark); !slices.Equal(ks, []string{"gemv_fp8v2m"}) {
			t.Errorf("%s: kernels %v, want gemv_fp8v2m", what, ks)
		}
		compare(t, what+": gemv_fp8v2m against the float32 path", g, d, 2e-2) // TestGEMVSingleRow's tolerance
		if e := gpuRelErr(g, got, ref); e > 1e-2 || math.IsNaN(e) {
			t.Errorf("%s: gemv_fp8v2m differs from gemv_fp8v2 by %.3g", what, e)
		} else {
			t.Logf("%s: gemv_fp8v2m against gemv_fp8v2: relative error %.2g", what, e)
		}
		// the routing from gemv_fp8v2rm's partials, and from k_norm_route on its product
		var xs, hs, ls [2]backend.Tensor
		var ids [2][]int32
		var wts [2][]float32
		for s := range 2 {
			xs[s], hs[s], ls[s] = gpuCopy(g, x0.g), g.Alloc(1, c.N), g.Alloc(1, c.E)
			mark := kernelMark(g)
			if s == 0 {
				g.MatMul(out, in.g, wo)
			} else {
				g.routePartials = false
			}
			r := backend.AddRMSNormRoute(g, hs[s], xs[s], out, nw, 1e-6, ls[s], rw, bias, p)
			g.routePartials = true
			ids[s], wts[s] = make([]int32, p.TopK), make([]float32, p.TopK)
			r.Selected(0, ids[s], wts[s])
			ks := queuedKernels(g, mark)
			if want := [2]string{"gemv_fp8v2rm", "k_norm_route"}[s]; !slices.Contains(ks, want) {
				t.Errorf("%s: kernels %v, want %s among them", what, ks, want)
			}
		}
		sameTensors(t, what+": gemv_fp8v2rm's product", g, out, got, 0)
		sameTensors(t, what+": residual", g, xs[0], xs[1], 0)
		sameTensors(t, what+": norm", g, hs[0], hs[1], 0)
		if e := gpuRelErr(g, ls[0], ls[1]); e > 1e-5 || math.IsNaN(e) {
			t.Errorf("%s: logits from the partials differ by %.3g", what, e)
		}
		for i := range ids[0] {
			if ids[0][i] != ids[1][i] || math.Abs(float64(wts[0][i]-wts[1][i])) > 1e-5*math.Abs(float64(wts[1][i])) {
				t.Errorf("%s: slot %d: expert %d weight %v from partials, %d %v", what, i, ids[0][i], wts[0][i], ids[1][i], wts[1][i])
			}
		}
		for s := range 2 {
			g.Free(xs[s])
			g.Free(hs[s])
			g.Free(ls[s])
		}
		g.Free(ref)
		g.Free(d.g)
		g.Free(out)
	}
}
