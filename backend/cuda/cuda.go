// Package cuda implements backend.Backend on an NVIDIA GPU without cgo: the
// CUDA driver, NVRTC and cuBLASLt are loaded at run time with purego, and
// the kernels (kernels.cu, embedded) are compiled by NVRTC on first use and
// cached on disk per GPU architecture.
//
// Activations are float32 in device memory; weights keep their stored dtype
// (BF16, F16, F32; FP8 is dequantized to BF16 at upload). In precise mode
// every matrix product is an FP32 kernel (used to check against the
// fixtures); in fast mode products with more than a few rows use BF16 tensor
// cores with FP32 accumulation: cuBLASLt GEMMs for the dense weights, and own
// mma.sync kernels for the routed experts (grouped GEMM), the chunked
// lightning attention (chunk-parallel form) and prefill softmax attention
// (flash attention).
//
// Operations queue their work; it is issued in order on the backend's own
// stream when a Read (or Sync, Write) needs it, as a CUDA graph when the same
// sequence of work recurs (graph.go). Errors in operations (which have no
// error result) panic with the CUDA error text.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ringo-ai/ringo/backend"
)

// Options configure the backend.
type Options struct {
	// Precise runs every matrix product in FP32 (own kernels); otherwise
	// products of more than GEMVRows rows use BF16 tensor cores: cuBLASLt
	// GEMMs (except the MoE router, "*.mlp.gate.weight", kept in FP32 as
	// router_dtype asks), and on sm_80+ the mma.sync kernels for BF16 routed
	// experts, chunked lightning attention (head dim 64 or 128) and prefill
	// softmax attention (head dim 64 or 128). RINGO_CUDA_NO_MMA=1 turns the
	// latter off (FP32 SIMT kernels as in precise mode).
	Precise bool
	// CacheDir holds compiled kernels ("" = <user cache dir>/ringo/cuda).
	CacheDir string
	// NoGraphs issues every kernel with its own launch instead of replaying
	// recurring steps as CUDA graphs (also RINGO_CUDA_NO_GRAPHS=1).
	NoGraphs bool
}

// GEMVRows is the largest row count multiplied with the GEMV kernel.
const GEMVRows = 8

// bigStepRows is the fewest rows of a product that make its step a big one
// (prefill), issued early and eagerly (Backend.flushKernels).
const bigStepRows = 256

// gridUsers counts, per device, the open backends that may launch kernels
// with a grid barrier (moe_gd_bf16v), whose blocks must all be resident at
// once: two such kernels of two backends running at the same time could
// each hold part of the GPU and wait for the other forever, so while more
// than one is open they run the kernels without a barrier (gdFits).
var gridUsers sync.Map // int32 device -> *atomic.Int32

func gridUsersOf(dev int32) *atomic.Int32 {
	if v, ok := gridUsers.Load(dev); ok { // no allocation per MoE layer
		return v.(*atomic.Int32)
	}
	v, _ := gridUsers.LoadOrStore(dev, new(atomic.Int32))
	return v.(*atomic.Int32)
}

// joinGrid counts b in gridUsers when it may run grid-barrier kernels.
func (b *Backend) joinGrid() {
	if b.moeFused && !b.gridUser {
		b.gridUser = true
		gridUsersOf(b.dev).Add(1)
	}
}

// leaveGrid undoes joinGrid.
func (b *Backend) leaveGrid() {
	if b.gridUser {
		b.gridUser = false
		gridUsersOf(b.dev).Add(-1)
	}
}

// gridAlone reports whether no other open backend on b's device may run
// grid-barrier kernels.
func (b *Backend) gridAlone() bool {
	n := gridUsersOf(b.dev).Load()
	if b.gridUser {
		n--
	}
	return n == 0
}

// ErrNoDevice is wrapped by New when no usable GPU is present.
var ErrNoDevice = errors.New("cuda: no usable NVIDIA GPU")

