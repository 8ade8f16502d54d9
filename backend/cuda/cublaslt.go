package cuda

import (
	"fmt"
	"unsafe"
)

// cublasLt is the subset of libcublasLt used for BF16 and block-scaled FP8 GEMMs.
type cublasLt struct {
	l                                                     *lib
	create, destroy, descCreate, descSet, descDestroy     uintptr
	layoutCreate, layoutDestroy, prefCreate, prefSet      uintptr
	prefDestroy, heuristic, matmul, statusString, version uintptr
	handle                                                uintptr
	plans                                                 map[ltKey]*ltPlan
	failed                                                map[ltKey]error // keys without an algorithm
	list                                                  []*ltPlan       // by ltPlan.id
}

// cuBLAS / CUDA enums.
const (
	cudaR32F             = 0
	cudaR16BF            = 14
	cudaR8FE4M3          = 28
	cublasCompute32F     = 68
	cublasOpN            = 0
	cublasOpT            = 1
	ltDescTransA         = 3
	ltDescTransB         = 4
	ltDescAScalePointer  = 17
	ltDescBScalePointer  = 18
	ltDescAScaleMode     = 31
	ltDescBScaleMode     = 32
	ltScaleVec128F32     = 4 // CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F: one FP32 per 128 values along K
	ltScaleBlk128F32     = 5 // CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F
	ltPrefMaxWorkspace   = 1
	ltPrefMinAlignA      = 5
	ltPrefMinAlignB      = 6
	ltPrefMinAlignC      = 7
	ltPrefMinAlignD      = 8
	ltWorkspaceBytes     = 32 << 20
	ltHeuristicResultLen = 96
)

type ltKey struct {
	n, t, k, ldd, alignD int
	fp8                  bool // E4M3 operands with 128×128 (W) and 1×128 (X) block scales
	dBF16                bool // BF16 output (contiguous, ldd = n)
}

type ltPlan struct {
	key           ltKey
	id            int // index in cublasLt.list (how the launch queue names it)
	desc, a, b, c uintptr
	result        [ltHeuristicResultLen]byte // cublasLtMatmulHeuristicResult_t; algo is its first 64 bytes
}

func loadCublasLt() (*cublasLt, error) {
	l, err := openLib("cuBLASLt (libcublasLt.so)", []string{"libcublasLt.so", "libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"}, "libcublasLt.so*", "libcublasLt-*.so*")
	if err != nil {
		return nil, err
	}
	c := &cublasLt{l: l, plans: map[ltKey]*ltPlan{}}
	err = l.bind(map[string]*uintptr{
		"cublasLtCreate": &c.create, "cublasLtDestroy": &c.destroy, "cublasLtMatmulDescCreate": &c.descCreate,
		"cublasLtMatmulDescSetAttribute": &c.descSet, "cublasLtMatmulDescDestroy": &c.descDestroy,
		"cublasLtMatrixLayoutCreate": &c.layoutCreate, "cublasLtMatrixLayoutDestroy": &c.layoutDestroy,
		"cublasLtMatmulPreferenceCreate": &c.prefCreate, "cublasLtMatmulPreferenceSetAttribute": &c.prefSet,
		"cublasLtMatmulPreferenceDestroy": &c.prefDestroy, "cublasLtMatmulAlgoGetHeuristic": &c.heuristic,
		"cublasLtMatmul": &c.matmul, "cublasLtGetStatusString": &c.statusString, "cublasLtGetVersion": &c.version,
	})
	if err != nil {
		return nil, err
	}
	if err := c.check(ccall(c.create, uintptr(unsafe.Pointer(&c.handle))), "cublasLtCreate"); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cublasLt) check(r uintptr, op string) error {
	if int32(r) == 0 {
		return nil
	}
	return fmt.Errorf("cuda: %s: %s (cublas status %d)", op, gostring(ccall(c.statusString, r)), int32(r))
}

// alignOf returns the largest power of two up to 256 dividing every value.
func alignOf(vals ...uintptr) int {
	a := 256
	for _, v := range vals {
		for a > 1 && v%uintptr(a) != 0 {
			a /= 2
		}
	}
	return a
}

// plan returns (creating once) the matmul plan for D[T,N] (row-major, ldd) =
// X[T,K] (BF16, contiguous) · W[N,K]ᵀ (BF16, contiguous), F32 output.
func (c *cublasLt) plan(n, t, k, ldd, alignD int) (*ltPlan, error) {
	return c.planOf(ltKey{n: n, t: t, k: k, ldd: ldd, alignD: alignD})
}

