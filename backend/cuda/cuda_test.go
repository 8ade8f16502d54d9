package cuda

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
	"github.com/ringo-ai/ringo/backend/cpu"
	"github.com/ringo-ai/ringo/quant"
	"github.com/ringo-ai/ringo/safetensors"
)

var (
	gpuOnce  [2]sync.Once
	gpuB     [2]*Backend
	gpuErr   [2]error
	cpuOnce  sync.Once
	cpuB     *cpu.Backend
	logDescr sync.Once
)

// serialBackend takes u, a second backend of a test that waits for each
// of its steps before running the other's, out of gridUsers, so that both
// keep using the grid-barrier kernels (they never run at the same time).
func serialBackend(u *Backend) { u.leaveGrid() }

// TestGridUsers checks the count of backends that may run grid-barrier
// kernels on a device (no GPU needed): a backend is alone until a second
// one joins, precise ones (moeFused off) do not count, and Close's
// leaveGrid takes a backend out.
func TestGridUsers(t *testing.T) {
	const dev = 1 << 20 // no real device
	a, c, p := &Backend{dev: dev, moeFused: true}, &Backend{dev: dev, moeFused: true}, &Backend{dev: dev}
	a.joinGrid()
	a.joinGrid() // once only
	p.joinGrid()
	if !a.gridAlone() || p.gridAlone() {
		t.Fatalf("one user: alone %v (the precise one %v), %d counted", a.gridAlone(), p.gridAlone(), gridUsersOf(dev).Load())
	}
	c.joinGrid()
	if a.gridAlone() || c.gridAlone() || p.gridAlone() {
		t.Fatalf("two users: alone %v %v %v", a.gridAlone(), c.gridAlone(), p.gridAlone())
	}
	c.leaveGrid()
	c.leaveGrid()
	if !a.gridAlone() || gridUsersOf(dev).Load() != 1 {
		t.Fatalf("after leaving: alone %v, %d counted", a.gridAlone(), gridUsersOf(dev).Load())
	}
	a.leaveGrid()
	if n := gridUsersOf(dev).Load(); n != 0 {
		t.Fatalf("%d counted after both left", n)
	}
	// gdFits asks once per MoE layer of a decode step
	d0 := &Backend{dev: 0, moeFused: true}
	if n := testing.AllocsPerRun(100, func() { d0.gridAlone() }); n != 0 {
		t.Errorf("gridAlone allocates %.0f times per call", n)
	}
}

// gpu returns a shared backend (precise or fast), skipping the test when no GPU is usable.
func gpu(t testing.TB, precise bool) *Backend {
	t.Helper()
	i := 0
	if precise {
		i = 1
	}
	gpuOnce[i].Do(func() { gpuB[i], gpuErr[i] = New(0, Options{Precise: precise}) })
	if err := gpuErr[i]; err != nil {
		if errors.Is(err, ErrNoDevice) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	logDescr.Do(func() { t.Log(gpuB[i].Describe()) })
	return gpuB[i]
}

func host() *cpu.Backend {
	cpuOnce.Do(func() { cpuB = cpu.New(0) })
	return cpuB
}

func TestNewWithoutDevice(t *testing.T) {
	_, err := New(1<<20, Options{Precise: true})
	if err == nil {
		t.Fatal("New(huge device number) succeeded")
	}
	t.Logf("New(1<<20): %v", err)
}

// pair holds the same values on the CPU and GPU backends.
type pair struct {
	c, g backend.Tensor
}

// randT returns rows×cols random values as views (offset, padded stride) on both backends.
func randT(t *testing.T, g *Backend, rng *rand.Rand, rows, cols int, scale float32) pair {
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = (rng.Float32()*2 - 1) * scale
	}
	return pairOf(g, rows, cols, vals)
}

func pairOf(g *Backend, rows, cols int, vals []float32) pair {
	c := host()
	ct := c.Alloc(rows+2, cols+5).RowRange(1, rows).ColRange(3, cols)
	gt := g.Alloc(rows+2, cols+5).RowRange(1, rows).ColRange(3, cols)
	c.Write(ct, vals)
	g.Write(gt, vals)
	return pair{ct, gt}
}

func zeroT(g *Backend, rows, cols int) pair {
	return pairOf(g, rows, cols, make([]float32, rows*cols))
}

func readBoth(g *Backend, p pair) (cv, gv []float32) {
	n := p.c.Rows * p.c.Cols
	cv, gv = make([]float32, n), make([]float32, n)
	host().Read(p.c, cv)
	g.Read(p.g, gv)
	return
}

// relErr returns max|got−want| / max|want|.
func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(want[i])) {
			return math.Inf(1)
		}
		num = math.Max(num, math.Abs(float64(got[i]-want[i])))
		den = math.Max(den, math.Abs(float64(want[i])))
	}
	if den == 0 {
		return num
	}
	return num / den
}