// Backend is the CUDA backend.
type Backend struct {
	mu   sync.Mutex
	d    *driver
	lt   *cublasLt
	ltWS uintptr
	opts Options

	dev       int32
	ctx       uintptr
	devName   string
	ccMaj     int
	ccMin     int
	sms       int
	smemOptin int
	mod       uintptr
	fns       map[string]uintptr
	fnNames   map[uintptr]string
	kernelSrc string // where the kernels came from
	mma       bool   // fast mode may use the tensor-core kernels (sm_80+)
	fp8       bool   // FP8 weights stay FP8 on the device (fast mode with mma and cuBLASLt)

	roofOnce       sync.Once
	roofBW, roofFL float64

	pool    map[int][]uintptr // free device blocks by size class (bytes)
	inUse   int64
	pooled  int64
	weights []uintptr
	closed  bool

	// staging ring for small per-call arrays: pinned host memory copied
	// (by flush, in one copy) to the same offsets of a device buffer
	stageHost, stageDev uintptr
	stageCap, stageOff  int
	flushedOff          int       // ring bytes already copied
	overflow            []uintptr // staging blocks beyond the ring, freed at the next sync
	// stageGen counts the staging ring's resets (sync): a staged address
	// from an earlier generation is gone
	stageGen int
	// ropeTab: the RoPE angles of decode steps from the host's table
	// (ropeTable; RINGO_CUDA_ROPE_TABLE=0 turns it off)
	ropeTab bool
	// normPlain: an RMSNorm of one row into another tensor waits for a
	// GEMV of its output to run it, as AddRMSNormTo does (needs normGEMV;
	// RINGO_CUDA_NORM_PLAIN=0 turns it off)
	normPlain bool
	// ropeMemo is the last RoPE table staged (ropeTable)
	ropeMemo struct {
		theta   float64
		dim     int
		pos     []int32
		inv, cs []float32
		p       uintptr
		gen     int
	}
	// readBuf is Read's pinned host buffer (readCap bytes) for reads of at
	// most readPinnedMax bytes that follow queued work; with readPinned off
	// (RINGO_CUDA_READ_PINNED=0), for larger reads and for reads with
	// nothing queued before them, Read copies into Go memory directly
	readBuf    uintptr
	readCap    int
	readPinned bool
	// drawOn (RINGO_CUDA_DRAW=0 turns it off): DrawTokens may be used
	// (backend.Drawer); drawPrm and drawOut are its reused room
	drawOn  bool
	drawPrm []int64
	drawOut []float32
	// readDirect (RINGO_CUDA_READ_DIRECT=0 turns it off): those reads of
	// readDirectMin bytes or more go straight into the caller's Go memory,
	// page-locked (cuMemHostRegister, pinned for the collector with a
	// runtime.Pinner) the first time it is read into and kept so for the
	// last hostRegsMax slices, instead of through readBuf and a copy (~40
	// µs for a decode step's 0.6 MB of logits, the GPU idle meanwhile:
	// 3.0 % per step at batch 1 on the H200); the copy is issued after the
	// step's graphs, so that their commands do not depend on the caller's
	// memory
	readDirect bool
	hostRegs   []*hostReg // most recently used first

	// deferred work and CUDA graphs (graph.go)
	stream        uintptr
	queue         []uint64
	graphs        map[uint64]*graphEntry
	graphsOn      bool
	graphWarned   bool
	stats         Stats
	statsLast     Stats
	statsEvery    int
	prof          *profiler
	kernelsAtSync int64
	timing        stepTiming // host and GPU time per step (with statsEvery)
	tl            *timeline  // RINGO_CUDA_TIMELINE
	timingEach    bool       // print each step's timing (RINGO_CUDA_TIMING=1)
	// a step with products of bigStepRows rows or more (prefill) is issued
	// every flushKernels kernels (0: at the step's end) and never as a
	// graph, so that the GPU starts while the host still records it;
	// other steps (decode) are issued in segments, each replayed as a graph,
	// so that the GPU starts on a step while the host records the rest of it:
	// the first after segFirst kernels, then every segRest (0: the rest at
	// the step's end; RINGO_CUDA_SEG=first,rest, or 0 for one graph per
	// step). pendingKernels counts the kernels queued since the last flush,
	// stepFlushes the flushes of this step.
	bigStep           bool
	flushKernels      int
	segFirst, segRest int
	pendingKernels    int
	stepFlushes       int
	// trace (tests) keeps the name of every kernel queued, in launched
	trace    bool
	launched []string

	// prefill kernel choices
	moeYB    bool // moe_mmb's expert outputs in BF16 (RINGO_CUDA_MOE_YB=0: FP32)
	mmbStage bool // moe_mmb_yb_wg's outputs through shared memory (RINGO_CUDA_MMB_STAGE=0: direct)
	mmbFP8   bool // FP8 experts' prefill on moe_mmb_*_wg8 (RINGO_CUDA_MMB_FP8=0: moe_mma*_fp8)
	// fp8GEMM runs prefill products of FP8 weights with 128×128 blocks on
	// cuBLASLt's block-scaled FP8 GEMM (RINGO_CUDA_FP8_GEMM=0: widened to
	// BF16). fp8ScaleMN lays the rows' scales out as cuBLASLt's VEC128_32F
	// reads them, [K/128][T] (always; false, [T][K/128], is kept for
	// TestFP8BlockScaledGEMM to show that the layout matters)
	fp8GEMM, fp8ScaleMN bool
	fp8Noted            bool // a shape without a block-scaled FP8 GEMM was reported

	// routing results of the current step (ops.go)
	rt routeArena

	// kernel parameter block (heap, stable addresses)
	params *paramBlock
	// programmatic dependent launch (see PDL_ENTER in kernels.cu): launches
	// go through cuLaunchKernelEx with pdlCfg
	pdl    bool
	pdlCfg *pdlLaunch
	// moe3 (RINGO_CUDA_MOE3) keeps the three-kernel decode MoE (gate|up,
	// down, combine) instead of the two-kernel one, for comparisons
	moe3 bool
	// gemvT8 (RINGO_CUDA_GEMV_T8) runs single-row GEMVs with the kernels
	// for up to 8 rows instead of the ones compiled for 1, for comparisons
	gemvT8 bool
	// normGEMV (RINGO_CUDA_NORM_GEMV=0 turns it off): a one-row
	// AddRMSNormTo waits in pendingNorm for the GEMV after it to take it
	normGEMV    bool
	pendingNorm *normReq // &normBuf or nil (no allocation per step)
	normBuf     normReq
	// routePartials (default on sm_90, where k_norm_route runs;
	// RINGO_CUDA_ROUTE_PARTIALS=0 turns it off): a one-row FP8 product of
	// gemv_fp8v2 waits in pendingGEMV; when the operation after it is
	// AddRMSNormRoute of its output, it runs as gemv_fp8v2r (the router's
	// partial logits in its blocks) and the routing as k_route_p
	routePartials bool
	// gvMMA (default on sm_90; RINGO_CUDA_GV_MMA=0 turns it off):
	// gemv_fp8v2 and gemv_fp8v2r run on tensor cores (gemv_fp8v2m,
	// gemv_fp8v2rm) where their shapes allow
	gvMMA       bool
	pendingGEMV *gemvReq // &gemvBuf or nil
	gemvBuf     gemvReq
	// gemv4n: the single-row GEMVs with the input norm of at least this
	// many rows run gemv_bf16v4n, four rows per warp, in one wave for
	// Ring-mini's qkv|gate (RINGO_CUDA_GEMV4N=N, default 4096; 0: never)
	gemv4n int
	// dcPre (RINGO_CUDA_DC_PRE=0 turns it off): moe_dc asks L2 for its
	// routed rows before its PDL wait, while moe_gu runs (moe_dc_pre);
	// with dcReg too (RINGO_CUDA_DC_REG=0 turns it off) each lane loads
	// its first chunks of the rows into registers there (dc_rows)
	dcPre, dcReg bool
	// warpRoute: the routing of groups of 32 experts by warps
	// (route_row_warp; RINGO_CUDA_WARP_ROUTE=0 turns it off)
	warpRoute bool
	// routeUnroll: route_row_warp compiled for eight experts per row, its
	// loads issued at once (0.5 µs less per routing, −0.8 % per decode
	// step on the H200; RINGO_CUDA_ROUTE_UNROLL=0 turns it off)
	routeUnroll bool
	// gemv2: single-row BF16 GEMVs of at least this many output rows run
	// gemv_bf16v2, two rows per warp (RINGO_CUDA_GEMV2=N; 0: never). 3072
	// since the twenty-fifth session: Ring-mini's softmax qkv in
	// gemv_bf16v2n, −0.3 to −0.45 % per decode step on the H200 (4096
	// before, when it measured as noise; 2048, the dense GEMVs too, +0.6 %)
	gemv2 int
	// fp8Rows: single-row FP8 GEMVs of at least 2,048 output rows run
	// gemv_fp8v2 (2), gemv_fp8v4 (4) or gemv_fp8v8 (8, the default: for
	// 16,384 rows or more, as 4 below; −0.7 % per step on Ring-flash's
	// shapes, twenty-seventh session) rows per warp, else gemv_fp81
	// (RINGO_CUDA_FP8_ROWS=1, 2, 4 or 8)
	fp8Rows int
	// fp8Rows4Min: with fp8Rows 4, products of fewer rows than this take
	// two per warp (RINGO_CUDA_FP8_ROWS4_MIN; default 8192: Ring-flash's
	// 4,096-row dense GEMVs in 256 blocks rather than 128, −0.7 % per step)
	fp8Rows4Min int
	// fp8Rows8Min: with fp8Rows 8, products of fewer rows than this are
	// taken as with 4 (16,384: Ring-flash's qkv|gate)
	fp8Rows8Min int
	// fp8TMA (sm_90, the default; RINGO_CUDA_FP8_TMA=0 turns it off):
	// gemv_fp8t8 for the products gemv_fp8v8 takes, its weights streamed
	// into shared memory by bulk copies (−2.2 % per step on Ring-flash's
	// shapes, +5.8 % tok/s on the whole model; twenty-seventh session)
	fp8TMA bool
	// bf16TMA (sm_90; RINGO_CUDA_BF16_TMA=0 turns it off): gemv_bf16t4n
	// for the products gemv_bf16v4n takes (the input norm in the GEMV), its
	// rows streamed into shared memory by bulk copies (−1.5 to −1.7 % per
	// step on Ring-mini; twenty-eighth session)
	bf16TMA bool
	// dcMMA (sm_90, the default; RINGO_CUDA_DC_MMA=0 turns it off): the
	// MoE's FP8 down projections and their weighted sum on tensor cores,
	// moe_dcmmat (a warp per slot, its 16 rows streamed by bulk copies; FP16
	// activations, checked within tolerance by TestFP8MMAMoE): 11.6–13.1 µs
	// per launch against moe_dcl2_fp8's 18.0, −4.5 % per decode step on
	// Ring-flash's shapes, +8.7 % tok/s on the whole model (twenty-ninth
	// session)
	dcMMA bool
	// dcWide (the default; RINGO_CUDA_DC_WIDE=0 turns it off): moe_dcmmatw,
	// moe_dcmmat in rounds of 512 columns with one stage per warp, where
	// the experts' columns allow it (−0.25 % per step; twenty-ninth session)
	dcWide bool
	// guMMA (sm_90, the default; RINGO_CUDA_GU_MMA=0 turns it off): one
	// token's FP8 gate|up pairs on tensor cores, moe_gummat9w, where its
	// grid fills the GPU in one wave (guMMAFits; with moe_dcmmatw −0.8 %
	// per step on Ring-flash's shapes; twenty-ninth session)
	guMMA bool
	// guMMAAnyGrid (tests): moe_gummat9w whatever its grid's fill
	guMMAAnyGrid bool
	// mmaE4M3 (sm_90): moe_gummat9q (bit 1, the default) and moe_dcmmatq
	// (bit 2) in place of moe_gummat9w and moe_dcmmatw, the activations as
	// three E4M3 parts and the products E4M3 by E4M3 (RINGO_CUDA_MMA_E4M3=0,
	// 1, 2 or 3; moe_gummat9q −1.1 to −1.6 % per decode step on Ring-flash's
	// shapes, thirtieth session)
	mmaE4M3 int
	// dcOnePass (RINGO_CUDA_DC_ONEPASS=0 turns it off): moe_dcmmatw1, the
	// activation rows staged from one pass of loads, where the experts
	// have at most 1,024 columns (thirtieth session)
	dcOnePass bool
	// guPairs: FP8 experts' gate|up pairs per warp in moe_gu (1, 2 for
	// moe_gu2_fp8, the default, or 4 for moe_gu4_fp8; RINGO_CUDA_GU_PAIRS)
	guPairs int
	// dclRows: FP8 experts' down projections by moe_dcl*_fp8 with this
	// many rows per warp, each warp's slots one after another (1, 2, the
	// default, or 4; 0 moe_dc_fp8; RINGO_CUDA_DCL)
	dclRows int
	// fuseRope (RINGO_CUDA_FUSE=0 turns it off) lets NormRoPELightning
	// normalise and rotate q and k inside k_lightning_rec
	fuseRope bool
	// normRoute (sm_90+; RINGO_CUDA_NORM_ROUTE=0 turns it off) lets
	// AddRMSNormRoute fuse decode's norm, router and routing (k_norm_route)
	normRoute bool
	// recGate (sm_90+; RINGO_CUDA_REC_GATE=0 turns it off) lets a decode
	// recurrence (k_lightning_rec with the QK norm) wait in pendingRec for
	// the gate norm of its output, which then runs inside it
	// (k_lightning_recg)
	recGate    bool
	pendingRec *recReq // &recBuf or nil
	recBuf     recReq
	// recLate (RINGO_CUDA_REC_EARLY=0) makes k_lightning_rec load its state
	// after PDL_ENTER instead of before, for comparisons
	recLate bool
	// recMinB: k_lightning_recg (1, one block per SM) or k_lightning_recg2
	// (2, two blocks per SM at 64 registers); 0 (the default) takes the
	// first unless its clusters would not all fit on the GPU at once
	// (recgFit). RINGO_CUDA_REC_MINB
	recMinB int
	// recgFit caches how many clusters of k_lightning_recg fit at once,
	// by grid (cuOccupancyMaxActiveClusters; 0 where unknown)
	recgFit map[int]int
	// recLoadsLate (RINGO_CUDA_REC_LOADS=0) makes k_lightning_recg load v
	// and the gate after its barriers, as before the twenty-fourth session,
	// for comparisons
	recLoadsLate bool
	// routeEnd is the queue length right after the last k_route launch;
	// guEarly lets moe_gu's shared-expert blocks run before its PDL wait
	// right after the routing (RINGO_CUDA_GU_EARLY=0 turns it off, for
	// comparisons)
	routeEnd int
	guEarly  bool
	// moeFused (RINGO_CUDA_MOE_FUSED=0 turns it off) runs the one-row BF16
	// MoE with its shared expert as one kernel, moe_gd_bf16v, where all its
	// blocks fit on the GPU at once (gdFits); gdBar is its grid barrier's
	// words (count, generation; kernels.cu, gd_sync), zeroed at New
	moeFused bool
	gridUser bool // counted in gridUsers (moeFused at New)
	gdStage  int  // RINGO_CUDA_GD_STAGE: when moe_gd stages its routed down rows (kernels.cu: 0 before the pairs, 1 after, 2 behind their first loads, the default, 3 behind their second, 4 half behind each)
	// gdSharedPre (RINGO_CUDA_GD_SPRE=0 turns it off): every moe_gd block
	// takes its share of the shared expert's pairs, whose weights it stages
	// in shared memory before its wait, beside its share of the routed pairs
	gdSharedPre bool
	// gdFlip (RINGO_CUDA_GD_FLIP=0 turns it off): moe_gd's grid barrier as
	// one release add per block that flips the count's top bit (kernels.cu,
	// gd_sync), instead of a count the last block resets
	gdFlip bool
	gdNA   bool   // moe_gd's routed rows loaded past L1 (RINGO_CUDA_GD_NA=0 turns it off; kernels.cu, na)
	gdPipe bool   // moe_gd's pairs with each round's loads issued as the round before is used (RINGO_CUDA_GD_PIPE=0 turns it off; kernels.cu, pipe)
	gdVar  string // moe_gd's variant, "" or one of gdVariants (RINGO_CUDA_GD_VAR; kernels.cu, moe_gd_bf16v's variants)
	// ldNA (RINGO_CUDA_LDNA=0 turns it off): the other GEMVs' weights
	// loaded past L1 too (ld_na in kernels.cu, on in the module as
	// compiled; setLdNA changes it)
	ldNA  bool
	gdBar uintptr
	occ   map[occKey]int // blocks per SM by kernel and launch shape (allResident)
	// dcSplit is the number of warps per output row of the BF16 moe_dc: 2
	// (moe_dc2_bf16v, the default: 2.4 % faster decode steps than 1 on the
	// H200), 3 (moe_dc3_bf16v) or 1 (moe_dc_bf16v); RINGO_CUDA_DC_SPLIT
	// sets it for comparisons
	dcSplit int
	// attnGroup runs the decode attention over at least attnGroupMin keys
	// with the query heads of one KV head in one block (k_attn_g2/4/8: each
	// key and value read once per KV head; decode at 32K +10 % on the H200,
	// at 1K the GPU has too few blocks that way); RINGO_CUDA_ATTN_GROUP=0
	// runs one block per query head
	attnGroup    bool
	attnGroupMin int
	// attnCombineSeq (RINGO_CUDA_ATTN_COMBINE_SEQ=1) merges split decode
	// attention with k_attn_combine_seq, the partials read one after the
	// other, for comparisons
	attnCombineSeq bool
	// attnBounds (the default; RINGO_CUDA_ATTN_BOUNDS=0 turns it off):
	// k_attn4, the decode attention held to four blocks per SM, in place of
	// k_attn (thirtieth session)
	attnBounds bool
	// fp8V3: 1 (the default) runs one-row FP8 products that gemv_fp8v2
	// would run as two waves as gemv_fp8v3 when that fits in one; 0
	// (RINGO_CUDA_FP8_V3=0) never; 2 (tests) wherever gemv_fp8v2 runs
	fp8V3 int
	// fp8T9: 1 (the default) runs gemv_fp8t8's products that would take
	// two waves as gemv_fp8t9 (9 warps per block) when that fits in one; 0
	// (RINGO_CUDA_FP8_T9=0) never; 2 (tests) wherever gemv_fp8t8 runs
	fp8T9 int
	// fp8T8Late (the default; RINGO_CUDA_T8_LATE=0 turns it off): gemv_fp8t8
	// asks for each round's refill once the round is summed, rather than
	// gemv_fp8t8e's as soon as it is taken (thirty-fifth session)
	fp8T8Late bool
	// moeWarps are the warps per block of moe_gu and moe_dc (4 and 8;
	// RINGO_CUDA_MOE_WARPS=g,d for comparisons): with 4, the 1,152 moe_gu
	// blocks of a Ring-mini step fit on the H200 at once
	moeWarps [2]int
	// mmb runs the prefill MoE of BF16 experts through moe_mmb_gu and
	// moe_mmb (BF16 activations, 128x128 tiles, cp.async pipeline, SwiGLU in
	// the gate|up epilogue) when experts get at least 64 rows on average;
	// fa2 runs the prefill attention through k_fattn2 on a BF16 copy of the
	// keys and values. RINGO_CUDA_MMB=0 and RINGO_CUDA_FA2=0 bring back
	// moe_mma and k_fattn, for comparisons.
	mmb, fa2 bool
	// wgmma runs moe_mmb's GEMMs on Hopper's warpgroup MMA (moe_mmb_gu_wg,
	// moe_mmb_wg; sm_90 with the kernels compiled for sm_90a);
	// RINGO_CUDA_WGMMA=0 keeps mma.sync
	wgmma bool
	// fa4 runs the prefill attention of head dim 128 through k_fattn4_128
	// (wgmma; RINGO_CUDA_FA4=0 keeps k_fattn3), fa4w through k_fattn4w_128
	// (tiles of 128 keys; RINGO_CUDA_FA4W=0 keeps 64)
	fa4, fa4w bool
	// fa3 runs k_fattn3 (32 query rows per warp) instead of k_fattn2
	// (RINGO_CUDA_FA2=2): 238 against 194 TFLOP/s on the H200
	// (BenchmarkPrefillOps)
	fa3 bool
	// routerSplit (fast mode on sm_80+ with cuBLASLt; RINGO_CUDA_ROUTER_SPLIT=0 turns
	// it off) keeps BF16 routers also three times side by side (weight.tri)
	// for prefill on tensor cores at FP32 accuracy
	routerSplit bool
	alpha       float32
	beta        float32
}