// plan8 is plan for E4M3 operands with block scales (Hopper, cuBLAS 12.9 or
// newer): W[N,K] with one FP32 scale per 128×128 block, X[T,K] with one per
// 128 values of a row; the scale addresses are given to gemm8. Where
// cuBLASLt has no such GEMM with an FP32 output, the plan writes BF16
// (key.dBF16: a contiguous [T,N], for the caller to widen).
func (c *cublasLt) plan8(n, t, k, ldd, alignD int) (*ltPlan, error) {
	p, err := c.planOf(ltKey{n: n, t: t, k: k, ldd: ldd, alignD: alignD, fp8: true})
	if err == nil {
		return p, nil
	}
	p, err2 := c.planOf(ltKey{n: n, t: t, k: k, ldd: n, alignD: alignOf(uintptr(2 * n)), fp8: true, dBF16: true})
	if err2 == nil {
		return p, nil
	}
	return nil, fmt.Errorf("%w; with a BF16 output: %v", err, err2)
}

func (c *cublasLt) planOf(key ltKey) (*ltPlan, error) {
	if p := c.plans[key]; p != nil {
		return p, nil
	}
	if err := c.failed[key]; err != nil {
		return nil, err
	}
	p, err := c.newPlan(key)
	if err != nil {
		if c.failed == nil {
			c.failed = map[ltKey]error{}
		}
		c.failed[key] = err
		return nil, err
	}
	p.id = len(c.list)
	c.plans[key] = p
	c.list = append(c.list, p)
	return p, nil
}

// newPlan creates key's descriptors and picks its algorithm (destroying
// what it made when that fails).
func (c *cublasLt) newPlan(key ltKey) (_ *ltPlan, err error) {
	n, t, k, ldd, alignD := key.n, key.t, key.k, key.ldd, key.alignD
	p := &ltPlan{key: key}
	defer func() {
		if err != nil {
			c.destroyPlan(p)
		}
	}()
	if err := c.check(ccall(c.descCreate, uintptr(unsafe.Pointer(&p.desc)), cublasCompute32F, cudaR32F), "cublasLtMatmulDescCreate"); err != nil {
		return nil, err
	}
	ta, tb := int32(cublasOpT), int32(cublasOpN)
	if err := c.check(ccall(c.descSet, p.desc, ltDescTransA, uintptr(unsafe.Pointer(&ta)), 4), "cublasLtMatmulDescSetAttribute(TRANSA)"); err != nil {
		return nil, err
	}
	if err := c.check(ccall(c.descSet, p.desc, ltDescTransB, uintptr(unsafe.Pointer(&tb)), 4), "cublasLtMatmulDescSetAttribute(TRANSB)"); err != nil {
		return nil, err
	}
	ab, elem := uintptr(cudaR16BF), 2
	if key.fp8 {
		ab, elem = cudaR8FE4M3, 1
		ma, mb := int32(ltScaleBlk128F32), int32(ltScaleVec128F32)
		if err := c.check(ccall(c.descSet, p.desc, ltDescAScaleMode, uintptr(unsafe.Pointer(&ma)), 4), "cublasLtMatmulDescSetAttribute(A_SCALE_MODE)"); err != nil {
			return nil, err
		}
		if err := c.check(ccall(c.descSet, p.desc, ltDescBScaleMode, uintptr(unsafe.Pointer(&mb)), 4), "cublasLtMatmulDescSetAttribute(B_SCALE_MODE)"); err != nil {
			return nil, err
		}
		// the algorithm query wants scale addresses; gemm8 sets the real
		// ones before each call
		var dummy uintptr = 256
		for _, attr := range []uintptr{ltDescAScalePointer, ltDescBScalePointer} {
			if err := c.check(ccall(c.descSet, p.desc, attr, uintptr(unsafe.Pointer(&dummy)), 8), "cublasLtMatmulDescSetAttribute(SCALE_POINTER)"); err != nil {
				return nil, err
			}
		}
	}
	// column-major views: A = W as K×N (ld K), B = X as K×T (ld K), C = D as N×T (ld ldd)
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.a)), ab, uintptr(k), uintptr(n), uintptr(k)), "cublasLtMatrixLayoutCreate(A)"); err != nil {
		return nil, err
	}
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.b)), ab, uintptr(k), uintptr(t), uintptr(k)), "cublasLtMatrixLayoutCreate(B)"); err != nil {
		return nil, err
	}
	dt := uintptr(cudaR32F)
	if key.dBF16 {
		dt = cudaR16BF
	}
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.c)), dt, uintptr(n), uintptr(t), uintptr(ldd)), "cublasLtMatrixLayoutCreate(D)"); err != nil {
		return nil, err
	}
	var pref uintptr
	if err := c.check(ccall(c.prefCreate, uintptr(unsafe.Pointer(&pref))), "cublasLtMatmulPreferenceCreate"); err != nil {
		return nil, err
	}
	defer ccall(c.prefDestroy, pref)
	ws := uint64(ltWorkspaceBytes)
	if err := c.check(ccall(c.prefSet, pref, ltPrefMaxWorkspace, uintptr(unsafe.Pointer(&ws)), 8), "cublasLtMatmulPreferenceSetAttribute(workspace)"); err != nil {
		return nil, err
	}
	alignAB := uint32(alignOf(uintptr(elem * k)))
	alD := uint32(alignD)
	for _, a := range []struct {
		attr uintptr
		v    *uint32
	}{{ltPrefMinAlignA, &alignAB}, {ltPrefMinAlignB, &alignAB}, {ltPrefMinAlignC, &alD}, {ltPrefMinAlignD, &alD}} {
		if err := c.check(ccall(c.prefSet, pref, a.attr, uintptr(unsafe.Pointer(a.v)), 4), "cublasLtMatmulPreferenceSetAttribute(alignment)"); err != nil {
			return nil, err
		}
	}
	var got int32
	if err := c.check(ccall(c.heuristic, c.handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, uintptr(unsafe.Pointer(&p.result[0])), uintptr(unsafe.Pointer(&got))), "cublasLtMatmulAlgoGetHeuristic"); err != nil {
		return nil, err
	}
	if got < 1 {
		what := "BF16"
		if key.fp8 {
			what = "block-scaled FP8"
		}
		return nil, fmt.Errorf("cuda: cublasLt has no algorithm for %s GEMM N=%d T=%d K=%d", what, n, t, k)
	}
	return p, nil
}