func compare(t *testing.T, what string, g *Backend, p pair, tol float64) {
	t.Helper()
	cv, gv := readBoth(g, p)
	if e := relErr(gv, cv); e > tol || math.IsNaN(e) {
		t.Errorf("%s: relative error %.3g > %.3g", what, e, tol)
	} else {
		t.Logf("%s: relative error %.2g", what, e)
	}
}

// hostWeight returns random weight bytes of the given kind.
func hostWeight(rng *rand.Rand, name string, kind backend.Kind, rows, cols int, scale float32) backend.HostWeight {
	n := rows * cols
	hw := backend.HostWeight{Name: name, Kind: kind, Rows: rows, Cols: cols}
	switch kind {
	case backend.F32:
		hw.Data = make([]byte, 4*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(hw.Data[4*i:], math.Float32bits((rng.Float32()*2-1)*scale))
		}
	case backend.F16:
		hw.Data = make([]byte, 2*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(hw.Data[2*i:], quant.F32ToF16((rng.Float32()*2-1)*scale))
		}
	case backend.BF16:
		hw.Data = make([]byte, 2*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint16(hw.Data[2*i:], quant.F32ToBF16((rng.Float32()*2-1)*scale))
		}
	case backend.F8E4M3:
		hw.Data = make([]byte, n)
		for i := range hw.Data {
			hw.Data[i] = safetensors.F32ToF8E4M3((rng.Float32()*2 - 1) * 200)
		}
		hw.BlockRows, hw.BlockCols = 16, 16
		hw.Scale = make([]float32, ((rows+15)/16)*((cols+15)/16))
		for i := range hw.Scale {
			hw.Scale[i] = scale / 200 * (0.5 + rng.Float32())
		}
	}
	return hw
}

func upload(t *testing.T, g *Backend, hw backend.HostWeight) (backend.Weight, backend.Weight) {
	t.Helper()
	cw, err := host().Upload(hw)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := g.Upload(hw)
	if err != nil {
		t.Fatal(err)
	}
	return cw, gw
}

func TestMatMul(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(1))
	for _, kind := range []backend.Kind{backend.F32, backend.F16, backend.BF16, backend.F8E4M3} {
		for _, K := range []int{72, 70} {
			cw, gw := upload(t, g, hostWeight(rng, "w", kind, 100, K, 0.5))
			for _, T := range []int{1, 3, 8, 9, 70, 130} {
				x := randT(t, g, rng, T, K, 1)
				d := zeroT(g, T, 100)
				host().MatMul(d.c, x.c, cw)
				g.MatMul(d.g, x.g, gw)
				compare(t, fmt.Sprintf("%v K=%d T=%d", kind, K, T), g, d, 1e-5)
			}
		}
	}
}

func TestMatMulFast(t *testing.T) {
	g := gpu(t, false)
	rng := rand.New(rand.NewSource(2))
	cw, gw := upload(t, g, hostWeight(rng, "w", backend.BF16, 200, 256, 0.5))
	for _, T := range []int{1, 9, 64, 300} {
		x := randT(t, g, rng, T, 256, 1)
		d := zeroT(g, T, 200)
		host().MatMul(d.c, x.c, cw)
		g.MatMul(d.g, x.g, gw)
		compare(t, fmt.Sprintf("fast BF16 T=%d", T), g, d, 2e-2)
	}
	// the fixture models' shapes
	for _, nk := range [][2]int{{16, 64}, {32, 64}, {64, 32}, {512, 64}, {192, 64}, {96, 64}, {64, 96}} {
		cw, gw := upload(t, g, hostWeight(rng, "w", backend.BF16, nk[0], nk[1], 0.5))
		x := randT(t, g, rng, 150, nk[1], 1)
		d := zeroT(g, 150, nk[0])
		host().MatMul(d.c, x.c, cw)
		g.MatMul(d.g, x.g, gw)
		compare(t, fmt.Sprintf("fast BF16 N=%d K=%d T=150", nk[0], nk[1]), g, d, 2e-2)
	}
}

// TestRouterSplit checks that a BF16 router in fast mode, multiplied on
// tensor cores with its input split into three BF16 parts (weight.tri),
// keeps FP32 accuracy (the tolerance of TestMatMul), and that the other
// weights of fast mode do not (so that the test can tell the two apart).
func TestRouterSplit(t *testing.T) {
	g := gpu(t, false)
	if !g.routerSplit {
		t.Skip("router split off (RINGO_CUDA_ROUTER_SPLIT=0, or no tensor cores)")
	}
	rng := rand.New(rand.NewSource(3))
	for _, nk := range [][2]int{{256, 2048}, {64, 72}} {
		cr, gr := upload(t, g, hostWeight(rng, "model.layers.3.mlp.gate.weight", backend.BF16, nk[0], nk[1], 0.5))
		if gr.(*weight).tri == 0 {
			t.Fatalf("router %v: no split copy", nk)
		}
		_, gw := upload(t, g, hostWeight(rng, "w", backend.BF16, nk[0], nk[1], 0.5))
		gw.(*weight).p = gr.(*weight).p // the same matrix, without the split
		for _, T := range []int{9, 300} {
			x := randT(t, g, rng, T, nk[1], 1)
			if T > 100 { // aligned rows: the split eight values at a time
				x = contiguousPair(g, x)
			}
			d, u := zeroT(g, T, nk[0]), zeroT(g, T, nk[0])
			host().MatMul(d.c, x.c, cr)
			g.MatMul(d.g, x.g, gr)
			compare(t, fmt.Sprintf("router %v T=%d", nk, T), g, d, 1e-5)
			g.MatMul(u.g, x.g, gw)
			cv, _ := readBoth(g, d)
			uv := make([]float32, T*nk[0])
			g.Read(u.g, uv)
			if e := relErr(uv, cv); e < 1e-4 {
				t.Errorf("router %v T=%d: the BF16 product is as close (%.2g) as the split one", nk, T, e)
			}
		}
	}
}