// pdlLaunch is the cuLaunchKernelEx configuration (heap, stable addresses).
type pdlLaunch struct {
	cfg launchConfig
	pdl launchAttr
}

type paramBlock struct {
	slots [40]uint64
	ptrs  [40]uintptr
}

const stageBytes = 4 << 20

// New opens GPU number device. It returns an error wrapping ErrNoDevice when
// the driver or a GPU is missing.
func New(device int, opts Options) (*Backend, error) {
	d, err := loadDriver()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	if r := ccall(d.cuInit, 0); int32(r) != 0 {
		err := d.check(r, "cuInit")
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	var n int32
	if err := d.check(ccall(d.cuDeviceGetCount, uintptr(unsafe.Pointer(&n))), "cuDeviceGetCount"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDevice, err)
	}
	if device < 0 || device >= int(n) {
		return nil, fmt.Errorf("%w: device %d requested, %d present", ErrNoDevice, device, n)
	}
	b := &Backend{d: d, opts: opts, fns: map[string]uintptr{}, fnNames: map[uintptr]string{}, pool: map[int][]uintptr{}, params: &paramBlock{}, alpha: 1,
		queue: make([]uint64, queueHead, 1<<12), graphs: map[uint64]*graphEntry{}, rt: routeArena{gen: 1}}
	if v := os.Getenv("RINGO_CUDA_STATS"); v != "" {
		fmt.Sscan(v, &b.statsEvery)
		if b.statsEvery <= 1 {
			b.statsEvery = 64
		}
		b.timingEach = os.Getenv("RINGO_CUDA_TIMING") == "1"
	}
	for i := range b.params.ptrs {
		b.params.ptrs[i] = uintptr(unsafe.Pointer(&b.params.slots[i]))
	}
	if err := d.check(ccall(d.cuDeviceGet, uintptr(unsafe.Pointer(&b.dev)), uintptr(device)), "cuDeviceGet"); err != nil {
		return nil, err
	}
	name := make([]byte, 256)
	ccall(d.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), 256, uintptr(b.dev))
	b.devName = gostring(uintptr(unsafe.Pointer(&name[0])))
	runtime.KeepAlive(name)
	for _, a := range []struct {
		attr int
		v    *int
	}{{cuDevAttrCCMajor, &b.ccMaj}, {cuDevAttrCCMinor, &b.ccMin}, {cuDevAttrMultiprocessorCount, &b.sms}, {cuDevAttrMaxSharedPerBlockOpt, &b.smemOptin}} {
		if *a.v, err = d.attr(b.dev, a.attr); err != nil {
			return nil, err
		}
	}
	if err := d.check(ccall(d.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&b.ctx)), uintptr(b.dev)), "cuDevicePrimaryCtxRetain"); err != nil {
		return nil, err
	}
	defer b.enter()()
	fail := func(err error) (*Backend, error) {
		b.closeLocked()
		return nil, err
	}
	var defines []string
	timeline := os.Getenv("RINGO_CUDA_TIMELINE") != "" && b.statsEvery > 0 && b.ccMaj >= 9 && d.cuModuleGetGlobal != 0
	if timeline {
		defines = append(defines, "RINGO_TIMELINE")
	}
	img, path, err := kernelImage(opts.CacheDir, b.ccMaj, b.ccMin, defines...)
	if err != nil {
		return fail(err)
	}
	b.kernelSrc = "compiled by NVRTC"
	if path != "" {
		b.kernelSrc = "cached " + path
	}
	err = d.check(ccall(d.cuModuleLoadData, uintptr(unsafe.Pointer(&b.mod)), uintptr(unsafe.Pointer(&img[0]))), "cuModuleLoadData(kernels)")
	if err != nil && path != "" {
		// a stale or damaged cache entry: compile again
		os.Remove(path)
		if img, _, err = kernelImage(opts.CacheDir, b.ccMaj, b.ccMin, defines...); err != nil {
			return fail(err)
		}
		b.kernelSrc = "compiled by NVRTC"
		err = d.check(ccall(d.cuModuleLoadData, uintptr(unsafe.Pointer(&b.mod)), uintptr(unsafe.Pointer(&img[0]))), "cuModuleLoadData(kernels)")
	}
	if err != nil {
		return fail(err)
	}
	runtime.KeepAlive(img)
	for _, k := range kernelNames {
		var f uintptr
		if err := d.check(ccall(d.cuModuleGetFunction, uintptr(unsafe.Pointer(&f)), b.mod, uintptr(unsafe.Pointer(&cstr(k)[0]))), "cuModuleGetFunction("+k+")"); err != nil {
			return fail(err)
		}
		b.fns[k] = f
		b.fnNames[f] = k
	}
	if os.Getenv("RINGO_CUDA_REGS") != "" { // registers and local (spilled) bytes per thread of every kernel
		for _, k := range kernelNames {
			var regs, local int32
			ccall(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&regs)), cuFuncAttrNumRegs, b.fns[k])
			ccall(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&local)), cuFuncAttrLocalSizeBytes, b.fns[k])
			fmt.Fprintf(os.Stderr, "cuda kernel %-22s %3d registers, %4d local bytes\n", k, regs, local)
		}
	}
	// the chunked lightning kernels need more than the default 48 KiB of shared memory
	if b.smemOptin > 48<<10 {
		for _, k := range []string{"k_lightning_chunk", "k_ltc_out64", "k_ltc_out128", "moe_mmb", "moe_mmb_gu", "moe_mmb_wg", "moe_mmb_gu_wg", "moe_mmb_yb", "moe_mmb_yb_wg", "moe_mmb_yb_wgs", "moe_mmb_gu_wg8", "moe_mmb_wg8", "moe_mmb_yb_wg8", "moe_mmb_yb_wgs8", "k_fattn4_128", "k_fattn4w_128", "k_fattn2_64", "k_fattn2_128", "k_fattn3_64", "k_fattn3_128", "moe_gd_bf16v", "moe_gd_bf16v_any", "moe_gd_bf16v_u4", "moe_gd_bf16v_s2", "k_readgd", "gemv_fp8t8", "gemv_bf16t4n", "moe_dcmmat", "moe_dcmmatw", "moe_dcmmatw1", "moe_gummat9w", "moe_dcmmatq", "moe_gummat9q", "gemv_fp8t9", "gemv_fp8t8e", "k_bulkpat", "k_pstep"} {
			// the dynamic part may take what static shared memory leaves
			var static int32
			ccall(d.cuFuncGetAttribute, uintptr(unsafe.Pointer(&static)), cuFuncAttrSharedSizeBytes, b.fns[k])
			if err := d.check(ccall(d.cuFuncSetAttribute, b.fns[k], cuFuncAttrMaxDynamicShared, uintptr(b.smemOptin-int(static))), "cuFuncSetAttribute("+k+")"); err != nil {
				return fail(err)
			}
		}
	}
	b.gemv4n = 4096
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_GEMV4N")); err == nil && v >= 0 {
		b.gemv4n = v
	}
	b.gemvT8 = os.Getenv("RINGO_CUDA_GEMV_T8") != ""
	b.ropeTab = os.Getenv("RINGO_CUDA_ROPE_TABLE") != "0"
	b.normPlain = os.Getenv("RINGO_CUDA_NORM_PLAIN") != "0"
	b.readPinned = os.Getenv("RINGO_CUDA_READ_PINNED") != "0"
	b.readDirect = os.Getenv("RINGO_CUDA_READ_DIRECT") != "0" && d.cuMemHostRegister != 0
	b.gemv2 = 3072
	// −26 % per decode step on Ring-flash-linear-2.0's shapes in FP8 (eight
	// layers, BenchmarkDecodeAB on the H200, twenty-sixth session)
	b.fp8Rows, b.guPairs, b.dclRows, b.fp8Rows4Min, b.fp8Rows8Min = 8, 2, 2, 8192, 16384
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_FP8_ROWS4_MIN")); err == nil && v >= 0 {
		b.fp8Rows4Min = v
	}
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_FP8_ROWS")); err == nil && (v == 1 || v == 2 || v == 4 || v == 8) {
		b.fp8Rows = v
	}
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_GU_PAIRS")); err == nil && (v == 1 || v == 2 || v == 4) {
		b.guPairs = v
	}
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_DCL")); err == nil && (v == 0 || v == 1 || v == 2 || v == 4) {
		b.dclRows = v
	}
	b.dcPre = os.Getenv("RINGO_CUDA_DC_PRE") != "0"
	b.dcReg = os.Getenv("RINGO_CUDA_DC_REG") != "0"
	b.warpRoute = os.Getenv("RINGO_CUDA_WARP_ROUTE") != "0"
	b.routeUnroll = os.Getenv("RINGO_CUDA_ROUTE_UNROLL") != "0"
	b.normGEMV = os.Getenv("RINGO_CUDA_NORM_GEMV") != "0"
	b.drawOn = os.Getenv("RINGO_CUDA_DRAW") != "0"
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_GEMV2")); err == nil && v >= 0 {
		b.gemv2 = v
	}
	b.fuseRope = os.Getenv("RINGO_CUDA_FUSE") != "0"
	b.normRoute = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_NORM_ROUTE") != "0"
	b.recLate = os.Getenv("RINGO_CUDA_REC_EARLY") == "0"
	b.recLoadsLate = os.Getenv("RINGO_CUDA_REC_LOADS") == "0"
	// k_lightning_recg's clusters of 16 blocks are past the portable 8
	b.recGate = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_REC_GATE") != "0" &&
		ccall(d.cuFuncSetAttribute, b.fns["k_lightning_recg"], cuFuncAttrNonPortableCluster, 1) == 0 &&
		ccall(d.cuFuncSetAttribute, b.fns["k_lightning_recg2"], cuFuncAttrNonPortableCluster, 1) == 0
	b.recMinB, _ = strconv.Atoi(os.Getenv("RINGO_CUDA_REC_MINB"))
	b.fp8TMA = b.ccMaj >= 9 && b.smemOptin >= fp8tSmem+1024 && os.Getenv("RINGO_CUDA_FP8_TMA") != "0"
	b.fp8T8Late = os.Getenv("RINGO_CUDA_T8_LATE") != "0"
	b.bf16TMA = b.ccMaj >= 9 && b.smemOptin >= bf16tSmem+(17<<10) && os.Getenv("RINGO_CUDA_BF16_TMA") != "0"
	b.dcMMA = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_DC_MMA") != "0"
	b.dcWide = os.Getenv("RINGO_CUDA_DC_WIDE") != "0"
	b.dcOnePass = os.Getenv("RINGO_CUDA_DC_ONEPASS") != "0"
	b.routePartials = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_ROUTE_PARTIALS") != "0"
	b.gvMMA = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_GV_MMA") != "0"
	b.guMMA = b.ccMaj >= 9 && os.Getenv("RINGO_CUDA_GU_MMA") != "0"
	if b.ccMaj >= 9 {
		b.mmaE4M3 = 1
		if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_MMA_E4M3")); err == nil {
			b.mmaE4M3 = v
		}
	}
	b.guEarly = os.Getenv("RINGO_CUDA_GU_EARLY") != "0"
	b.gdSharedPre = os.Getenv("RINGO_CUDA_GD_SPRE") != "0"
	b.gdFlip = os.Getenv("RINGO_CUDA_GD_FLIP") != "0"
	b.gdNA = os.Getenv("RINGO_CUDA_GD_NA") != "0"
	b.gdPipe = os.Getenv("RINGO_CUDA_GD_PIPE") != "0"
	if v := os.Getenv("RINGO_CUDA_GD_VAR"); slices.Contains(gdVariants, v) {
		b.gdVar = v
	}
	b.ldNA = true
	if os.Getenv("RINGO_CUDA_LDNA") == "0" {
		if err := b.setLdNA(false); err != nil {
			return fail(err)
		}
	}
	b.gdStage = 2
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_GD_STAGE")); err == nil && v >= 0 && v <= 4 {
		b.gdStage = v
	}
	b.moeFused = !opts.Precise && d.cuOccupancyMaxActiveBlocksPerMultiprocessor != 0 && b.smemOptin > 48<<10 && os.Getenv("RINGO_CUDA_MOE_FUSED") != "0"
	b.joinGrid()
	b.mmb = b.smemOptin >= mmbSmem && os.Getenv("RINGO_CUDA_MMB") != "0"
	b.wgmma = b.mmb && wgmmaArch(b.ccMaj, b.ccMin) && os.Getenv("RINGO_CUDA_WGMMA") != "0"
	b.fa2 = b.smemOptin >= fa2Smem(128) && os.Getenv("RINGO_CUDA_FA2") != "0"
	b.fa3 = b.fa2 && b.smemOptin >= fa3Smem(128) && os.Getenv("RINGO_CUDA_FA2") != "2"
	b.fa4 = b.fa3 && b.wgmma && b.smemOptin >= fa4Smem(64) && os.Getenv("RINGO_CUDA_FA4") != "0"
	b.fa4w = b.fa4 && b.smemOptin >= fa4Smem(128) && os.Getenv("RINGO_CUDA_FA4W") != "0"
	b.attnGroup, b.attnGroupMin = os.Getenv("RINGO_CUDA_ATTN_GROUP") != "0", 4096
	b.attnCombineSeq = os.Getenv("RINGO_CUDA_ATTN_COMBINE_SEQ") == "1"
	b.attnBounds = os.Getenv("RINGO_CUDA_ATTN_BOUNDS") != "0"
	b.fp8V3, b.fp8T9 = 1, 1
	if os.Getenv("RINGO_CUDA_FP8_V3") == "0" || d.cuOccupancyMaxActiveBlocksPerMultiprocessor == 0 {
		b.fp8V3 = 0
	}
	if os.Getenv("RINGO_CUDA_FP8_T9") == "0" || d.cuOccupancyMaxActiveBlocksPerMultiprocessor == 0 {
		b.fp8T9 = 0
	}
	b.dcSplit = 2
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_DC_SPLIT")); err == nil && v >= 1 && v <= 3 {
		b.dcSplit = v
	}
	b.moeYB = os.Getenv("RINGO_CUDA_MOE_YB") != "0"
	b.fp8GEMM = os.Getenv("RINGO_CUDA_FP8_GEMM") != "0"
	b.mmbFP8 = os.Getenv("RINGO_CUDA_MMB_FP8") != "0"
	b.fp8ScaleMN = true
	b.mmbStage = os.Getenv("RINGO_CUDA_MMB_STAGE") != "0"
	b.flushKernels = 32
	b.segFirst, b.segRest = 24, 0 // BenchmarkDecodeAB on the H200: 1,454 µs per step, 1,475 with 16,64, 1,534 in one graph
	if v := os.Getenv("RINGO_CUDA_SEG"); v == "0" {
		b.segFirst, b.segRest = 0, 0
	} else if f := strings.Split(v, ","); len(f) == 2 {
		a, e1 := strconv.Atoi(f[0])
		c, e2 := strconv.Atoi(f[1])
		if e1 == nil && e2 == nil && a >= 0 && c >= 0 {
			b.segFirst, b.segRest = a, c
		}
	}
	if v, err := strconv.Atoi(os.Getenv("RINGO_CUDA_FLUSH")); err == nil && v >= 0 {
		b.flushKernels = v
	}
	b.routeEnd = -1
	b.moeWarps = [2]int{4, 8}
	if v := strings.Split(os.Getenv("RINGO_CUDA_MOE_WARPS"), ","); len(v) == 2 {
		g, e1 := strconv.Atoi(v[0])
		d, e2 := strconv.Atoi(v[1])
		if e1 == nil && e2 == nil && g >= 1 && g <= 32 && d >= 1 && d <= 32 {
			b.moeWarps = [2]int{g, d}
		}
	}
	// tensor-core kernels (mma.sync BF16) need sm_80 or newer
	b.mma = b.ccMaj >= 8 && os.Getenv("RINGO_CUDA_NO_MMA") == ""
	if err := d.check(ccall(d.cuMemAllocHost, uintptr(unsafe.Pointer(&b.stageHost)), stageBytes), "cuMemAllocHost"); err != nil {
		return fail(err)
	}
	if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&b.stageDev)), stageBytes), "cuMemAlloc(staging)"); err != nil {
		return fail(err)
	}
	b.stageCap = stageBytes
	if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&b.gdBar)), 16), "cuMemAlloc(moe_gd barrier)"); err != nil {
		return fail(err)
	}
	var zero [4]uint32
	if err := d.check(ccall(d.cuMemcpyHtoD, b.gdBar, uintptr(unsafe.Pointer(&zero[0])), 16), "cuMemcpyHtoD(moe_gd barrier)"); err != nil {
		return fail(err)
	}
	if err := d.check(ccall(d.cuStreamCreate, uintptr(unsafe.Pointer(&b.stream)), 0), "cuStreamCreate"); err != nil {
		return fail(err)
	}
	b.graphsOn = !opts.NoGraphs && os.Getenv("RINGO_CUDA_NO_GRAPHS") == "" && d.cuGraphLaunch != 0
	if os.Getenv("RINGO_CUDA_PROFILE") != "" && b.statsEvery > 0 {
		b.prof = &profiler{ms: map[string]float64{}, count: map[string]int{}}
		b.graphsOn = false
	}
	if lt, err := loadCublasLt(); err == nil {
		b.lt = lt
		if err := d.check(ccall(d.cuMemAlloc, uintptr(unsafe.Pointer(&b.ltWS)), ltWorkspaceBytes), "cuMemAlloc(cublasLt workspace)"); err != nil {
			return fail(err)
		}
	} else if !opts.Precise {
		return fail(fmt.Errorf("%v (fast mode needs cuBLASLt; use Options{Precise: true} without it)", err))
	}
	b.fp8 = !opts.Precise && b.mma && b.lt != nil && os.Getenv("RINGO_CUDA_NO_FP8") == ""
	b.routerSplit = !opts.Precise && b.mma && b.lt != nil && os.Getenv("RINGO_CUDA_ROUTER_SPLIT") != "0"
	b.moe3 = os.Getenv("RINGO_CUDA_MOE3") != ""
	if timeline {
		if b.tl, err = newTimeline(b); err != nil {
			return fail(err)
		}
	}
	if b.ccMaj >= 9 && d.cuLaunchKernelEx != 0 && os.Getenv("RINGO_CUDA_NO_PDL") == "" {
		b.pdl = true
		b.pdlCfg = &pdlLaunch{}
		b.pdlCfg.pdl.id = cuLaunchAttrProgrammaticStreamSerialization
		b.pdlCfg.pdl.val[0] = 1 // programmaticStreamSerializationAllowed (int, little-endian)
		b.pdlCfg.cfg.attrs, b.pdlCfg.cfg.nattrs = &b.pdlCfg.pdl, 1
	}
	return b, nil
}