// destroyPlan frees a plan's descriptors (those it has).
func (c *cublasLt) destroyPlan(p *ltPlan) {
	for _, l := range []uintptr{p.a, p.b, p.c} {
		if l != 0 {
			ccall(c.layoutDestroy, l)
		}
	}
	if p.desc != 0 {
		ccall(c.descDestroy, p.desc)
	}
}

// gemm runs D = X·Wᵀ with a plan on a stream.
func (c *cublasLt) gemm(p *ltPlan, w, x, d, workspace uintptr, alpha, beta *float32, stream uintptr) error {
	return c.check(ccall(c.matmul, c.handle, p.desc, uintptr(unsafe.Pointer(alpha)), w, p.a, x, p.b, uintptr(unsafe.Pointer(beta)),
		d, p.c, d, p.c, uintptr(unsafe.Pointer(&p.result[0])), workspace, ltWorkspaceBytes, stream), "cublasLtMatmul")
}

// gemm8 runs D = X·Wᵀ with an FP8 plan: ws and xs are the block scales of W
// and X (cublasLt.plan8), set on the plan's descriptor for this call.
func (c *cublasLt) gemm8(p *ltPlan, w, ws, x, xs, d, workspace uintptr, alpha, beta *float32, stream uintptr) error {
	if err := c.check(ccall(c.descSet, p.desc, ltDescAScalePointer, uintptr(unsafe.Pointer(&ws)), 8), "cublasLtMatmulDescSetAttribute(A_SCALE_POINTER)"); err != nil {
		return err
	}
	if err := c.check(ccall(c.descSet, p.desc, ltDescBScalePointer, uintptr(unsafe.Pointer(&xs)), 8), "cublasLtMatmulDescSetAttribute(B_SCALE_POINTER)"); err != nil {
		return err
	}
	return c.gemm(p, w, x, d, workspace, alpha, beta, stream)
}

func (c *cublasLt) close() {
	for _, p := range c.plans {
		c.destroyPlan(p)
	}
	c.plans, c.list = nil, nil
	ccall(c.destroy, c.handle)
}