func TestEmbed(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(3))
	for _, kind := range []backend.Kind{backend.F32, backend.F16, backend.BF16} {
		cw, gw := upload(t, g, hostWeight(rng, "emb", kind, 50, 24, 1))
		ids := []int32{3, 0, 49, 3, 17}
		d := zeroT(g, len(ids), 24)
		host().Embed(d.c, cw, ids)
		g.Embed(d.g, gw, ids)
		compare(t, "embed "+kind.String(), g, d, 0)
	}
}

func TestRMSNorm(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(4))
	for _, c := range []struct{ cols, group, wlen int }{{64, 64, 64}, {64, 16, 16}, {64, 16, 64}, {2048, 2048, 2048}, {1024, 512, 1024}, {5000, 5000, 5000}} {
		cw, gw := upload(t, g, hostWeight(rng, "norm", backend.BF16, 1, c.wlen, 2))
		x := randT(t, g, rng, 7, c.cols, 3)
		d := zeroT(g, 7, c.cols)
		host().RMSNorm(d.c, x.c, cw, c.group, 1e-6)
		g.RMSNorm(d.g, x.g, gw, c.group, 1e-6)
		compare(t, fmt.Sprintf("rmsnorm %+v", c), g, d, 1e-6)
		// in place
		host().RMSNorm(x.c, x.c, cw, c.group, 1e-6)
		g.RMSNorm(x.g, x.g, gw, c.group, 1e-6)
		compare(t, fmt.Sprintf("rmsnorm in place %+v", c), g, x, 1e-6)
	}
}

// TestAddRMSNorm checks the fused residual add and norm against the CPU's
// Add then RMSNorm (both the sum and the normalised output).
func TestAddRMSNorm(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(6))
	for _, cols := range []int{64, 2048, 300, 10000} { // 10000: more than 8 values per thread
		cw, gw := upload(t, g, hostWeight(rng, "norm", backend.BF16, 1, cols, 2))
		x, a := randT(t, g, rng, 5, cols, 3), randT(t, g, rng, 5, cols, 1)
		d := zeroT(g, 5, cols)
		backend.AddRMSNorm(host(), d.c, x.c, a.c, cw, 1e-6)
		backend.AddRMSNorm(g, d.g, x.g, a.g, gw, 1e-6)
		compare(t, fmt.Sprintf("addrmsnorm %d: sum", cols), g, x, 1e-6)
		compare(t, fmt.Sprintf("addrmsnorm %d: norm", cols), g, d, 1e-6)
	}
}

// randExperts returns E random experts of I×D gate and up and D×I down
// matrices made by mk (name, rows, cols), uploaded to the CPU backend and
// to g, and the host weights for other uploads.
func randExperts(t *testing.T, g *Backend, E, I, D int, mk func(name string, rows, cols int) backend.HostWeight) (ce, ge backend.Experts, gate, up, down []backend.HostWeight) {
	t.Helper()
	for e := 0; e < E; e++ {
		gate = append(gate, mk("gate", I, D))
		up = append(up, mk("up", I, D))
		down = append(down, mk("down", D, I))
	}
	var err error
	if ce, err = host().UploadExperts(gate, up, down); err != nil {
		t.Fatal(err)
	}
	if ge, err = g.UploadExperts(gate, up, down); err != nil {
		t.Fatal(err)
	}
	return ce, ge, gate, up, down
}

// contiguousPair returns a copy of p in freshly allocated (contiguous,
// 16-byte aligned) tensors on both backends.
func contiguousPair(g *Backend, p pair) pair {
	vals := make([]float32, p.c.Rows*p.c.Cols)
	host().Read(p.c, vals)
	q := pair{host().Alloc(p.c.Rows, p.c.Cols), g.Alloc(p.c.Rows, p.c.Cols)}
	host().Write(q.c, vals)
	g.Write(q.g, vals)
	return q
}