var kernelNames = []string{
	"k_copy", "k_fill", "k_add", "k_addv", "k_silu", "k_silumul", "k_sigmul", "k_gather", "k_tobf16", "k_tobf16v", "k_split3bf16", "k_split3bf16v",
	"embed_f32", "embed_f16", "embed_bf16", "embed_fp8", "k_rmsnorm", "k_addrmsnorm", "k_rope", "k_silumul_bf16", "k_rmsnorm_sigmul", "k_rmsnorm_sigmul_w2", "k_rmsnorm_sigmul_w4", "k_rmsnorm_sigmul_w8", "k_rmsnorm_sigmul_w16", "k_rmsnorm_rope", "k_rmsnorm_rope_w21", "k_rmsnorm_rope_w41", "k_rmsnorm_rope_w42",
	"gemv_f32", "gemv_f16", "gemv_bf16", "gemv_bf16v", "gemv_fp8", "gemv_bf16v1", "gemv_bf16v2", "gemv_bf16v1n", "gemv_bf16v2n", "gemv_bf16v4n", "gemv_bf16t4n", "gemv_fp81", "gemv_fp8v2", "gemv_fp8v3", "gemv_fp8v4", "gemv_fp8v8", "gemv_fp8t8", "gemv_fp8t8e", "gemv_fp8t9", "k_fp8_bf16", "gemm_f32", "gemm_f16", "gemm_bf16",
	"moe_gu_bf16v", "moe_gu_fp8", "moe_gd_bf16v", "moe_gd_bf16v_any", "moe_gd_bf16v_u4", "moe_gd_bf16v_s2", "moe_dc_bf16v", "moe_dc2_bf16v", "moe_dc3_bf16v", "moe_dc_fp8", "moe_dcl_fp8", "moe_dcl2_fp8", "moe_dcl4_fp8", "moe_dcmmat", "moe_dcmmatw", "moe_dcmmatw1", "moe_gummat9w", "gemv_fp8v2r", "gemv_fp8v2m", "gemv_fp8v2rm", "k_route_p", "k_draw_max", "k_draw_sum", "k_draw_kcut", "k_draw_cand", "k_draw_pick", "k_draw_sorted", "k_draw_selp", "k_draw_sel", "moe_dcmmatq", "moe_gummat9q", "moe_gu2_fp8", "moe_gu4_fp8", "moe_gemv_f32", "moe_gemv_f16", "moe_gemv_bf16", "moe_gemv_bf16v", "moe_down_bf16v", "moe_gemv_fp8", "moe_down_fp8", "moe_mma16_fp8", "moe_mma64_fp8",
	"k_moe_count", "k_moe_tiles", "k_moe_scatter", "moe_gemm_f32", "moe_gemm_f16", "moe_gemm_bf16", "k_moe_combine", "k_moe_combine4", "k_moe_combine4b", "k_moe_combineb", "k_quant_fp8", "k_bf16_f32", "k_route", "k_norm_route",
	"k_lightning_rec", "k_lightning_recg", "k_lightning_recg2", "k_lightning_chunk", "k_kvstore", "k_attn", "k_attn4", "k_attn_g2", "k_attn_g4", "k_attn_g8", "k_attn_combine", "k_attn_combine_seq",
	"moe_mma16", "moe_mma64", "k_fattn64", "k_fattn128", "moe_mmb", "moe_mmb_gu", "moe_mmb_wg", "moe_mmb_gu_wg", "moe_mmb_yb", "moe_mmb_yb_wg", "moe_mmb_yb_wgs", "moe_mmb_gu_wg8", "moe_mmb_wg8", "moe_mmb_yb_wg8", "moe_mmb_yb_wgs8", "k_kvbf16", "k_vtbf16", "k_fattn4_128", "k_fattn4w_128", "k_fattn2_64", "k_fattn2_128", "k_fattn3_64", "k_fattn3_128", "k_ltc_kv64", "k_ltc_kv128", "k_ltc_scan", "k_ltc_out64", "k_ltc_out128",
	"k_readsum", "k_pstep", "k_bulkpat", "k_readexp", "k_readgd", "k_spin", "k_randbf16", "k_fp8rate_hw", "k_fp8rate_int", "k_bf16rate",
}

