package cuda

import (
	"fmt"
	"unsafe"
)

// cublasLt is the subset of libcublasLt used for BF16 GEMMs.
type cublasLt struct {
	l                                                     *lib
	create, destroy, descCreate, descSet, descDestroy     uintptr
	layoutCreate, layoutDestroy, prefCreate, prefSet      uintptr
	prefDestroy, heuristic, matmul, statusString, version uintptr
	handle                                                uintptr
	plans                                                 map[ltKey]*ltPlan
	list                                                  []*ltPlan // by ltPlan.id
}

// cuBLAS / CUDA enums.
const (
	cudaR32F             = 0
	cudaR16BF            = 14
	cublasCompute32F     = 68
	cublasOpN            = 0
	cublasOpT            = 1
	ltDescTransA         = 3
	ltDescTransB         = 4
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
	key := ltKey{n, t, k, ldd, alignD}
	if p := c.plans[key]; p != nil {
		return p, nil
	}
	p := &ltPlan{key: key}
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
	// column-major views: A = W as K×N (ld K), B = X as K×T (ld K), C = D as N×T (ld ldd)
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.a)), cudaR16BF, uintptr(k), uintptr(n), uintptr(k)), "cublasLtMatrixLayoutCreate(A)"); err != nil {
		return nil, err
	}
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.b)), cudaR16BF, uintptr(k), uintptr(t), uintptr(k)), "cublasLtMatrixLayoutCreate(B)"); err != nil {
		return nil, err
	}
	if err := c.check(ccall(c.layoutCreate, uintptr(unsafe.Pointer(&p.c)), cudaR32F, uintptr(n), uintptr(t), uintptr(ldd)), "cublasLtMatrixLayoutCreate(D)"); err != nil {
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
	alignAB := uint32(alignOf(uintptr(2 * k)))
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
		return nil, fmt.Errorf("cuda: cublasLt has no algorithm for BF16 GEMM N=%d T=%d K=%d", n, t, k)
	}
	p.id = len(c.list)
	c.plans[key] = p
	c.list = append(c.list, p)
	return p, nil
}

// gemm runs D = X·Wᵀ with a plan on a stream.
func (c *cublasLt) gemm(p *ltPlan, w, x, d, workspace uintptr, alpha, beta *float32, stream uintptr) error {
	return c.check(ccall(c.matmul, c.handle, p.desc, uintptr(unsafe.Pointer(alpha)), w, p.a, x, p.b, uintptr(unsafe.Pointer(beta)),
		d, p.c, d, p.c, uintptr(unsafe.Pointer(&p.result[0])), workspace, ltWorkspaceBytes, stream), "cublasLtMatmul")
}

func (c *cublasLt) close() {
	for _, p := range c.plans {
		ccall(c.layoutDestroy, p.a)
		ccall(c.layoutDestroy, p.b)
		ccall(c.layoutDestroy, p.c)
		ccall(c.descDestroy, p.desc)
	}
	c.plans, c.list = nil, nil
	ccall(c.destroy, c.handle)
}