// checkLightning runs Lightning on both backends over spans (T rows, H
// heads of head dim d, decays from decay0 up) twice, the second time from
// the states the first left, and compares outputs and states within tol:
// q, k, v as randT's views (rows not 16-byte aligned), or contiguous ones
// where aligned is set. It returns the kernels of its last GPU call.
func checkLightning(t *testing.T, g *Backend, rng *rand.Rand, what string, H, d, T int, spans []backend.Span, decay0 float32, tol float64, aligned bool) (kernels []string) {
	t.Helper()
	Hd := H * d
	decay := make([]float32, H)
	for h := range decay {
		decay[h] = decay0 + 0.3*float32(h)/float32(H)
	}
	states := make([]pair, len(spans))
	cs, gs := make([]backend.Tensor, len(spans)), make([]backend.Tensor, len(spans))
	for i := range states {
		st := contiguousT(g, rng, Hd, d) // states must be contiguous
		states[i], cs[i], gs[i] = st, st.c, st.g
	}
	for round := 0; round < 2; round++ {
		in := func() pair {
			if !aligned {
				return randT(t, g, rng, T, Hd, 1)
			}
			return contiguousT(g, rng, T, Hd)
		}
		q, k, v := in(), in(), in()
		o := zeroT(g, T, Hd)
		scale := float32(1 / math.Sqrt(float64(d)))
		host().Lightning(o.c, q.c, k.c, v.c, spans, cs, decay, scale)
		q0 := kernelMark(g)
		g.Lightning(o.g, q.g, k.g, v.g, spans, gs, decay, scale)
		kernels = queuedKernels(g, q0)
		compare(t, fmt.Sprintf("%s H=%d d=%d round %d output", what, H, d, round), g, o, tol)
		for i, st := range states {
			compare(t, fmt.Sprintf("%s H=%d d=%d round %d state %d", what, H, d, round, i), g, st, tol)
		}
	}
	return kernels
}

// gpuCopy returns a copy of the GPU tensor x (contiguous; Free it after).
func gpuCopy(g *Backend, x backend.Tensor) backend.Tensor {
	u := g.Alloc(x.Rows, x.Cols)
	g.Copy(u, x)
	return u
}

// gpuRelErr returns the relative error of got against want, both on the GPU.
func gpuRelErr(g *Backend, got, want backend.Tensor) float64 {
	gv, wv := make([]float32, got.Rows*got.Cols), make([]float32, want.Rows*want.Cols)
	g.Read(got, gv)
	g.Read(want, wv)
	return relErr(gv, wv)
}

// TestRMSNormRoPE checks the fused per-head RMSNorm and RoPE against the
// CPU's RMSNorm then ApplyRoPE, and against the GPU's own two kernels (the
// same arithmetic: expected equal up to FMA contraction).
func TestRMSNormRoPE(t *testing.T) {
	for _, precise := range []bool{true, false} {
		g := gpu(t, precise)
		rng := rand.New(rand.NewSource(7))
		for _, c := range []struct {
			rows, heads, hd, dim int
			wfull                bool
			theta                float64
		}{
			{1, 20, 128, 64, true, 600000}, // Ring-mini q|k: 16+4 heads, half of each rotated
			{3, 20, 128, 64, false, 600000},
			{17, 20, 128, 64, true, 600000},
			{3, 6, 128, 128, true, 10000},
			{17, 6, 128, 128, false, 10000}, // more than GEMVRows rows: one warp per (row, head)
			{1, 4, 64, 64, false, 10000},
			{17, 3, 64, 64, true, 1e6},
			{3, 5, 64, 32, false, 10000},
			{3, 2, 64, 0, true, 10000},                     // no rotation
			{ropeTableRows + 1, 20, 128, 64, true, 600000}, // the angles computed by the kernel (ropeTable)
		} {
			what := fmt.Sprintf("rmsnorm+rope precise=%v %+v", precise, c)
			cols, wlen := c.heads*c.hd, c.hd
			if c.wfull {
				wlen = cols
			}
			cw, gw := upload(t, g, hostWeight(rng, "qknorm", backend.BF16, 1, wlen, 2))
			pos := make([]int32, c.rows) // not contiguous
			for i := range pos {
				pos[i] = int32(rng.Intn(40000))
			}
			rope := backend.RoPE{Dim: c.dim, Theta: c.theta}
			x := randT(t, g, rng, c.rows, cols, 3)
			u := gpuCopy(g, x.g)
			g.RMSNorm(u, u, gw, c.hd, 1e-6)
			g.ApplyRoPE(u, c.hd, rope, pos)
			backend.RMSNormRoPE(host(), x.c, cw, c.hd, 1e-6, rope, pos)
			backend.RMSNormRoPE(g, x.g, gw, c.hd, 1e-6, rope, pos)
			compare(t, what, g, x, 2e-6)
			if e := gpuRelErr(g, x.g, u); e > 1e-7 {
				t.Errorf("%s: relative error %.3g against the unfused kernels", what, e)
			} else {
				t.Logf("%s: relative error %.2g against the unfused kernels", what, e)
			}
			g.Free(u)
		}
	}
}