// enter locks the backend and makes its context current on this OS thread;
// the returned function undoes both.
func (b *Backend) enter() func() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		panic("cuda: backend used after Close")
	}
	runtime.LockOSThread()
	b.must(b.d.check(ccall(b.d.cuCtxSetCurrent, b.ctx), "cuCtxSetCurrent"))
	return func() {
		runtime.UnlockOSThread()
		b.mu.Unlock()
	}
}

func (b *Backend) must(err error) {
	if err != nil {
		panic(err)
	}
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return "cuda" }

// Describe returns the device, mode and library details.
func (b *Backend) Describe() string {
	mode := "fast (cuBLASLt BF16)"
	if b.mma {
		mode = "fast (cuBLASLt BF16 + tensor-core MoE, lightning, flash attention)"
	}
	if b.opts.Precise {
		mode = "precise (FP32)"
	}
	lt := "none"
	if b.lt != nil {
		lt = b.lt.l.path
	}
	graphs := "CUDA graphs"
	if !b.graphsOn {
		graphs = "no CUDA graphs"
	}
	if b.pdl {
		graphs += " + programmatic dependent launch"
	}
	return fmt.Sprintf("%s (sm_%d%d, %d SMs), %s mode, %s, kernels %s, cuBLASLt %s", b.devName, b.ccMaj, b.ccMin, b.sms, mode, graphs, b.kernelSrc, lt)
}

// Close releases all device memory and the context.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ccall(b.d.cuCtxSetCurrent, b.ctx)
	b.closeLocked()
	return nil
}

func (b *Backend) closeLocked() {
	d := b.d
	if b.stream != 0 {
		func() {
			defer func() { recover() }() // closing anyway
			b.flush()
		}()
	}
	ccall(d.cuCtxSynchronize)
	b.leaveGrid()
	b.dropGraphs()
	if b.stream != 0 {
		ccall(d.cuStreamDestroy, b.stream)
	}
	b.rt.free(d)
	for _, p := range b.overflow {
		ccall(d.cuMemFree, p)
	}
	if b.lt != nil {
		b.lt.close()
	}
	for _, list := range b.pool {
		for _, p := range list {
			ccall(d.cuMemFree, p)
		}
	}
	for _, p := range b.weights {
		ccall(d.cuMemFree, p)
	}
	for _, p := range []uintptr{b.stageDev, b.ltWS, b.gdBar} {
		if p != 0 {
			ccall(d.cuMemFree, p)
		}
	}
	for _, r := range b.hostRegs {
		b.hostUnregister(r)
	}
	b.hostRegs = nil
	for _, p := range []uintptr{b.stageHost, b.readBuf} {
		if p != 0 {
			ccall(d.cuMemFreeHost, p)
		}
	}
	if b.mod != 0 {
		ccall(d.cuModuleUnload, b.mod)
	}
	b.pool, b.weights = nil, nil
	ccall(d.cuDevicePrimaryCtxRelease, uintptr(b.dev))
	b.closed = true
}

// ---------------------------------------------------------------------------
// memory

// buffer is device memory for float32 activations.
type buffer struct {
	ptr   uintptr
	n     int // float32 elements
	class int // pool size class in bytes
}

func (b *buffer) Len() int { return b.n }

// sizeClass rounds n bytes up to one of 8 sizes per power of two (min 512).
func sizeClass(n int) int {
	if n <= 512 {
		return 512
	}
	shift := bits.Len(uint(n-1)) - 3
	step := 1 << shift
	return (n + step - 1) / step * step
}

// devAlloc returns a device block of at least n bytes from the pool.
func (b *Backend) devAlloc(n int) (uintptr, int) {
	c := sizeClass(n)
	if l := b.pool[c]; len(l) > 0 {
		p := l[len(l)-1]
		b.pool[c] = l[:len(l)-1]
		b.pooled -= int64(c)
		b.inUse += int64(c)
		return p, c
	}
	var p uintptr
	r := ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(c))
	if int32(r) != 0 {
		// give the pool back to the driver and retry once
		b.trim()
		r = ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(c))
	}
	b.must(b.d.check(r, fmt.Sprintf("cuMemAlloc(%d bytes; %d in use, %d pooled)", c, b.inUse, b.pooled)))
	b.inUse += int64(c)
	return p, c
}