// TestRMSNormSigmoidMul checks the fused grouped RMSNorm and sigmoid gating
// against the CPU's RMSNorm then SigmoidMul (into a separate destination and
// in place), and against the GPU's own two kernels.
func TestRMSNormSigmoidMul(t *testing.T) {
	for _, precise := range []bool{true, false} {
		g := gpu(t, precise)
		rng := rand.New(rand.NewSource(8))
		for _, c := range []struct {
			rows, cols, group int
			wfull             bool
		}{
			{1, 2048, 512, true}, // Ring-mini: hidden 2048, group_norm_size 4
			{3, 2048, 512, true},
			{17, 2048, 512, false},
			{17, 2048, 128, true}, // more than GEMVRows rows, groups of 64..512: one warp per (row, group)
			{33, 256, 64, false},
			{9, 512, 256, true},
			{3, 300, 60, true}, // ragged
			{17, 300, 300, false},
			{1, 40, 8, true},
		} {
			what := fmt.Sprintf("rmsnorm+sigmul precise=%v %+v", precise, c)
			wlen := c.group
			if c.wfull {
				wlen = c.cols
			}
			cw, gw := upload(t, g, hostWeight(rng, "gnorm", backend.BF16, 1, wlen, 2))
			x, gate := randT(t, g, rng, c.rows, c.cols, 3), randT(t, g, rng, c.rows, c.cols, 4)
			d := zeroT(g, c.rows, c.cols)
			backend.RMSNormSigmoidMul(host(), d.c, x.c, gate.c, cw, c.group, 1e-6)
			backend.RMSNormSigmoidMul(g, d.g, x.g, gate.g, gw, c.group, 1e-6)
			compare(t, what, g, d, 2e-6)
			compare(t, what+": x unchanged", g, x, 0)
			u := gpuCopy(g, x.g)
			g.RMSNorm(u, u, gw, c.group, 1e-6)
			g.SigmoidMul(u, u, gate.g)
			// in place, as the model calls it
			backend.RMSNormSigmoidMul(host(), x.c, x.c, gate.c, cw, c.group, 1e-6)
			backend.RMSNormSigmoidMul(g, x.g, x.g, gate.g, gw, c.group, 1e-6)
			compare(t, what+" in place", g, x, 2e-6)
			if e := gpuRelErr(g, x.g, u); e > 1e-7 {
				t.Errorf("%s: relative error %.3g against the unfused kernels", what, e)
			} else {
				t.Logf("%s: relative error %.2g against the unfused kernels", what, e)
			}
			g.Free(u)
		}
	}
}

// TestRoPE checks ApplyRoPE against the CPU, with the angles from the
// host's table (ropeTable: up to ropeTableRows rows) and from the kernel,
// and the two against each other.
func TestRoPE(t *testing.T) {
	g := gpu(t, true)
	defer func(on bool) { g.ropeTab = on }(g.ropeTab)
	rng := rand.New(rand.NewSource(5))
	for _, c := range []struct {
		rows, hd, dim int
		theta         float64
	}{{9, 16, 8, 10000}, {9, 128, 64, 600000}, {9, 64, 64, 10000}, {1, 128, 64, 600000}, {ropeTableRows + 1, 128, 64, 600000}} {
		pos := make([]int32, c.rows)
		for i := range pos {
			pos[i] = int32(rng.Intn(40000))
		}
		x := randT(t, g, rng, c.rows, 4*c.hd, 1)
		u := gpuCopy(g, x.g)
		rope := backend.RoPE{Dim: c.dim, Theta: c.theta}
		host().ApplyRoPE(x.c, c.hd, rope, pos)
		g.ropeTab = true
		g.ApplyRoPE(x.g, c.hd, rope, pos)
		compare(t, fmt.Sprintf("rope %+v", c), g, x, 1e-6)
		g.ropeTab = false
		g.ApplyRoPE(u, c.hd, rope, pos)
		if e := gpuRelErr(g, x.g, u); e > 1e-6 {
			t.Errorf("rope %+v: relative error %.3g between the table's angles and the kernel's", c, e)
		}
		g.Free(u)
	}
}