func (b *Backend) devFree(p uintptr, class int) {
	b.pool[class] = append(b.pool[class], p)
	b.inUse -= int64(class)
	b.pooled += int64(class)
}

// trim frees every pooled block.
func (b *Backend) trim() {
	b.drain() // queued work may still use pooled blocks
	for c, list := range b.pool {
		for _, p := range list {
			ccall(b.d.cuMemFree, p)
		}
		delete(b.pool, c)
	}
	b.pooled = 0
}

// Memory implements backend.DeviceMemory: the device's free and total
// bytes (cuMemGetInfo; zeros if the driver cannot tell).
func (b *Backend) Memory() (free, total int64) {
	defer b.enter()()
	var f, t uintptr
	if ccall(b.d.cuMemGetInfo, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t))) != 0 {
		return 0, 0
	}
	return int64(f), int64(t)
}

// MemStats reports bytes of activations in use and held in the pool.
func (b *Backend) MemStats() (inUse, pooled int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inUse, b.pooled
}

// Alloc implements backend.Backend.
func (b *Backend) Alloc(rows, cols int) backend.Tensor {
	defer b.enter()()
	return b.alloc(rows, cols)
}

func (b *Backend) alloc(rows, cols int) backend.Tensor {
	n := rows * cols
	p, c := b.devAlloc(max(4*n, 4))
	if n > 0 {
		b.record(opMemset, uint64(p), 0, uint64(n))
	}
	return backend.Tensor{Buf: &buffer{ptr: p, n: n, class: c}, Rows: rows, Cols: cols, Stride: cols}
}

// Free implements backend.Backend.
func (b *Backend) Free(t backend.Tensor) {
	defer b.enter()()
	b.free(t)
}

func (b *Backend) free(t backend.Tensor) {
	buf := t.Buf.(*buffer)
	if buf.ptr == 0 {
		panic("cuda: Free of a freed tensor")
	}
	b.devFree(buf.ptr, buf.class)
	buf.ptr = 0
}

// scratch is a temporary device block freed (stream-ordered) by release.
type scratch struct {
	p     uintptr
	class int
}

func (b *Backend) scratch(n int) scratch {
	p, c := b.devAlloc(max(n, 4))
	return scratch{p, c}
}

// release returns blocks in reverse order, so that allocating blocks and
// releasing them in the same order leaves the pool as it was (the pointers
// of a step then repeat, which CUDA graph replay needs).
func (b *Backend) release(s ...scratch) {
	for i := len(s) - 1; i >= 0; i-- {
		b.devFree(s[i].p, s[i].class)
	}
}

// ptr returns the device address of t's first element, checking the view.
func (b *Backend) ptr(op string, t backend.Tensor) uintptr {
	buf, ok := t.Buf.(*buffer)
	if !ok || buf == nil {
		panic(fmt.Sprintf("cuda.%s: tensor not allocated by the CUDA backend", op))
	}
	if buf.ptr == 0 {
		panic(fmt.Sprintf("cuda.%s: tensor used after Free", op))
	}
	if t.Rows < 0 || t.Cols < 0 || t.Off < 0 || (t.Rows > 1 && t.Stride < t.Cols) || (t.Rows > 0 && t.Off+(t.Rows-1)*t.Stride+t.Cols > buf.n) {
		panic(fmt.Sprintf("cuda.%s: view %dx%d (offset %d, stride %d) outside its buffer of %d", op, t.Rows, t.Cols, t.Off, t.Stride, buf.n))
	}
	return buf.ptr + uintptr(t.Off)*4
}

func contiguous(t backend.Tensor) bool { return t.Rows <= 1 || t.Stride == t.Cols }

func checkSame(op string, a, b backend.Tensor) {
	if a.Rows != b.Rows || a.Cols != b.Cols {
		panic(fmt.Sprintf("cuda.%s: shape %dx%d vs %dx%d", op, a.Rows, a.Cols, b.Rows, b.Cols))
	}
}

// stage puts small host data in the pinned ring and returns the device
// address it will have (flush copies the ring's new bytes before the queued
// work); valid until the next sync.
func (b *Backend) stage(data unsafe.Pointer, n int) uintptr {
	if n == 0 {
		return b.stageDev
	}
	need := (n + 255) &^ 255
	if b.stageOff+need > b.stageCap {
		// the ring is full (it empties at every sync): use a fresh block,
		// copied synchronously and freed at the next sync
		var p uintptr
		b.must(b.d.check(ccall(b.d.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n)), "cuMemAlloc(stage)"))
		b.overflow = append(b.overflow, p)
		b.must(b.d.check(ccall(b.d.cuMemcpyHtoD, p, uintptr(data), uintptr(n)), "cuMemcpyHtoD(stage)"))
		return p
	}
	off := b.stageOff
	copy(cmem(b.stageHost+uintptr(off), n), unsafe.Slice((*byte)(data), n))
	b.stageOff += need
	return b.stageDev + uintptr(off)
}

func (b *Backend) stageI32(v []int32) uintptr {
	if len(v) == 0 {
		return b.stageDev
	}
	return b.stage(unsafe.Pointer(&v[0]), 4*len(v))
}

func (b *Backend) stageI64(v []int64) uintptr {
	if len(v) == 0 {
		return b.stageDev
	}
	return b.stage(unsafe.Pointer(&v[0]), 8*len(v))
}

// Sync waits for all queued work (for timing).
func (b *Backend) Sync() {
	defer b.enter()()
	b.sync()
}

// ---------------------------------------------------------------------------
// kernel launches