func TestElementwise(t *testing.T) {
	g := gpu(t, true)
	c := host()
	rng := rand.New(rand.NewSource(6))
	a, b := randT(t, g, rng, 5, 300, 4), randT(t, g, rng, 5, 300, 4)
	d := zeroT(g, 5, 300)
	c.Add(d.c, a.c, b.c)
	g.Add(d.g, a.g, b.g)
	compare(t, "add", g, d, 0)
	ac, bc, dc := contiguousPair(g, a), contiguousPair(g, b), contiguousPair(g, d) // aligned: four values at a time
	c.Add(dc.c, ac.c, bc.c)
	g.Add(dc.g, ac.g, bc.g)
	compare(t, "add (aligned)", g, dc, 0)
	c.SiLU(d.c, a.c)
	g.SiLU(d.g, a.g)
	compare(t, "silu", g, d, 1e-6)
	c.SiLUMul(d.c, a.c, b.c)
	g.SiLUMul(d.g, a.g, b.g)
	compare(t, "silumul", g, d, 1e-6)
	c.SigmoidMul(d.c, a.c, b.c)
	g.SigmoidMul(d.g, a.g, b.g)
	compare(t, "sigmoidmul", g, d, 1e-6)
	c.SigmoidMul(a.c, a.c, b.c) // aliasing
	g.SigmoidMul(a.g, a.g, b.g)
	compare(t, "sigmoidmul in place", g, a, 1e-6)
	rows := []int{4, 0, 2}
	gd := zeroT(g, 3, 300)
	c.Gather(gd.c, b.c, rows)
	g.Gather(gd.g, b.g, rows)
	compare(t, "gather", g, gd, 0)
	c.Copy(d.c, b.c)
	g.Copy(d.g, b.g)
	compare(t, "copy", g, d, 0)
	c.Zero(d.c.RowRange(1, 2))
	g.Zero(d.g.RowRange(1, 2))
	compare(t, "zero", g, d, 0)
	// contiguous tensors
	ct := g.Alloc(3, 7)
	vals := make([]float32, 21)
	for i := range vals {
		vals[i] = float32(i)
	}
	g.Write(ct, vals)
	out := make([]float32, 21)
	g.Read(ct, out)
	for i := range out {
		if out[i] != vals[i] {
			t.Fatalf("write/read: %v", out)
		}
	}
	g.Free(ct)
}

func TestLightning(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(7))
	for _, c := range []struct{ H, d int }{{4, 16}, {2, 128}, {3, 64}} {
		spans := []backend.Span{{Row: 0, N: 1, Pos: 5}, {Row: 1, N: 7, Pos: 0}, {Row: 8, N: 40, Pos: 3}, {Row: 48, N: 150, Pos: 0}, {Row: 198, N: 0, Pos: 2}}
		checkLightning(t, g, rng, "lightning", c.H, c.d, 198, spans, 0.02, 1e-4, false)
	}
}

func TestAttention(t *testing.T) {
	g := gpu(t, true)
	defer func(n int) { g.attnGroupMin = n }(g.attnGroupMin)
	g.attnGroupMin = 0 // the grouped kernels at every length
	rng := rand.New(rand.NewSource(8))
	for _, c := range []struct{ H, Hkv, hd int }{{4, 2, 16}, {8, 2, 128}, {4, 4, 64}} {
		caches := make([]backend.KV, 2)
		gc := make([]backend.KV, 2)
		var cachePairs []pair
		for i := range caches {
			kp, vp := zeroT(g, 4400, c.Hkv*c.hd), zeroT(g, 4400, c.Hkv*c.hd)
			caches[i], gc[i] = backend.KV{K: kp.c, V: vp.c}, backend.KV{K: kp.g, V: vp.g}
			cachePairs = append(cachePairs, kp, vp)
		}
		for _, spans := range [][]backend.Span{
			{{Row: 0, N: 37, Pos: 0}, {Row: 37, N: 270, Pos: 0}},
			{{Row: 0, N: 1, Pos: 37}, {Row: 1, N: 3, Pos: 270}},
			{{Row: 0, N: 2, Pos: 2100}, {Row: 2, N: 1, Pos: 40}}, // keys split over blocks
			{{Row: 0, N: 1, Pos: 4300}, {Row: 1, N: 1, Pos: 9}},  // over 32 blocks: k_attn_combine's two batches
		} {
			T := spans[1].Row + spans[1].N
			q := randT(t, g, rng, T, c.H*c.hd, 1)
			k, v := randT(t, g, rng, T, c.Hkv*c.hd, 1), randT(t, g, rng, T, c.Hkv*c.hd, 1)
			o := zeroT(g, T, c.H*c.hd)
			scale := float32(1 / math.Sqrt(float64(c.hd)))
			host().Attention(o.c, q.c, k.c, v.c, spans, caches, c.hd, scale)
			g.Attention(o.g, q.g, k.g, v.g, spans, gc, c.hd, scale)
			compare(t, fmt.Sprintf("attention %+v T=%d", c, T), g, o, 1e-5)
			// one block per query head (RINGO_CUDA_ATTN_GROUP=0) instead of
			// per KV head: the same arithmetic per head (the k, v appended
			// again to the same cache rows)
			one := g.Alloc(T, c.H*c.hd)
			g.attnGroup = false
			g.Attention(one, q.g, k.g, v.g, spans, gc, c.hd, scale)
			g.attnGroup = true
			if e := gpuRelErr(g, one, o.g); e > 1e-6 {
				t.Errorf("attention %+v T=%d: one block per query head differs by %.3g", c, T, e)
			} else if e != 0 {
				t.Logf("attention %+v T=%d: one block per query head differs by %.2g", c, T, e)
			}
			// k_attn held to 64 registers (k_attn4, the default) against
			// k_attn: the same arithmetic
			if g.attnBounds {
				g.attnGroup, g.attnBounds = false, false
				plain := g.Alloc(T, c.H*c.hd)
				g.Attention(plain, q.g, k.g, v.g, spans, gc, c.hd, scale)
				g.attnBounds = true
				mark := kernelMark(g)
				g.Attention(one, q.g, k.g, v.g, spans, gc, c.hd, scale)
				if ks := queuedKernels(g, mark); !slices.Contains(ks, "k_attn4") {
					t.Errorf("attention %+v T=%d: kernels %v, no k_attn4", c, T, ks)
				}
				g.attnGroup = true
				if e := gpuRelErr(g, one, plain); e != 0 || math.IsNaN(e) {
					t.Errorf("attention %+v T=%d: k_attn4 differs from k_attn by %.3g", c, T, e)
				}
				g.Free(plain)
			} else {
				t.Errorf("k_attn4 is not the default")
			}
			g.Free(one)
			// the split keys' partials merged one after the other
			// (k_attn_combine_seq): the same sums
			seq := g.Alloc(T, c.H*c.hd)
			g.attnCombineSeq = true
			g.Attention(seq, q.g, k.g, v.g, spans, gc, c.hd, scale)
			g.attnCombineSeq = false
			if e := gpuRelErr(g, seq, o.g); e != 0 || math.IsNaN(e) {
				t.Errorf("attention %+v T=%d: k_attn_combine_seq differs by %.3g", c, T, e)
			}
			g.Free(seq)
		}
		for i, p := range cachePairs {
			compare(t, fmt.Sprintf("attention %+v cache %d", c, i), g, p, 0)
		}
	}
}

func TestRoute(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(9))
	for _, c := range []struct {
		E   int
		p   backend.RouteParams
		tie bool
	}{
		{16, backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}, false},
		{256, backend.RouteParams{TopK: 8, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 2.5}, false},
		{256, backend.RouteParams{TopK: 8, Groups: 8, TopKGroups: 4, Sigmoid: true, Normalize: true, Scale: 1}, true},
		{64, backend.RouteParams{TopK: 6, Groups: 1, Sigmoid: false, Normalize: false, Scale: 1}, false},
		{60, backend.RouteParams{TopK: 1, Groups: 60, TopKGroups: 3, Sigmoid: false, Normalize: false, Scale: 1}, true},
		// groups of 32, 8 and 1 experts; a single group
		{128, backend.RouteParams{TopK: 6, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 1.5}, false},
		{64, backend.RouteParams{TopK: 4, Groups: 8, TopKGroups: 3, Sigmoid: true, Normalize: false, Scale: 1}, true},
		{32, backend.RouteParams{TopK: 3, Groups: 32, TopKGroups: 5, Sigmoid: true, Normalize: true, Scale: 1}, true},
		{256, backend.RouteParams{TopK: 8, Groups: 1, Sigmoid: true, Normalize: true, Scale: 2.5}, false},
	} {
		T := 33
		vals := make([]float32, T*c.E)
		for i := range vals {
			vals[i] = rng.Float32()*8 - 4
			if c.tie {
				vals[i] = float32(math.Round(float64(vals[i]))) // many exact ties
			}
		}
		l := pairOf(g, T, c.E, vals)
		var cb, gb backend.Weight
		if c.p.Sigmoid && !c.tie {
			cb, gb = upload(t, g, hostWeight(rng, "bias", backend.F32, 1, c.E, 0.1))
		}
		cr := host().Route(l.c, cb, c.p)
		// the routing by warps as compiled for any row, and for eight
		// experts per row (RINGO_CUDA_ROUTE_UNROLL): the same choices and
		// the same weights, bit for bit
		var first []float32
		for _, ru := range []bool{false, true} {
			saved := g.routeUnroll
			g.routeUnroll = ru
			gr := g.Route(l.g, gb, c.p)
			g.routeUnroll = saved
			ci, gi := make([]int32, c.p.TopK), make([]int32, c.p.TopK)
			cw, gw := make([]float32, c.p.TopK), make([]float32, c.p.TopK)
			var all []float32
			for r := 0; r < T; r++ {
				cr.Selected(r, ci, cw)
				gr.Selected(r, gi, gw)
				if fmt.Sprint(ci) != fmt.Sprint(gi) {
					t.Fatalf("route E=%d row %d (unrolled %v): ids %v, want %v", c.E, r, ru, gi, ci)
				}
				if e := relErr(gw, cw); e > 1e-6 {
					t.Fatalf("route E=%d row %d (unrolled %v): weights %v, want %v", c.E, r, ru, gw, cw)
				}
				all = append(all, gw...)
			}
			if first == nil {
				first = all
			} else if !slices.Equal(first, all) {
				t.Fatalf("route E=%d: weights differ between the unrolled and the general routing", c.E)
			}
		}
	}
}