// argument encoders for launch
func pArg(p uintptr) uint64 { return uint64(p) }
func iArg(v int) uint64     { return uint64(uint32(int32(v))) }
func lArg(v int) uint64     { return uint64(int64(v)) }
func fArg(v float32) uint64 { return uint64(math.Float32bits(v)) }
func dArg(v float64) uint64 { return math.Float64bits(v) }
func bArg(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

type dim3 struct{ x, y, z int }

// launch runs kernel name on grid×block threads with smem bytes of dynamic
// shared memory; each argument occupies one 8-byte slot read by the kernel
// with its declared type.
func (b *Backend) launch(name string, grid, block dim3, smem int, args ...uint64) {
	f := b.fns[name]
	if f == 0 {
		panic("cuda: unknown kernel " + name)
	}
	if grid.x == 0 || grid.y == 0 || grid.z == 0 {
		return
	}
	if len(args) > len(b.params.slots) {
		panic(fmt.Sprintf("cuda: %d arguments for %s", len(args), name))
	}
	if b.pending() {
		b.emitPending() // before this kernel is traced
	}
	if b.trace {
		b.launched = append(b.launched, name)
	}
	if b.tl != nil {
		b.tl.launched(f, grid)
	}
	b.record(uint64(opKernel|len(args)<<8), uint64(f), uint64(grid.x), uint64(grid.y), uint64(grid.z), uint64(block.x), uint64(block.y), uint64(block.z), uint64(smem))
	b.record(args...)
	b.pendingKernels++
	if len(b.queue) > 1<<18 || b.pendingKernels >= b.flushAfter() {
		b.flush() // long runs of work without a Read; the GPU starts on a step the host is still recording
	}
}

// flushAfter is the number of queued kernels after which launch issues
// the queue before the step ends: every flushKernels in a big step, else
// segFirst at the step's start and segRest after that (none when 0).
func (b *Backend) flushAfter() int {
	n := b.flushKernels
	if !b.bigStep {
		n = b.segRest
		if b.stepFlushes == 0 {
			n = b.segFirst
		}
	}
	if n <= 0 {
		return math.MaxInt
	}
	return n
}

// flatGrid returns a 1-D grid of 256-thread blocks covering n elements.
func flatGrid(n int) (dim3, dim3) {
	blocks := min((n+255)/256, 1<<20)
	return dim3{max(blocks, 1), 1, 1}, dim3{256, 1, 1}
}

// ---------------------------------------------------------------------------
// host transfers

// Write implements backend.Backend.
func (b *Backend) Write(t backend.Tensor, src []float32) {
	defer b.enter()()
	n := t.Rows * t.Cols
	if len(src) < n {
		panic(fmt.Sprintf("cuda.Write: %d values for %dx%d", len(src), t.Rows, t.Cols))
	}
	p := b.ptr("Write", t)
	if n == 0 {
		return
	}
	b.sync() // queued work may use t, or the pool block used below
	if contiguous(t) {
		b.must(b.d.check(ccall(b.d.cuMemcpyHtoD, p, uintptr(unsafe.Pointer(&src[0])), uintptr(4*n)), "cuMemcpyHtoD"))
		return
	}
	s := b.scratch(4 * n)
	b.must(b.d.check(ccall(b.d.cuMemcpyHtoD, s.p, uintptr(unsafe.Pointer(&src[0])), uintptr(4*n)), "cuMemcpyHtoD"))
	g, bl := flatGrid(n)
	b.launch("k_copy", g, bl, 0, pArg(p), lArg(t.Stride), pArg(s.p), lArg(t.Cols), iArg(t.Rows), iArg(t.Cols))
	b.release(s)
}

// Read implements backend.Backend.
func (b *Backend) Read(t backend.Tensor, dst []float32) {
	defer b.enter()()
	n := t.Rows * t.Cols
	if len(dst) < n {
		panic(fmt.Sprintf("cuda.Read: room for %d values, need %dx%d", len(dst), t.Rows, t.Cols))
	}
	p := b.ptr("Read", t)
	if n == 0 {
		b.sync()
		return
	}
	src := p
	var s scratch
	if !contiguous(t) {
		s = b.scratch(4 * n)
		g, bl := flatGrid(n)
		b.launch("k_copy", g, bl, 0, pArg(s.p), lArg(t.Cols), pArg(p), lArg(t.Stride), iArg(t.Rows), iArg(t.Cols))
		src = s.p
	}
	if !b.readPinned || 4*n > readPinnedMax || len(b.queue) == queueHead {
		b.sync()
		b.must(b.d.check(ccall(b.d.cuMemcpyDtoH, uintptr(unsafe.Pointer(&dst[0])), src, uintptr(4*n)), "cuMemcpyDtoH (or an earlier kernel failed)"))
		if s.p != 0 {
			b.release(s)
		}
		return
	}
	// straight into dst, page-locked, after the step's commands (reads of
	// 64 KB or more: Go gives those objects pages of their own)
	if b.readDirect && 4*n >= readDirectMin && b.hostRegister(dst[:n]) {
		b.flush()
		b.stats.DriverCalls++
		b.must(b.d.check(ccall(b.d.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(&dst[0])), src, uintptr(4*n), b.stream), "cuMemcpyDtoHAsync (or an earlier kernel failed)"))
		b.sync()
		if s.p != 0 {
			b.release(s)
		}
		return
	}
	// the copy is queued with the step (and captured with it into a graph)
	// into pinned memory: a synchronous copy into Go's pageable memory after
	// the step waited the whole transfer at the host's pace
	if b.readCap < 4*n {
		if b.readBuf != 0 {
			ccall(b.d.cuMemFreeHost, b.readBuf)
			b.readBuf, b.readCap = 0, 0
		}
		c := max(4*n, 1<<20)
		b.must(b.d.check(ccall(b.d.cuMemAllocHost, uintptr(unsafe.Pointer(&b.readBuf)), uintptr(c)), "cuMemAllocHost(read buffer)"))
		b.readCap = c
	}
	b.record(opDtoH, uint64(b.readBuf), uint64(src), uint64(4*n))
	b.sync()
	var t0 time.Time
	if b.statsEvery > 0 {
		t0 = time.Now()
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), 4*n), cmem(b.readBuf, 4*n))
	if b.statsEvery > 0 {
		b.timing.read += time.Since(t0)
		b.timing.end = time.Now()
	}
	if s.p != 0 {
		b.release(s)
	}
}

// hostReg is a page-locked range of Go memory (Backend.readDirect).
type hostReg struct {
	p, n uintptr
	pin  runtime.Pinner
}

// hostRegsMax is the number of Go slices kept page-locked for reads, and
// readDirectMin the smallest read that goes straight into one.
const (
	hostRegsMax   = 8
	readDirectMin = 64 << 10
)

// hostRegister makes sure that dst's memory is page-locked, locking it if
// not: ranges that overlap it without holding it are unlocked first (a
// longer slice of the same array), and the least recently used one if
// there are hostRegsMax. It reports false, and turns readDirect off, where
// the driver refuses.
func (b *Backend) hostRegister(dst []float32) bool {
	if b.d.cuMemHostRegister == 0 {
		b.readDirect = false
		return false
	}
	p, n := uintptr(unsafe.Pointer(&dst[0])), uintptr(4*len(dst))
	for i, r := range b.hostRegs {
		if p >= r.p && p+n <= r.p+r.n {
			copy(b.hostRegs[1:i+1], b.hostRegs[:i])
			b.hostRegs[0] = r
			return true
		}
	}
	b.hostRegs = slices.DeleteFunc(b.hostRegs, func(r *hostReg) bool {
		if p < r.p+r.n && r.p < p+n {
			b.hostUnregister(r)
			return true
		}
		return false
	})
	if len(b.hostRegs) == hostRegsMax {
		b.hostUnregister(b.hostRegs[hostRegsMax-1])
		b.hostRegs = b.hostRegs[:hostRegsMax-1]
	}
	r := &hostReg{p: p, n: n}
	r.pin.Pin(&dst[0])
	if err := b.d.check(ccall(b.d.cuMemHostRegister, r.p, r.n, 0), "cuMemHostRegister"); err != nil {
		r.pin.Unpin()
		b.readDirect = false
		fmt.Fprintf(os.Stderr, "cuda: reads go through pinned memory: %v\n", err)
		return false
	}
	b.hostRegs = append([]*hostReg{r}, b.hostRegs...)
	return true
}

// hostUnregister unlocks r (no copy into it may be in flight).
func (b *Backend) hostUnregister(r *hostReg) {
	ccall(b.d.cuMemHostUnregister, r.p)
	r.pin.Unpin()
}

// readPinnedMax is the largest Read that goes through pinned memory. A
// read queued after a decode step's kernels, into pinned memory, then copied
// into Go memory, was 1–4 % faster per step at batch 1 on the H200 than a
// synchronous copy into Go memory after the step (0.6 MB of logits;
// BenchmarkDecodeAB and `ringo bench` in separate processes), but at batch
// 64, whose 64 reads of a row each follow one step, ~10 % slower when every
// read went through pinned memory: so only reads that follow queued work
// (the first of a step) and are small take this path.
const readPinnedMax = 4 << 20

// Copy implements backend.Backend.
func (b *Backend) Copy(dst, src backend.Tensor) {
	defer b.enter()()
	b.copyT(dst, src)
}

func (b *Backend) copyT(dst, src backend.Tensor) {
	checkSame("Copy", dst, src)
	pd, ps := b.ptr("Copy", dst), b.ptr("Copy", src)
	n := dst.Rows * dst.Cols
	if n == 0 {
		return
	}
	if contiguous(dst) && contiguous(src) {
		b.record(opDtoD, uint64(pd), uint64(ps), uint64(4*n))
		return
	}
	g, bl := flatGrid(n)
	b.launch("k_copy", g, bl, 0, pArg(pd), lArg(dst.Stride), pArg(ps), lArg(src.Stride), iArg(dst.Rows), iArg(dst.Cols))
}

// Zero implements backend.Backend.
func (b *Backend) Zero(t backend.Tensor) {
	defer b.enter()()
	p := b.ptr("Zero", t)
	n := t.Rows * t.Cols
	if n == 0 {
		return
	}
	if contiguous(t) {
		b.record(opMemset, uint64(p), 0, uint64(n))
		return
	}
	g, bl := flatGrid(n)
	b.launch("k_fill", g, bl, 0, pArg(p), lArg(t.Stride), iArg(t.Rows), iArg(t.Cols), fArg(0))
}

// setLdNA sets the module's ld_na (kernels.cu, ldw), where it changes:
// whether the GEMVs load their weights past L1. Without cuModuleGetGlobal
// it cannot change (an error). The context must be current.
func (b *Backend) setLdNA(on bool) error {
	d := b.d
	if on == b.ldNA {
		return nil
	}
	if d.cuModuleGetGlobal == 0 {
		return fmt.Errorf("RINGO_CUDA_LDNA: the driver has no cuModuleGetGlobal")
	}
	var p, size uintptr
	name := cstr("ld_na")
	if err := d.check(ccall(d.cuModuleGetGlobal, uintptr(unsafe.Pointer(&p)), uintptr(unsafe.Pointer(&size)), b.mod, uintptr(unsafe.Pointer(&name[0]))), "cuModuleGetGlobal(ld_na)"); err != nil {
		return err
	}
	v := int32(0)
	if on {
		v = 1
	}
	if err := d.check(ccall(d.cuMemcpyHtoD, p, uintptr(unsafe.Pointer(&v)), 4), "cuMemcpyHtoD(ld_na)"); err != nil {
		return err
	}
	b.ldNA = on
	return nil
}