func TestMoE(t *testing.T) {
	g := gpu(t, true)
	rng := rand.New(rand.NewSource(10))
	for _, kind := range []backend.Kind{backend.BF16, backend.F16, backend.F32} {
		E, I, D := 16, 32, 64
		ce, ge, _, _, _ := randExperts(t, g, E, I, D, func(name string, rows, cols int) backend.HostWeight {
			return hostWeight(rng, name, kind, rows, cols, 0.3)
		})
		p := backend.RouteParams{TopK: 4, Groups: 4, TopKGroups: 2, Sigmoid: true, Normalize: true, Scale: 2.5}
		for _, T := range []int{1, 3, 5, 8, 9, 70, 300} {
			l := randT(t, g, rng, T, E, 3)
			x := randT(t, g, rng, T, D, 1)
			if T%2 == 1 { // contiguous rows (vectorized loads)
				x = contiguousPair(g, x)
			}
			d := zeroT(g, T, D)
			host().MoE(d.c, x.c, host().Route(l.c, nil, p), ce)
			g.MoE(d.g, x.g, g.Route(l.g, nil, p), ge)
			compare(t, fmt.Sprintf("moe %v T=%d", kind, T), g, d, 1e-5)
		}
	}
}

// TestMemory checks the device memory report: some free, no more than the
// total, and less free after a 1 GiB allocation.
func TestMemory(t *testing.T) {
	gpu(t, false)               // skips without a GPU
	g, err := New(0, Options{}) // an empty pool: the allocation below is new device memory
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	free, total := g.Memory()
	if total <= 0 || free <= 0 || free > total {
		t.Fatalf("Memory() = %d free, %d total", free, total)
	}
	x := g.Alloc(1<<14, 1<<14) // 1 GiB
	defer g.Free(x)
	if free2, _ := g.Memory(); free2 > free-(1<<30) {
		t.Errorf("free memory %d before a 1 GiB allocation, %d after", free, free2)
	}
	t.Logf("%.1f GiB free of %.1f GiB", float64(free)/(1<<30), float64(total)/(1<<30))
}

// TestReadDirect checks reads straight into page-locked Go memory
// (readDirect) against the values written: a row of 160,000 values (as a
// step's logits) computed by a queued kernel, read into the same slice
// again, into a longer slice of the same array, into more slices than stay
// locked (the oldest unlocked), and with readDirect off; and that the
// direct path was taken (the slices locked).
func TestReadDirect(t *testing.T) {
	g := gpu(t, false)
	if g.d.cuMemHostRegister == 0 {
		t.Skip("the driver has no cuMemHostRegister")
	}
	defer func(on bool) { g.readDirect = on }(g.readDirect)
	const V = 160_000
	rng := rand.New(rand.NewSource(3))
	a, c := make([]float32, 2*V), make([]float32, 2*V)
	for i := range a {
		a[i], c[i] = rng.Float32(), rng.Float32()
	}
	x, y, sum := g.Alloc(2, V), g.Alloc(2, V), g.Alloc(2, V)
	defer func() {
		for _, m := range []backend.Tensor{x, y, sum} {
			g.Free(m)
		}
	}()
	g.Write(x, a)
	g.Write(y, c)
	check := func(what string, rows int, dst []float32, direct bool) {
		t.Helper()
		g.readDirect = direct
		g.Add(sum, x, y) // queued work before the read
		g.Read(sum.RowRange(0, rows), dst)
		for i := range rows * V {
			if want := a[i] + c[i]; dst[i] != want {
				t.Fatalf("%s: value %d is %v, want %v", what, i, dst[i], want)
			}
		}
		clear(dst)
	}
	locked := func(dst []float32) bool {
		p := uintptr(unsafe.Pointer(&dst[0]))
		return slices.ContainsFunc(g.hostRegs, func(r *hostReg) bool { return r.p == p })
	}
	big := make([]float32, 2*V)
	check("first read", 1, big[:V], true)
	if !locked(big) {
		t.Fatalf("the read did not lock its slice (readDirect %v)", g.readDirect)
	}
	check("same slice", 1, big[:V], true)
	check("longer slice", 2, big, true)
	if len(g.hostRegs) == 0 || g.hostRegs[0].n != 4*2*V {
		t.Errorf("the longer slice is not the one locked first: %d ranges", len(g.hostRegs))
	}
	var others [][]float32
	for i := range hostRegsMax + 2 {
		o := make([]float32, V)
		check(fmt.Sprintf("slice %d", i), 1, o, true)
		others = append(others, o)
	}
	if len(g.hostRegs) != hostRegsMax || locked(big) || !locked(others[len(others)-1]) {
		t.Errorf("%d ranges locked, the first slice locked %v, the last %v", len(g.hostRegs), locked(big), locked(others[len(others)-1]))
	}
	check("through the pinned buffer", 2, big, false)
	check("again directly", 1, big[:V], true)
}
