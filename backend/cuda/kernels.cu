// CUDA C kernels of the ringo CUDA backend. This file is embedded in the Go
// binary and compiled with NVRTC at run time (no headers are available, so
// everything needed is defined here).
//
// Conventions: activations are float32 row-major matrices addressed by a
// base pointer and a row stride in elements (i64); weights are row-major
// [N, K] in F32, F16 or BF16; kernel names carry the weight type as a suffix.

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;

#define NEG_INF (__int_as_float(0xff800000))

// Programmatic dependent launch (sm_90+). The backend launches every kernel of
// this file with the programmatic-stream-serialization attribute, so a kernel
// may be scheduled while the one before it in the stream is still running.
// Every kernel therefore starts with PDL_ENTER: griddepcontrol.wait blocks
// until the previous kernel has completed and its writes are visible (so it
// comes before any global memory access), and launch_dependents lets the next
// kernel be scheduled as soon as all blocks of this one have started. Without
// the attribute, or before sm_90, both do nothing.
//
// A kernel may read memory that no kernel writes (weights) before
// PDL_ENTER: the GEMVs load the start of their weight rows first, so that
// those loads overlap the end of the kernel before them. So may it read what
// only kernels two or more launches before it wrote, and the staged host
// data (copied before a step's first kernel): a kernel starts only after
// every block of the one before it has passed griddepcontrol.wait (or
// exited without work), that is after the one before that has completed
// (k_lightning_rec loads its state early this way).
//
// Compiled with RINGO_TIMELINE (RINGO_CUDA_TIMELINE, timeline.go), the first
// block of every kernel also stores the GPU time at which it passed the
// wait, so that the host can tell each kernel's share of a step.
#ifdef RINGO_TIMELINE
#define TL_MAX (1 << 14)
__device__ unsigned long long* tl_buf;
__device__ unsigned int tl_n;
// Hand-over marks: kernels that call tl_end() at their end (thread 0 of
// every block) keep the latest block end in tl_lastend; each mark takes it
// (and clears it) into tl_buf[TL_MAX + i], so that the host can tell how
// long after its wait the kernel before ended and how long after that this
// one passed its wait. tl_started(ts) (after PDL_ENTER) stores block 0's
// start time ts in tl_buf[2·TL_MAX + i].
__device__ unsigned long long tl_lastend;
__device__ unsigned int tl_lastidx;
__device__ __forceinline__ void tl_mark() {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    unsigned int i = atomicAdd(&tl_n, 1u);
    if (i < TL_MAX) {
      tl_buf[i] = t;
      tl_buf[TL_MAX + i] = atomicExch(&tl_lastend, 0ull);
      tl_buf[2 * TL_MAX + i] = 0;
      tl_lastidx = i;
    }
  }
}
__device__ __forceinline__ void tl_end() {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    atomicMax(&tl_lastend, t);
  }
}
// Block trace (moe_gd_bf16v): thread 0 of every block stores its launch
// (the grid barrier's generation), block, SM, start, wait, barrier passed,
// staged rows, end and arrival at the barrier (all its warps done) in its
// slot of TL_BLK records (the last TL_BLK / blocks launches), for the
// host's per-block report.
#define TL_BLK (256 * 19 * 4)
__device__ unsigned long long tl_blk[TL_BLK][7];
__device__ unsigned int tl_blkn;
__device__ __forceinline__ void tl_block(unsigned int gen, unsigned long long ts, unsigned long long tw, unsigned long long tb, unsigned long long tg,
                                         unsigned long long ta) {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    unsigned int sm;
    asm("mov.u32 %0, %%smid;" : "=r"(sm));
    // a slot per launch (by the barrier's generation) and block: no
    // atomics, which would slow what they measure
    unsigned int i = (gen % (TL_BLK / gridDim.x)) * gridDim.x + blockIdx.x;
    if (blockIdx.x == 0) tl_blkn = 1u;
    tl_blk[i][0] = (unsigned long long)gen << 32 | (unsigned long long)blockIdx.x << 12 | sm;
    tl_blk[i][1] = ts;
    tl_blk[i][2] = tw;
    tl_blk[i][3] = tb;
    tl_blk[i][4] = tg;
    tl_blk[i][5] = t;
    tl_blk[i][6] = ta;
  }
}
__device__ __forceinline__ void tl_started(unsigned long long ts) {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && tl_lastidx < TL_MAX)
    tl_buf[2 * TL_MAX + tl_lastidx] = ts;
}
// tl_probe(i, t0) (first block, thread 0) adds the time since t0 (a
// tl_now() of the same thread) to probe i: the host prints each probe's
// mean with the timeline, for looking inside one kernel. In place:
//   k_norm_route: 5 start to the PDL wait passed; from there 0 the norm,
//     1 the first cluster barrier, 2 the router's rows, 3 the second
//     cluster barrier, 4 the routing done (block 0); k_route_p the same
//     but 2 and 5 (0 the partials' loads and the norm);
//   moe_gu: 6 start to the wait, 7 the first warp's pair done after it;
//   moe_dc2 and moe_dcl: 8 start to the wait, 9 the first block's rows
//     done after it;
//   route_row (from its start): 10 the scores, and with route_row_warp 11
//     the ranks in the groups, 12 past the barrier, 13 the selection, 14
//     past the second barrier.
//   moe_gd_bf16v: 6 start to the wait, 7 the first warp's pair done after
//     it, 8 past the grid barrier, 15 the staged rows in, 9 the block's
//     rows done (the block trace, tl_block, has every block's times).
//   k_attn (its first block, from its wait): 16 the query in shared
//     memory, 17 the scores of the first block of keys, 18 their softmax,
//     19 the block's outputs stored;
//   k_lightning_recg (from its wait): 20 the QK norm, 21 the state and
//     the block's sums, 22 past the first cluster barrier, 23 the gate
//     norm's factor, 24 the output stored;
//   gemv_bf16v4n (from its wait): 25 the input norm, 26 the products;
//   gv_stream (gemv_fp8t8, gemv_fp8t9, gemv_bf16t4n; from block 0's
//     start): 27 its rounds asked for before the wait, 28 the wait passed;
//   moe_gummat_impl (thread 0 of every block, tl_add): 33 its wait to the
//     activation row staged, then over its rounds 34 waiting for them, 35
//     their products, 36 asking for the refills.
#define TL_PROBES 40
__device__ unsigned long long tl_probe_sum[TL_PROBES];
__device__ unsigned int tl_probe_n[TL_PROBES];
__device__ __forceinline__ unsigned long long tl_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ void tl_probe(int i, unsigned long long t0) {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0 && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0) {
    atomicAdd(&tl_probe_sum[i], tl_now() - t0);
    atomicAdd(&tl_probe_n[i], 1u);
  }
}
// tl_span(i, t0) (thread 0 of every block) adds the time since t0 to
// probe i: its mean over the blocks, where tl_probe has block 0's. In
// place (every block): gemv_fp8v2r 25 start to the wait passed, 26 the
// wait to the product stored, 29 start to its end; gv_stream (gemv_fp8t8)
// 8 start to the wait, 9 the wait to its end; moe_gummat_impl 6 and 30,
// moe_dcmmat_impl 15 and 31, k_lightning_recg 5 and 7 the same two.
__device__ __forceinline__ void tl_span(int i, unsigned long long t0) {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0) {
    atomicAdd(&tl_probe_sum[i], tl_now() - t0);
    atomicAdd(&tl_probe_n[i], 1u);
  }
}
// tl_add(i, d) (thread 0 of every block) adds d nanoseconds to probe i.
__device__ __forceinline__ void tl_add(int i, unsigned long long d) {
  if (tl_buf && threadIdx.x == 0 && threadIdx.y == 0) {
    atomicAdd(&tl_probe_sum[i], d);
    atomicAdd(&tl_probe_n[i], 1u);
  }
}
#else
#define tl_add(i, d) \
  do {               \
  } while (0)
#define tl_mark() \
  do {            \
  } while (0)
#define tl_end() \
  do {           \
  } while (0)
#define tl_started(ts) \
  do {                 \
  } while (0)
#define tl_span(i, t0) \
  do {                 \
  } while (0)
#define tl_block(gen, ts, tw, tb, tg, ta) \
  do {                            \
  } while (0)
#define tl_now() 0ull
#define tl_probe(i, t0) \
  do {                  \
  } while (0)
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define PDL_ENTER()                                     \
  do {                                                  \
    asm volatile("griddepcontrol.wait;" ::: "memory");  \
    tl_mark();                                          \
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); \
  } while (0)
#else
#define PDL_ENTER() \
  do {          \
  } while (0)
#endif

// smem_addr is the shared-memory address of generic pointer p.
__device__ __forceinline__ u32 smem_addr(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ float bf16f(u16 h) { return __uint_as_float(((u32)h) << 16); }
__device__ __forceinline__ float f16f(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}
// f2bf16 rounds to nearest even (NaN stays NaN).
__device__ __forceinline__ u16 f2bf16(float f) {
  u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (u16)(u >> 16);
}
// pack_bf16 rounds lo and hi to BF16 (as f2bf16) and packs them, lo in the low half.
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 r;
#if __CUDA_ARCH__ >= 800
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
#else
  r = (u32)f2bf16(lo) | ((u32)f2bf16(hi) << 16);
#endif
  return r;
}

struct WF32 {
  typedef float T;
  static __device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
};
struct WF16 {
  typedef u16 T;
  static __device__ __forceinline__ float ld(const u16* p, i64 i) { return f16f(p[i]); }
};
struct WBF16 {
  typedef u16 T;
  static __device__ __forceinline__ float ld(const u16* p, i64 i) { return bf16f(p[i]); }
};

// fp8x4 converts four OCP E4M3 values (bytes of w, lowest first) exactly to
// float: on sm_89+ with the hardware E4M3→F16 conversion; elsewhere by moving
// the bits into a half ((x & 0x7f) << 7 has the E4M3 value times 2^-8, the
// sign goes to bit 15) and scaling back by 2^8.
__device__ __forceinline__ void fp8x4(u32 w, float* f) {
#if __CUDA_ARCH__ >= 890
  u32 lo, hi;
  asm("{.reg .b16 a, b;\n mov.b32 {a, b}, %2;\n cvt.rn.f16x2.e4m3x2 %0, a;\n cvt.rn.f16x2.e4m3x2 %1, b;}" : "=r"(lo), "=r"(hi) : "r"(w));
  f[0] = f16f((u16)(lo & 0xffff));
  f[1] = f16f((u16)(lo >> 16));
  f[2] = f16f((u16)(hi & 0xffff));
  f[3] = f16f((u16)(hi >> 16));
#else
#pragma unroll
  for (int i = 0; i < 4; i++) {
    u32 b = (w >> (8 * i)) & 0xff;
    f[i] = f16f((u16)(((b & 0x80) << 8) | ((b & 0x7f) << 7))) * 256.f;
  }
#endif
}
__device__ __forceinline__ float fp8f(unsigned char b) {
  float f[4];
  fp8x4((u32)b, f);
  return f[0];
}

// ---------------------------------------------------------------------------
// reductions

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sumd(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// block_sumd returns the sum over the block (blockDim.x a multiple of 32) to every thread.
__device__ double block_sumd(double v, double* sh) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sumd(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  double s = 0;
  for (int i = 0; i < nw; i++) s += sh[i];
  __syncthreads();
  return s;
}
__device__ float block_sum(float v, float* sh) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float s = 0;
  for (int i = 0; i < nw; i++) s += sh[i];
  __syncthreads();
  return s;
}
__device__ float block_max(float v, float* sh) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  float s = sh[0];
  for (int i = 1; i < nw; i++) s = fmaxf(s, sh[i]);
  __syncthreads();
  return s;
}

// ---------------------------------------------------------------------------
// element-wise kernels over rows x cols views (flat grid-stride loops)

#define GRID_LOOP(total) for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < (total); idx += (i64)gridDim.x * blockDim.x)

extern "C" __global__ void k_copy(float* d, i64 ldd, const float* s, i64 lds, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = s[r * lds + c];
  }
}

extern "C" __global__ void k_fill(float* d, i64 ldd, int rows, int cols, float v) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = v;
  }
}

extern "C" __global__ void k_add(float* d, i64 ldd, const float* a, i64 lda, const float* b, i64 ldb, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = a[r * lda + c] + b[r * ldb + c];
  }
}

// k_addv is k_add four values at a time (cols and the strides multiples of
// 4, the views 16-byte aligned).
extern "C" __global__ void k_addv(float* d, i64 ldd, const float* a, i64 lda, const float* b, i64 ldb, int rows, int cols) { PDL_ENTER();
  int c4 = cols / 4;
  GRID_LOOP((i64)rows * c4) {
    i64 r = idx / c4;
    int c = (int)(idx - r * c4) * 4;
    float4 x = *(const float4*)(a + r * lda + c), y = *(const float4*)(b + r * ldb + c);
    *(float4*)(d + r * ldd + c) = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
  }
}

extern "C" __global__ void k_silu(float* d, i64 ldd, const float* x, i64 ldx, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    float v = x[r * ldx + c];
    d[r * ldd + c] = v / (1.0f + expf(-v));
  }
}

extern "C" __global__ void k_silumul(float* d, i64 ldd, const float* g, i64 ldg, const float* u, i64 ldu, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    float v = g[r * ldg + c];
    d[r * ldd + c] = v / (1.0f + expf(-v)) * u[r * ldu + c];
  }
}

// k_silumul_bf16: h[r, c] = silu(gu[r, c]) * gu[r, I + c] in BF16, for the
// [gate | up] rows of a GEMM (width 2I, contiguous); h is rows x I
// contiguous. I % 4 == 0.
extern "C" __global__ void k_silumul_bf16(u16* h, const float* gu, int rows, int I) { PDL_ENTER();
  GRID_LOOP((i64)rows * I / 4) {
    i64 r = idx / (I / 4);
    int c = (int)(idx % (I / 4)) * 4;
    const float* gp = gu + r * 2 * I + c;
    float4 g = *(const float4*)gp, u = *(const float4*)(gp + I);
    float v0 = g.x / (1.0f + expf(-g.x)) * u.x, v1 = g.y / (1.0f + expf(-g.y)) * u.y;
    float v2 = g.z / (1.0f + expf(-g.z)) * u.z, v3 = g.w / (1.0f + expf(-g.w)) * u.w;
    *(uint2*)(h + r * I + c) = make_uint2(pack_bf16(v0, v1), pack_bf16(v2, v3));
  }
}

// sigmul is x · sigmoid(g), shared by k_sigmul and k_rmsnorm_sigmul.
__device__ __forceinline__ float sigmul(float x, float g) { return x / (1.0f + expf(-g)); }

extern "C" __global__ void k_sigmul(float* d, i64 ldd, const float* x, i64 ldx, const float* g, i64 ldg, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = sigmul(x[r * ldx + c], g[r * ldg + c]);
  }
}

extern "C" __global__ void k_gather(float* d, i64 ldd, const float* s, i64 lds, const int* rows, int n, int cols) { PDL_ENTER();
  GRID_LOOP((i64)n * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = s[(i64)rows[r] * lds + c];
  }
}

// k_tobf16 converts a float32 view into a contiguous BF16 matrix.
extern "C" __global__ void k_tobf16(u16* d, const float* x, i64 ldx, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[idx] = f2bf16(x[r * ldx + c]);
  }
}

// k_tobf16v is k_tobf16 eight values at a time (cols % 8 == 0, ldx % 4 == 0,
// x 16-byte aligned).
extern "C" __global__ void k_tobf16v(u16* d, const float* x, i64 ldx, int rows, int cols) { PDL_ENTER();
  int c8 = cols / 8;
  GRID_LOOP((i64)rows * c8) {
    i64 r = idx / c8;
    int c = (int)(idx - r * c8) * 8;
    const float* p = x + r * ldx + c;
    float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
    *(uint4*)(d + r * cols + c) = make_uint4(pack_bf16(a.x, a.y), pack_bf16(a.z, a.w), pack_bf16(b.x, b.y), pack_bf16(b.z, b.w));
  }
}

// k_split3bf16 writes each value v of the rows×cols view x as three BF16
// parts, hi = bf16(v), mid = bf16(v - hi), lo = bf16(v - hi - mid), row r of
// d holding [hi… | mid… | lo…] (3·cols values): a BF16 GEMM against the
// weight repeated three times along k then multiplies x at FP32 accuracy
// (products of BF16 values are exact in the FP32 accumulation).
extern "C" __global__ void k_split3bf16(u16* d, const float* x, i64 ldx, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols;
    int c = (int)(idx - r * cols);
    float v = x[r * ldx + c];
    u16 h = f2bf16(v);
    float r1 = v - bf16f(h);
    u16 m = f2bf16(r1);
    u16* dr = d + r * 3 * cols + c;
    dr[0] = h;
    dr[cols] = m;
    dr[2 * cols] = f2bf16(r1 - bf16f(m));
  }
}

// k_split3bf16v is k_split3bf16 eight values at a time (cols % 8 == 0,
// ldx % 4 == 0, x 16-byte aligned).
extern "C" __global__ void k_split3bf16v(u16* d, const float* x, i64 ldx, int rows, int cols) { PDL_ENTER();
  int c8 = cols / 8;
  GRID_LOOP((i64)rows * c8) {
    i64 r = idx / c8;
    int c = (int)(idx - r * c8) * 8;
    const float* p = x + r * ldx + c;
    float4 a = *(const float4*)p, b = *(const float4*)(p + 4);
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    u32 hw[4], mw[4], lw[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      u16 h0 = f2bf16(v[2 * i]), h1 = f2bf16(v[2 * i + 1]);
      float r0 = v[2 * i] - bf16f(h0), r1 = v[2 * i + 1] - bf16f(h1);
      u16 m0 = f2bf16(r0), m1 = f2bf16(r1);
      hw[i] = h0 | ((u32)h1 << 16);
      mw[i] = m0 | ((u32)m1 << 16);
      lw[i] = f2bf16(r0 - bf16f(m0)) | ((u32)f2bf16(r1 - bf16f(m1)) << 16);
    }
    u16* dr = d + r * 3 * cols + c;
    *(uint4*)dr = make_uint4(hw[0], hw[1], hw[2], hw[3]);
    *(uint4*)(dr + cols) = make_uint4(mw[0], mw[1], mw[2], mw[3]);
    *(uint4*)(dr + 2 * cols) = make_uint4(lw[0], lw[1], lw[2], lw[3]);
  }
}

// ---------------------------------------------------------------------------
// embedding

template <class W>
__device__ void embed_impl(float* d, i64 ldd, const typename W::T* table, const int* ids, int n, int cols) {
  GRID_LOOP((i64)n * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = W::ld(table, (i64)ids[r] * cols + c);
  }
}
extern "C" __global__ void embed_f32(float* d, i64 ldd, const float* t, const int* ids, int n, int cols) { PDL_ENTER(); embed_impl<WF32>(d, ldd, t, ids, n, cols); }
extern "C" __global__ void embed_f16(float* d, i64 ldd, const u16* t, const int* ids, int n, int cols) { PDL_ENTER(); embed_impl<WF16>(d, ldd, t, ids, n, cols); }
extern "C" __global__ void embed_bf16(float* d, i64 ldd, const u16* t, const int* ids, int n, int cols) { PDL_ENTER(); embed_impl<WBF16>(d, ldd, t, ids, n, cols); }
// embed_fp8: E4M3 table with block scales S [ceil(rows/br)][sc].
extern "C" __global__ void embed_fp8(float* d, i64 ldd, const unsigned char* t, const int* ids, int n, int cols, const float* S, int sc, int br, int bc) { PDL_ENTER();
  GRID_LOOP((i64)n * cols) {
    i64 r = idx / cols, c = idx % cols;
    i64 id = ids[r];
    d[r * ldd + c] = fp8f(t[id * cols + c]) * S[(id / br) * sc + c / bc];
  }
}

// ---------------------------------------------------------------------------
// RMSNorm: one block per (row, group); the sum of squares in double as the
// CPU reference does. w has `group` values (shared) or `cols` (wfull).

// The row kernels below load NU values per thread before using any of
// them: a loop that loads, uses and stores one value at a time waits for a
// memory round trip per value (the stores may alias the loads), which made
// a 2048-wide decode norm several microseconds long. The sums keep their
// order (each thread adds its values in index order).
#define NU 8

// rms_inv returns 1/sqrt(mean(xr[0..n)²) + eps) to every thread of the block.
// It ends with a barrier, so the caller may then overwrite xr.
__device__ float rms_inv(const float* xr, int n, float eps, double* sh) {
  double ss = 0;
  for (int i0 = threadIdx.x; i0 < n; i0 += NU * blockDim.x) {
    float v[NU];
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = i0 + u * blockDim.x;
      v[u] = i < n ? xr[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < NU; u++)
      if (i0 + u * blockDim.x < n) ss += (double)v[u] * (double)v[u];
  }
  ss = block_sumd(ss, sh);
  return (float)(1.0 / sqrt(ss / (double)n + (double)eps));
}

// norm_out stores dr[i] = xr[i]·inv·ws[i] (then ⊙ sigmoid(gr[i]) when gr
// is set) for i < n; dr may alias xr.
__device__ __forceinline__ void norm_out(float* dr, const float* xr, float inv, const float* ws, const float* gr, int n) {
  for (int i0 = threadIdx.x; i0 < n; i0 += NU * blockDim.x) {
    float xv[NU], wv[NU], gv[NU];
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = i0 + u * blockDim.x;
      bool in = i < n;
      xv[u] = in ? xr[i] : 0.f;
      wv[u] = in ? ws[i] : 0.f;
      gv[u] = in && gr ? gr[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = i0 + u * blockDim.x;
      if (i < n) dr[i] = gr ? sigmul(xv[u] * inv * wv[u], gv[u]) : xv[u] * inv * wv[u];
    }
  }
}

extern "C" __global__ void k_rmsnorm(float* d, i64 ldd, const float* x, i64 ldx, const float* w, int wfull, int cols, int group, float eps) { PDL_ENTER();
  __shared__ double sh[32];
  int ng = cols / group;
  i64 r = blockIdx.x / ng;
  int g = blockIdx.x % ng;
  const float* xr = x + r * ldx + (i64)g * group;
  float* dr = d + r * ldd + (i64)g * group;
  float inv = rms_inv(xr, group, eps, sh);
  norm_out(dr, xr, inv, wfull ? w + (i64)g * group : w, 0, group);
}

// k_rmsnorm_sigmul: d = RMSNorm(x)·w ⊙ sigmoid(g), the norm as k_rmsnorm (one
// block per (row, group)), the gate as k_sigmul. d may alias x.
extern "C" __global__ void k_rmsnorm_sigmul(float* d, i64 ldd, const float* x, i64 ldx, const float* gt, i64 ldg, const float* w, int wfull, int cols, int group,
                                            float eps) { PDL_ENTER();
  __shared__ double sh[32];
  int ng = cols / group;
  i64 r = blockIdx.x / ng;
  int g = blockIdx.x % ng;
  const float* xr = x + r * ldx + (i64)g * group;
  float* dr = d + r * ldd + (i64)g * group;
  float inv = rms_inv(xr, group, eps, sh);
  norm_out(dr, xr, inv, wfull ? w + (i64)g * group : w, gt + r * ldg + (i64)g * group, group);
}

// k_rmsnorm_sigmul_w<NV>: k_rmsnorm_sigmul with one warp per (row, group),
// 8 per block, for groups of 32·NV values (lane l holds values l + 32u):
// prefill's rows×groups one-block items cost more in barriers and scheduling
// than in arithmetic.
template <int NV>
__device__ __forceinline__ void rmsnorm_sigmul_w(float* d, i64 ldd, const float* x, i64 ldx, const float* gt, i64 ldg, const float* w, int wfull,
                                                 int cols, int group, float eps, int rows) {
  int ng = cols / group;
  i64 t = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
  if (t >= (i64)rows * ng) return;
  int lane = threadIdx.x & 31;
  i64 r = t / ng;
  int g = (int)(t - r * ng);
  const float* xr = x + r * ldx + (i64)g * group + lane;
  const float* gr = gt + r * ldg + (i64)g * group + lane;
  const float* ws = (wfull ? w + (i64)g * group : w) + lane;
  float* dr = d + r * ldd + (i64)g * group + lane;
  float xv[NV], wv[NV], gv[NV];
#pragma unroll
  for (int u = 0; u < NV; u++) {
    xv[u] = xr[32 * u];
    wv[u] = ws[32 * u];
    gv[u] = gr[32 * u];
  }
  double ss = 0;
#pragma unroll
  for (int u = 0; u < NV; u++) ss += (double)xv[u] * (double)xv[u];
  ss = __shfl_sync(0xffffffffu, warp_sumd(ss), 0);
  float inv = (float)(1.0 / sqrt(ss / (double)group + (double)eps));
#pragma unroll
  for (int u = 0; u < NV; u++) dr[32 * u] = sigmul(xv[u] * inv * wv[u], gv[u]);
}
#define RMSNORM_SIGMUL_W(NV)                                                                                                               \
  extern "C" __global__ void k_rmsnorm_sigmul_w##NV(float* d, i64 ldd, const float* x, i64 ldx, const float* gt, i64 ldg, const float* w, int wfull, \
                                                    int cols, int group, float eps, int rows) {                                                 \
    PDL_ENTER();                                                                                                                            \
    rmsnorm_sigmul_w<NV>(d, ldd, x, ldx, gt, ldg, w, wfull, cols, group, eps, rows);                                                        \
  }
RMSNORM_SIGMUL_W(2)
RMSNORM_SIGMUL_W(4)
RMSNORM_SIGMUL_W(8)
RMSNORM_SIGMUL_W(16)

// addnorm_w loads thread t's norm weights for addnorm_row (t < nt; the
// weights are read-only, so this may come before PDL_ENTER).
__device__ __forceinline__ void addnorm_w(const float* w, int cols, int nt, float* wv) {
  int t = threadIdx.x;
#pragma unroll
  for (int u = 0; u < NU; u++) {
    int i = t + u * nt;
    wv[u] = t < nt && i < cols ? w[i] : 0.f;
  }
}
// addnorm_row: x + a for one row of cols <= NU·nt values (thread t < nt
// holds values t + u·nt in registers), stored to vo (which may be xr), then
// d = RMSNorm(x + a)·w with the sum of squares over the block (wv from
// addnorm_w); threads >= nt only join the reduction (their sums are zero,
// so the result is the same as with nt threads). The decode path of
// k_addrmsnorm and k_norm_route. With ar null it is d = RMSNorm(x)·w, the
// arithmetic of k_rmsnorm with nt threads (nothing is added, nothing is
// stored to vo). Returns the inverse RMS (every thread).
__device__ __forceinline__ float addnorm_row(float* dr, float* vo, const float* xr, const float* ar, const float* wv, int cols, int nt, float eps,
                                             double* sh) {
  int t = threadIdx.x;
  float v[NU];
  double ss = 0;
  if (t < nt) {
    float xv[NU], av[NU];
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = t + u * nt;
      xv[u] = i < cols ? xr[i] : 0.f;
      av[u] = i < cols && ar ? ar[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = t + u * nt;
      v[u] = ar ? xv[u] + av[u] : xv[u];
      if (i < cols) {
        if (ar) vo[i] = v[u];
        ss += (double)v[u] * (double)v[u];
      }
    }
  }
  ss = block_sumd(ss, sh);
  float inv = (float)(1.0 / sqrt(ss / (double)cols + (double)eps));
  if (t >= nt) return inv;
#pragma unroll
  for (int u = 0; u < NU; u++) {
    int i = t + u * nt;
    if (i < cols) dr[i] = v[u] * inv * wv[u];
  }
  return inv;
}

// k_addrmsnorm: y = x + a (stored; y may be x), then d = RMSNorm(y) * w
// over the whole row; one block per row. The same arithmetic as k_add then
// k_rmsnorm. Rows of at most NU·blockDim values (decode) keep x + a in
// registers. The decode path loads its norm weights before PDL_ENTER.
extern "C" __global__ void k_addrmsnorm(float* d, i64 ldd, float* x, i64 ldx, const float* a, i64 lda, const float* w, int cols, float eps,
                                        float* y, i64 ldy) {
  __shared__ double sh[32];
  i64 r = blockIdx.x;
  float* xr = x + r * ldx;
  const float* ar = a + r * lda;
  float* dr = d + r * ldd;
  float* yr = y + r * ldy;
  if (cols <= NU * (int)blockDim.x) {
    float wv[NU];
    addnorm_w(w, cols, blockDim.x, wv);
    PDL_ENTER();
    addnorm_row(dr, yr, xr, ar, wv, cols, blockDim.x, eps, sh);
    tl_end();
    return;
  }
  PDL_ENTER();
  double ss = 0;
  for (int i0 = threadIdx.x; i0 < cols; i0 += NU * blockDim.x) {
    float xv[NU], av[NU];
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = i0 + u * blockDim.x;
      xv[u] = i < cols ? xr[i] : 0.f;
      av[u] = i < cols ? ar[i] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < NU; u++) {
      int i = i0 + u * blockDim.x;
      float v = xv[u] + av[u];
      if (i < cols) {
        yr[i] = v;
        ss += (double)v * (double)v;
      }
    }
  }
  ss = block_sumd(ss, sh);
  float inv = (float)(1.0 / sqrt(ss / (double)cols + (double)eps));
  norm_out(dr, yr, inv, w, 0, cols);
}

// ---------------------------------------------------------------------------
// RoPE (NeoX rotate-half on the first `dim` channels of every head), in place.
// One block per row.

// rope_cs returns (cos, sin) of pair i's angle at position p: the inverse
// frequency and the angle in float32, sin and cos in double, as the CPU
// backend computes them.
__device__ __forceinline__ float2 rope_cs(int i, int dim, double theta, float p) {
  float inv = (float)pow(theta, -(double)(2 * i) / (double)dim);
  float ang = p * inv;
  double s, c;
  sincos((double)ang, &s, &c);
  return make_float2((float)c, (float)s);
}
// rope_cs_row is pair i's (cos, sin) for row r: from the table cs of
// [rows][dim/2] pairs when there is one (the host's, computed as the CPU
// backend computes them, for the few rows of a decode step: the angles'
// pow and sincos in double then leave the kernels' critical paths), else
// rope_cs at the row's position p.
__device__ __forceinline__ float2 rope_cs_row(const float2* cs, i64 r, int i, int dim, double theta, float p) {
  return cs ? cs[r * (dim / 2) + i] : rope_cs(i, dim, theta, p);
}
// rope_apply rotates (a, b) by the angle of cs = (cos, sin), rounding every
// product and sum (no FMA contraction, which could differ between kernels),
// as the CPU does.
__device__ __forceinline__ void rope_apply(float& a, float& b, float2 cs) {
  float a0 = a, b0 = b;
  a = __fsub_rn(__fmul_rn(a0, cs.x), __fmul_rn(b0, cs.y));
  b = __fadd_rn(__fmul_rn(b0, cs.x), __fmul_rn(a0, cs.y));
}
// rope_rotate rotates the pair (a, b) = (v[i], v[i + dim/2]) of a head at
// position p.
__device__ __forceinline__ void rope_rotate(float& a, float& b, int i, int dim, double theta, float p) { rope_apply(a, b, rope_cs(i, dim, theta, p)); }

// k_rope: cs, when not null, is the rows' table of (cos, sin) (rope_cs_row).
extern "C" __global__ void k_rope(float* x, i64 ldx, int cols, int headDim, int dim, double theta, const int* pos, const float2* cs) { PDL_ENTER();
  int r = blockIdx.x;
  int half = dim / 2, nh = cols / headDim;
  float p = cs ? 0.f : (float)pos[r];
  for (int j = threadIdx.x; j < nh * half; j += blockDim.x) {
    int h = j / half, i = j % half;
    float* v = x + (i64)r * ldx + (i64)h * headDim;
    float a = v[i], b = v[i + half];
    rope_apply(a, b, rope_cs_row(cs, r, i, dim, theta, p));
    v[i] = a;
    v[i + half] = b;
  }
}

// k_rmsnorm_rope_w<NV, HU>: k_rmsnorm_rope with one block of 8 warps per
// row and one warp per head, for head dims of 32·NV and rotary halves of
// 32·HU: lane l holds values l + 32u of its head, so both values of a
// rotated pair are in one lane and the only reduction is the warp's sum of
// squares (in double). The row's cosines and sines are computed once, for
// all its heads. Prefill has rows×heads of one-block work items otherwise,
// whose barriers and scheduling cost more than the arithmetic.
template <int NV, int HU>
__device__ __forceinline__ void rmsnorm_rope_w(float* x, i64 ldx, const float* w, int wfull, int cols, int headDim, float eps, int dim, double theta,
                                               const int* pos, int rows, const float2* tab) {
  __shared__ float2 cs[32 * HU];
  int nh = cols / headDim, lane = threadIdx.x & 31;
  i64 r = blockIdx.x;
  float p = tab ? 0.f : (float)pos[r];
  if (threadIdx.x < 32 * HU) cs[threadIdx.x] = rope_cs_row(tab, r, threadIdx.x, dim, theta, p);
  __syncthreads();
  for (int h = threadIdx.x >> 5; h < nh; h += blockDim.x >> 5) {
    float* v = x + r * ldx + (i64)h * headDim + lane;
    const float* ws = (wfull ? w + (i64)h * headDim : w) + lane;
    float val[NV], wv[NV];
#pragma unroll
    for (int u = 0; u < NV; u++) {
      val[u] = v[32 * u];
      wv[u] = ws[32 * u];
    }
    double ss = 0;
#pragma unroll
    for (int u = 0; u < NV; u++) ss += (double)val[u] * (double)val[u];
    ss = __shfl_sync(0xffffffffu, warp_sumd(ss), 0);  // warp_sumd's total is lane 0's
    float inv = (float)(1.0 / sqrt(ss / (double)headDim + (double)eps));
#pragma unroll
    for (int u = 0; u < NV; u++) val[u] = val[u] * inv * wv[u];
#pragma unroll
    for (int u = 0; u < HU; u++) rope_apply(val[u], val[u + HU], cs[lane + 32 * u]);
#pragma unroll
    for (int u = 0; u < NV; u++) v[32 * u] = val[u];
  }
}
#define RMSNORM_ROPE_W(NV, HU)                                                                                                               \
  extern "C" __global__ void k_rmsnorm_rope_w##NV##HU(float* x, i64 ldx, const float* w, int wfull, int cols, int headDim, float eps, int dim, \
                                                     double theta, const int* pos, int rows, const float2* cs) {                            \
    PDL_ENTER();                                                                                                                             \
    rmsnorm_rope_w<NV, HU>(x, ldx, w, wfull, cols, headDim, eps, dim, theta, pos, rows, cs);                                                \
  }
RMSNORM_ROPE_W(2, 1)
RMSNORM_ROPE_W(4, 1)
RMSNORM_ROPE_W(4, 2)

// k_rmsnorm_rope: per-head RMSNorm (as k_rmsnorm with group headDim; w has
// headDim values or cols, wfull) then RoPE (as k_rope), in place; one block
// per (row, head). Each thread normalises and rotates whole pairs in
// registers, so the only barrier is the one of the sum of squares.
extern "C" __global__ void k_rmsnorm_rope(float* x, i64 ldx, const float* w, int wfull, int cols, int headDim, float eps, int dim, double theta,
                                          const int* pos, const float2* cs) {
  __shared__ double sh[32];
  int nh = cols / headDim, half = dim / 2;
  i64 r = blockIdx.x / nh;
  int h = blockIdx.x % nh;
  // the table (cs: staged before the step's first kernel) does not depend
  // on the kernel before: the thread's first pair loaded before the wait
  float2 c0 = cs && (int)threadIdx.x < half ? cs[r * half + threadIdx.x] : make_float2(0.f, 0.f);
  PDL_ENTER();
  float* v = x + r * ldx + (i64)h * headDim;
  float inv = rms_inv(v, headDim, eps, sh);
  const float* ws = wfull ? w + (i64)h * headDim : w;
  float p = cs ? 0.f : (float)pos[r];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float a = v[i] * inv * ws[i], b = v[i + half] * inv * ws[i + half];
    rope_apply(a, b, cs && i == (int)threadIdx.x ? c0 : rope_cs_row(cs, r, i, dim, theta, p));
    v[i] = a;
    v[i + half] = b;
  }
  for (int i = 2 * half + threadIdx.x; i < headDim; i += blockDim.x) v[i] = v[i] * inv * ws[i];
}

// ---------------------------------------------------------------------------
// GEMV for few rows (T <= 8): one warp per output column n, FP32 accumulate.
// Y[t, n] = sum_k X[t, k] * W[n, k]

#define GEMV_T 8
#define GEMV_WARPS 8

template <class W>
__device__ void gemv_impl(const float* X, i64 ldx, int T, const typename W::T* Wt, int N, int K, float* Y, i64 ldy) {
  int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int n = blockIdx.x * GEMV_WARPS + warp;
  if (n >= N) return;
  const typename W::T* wr = Wt + (i64)n * K;
  float acc[GEMV_T];
#pragma unroll
  for (int t = 0; t < GEMV_T; t++) acc[t] = 0.f;
  for (int k = lane; k < K; k += 32) {
    float wv = W::ld(wr, k);
#pragma unroll
    for (int t = 0; t < GEMV_T; t++)
      if (t < T) acc[t] += wv * X[(i64)t * ldx + k];
  }
#pragma unroll
  for (int t = 0; t < GEMV_T; t++) {
    if (t < T) {
      float s = warp_sum(acc[t]);
      if (lane == 0) Y[(i64)t * ldy + n] = s;
    }
  }
}
extern "C" __global__ void gemv_f32(const float* X, i64 ldx, int T, const float* W, int N, int K, float* Y, i64 ldy) { PDL_ENTER(); gemv_impl<WF32>(X, ldx, T, W, N, K, Y, ldy); }
extern "C" __global__ void gemv_f16(const float* X, i64 ldx, int T, const u16* W, int N, int K, float* Y, i64 ldy) { PDL_ENTER(); gemv_impl<WF16>(X, ldx, T, W, N, K, Y, ldy); }
extern "C" __global__ void gemv_bf16(const float* X, i64 ldx, int T, const u16* W, int N, int K, float* Y, i64 ldy) { PDL_ENTER(); gemv_impl<WBF16>(X, ldx, T, W, N, K, Y, ldy); }

// Vectorized GEMVs for BF16 and FP8 weights: one warp per output row n, each
// lane reading 16-byte chunks of the row and keeping GV_U of them in flight
// before using any, so that enough bytes are in flight to approach HBM
// bandwidth. A chunk holds F::N weights: 8 BF16 or 16 E4M3 values. FP8 rows
// carry block scales S [ceil(N/br)][sc] (sc = ceil(K/bc), bc % 16 == 0), one
// per chunk. Requirements: K % F::N == 0, activation rows 16-byte aligned.
#define GV_U 4
// ldg_na loads 16 bytes of read-only global memory without allocating
// them in L1 (streamed weights, so that L1 keeps what is read again).
__device__ __forceinline__ uint4 ldg_na(const uint4* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}
// ldw loads 16 bytes of a streamed weight row: past L1 (ldg_na), so that
// L1 keeps the activations that every row reads (2.2 % faster decode steps
// on the H200), unless the host cleared ld_na (RINGO_CUDA_LDNA=0, for
// comparisons).
__constant__ int ld_na = 1;
__device__ __forceinline__ uint4 ldw(const uint4* p) { return ld_na ? ldg_na(p) : __ldg(p); }
__device__ __forceinline__ void bf16x8(uint4 wv, float* w) {
  w[0] = __uint_as_float(wv.x << 16); w[1] = __uint_as_float(wv.x & 0xffff0000u);
  w[2] = __uint_as_float(wv.y << 16); w[3] = __uint_as_float(wv.y & 0xffff0000u);
  w[4] = __uint_as_float(wv.z << 16); w[5] = __uint_as_float(wv.z & 0xffff0000u);
  w[6] = __uint_as_float(wv.w << 16); w[7] = __uint_as_float(wv.w & 0xffff0000u);
}
__device__ __forceinline__ void fp8x16(uint4 wv, float* w) {
  fp8x4(wv.x, w);
  fp8x4(wv.y, w + 4);
  fp8x4(wv.z, w + 8);
  fp8x4(wv.w, w + 12);
}
struct GvBF16 {
  static constexpr int N = 8;
  static constexpr bool S = false;  // no block scales
  static __device__ __forceinline__ void dec(uint4 v, float* w) { bf16x8(v, w); }
};
struct GvFP8 {
  static constexpr int N = 16;
  static constexpr bool S = true;
  static __device__ __forceinline__ void dec(uint4 v, float* w) { fp8x16(v, w); }
};
// fp8x4i is fp8x4 by integer operations instead of the conversion units:
// byte b's sign goes to bit 31 and its other seven bits to bits 20–26 (the
// float's exponent field holds E4M3's exponent, 120 too small, and its top
// three mantissa bits E4M3's), then one exact multiplication by 2^120 —
// subnormal E4M3 values land on subnormal floats, which that multiplication
// makes normal without rounding. Equal to fp8x4 for every value but NaN
// (0x7f, 0xff), which becomes ±480. Per byte: the byte moved to the top
// (sign in bit 31), an arithmetic shift right by 4, a mask.
__device__ __forceinline__ void fp8x4i(u32 w, float* f) {
  f[0] = __int_as_float(((int)(w << 24) >> 4) & 0x87f00000) * 0x1p120f;
  f[1] = __int_as_float(((int)(w << 16) >> 4) & 0x87f00000) * 0x1p120f;
  f[2] = __int_as_float(((int)(w << 8) >> 4) & 0x87f00000) * 0x1p120f;
  f[3] = __int_as_float(((int)w >> 4) & 0x87f00000) * 0x1p120f;
}
// GvFP8I: GvFP8 decoded by fp8x4i, for k_fp8rate_int (BenchmarkFP8MoEHot:
// half the rate of the conversion units, and 7 % slower decode steps on
// Ring-flash's shapes in the kernels that used it)
struct GvFP8I {
  static constexpr int N = 16;
  static constexpr bool S = true;
  static __device__ __forceinline__ void dec(uint4 v, float* w) {
    fp8x4i(v.x, w);
    fp8x4i(v.y, w + 4);
    fp8x4i(v.z, w + 8);
    fp8x4i(v.w, w + 12);
  }
};
// ldx8 loads 8 activations from memory (16-byte aligned).
__device__ __forceinline__ void ldx8(const float* x, float* o) {
  float4 a = ((const float4*)x)[0], b = ((const float4*)x)[1];
  o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w; o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
}
template <int N>
__device__ __forceinline__ float dotn(const float* w, const float* x) {
  float d = 0.f;
#pragma unroll
  for (int i = 0; i < N; i++) d += w[i] * x[i];
  return d;
}

// gv_chunk adds chunk kc (weights wv, F::N of them) of a row to acc[t] for
// the T <= TT activation rows; sr is the row's scales (F::S only). TT is a
// compile-time bound (1 for a single row: no per-row tests).
template <class F, int TT>
__device__ __forceinline__ void gv_chunk(uint4 wv, int kc, const float* X, i64 ldx, int T, const float* sr, int bc, float* acc) {
  float w[F::N];
  F::dec(wv, w);
#pragma unroll
  for (int t = 0; t < TT; t++) {
    if (TT == 1 || t < T) {
      float x[F::N];
#pragma unroll
      for (int i = 0; i < F::N; i += 8) ldx8(X + (i64)t * ldx + (i64)kc * F::N + i, x + i);
      if (F::S)
        acc[t] += sr[kc * F::N / bc] * dotn<F::N>(w, x);
      else
        acc[t] += dotn<F::N>(w, x);
    }
  }
}

// gemv_rows: Y[t, n] = sum_k X[t, k] * W[n, k] for t < T <= TT <= GEMV_T;
// sr is the row's scales (F::S only). It runs PDL_ENTER itself: the first
// GV_P chunks of each lane (for K = 2048 BF16, the whole row) are loaded
// before it (gv_load), the weights being read-only, so that they are in
// flight while the previous kernel finishes (a warp past the last row has
// n < 0: it stores nothing).
#define GV_P 8
template <class F, int P = GV_P>
__device__ __forceinline__ void gv_load(const uint4* wr, int K, uint4* wp) {
  int lane = threadIdx.x & 31, KC = K / F::N;
#pragma unroll
  for (int u = 0; u < P; u++) wp[u] = lane + 32 * u < KC ? ldw(wr + lane + 32 * u) : make_uint4(0, 0, 0, 0);
}
// gv_dot adds the lane's part of row wr times the T activation rows to acc:
// the chunks in wp (gv_load), then the rest of the row.
template <class F, int TT>
__device__ __forceinline__ void gv_dot(const uint4* wp, const float* X, i64 ldx, int T, const uint4* wr, const float* sr, int bc, int K, float* acc) {
  int lane = threadIdx.x & 31, KC = K / F::N;
#pragma unroll
  for (int u = 0; u < GV_P; u++)
    if (lane + 32 * u < KC) gv_chunk<F, TT>(wp[u], lane + 32 * u, X, ldx, T, sr, bc, acc);
  for (int k0 = lane + 32 * GV_P; k0 < KC; k0 += 32 * GV_U) {
    uint4 wv[GV_U];
#pragma unroll
    for (int u = 0; u < GV_U; u++) wv[u] = k0 + 32 * u < KC ? ldw(wr + k0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < GV_U; u++)
      if (k0 + 32 * u < KC) gv_chunk<F, TT>(wv[u], k0 + 32 * u, X, ldx, T, sr, bc, acc);
  }
}
// gv_rows_chunk adds chunk kc (w[j]) of each of R rows in format F times
// the F::N values of x there to acc[j], loading them once; with block
// scales (F::S) each row's product is scaled by sr[j][kc·F::N/bc], as
// gv_chunk scales it.
template <int R, class F = GvBF16>
__device__ __forceinline__ void gv_rows_chunk(const uint4 (&w)[R], const float* x, float (&acc)[R], const float* const* sr = nullptr, int kc = 0,
                                              int bc = 1) {
  float xv[F::N], wf[F::N];
#pragma unroll
  for (int i = 0; i < F::N; i += 8) ldx8(x + i, xv + i);
#pragma unroll
  for (int j = 0; j < R; j++) {
    F::dec(w[j], wf);
    if (F::S)
      acc[j] += sr[j][kc * F::N / bc] * dotn<F::N>(wf, xv);
    else
      acc[j] += dotn<F::N>(wf, xv);
  }
}
// gv_dot_rows adds R rows wr[j] in format F (their first P chunks in
// wp[j], from gv_load; sr[j] their block scales when F::S) times one
// activation row x to acc[j], each summed as gv_dot sums it, loading each
// chunk of x once for all R rows; the rest of the rows in rounds of U
// chunks per row and lane (the same sums for any U).
template <int R, int P = GV_P, class F = GvBF16, int U = GV_U>
__device__ __forceinline__ void gv_dot_rows(const uint4 (&wp)[R][P], const uint4* const (&wr)[R], const float* x, int K, float (&acc)[R],
                                            const float* const* sr = nullptr, int bc = 1) {
  int lane = threadIdx.x & 31, KC = K / F::N;
#pragma unroll
  for (int u = 0; u < P; u++) {
    int kc = lane + 32 * u;
    if (kc < KC) {
      uint4 w[R];
#pragma unroll
      for (int j = 0; j < R; j++) w[j] = wp[j][u];
      gv_rows_chunk<R, F>(w, x + kc * F::N, acc, sr, kc, bc);
    }
  }
  for (int k0 = lane + 32 * P; k0 < KC; k0 += 32 * U) {
    uint4 wv[U][R];
#pragma unroll
    for (int j = 0; j < R; j++)
#pragma unroll
      for (int u = 0; u < U; u++) wv[u][j] = k0 + 32 * u < KC ? ldw(wr[j] + k0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < U; u++) {
      int kc = k0 + 32 * u;
      if (kc >= KC) break;
      gv_rows_chunk<R, F>(wv[u], x + kc * F::N, acc, sr, kc, bc);
    }
  }
}
// gv_load_rows points wr[j] at row min(n0 + j, N - 1) of Wt (rows of K
// values in format F) for R rows and loads each one's first P chunks into
// wp[j] (gv_load).
template <int R, int P = GV_P, class F = GvBF16>
__device__ __forceinline__ void gv_load_rows(const void* __restrict__ Wt, int n0, int N, int K, const uint4* (&wr)[R], uint4 (&wp)[R][P]) {
#pragma unroll
  for (int j = 0; j < R; j++) {
    wr[j] = (const uint4*)Wt + (i64)min(n0 + j, N - 1) * (K / F::N);
    gv_load<F, P>(wr[j], K, wp[j]);
  }
}
// gv_row_scales points sr[j] at the block scales of row min(n0 + j, N - 1)
// (one row of sc scales per br rows) for block-scaled formats (F::S), else
// null.
template <int R, class F>
__device__ __forceinline__ void gv_row_scales(const float* (&sr)[R], const float* S, int n0, int N, int br, int sc) {
#pragma unroll
  for (int j = 0; j < R; j++) sr[j] = F::S ? S + (i64)(min(n0 + j, N - 1) / br) * sc : nullptr;
}
// gv_store_rows sums each of R rows' lane partials over the warp and lane 0
// stores those below N at Y[n0 + j].
template <int R>
__device__ __forceinline__ void gv_store_rows(float (&acc)[R], float* Y, int n0, int N) {
  int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < R; j++) {
    float v = warp_sum(acc[j]);
    if (lane == 0 && n0 + j < N) Y[n0 + j] = v;
  }
}
template <class F, int TT>
__device__ __forceinline__ void gemv_rows(const float* X, i64 ldx, int T, const uint4* wr, const float* sr, int bc, int K, float* Y, i64 ldy, int n) {
  int lane = threadIdx.x & 31;
  uint4 wp[GV_P];
  gv_load<F>(wr, K, wp);
  PDL_ENTER();
  float acc[TT];
#pragma unroll
  for (int t = 0; t < TT; t++) acc[t] = 0.f;
  gv_dot<F, TT>(wp, X, ldx, T, wr, sr, bc, K, acc);
#pragma unroll
  for (int t = 0; t < TT; t++) {
    if (TT == 1 || t < T) {
      float v = warp_sum(acc[t]);
      if (lane == 0 && n >= 0) Y[(i64)t * ldy + n] = v;
    }
  }
}
// The vector GEMVs: a block of GEMV_WARPS warps, one per output row (warps
// past N load row N-1 and store nothing); the ...1 kernels take one
// activation row.
__device__ __forceinline__ int gv_row() { return blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5); }
template <int TT>
__device__ __forceinline__ void gemv_bf16v_impl(const float* X, i64 ldx, int T, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy) {
  int n = gv_row();
  gemv_rows<GvBF16, TT>(X, ldx, T, (const uint4*)(Wt + (i64)min(n, N - 1) * K), 0, 1, K, Y, ldy, n < N ? n : -1);
}
template <int TT>
__device__ __forceinline__ void gemv_fp8_impl(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br,
                                              int bc, float* Y, i64 ldy) {
  int n = gv_row();
  gemv_rows<GvFP8, TT>(X, ldx, T, (const uint4*)(Wt + (i64)min(n, N - 1) * K), S + (i64)(min(n, N - 1) / br) * sc, bc, K, Y, ldy, n < N ? n : -1);
}
extern "C" __global__ void gemv_bf16v(const float* X, i64 ldx, int T, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy) {
  gemv_bf16v_impl<GEMV_T>(X, ldx, T, Wt, N, K, Y, ldy);
}
extern "C" __global__ void gemv_bf16v1(const float* X, i64 ldx, int T, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy) {
  unsigned long long tst = tl_now();
  gemv_bf16v_impl<1>(X, ldx, T, Wt, N, K, Y, ldy);
  tl_started(tst);  // after the wait inside; the next kernel cannot mark before this block ends
  tl_end();
}
// gemv_bf16v2: gemv_bf16v1 (one activation row) with two rows per warp,
// 2·GEMV_WARPS per block, both rows' first chunks loaded before PDL_ENTER
// and each chunk of x loaded once for both (half the activation reads);
// the same sums as gemv_bf16v1.
extern "C" __global__ void gemv_bf16v2(const float* X, i64 ldx, int T, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy) {
  int n0 = 2 * gv_row();
  const uint4* wr[2];
  uint4 wp[2][GV_P];
  gv_load_rows<2>(Wt, n0, N, K, wr, wp);
  PDL_ENTER();
  float acc[2] = {0.f, 0.f};
  gv_dot_rows<2>(wp, wr, X, K, acc);
  gv_store_rows<2>(acc, Y, n0, N);
}
// gemv_bf16v1n / v2n: gemv_bf16v1 / v2 of h = RMSNorm(x + a)·w for one row,
// the norm done by every block itself after PDL_ENTER (k_addrmsnorm's
// addnorm_row with nt threads, so the same h bit for bit) into shared
// memory, instead of a k_addrmsnorm kernel before: block 0 also stores y =
// x + a and h. y must not be x: other blocks may still read x (Backend.
// AddRMSNormTo, fused by matmul). With a and y null, h = RMSNorm(x)·w,
// as k_rmsnorm computes it with nt threads (Backend.RMSNorm into another
// tensor). K <= GVN_MAXK, nt <= blockDim.x, K <= NU·nt.
#define GVN_MAXK 4096
__device__ __forceinline__ void gv_norm(float* hs, const float* x, const float* a, const float* wv, float* y, float* h, int K, int nt, float eps) {
  __shared__ double sh[32];
  bool b0 = blockIdx.x == 0;
  // vo receives x + a first, then (dr) h overwrites it: for blocks past the
  // first both are hs (a and y are null for h = RMSNorm(x)·w)
  addnorm_row(hs, b0 && y ? y : hs, x, a, wv, K, nt, eps, sh);
  __syncthreads();
  if (b0)
    for (int i = threadIdx.x; i < K; i += blockDim.x) h[i] = hs[i];
}
extern "C" __global__ void gemv_bf16v1n(const float* X, const float* A, const float* nw, float* Yres, float* H, int nt, float eps, const u16* __restrict__ Wt,
                                        int N, int K, float* Y) {
  __shared__ __align__(16) float hs[GVN_MAXK];
  int n = gv_row(), lane = threadIdx.x & 31;
  const uint4* wr = (const uint4*)(Wt + (i64)min(n, N - 1) * K);
  uint4 wp[GV_P];
  gv_load<GvBF16>(wr, K, wp);
  float wv[NU];
  addnorm_w(nw, K, nt, wv);
  PDL_ENTER();
  gv_norm(hs, X, A, wv, Yres, H, K, nt, eps);
  float acc[1] = {0.f};
  gv_dot<GvBF16, 1>(wp, hs, 0, 1, wr, 0, 1, K, acc);
  float v = warp_sum(acc[0]);
  if (lane == 0 && n < N) Y[n] = v;
}
extern "C" __global__ void gemv_bf16v2n(const float* X, const float* A, const float* nw, float* Yres, float* H, int nt, float eps, const u16* __restrict__ Wt,
                                        int N, int K, float* Y) {
  __shared__ __align__(16) float hs[GVN_MAXK];
  int n0 = 2 * gv_row();
  const uint4* wr[2];
  uint4 wp[2][GV_P];
  gv_load_rows<2>(Wt, n0, N, K, wr, wp);
  float wv[NU];
  addnorm_w(nw, K, nt, wv);
  PDL_ENTER();
  gv_norm(hs, X, A, wv, Yres, H, K, nt, eps);
  float acc[2] = {0.f, 0.f};
  gv_dot_rows<2>(wp, wr, hs, K, acc);
  gv_store_rows<2>(acc, Y, n0, N);
}
// gemv_bf16v4n: gemv_bf16v2n with four rows per warp, 4·GEMV_WARPS per
// block, and only the first GV_P/2 chunks of each row loaded before
// PDL_ENTER (RINGO_CUDA_GEMV4N): for Ring-mini's qkv|gate (8,192 rows) 256
// blocks, all resident at once at two per SM, where gemv_bf16v2n's 512 need
// two waves (124 registers per thread); the rest of each row follows the
// wait in one round. The same sums as gemv_bf16v1n.
extern "C" __global__ void __launch_bounds__(256, 2) gemv_bf16v4n(const float* X, const float* A, const float* nw, float* Yres, float* H, int nt, float eps,
                                                                 const u16* __restrict__ Wt, int N, int K, float* Y) {
  __shared__ __align__(16) float hs[GVN_MAXK];
  constexpr int P = GV_P / 2;
  unsigned long long tst = tl_now();
  int n0 = 4 * gv_row();
  const uint4* wr[4];
  uint4 wp[4][P];
  gv_load_rows<4, P>(Wt, n0, N, K, wr, wp);
  float wv[NU];
  addnorm_w(nw, K, nt, wv);
  PDL_ENTER();
  tl_started(tst);
  unsigned long long t0 = tl_now();
  gv_norm(hs, X, A, wv, Yres, H, K, nt, eps);
  tl_probe(25, t0);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  gv_dot_rows<4, P>(wp, wr, hs, K, acc);
  tl_probe(26, t0);
  gv_store_rows<4>(acc, Y, n0, N);
  tl_end();
}
extern "C" __global__ void gemv_fp8(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br, int bc,
                                    float* Y, i64 ldy) {
  gemv_fp8_impl<GEMV_T>(X, ldx, T, Wt, N, K, S, sc, br, bc, Y, ldy);
}
extern "C" __global__ void gemv_fp81(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br, int bc,
                                     float* Y, i64 ldy) {
  gemv_fp8_impl<1>(X, ldx, T, Wt, N, K, S, sc, br, bc, Y, ldy);
}
// gemv_fp8_rows: gemv_fp81 (one activation row) with R rows per warp,
// R·GEMV_WARPS per block, the first P chunks of each row loaded before
// PDL_ENTER and each chunk of x loaded once for the R rows: the same sums
// as gemv_fp81. gemv_fp8v2 takes whole rows of K <= 4096 before the wait,
// gemv_fp8v4 half of them (as gemv_bf16v4n, 64 weight registers).
// PR >= 0: probes PR (start to the wait) and PR + 1 (the wait to the
// outputs stored) of every block (tl_span).
template <int R, int P, int U = GV_U, int PR = -1>
__device__ __forceinline__ void gemv_fp8_rows(const float* X, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br, int bc,
                                              float* Y) {
  unsigned long long tst = tl_now();
  int n0 = R * gv_row();
  const uint4* wr[R];
  uint4 wp[R][P];
  const float* sr[R];
  gv_load_rows<R, P, GvFP8>(Wt, n0, N, K, wr, wp);
  gv_row_scales<R, GvFP8>(sr, S, n0, N, br, sc);
  PDL_ENTER();
  unsigned long long tw = tl_now();
  if (PR >= 0) tl_span(PR, tst);
  float acc[R];
#pragma unroll
  for (int j = 0; j < R; j++) acc[j] = 0.f;
  gv_dot_rows<R, P, GvFP8, U>(wp, wr, X, K, acc, sr, bc);
  gv_store_rows<R>(acc, Y, n0, N);
  if (PR >= 0) tl_span(PR + 1, tw);
}
// gemv_fp8v8: eight rows per warp, two chunks of each before the wait and
// rounds of two after (64 weight registers either way): Ring-flash's
// 16,384-row qkv|gate in 256 blocks, one wave at two per SM
extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8v8(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K,
                                                               const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gemv_fp8_rows<8, 2, 2>(X, Wt, N, K, S, sc, br, bc, Y);
}
// mbarriers and bulk copies (sm_90): mbar_init sets a barrier's expected
// arrivals; mbar_expect arrives and adds bytes to its transaction count;
// bulk_g2s copies bytes (a multiple of 16, both addresses 16-byte aligned)
// from global to shared memory, completing that many bytes of the barrier's
// count; mbar_wait spins until the phase of the given parity completes.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(u32 bar, u32 count) { asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory"); }
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
  u32 ok;
  do {
    asm volatile("{\n\t.reg .pred p;\n\tmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\tselp.u32 %0, 1, 0, p;\n\t}"
                 : "=r"(ok)
                 : "r"(bar), "r"(parity)
                 : "memory");
  } while (!ok);
}
__device__ __forceinline__ void bulk_g2s(u32 dst, const void* src, u32 bytes, u32 bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst), "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// warp_ring is one warp's ring of S stages in shared memory, each holding
// R rows of up to 32·C chunks (16 bytes) and filled by bulk copies that
// complete on the stage's mbarrier: ask(k, rows, from, n) asks for chunks
// [from, from + n) of each row rows(j) into stage k % S (the k-th fill);
// take(k, v) waits for the k-th fill and gives the lane its chunks lane +
// 32·c of each row, after which the stage may be asked for again (release
// orders those reads before the next fill's writes). bars: S mbarriers of
// this warp; sm: its S·R·C·32 chunks.
template <int R, int C, int S>
struct warp_ring {
  u32 bar0, sm0;
  const uint4* sm;
  __device__ __forceinline__ warp_ring(unsigned long long* bars, uint4* smem) : bar0(smem_addr(bars)), sm0(smem_addr(smem)), sm(smem) {
    if ((threadIdx.x & 31) == 0) {
      for (int i = 0; i < S; i++) mbar_init(bar0 + 8 * i, 1);
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncwarp();
  }
  template <class Rows>
  __device__ __forceinline__ void ask(int k, Rows rows, int from, int n) {
    int lane = threadIdx.x & 31, b = k % S;
    if (lane == 0) mbar_expect(bar0 + 8 * b, (u32)(R * n * 16));
    __syncwarp();
    if (lane < R) bulk_g2s(sm0 + (u32)((b * R + lane) * C * 512), rows(lane) + from, (u32)(n * 16), bar0 + 8 * b);
  }
  __device__ __forceinline__ void take(int k, uint4 (&v)[C][R]) {
    int lane = threadIdx.x & 31, b = k % S;
    mbar_wait(bar0 + 8 * b, (u32)(k / S) & 1);
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
      for (int j = 0; j < R; j++) v[c][j] = sm[(b * R + j) * C * 32 + lane + 32 * c];
    __syncwarp();  // every lane has its chunks of the stage
  }
  // release: before asking for a stage just taken
  __device__ __forceinline__ void release() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
};
// ring_dot adds the NR rounds of R rows streamed through ring (one round of
// 32 chunks per stage; ask(u) asks for round u, the first S already asked
// for) times x to acc[j], each row's chunks in order as gv_dot_rows sums
// them, asking for round u + S as soon as round u is taken, or with LATE
// once round u is summed: the issue of a bulk copy waits while the copy
// queue is full, which with the stream at full rate held back the sums of a
// round already in (the same sums either way).
template <int R, int S, class F, bool LATE = false, class Ask>
__device__ __forceinline__ void ring_dot(warp_ring<R, 1, S>& ring, Ask ask, int NR, int KC, const float* x, float (&acc)[R], const float* const* sr,
                                         int bc) {
  int lane = threadIdx.x & 31;
  for (int u = 0; u < NR; u++) {
    int kc = 32 * u + lane;
    uint4 v[1][R];
    ring.take(u, v);
    if (!LATE && u + S < NR) {
      ring.release();
      ask(u + S);
    }
    if (kc < KC) gv_rows_chunk<R, F>(v[0], x + kc * F::N, acc, sr, kc, bc);
    if (LATE && u + S < NR) {
      ring.release();
      ask(u + S);
    }
  }
}
#endif
// gv_stream: the one-row GEMVs' sums (R rows per warp in format F, each
// lane's chunks in order, gv_rows_chunk: the same as gemv_fp81's and
// gemv_bf16v1's) with the weights streamed into shared memory by bulk copies
// instead of loaded into registers: each of a block's W warps keeps S rounds
// of its R rows (32 chunks of each: R·512 bytes) in flight in a ring of
// stages with an mbarrier each, asks for its first S before the PDL wait
// (the weights are read-only), and refills a stage as soon as its lanes have
// read it. So a block keeps W·S·R·512 bytes in flight (96 KB for gemv_fp8t8)
// where gemv_fp8v8 keeps 64 KB in registers: Ring-flash's qkv|gate 16.9 µs
// against gemv_fp8v8's 18.2 (a producer warp feeding all W, the first
// version, took 21.7). xf runs after the ring's first copies are asked for:
// it passes the PDL wait (and may normalise the input first) and returns x.
template <class F, int R, int W, int S, int PR = 8, bool LATE = false, class XF>
__device__ __forceinline__ void gv_stream(const unsigned char* __restrict__ Wt, int N, int K, const float* Sc, int sc, int br, int bc, float* Y, XF xf) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint4 wsm[];  // [W][S][R][32] chunks
  __shared__ __align__(8) unsigned long long bars[W * S];
  unsigned long long tst = tl_now();
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, KC = K / F::N, NR = (KC + 31) / 32;
  int n0 = (blockIdx.x * W + w) * R;
  warp_ring<R, 1, S> ring(bars + w * S, wsm + w * S * R * 32);
  auto rows = [&](int j) { return (const uint4*)Wt + (i64)min(n0 + j, N - 1) * KC; };
  auto ask = [&](int u) { ring.ask(u, rows, 32 * u, min(32, KC - 32 * u)); };  // round u of the rows
  for (int u = 0; u < S && u < NR; u++) ask(u);
  tl_probe(27, tst);
  const float* sr[R];
  gv_row_scales<R, F>(sr, Sc, n0, N, br, sc);
  const float* x = xf();
  tl_started(tst);
  unsigned long long tw = tl_now();
  if (PR >= 0) tl_span(PR, tst);
  tl_probe(28, tst);
  float acc[R];
#pragma unroll
  for (int j = 0; j < R; j++) acc[j] = 0.f;
  ring_dot<R, S, F, LATE>(ring, ask, NR, KC, x, acc, sr, bc);
  gv_store_rows<R>(acc, Y, n0, N);
  if (PR >= 0) tl_span(PR + 1, tw);
  tl_end();
#endif
}
// gemv_fp8t8: gemv_fp8t with 8 rows per warp, 8 warps and 3 stages (96 KB
// of shared memory: two blocks per SM), for the products gemv_fp8v8 would
// take (RINGO_CUDA_FP8_TMA=0 runs gemv_fp8v8), each round's refill asked
// for once the round is summed (ring_dot's LATE): Ring-flash's qkv|gate
// 16.4 µs against 16.9, −0.5 to −0.6 % per eight-layer decode step (thirty-fifth
// session). gemv_fp8t8e asks as soon as the round is taken, as before
// (RINGO_CUDA_T8_LATE=0). The same sums.
#define FP8T_R 8
#define FP8T_W 8
#define FP8T_S 3
extern "C" __global__ void __launch_bounds__(32 * FP8T_W, 2) gemv_fp8t8(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N,
                                                                              int K, const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gv_stream<GvFP8, FP8T_R, FP8T_W, FP8T_S, 8, true>(Wt, N, K, S, sc, br, bc, Y, [&] {
    PDL_ENTER();
    return X;
  });
}
extern "C" __global__ void __launch_bounds__(32 * FP8T_W, 2) gemv_fp8t8e(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N,
                                                                               int K, const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gv_stream<GvFP8, FP8T_R, FP8T_W, FP8T_S>(Wt, N, K, S, sc, br, bc, Y, [&] {
    PDL_ENTER();
    return X;
  });
}
// gemv_fp8t9: gemv_fp8t8 with 9 warps per block (108 KB: still two per SM),
// for products whose gemv_fp8t8 grid would run as two waves: the first
// dense layer's 18,432-row gate|up of Ring-flash in 256 blocks instead of
// 288 (thirtieth session; the same sums; RINGO_CUDA_FP8_T9=0 keeps
// gemv_fp8t8).
extern "C" __global__ void __launch_bounds__(32 * (FP8T_W + 1), 2) gemv_fp8t9(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt,
                                                                                    int N, int K, const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gv_stream<GvFP8, FP8T_R, FP8T_W + 1, FP8T_S>(Wt, N, K, S, sc, br, bc, Y, [&] {
    PDL_ENTER();
    return X;
  });
}
// gemv_bf16t4n: gemv_bf16v4n (the input norm in every block, four rows per
// warp, the same sums) with its rows streamed into shared memory by bulk
// copies (gv_stream): each warp keeps BF16T_S of the 8 rounds of its rows
// in flight, asked for before the wait, where gemv_bf16v4n loads half of
// each row before the wait and the rest after it in one round. 64 KB of
// stages and the norm's 16 KB: two blocks per SM. The default for the
// products gemv_bf16v4n would take (Ring-mini's qkv|gate): −1.5 to −1.7 %
// per decode step (9.98 µs per launch against 11.3); six stages were +0.3
// to +0.4 % (RINGO_CUDA_BF16_TMA=0 runs gemv_bf16v4n).
#define BF16T_S 4
extern "C" __global__ void __launch_bounds__(256, 2) gemv_bf16t4n(const float* X, const float* A, const float* nw, float* Yres, float* H, int nt, float eps,
                                                                 const u16* __restrict__ Wt, int N, int K, float* Y) {
  __shared__ __align__(16) float hs[GVN_MAXK];
  gv_stream<GvBF16, 4, 8, BF16T_S>((const unsigned char*)Wt, N, K, nullptr, 0, 1, 1, Y, [&] {
    float wv[NU];
    addnorm_w(nw, K, nt, wv);
    PDL_ENTER();
    gv_norm(hs, X, A, wv, Yres, H, K, nt, eps);
    return (const float*)hs;
  });
}
extern "C" __global__ void gemv_fp8v2(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br,
                                      int bc, float* Y, i64 ldy) {
  gemv_fp8_rows<2, GV_P>(X, Wt, N, K, S, sc, br, bc, Y);
}
// gemv_fp8v2r: gemv_fp8v2 (the same sums and outputs) that also leaves the
// router's partial logits of its 16 rows for k_route_p: with h = x + y its
// rows of the residual after this product (as k_norm_route adds them) and
// hw = h·w (w the next norm's weight), P[block·E + e] = Σ_i R[e][n0 + i]·hw_i
// over its rows i in order, by thread e < E (R: the router, BF16 [E][N]).
// So k_route_p needs no router GEMV of its own, the step's one latency
// chain that reads 2 MB on 8 SMs: its rows ride on this product's 256
// blocks, asked for before the wait. N % 16 == 0, E <= 256 (the default
// on sm_90; RINGO_CUDA_ROUTE_PARTIALS=0 turns it off).
// route_partials is gemv_fp8v2r's router part around its product prod (the
// block's 16 rows from n0): the router's columns and the norm weights
// before it (the weights are read-only), the partials of its outputs
// after it.
template <class Prod>
__device__ __forceinline__ void route_partials(int N, float* Y, const float* xres, const float* nw, const u16* __restrict__ R, int E, float* P, Prod prod) {
  __shared__ float hw[16];
  unsigned long long tst = tl_now();
  int n0 = blockIdx.x * 16, tid = threadIdx.x;
  uint4 r0 = make_uint4(0, 0, 0, 0), r1 = r0;
  float wn = 0.f;
  if (tid < E) {
    const uint4* rp = (const uint4*)(R + (i64)tid * N + n0);
    r0 = rp[0];
    r1 = rp[1];
  }
  if (tid < 16) wn = nw[n0 + tid];
  prod();
  __syncthreads();  // the block's outputs (its lanes 0 stored them) are visible to it
  if (tid < 16) hw[tid] = (xres[n0 + tid] + Y[n0 + tid]) * wn;
  __syncthreads();
  if (tid < E) {
    u32 rw[8] = {r0.x, r0.y, r0.z, r0.w, r1.x, r1.y, r1.z, r1.w};
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++) acc += bf16f((u16)(rw[i / 2] >> (16 * (i & 1)))) * hw[i];
    P[(i64)blockIdx.x * E + tid] = acc;
  }
  tl_span(29, tst);
  tl_end();
}
extern "C" __global__ void gemv_fp8v2r(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br,
                                       int bc, float* Y, i64 ldy, const float* xres, const float* nw, const u16* __restrict__ R, int E, float* P) {
  route_partials(N, Y, xres, nw, R, E, P, [&] { gemv_fp8_rows<2, GV_P, GV_U, 25>(X, Wt, N, K, S, sc, br, bc, Y); });
}
// gemv_fp8v3: three whole rows per warp (24 per block), for products whose
// gemv_fp8v2 grid (16 rows per block, two blocks per SM) would run as two
// waves: Ring-flash's 5,120-row softmax qkv in 214 blocks instead of 320
// (thirtieth session; the same sums; RINGO_CUDA_FP8_V3=0 keeps gemv_fp8v2).
extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8v3(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K,
                                                               const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gemv_fp8_rows<3, GV_P>(X, Wt, N, K, S, sc, br, bc, Y);
}
extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8v4(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K,
                                                               const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
  gemv_fp8_rows<4, GV_P / 2>(X, Wt, N, K, S, sc, br, bc, Y);
}

// k_quant_fp8 quantizes X (T rows of K FP32 values, row stride ldx; K and
// ldx multiples of 4, X 16-byte aligned) to E4M3 per 128 values of a row,
// for the block-scaled FP8 GEMMs of prefill: Q [TP][K] bytes, and the scales
// s = amax/448 (1 for a block of zeros; value = e4m3 · s) at S[kb·TP + t]
// (mn == 1: cuBLASLt's VEC128_32F layout, measured on the H200) or
// S[t·KB + kb] (mn == 0), KB = ceil(K/128); rows T..TP-1 (TP >= T) are
// zeros, padding for GEMMs that take multiples of 16 rows only. One warp
// per block.
extern "C" __global__ void k_quant_fp8(unsigned char* Q, float* S, const float* X, i64 ldx, int T, int TP, int K, int mn) { PDL_ENTER();
  int KB = (K + 127) / 128;
  i64 w = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  int lane = threadIdx.x & 31;
  if (w >= (i64)TP * KB) return;  // whole warps
  i64 t = w / KB;
  int kb = (int)(w % KB), k = kb * 128 + lane * 4;
  float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
  if (k < K && t < T) v = *(const float4*)(X + t * ldx + k);
  float a = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int o = 16; o; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  float sc = a > 0.f ? a / 448.f : 1.f;
  if (k < K) {
    u32 q;
    asm("{.reg .b16 lo, hi;\n cvt.rn.satfinite.e4m3x2.f32 lo, %2, %1;\n cvt.rn.satfinite.e4m3x2.f32 hi, %4, %3;\n mov.b32 %0, {lo, hi};}"
        : "=r"(q) : "f"(v.x / sc), "f"(v.y / sc), "f"(v.z / sc), "f"(v.w / sc));
    *(u32*)(Q + t * K + k) = q;
  }
  if (lane == 0) S[mn ? (i64)kb * TP + t : t * KB + kb] = sc;
}

// k_bf16_f32 widens a contiguous rows×cols BF16 matrix into d (row stride
// ldd): the output of a block-scaled FP8 GEMM where cuBLASLt writes BF16.
extern "C" __global__ void k_bf16_f32(float* d, i64 ldd, const u16* x, int rows, int cols) { PDL_ENTER();
  GRID_LOOP((i64)rows * cols) {
    i64 r = idx / cols, c = idx % cols;
    d[r * ldd + c] = bf16f(x[idx]);
  }
}

// k_fp8_bf16 widens an [N, K] E4M3 weight with block scales to BF16 (for
// the cuBLASLt GEMMs of prefill).
extern "C" __global__ void k_fp8_bf16(u16* d, const unsigned char* W, int N, int K, const float* S, int sc, int br, int bc) { PDL_ENTER();
  GRID_LOOP((i64)N * K) {
    i64 n = idx / K, k = idx % K;
    d[idx] = f2bf16(fp8f(W[idx]) * S[(n / br) * sc + k / bc]);
  }
}

// ---------------------------------------------------------------------------
// Tiled SGEMM with typed weights: Y[ybase + r, n] = sum_k X[xrow(r), k] * W[n, k]
// for r < M, n in [n0, n0 + 64). xrow(r) = map ? map[xbase + r] / div : xbase + r.
// 256 threads; each computes BM/16 x 4 outputs. FP32 FMA in k order.

#define TBN 64
#define TBK 16

template <class W, int BM>
__device__ __forceinline__ void gemm_tile(const float* X, i64 ldx, const int* map, int div, int xbase, int M,
                                          const typename W::T* Wt, int N, int K, float* Y, i64 ldy, int ybase, int n0) {
  __shared__ float As[TBK][BM + 4];
  __shared__ float Bs[TBK][TBN + 4];
  const int tid = threadIdx.x;
  const int tx = tid & 15, ty = tid >> 4;
  constexpr int RM = BM / 16;
  constexpr int AL = BM * TBK / 256;  // A elements loaded per thread
  float acc[RM][4];
#pragma unroll
  for (int i = 0; i < RM; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  const float* xp[AL];
  int ar[AL], ac[AL];
#pragma unroll
  for (int i = 0; i < AL; i++) {
    int e = tid + 256 * i;
    ar[i] = e / TBK;
    ac[i] = e % TBK;
    xp[i] = 0;
    if (ar[i] < M) {
      i64 row = map ? (i64)(map[xbase + ar[i]] / div) : (i64)(xbase + ar[i]);
      xp[i] = X + row * ldx;
    }
  }
  for (int k0 = 0; k0 < K; k0 += TBK) {
#pragma unroll
    for (int i = 0; i < AL; i++) {
      int k = k0 + ac[i];
      As[ac[i]][ar[i]] = (xp[i] && k < K) ? xp[i][k] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int e = tid + 256 * i;
      int r = e / TBK, c = e % TBK;
      int n = n0 + r, k = k0 + c;
      Bs[c][r] = (n < N && k < K) ? W::ld(Wt, (i64)n * K + k) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < TBK; kk++) {
      float a[RM], b[4];
#pragma unroll
      for (int i = 0; i < RM; i++) a[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < RM; i++) {
    int r = ty + 16 * i;
    if (r >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      int n = n0 + tx + 16 * j;
      if (n < N) Y[(i64)(ybase + r) * ldy + n] = acc[i][j];
    }
  }
}

// dense GEMM: grid (ceil(N/64), ceil(T/64))
#define GEMM_DENSE(name, W)                                                                                     \
  extern "C" __global__ void name(const float* X, i64 ldx, int T, const W::T* Wt, int N, int K, float* Y, i64 ldy) { PDL_ENTER(); \
    int m0 = blockIdx.y * 64;                                                                                    \
    gemm_tile<W, 64>(X, ldx, 0, 1, m0, min(64, T - m0), Wt, N, K, Y, ldy, m0, blockIdx.x * TBN);               \
  }
GEMM_DENSE(gemm_f32, WF32)
GEMM_DENSE(gemm_f16, WF16)
GEMM_DENSE(gemm_bf16, WBF16)

// ---------------------------------------------------------------------------
// MoE. Slots are (token, k) pairs, slot = t*K + k. Three kernels group the
// slots by expert: perm[p] = slot at sorted position p, posOf[slot] = p, and
// tiles of at most bm rows of one expert: tiles[3i..3i+2] = (expert, first
// position, rows), experts in order. cnt, off and fill hold E ints each; cnt
// starts at zero. (The order of an expert's slots varies from run to run;
// nothing computed from a slot depends on where it sits in its tile.)

#define MOE_BM 16

// k_moe_count adds the slots of each expert to cnt (E <= 4096: counts per
// block in shared memory first). Any grid.
extern "C" __global__ void k_moe_count(const int* ids, int nslots, int E, int* cnt) { PDL_ENTER();
  __shared__ int shc[4096];
  for (int e = threadIdx.x; e < E; e += blockDim.x) shc[e] = 0;
  __syncthreads();
  GRID_LOOP(nslots) {
    int e = ids[idx];
    if (e >= 0 && e < E) atomicAdd(&shc[e], 1);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x)
    if (shc[e]) atomicAdd(&cnt[e], shc[e]);
}

// k_moe_tiles (one warp) lays out the tiles from the counts: lane l takes
// experts e0..e1-1, after the slots and tiles of the lanes before it (a warp
// prefix sum); off[e] = first sorted position of e, fill[e] = 0.
extern "C" __global__ void k_moe_tiles(const int* cnt, int E, int* off, int* fill, int* tiles, int* ntiles, int bm) { PDL_ENTER();
  int lane = threadIdx.x, per = (E + 31) / 32, e0 = min(E, lane * per), e1 = min(E, e0 + per);
  int sc = 0, st = 0;
  for (int e = e0; e < e1; e++) {
    sc += cnt[e];
    st += (cnt[e] + bm - 1) / bm;
  }
  int ic = sc, it = st;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    int a = __shfl_up_sync(0xffffffffu, ic, d), b = __shfl_up_sync(0xffffffffu, it, d);
    if (lane >= d) ic += a, it += b;
  }
  int o = ic - sc, nt = it - st;
  for (int e = e0; e < e1; e++) {
    int n = cnt[e];
    off[e] = o;
    fill[e] = 0;
    for (int s = 0; s < n; s += bm) {
      tiles[3 * nt] = e;
      tiles[3 * nt + 1] = o + s;
      tiles[3 * nt + 2] = min(bm, n - s);
      nt++;
    }
    o += n;
  }
  if (lane == 31) *ntiles = nt;
}

// k_moe_scatter places every slot at its expert's next sorted position.
extern "C" __global__ void k_moe_scatter(const int* ids, int nslots, int E, const int* off, int* fill, int* perm, int* posOf) { PDL_ENTER();
  GRID_LOOP(nslots) {
    int e = ids[idx];
    if (e >= 0 && e < E) {
      int p = off[e] + atomicAdd(&fill[e], 1);
      perm[p] = (int)idx;
      posOf[idx] = p;
    } else {
      posOf[idx] = -1;
    }
  }
}

// moe_gemm: grid (ceil(N/64), maxTiles). mode 0 (gate/up): X rows are tokens
// perm[p]/topk; mode 1 (down): X rows are sorted positions. Y rows are sorted
// positions. Expert e's weight is Wt + e*N*K.
#define MOE_GEMM(name, W)                                                                                          \
  extern "C" __global__ void name(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,       \
                                  const int* ntiles, const W::T* Wt, int N, int K, float* Y, i64 ldy) { PDL_ENTER();                \
    int ti = blockIdx.y;                                                                                            \
    if (ti >= *ntiles) return;                                                                                      \
    int e = tiles[3 * ti], p0 = tiles[3 * ti + 1], m = tiles[3 * ti + 2];                                           \
    gemm_tile<W, MOE_BM>(X, ldx, mode == 0 ? perm : 0, topk, p0, m, Wt + (i64)e * N * K, N, K, Y, ldy, p0,        \
                         blockIdx.x * TBN);                                                                          \
  }
MOE_GEMM(moe_gemm_f32, WF32)
MOE_GEMM(moe_gemm_f16, WF16)
MOE_GEMM(moe_gemm_bf16, WBF16)

// moe_gemv (few rows): grid (ceil(N/8), slots), one warp per output n of
// slot s = blockIdx.y with expert ids[s]; mode 0: X row s/topk, mode 1: X row s.
// Y row s.
template <class W>
__device__ void moe_gemv_impl(const float* X, i64 ldx, const int* ids, int topk, int mode, const typename W::T* Wt, int N, int K, float* Y, i64 ldy) {
  int s = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int n = blockIdx.x * GEMV_WARPS + warp;
  if (n >= N) return;
  const float* xr = X + (i64)(mode == 0 ? s / topk : s) * ldx;
  const typename W::T* wr = Wt + ((i64)ids[s] * N + n) * K;
  float acc = 0.f;
  for (int k = lane; k < K; k += 32) acc += W::ld(wr, k) * xr[k];
  acc = warp_sum(acc);
  if (lane == 0) Y[(i64)s * ldy + n] = acc;
}
#define MOE_GEMV(name, W)                                                                                              \
  extern "C" __global__ void name(const float* X, i64 ldx, const int* ids, int topk, int mode, const W::T* Wt, int N, int K, \
                                  float* Y, i64 ldy) { PDL_ENTER();                                                                   \
    moe_gemv_impl<W>(X, ldx, ids, topk, mode, Wt, N, K, Y, ldy);                                                         \
  }
MOE_GEMV(moe_gemv_f32, WF32)
MOE_GEMV(moe_gemv_f16, WF16)
MOE_GEMV(moe_gemv_bf16, WBF16)

// Per-slot expert GEMVs (few rows): grid (ceil(N/8), slots), one warp per
// output n of slot s with expert ids[s], chunks as in gemv_rows. gate/up
// (moe_gemv_*): X row s/topk (mode 0) or s (mode 1); down (moe_down_*): the
// SwiGLU is fused into the input, X[s, k] = silu(GU[s, k]) * GU[s, K + k]
// (the expression of k_silumul). FP8 experts' scales are S + e*(N/br)*(K/bc)
// ([N/br][K/bc]; N % br == 0, K % bc == 0).
// Slots s >= ns (grid.y = ns + T) are a shared expert's: weight Ws ([N][K],
// scales Ss laid out like one expert's) instead of expert ids[s], and in
// mode 0 X row s - ns; with only ns slots launched Ws (and Ss) go unused.
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
struct ActRow {  // activations read from a row
  const float* x;
  __device__ __forceinline__ void get(int k, float* o) const { ldx8(x + k, o); }
};
struct ActSwiGLU {  // silu(gate) * up from a [gate | up] row of width 2K
  const float* g;
  int K;
  __device__ __forceinline__ void get(int k, float* o) const {
    float gv[8], uv[8];
    ldx8(g + k, gv);
    ldx8(g + K + k, uv);
#pragma unroll
    for (int i = 0; i < 8; i++) o[i] = silu_mul(gv[i], uv[i]);
  }
};
template <class F, class A>
__device__ __forceinline__ void moe_row(const A& a, const uint4* wr, const float* sr, int bc, int K, float* y) {
  int lane = threadIdx.x & 31;
  float acc = 0.f;
  int KC = K / F::N;
  for (int k0 = lane; k0 < KC; k0 += 32 * GV_U) {
    uint4 wv[GV_U];
#pragma unroll
    for (int u = 0; u < GV_U; u++) wv[u] = k0 + 32 * u < KC ? ldw(wr + k0 + 32 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < GV_U; u++) {
      int kc = k0 + 32 * u;
      if (kc >= KC) break;
      float w[F::N], x[F::N];
      F::dec(wv[u], w);
#pragma unroll
      for (int i = 0; i < F::N; i += 8) a.get(kc * F::N + i, x + i);
      acc += (sr ? sr[kc * F::N / bc] : 1.f) * dotn<F::N>(w, x);
    }
  }
  acc = warp_sum(acc);
  if (lane == 0) *y = acc;
}
// moe_wrow returns expert ids[s]'s row n (stacked [E][N][K]) and its scales.
template <class T>
__device__ __forceinline__ const uint4* moe_wrow(const T* Wt, i64 e, int N, int K, int n) { return (const uint4*)(Wt + (e * N + n) * K); }
__device__ __forceinline__ const float* moe_srow(const float* S, i64 e, int N, int K, int br, int bc, int n) {
  return S + e * (N / br) * (K / bc) + (i64)(n / br) * (K / bc);
}
__device__ __forceinline__ i64 moe_xrow(int s, int ns, int topk, int mode) { return mode != 0 ? s : s < ns ? s / topk : s - ns; }
extern "C" __global__ void moe_gemv_bf16v(const float* X, i64 ldx, const int* ids, int topk, int mode, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy,
                                          const u16* __restrict__ Ws, int ns) { PDL_ENTER();
  int s = blockIdx.y, n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  ActRow a{X + moe_xrow(s, ns, topk, mode) * ldx};
  moe_row<GvBF16>(a, s < ns ? moe_wrow(Wt, ids[s], N, K, n) : moe_wrow(Ws, 0, N, K, n), 0, 1, K, Y + (i64)s * ldy + n);
}
extern "C" __global__ void moe_gemv_fp8(const float* X, i64 ldx, const int* ids, int topk, int mode, const unsigned char* __restrict__ Wt, int N, int K,
                                        const float* S, int br, int bc, float* Y, i64 ldy, const unsigned char* __restrict__ Ws, const float* Ss, int ns) { PDL_ENTER();
  int s = blockIdx.y, n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  ActRow a{X + moe_xrow(s, ns, topk, mode) * ldx};
  if (s < ns)
    moe_row<GvFP8>(a, moe_wrow(Wt, ids[s], N, K, n), moe_srow(S, ids[s], N, K, br, bc, n), bc, K, Y + (i64)s * ldy + n);
  else
    moe_row<GvFP8>(a, moe_wrow(Ws, 0, N, K, n), moe_srow(Ss, 0, N, K, br, bc, n), bc, K, Y + (i64)s * ldy + n);
}
extern "C" __global__ void moe_down_bf16v(const float* GU, i64 ldgu, const int* ids, const u16* __restrict__ Wt, int N, int K, float* Y, i64 ldy,
                                          const u16* __restrict__ Ws, int ns) { PDL_ENTER();
  int s = blockIdx.y, n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  ActSwiGLU a{GU + (i64)s * ldgu, K};
  moe_row<GvBF16>(a, s < ns ? moe_wrow(Wt, ids[s], N, K, n) : moe_wrow(Ws, 0, N, K, n), 0, 1, K, Y + (i64)s * ldy + n);
}
extern "C" __global__ void moe_down_fp8(const float* GU, i64 ldgu, const int* ids, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int br,
                                        int bc, float* Y, i64 ldy, const unsigned char* __restrict__ Ws, const float* Ss, int ns) { PDL_ENTER();
  int s = blockIdx.y, n = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
  if (n >= N) return;
  ActSwiGLU a{GU + (i64)s * ldgu, K};
  if (s < ns)
    moe_row<GvFP8>(a, moe_wrow(Wt, ids[s], N, K, n), moe_srow(S, ids[s], N, K, br, bc, n), bc, K, Y + (i64)s * ldy + n);
  else
    moe_row<GvFP8>(a, moe_wrow(Ws, 0, N, K, n), moe_srow(Ss, 0, N, K, br, bc, n), bc, K, Y + (i64)s * ldy + n);
}

// gu_chunk adds chunk kc of a gate row (wg) and of an up row (wu) times
// the activations x there to the lane's sums ag and au (scales sg, su for
// FP8): the per-chunk step of gu_pair_ld and gu_pair_pipe.
template <class F>
__device__ __forceinline__ void gu_chunk(uint4 wg, uint4 wu, const float* sg, const float* su, int bc, const float* x, int kc, float& ag, float& au) {
  float w[F::N], xv[F::N];
#pragma unroll
  for (int i = 0; i < F::N; i += 8) ldx8(x + kc * F::N + i, xv + i);
  F::dec(wg, w);
  ag += (F::S && sg ? sg[kc * F::N / bc] : 1.f) * dotn<F::N>(w, xv);
  F::dec(wu, w);
  au += (F::S && su ? su[kc * F::N / bc] : 1.f) * dotn<F::N>(w, xv);
}
// gu_round loads a round: chunks k0, k0 + 32, ... (U of them, zero past
// KC) of the gate row (ld(0, c)) into vg and of the up row (ld(1, c)) into
// vu.
template <int U, class Ld>
__device__ __forceinline__ void gu_round(Ld ld, int k0, int KC, uint4 (&vg)[U], uint4 (&vu)[U]) {
#pragma unroll
  for (int u = 0; u < U; u++) {
    bool in = k0 + 32 * u < KC;
    vg[u] = in ? ld(0, k0 + 32 * u) : make_uint4(0, 0, 0, 0);
    vu[u] = in ? ld(1, k0 + 32 * u) : make_uint4(0, 0, 0, 0);
  }
}
// gu_pair_ld is one warp's product of an expert's gate row and up row (KC
// chunks, chunk c of the gate row read as ld(0, c) and of the up row as
// ld(1, c), scales sg, su for FP8) with the activations x: silu(gate)·up,
// in every lane, in rounds of U chunks per row and lane (the same sums in
// the same order for any U; fewer registers). Every lane calls pre(r)
// right after the loads of each of its rounds r are issued, and pre(-1) at
// its end (moe_gd_bf16v issues its staging copies there, behind them).
// gu_pair is the same for rows wg and wu read with ldw, without pre.
template <class F, int U = GV_U, class Ld, class Pre>
__device__ __forceinline__ float gu_pair_ld(Ld ld, const float* sg, const float* su, int bc, const float* x, int KC, Pre pre) {
  int lane = threadIdx.x & 31, round = 0;
  float ag = 0.f, au = 0.f;
  for (int k0 = lane; k0 < KC; k0 += 32 * U, round++) {
    uint4 vg[U], vu[U];
    gu_round<U>(ld, k0, KC, vg, vu);
    pre(round);
#pragma unroll
    for (int u = 0; u < U; u++) {
      int kc = k0 + 32 * u;
      if (kc >= KC) break;
      gu_chunk<F>(vg[u], vu[u], sg, su, bc, x, kc, ag, au);
    }
  }
  pre(-1);
  ag = warp_sum(ag);
  au = warp_sum(au);
  return silu_mul(ag, au);
}
// gu_pair_pipe is gu_pair_ld (the same sums in the same order) with the
// loads of each round issued chunk by chunk as the round before is used:
// after chunk k0 + 32·u is added in, the slot loads chunk k0 + 32·u +
// 32·U, so that the next round is in flight while this one is summed
// instead of after it. pre(r + 1) is called once round r + 1 is issued.
template <class F, int U = GV_U, class Ld, class Pre>
__device__ __forceinline__ float gu_pair_pipe(Ld ld, const float* sg, const float* su, int bc, const float* x, int KC, Pre pre) {
  int lane = threadIdx.x & 31, round = 0;
  float ag = 0.f, au = 0.f;
  uint4 vg[U], vu[U];
  gu_round<U>(ld, lane, KC, vg, vu);
  pre(0);
  for (int k0 = lane; k0 < KC; k0 += 32 * U) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      int kc = k0 + 32 * u, kn = kc + 32 * U;
      if (kc < KC) gu_chunk<F>(vg[u], vu[u], sg, su, bc, x, kc, ag, au);
      if (kn < KC) {
        vg[u] = ld(0, kn);
        vu[u] = ld(1, kn);
      }
    }
    if (k0 + 32 * U < KC) pre(++round);
  }
  pre(-1);
  ag = warp_sum(ag);
  au = warp_sum(au);
  return silu_mul(ag, au);
}
template <class F>
__device__ __forceinline__ float gu_pair(const uint4* wg, const uint4* wu, const float* sg, const float* su, int bc, const float* x, int KC) {
  return gu_pair_ld<F>([&](int h, int c) { return ldw((h ? wu : wg) + c); }, sg, su, bc, x, KC, [](int) {});
}

// gu_pairs is gu_pair for PR pairs of one expert (gate rows wg[p], up
// rows wu[p], scales sg[p], su[p], set for block-scaled experts) with each
// chunk of x loaded once for all of them (gv_rows_chunk over the 2·PR
// rows): the same sums per pair, a[p] = silu(gate)·up.
template <class F, int PR, int U>
__device__ __forceinline__ void gu_pairs(const uint4* const (&wg)[PR], const uint4* const (&wu)[PR], const float* const (&sg)[PR],
                                         const float* const (&su)[PR], int bc, const float* x, int KC, float (&a)[PR]) {
  int lane = threadIdx.x & 31;
  float acc[2 * PR];  // gate and up of pair p at 2p, 2p + 1
  const float* sr[2 * PR];
#pragma unroll
  for (int p = 0; p < PR; p++) {
    acc[2 * p] = acc[2 * p + 1] = 0.f;
    sr[2 * p] = sg[p], sr[2 * p + 1] = su[p];
  }
  for (int k0 = lane; k0 < KC; k0 += 32 * U) {
    uint4 vg[PR][U], vu[PR][U];
#pragma unroll
    for (int p = 0; p < PR; p++)
#pragma unroll
      for (int u = 0; u < U; u++) {
        bool in = k0 + 32 * u < KC;
        vg[p][u] = in ? ldw(wg[p] + k0 + 32 * u) : make_uint4(0, 0, 0, 0);
        vu[p][u] = in ? ldw(wu[p] + k0 + 32 * u) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
    for (int u = 0; u < U; u++) {
      int kc = k0 + 32 * u;
      if (kc >= KC) break;
      uint4 w[2 * PR];
#pragma unroll
      for (int p = 0; p < PR; p++) w[2 * p] = vg[p][u], w[2 * p + 1] = vu[p][u];
      gv_rows_chunk<2 * PR, F>(w, x + kc * F::N, acc, sr, kc, bc);
    }
  }
#pragma unroll
  for (int p = 0; p < PR; p++) {
    float g = warp_sum(acc[2 * p]), u = warp_sum(acc[2 * p + 1]);
    a[p] = silu_mul(g, u);
  }
}
// Decode MoE in two kernels (few rows; the shared expert, if any, as T
// extra slots as above). moe_gu_*: grid (ceil(I/8), slots), one warp per
// (slot s, k < I) computing both rows k (gate) and I+k (up) of its expert's
// [2I][K] matrix, so that it stores A[s, k] = silu(gate)·up once (the
// expression of k_silumul). moe_dc_*: grid (ceil(N/8), T), one warp per
// output (t, n): the down projections of row t's slots, with every lane
// loading the chunks of all its slots before using them, summed in k order
// with their weights, then + the shared expert's (weight 1): the arithmetic
// of moe_down_* then k_moe_combine (up to FMA contraction), in one kernel.
#define MOE_DC_MAXS 9 /* topk + shared slots one warp sums (topk <= 8) */
//
// With early set (the kernel before this one is the routing, which writes
// neither X nor A), the shared expert's blocks skip PDL_ENTER: their inputs
// (X, written two or more launches back, and the weights) are ready, so
// they run while the routing does. The routed slots need its ids.
// moe_gu's warps compute PR pairs each (k, k+1, ...: gu_pairs, the same
// sums as one pair per warp).
template <class F, int PR = 1, int U = GV_U>
__device__ __forceinline__ void moe_gu(const float* X, i64 ldx, const int* ids, int topk, const uint4* Wt, const float* S, int br, int bc, int I, int K,
                                       float* A, const uint4* Ws, const float* Ss, int ns, int early) {
  int s = blockIdx.y, k = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * PR, lane = threadIdx.x & 31;
  unsigned long long t0 = tl_now();
  if (!early || s < ns) PDL_ENTER();
  tl_probe(6, t0);
  t0 = tl_now();
  if (k >= I) return;
  int KC = K / F::N;
  i64 e = s < ns ? ids[s] : 0;
  const uint4* W = s < ns ? Wt : Ws;
  const float* Sc = s < ns ? S : Ss;
  const uint4 *wg[PR], *wu[PR];
  const float *sg[PR], *su[PR];
#pragma unroll
  for (int p = 0; p < PR; p++) {
    int kp = min(k + p, I - 1);
    wg[p] = W + (e * 2 * I + kp) * KC;
    wu[p] = W + (e * 2 * I + I + kp) * KC;
    sg[p] = su[p] = 0;
    if (Sc) {
      sg[p] = Sc + e * (2 * I / br) * (K / bc) + (i64)(kp / br) * (K / bc);
      su[p] = Sc + e * (2 * I / br) * (K / bc) + (i64)((I + kp) / br) * (K / bc);
    }
  }
  const float* x = X + (s < ns ? s / topk : s - ns) * ldx;
  float a[PR];
  if (PR == 1)
    a[0] = gu_pair<F>(wg[0], wu[0], sg[0], su[0], bc, x, KC);
  else
    gu_pairs<F, PR, U>(wg, wu, sg, su, bc, x, KC, a);
#pragma unroll
  for (int p = 0; p < PR; p++)
    if (lane == 0 && k + p < I) A[(i64)s * I + k + p] = a[p];
  tl_probe(7, t0);
}
// moe_dc_pre asks L2 for the rows that moe_dcs will read (every slot's row n
// of the warp's row group) before PDL_ENTER, with pre set
// (RINGO_CUDA_DC_PRE): the routing that wrote ids ran two or more launches
// back (moe_gu comes between), so the rows are known while moe_gu still
// runs.
template <int SPLIT>
__device__ __forceinline__ void moe_dc_pre(const int* ids, int topk, const char* Wt, int rowBytes, int N, const char* Ws, int ns) {
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, p = w % SPLIT;
  int t = blockIdx.y, n = blockIdx.x * ((blockDim.x >> 5) / SPLIT) + w / SPLIT;
  if (n >= N) return;
  int m = topk + (Ws ? 1 : 0);
  for (int j = p; j < m; j += SPLIT) {
    const char* r = j < topk ? Wt + ((i64)ids[t * topk + j] * N + n) * rowBytes : Ws + (i64)n * rowBytes;
    for (int o = lane * 128; o < rowBytes; o += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(r + o));
  }
}
// dc_rows: for moe_dcs, the addresses of the SL slot rows of warp part p
// (row n of token t; m slots in all), their scales and activations, and the
// lane's first chunk of each row in w0.
template <class F, int SPLIT, int SL>
__device__ __forceinline__ void dc_rows(const int* ids, int topk, const uint4* Wt, const float* S, int br, int bc, int N, int K, const float* A,
                                        const uint4* Ws, const float* Ss, int ns, int m, int p, int t, int n, const uint4* (&wr)[SL],
                                        const float* (&sr)[SL], const float* (&ar)[SL], uint4 (&w0)[SL]) {
  int lane = threadIdx.x & 31, KC = K / F::N;
#pragma unroll
  for (int q = 0; q < SL; q++) {
    int j = p + q * SPLIT;
    if (j >= m) continue;
    int s = j < topk ? t * topk + j : ns + t;
    i64 e = j < topk ? ids[s] : 0;
    const float* Sc = j < topk ? S : Ss;
    wr[q] = (j < topk ? Wt : Ws) + (e * N + n) * KC;
    sr[q] = Sc ? Sc + e * (N / br) * (K / bc) + (i64)(n / br) * (K / bc) : 0;
    ar[q] = A + (i64)s * K;
    if (lane < KC) w0[q] = ldw(wr[q] + lane);
  }
}
// moe_dcs: the down projections of a token's slots and their weighted sum
// (moe_dc), with SPLIT warps per output row, warp p of a row summing the
// slots p, p+SPLIT, ... in order, each lane loading a chunk of every one of
// its slots' rows before using any (at most SL slots: with SPLIT > 1 fewer
// registers per thread and more warps per SM); the row's first warp adds
// the warps' partial sums in p order (shared memory). Blocks of
// (blockDim.x/32)/SPLIT rows, SPLIT·rows <= 32 warps. It runs PDL_ENTER
// itself: with reg set (the ids ready before the wait, as for moe_dc_pre)
// each lane's first chunks of its rows are loaded into registers before it.
template <class F, int SPLIT>
__device__ __forceinline__ void moe_dcs(const float* A, const int* ids, const float* wts, int topk, const uint4* Wt, const float* S, int br, int bc,
                                        int N, int K, float* D, i64 ldd, const uint4* Ws, const float* Ss, int ns, int reg) {
  constexpr int SL = (MOE_DC_MAXS + SPLIT - 1) / SPLIT;
  __shared__ float part[32];
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, p = w % SPLIT;
  int t = blockIdx.y, n = blockIdx.x * ((blockDim.x >> 5) / SPLIT) + w / SPLIT;
  int KC = K / F::N, m = topk + (Ws ? 1 : 0);
  const uint4* wr[SL];
  const float* sr[SL];
  const float* ar[SL];
  uint4 w0[SL];
  unsigned long long t0 = tl_now();
  if (reg && n < N) dc_rows<F, SPLIT, SL>(ids, topk, Wt, S, br, bc, N, K, A, Ws, Ss, ns, m, p, t, n, wr, sr, ar, w0);
  PDL_ENTER();
  if (SPLIT == 2) tl_probe(8, t0);
  t0 = tl_now();
  float out = 0.f;
  if (n < N) {
    if (!reg) dc_rows<F, SPLIT, SL>(ids, topk, Wt, S, br, bc, N, K, A, Ws, Ss, ns, m, p, t, n, wr, sr, ar, w0);
    float acc[SL];
#pragma unroll
    for (int q = 0; q < SL; q++) acc[q] = 0.f;
    for (int kc = lane; kc < KC; kc += 32) {
      uint4 wv[SL];
      if (kc == lane) {  // the first chunks, loaded by dc_rows
#pragma unroll
        for (int q = 0; q < SL; q++) wv[q] = w0[q];
      } else {
#pragma unroll
        for (int q = 0; q < SL; q++)
          if (p + q * SPLIT < m) wv[q] = ldw(wr[q] + kc);
      }
#pragma unroll
      for (int q = 0; q < SL; q++) {
        if (p + q * SPLIT >= m) break;
        float wf[F::N], xv[F::N];
        F::dec(wv[q], wf);
#pragma unroll
        for (int i = 0; i < F::N; i += 8) ldx8(ar[q] + kc * F::N + i, xv + i);
        acc[q] += (F::S && sr[q] ? sr[q][kc * F::N / bc] : 1.f) * dotn<F::N>(wf, xv);
      }
    }
#pragma unroll
    for (int q = 0; q < SL; q++) {
      int j = p + q * SPLIT;
      if (j >= m) break;
      float v = warp_sum(acc[q]);
      out += j < topk ? v * wts[t * topk + j] : v;
    }
  }
  if (lane == 0) part[w] = out;
  __syncthreads();
  if (n < N && p == 0 && lane == 0) {
    float o = part[w];
    for (int q = 1; q < SPLIT; q++) o += part[w + q];
    D[(i64)t * ldd + n] = o;
  }
  if (SPLIT == 2) tl_probe(9, t0);
}
extern "C" __global__ void moe_gu_bf16v(const float* X, i64 ldx, const int* ids, int topk, const u16* __restrict__ Wt, int I, int K, float* A,
                                        const u16* __restrict__ Ws, int ns, int early) {
  moe_gu<GvBF16>(X, ldx, ids, topk, (const uint4*)Wt, 0, 1, 1, I, K, A, (const uint4*)Ws, 0, ns, early);
}
extern "C" __global__ void moe_gu_fp8(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt, const float* S, int br,
                                      int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws, const float* Ss, int ns, int early) {
  moe_gu<GvFP8>(X, ldx, ids, topk, (const uint4*)Wt, S, br, bc, I, K, A, (const uint4*)Ws, Ss, ns, early);
}
// moe_gu2_fp8: moe_gu_fp8 with two pairs per warp, each chunk of x loaded
// once for their four rows
extern "C" __global__ void moe_gu2_fp8(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt, const float* S, int br,
                                       int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws, const float* Ss, int ns, int early) {
  moe_gu<GvFP8, 2>(X, ldx, ids, topk, (const uint4*)Wt, S, br, bc, I, K, A, (const uint4*)Ws, Ss, ns, early);
}
// e4m3x2_h2 widens two E4M3 values (the low 16 bits of w16) to an FP16 pair.
__device__ __forceinline__ u32 e4m3x2_h2(u32 w16) {
  u32 r;
  asm("{.reg .b16 a;\n mov.b16 a, %1;\n cvt.rn.f16x2.e4m3x2 %0, a;}" : "=r"(r) : "h"((unsigned short)w16));
  return r;
}
// mma16816: d += a·b, one m16n8k16 tensor-core product of FP16 inputs
// with FP32 sums (a: the 16 × 16 tile in the mma A layout, b: 16 × 8).
__device__ __forceinline__ void mma16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// f16_pow2 gives the power of two s2 = 2^e that brings a row's largest
// magnitude m below 2^15 (so that the row fits FP16), and inv = 2^-e.
__device__ __forceinline__ void f16_pow2(float m, float& s2, float& inv) {
  int e = 0;
  if (m > 0.f) {
    frexpf(m, &e);  // m < 2^e
    e = min(max(15 - e, -100), 100);
  }
  s2 = ldexpf(1.f, e), inv = ldexpf(1.f, -e);
}
// to_f16x2 stores x[k]·s2 (K values) as FP16 pairs in xh, pairs i0, i0 +
// step, ... by this thread.
__device__ __forceinline__ void to_f16x2(const float* x, int K, float s2, u32* xh, int i0, int step) {
  for (int k = 2 * i0; k < K; k += 2 * step) {
    u32 h;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(x[k + 1] * s2), "f"(x[k] * s2));
    xh[k / 2] = h;
  }
}
// stage_f16_warp is f16_pow2 and to_f16x2(a, K, s2, xh, lane, 32) by one
// warp from one pass of loads (the same values: the largest magnitude of the
// row, then its pairs scaled): lane's pairs lane, lane + 32, ... held in
// registers between the two. K <= 64·NPL, a 8-byte aligned.
template <int NPL>
__device__ __forceinline__ void stage_f16_warp(const float* a, int K, u32* xh, int lane, float& inv) {
  float2 v[NPL];
  float mx = 0.f;
#pragma unroll
  for (int j = 0; j < NPL; j++) {
    int k = 2 * (lane + 32 * j);
    v[j] = k < K ? *(const float2*)(a + k) : make_float2(0.f, 0.f);
    mx = fmaxf(mx, fmaxf(fabsf(v[j].x), fabsf(v[j].y)));
  }
  mx = __shfl_sync(0xffffffffu, warp_max(mx), 0);
  float s2;
  f16_pow2(mx, s2, inv);
#pragma unroll
  for (int j = 0; j < NPL; j++) {
    int k = 2 * (lane + 32 * j);
    if (k < K) {
      u32 h;
      asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(h) : "f"(v[j].y * s2), "f"(v[j].x * s2));
      xh[k / 2] = h;
    }
  }
}
// mma16832e4: d += a·b, one m16n8k32 tensor-core product of E4M3 inputs
// with FP32 sums (sm_89 and later).
__device__ __forceinline__ void mma16832e4(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
// f32x2_e4m3x2 rounds two values to E4M3 (to nearest, finite): lo in the
// low byte of the 16 bits returned, hi in the next.
__device__ __forceinline__ u32 f32x2_e4m3x2(float lo, float hi) {
  unsigned short r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}
// e4m3x2_f32x2 widens two E4M3 values (the low 16 bits of w16; .x the low byte).
__device__ __forceinline__ float2 e4m3x2_f32x2(u32 w16) {
  u32 h = e4m3x2_h2(w16);
  float a, b;
  asm("{.reg .b16 l, u;\n mov.b32 {l, u}, %2;\n cvt.f32.f16 %0, l;\n cvt.f32.f16 %1, u;}" : "=f"(a), "=f"(b) : "r"(h));
  return make_float2(a, b);
}
// Q8P(K): the stride of to_e4m3x3's planes for K columns in the kernels
// (64 bytes of padding: planes 0 and 1, read by one quarter of a warp at
// once, in other banks); q8Smem(K) in ops.go is their shared memory,
// 3·Q8P(K) + K/32 bytes rounded up to 16.
#define Q8P(K) ((K) + 64)
#define Q8SMEM(K) ((3 * Q8P(K) + (K) / 32 + 15) & ~15)
// to_e4m3x3 stages K activation values x for mma_round's E4M3 products (Q):
// for each 128-column block kb = i0, i0 + step, ... (one warp a block), the
// power of two 2^e that brings the block's largest magnitude below 2^8
// (E4M3's largest finite value is 448), and the scaled values y as the sum
// of three E4M3 parts, hi = E4M3(y), lo = E4M3(y − hi) and
// lo2 = E4M3(y − hi − lo) (about 12 significant bits, FP16's 11), stored at
// their columns in the planes xq, xq + P and xq + 2·P; xinv[kb] = 2^-e.
// The products then need no widening of the weights: the three planes are
// three columns of the mma's activation matrix. K % 128 == 0.
__device__ __forceinline__ void to_e4m3x3(const float* x, int K, unsigned char* xq, int P, float* xinv, int i0, int step, int lane) {
  constexpr int NB = 4;  // blocks whose values are loaded at once
  for (int kb0 = i0; kb0 < K / 128; kb0 += NB * step) {
    float v[NB][4];
#pragma unroll
    for (int u = 0; u < NB; u++)
#pragma unroll
      for (int j = 0; j < 4; j++) v[u][j] = kb0 + u * step < K / 128 ? x[128 * (kb0 + u * step) + 4 * lane + j] : 0.f;
#pragma unroll
    for (int u = 0; u < NB; u++) {
      int kb = kb0 + u * step;
      if (kb >= K / 128) break;
      float m = fmaxf(fmaxf(fabsf(v[u][0]), fabsf(v[u][1])), fmaxf(fabsf(v[u][2]), fabsf(v[u][3])));
      m = __shfl_sync(0xffffffffu, warp_max(m), 0);
      int e = 0;
      if (m > 0.f) {
        frexpf(m, &e);  // m < 2^e
        e = min(max(8 - e, -100), 100);
      }
      float sc = ldexpf(1.f, e);
      u32 pq[3] = {0u, 0u, 0u};
#pragma unroll
      for (int j = 0; j < 4; j += 2) {
        float a = v[u][j] * sc, b = v[u][j + 1] * sc;
#pragma unroll
        for (int q = 0; q < 3; q++) {
          u32 h = f32x2_e4m3x2(a, b);
          float2 f = e4m3x2_f32x2(h);
          a -= f.x;
          b -= f.y;
          pq[q] |= h << (8 * j);
        }
      }
#pragma unroll
      for (int q = 0; q < 3; q++) *(u32*)(xq + q * P + 128 * kb + 4 * lane) = pq[q];
      if (lane == 0) xinv[kb] = ldexpf(1.f, -e);
    }
  }
}
// mma_round multiplies a stage of 16 rows of CR E4M3 columns (at a stride
// of RS bytes) by the matching columns of an FP16 activation row (xr, from
// 128-column block kb0; lanes with xon false, the mma's other columns,
// give zeros): for each 128-column block kb it hands the block's sums to
// sum(kb, d) (d[0]: row g, d[2]: row g + 8, in lanes with t == 0). Every
// lane reads its bytes of the stage first, 256 columns at a time, and
// refill() runs once the last are read.
//
// Q: the activations are to_e4m3x3's three E4M3 planes (xr their first
// byte, P bytes apart; xon: lanes g < 3, plane g as the mma's column g),
// each 64 columns two m16n8k32 products of the stage's bytes as they are;
// sum(kb, d) then gets row g's parts in d[0] + d[1] (lanes t == 0: hi and
// lo; t == 1: lo2) and row g + 8's in d[2] + d[3].
template <int CR, int RS, bool Q = false, class R, class F>
__device__ __forceinline__ void mma_round(const unsigned char* sb, const uint4* xr, int kb0, int g, int t, bool xon, R refill, F sum, int P = 0) {
#pragma unroll
  for (int hh = 0; hh < CR / 256; hh++) {
    uint4 wa[2][2], wb[2][2];  // [128-column block][64-column half]: rows g and g + 8
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int c = 0; c < 2; c++) {
        wa[h][c] = *(const uint4*)(sb + g * RS + 256 * hh + 128 * h + 64 * c + 16 * t);
        wb[h][c] = *(const uint4*)(sb + (g + 8) * RS + 256 * hh + 128 * h + 64 * c + 16 * t);
      }
    if (hh == CR / 256 - 1) {  // every lane has its bytes of the stage
      __syncwarp();
      refill();
    }
#pragma unroll
    for (int h = 0; h < 2; h++) {
      int kb = kb0 + 2 * hh + h;
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int c = 0; c < 2; c++) {
        if (Q) {
          uint4 xq = make_uint4(0, 0, 0, 0), aa = wa[h][c], bb = wb[h][c];
          if (xon) xq = *(const uint4*)((const unsigned char*)xr + g * P + 128 * kb + 64 * c + 16 * t);
          mma16832e4(d, aa.x, bb.x, aa.y, bb.y, xq.x, xq.y);
          mma16832e4(d, aa.z, bb.z, aa.w, bb.w, xq.z, xq.w);
          continue;
        }
        uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
        if (xon) {
          int qx = (128 * kb + 64 * c + 16 * t) / 8;
          x0 = xr[qx];
          x1 = xr[qx + 1];
        }
        uint4 aa = wa[h][c], bb = wb[h][c];
        u32 aw[4] = {aa.x, aa.y, aa.z, aa.w}, bw[4] = {bb.x, bb.y, bb.z, bb.w}, xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
          mma16816(d, e4m3x2_h2(aw[i] & 0xffff), e4m3x2_h2(bw[i] & 0xffff), e4m3x2_h2(aw[i] >> 16), e4m3x2_h2(bw[i] >> 16), xw[2 * i], xw[2 * i + 1]);
      }
      sum(kb, d);
    }
  }
}
// mma_add adds mma_round's sums of one 128-column block to tot: row g's
// times s0 (tot[0]), row g + 8's times s1 (tot[2]); with Q, the E4M3
// parts' columns (d[0] + d[1], d[2] + d[3]), whose lanes t == 1 mma_lo2
// adds to the lanes t == 0 at the end.
template <bool Q>
__device__ __forceinline__ void mma_add(float (&tot)[4], const float (&d)[4], float s0, float s1) {
  if (Q) {
    tot[0] += s0 * (d[0] + d[1]);
    tot[2] += s1 * (d[2] + d[3]);
  } else {
    tot[0] += s0 * d[0];
    tot[2] += s1 * d[2];
  }
}
template <bool Q>
__device__ __forceinline__ void mma_lo2(float (&tot)[4]) {
  if (Q) {  // lo2's sums (lanes t == 1) to the lanes t == 0
    tot[0] += __shfl_down_sync(0xffffffffu, tot[0], 1);
    tot[2] += __shfl_down_sync(0xffffffffu, tot[2], 1);
  }
}
// gemv_fp8m_rows: a one-row FP8 product on tensor cores, a block's 16 rows
// from n0 = 16·blockIdx.x (8 warps): warp w takes the columns [w·KS, (w +
// 1)·KS) (KS = K/8, a multiple of 128 and at most GVM_KS), its lanes
// holding rows g and g + 8's bytes as mma_round's Q reads them, loaded
// before the PDL wait with the rows' block scales; after it the block
// stages X as to_e4m3x3's three E4M3 planes in shared memory (the mma's
// columns 0–2), each warp sums its 128-column blocks (four m16n8k32
// products each, scaled by the block scale and the planes' power of two,
// mma_add), and the eight warps' sums are added in order through shared
// memory. Where gemv_fp8v2 widens and multiplies every weight on the FP32
// units (~5.5 µs after its wait for Ring-flash's o_proj, its rows already
// in registers), this is 64 mma per warp. Not gemv_fp8v2's sums: the
// activations to about 12 significant bits (TestGEMVMMA). N % 16 == 0,
// br % 16 == 0, bc % 128 == 0, K % 1024 == 0, K <= 8·GVM_KS.
#define GVM_KS 512
template <int PR = -1>
__device__ __forceinline__ void gemv_fp8m_rows(const float* X, const unsigned char* __restrict__ Wt, int N, int K, const float* S, int sc, int br, int bc,
                                               float* Y) {
  constexpr int HB = GVM_KS / 128;  // 128-column blocks per warp, at most
  __shared__ __align__(16) unsigned char xq[Q8SMEM(8 * GVM_KS)];
  __shared__ float part[8][16];
  unsigned long long tst = tl_now();
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int n0 = blockIdx.x * 16, KS = K / 8, k0 = w * KS, NB = KS / 128;
  const unsigned char* ra = Wt + (i64)(n0 + g) * K + k0 + 16 * t;
  const unsigned char* rb = ra + (i64)8 * K;
  uint4 wa[HB][2], wb[HB][2];
  float s[HB];
  const float* srow = S + (i64)(n0 / br) * sc;  // rows n0 .. n0 + 15 share a row of scales (br % 16 == 0)
#pragma unroll
  for (int h = 0; h < HB; h++) {
    bool in = h < NB;
#pragma unroll
    for (int c = 0; c < 2; c++) {
      wa[h][c] = in ? ldw((const uint4*)(ra + 128 * h + 64 * c)) : make_uint4(0, 0, 0, 0);
      wb[h][c] = in ? ldw((const uint4*)(rb + 128 * h + 64 * c)) : make_uint4(0, 0, 0, 0);
    }
    s[h] = in ? srow[(k0 + 128 * h) / bc] : 0.f;
  }
  PDL_ENTER();
  unsigned long long tw = tl_now();
  if (PR >= 0) tl_span(PR, tst);
  int P = Q8P(K);
  float* xinv = (float*)(xq + 3 * P);
  to_e4m3x3(X, K, xq, P, xinv, w, 8, lane);
  __syncthreads();
  float tot[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int h = 0; h < HB; h++) {
    if (h >= NB) break;
    int kb = k0 / 128 + h;
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int c = 0; c < 2; c++) {
      uint4 xv = make_uint4(0, 0, 0, 0), aa = wa[h][c], bb = wb[h][c];
      if (g < 3) xv = *(const uint4*)(xq + g * P + 128 * kb + 64 * c + 16 * t);
      mma16832e4(d, aa.x, bb.x, aa.y, bb.y, xv.x, xv.y);
      mma16832e4(d, aa.z, bb.z, aa.w, bb.w, xv.z, xv.w);
    }
    float sk = s[h] * xinv[kb];
    mma_add<true>(tot, d, sk, sk);
  }
  mma_lo2<true>(tot);
  if (t == 0) {
    part[w][g] = tot[0];
    part[w][g + 8] = tot[2];
  }
  __syncthreads();
  if (threadIdx.x < 16) {
    float v = 0.f;
#pragma unroll
    for (int q = 0; q < 8; q++) v += part[q][threadIdx.x];
    Y[n0 + threadIdx.x] = v;
  }
  if (PR >= 0) tl_span(PR + 1, tw);
}
// gemv_fp8v2m, gemv_fp8v2rm: gemv_fp8v2 and gemv_fp8v2r with the product on
// tensor cores (gemv_fp8m_rows), the default on sm_90 (RINGO_CUDA_GV_MMA=0
// keeps the register forms; knob gvm): Ring-flash's o_proj 3.5 µs after
// its wait against 5.5, −0.85 % per decode step (thirty-second session).
extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8v2m(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K,
                                                                const float* S, int sc, int br, int bc, float* Y, i64 ldy) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  gemv_fp8m_rows(X, Wt, N, K, S, sc, br, bc, Y);
#endif
}
extern "C" __global__ void __launch_bounds__(256, 2) gemv_fp8v2rm(const float* X, i64 ldx, int T, const unsigned char* __restrict__ Wt, int N, int K,
                                                                 const float* S, int sc, int br, int bc, float* Y, i64 ldy, const float* xres,
                                                                 const float* nw, const u16* __restrict__ R, int E, float* P) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  route_partials(N, Y, xres, nw, R, E, P, [&] { gemv_fp8m_rows<25>(X, Wt, N, K, S, sc, br, bc, Y); });
#endif
}
// moe_gummat_impl: moe_gu2_fp8's gate|up pairs and SwiGLU on tensor cores,
// as moe_dcmmat does the down projections: a warp's 16-row tile is 8 pairs
// (rows g: the gates of pairs p0 + g, rows g + 8: their ups), so that the
// mma leaves a pair's gate and up in the same lane (d[0], d[2]); KS warps
// share a tile (runtime), each over K/KS columns (a multiple of CR) in
// rounds of CR streamed by bulk copies, S rounds in flight per warp (FLAT:
// one token, the warps numbered across the slots' tiles, KS = 1). Each
// block stages its slot's activation row in FP16 (a power-of-two scale,
// undone before SwiGLU). The shared expert's warps (s >= ns) ask for their
// first rounds and skip the PDL wait when early & 1, as in moe_gu; the
// routed ones need the routing's ids first. Needs br % 8 == 0, I % 8 == 0,
// bc % 128 == 0. Dynamic shared memory: W·S·16·(CR + 64) + 2·K bytes.
// Q: the activation row as to_e4m3x3's planes, the products E4M3 by E4M3
// (mma_round's Q): W·S·16·(CR + 64) + q8Smem(K) bytes.
template <int W, int S, bool FLAT, int CR = 256, bool Q = false>
__device__ __forceinline__ void moe_gummat_impl(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt, const float* Sf,
                                                int br, int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws, const float* Ss, int ns,
                                                int early, int KS) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char fsm[];  // [warp][stage][16 rows][CR + 64], then X as FP16
  __shared__ __align__(8) unsigned long long bars[W * S];
  constexpr int RS = CR + 64, STG = 16 * RS;  // a row's stride (two rows a quarter warp reads: other banks), a stage
  __shared__ float part[W][2][32], red[W];
  int s = blockIdx.y, w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  int p0 = (blockIdx.x * (W / KS) + w / KS) * 8, ks = w % KS;
  bool live = true;
  if (FLAT) {  // one token: the warps numbered across the slots' tiles (KS = 1)
    int tiles = (I + 7) / 8, gw = blockIdx.x * W + w;
    s = gw / tiles, p0 = gw % tiles * 8, ks = 0;
    live = s < ns + (Ws ? 1 : 0);
  }
  int KW = K / KS, k0 = ks * KW, NR = live ? KW / CR : 0;
  bool routed = s < ns;
  const unsigned char* st = fsm + w * S * STG;
  u32 bar0 = smem_addr(bars + w * S), st0 = smem_addr(st);
  if (lane == 0) {
    for (int i = 0; i < S; i++) mbar_init(bar0 + 8 * i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncwarp();
  i64 e = 0;
  const unsigned char* Wm = routed ? Wt : Ws;
  // round u: columns k0 + CR·u .. +CR-1 of the tile's rows, lane j copying
  // row j (j < 8: the gate of pair p0 + j, else the up of pair p0 + j - 8)
  auto ask = [&](int u) {
    int b = u % S;
    if (lane == 0) mbar_expect(bar0 + 8 * b, 16 * CR);
    __syncwarp();
    if (lane < 16) {
      i64 row = e * 2 * I + (lane >> 3) * I + min(p0 + (lane & 7), I - 1);
      bulk_g2s(st0 + b * STG + lane * RS, Wm + row * K + k0 + CR * u, CR, bar0 + 8 * b);
    }
  };
  bool pre = (early & 1) && !routed;  // the shared expert's rows before the wait
  unsigned long long tst = tl_now();
  if (pre)
    for (int u = 0; u < S && u < NR; u++) ask(u);
  if (!pre) PDL_ENTER();
  unsigned long long tw = tl_now();
  if (!pre) tl_span(6, tst);
  if (routed) e = ids[s];
  if (!pre)
    for (int u = 0; u < S && u < NR; u++) ask(u);
  const float* Sc = routed ? Sf : Ss;
  const float* sg = Sc + e * (2 * I / br) * (K / bc) + (i64)(min(p0, I - 1) / br) * (K / bc);
  const float* su = Sc + e * (2 * I / br) * (K / bc) + (i64)((I + min(p0, I - 1)) / br) * (K / bc);
  // the slot's activation row to FP16, scaled so that its largest magnitude is below 2^15 (f16_pow2)
  const float* x = FLAT ? X : X + (routed ? s / topk : s - ns) * ldx;
  u32* xh = (u32*)(fsm + W * S * STG);
  float* xinv = (float*)(fsm + W * S * STG + 3 * Q8P(K));
  float s2, inv = 1.f;
  if (Q) {
    to_e4m3x3(x, K, (unsigned char*)xh, Q8P(K), xinv, w, W, lane);
  } else {
    float m = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(x[k]));
    m = warp_max(m);
    if (lane == 0) red[w] = m;
    __syncthreads();
    m = 0.f;
    for (int i = 0; i < W; i++) m = fmaxf(m, red[i]);
    f16_pow2(m, s2, inv);
    to_f16x2(x, K, s2, xh, threadIdx.x, blockDim.x);
  }
  __syncthreads();
  tl_span(33, tw);
  const uint4* xr = (const uint4*)xh;
  bool xon = Q ? g < 3 : g == 0;
  float tot[4] = {0.f, 0.f, 0.f, 0.f};
  // (timeline builds) thread 0's time waiting for rounds, in their
  // products and asking for refills
  unsigned long long pw = 0, pm = 0, pa = 0, pt = tl_now();
  auto mark = [&](unsigned long long& d) {
#ifdef RINGO_TIMELINE
    unsigned long long t1 = tl_now();
    d += t1 - pt;
    pt = t1;
#endif
  };
  for (int u = 0; u < NR; u++) {
    int b = u % S;
    mbar_wait(bar0 + 8 * b, (u32)(u / S) & 1);
    mark(pw);
    // (k0 + CR·u >= 0: an unsigned division, as the measured kernel had)
    mma_round<CR, RS, Q>(
        st + b * STG, xr, (int)((unsigned)(k0 + CR * u) / 128), g, t, xon,
        [&] {
          mark(pm);
          if (u + S < NR) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            ask(u + S);
          }
          mark(pa);
        },
        [&](int kb, const float(&d)[4]) {
          int kc = (128 * kb) / bc;
          float xi = Q ? xinv[kb] : 1.f, s0 = Q ? sg[kc] * xi : sg[kc];
          float s1 = Q ? su[kc] * xi : su[kc];
          mma_add<Q>(tot, d, s0, s1);
        },
        Q8P(K));
#ifdef RINGO_TIMELINE
#pragma unroll
    for (int j = 0; j < 4; j++) asm volatile("" ::"f"(tot[j]));  // the products done before the clock is read
#endif
    mark(pm);
  }
  tl_add(34, pw);
  tl_add(35, pm);
  tl_add(36, pa);
  mma_lo2<Q>(tot);
  part[w][0][lane] = tot[0];
  part[w][1][lane] = tot[2];
  __syncthreads();
  tl_span(30, tw);
  tl_end();
  if (!live || ks != 0 || t != 0) return;
  float gt = part[w][0][lane], up = part[w][1][lane];
  for (int q = 1; q < KS; q++) gt += part[w + q][0][lane], up += part[w + q][1][lane];
  int p = p0 + g;
  if (p < I) A[(i64)s * I + p] = silu_mul(gt * inv, up * inv);
#endif
}
// moe_gummat9w: one token's gate|up pairs on tensor cores (moe_gummat_impl),
// the default on sm_90 where its grid fills the GPU in one wave: 9 warps
// per block, 2 stages of 16 rows × 512 columns per warp (174 KB: one block
// per SM), Ring-flash's 9 slots of 128 tiles being 128 blocks. 27.6 µs per
// launch against moe_gu2_fp8's 30.8; with moe_dcmmatw −0.8 % per decode
// step (twenty-ninth session). Rounds of 256 columns (4 stages, twice the
// bulk copies) were +1.5 % per step, and 256-column rounds in 2 stages
// +0.6 % (branch next/fp8mma). RINGO_CUDA_GU_MMA=0 runs moe_gu2_fp8.
extern "C" __global__ void __launch_bounds__(288, 1) moe_gummat9w(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt,
                                                                const float* S, int br, int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws,
                                                                const float* Ss, int ns, int early, int KS) {
  moe_gummat_impl<9, 2, true, 512>(X, ldx, ids, topk, Wt, S, br, bc, I, K, A, Ws, Ss, ns, early, 1);
}
// moe_gummat9q: moe_gummat9w with the activation row as three E4M3 parts and
// the products E4M3 by E4M3 (m16n8k32; RINGO_CUDA_MMA_E4M3=1).
extern "C" __global__ void __launch_bounds__(288, 1) moe_gummat9q(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt,
                                                                const float* S, int br, int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws,
                                                                const float* Ss, int ns, int early, int KS) {
  moe_gummat_impl<9, 2, true, 512, true>(X, ldx, ids, topk, Wt, S, br, bc, I, K, A, Ws, Ss, ns, early, 1);
}
// moe_gu4_fp8: four pairs per warp in rounds of two chunks (the same 64
// weight registers as moe_gu2_fp8), x loaded once for eight rows
extern "C" __global__ void moe_gu4_fp8(const float* X, i64 ldx, const int* ids, int topk, const unsigned char* __restrict__ Wt, const float* S, int br,
                                       int bc, int I, int K, float* A, const unsigned char* __restrict__ Ws, const float* Ss, int ns, int early) {
  moe_gu<GvFP8, 4, 2>(X, ldx, ids, topk, (const uint4*)Wt, S, br, bc, I, K, A, (const uint4*)Ws, Ss, ns, early);
}
extern "C" __global__ void moe_dc_bf16v(const float* A, const int* ids, const float* wts, int topk, const u16* __restrict__ Wt, int N, int K, float* D,
                                        i64 ldd, const u16* __restrict__ Ws, int ns, int pre, int reg) {
  if (pre) moe_dc_pre<1>(ids, topk, (const char*)Wt, K * 2, N, (const char*)Ws, ns);
  moe_dcs<GvBF16, 1>(A, ids, wts, topk, (const uint4*)Wt, 0, 1, 1, N, K, D, ldd, (const uint4*)Ws, 0, ns, pre && reg);
}
extern "C" __global__ void moe_dc2_bf16v(const float* A, const int* ids, const float* wts, int topk, const u16* __restrict__ Wt, int N, int K, float* D,
                                         i64 ldd, const u16* __restrict__ Ws, int ns, int pre, int reg) {
  if (pre) moe_dc_pre<2>(ids, topk, (const char*)Wt, K * 2, N, (const char*)Ws, ns);
  moe_dcs<GvBF16, 2>(A, ids, wts, topk, (const uint4*)Wt, 0, 1, 1, N, K, D, ldd, (const uint4*)Ws, 0, ns, pre && reg);
}
extern "C" __global__ void moe_dc3_bf16v(const float* A, const int* ids, const float* wts, int topk, const u16* __restrict__ Wt, int N, int K, float* D,
                                         i64 ldd, const u16* __restrict__ Ws, int ns, int pre, int reg) {
  if (pre) moe_dc_pre<3>(ids, topk, (const char*)Wt, K * 2, N, (const char*)Ws, ns);
  moe_dcs<GvBF16, 3>(A, ids, wts, topk, (const uint4*)Wt, 0, 1, 1, N, K, D, ldd, (const uint4*)Ws, 0, ns, pre && reg);
}
extern "C" __global__ void moe_dc_fp8(const float* A, const int* ids, const float* wts, int topk, const unsigned char* __restrict__ Wt, const float* S,
                                      int br, int bc, int N, int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss, int ns, int pre, int reg) {
  if (pre) moe_dc_pre<1>(ids, topk, (const char*)Wt, K, N, (const char*)Ws, ns);
  moe_dcs<GvFP8, 1>(A, ids, wts, topk, (const uint4*)Wt, S, br, bc, N, K, D, ldd, (const uint4*)Ws, Ss, ns, pre && reg);
}

// dcl_slot adds slot q (activation row s, of token t) of a warp's R output
// rows from n0 to out[j]: each row's chunks in order (wc(c, j) is row j's
// chunk lane + 32·c), gv_rows_chunk, the warp's sum, times the routing
// weight for routed slots (the shared expert's, q == topk, by 1). Sc: the
// slot's experts' block scales (F::S).
template <class F, int C, int R, class WC>
__device__ __forceinline__ void dcl_slot(WC wc, int q, int s, int t, const int* ids, const float* wts, int topk, const float* A, const float* Sc, int br,
                                         int bc, int N, int K, int n0, float (&out)[R]) {
  int lane = threadIdx.x & 31, KC = K / F::N;
  i64 e = q < topk ? ids[s] : 0;
  const float* ar = A + (i64)s * K;
  float acc[R];
  const float* sr[R];
#pragma unroll
  for (int j = 0; j < R; j++) {
    acc[j] = 0.f;
    sr[j] = F::S ? Sc + e * (N / br) * (K / bc) + (i64)(min(n0 + j, N - 1) / br) * (K / bc) : 0;
  }
#pragma unroll
  for (int c = 0; c < C; c++) {
    int kc = lane + 32 * c;
    if (kc >= KC) break;
    uint4 w[R];
#pragma unroll
    for (int j = 0; j < R; j++) w[j] = wc(c, j);
    gv_rows_chunk<R, F>(w, ar + kc * F::N, acc, sr, kc, bc);
  }
#pragma unroll
  for (int j = 0; j < R; j++) {
    float v = warp_sum(acc[j]);
    out[j] += q < topk ? v * wts[t * topk + q] : v;
  }
}
// moe_dcl: moe_dcs (SPLIT 1) with R output rows per warp taking their
// slots one after another, the next AH slots' chunks in flight while one is
// summed, instead of every slot at once: the same sums in the same order
// (each slot's row over its chunks in order, then the slots in k order with
// their weights), in a fraction of the registers, so that a decode step's
// rows are all resident at once (moe_dc_fp8 took 222 registers per thread,
// one block of 8 warps per SM, for Ring-flash's 4,096 rows). C is the
// chunks per lane of a row: K <= 32·C·F::N. With early set (the routing
// ran two or more launches back, as moe_dc_pre assumes) the first slots'
// chunks are loaded before PDL_ENTER.
template <class F, int C, int R, int AH>
__device__ __forceinline__ void moe_dcl(const float* A, const int* ids, const float* wts, int topk, const uint4* Wt, const float* S, int br, int bc,
                                        int N, int K, float* D, i64 ldd, const uint4* Ws, const float* Ss, int ns, int early) {
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int t = blockIdx.y, n0 = (blockIdx.x * (blockDim.x >> 5) + w) * R;
  int KC = K / F::N, m = topk + (Ws ? 1 : 0);
  auto slot = [&](int q) { return q < topk ? t * topk + q : ns + t; };
  auto load = [&](int q, uint4(&v)[R][C]) {
    int s = slot(q);
    i64 e = q < topk ? ids[s] : 0;
#pragma unroll
    for (int j = 0; j < R; j++) {
      const uint4* r = (q < topk ? Wt : Ws) + (e * N + min(n0 + j, N - 1)) * KC;
#pragma unroll
      for (int c = 0; c < C; c++) v[j][c] = lane + 32 * c < KC ? ldw(r + lane + 32 * c) : make_uint4(0, 0, 0, 0);
    }
  };
  uint4 buf[MOE_DC_MAXS][R][C];
  unsigned long long t0 = tl_now();
  if (early)
#pragma unroll
    for (int q = 0; q < AH; q++)
      if (q < m) load(q, buf[q]);
  PDL_ENTER();
  tl_probe(8, t0);
  t0 = tl_now();
  if (!early)
#pragma unroll
    for (int q = 0; q < AH; q++)
      if (q < m) load(q, buf[q]);
  float out[R];
#pragma unroll
  for (int j = 0; j < R; j++) out[j] = 0.f;
#pragma unroll
  for (int q = 0; q < MOE_DC_MAXS; q++) {
    if (q >= m) break;
    if (q + AH < MOE_DC_MAXS && q + AH < m) load(q + AH, buf[q + AH]);
    // (the scales are set for every slot of block-scaled experts)
    dcl_slot<F, C, R>([&](int c, int j) { return buf[q][j][c]; }, q, slot(q), t, ids, wts, topk, A, q < topk ? S : Ss, br, bc, N, K, n0, out);
  }
#pragma unroll
  for (int j = 0; j < R; j++)
    if (n0 + j < N && lane == 0) D[(i64)t * ldd + n0 + j] = out[j];
  tl_probe(9, t0);
}
// moe_dcl_fp8, moe_dcl2_fp8, moe_dcl4_fp8: moe_dcl for FP8 rows of up to
// 1,024 values (two chunks per lane; Ring-flash's I) with one, two or four
// output rows per warp (each chunk of the activations loaded once for
// them), two, three or one slots ahead (moe_dcl2_fp8 with three: 122
// registers against 102 with two, still two blocks of 8 warps per SM;
// −2.8 % per launch in BenchmarkFP8MoEHot, −0.3 to −0.4 % per decode step on
// Ring-flash's shapes; four ahead −0.1 %).
#define MOE_DCL_FP8(NAME, R, AH)                                                                                                               \
  extern "C" __global__ void NAME(const float* A, const int* ids, const float* wts, int topk, const unsigned char* __restrict__ Wt, const float* S, \
                                  int br, int bc, int N, int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss, int ns,    \
                                  int early) {                                                                                                    \
    moe_dcl<GvFP8, 2, R, AH>(A, ids, wts, topk, (const uint4*)Wt, S, br, bc, N, K, D, ldd, (const uint4*)Ws, Ss, ns, early);                     \
  }
MOE_DCL_FP8(moe_dcl_fp8, 1, 2)
MOE_DCL_FP8(moe_dcl2_fp8, 2, 3)
MOE_DCL_FP8(moe_dcl4_fp8, 4, 1)
// moe_dcmmat: moe_dcl2_fp8's down projections and weighted sum on tensor
// cores, the default on sm_90 (RINGO_CUDA_DC_MMA=0 runs moe_dcl2_fp8). A
// block of m warps (the slots of a token: topk routed, then the shared
// expert's if any) makes a tile of 16 output rows: warp q streams slot q's
// 16 rows (K columns in rounds of 256 by bulk copies, DCM_S rounds in
// flight, the first asked for before the PDL wait when early: the routing
// ran two launches back) against its own activation row, staged in FP16 by
// the warp alone (a power-of-two scale, undone with the routing weight), so
// that each E4M3 pair costs one conversion and the products run as mma
// (moe_dcl2_fp8 spends most of its issue slots widening to FP32 and
// multiplying); the block then adds the slots' rows in order q = 0..m-1
// through shared memory. A stage holds the 16 rows' CR bytes at a stride of
// CR + 64, so that the two rows a quarter of the warp reads at once fall in
// different banks. Ring-flash's 4,096 rows are 256 blocks of 9
// warps, one wave of two per SM: 11.6–13.1 µs per launch against 18.0,
// −4.5 % per decode step, +8.7 % tok/s on the whole model (twenty-ninth
// session). Not moe_dcl's sums: FP16 activations (TestFP8MMAMoE). Needs
// bc % 128 == 0, br % 16 == 0, K % 256 == 0, m <= MOE_DC_MAXS. Dynamic
// shared memory: m·(SS·16·(CR + 64) + 2·K) bytes (moe_dcmmat: SS = DCM_S
// stages of CR = 256 columns).
// Q: the activation rows as to_e4m3x3's planes, the products E4M3 by E4M3
// (mma_round's Q): m·(SS·16·(CR + 64) + Q8SMEM(K)) bytes.
// OP (not Q; K <= 1024): the activation row staged from one pass of loads
// (stage_f16_warp: the same values).
#define DCM_S 2
template <int SS, int CR, bool Q = false, bool OP = false>
__device__ __forceinline__ void moe_dcmmat_impl(const float* A, const int* ids, const float* wts, int topk, const unsigned char* __restrict__ Wt,
                                                const float* Sf, int br, int bc, int N, int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws,
                                                const float* Ss, int ns, int early) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char fsm[];  // [warp][stage][16 rows][CR + 64], then [warp][K] FP16
  __shared__ __align__(8) unsigned long long bars[MOE_DC_MAXS * SS];
  constexpr int RS = CR + 64, STG = 16 * RS;
  __shared__ float part[MOE_DC_MAXS][2][32];
  int q = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, m = blockDim.x >> 5;
  int tk = blockIdx.y, n0 = blockIdx.x * 16, NR = K / CR;
  int s = q < topk ? tk * topk + q : ns + tk;
  const unsigned char* st = fsm + q * SS * STG;
  u32 bar0 = smem_addr(bars + q * SS), st0 = smem_addr(st);
  if (lane == 0) {
    for (int i = 0; i < SS; i++) mbar_init(bar0 + 8 * i, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncwarp();
  i64 e = 0;
  const unsigned char* Wm = q < topk ? Wt : Ws;
  auto ask = [&](int u) {  // round u: columns CR·u .. +CR-1 of the slot's 16 rows, lane j copying row j
    int b = u % SS;
    if (lane == 0) mbar_expect(bar0 + 8 * b, 16 * CR);
    __syncwarp();
    if (lane < 16) bulk_g2s(st0 + b * STG + lane * RS, Wm + (e * N + min(n0 + lane, N - 1)) * K + CR * u, CR, bar0 + 8 * b);
  };
  unsigned long long tst = tl_now();
  if (early) {
    if (q < topk) e = ids[s];
    for (int u = 0; u < SS && u < NR; u++) ask(u);
  }
  PDL_ENTER();
  unsigned long long tw = tl_now();
  tl_span(15, tst);
  if (!early) {
    if (q < topk) e = ids[s];
    for (int u = 0; u < SS && u < NR; u++) ask(u);
  }
  const float* Sc = (q < topk ? Sf : Ss) + e * (N / br) * (K / bc) + (i64)(min(n0, N - 1) / br) * (K / bc);
  // the slot's activation row to FP16 by this warp (f16_pow2)
  const float* a = A + (i64)s * K;
  u32* xh = Q ? (u32*)(fsm + m * SS * STG + q * Q8SMEM(K)) : (u32*)(fsm + m * SS * STG) + q * (K / 2);
  float* xinv = (float*)((unsigned char*)xh + 3 * Q8P(K));
  float s2, inv = 1.f;
  if (Q) {
    to_e4m3x3(a, K, (unsigned char*)xh, Q8P(K), xinv, 0, 1, lane);
  } else if (OP) {
    stage_f16_warp<16>(a, K, xh, lane, inv);
  } else {
    float mx = 0.f;
    for (int k = lane; k < K; k += 32) mx = fmaxf(mx, fabsf(a[k]));
    mx = __shfl_sync(0xffffffffu, warp_max(mx), 0);
    f16_pow2(mx, s2, inv);
    to_f16x2(a, K, s2, xh, lane, 32);
  }
  inv *= q < topk ? wts[tk * topk + q] : 1.f;
  __syncwarp();
  const uint4* xr = (const uint4*)xh;
  bool xon = Q ? g < 3 : g == 0;
  float tot[4] = {0.f, 0.f, 0.f, 0.f};
  for (int u = 0; u < NR; u++) {
    int b = u % SS;
    mbar_wait(bar0 + 8 * b, (u32)(u / SS) & 1);
    mma_round<CR, RS, Q>(
        st + b * STG, xr, (CR / 128) * u, g, t, xon,
        [&] {
          if (u + SS < NR) {
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            ask(u + SS);
          }
        },
        [&](int kb, const float(&d)[4]) {
          float sc = Sc[(128 * kb) / bc];
          if (Q) sc *= xinv[kb];
          mma_add<Q>(tot, d, sc, sc);
        },
        Q8P(K));
  }
  mma_lo2<Q>(tot);
  part[q][0][lane] = tot[0] * inv;
  part[q][1][lane] = tot[2] * inv;
  __syncthreads();
  tl_span(31, tw);
  tl_end();
  if (q != 0 || t != 0) return;
#pragma unroll
  for (int j = 0; j < 2; j++) {
    float v = part[0][j][lane];
    for (int r = 1; r < m; r++) v += part[r][j][lane];
    int row = n0 + g + 8 * j;
    if (row < N) D[(i64)tk * ldd + row] = v;
  }
#endif
}
extern "C" __global__ void __launch_bounds__(32 * MOE_DC_MAXS, 2) moe_dcmmat(const float* A, const int* ids, const float* wts, int topk,
                                                                          const unsigned char* __restrict__ Wt, const float* Sf, int br, int bc, int N,
                                                                          int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss,
                                                                          int ns, int early) {
  moe_dcmmat_impl<DCM_S, 256>(A, ids, wts, topk, Wt, Sf, br, bc, N, K, D, ldd, Ws, Ss, ns, early);
}
// moe_dcmmatw: moe_dcmmat in rounds of 512 columns, one stage per warp: the
// same bytes in flight in half as many bulk copies, each twice the size
// (10.7 µs per launch against 11.7, −0.25 % per decode step on Ring-flash's
// shapes; twenty-ninth session). The default where K % 512 == 0
// (RINGO_CUDA_DC_WIDE=0 runs moe_dcmmat).
extern "C" __global__ void __launch_bounds__(32 * MOE_DC_MAXS, 2) moe_dcmmatw(const float* A, const int* ids, const float* wts, int topk,
                                                                           const unsigned char* __restrict__ Wt, const float* Sf, int br, int bc, int N,
                                                                           int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss,
                                                                           int ns, int early) {
  moe_dcmmat_impl<1, 512>(A, ids, wts, topk, Wt, Sf, br, bc, N, K, D, ldd, Ws, Ss, ns, early);
}
// moe_dcmmatw1: moe_dcmmatw with each warp's activation row staged from one
// pass of loads instead of two (the same values; K <= 1024;
// RINGO_CUDA_DC_ONEPASS=0 runs moe_dcmmatw).
extern "C" __global__ void __launch_bounds__(32 * MOE_DC_MAXS, 2) moe_dcmmatw1(const float* A, const int* ids, const float* wts, int topk,
                                                                            const unsigned char* __restrict__ Wt, const float* Sf, int br, int bc, int N,
                                                                            int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss,
                                                                            int ns, int early) {
  moe_dcmmat_impl<1, 512, false, true>(A, ids, wts, topk, Wt, Sf, br, bc, N, K, D, ldd, Ws, Ss, ns, early);
}
// moe_dcmmatq: moe_dcmmatw with the activations as three E4M3 parts and the
// products E4M3 by E4M3 (m16n8k32): no widening of the weights, half the
// mma (RINGO_CUDA_MMA_E4M3=1; thirtieth session).
extern "C" __global__ void __launch_bounds__(32 * MOE_DC_MAXS, 2) moe_dcmmatq(const float* A, const int* ids, const float* wts, int topk,
                                                                           const unsigned char* __restrict__ Wt, const float* Sf, int br, int bc, int N,
                                                                           int K, float* D, i64 ldd, const unsigned char* __restrict__ Ws, const float* Ss,
                                                                           int ns, int early) {
  moe_dcmmat_impl<1, 512, true>(A, ids, wts, topk, Wt, Sf, br, bc, N, K, D, ldd, Ws, Ss, ns, early);
}


// k_moe_combine: d[t, c] = sum_k w[t*K+k] * Y[posOf[t*K+k], c], in k order
// (posOf null: Y rows are slots), then + Ys[t, c] (stride ldy) when Ys is
// not null: the shared expert's row, added last with weight 1.
extern "C" __global__ void k_moe_combine(float* d, i64 ldd, const float* Y, i64 ldy, const int* posOf, const float* w, int T, int topk, int cols,
                                         const float* Ys) { PDL_ENTER();
  GRID_LOOP((i64)T * cols) {
    i64 t = idx / cols, c = idx % cols;
    float acc = 0.f;
    for (int k = 0; k < topk; k++) {
      int p = posOf ? posOf[t * topk + k] : (int)(t * topk + k);
      float v = w[t * topk + k] * Y[(i64)p * ldy + c];
      acc = k == 0 ? v : acc + v;
    }
    if (Ys) acc += Ys[t * ldy + c];
    d[t * ldd + c] = acc;
  }
}

// k_moe_combineb is k_moe_combine for Y in BF16 (Ys stays FP32, row
// stride cols): the same sums as k_moe_combine4b, one column per thread.
extern "C" __global__ void k_moe_combineb(float* d, i64 ldd, const u16* Y, i64 ldy, const int* posOf, const float* w, int T, int topk, int cols,
                                          const float* Ys) { PDL_ENTER();
  GRID_LOOP((i64)T * cols) {
    i64 t = idx / cols, c = idx % cols;
    float acc = 0.f;
    for (int k = 0; k < topk; k++) {
      int p = posOf ? posOf[t * topk + k] : (int)(t * topk + k);
      float v = w[t * topk + k] * bf16f(Y[(i64)p * ldy + c]);
      acc = k == 0 ? v : acc + v;
    }
    if (Ys) acc += Ys[t * cols + c];
    d[t * ldd + c] = acc;
  }
}

// k_moe_combine4 is k_moe_combine for four columns per thread (the same sums
// per column): cols % 4 == 0, ldd and ldy multiples of 4, d, Y and Ys 16-byte
// aligned. k_moe_combine4b is the same for Y in BF16 (ldy a multiple of 4, Y
// 8-byte aligned; Ys stays FP32 with row stride cols). y4 loads four values
// of a row of Y as float4: F32 directly, BF16 from a uint2.
__device__ __forceinline__ float4 y4(const float* p) { return *(const float4*)p; }
__device__ __forceinline__ float4 y4(const u16* p) {
  uint2 b = *(const uint2*)p;
  return make_float4(bf16f((u16)b.x), bf16f((u16)(b.x >> 16)), bf16f((u16)b.y), bf16f((u16)(b.y >> 16)));
}
template <class YT>
__device__ __forceinline__ void moe_combine4(float* d, i64 ldd, const YT* Y, i64 ldy, const int* posOf, const float* w, int T, int topk, int cols,
                                             const float* Ys, i64 lds) {
  GRID_LOOP((i64)T * cols / 4) {
    i64 t = idx / (cols / 4), c = (idx % (cols / 4)) * 4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int k = 0; k < topk; k++) {
      int p = posOf ? posOf[t * topk + k] : (int)(t * topk + k);
      float wk = w[t * topk + k];
      float4 y = y4(Y + (i64)p * ldy + c);
      float4 v = make_float4(wk * y.x, wk * y.y, wk * y.z, wk * y.w);
      if (k == 0) {
        acc = v;
      } else {
        acc.x += v.x;
        acc.y += v.y;
        acc.z += v.z;
        acc.w += v.w;
      }
    }
    if (Ys) {
      float4 ys = *(const float4*)(Ys + t * lds + c);
      acc.x += ys.x;
      acc.y += ys.y;
      acc.z += ys.z;
      acc.w += ys.w;
    }
    *(float4*)(d + t * ldd + c) = acc;
  }
}
extern "C" __global__ void k_moe_combine4(float* d, i64 ldd, const float* Y, i64 ldy, const int* posOf, const float* w, int T, int topk, int cols,
                                          const float* Ys) { PDL_ENTER();
  moe_combine4(d, ldd, Y, ldy, posOf, w, T, topk, cols, Ys, ldy);
}
extern "C" __global__ void k_moe_combine4b(float* d, i64 ldd, const u16* Y, i64 ldy, const int* posOf, const float* w, int T, int topk, int cols,
                                           const float* Ys) { PDL_ENTER();
  moe_combine4(d, ldd, Y, ldy, posOf, w, T, topk, cols, Ys, (i64)cols);
}

// ---------------------------------------------------------------------------
// Routing: one block per row (blockDim a power of two >= E, >= 32).
// Group-limited top-k with a selection bias; ties go to the lower index.

__device__ __forceinline__ bool beats(int va, float a, int ia, int vb, float b, int ib) {
  if (!va) return false;
  if (!vb) return true;
  return a > b || (a == b && ia < ib);
}

// Every selection is a rank: the number of rivals that beat a value
// (higher, ties to the lower index), counted by each thread for its own
// value at once, instead of rounds of arg-max on one thread or one warp
// (those chains of dependent steps made a decode routing 10 µs). Rank 0 and
// 1 within a group are its two largest scores; a group is kept when its
// rank is below keepGroups; an expert of a kept group with rank k < topk is
// the k-th selected. The same choices as repeated arg-max.
//
// route_slots writes the selection: thread k < topk stores slot k's expert
// sel[k] and its weight ssel[k] (normalised by the slots' sum, taken in slot
// order by every slot's thread, when normalize), times rscale.
// TK, when not 0, is topk known at compile time (the loads of the sum
// issued at once; the same sum).
template <int TK = 0>
__device__ __forceinline__ void route_slots(const int* sel, const float* ssel, int topk, int normalize, float rscale, int* ids, float* wts) {
  int tid = threadIdx.x;
  if (TK) topk = TK;
  if (tid < topk) {
    float sum = 0.f;
    if (TK) {
      float v[TK ? TK : 1];
#pragma unroll
      for (int k = 0; k < TK; k++) v[k] = ssel[k];
#pragma unroll
      for (int k = 0; k < TK; k++) sum += v[k];
    } else {
      for (int k = 0; k < topk; k++) sum += ssel[k];
    }
    float wv = ssel[tid];
    if (normalize) wv /= sum + 1e-20f;
    ids[tid] = sel[tid];
    wts[tid] = wv * rscale;
  }
}
//
// route_row_warp makes the same choices for groups of 32 experts, one group
// per warp (E == groups·32, groups <= 32, topk <= 32): the ranks within a
// group from shuffles, each group's top min(topk, 32) in shared memory,
// two block barriers instead of five. Called by route_row with its scores
// sv and selection values cv (threads tid < E).
//
// Its shared arrays are route_row's (E <= MAXE entries each): wgs the group
// scores, wtv and wti each group's top kk selection values by rank and their
// experts (group g's at g·kk, groups·kk <= E), wsel and wssel the selection.
// KK, when not 0, is kk == topk known at compile time: the loops over a
// group's top kk and over the slots unrolled (their loads issued at once),
// the same counts and sums.
template <int KK>
__device__ __forceinline__ void route_row_warp(float sv, float cv, int E, int groups, int keepGroups, int topk, int normalize, float rscale, int* ids,
                                               float* wts, unsigned long long tr, float* wgs, float* wtv, int* wti, int* wsel, float* wssel) {
  const unsigned FULL = 0xffffffffu;
  int tid = threadIdx.x, lane = tid & 31, g = tid >> 5, kk = KK ? KK : min(topk, 32);
  bool in = tid < E;  // whole warps
  int grank = 0;
  float s0 = __shfl_sync(FULL, sv, 0);  // expert 0's score (warp 0), the placeholder of an unfilled slot
  if (in) {
    if (lane < kk) {  // placeholders, overwritten below unless NaNs tie ranks
      wtv[g * kk + lane] = cv;
      wti[g * kk + lane] = tid;
    }
#pragma unroll 8
    for (int j = 0; j < 32; j++) grank += beats(1, __shfl_sync(FULL, cv, j), g * 32 + j, 1, cv, tid);
    __syncwarp();
    if (grank < kk) {
      wtv[g * kk + grank] = cv;
      wti[g * kk + grank] = tid;
    }
    unsigned b0 = __ballot_sync(FULL, grank == 0), b1 = __ballot_sync(FULL, grank == 1);
    float m1 = __shfl_sync(FULL, cv, b0 ? __ffs(b0) - 1 : 0), m2 = __shfl_sync(FULL, cv, b1 ? __ffs(b1) - 1 : 0);
    if (lane == 0) wgs[g] = (b0 ? m1 : NEG_INF) + (b1 ? m2 : NEG_INF);
  }
  if (tid < topk) {
    wsel[tid] = 0;
    wssel[tid] = s0;
  }
  tl_probe(11, tr);
  __syncthreads();
  tl_probe(12, tr);
  if (in) {
    // the kept groups: lane h ranks group h
    int hr = 0;
    float gh = lane < groups ? wgs[lane] : 0.f;
    if (lane < groups)
      for (int h = 0; h < groups; h++) hr += beats(1, wgs[h], h, 1, gh, lane);
    unsigned kept = __ballot_sync(FULL, lane < groups && hr < keepGroups);
    if ((kept >> g & 1) && grank < kk) {
      int rank = 0;
      for (unsigned m = kept; m; m &= m - 1) {
        int h = __ffs(m) - 1;
        if (KK) {
          float tv[KK ? KK : 1];
          int ti[KK ? KK : 1];
#pragma unroll
          for (int r = 0; r < KK; r++) tv[r] = wtv[h * KK + r], ti[r] = wti[h * KK + r];
#pragma unroll
          for (int r = 0; r < KK; r++) rank += beats(1, tv[r], ti[r], 1, cv, tid);
        } else {
          for (int r = 0; r < kk; r++) rank += beats(1, wtv[h * kk + r], wti[h * kk + r], 1, cv, tid);
        }
      }
      if (rank < topk) {
        wsel[rank] = tid;
        wssel[rank] = sv;
      }
    }
  }
  tl_probe(13, tr);
  __syncthreads();
  tl_probe(14, tr);
  route_slots<KK>(wsel, wssel, topk, normalize, rscale, ids, wts);
}

// route_row routes one row whose logit for expert tid is x (threads tid <
// E; E <= MAXE <= blockDim), the expert's selection bias bv when hasb,
// writing ids[0..topk) and wts[0..topk). warp: 0 the ranks by threads, 1
// by warps where the groups allow (route_row_warp), 2 the same compiled for
// eight experts per row when topk is 8 (the host's routeMode).
template <int MAXE>
__device__ __forceinline__ void route_row(float x, int E, bool hasb, float bv, int groups, int keepGroups, int topk, int sigm, int normalize, float rscale,
                                          int* ids, float* wts, int warp = 0) {
  unsigned long long tr = tl_now();
  __shared__ float s[MAXE], c[MAXE], gs[MAXE], m1[MAXE], m2[MAXE];
  __shared__ int kept[MAXE], gtop[MAXE];
  __shared__ int sel[256];
  __shared__ float ssel[256];
  __shared__ double shd[32];
  __shared__ float shf[32];
  int tid = threadIdx.x;
  bool in = tid < E;
  float sv = 0.f;
  if (sigm) {
    sv = (float)(1.0 / (1.0 + exp(-(double)x)));
  } else {
    float mx = block_max(in ? x : NEG_INF, shf);
    double e = in ? exp((double)(x - mx)) : 0.0;
    double sum = block_sumd(e, shd);
    sv = (float)((double)(float)e / sum);
  }
  float cv = hasb && in ? sv + bv : sv;
  tl_probe(10, tr);
  if (warp && E == groups * 32 && groups <= 32 && topk <= 32 && keepGroups <= groups) {
    if (warp == 2 && topk == 8)
      route_row_warp<8>(sv, cv, E, groups, keepGroups, topk, normalize, rscale, ids, wts, tr, gs, c, gtop, sel, ssel);
    else
      route_row_warp<0>(sv, cv, E, groups, keepGroups, topk, normalize, rscale, ids, wts, tr, gs, c, gtop, sel, ssel);
    return;
  }
  if (in) {
    s[tid] = sv;
    c[tid] = cv;
  }
  if (tid < topk) sel[tid] = 0;
  if (tid < groups) m1[tid] = m2[tid] = NEG_INF;
  if (tid < keepGroups) kept[tid] = tid;  // overwritten below (unless NaNs tie ranks)
  int per = E / groups, g = tid / per, kk = min(topk, per);
  if (tid < groups * kk) gtop[tid] = tid / kk * per + tid % kk;  // placeholders, as kept
  __syncthreads();
  if (tid < topk) ssel[tid] = s[0];  // as sel[tid] = 0 (overwritten below unless NaNs tie ranks)
  int grank = 0;
  if (in) {  // the group's two largest scores, and its kk largest in gtop
    for (int j = g * per; j < (g + 1) * per; j++) grank += beats(1, c[j], j, 1, cv, tid);
    if (grank == 0) m1[g] = cv;
    if (grank == 1) m2[g] = cv;
    if (grank < kk) gtop[g * kk + grank] = tid;
  }
  __syncthreads();
  if (tid < groups) gs[tid] = m1[tid] + (per == 1 ? 0.f : m2[tid]);
  __syncthreads();
  if (tid < groups) {
    int rank = 0;
    for (int h = 0; h < groups; h++) rank += beats(1, gs[h], h, 1, gs[tid], tid);
    if (rank < keepGroups) kept[rank] = tid;
  }
  __syncthreads();
  bool cand = false;
  for (int k = 0; k < keepGroups; k++) cand |= kept[k] == g;
  // An expert is among the top k of the kept groups only if it is among the
  // top k of its group, and then only the top k of each kept group can beat
  // it: its rank among those is its rank among all (and is >= topk when the
  // rank among all is).
  if (in && cand && grank < kk) {
    int rank = 0;
    for (int k = 0; k < keepGroups; k++)
      for (int r = 0; r < kk; r++) {
        int j = gtop[kept[k] * kk + r];
        rank += beats(1, c[j], j, 1, cv, tid);
      }
    if (rank < topk) {
      sel[rank] = tid;
      ssel[rank] = sv;
    }
  }
  __syncthreads();
  route_slots(sel, ssel, topk, normalize, rscale, ids, wts);
}

extern "C" __global__ void k_route(const float* logits, i64 ld, int E, const float* bias, int groups, int keepGroups, int topk,
                                   int sigm, int normalize, float rscale, int* ids, float* wts, int warp) {
  float bv = bias && threadIdx.x < E ? bias[threadIdx.x] : 0.f;  // read-only: before PDL_ENTER
  PDL_ENTER();
  i64 r = blockIdx.x;
  float x = threadIdx.x < E ? logits[r * ld + threadIdx.x] : 0.f;
  route_row<1024>(x, E, bias != 0, bv, groups, keepGroups, topk, sigm, normalize, rscale, ids + r * topk, wts + r * topk, warp);
}

// k_norm_route is decode's way into a MoE layer in one kernel (sm_90): x += a;
// h = RMSNorm(x)·w; logits = h·Wrᵀ (BF16 router [E][cols]); the routing of
// k_route — bit-identical to k_addrmsnorm (nt threads), gemv_bf16v1 and
// k_route, whose arithmetic it shares. One cluster of NR_CL blocks of 512
// threads: every block normalises the row itself into shared memory and
// multiplies its E/NR_CL router rows by it, NR_ROWS per warp sharing the
// loads of h (their first chunks, the norm weights and the bias are loaded
// before PDL_ENTER); the logits go to block 0's shared memory (distributed
// shared memory), and after a cluster barrier block 0 stores x (no block
// may see it changed before that), the logits, and routes. Needs cols <=
// NR_MAXC, cols % 8 == 0, nt <= 512 and NU·nt >= cols, E % NR_CL == 0 and
// E <= NR_MAXE.
#define NR_CL 8
#define NR_ROWS 2
#define NR_MAXE 256
#define NR_MAXC 4096
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NR_CLUSTER __cluster_dims__(NR_CL, 1, 1)
#else
#define NR_CLUSTER
#endif
extern "C" __global__ void NR_CLUSTER __launch_bounds__(512) k_norm_route(float* h, float* x, const float* a, const float* w, int cols, int nt, float eps,
                                                                         const u16* __restrict__ Wr, int E, float* logits, const float* bias, int groups,
                                                                         int keepGroups, int topk, int sigm, int normalize, float rscale, int* ids,
                                                                         float* wts, int warp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ __align__(16) float xs[NR_MAXC];  // h
  __shared__ float vs[NR_MAXC];                // x + a
  __shared__ float lg[NR_MAXE];                // block 0: the logits
  __shared__ double sh[32];
  unsigned long long tst = tl_now();
  u32 rank;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  int lane = threadIdx.x & 31, wi = threadIdx.x >> 5, nw = blockDim.x >> 5, RB = E / NR_CL;
  uint4 wp[NR_ROWS][GV_P];
#pragma unroll
  for (int j = 0; j < NR_ROWS; j++) {
    int i = min(wi + j * nw, RB - 1);
    gv_load<GvBF16>((const uint4*)(Wr + (i64)(rank * RB + i) * cols), cols, wp[j]);
  }
  float wv[NU];
  addnorm_w(w, cols, nt, wv);
  float bv = bias && rank == 0 && threadIdx.x < E ? bias[threadIdx.x] : 0.f;
  // every block has started before any writes to block 0's shared memory
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  unsigned long long t0 = tl_now();
  PDL_ENTER();
  tl_started(tst);
  tl_probe(5, t0);
  t0 = tl_now();
  addnorm_row(xs, vs, x, a, wv, cols, nt, eps, sh);
  __syncthreads();
  tl_probe(0, t0);
  if (rank == 0)
    for (int i = threadIdx.x; i < cols; i += blockDim.x) h[i] = xs[i];
  u32 lg0;  // block 0's lg
  asm("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(lg0) : "r"(smem_addr(lg)));
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  tl_probe(1, t0);
  // the warp's rows, each as gv_dot sums it, sharing the loads of h
  float acc[NR_ROWS];
  const uint4* wr[NR_ROWS];
#pragma unroll
  for (int j = 0; j < NR_ROWS; j++) {
    acc[j] = 0.f;
    wr[j] = (const uint4*)(Wr + (i64)(rank * RB + min(wi + j * nw, RB - 1)) * cols);
  }
  gv_dot_rows<NR_ROWS>(wp, wr, xs, cols, acc);
#pragma unroll
  for (int j = 0; j < NR_ROWS; j++) {
    int i = wi + j * nw;
    float v = warp_sum(acc[j]);
    if (i < RB && lane == 0) asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(lg0 + 4 * (rank * RB + i)), "f"(v) : "memory");
  }
  tl_probe(2, t0);
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  tl_probe(3, t0);
  if (rank != 0) {
    tl_end();
    return;
  }
  for (int i = threadIdx.x; i < cols; i += blockDim.x) x[i] = vs[i];
  if (logits && threadIdx.x < E) logits[threadIdx.x] = lg[threadIdx.x];
  route_row<NR_MAXE>(threadIdx.x < E ? lg[threadIdx.x] : 0.f, E, bias != 0, bv, groups, keepGroups, topk, sigm, normalize, rscale, ids, wts, warp);
  tl_probe(4, t0);
  tl_end();
#endif
}

// k_route_p: k_norm_route with the router's logits from gemv_fp8v2r's
// partials P (nb blocks of E) instead of its own GEMV: the same residual
// add and norm (h and x bit for bit), logit e = inv·Σ_b P[b·E + e] (b in
// the order b = p, p + 16, ... within 16 partial sums, those in order), the
// same routing. The partials are loaded right after the wait, beside the
// norm. nb <= 256, E / NR_CL <= 32.
extern "C" __global__ void NR_CLUSTER __launch_bounds__(512) k_route_p(float* h, float* x, const float* a, const float* w, int cols, int nt, float eps,
                                                                      const float* P, int nb, int E, float* logits, const float* bias, int groups,
                                                                      int keepGroups, int topk, int sigm, int normalize, float rscale, int* ids,
                                                                      float* wts, int warp) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ __align__(16) float xs[NR_MAXC];  // h
  __shared__ float vs[NR_MAXC];                // x + a
  __shared__ float lg[NR_MAXE];                // block 0: the logits
  __shared__ float ps[16][32];
  __shared__ double sh[32];
  u32 rank;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  int tid = threadIdx.x, RB = E / NR_CL, el = tid & 31, part = tid >> 5;
  float wv[NU];
  addnorm_w(w, cols, nt, wv);
  float bv = bias && rank == 0 && tid < E ? bias[tid] : 0.f;
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  PDL_ENTER();
  unsigned long long t0 = tl_now();
  float pp[16];  // this thread's partials of expert rank·RB + el: blocks part, part + 16, ...
#pragma unroll
  for (int j = 0; j < 16; j++) {
    int b = part + 16 * j;
    pp[j] = el < RB && b < nb ? P[(i64)b * E + rank * RB + el] : 0.f;
  }
  float inv = addnorm_row(xs, vs, x, a, wv, cols, nt, eps, sh);
  __syncthreads();
  tl_probe(0, t0);
  if (rank == 0)
    for (int i = tid; i < cols; i += blockDim.x) h[i] = xs[i];
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < 16; j++) sum += pp[j];
  ps[part][el] = sum;
  u32 lg0;  // block 0's lg
  asm("mapa.shared::cluster.u32 %0, %1, 0;" : "=r"(lg0) : "r"(smem_addr(lg)));
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  __syncthreads();
  tl_probe(1, t0);
  if (tid < RB) {
    float l = 0.f;
    for (int q = 0; q < 16; q++) l += ps[q][tid];
    asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(lg0 + 4 * (rank * RB + tid)), "f"(l * inv) : "memory");
  }
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  tl_probe(3, t0);
  if (rank != 0) {
    tl_end();
    return;
  }
  for (int i = tid; i < cols; i += blockDim.x) x[i] = vs[i];
  if (logits && tid < E) logits[tid] = lg[tid];
  route_row<NR_MAXE>(tid < E ? lg[tid] : 0.f, E, bias != 0, bv, groups, keepGroups, topk, sigm, normalize, rscale, ids, wts, warp);
  tl_probe(4, t0);
  tl_end();
#endif
}

// ---------------------------------------------------------------------------
// Lightning attention. spans: int[3*n] = (row, n, pos); states: per span the
// device address of its [H*d, d] float32 state (contiguous).

// rec_qknorm: the per-head RMSNorm and RoPE of k_rmsnorm_rope, of head h's
// q and k in one row, into qs and ks (shared, d floats each), by a block
// of at least 2·NB threads (NB = the 32..256 threads k_rmsnorm_rope uses
// for a head, d <= NB): threads [0, NB) do q, [NB, 2·NB) k, each with the
// values and the sum order of k_rmsnorm_rope (bit-identical). wq, wk are
// the heads' norm weights. With tab, c is the thread's pair's (cos, sin)
// from the rows' table (rec_cs), instead of rope_cs at position p. Ends
// with a barrier.
__device__ void rec_qknorm(float* qs, float* ks, const float* qr, const float* kr, const float* wq, const float* wk, int d, int NB, float eps, int dim,
                           double theta, float p, bool tab = false, float2 c = make_float2(0.f, 0.f)) {
  __shared__ double shd[16];
  int tid = threadIdx.y * blockDim.x + threadIdx.x, lane = tid & 31, w = tid >> 5;
  bool isk = tid >= NB, act = tid < 2 * NB;
  int i = isk ? tid - NB : tid;
  const float* vr = isk ? kr : qr;
  float v = act && i < d ? vr[i] : 0.f, v2 = 0.f;
  int half = dim / 2;
  if (act && i < half) v2 = vr[i + half];
  double ss = act && i < d ? (double)v * (double)v : 0.0;
  ss = warp_sumd(ss);
  if (lane == 0 && w < 2 * NB / 32) shd[w] = ss;
  __syncthreads();
  if (act && i < d) {
    int nw = NB / 32, w0 = isk ? nw : 0;
    double s = 0;
    for (int u = 0; u < nw; u++) s += shd[w0 + u];
    float inv = (float)(1.0 / sqrt(s / (double)d + (double)eps));
    const float* ws = isk ? wk : wq;
    float* out = isk ? ks : qs;
    if (i < half) {
      float a = v * inv * ws[i], b = v2 * inv * ws[i + half];
      rope_apply(a, b, tab ? c : rope_cs(i, dim, theta, p));
      out[i] = a;
      out[i + half] = b;
    } else if (i >= 2 * half) {
      out[i] = v * inv * ws[i];
    }
  }
  __syncthreads();
}

// rec_cs loads the (cos, sin) that rec_qknorm's thread needs for row
// row from the table cs (rope_cs_row): staged data, which may be loaded
// before the PDL wait.
__device__ __forceinline__ float2 rec_cs(const float2* cs, i64 row, int d, int NB, int dim) {
  int tid = threadIdx.y * blockDim.x + threadIdx.x, half = dim / 2;
  int i = tid >= NB ? tid - NB : tid;
  return cs && tid < 2 * NB && i < half && i < d ? cs[row * half + i] : make_float2(0.f, 0.f);
}

#define REC_PF 8 /* state values per thread loaded before PDL_ENTER (d <= REC_PF·R) */

// rec_first: thread (jx, ir)'s part of the first token's recurrence for
// value column j: S rows ir, ir+R, ... from s0 (loaded before PDL_ENTER)
// updated to λS + k vⱼ and stored, and Σ q·S over them returned.
__device__ __forceinline__ float rec_first(float* S, const float (&s0)[REC_PF], float lam, const float* kt, const float* qt, float vj, int j, int ir,
                                           int R, int d) {
  float acc = 0.f;
#pragma unroll
  for (int u = 0; u < REC_PF; u++) {
    int i = ir + u * R;
    if (i < d) {
      float s = lam * s0[u] + kt[i] * vj;
      S[i * d + j] = s;
      acc += qt[i] * s;
    }
  }
  return acc;
}

// rec_sum returns, to the threads with ir == 0, the sum over the block's R
// rows of threads of their acc for column jx (sh: R·JB floats).
__device__ __forceinline__ float rec_sum(float* sh, float acc, int jx, int ir, int JB, int R) {
  sh[ir * JB + jx] = acc;
  __syncthreads();
  float sum = 0.f;
  if (ir == 0)
    for (int rr = 0; rr < R; rr++) sum += sh[rr * JB + jx];
  return sum;
}

// Recurrent form: grid = (spans*H, d/JB), block = (JB, R); thread (jx, ir)
// owns column j = blockIdx.y*JB + jx of S for rows i = ir, ir+R, ...
// With nw set, q and k are first normalised and rotated per head as
// k_rmsnorm_rope does (rec_qknorm; nw: q heads' weights, then k heads' when
// wfull, else one head's for all; positions pos[row]), into shared memory,
// leaving q and k unchanged. Dynamic shared memory: R·JB (+ 2·d) floats.
extern "C" __global__ void k_lightning_rec(float* o, i64 ldo, const float* q, i64 ldq, const float* k, i64 ldk, const float* v, i64 ldv,
                                           const int* spans, const i64* states, const float* decay, int H, int d, float scale, const float* nw,
                                           int wfull, int NB, float eps, int dim, double theta, const int* pos, const float2* cs, int early) {
  if (!early) PDL_ENTER();
  extern __shared__ float sh[];
  int sp = blockIdx.x / H, h = blockIdx.x % H;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1];
  if (n == 0) return;
  float* S = (float*)states[sp] + (i64)h * d * d;
  float lam = (float)exp(-(double)decay[h]);
  int JB = blockDim.x, jx = threadIdx.x, j = blockIdx.y * JB + jx, ir = threadIdx.y, R = blockDim.y;
  // The state (written only by earlier steps' kernels), the spans, states
  // and decays (staged before the step's first kernel) do not depend on the
  // kernel before this one: this thread's values of S for the first token
  // are loaded before PDL_ENTER, overlapping that kernel's end (unless
  // early is 0: RINGO_CUDA_REC_EARLY=0, for comparisons).
  bool pf = d <= REC_PF * R;
  float s0[REC_PF];
#pragma unroll
  for (int u = 0; u < REC_PF; u++) {
    int i = ir + u * R;
    s0[u] = pf && i < d ? S[i * d + j] : 0.f;
  }
  if (early) PDL_ENTER();
  float* qs = sh + R * JB;
  float* ks = qs + d;
  for (int t = 0; t < n; t++) {
    i64 row = row0 + t;
    const float* qt = q + row * ldq + (i64)h * d;
    const float* kt = k + row * ldk + (i64)h * d;
    if (nw) {
      rec_qknorm(qs, ks, qt, kt, wfull ? nw + (i64)h * d : nw, wfull ? nw + (i64)(H + h) * d : nw, d, NB, eps, dim, theta, cs ? 0.f : (float)pos[row],
                 cs != 0, rec_cs(cs, row, d, NB, dim));
      qt = qs;
      kt = ks;
    }
    float vj = v[row * ldv + (i64)h * d + j];
    float acc = 0.f;
    if (t == 0 && pf) {
      acc = rec_first(S, s0, lam, kt, qt, vj, j, ir, R, d);
    } else {
      for (int i = ir; i < d; i += R) {
        float s = lam * S[i * d + j] + kt[i] * vj;
        S[i * d + j] = s;
        acc += qt[i] * s;
      }
    }
    float sum = rec_sum(sh, acc, jx, ir, JB, R);
    if (ir == 0) o[row * ldo + (i64)h * d + j] = sum * scale;
    __syncthreads();
  }
}

// k_lightning_recg: k_lightning_rec (with the QK norm, nw set) for spans of
// one token each, with RMSNormSigmoidMul of its output fused in (group =
// RG_H heads, d = 128): grid (spans*H, 4) of blocks (32, 16), in clusters
// of RG_H heads x 4 column blocks, one norm group of one span. Each block
// keeps its 32 outputs in shared memory; after a cluster barrier, threads
// t < 256 read the group's values t and t+256 from their blocks (DSMEM)
// and sum their squares in k_rmsnorm_sigmul's order (its 256 threads, the
// same warps, the same sequential sum over warps: bit-identical), then each
// block stores dst = o·inv·w ⊙ sigmoid(g) for its columns into o (the
// output is never stored unnormalised). A second barrier keeps every block
// until its peers have read its outputs. RINGO_CUDA_REC_GATE=0 turns it off.
// early: the loads of v and the gate with q and k (below). cs: the rows'
// RoPE table (rope_cs_row) or null.
#define RG_H 4
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define RG_CLUSTER __cluster_dims__(RG_H, 4, 1)
#else
#define RG_CLUSTER
#endif
#define RECG_PARAMS                                                                                                                  \
  float *o, i64 ldo, const float *q, i64 ldq, const float *k, i64 ldk, const float *v, i64 ldv, const int *spans, const i64 *states,  \
      const float *decay, int H, int d, float scale, const float *nw, int wfull, int NB, float eps, int dim, double theta, const int *pos, \
      const float2 *cs, const float *gt, i64 ldg, const float *gw, int gwfull, float geps, int early
__device__ __forceinline__ void lightning_recg(RECG_PARAMS) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ float sh[];
  __shared__ float os[32];
  __shared__ double shd[16];
  unsigned long long tst = tl_now();
  int sp = blockIdx.x / H, h = blockIdx.x % H;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1];
  if (n == 0) return;  // the whole cluster: one span
  float* S = (float*)states[sp] + (i64)h * d * d;
  float lam = (float)exp(-(double)decay[h]);
  int JB = blockDim.x, jx = threadIdx.x, j = blockIdx.y * JB + jx, ir = threadIdx.y, R = blockDim.y;
  int tid = ir * JB + jx, lane = tid & 31, w = tid >> 5;
  float s0[REC_PF];
#pragma unroll
  for (int u = 0; u < REC_PF; u++) {
    int i = ir + u * R;
    s0[u] = i < d ? S[i * d + j] : 0.f;
  }
  // the gate norm's weight (ir == 0), before the wait
  constexpr int G = RG_H * 128;
  int gi = h / RG_H, gc = (h % RG_H) * 128 + j;  // group and column within it
  float wg = ir == 0 ? (gwfull ? gw + (i64)gi * G : gw)[gc] : 0.f;
  // and the RoPE table's pair the thread rotates (staged data)
  i64 row = row0;
  float2 csv = rec_cs(cs, row, d, NB, dim);
  PDL_ENTER();
  tl_started(tst);
  tl_span(5, tst);
  unsigned long long t0 = tl_now();
  float* qs = sh + R * JB;
  float* ks = qs + d;
  // v and the gate (ir == 0) asked for at once with q and k, rather than
  // after the QK norm's and the cluster's barriers, each an extra round
  // trip to L2 on the critical path (RINGO_CUDA_REC_LOADS=0 for
  // comparisons: after them, as before)
  float vj = 0.f, gv = 0.f;
  if (early) {
    vj = v[row * ldv + (i64)h * d + j];
    if (ir == 0) gv = gt[row * ldg + (i64)h * d + j];
  }
  rec_qknorm(qs, ks, q + row * ldq + (i64)h * d, k + row * ldk + (i64)h * d, wfull ? nw + (i64)h * d : nw, wfull ? nw + (i64)(H + h) * d : nw, d, NB, eps,
             dim, theta, cs ? 0.f : (float)pos[row], cs != 0, csv);
  tl_probe(20, t0);
  if (!early) vj = v[row * ldv + (i64)h * d + j];
  float sum = rec_sum(sh, rec_first(S, s0, lam, ks, qs, vj, j, ir, R, d), jx, ir, JB, R);
  if (ir == 0) os[jx] = sum * scale;
  tl_probe(21, t0);
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  tl_probe(22, t0);
  // the group's sum of squares, as k_rmsnorm_sigmul's 256 threads take it
  double ss = 0;
  if (tid < 256) {
#pragma unroll
    for (int u = 0; u < 2; u++) {
      int c = tid + 256 * u;  // column within the group
      u32 a, rk = (u32)((c >> 7) + RG_H * ((c & 127) >> 5));
      asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(smem_addr(os + (c & 31))), "r"(rk));
      float x;
      asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(x) : "r"(a) : "memory");
      ss += (double)x * (double)x;
    }
  }
  ss = warp_sumd(ss);
  if (lane == 0) shd[w] = ss;
  __syncthreads();
  double t = 0;
  for (int i = 0; i < 16; i++) t += shd[i];
  float inv = (float)(1.0 / sqrt(t / (double)G + (double)geps));
  tl_probe(23, t0);
  // this block's reads of its peers are done
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  if (ir == 0) {
    i64 c = (i64)h * d + j;
    o[row * ldo + c] = sigmul(os[jx] * inv * wg, early ? gv : gt[row * ldg + c]);
  }
  tl_probe(24, t0);
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  tl_span(7, t0);
  tl_end();
#endif
}
// k_lightning_recg at up to 128 registers per thread (one block per SM),
// k_lightning_recg2 at 64 (two): a cluster of 16 blocks needs 16 SMs of
// one GPC with room for a block, so at one block per SM only 7 fit on an
// H200, and Ring-flash's 32 heads launch 8 (Backend.recgTwo chooses)
extern "C" __global__ void RG_CLUSTER __launch_bounds__(512) k_lightning_recg(RECG_PARAMS) {
  lightning_recg(o, ldo, q, ldq, k, ldk, v, ldv, spans, states, decay, H, d, scale, nw, wfull, NB, eps, dim, theta, pos, cs, gt, ldg, gw, gwfull, geps,
                 early);
}
extern "C" __global__ void RG_CLUSTER __launch_bounds__(512, 2) k_lightning_recg2(RECG_PARAMS) {
  lightning_recg(o, ldo, q, ldq, k, ldk, v, ldv, spans, states, decay, H, d, scale, nw, wfull, NB, eps, dim, theta, pos, cs, gt, ldg, gw, gwfull, geps,
                 early);
}

// Chunked form (chunk C): grid = (spans*H, d/BV), 256 threads; block handles
// the value columns [jb, jb+BV) of one head:
//   O[i] = s*( sum_{j<=i} l^{i-j}(q_i.k_j) v_j + l^{i+1} q_i S )
//   S'   = l^{n} S + sum_j l^{n-1-j} k_j (x) v_j
// Dynamic shared memory: Q, K [C][d+1], V [C][BV], A [C][C+1], S [d][BV], pw[C+1].
extern "C" __global__ void k_lightning_chunk(float* o, i64 ldo, const float* q, i64 ldq, const float* k, i64 ldk, const float* v, i64 ldv,
                                             const int* spans, const i64* states, const float* decay, int H, int d, float scale, int C, int BV) { PDL_ENTER();
  extern __shared__ float sh[];
  int sp = blockIdx.x / H, h = blockIdx.x % H;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1];
  if (n == 0) return;
  int jb = blockIdx.y * BV;
  int dp = d + 1;
  float* Qs = sh;
  float* Ks = Qs + C * dp;
  float* Vs = Ks + C * dp;
  float* A = Vs + C * BV;
  float* Ss = A + C * (C + 1);
  float* pw = Ss + d * BV;
  float* S = (float*)states[sp] + (i64)h * d * d;
  double a = (double)decay[h];
  int tid = threadIdx.x, nt = blockDim.x;
  for (int m = tid; m <= C; m += nt) pw[m] = (float)exp(-a * (double)m);
  for (int e = tid; e < d * BV; e += nt) {
    int m = e / BV, jj = e % BV;
    Ss[e] = S[(i64)m * d + jb + jj];
  }
  __syncthreads();
  for (int c0 = 0; c0 < n; c0 += C) {
    int nc = min(C, n - c0);
    for (int e = tid; e < nc * d; e += nt) {
      int i = e / d, m = e % d;
      i64 row = row0 + c0 + i;
      Qs[i * dp + m] = q[row * ldq + (i64)h * d + m];
      Ks[i * dp + m] = k[row * ldk + (i64)h * d + m];
    }
    for (int e = tid; e < nc * BV; e += nt) {
      int i = e / BV, jj = e % BV;
      Vs[i * BV + jj] = v[(i64)(row0 + c0 + i) * ldv + (i64)h * d + jb + jj];
    }
    __syncthreads();
    for (int e = tid; e < nc * nc; e += nt) {
      int i = e / nc, j = e % nc;
      float s = 0.f;
      if (j <= i) {
        for (int m = 0; m < d; m++) s += Qs[i * dp + m] * Ks[j * dp + m];
        s *= pw[i - j];
      }
      A[i * (C + 1) + j] = s;
    }
    __syncthreads();
    for (int e = tid; e < nc * BV; e += nt) {
      int i = e / BV, jj = e % BV;
      float acc = 0.f;
      for (int j = 0; j <= i; j++) acc += A[i * (C + 1) + j] * Vs[j * BV + jj];
      float f = pw[i + 1];
      for (int m = 0; m < d; m++) acc += (Qs[i * dp + m] * f) * Ss[m * BV + jj];
      o[(i64)(row0 + c0 + i) * ldo + (i64)h * d + jb + jj] = scale * acc;
    }
    __syncthreads();
    float ln = pw[nc];
    for (int e = tid; e < d * BV; e += nt) {
      int m = e / BV, jj = e % BV;
      float s = Ss[e] * ln;
      for (int j = 0; j < nc; j++) s += (pw[nc - 1 - j] * Ks[j * dp + m]) * Vs[j * BV + jj];
      Ss[e] = s;
    }
    __syncthreads();
  }
  for (int e = tid; e < d * BV; e += nt) {
    int m = e / BV, jj = e % BV;
    S[(i64)m * d + jb + jj] = Ss[e];
  }
}

// ---------------------------------------------------------------------------
// Softmax attention. caches: per span (K address, V address, K stride, V stride).

// k_kvstore copies every span's k, v rows to cache positions pos..pos+n-1.
extern "C" __global__ void k_kvstore(const float* k, i64 ldk, const float* v, i64 ldv, const int* spans, const i64* caches, int cols) { PDL_ENTER();
  int sp = blockIdx.y;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1], pos = spans[3 * sp + 2];
  float* K = (float*)caches[4 * sp];
  float* V = (float*)caches[4 * sp + 1];
  i64 lK = caches[4 * sp + 2], lV = caches[4 * sp + 3];
  GRID_LOOP((i64)n * cols) {
    i64 r = idx / cols, c = idx % cols;
    K[(pos + r) * lK + c] = k[(row0 + r) * ldk + c];
    V[(pos + r) * lV + c] = v[(row0 + r) * ldv + c];
  }
}

#define ATT_KB 4 /* keys per warp whose rows attn_group loads at once */
// attn_group<G>: decode attention (k_attn, k_attn_g2/4/8), grid (rows,
// H/G, S), 256 threads (head dim <= 256): block (r, y, z) computes query
// heads y·G .. y·G+G−1 of row r (G dividing H/Hkv, so one KV head) over keys
// [z*per, min(L, (z+1)*per)) with an online softmax over blocks of 256 keys
// (one warp per key for the dot products, every key row meeting the G
// queries; groups of hd threads taking every ngrp-th value row for P·V). With
// S = 1 it writes the output; otherwise partial (max, sum, acc[hd]) per head
// to part for k_attn_combine. k_attn (G = 1) reads every key and value row
// once per query head, k_attn_g<G> once per G heads, with each head's
// arithmetic in the same order.
template <int G>
__device__ __forceinline__ void attn_group(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches, int H,
                                           int Hkv, int hd, float scale, float* part) {
  __shared__ float qs[G][256];
  __shared__ float p[G][256];
  __shared__ float shf[32];
  int r = blockIdx.x, h0 = blockIdx.y * G, z = blockIdx.z, S = gridDim.z, tid = threadIdx.x;
  int lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  int sp = -1;
  for (int i = 0; i < nspans; i++)
    if (r >= spans[3 * i] && r < spans[3 * i] + spans[3 * i + 1]) {
      sp = i;
      break;
    }
  if (sp < 0) return;
  unsigned long long t0 = tl_now();
  int L = spans[3 * sp + 2] + (r - spans[3 * sp]) + 1;
  int per = (L + S - 1) / S;
  int jb = z * per, je = min(L, jb + per);
  int kh = h0 / (H / Hkv);
  const float* K = (const float*)caches[4 * sp] + (i64)kh * hd;
  const float* V = (const float*)caches[4 * sp + 1] + (i64)kh * hd;
  i64 lK = caches[4 * sp + 2], lV = caches[4 * sp + 3];
#pragma unroll
  for (int g = 0; g < G; g++)
    if (tid < hd) qs[g][tid] = q[(i64)r * ldq + (i64)(h0 + g) * hd + tid];
  __syncthreads();
  tl_probe(16, t0);
  float m[G], l[G], acc[G];
#pragma unroll
  for (int g = 0; g < G; g++) {
    m[g] = NEG_INF;
    l[g] = 0.f;
    acc[g] = 0.f;
  }
  int ngrp = blockDim.x / hd, grp = tid / hd, col = tid - grp * hd;
  for (int j0 = jb; j0 < je; j0 += 256) {
    int nj = min(256, je - j0);
    // warp w takes keys w, w + nw, ...: ATT_KB of them at a time, their
    // values loaded before any is used (hd <= 256: 8 per lane and key)
    for (int jq = warp; jq < nj; jq += nw * ATT_KB) {
      float kv[ATT_KB][8];
#pragma unroll
      for (int kb = 0; kb < ATT_KB; kb++) {
        int jj = jq + kb * nw;
        const float* kr = K + (i64)(j0 + min(jj, nj - 1)) * lK;
#pragma unroll
        for (int ci = 0; ci < 8; ci++) kv[kb][ci] = lane + 32 * ci < hd ? kr[lane + 32 * ci] : 0.f;
      }
#pragma unroll
      for (int kb = 0; kb < ATT_KB; kb++) {
        int jj = jq + kb * nw;
        if (jj >= nj) break;
        float dot[G];
#pragma unroll
        for (int g = 0; g < G; g++) dot[g] = 0.f;
#pragma unroll
        for (int ci = 0; ci < 8; ci++) {
          int c = lane + 32 * ci;
          if (c < hd) {
#pragma unroll
            for (int g = 0; g < G; g++) dot[g] += qs[g][c] * kv[kb][ci];
          }
        }
#pragma unroll
        for (int g = 0; g < G; g++) {
          float d = warp_sum(dot[g]);
          if (lane == 0) p[g][jj] = d * scale;
        }
      }
    }
    __syncthreads();
    if (j0 == jb) tl_probe(17, t0);
#pragma unroll
    for (int g = 0; g < G; g++) {
      float s = tid < nj ? p[g][tid] : NEG_INF;
      float mnew = fmaxf(m[g], block_max(s, shf));
      float pj = tid < nj ? expf(s - mnew) : 0.f;
      p[g][tid] = pj;
      float psum = block_sum(pj, shf);
      float corr = expf(m[g] - mnew);
      l[g] = l[g] * corr + psum;
      acc[g] *= corr;
      m[g] = mnew;
    }
    __syncthreads();
    if (j0 == jb) tl_probe(18, t0);
    if (grp < ngrp) {
#pragma unroll 8
      for (int j = grp; j < nj; j += ngrp) {
        float v = V[(i64)(j0 + j) * lV + col];
#pragma unroll
        for (int g = 0; g < G; g++) acc[g] += p[g][j] * v;
      }
    }
    __syncthreads();
  }
  if (ngrp > 1) {
#pragma unroll
    for (int g = 0; g < G; g++)
      if (grp < ngrp) p[g][tid] = acc[g];
    __syncthreads();
    if (tid < hd) {
#pragma unroll
      for (int g = 0; g < G; g++) {
        acc[g] = p[g][tid];
        for (int gi = 1; gi < ngrp; gi++) acc[g] += p[g][gi * hd + tid];
      }
    }
  }
#pragma unroll
  for (int g = 0; g < G; g++) {
    int h = h0 + g;
    if (S == 1) {
      if (tid < hd) o[(i64)r * ldo + (i64)h * hd + tid] = acc[g] / l[g];
      continue;
    }
    float* pp = part + (((i64)r * H + h) * S + z) * (hd + 2);
    if (tid == 0) {
      pp[0] = m[g];
      pp[1] = l[g];
    }
    if (tid < hd) pp[2 + tid] = acc[g];
  }
  tl_probe(19, t0);
}
extern "C" __global__ void k_attn(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches, int H, int Hkv,
                                  int hd, float scale, float* part) { PDL_ENTER();
  attn_group<1>(o, ldo, q, ldq, spans, nspans, caches, H, Hkv, hd, scale, part);
}
// k_attn4: k_attn held to 64 registers (it takes 72), so that four blocks
// fit per SM: Ring-flash's 32 query heads in 16 key splits are 512 blocks,
// which at three per SM ran as two waves (thirtieth session; the same
// arithmetic; RINGO_CUDA_ATTN_BOUNDS=0 runs k_attn).
extern "C" __global__ void __launch_bounds__(256, 4) k_attn4(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches,
                                                            int H, int Hkv, int hd, float scale, float* part) { PDL_ENTER();
  attn_group<1>(o, ldo, q, ldq, spans, nspans, caches, H, Hkv, hd, scale, part);
}
extern "C" __global__ void k_attn_g2(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches, int H, int Hkv,
                                     int hd, float scale, float* part) { PDL_ENTER();
  attn_group<2>(o, ldo, q, ldq, spans, nspans, caches, H, Hkv, hd, scale, part);
}
extern "C" __global__ void k_attn_g4(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches, int H, int Hkv,
                                     int hd, float scale, float* part) { PDL_ENTER();
  attn_group<4>(o, ldo, q, ldq, spans, nspans, caches, H, Hkv, hd, scale, part);
}
extern "C" __global__ void k_attn_g8(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, int nspans, const i64* caches, int H, int Hkv,
                                     int hd, float scale, float* part) { PDL_ENTER();
  attn_group<8>(o, ldo, q, ldq, spans, nspans, caches, H, Hkv, hd, scale, part);
}

// k_attn_combine merges the S partial results of every (row, head): the
// splits' maxima and sums go to shared memory and each thread's values of
// AC_U splits at a time to registers, each batch of loads issued at once
// (reading them one after the other, k_attn_combine_seq, waited for ~S
// round trips to L2), then the same sums in the same order.
#define AC_U 16
#define AC_MAXS 128
extern "C" __global__ void k_attn_combine(float* o, i64 ldo, const int* spans, int nspans, int H, int hd, int S, const float* part) {
  __shared__ float hm[AC_MAXS], hl[AC_MAXS];
  PDL_ENTER();
  int r = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  bool found = false;
  for (int i = 0; i < nspans; i++)
    if (r >= spans[3 * i] && r < spans[3 * i] + spans[3 * i + 1]) found = true;
  if (!found) return;  // the whole block (one row)
  const float* pp = part + ((i64)r * H + h) * S * (hd + 2);
  for (int z = tid; z < S; z += blockDim.x) {
    hm[z] = pp[z * (hd + 2)];
    hl[z] = pp[z * (hd + 2) + 1];
  }
  bool act = tid < hd;
  float xv[AC_U];
#pragma unroll
  for (int u = 0; u < AC_U; u++) xv[u] = act && u < S ? pp[u * (hd + 2) + 2 + tid] : 0.f;
  __syncthreads();
  if (!act) return;
  float M = NEG_INF;
  for (int z = 0; z < S; z++) M = fmaxf(M, hm[z]);
  float l = 0.f, acc = 0.f;
  for (int z0 = 0; z0 < S; z0 += AC_U) {
    if (z0 > 0) {
#pragma unroll
      for (int u = 0; u < AC_U; u++) xv[u] = z0 + u < S ? pp[(z0 + u) * (hd + 2) + 2 + tid] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < AC_U; u++) {
      int z = z0 + u;
      if (z >= S || hl[z] == 0.f) continue;
      float f = expf(hm[z] - M);
      l += hl[z] * f;
      acc += xv[u] * f;
    }
  }
  o[(i64)r * ldo + (i64)h * hd + tid] = acc / l;
}
// k_attn_combine_seq is k_attn_combine as it was before, reading the
// partials one after the other (RINGO_CUDA_ATTN_COMBINE_SEQ=1, for
// comparisons).
extern "C" __global__ void k_attn_combine_seq(float* o, i64 ldo, const int* spans, int nspans, int H, int hd, int S, const float* part) { PDL_ENTER();
  int r = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
  bool found = false;
  for (int i = 0; i < nspans; i++)
    if (r >= spans[3 * i] && r < spans[3 * i] + spans[3 * i + 1]) found = true;
  if (!found || tid >= hd) return;
  const float* pp = part + ((i64)r * H + h) * S * (hd + 2);
  float M = NEG_INF;
  for (int z = 0; z < S; z++) M = fmaxf(M, pp[z * (hd + 2)]);
  float l = 0.f, acc = 0.f;
  for (int z = 0; z < S; z++) {
    const float* x = pp + z * (hd + 2);
    if (x[1] == 0.f) continue;
    float f = expf(x[0] - M);
    l += x[1] * f;
    acc += x[2 + tid] * f;
  }
  o[(i64)r * ldo + (i64)h * hd + tid] = acc / l;
}

// ===========================================================================
// Tensor-core kernels (fast mode, sm_80 and newer): BF16 inputs, FP32
// accumulation with mma.sync.m16n8k16. Fragment layout (g = lane/4, tg = lane%4):
//   A (16x16, row-major): a[0] = (g, 2tg..2tg+1), a[1] = (g+8, 2tg..), a[2] = (g, 2tg+8..), a[3] = (g+8, 2tg+8..)
//   B (16x8, k-major per column n): b[0] = (k 2tg..2tg+1, n g), b[1] = (k 2tg+8.., n g)
//   C (16x8): c[0..1] = (g, 2tg..2tg+1), c[2..3] = (g+8, 2tg..)
// Shared-memory operands are BF16 with k contiguous: A as [m][k], B as [n][k];
// row strides are padded by 8 halves so the fragment loads hit distinct banks.

__device__ __forceinline__ u32 lds32(const u16* p) { return *(const u32*)p; }

__device__ __forceinline__ void mma_bf16(float* c, const u32* a, u32 b0, u32 b1) {
#if __CUDA_ARCH__ >= 800
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

// A fragment of rows r..r+15, k columns k0..k0+15 of a [m][k] BF16 tile with stride ld.
__device__ __forceinline__ void lda_frag(u32* a, const u16* s, int ld, int r, int k0, int g, int tg) {
  a[0] = lds32(s + (r + g) * ld + k0 + 2 * tg);
  a[1] = lds32(s + (r + g + 8) * ld + k0 + 2 * tg);
  a[2] = lds32(s + (r + g) * ld + k0 + 8 + 2 * tg);
  a[3] = lds32(s + (r + g + 8) * ld + k0 + 8 + 2 * tg);
}

// ---------------------------------------------------------------------------
// moe_mma: the grouped expert GEMM of moe_gemm on tensor cores (BF16 experts).
// grid (ceil(N/64), maxTiles), 128 threads; tile BM rows (of one expert) x 64
// outputs, k steps of 64 with a register prefetch of the next step.

#define MM_BK 64
#define MM_LD 72

// With F8 the experts are E4M3 (Wv bytes) with block scales as in
// moe_gemv_fp8 (K % 16 == 0), widened to BF16 as they are loaded.
template <int BM, int WM, bool F8>
__device__ __forceinline__ void moe_mma_impl(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                             const int* ntiles, const void* Wv, int N, int K, const float* S, int br, int bc,
                                             float* Y, i64 ldy) {
  __shared__ __align__(16) u16 As[BM * MM_LD];
  __shared__ __align__(16) u16 Bs[64 * MM_LD];
  int ti = blockIdx.y;
  if (ti >= *ntiles) return;
  int e = tiles[3 * ti], p0 = tiles[3 * ti + 1], m = tiles[3 * ti + 2];
  int n0 = blockIdx.x * 64;
  const u16* W = (const u16*)Wv + (i64)e * N * K;
  const unsigned char* W8 = (const unsigned char*)Wv + (i64)e * N * K;
  const float* Se = F8 ? S + (i64)e * (N / br) * (K / bc) : 0;
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  constexpr int WN = 4 / WM;
  constexpr int MT = BM / WM / 16;
  constexpr int NT = 64 / WN / 8;
  constexpr int AL = BM * MM_BK / 4 / 128;  // 4-float groups of A per thread
  int wm = warp % WM, wn = warp / WM;
  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc[i][j][c] = 0.f;
  const float* xr[AL];
#pragma unroll
  for (int i = 0; i < AL; i++) {
    int r = (tid + 128 * i) / (MM_BK / 4);
    xr[i] = 0;
    if (r < m) xr[i] = X + (mode == 0 ? (i64)(perm[p0 + r] / topk) : (i64)(p0 + r)) * ldx;
  }
  bool wvec = (K & 7) == 0;
  float av[AL][4];
  uint4 bv[4];
  auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < AL; i++) {
      int c = ((tid + 128 * i) % (MM_BK / 4)) * 4;
#pragma unroll
      for (int j = 0; j < 4; j++) av[i][j] = (xr[i] && k0 + c + j < K) ? xr[i][k0 + c + j] : 0.f;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int idx = tid + 128 * i, r = idx / 8, c = (idx % 8) * 8;
      int n = n0 + r, k = k0 + c;
      if (F8) {
        bv[i] = make_uint4(0, 0, 0, 0);
        if (n < N && k + 8 <= K) {
          uint2 raw = *(const uint2*)(W8 + (i64)n * K + k);
          float sc = Se[(n / br) * (K / bc) + k / bc], f[8];
          fp8x4(raw.x, f);
          fp8x4(raw.y, f + 4);
          bv[i] = make_uint4(pack_bf16(f[0] * sc, f[1] * sc), pack_bf16(f[2] * sc, f[3] * sc), pack_bf16(f[4] * sc, f[5] * sc),
                             pack_bf16(f[6] * sc, f[7] * sc));
        }
      } else if (n < N && wvec && k + 8 <= K) {
        bv[i] = *(const uint4*)(W + (i64)n * K + k);
      } else {
        u16 t[8];
#pragma unroll
        for (int j = 0; j < 8; j++) t[j] = (n < N && k + j < K) ? W[(i64)n * K + k + j] : (u16)0;
        bv[i] = make_uint4(t[0] | ((u32)t[1] << 16), t[2] | ((u32)t[3] << 16), t[4] | ((u32)t[5] << 16), t[6] | ((u32)t[7] << 16));
      }
    }
  };
  auto store = [&]() {
#pragma unroll
    for (int i = 0; i < AL; i++) {
      int idx = tid + 128 * i, r = idx / (MM_BK / 4), c = (idx % (MM_BK / 4)) * 4;
      *(uint2*)(As + r * MM_LD + c) = make_uint2(pack_bf16(av[i][0], av[i][1]), pack_bf16(av[i][2], av[i][3]));
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int idx = tid + 128 * i, r = idx / 8, c = (idx % 8) * 8;
      *(uint4*)(Bs + r * MM_LD + c) = bv[i];
    }
  };
  load(0);
  store();
  __syncthreads();
  for (int k0 = 0; k0 < K; k0 += MM_BK) {
    bool more = k0 + MM_BK < K;
    if (more) load(k0 + MM_BK);
#pragma unroll
    for (int kk = 0; kk < MM_BK; kk += 16) {
      u32 a[MT][4];
#pragma unroll
      for (int i = 0; i < MT; i++) lda_frag(a[i], As, MM_LD, wm * (BM / WM) + 16 * i, kk, g, tg);
#pragma unroll
      for (int j = 0; j < NT; j++) {
        const u16* bp = Bs + (wn * (64 / WN) + 8 * j + g) * MM_LD + kk + 2 * tg;
        u32 b0 = lds32(bp), b1 = lds32(bp + 8);
#pragma unroll
        for (int i = 0; i < MT; i++) mma_bf16(acc[i][j], a[i], b0, b1);
      }
    }
    __syncthreads();
    if (more) {
      store();
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NT; j++) {
      int r = wm * (BM / WM) + 16 * i + g, n = n0 + wn * (64 / WN) + 8 * j + 2 * tg;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        int rr = r + 8 * h;
        if (rr >= m) continue;
        float* y = Y + (i64)(p0 + rr) * ldy;
        if (n < N) y[n] = acc[i][j][2 * h];
        if (n + 1 < N) y[n + 1] = acc[i][j][2 * h + 1];
      }
    }
}
extern "C" __global__ void __launch_bounds__(128) moe_mma16(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                            const int* ntiles, const u16* Wt, int N, int K, float* Y, i64 ldy) { PDL_ENTER();
  moe_mma_impl<16, 1, false>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, 0, 1, 1, Y, ldy);
}
extern "C" __global__ void __launch_bounds__(128) moe_mma64(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                            const int* ntiles, const u16* Wt, int N, int K, float* Y, i64 ldy) { PDL_ENTER();
  moe_mma_impl<64, 2, false>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, 0, 1, 1, Y, ldy);
}
extern "C" __global__ void __launch_bounds__(128) moe_mma16_fp8(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                                const int* ntiles, const unsigned char* Wt, int N, int K, const float* S, int br, int bc,
                                                                float* Y, i64 ldy) { PDL_ENTER();
  moe_mma_impl<16, 1, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, S, br, bc, Y, ldy);
}
extern "C" __global__ void __launch_bounds__(128) moe_mma64_fp8(const float* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                                const int* ntiles, const unsigned char* Wt, int N, int K, const float* S, int br, int bc,
                                                                float* Y, i64 ldy) { PDL_ENTER();
  moe_mma_impl<64, 2, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, S, br, bc, Y, ldy);
}

// ---------------------------------------------------------------------------
// Asynchronous copies and matrix loads (sm_80+).

// cp_async16 copies 16 bytes from global src to shared dst, or zeros them
// when !valid (src is then not read, but must still be a mapped address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0) : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
// ldsm4 loads four 8x8 BF16 matrices; lanes 8i..8i+7 give matrix i's row addresses.
__device__ __forceinline__ void ldsm4(u32* r, const void* p) {
#if __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#else
  __trap();
#endif
}
// ldsm4t is ldsm4 with each matrix transposed.
__device__ __forceinline__ void ldsm4t(u32* r, const void* p) {
#if __CUDA_ARCH__ >= 800
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
#else
  __trap();
#endif
}
// swz is the offset (in halves) of 16-byte chunk c of row r in a shared tile
// of rows of ld halves, the chunks of each row permuted by the row's low 3
// bits so that 8 rows' same chunk fall in distinct banks (ldmatrix, cp.async).
__device__ __forceinline__ int swz(int r, int c, int ld) { return r * ld + ((c ^ (r & 7)) << 3); }

// ---------------------------------------------------------------------------
// moe_mmb: the grouped expert GEMM for BF16 experts and BF16 activations,
// tiles of 128 rows (of one expert) x 128 weight rows, k steps of 64 through a
// 3-stage cp.async pipeline, fragments by ldmatrix; 256 threads, 8 warps of
// 64 x 32. X rows: mode 0 tokens perm[p]/topk, mode 1 sorted positions p.
// K % 8 == 0, ldx % 8 == 0. Dynamic shared memory MMB_SMEM bytes.
//   moe_mmb_gu: Wt is an expert's [gate; up] (2I x K); the block computes 64
//     columns c0.. of gate and of up (its tile's weight rows interleaved by 8:
//     gate c0..c0+7, up c0..c0+7, gate c0+8.., so that a warp holds gate and up
//     of the same outputs) and stores silu(gate)·up as BF16 in H (ldh), rows
//     the sorted positions. grid (ceil(I/64), maxTiles).
//   moe_mmb: Y[p] = X·Wtᵀ in FP32 (ldy), grid (ceil(N/128), maxTiles).

#define MMB_BK 64
#define MMB_ST 3
#define MMB_SMEM (MMB_ST * 256 * MMB_BK * 2)

// Hopper warpgroup MMA (sm_90a: wgmma), used by moe_mmb's WG form and
// k_fattn4: a warpgroup (4 warps) multiplies a 64x16 BF16 tile of A by the
// transpose of a 128x16 tile of B (both K-major, read from shared memory
// through matrix descriptors) into 64 FP32 accumulators per thread (thread t of the
// warpgroup holds rows 16·(t/32) + (t%32)/4 (+8) and columns 8j + 2·(t%4)
// (+1): d[4j + 2h + c] — the m16n8 accumulator layout, stacked over j).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_OK 1
#endif
// wg_desc is the descriptor of a K-major BF16 tile whose 128-byte rows are
// in the 128-byte swizzle (swz with ld 64; tile 1024-byte aligned): start
// address, leading byte offset unused (1), stride 1024 bytes (8 rows),
// swizzle mode 1. Adding 2 advances it by 16 k (32 bytes).
__device__ __forceinline__ unsigned long long wg_desc(const void* p) {
  unsigned long long a = smem_addr(p);
  return ((a & 0x3FFFFull) >> 4) | (1ull << 16) | ((unsigned long long)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wgmma128(float* d, unsigned long long da, unsigned long long db) {
#ifdef WG_OK
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "l"(da), "l"(db), "r"(1));
#else
  __trap();
#endif
}
// wg_keep pins the accumulators around the asynchronous MMAs (the compiler
// must not move their reads or writes across wgmma.fence / wait_group).
__device__ __forceinline__ void wg_keep(float* d) {
#pragma unroll
  for (int i = 0; i < 64; i++) asm volatile("" : "+f"(d[i])::"memory");
}
// wg_keep32 is wg_keep for 32 accumulators (an m64n64 tile).
__device__ __forceinline__ void wg_keep32(float* d) {
#pragma unroll
  for (int i = 0; i < 32; i++) asm volatile("" : "+f"(d[i])::"memory");
}
__device__ __forceinline__ void wg_fence() {
#ifdef WG_OK
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wg_commit() {
#ifdef WG_OK
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wg_wait() {
#ifdef WG_OK
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
#endif
}
// proxy_fence makes this thread's shared-memory writes (cp.async) visible to
// the async proxy that wgmma reads through.
__device__ __forceinline__ void proxy_fence() {
#ifdef WG_OK
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
#endif
}

// moe_mmb_impl's pipeline: ST stages of shared memory, loads D k steps ahead,
// and (WG) the MMAs of WAIT steps left in flight at the end of a step. A
// stage is refilled after the barrier of step kt with step kt+D, so D < ST
// and, with MMAs in flight, D <= ST - 2 (step kt+D-ST's MMAs are done).
// With F8 (wgmma only) the experts are E4M3 bytes with block scales S
// ([E][rows/br][K/bc]): each thread loads its 8-byte pieces of the weight
// tile into registers for step kt+D while step kt's MMAs run, then widens
// them (times their scale, rounded to BF16, as moe_mma_fp8 does) into the
// stage that step kt-1 used.
template <bool GU, bool WG, int ST, int D, int WAIT, bool YB = false, bool STAGE = false, bool F8 = false>
__device__ __forceinline__ void moe_mmb_impl(const u16* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles, const int* ntiles,
                                             const u16* Wt, int N, int K, float* Y, i64 ldy, u16* H, i64 ldh,
                                             const float* S = 0, int br = 1, int bc = 1) {
  static_assert(!F8 || WG, "moe_mmb: FP8 experts on wgmma only");
  extern __shared__ __align__(1024) u16 mmbs[];
  int ti = blockIdx.y;
  if (ti >= *ntiles) return;
  int e = tiles[3 * ti], p0 = tiles[3 * ti + 1], m = tiles[3 * ti + 2];
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int wm = warp & 1, wn = warp >> 1;
  int NW = GU ? 2 * N : N;  // weight rows of an expert
  const u16* W = Wt + (i64)e * NW * K;
  int c0 = blockIdx.x * (GU ? 64 : 128);
  // each thread copies chunk ch of rows rr + 32i of the A and B tiles
  int ch = tid & 7, rr = tid >> 3;
  const u16* xa[4];
  const u16* wb[4];
  const unsigned char* w8[4];  // F8: the rows' bytes
  const float* s8[4];          // F8: the rows' block scales
#pragma unroll
  for (int i = 0; i < 4; i++) {
    int r = rr + 32 * i;
    xa[i] = r < m ? X + (mode == 0 ? (i64)(perm[p0 + r] / topk) : (i64)(p0 + r)) * ldx : 0;
    int n;
    bool ok;
    if (GU) {
      int col = c0 + (r >> 4) * 8 + (r & 7);
      ok = col < N;
      n = (r & 8) ? N + col : col;
    } else {
      n = c0 + r;
      ok = n < N;
    }
    wb[i] = ok ? W + (i64)n * K : 0;
    if (F8) {
      int kb = (K + bc - 1) / bc;
      w8[i] = ok ? (const unsigned char*)Wt + ((i64)e * NW + n) * K : 0;
      s8[i] = S + ((i64)e * ((NW + br - 1) / br) + n / br) * kb;
    }
  }
  uint2 r8[4];  // F8: the next step's weight bytes
  auto load8 = [&](int k0) {
    int k = k0 + 8 * ch;
#pragma unroll
    for (int i = 0; i < 4; i++) r8[i] = (w8[i] && k < K) ? *(const uint2*)(w8[i] + k) : make_uint2(0, 0);
  };
  auto store8 = [&](int st, int k0) {
    u16* Bs = mmbs + st * 256 * MMB_BK + 128 * MMB_BK;
    int k = k0 + 8 * ch;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int r = rr + 32 * i;
      float sc = (w8[i] && k < K) ? s8[i][k / bc] : 0.f, f[8];
      fp8x4(r8[i].x, f);
      fp8x4(r8[i].y, f + 4);
      *(uint4*)(Bs + swz(r, ch, MMB_BK)) = make_uint4(pack_bf16(f[0] * sc, f[1] * sc), pack_bf16(f[2] * sc, f[3] * sc),
                                                      pack_bf16(f[4] * sc, f[5] * sc), pack_bf16(f[6] * sc, f[7] * sc));
    }
  };
  static_assert(D < ST && (WAIT == 0 || D <= ST - 2), "moe_mmb pipeline");
  auto load = [&](int st, int k0) {
    u16* As = mmbs + st * 256 * MMB_BK;
    u16* Bs = As + 128 * MMB_BK;
    int k = k0 + 8 * ch;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      int r = rr + 32 * i;
      bool va = xa[i] && k < K, vb = wb[i] && k < K;
      cp_async16(As + swz(r, ch, MMB_BK), va ? xa[i] + k : X, va);
      if (!F8) cp_async16(Bs + swz(r, ch, MMB_BK), vb ? wb[i] + k : Wt, vb);
    }
  };
  // acc[(i·JN + j)·4 + 2h + c]: row rb + 16i + g + 8h, column cb + 8j + 2tg + c
  // of the block's tile (mma.sync: 8 warps of 64 x 32; wgmma: 2 warpgroups
  // of 64 x 128)
  constexpr int IM = WG ? 1 : 4, JN = WG ? 16 : 4;
  int rb = WG ? (warp >> 2) * 64 + (warp & 3) * 16 : wm * 64, cb = WG ? 0 : wn * 32;
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; i++) acc[i] = 0.f;
  int KT = (K + MMB_BK - 1) / MMB_BK;
#pragma unroll
  for (int s = 0; s < D; s++) {
    if (s < KT) {
      load(s, s * MMB_BK);
      if (F8) {
        load8(s * MMB_BK);
        store8(s, s * MMB_BK);
      }
    }
    cp_async_commit();
  }
  for (int kt = 0; kt < KT; kt++) {
    cp_async_wait<D - 1>();
    if (WG) proxy_fence();
    __syncthreads();
    bool next = kt + D < KT;
    if (next) {
      load((kt + D) % ST, (kt + D) * MMB_BK);
      if (F8) load8((kt + D) * MMB_BK);
    }
    cp_async_commit();
    const u16* As = mmbs + (kt % ST) * 256 * MMB_BK;
    const u16* Bs = As + 128 * MMB_BK;
    if (WG) {
      // a warpgroup whose 64 rows are all past the tile's m (an expert's
      // last tile) leaves the tensor cores to the other block on the SM
      bool mine = (warp >> 2) * 64 < m;
      if (mine) {
        unsigned long long da = wg_desc(As + (warp >> 2) * 64 * MMB_BK), db = wg_desc(Bs);
        wg_keep(acc);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < MMB_BK / 16; kk++) wgmma128(acc, da + 2 * kk, db + 2 * kk);
        wg_commit();
      }
      // F8: widen the next step's weights while the MMAs run, into the
      // stage step kt-1 read (its MMAs were waited for in that step)
      if (F8 && next) store8((kt + D) % ST, (kt + D) * MMB_BK);
      if (mine) {
        wg_wait<WAIT>();
        wg_keep(acc);
      }
      continue;
    }
#pragma unroll
    for (int kk = 0; kk < MMB_BK / 16; kk++) {
      u32 a[4][4], b[2][4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        int r = wm * 64 + 16 * i + (lane & 15);
        ldsm4(a[i], As + swz(r, 2 * kk + (lane >> 4), MMB_BK));
      }
#pragma unroll
      for (int jp = 0; jp < 2; jp++) {
        int r = wn * 32 + 16 * jp + (lane & 7) + ((lane >> 4) << 3);
        ldsm4(b[jp], Bs + swz(r, 2 * kk + ((lane >> 3) & 1), MMB_BK));
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) mma_bf16(acc + (i * 4 + j) * 4, a[i], b[j >> 1][2 * (j & 1)], b[j >> 1][2 * (j & 1) + 1]);
    }
  }
  cp_async_wait<0>();
  if (WG) {
    wg_wait<0>();
    wg_keep(acc);
  }
  if (STAGE && !GU && YB) {
    // BF16 outputs through shared memory, so that each row leaves in
    // 16-byte stores (a thread's 4-byte stores fill half of each 32-byte
    // sector): the tile as 128 columns (+8 halves of padding) per row.
    // (Tried for moe_mmb_gu's output too: slower there.)
    constexpr int NC = 128, LD = NC + 8;
    __syncthreads();  // every warp is done with the pipeline's stages
    u16* ts = mmbs;
#pragma unroll
    for (int i = 0; i < IM; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        int r = rb + 16 * i + g + 8 * h;
#pragma unroll
        for (int j = 0; j < JN; j++) {
          const float* a = acc + (i * JN + j) * 4;
          *(u32*)(ts + r * LD + cb + 8 * j + 2 * tg) = pack_bf16(a[2 * h], a[2 * h + 1]);
        }
      }
    __syncthreads();
    u16* out = (u16*)Y;
    constexpr int CH = NC / 8;  // 16-byte chunks per row
    for (int q = tid; q < 128 * CH; q += 256) {
      int r = q / CH, c = (q % CH) * 8;
      if (r < m && c0 + c < N) *(uint4*)(out + (i64)(p0 + r) * ldy + c0 + c) = *(const uint4*)(ts + r * LD + c);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < IM; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      int r = rb + 16 * i + g + 8 * h;
      if (r >= m) continue;
      if (GU) {
        u16* hr = H + (i64)(p0 + r) * ldh;
#pragma unroll
        for (int jp = 0; jp < JN / 2; jp++) {
          int col = c0 + cb / 2 + jp * 8 + 2 * tg;
          if (col < N) {
            const float* gt = acc + (i * JN + 2 * jp) * 4;
            const float* up = acc + (i * JN + 2 * jp + 1) * 4;
            *(u32*)(hr + col) = pack_bf16(silu_mul(gt[2 * h], up[2 * h]), silu_mul(gt[2 * h + 1], up[2 * h + 1]));
          }
        }
      } else if (YB) {
        u16* yr = (u16*)Y + (i64)(p0 + r) * ldy;
#pragma unroll
        for (int j = 0; j < JN; j++) {
          int n = c0 + cb + 8 * j + 2 * tg;
          const float* a = acc + (i * JN + j) * 4;
          if (n + 1 < N) {
            *(u32*)(yr + n) = pack_bf16(a[2 * h], a[2 * h + 1]);
          } else if (n < N) {
            yr[n] = f2bf16(a[2 * h]);
          }
        }
      } else {
        float* yr = Y + (i64)(p0 + r) * ldy;
#pragma unroll
        for (int j = 0; j < JN; j++) {
          int n = c0 + cb + 8 * j + 2 * tg;
          const float* a = acc + (i * JN + j) * 4;
          if (n + 1 < N) {
            *(float2*)(yr + n) = make_float2(a[2 * h], a[2 * h + 1]);
          } else if (n < N) {
            yr[n] = a[2 * h];
          }
        }
      }
    }
}
// Held to 128 registers, two blocks (16 warps) per SM: prefill of 4K tokens
// 26 % and of 32K 4 % faster on the H200 than one block of up to 168. The
// _wg kernels are the same GEMMs on wgmma (sm_90a only), with the same
// pipeline: on the H200 (BenchmarkPrefillOps/MoE) 275 TFLOP/s, against 229
// with four stages, one block per SM and one step's MMAs left in flight,
// and 254 with loads one step ahead and one step's MMAs in flight.
#define MOE_MMB_KERNELS(SUF, WG, ST, D, WAIT, MINB)                                                                                          \
  extern "C" __global__ void __launch_bounds__(256, MINB) moe_mmb_gu##SUF(const u16* X, i64 ldx, const int* perm, int topk, const int* tiles,   \
                                                                          const int* ntiles, const u16* Wt, int I, int K, u16* H, i64 ldh) {  \
    PDL_ENTER();                                                                                                                                 \
    moe_mmb_impl<true, WG, ST, D, WAIT>(X, ldx, perm, topk, 0, tiles, ntiles, Wt, I, K, 0, 0, H, ldh);                                          \
  }                                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(256, MINB) moe_mmb##SUF(const u16* X, i64 ldx, const int* perm, int topk, int mode,              \
                                                                       const int* tiles, const int* ntiles, const u16* Wt, int N, int K,       \
                                                                       float* Y, i64 ldy) {                                                    \
    PDL_ENTER();                                                                                                                                 \
    moe_mmb_impl<false, WG, ST, D, WAIT>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, Y, ldy, 0, 0);                                     \
  }                                                                                                                                              \
  extern "C" __global__ void __launch_bounds__(256, MINB) moe_mmb_yb##SUF(const u16* X, i64 ldx, const int* perm, int topk, int mode,           \
                                                                          const int* tiles, const int* ntiles, const u16* Wt, int N, int K,    \
                                                                          u16* Y, i64 ldy) {                                                   \
    PDL_ENTER();                                                                                                                                 \
    moe_mmb_impl<false, WG, ST, D, WAIT, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, (float*)Y, ldy, 0, 0);                       \
  }
// moe_mmb_yb is moe_mmb with Y in BF16 (k_moe_combine4b sums it).
MOE_MMB_KERNELS(, false, 3, 2, 0, 2)
MOE_MMB_KERNELS(_wg, true, 3, 2, 0, 2)
// moe_mmb_*_wg8: the _wg kernels for FP8 experts (weights widened to BF16
// into shared memory as they arrive; S, br, bc their block scales).
extern "C" __global__ void __launch_bounds__(256, 2) moe_mmb_gu_wg8(const u16* X, i64 ldx, const int* perm, int topk, const int* tiles,
                                                                  const int* ntiles, const u16* Wt, const float* S, int br, int bc, int I,
                                                                  int K, u16* H, i64 ldh) {
  PDL_ENTER();
  moe_mmb_impl<true, true, 3, 2, 0, false, false, true>(X, ldx, perm, topk, 0, tiles, ntiles, Wt, I, K, 0, 0, H, ldh, S, br, bc);
}
extern "C" __global__ void __launch_bounds__(256, 2) moe_mmb_wg8(const u16* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                               const int* ntiles, const u16* Wt, const float* S, int br, int bc, int N, int K,
                                                               float* Y, i64 ldy) {
  PDL_ENTER();
  moe_mmb_impl<false, true, 3, 2, 0, false, false, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, Y, ldy, 0, 0, S, br, bc);
}
extern "C" __global__ void __launch_bounds__(256, 2) moe_mmb_yb_wg8(const u16* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                                  const int* ntiles, const u16* Wt, const float* S, int br, int bc, int N,
                                                                  int K, u16* Y, i64 ldy) {
  PDL_ENTER();
  moe_mmb_impl<false, true, 3, 2, 0, true, false, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, (float*)Y, ldy, 0, 0, S, br, bc);
}
extern "C" __global__ void __launch_bounds__(256, 2) moe_mmb_yb_wgs8(const u16* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                                   const int* ntiles, const u16* Wt, const float* S, int br, int bc, int N,
                                                                   int K, u16* Y, i64 ldy) {
  PDL_ENTER();
  moe_mmb_impl<false, true, 3, 2, 0, true, true, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, (float*)Y, ldy, 0, 0, S, br, bc);
}
// moe_mmb_yb_wgs stores its BF16 outputs through shared memory (16-byte
// stores per row).
extern "C" __global__ void __launch_bounds__(256, 2) moe_mmb_yb_wgs(const u16* X, i64 ldx, const int* perm, int topk, int mode, const int* tiles,
                                                                  const int* ntiles, const u16* Wt, int N, int K, u16* Y, i64 ldy) {
  PDL_ENTER();
  moe_mmb_impl<false, true, 3, 2, 0, true, true>(X, ldx, perm, topk, mode, tiles, ntiles, Wt, N, K, (float*)Y, ldy, 0, 0);
}

// ---------------------------------------------------------------------------
// Flash-attention pieces shared by k_fattn, k_fattn2, k_fattn3 and k_fattn4, for
// one m16 tile of scores s (NS n8 tiles: 8·NS keys j0.. of query rows a = g and
// b = g + 8; NS = 8, or 16 in k_fattn4w).
// fa_mask sets the scores of keys after a row's position to -inf.
template <int NS = 8>
__device__ __forceinline__ void fa_mask(float (&s)[NS][4], int j0, int tg, int qposA, int qposB) {
#pragma unroll
  for (int j = 0; j < NS; j++) {
    int key = j0 + 8 * j + 2 * tg;
    if (key > qposA) s[j][0] = NEG_INF;
    if (key + 1 > qposA) s[j][1] = NEG_INF;
    if (key > qposB) s[j][2] = NEG_INF;
    if (key + 1 > qposB) s[j][3] = NEG_INF;
  }
}
// fa_online turns the scores (base 2) into probabilities against the running
// maxima ma, mb, adds them to the running sums la, lb and rescales the output
// accumulators (rows with nothing visible yet keep m = -inf and use 0).
template <int NO, int NS = 8>
__device__ __forceinline__ void fa_online(float (&s)[NS][4], float (&oacc)[NO][4], float& ma, float& mb, float& la, float& lb) {
  float mxa = NEG_INF, mxb = NEG_INF;
#pragma unroll
  for (int j = 0; j < NS; j++) {
    mxa = fmaxf(mxa, fmaxf(s[j][0], s[j][1]));
    mxb = fmaxf(mxb, fmaxf(s[j][2], s[j][3]));
  }
  mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
  mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
  mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
  mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
  float na = fmaxf(ma, mxa), nb = fmaxf(mb, mxb);
  float ra_ = na == NEG_INF ? 0.f : na, rb_ = nb == NEG_INF ? 0.f : nb;
  float ca = exp2f(ma - ra_), cb = exp2f(mb - rb_);
  ma = na;
  mb = nb;
  float suma = 0.f, sumb = 0.f;
#pragma unroll
  for (int j = 0; j < NS; j++) {
    s[j][0] = exp2f(s[j][0] - ra_);
    s[j][1] = exp2f(s[j][1] - ra_);
    s[j][2] = exp2f(s[j][2] - rb_);
    s[j][3] = exp2f(s[j][3] - rb_);
    suma += s[j][0] + s[j][1];
    sumb += s[j][2] + s[j][3];
  }
  la = la * ca + suma;
  lb = lb * cb + sumb;
#pragma unroll
  for (int j = 0; j < NO; j++) {
    oacc[j][0] *= ca;
    oacc[j][1] *= ca;
    oacc[j][2] *= cb;
    oacc[j][3] *= cb;
  }
}
// fa_pfrag packs keys 16kk..16kk+15 of the probabilities as an mma A fragment.
template <int NS = 8>
__device__ __forceinline__ void fa_pfrag(u32* pa, const float (&s)[NS][4], int kk) {
  pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
  pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
  pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}
// fa_store divides the accumulators by the row sums and stores rows ra, rb
// (< n) of the span (first row row0) at column c0 of o.
template <int NO>
__device__ __forceinline__ void fa_store(float* o, i64 ldo, int row0, int c0, int n, int ra, int rb, int tg, const float (&oacc)[NO][4], float la, float lb) {
  la += __shfl_xor_sync(0xffffffffu, la, 1);
  la += __shfl_xor_sync(0xffffffffu, la, 2);
  lb += __shfl_xor_sync(0xffffffffu, lb, 1);
  lb += __shfl_xor_sync(0xffffffffu, lb, 2);
  float ia = 1.f / la, ib = 1.f / lb;
  float* oa = o + (i64)(row0 + ra) * ldo + c0;
  float* ob = o + (i64)(row0 + rb) * ldo + c0;
#pragma unroll
  for (int j = 0; j < NO; j++) {
    int c = 8 * j + 2 * tg;
    if (ra < n) *(float2*)(oa + c) = make_float2(oacc[j][0] * ia, oacc[j][1] * ia);
    if (rb < n) *(float2*)(ob + c) = make_float2(oacc[j][2] * ib, oacc[j][3] * ib);
  }
}

// Flash attention for prefill (causal GQA, head dim HD = 64 or 128) on tensor
// cores: grid (ceil(maxN/64), H/G, spans), 128*G threads (G <= 4 for HD = 64,
// G <= 2 for HD = 128, within the registers of the launch bounds): the block runs the G
// query heads h0..h0+G-1 (G divides H/Hkv, so they share one KV head) of 64
// query rows, and warp w owns rows 16(w%4)..+15 of head h0 + w/4. Keys/values
// come from the FP32 cache in tiles of 64, rounded to BF16 in shared memory
// once for the G heads; online softmax in FP32 (base 2).

template <int HD>
__device__ __forceinline__ void fattn_impl(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* caches, int H, int Hkv, float scale) {
  constexpr int KLD = HD + 8, VLD = 72, NO = HD / 8, KS = HD / 16;
  __shared__ __align__(16) u16 Ks[64 * KLD];
  __shared__ __align__(16) u16 Vt[HD * VLD];
  int sp = blockIdx.z, G = blockDim.x / 128;
  int tid = threadIdx.x, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, tg = lane & 3, nt = blockDim.x;
  int h = blockIdx.y * G + (tid >> 7);
  int row0 = spans[3 * sp], n = spans[3 * sp + 1], pos = spans[3 * sp + 2];
  int r0 = blockIdx.x * 64;
  if (r0 >= n) return;
  int kvh = h / (H / Hkv);
  const float* Kc = (const float*)caches[4 * sp] + (i64)kvh * HD;
  const float* Vc = (const float*)caches[4 * sp + 1] + (i64)kvh * HD;
  i64 lK = caches[4 * sp + 2], lV = caches[4 * sp + 3];
  int ra = r0 + 16 * warp + g, rb = ra + 8;  // rows within the span
  float qscale = scale * 1.4426950408889634f;
  u32 qa[KS][4];
  {
    const float* qpa = q + (i64)(row0 + ra) * ldq + (i64)h * HD;
    const float* qpb = q + (i64)(row0 + rb) * ldq + (i64)h * HD;
    bool va = ra < n, vb = rb < n;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      int c = 16 * ks + 2 * tg;
      qa[ks][0] = va ? pack_bf16(qpa[c] * qscale, qpa[c + 1] * qscale) : 0u;
      qa[ks][1] = vb ? pack_bf16(qpb[c] * qscale, qpb[c + 1] * qscale) : 0u;
      qa[ks][2] = va ? pack_bf16(qpa[c + 8] * qscale, qpa[c + 9] * qscale) : 0u;
      qa[ks][3] = vb ? pack_bf16(qpb[c + 8] * qscale, qpb[c + 9] * qscale) : 0u;
    }
  }
  float oacc[NO][4];
#pragma unroll
  for (int j = 0; j < NO; j++) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
  float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;
  int qposA = pos + ra, qposB = pos + rb;
  int maxKey = pos + min(n, r0 + 64) - 1;  // last key any row of the block sees
  int warpMin = pos + r0 + 16 * warp;      // smallest query position of this warp
  for (int j0 = 0; j0 <= maxKey; j0 += 64) {
    __syncthreads();
    for (int idx = tid; idx < 64 * HD / 2; idx += nt) {
      int j = idx / (HD / 2), c = (idx % (HD / 2)) * 2;
      int key = j0 + j;
      float x0 = 0.f, x1 = 0.f;
      if (key <= maxKey) {
        const float* kp = Kc + (i64)key * lK + c;
        x0 = kp[0];
        x1 = kp[1];
      }
      *(u32*)(Ks + j * KLD + c) = pack_bf16(x0, x1);
    }
    for (int idx = tid; idx < 32 * HD; idx += nt) {
      int jp = idx / HD, c = idx % HD;
      int key = j0 + 2 * jp;
      float x0 = key <= maxKey ? Vc[(i64)key * lV + c] : 0.f;
      float x1 = key + 1 <= maxKey ? Vc[(i64)(key + 1) * lV + c] : 0.f;
      *(u32*)(Vt + c * VLD + 2 * jp) = pack_bf16(x0, x1);
    }
    __syncthreads();
    if (j0 > pos + min(n - 1, r0 + 16 * warp + 15)) continue;  // every key of the tile is after this warp's rows
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const u16* bp = Ks + (8 * j + g) * KLD + 16 * ks + 2 * tg;
        mma_bf16(s[j], qa[ks], lds32(bp), lds32(bp + 8));
      }
    }
    if (j0 + 63 > warpMin) fa_mask(s, j0, tg, qposA, qposB);
    fa_online<NO>(s, oacc, ma, mb, la, lb);
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 pa[4];
      fa_pfrag(pa, s, kk);
#pragma unroll
      for (int j = 0; j < NO; j++) {
        const u16* bp = Vt + (8 * j + g) * VLD + 16 * kk + 2 * tg;
        mma_bf16(oacc[j], pa, lds32(bp), lds32(bp + 8));
      }
    }
  }
  la += __shfl_xor_sync(0xffffffffu, la, 1);
  la += __shfl_xor_sync(0xffffffffu, la, 2);
  lb += __shfl_xor_sync(0xffffffffu, lb, 1);
  lb += __shfl_xor_sync(0xffffffffu, lb, 2);
  float ia = 1.f / la, ib = 1.f / lb;
  float* oa = o + (i64)(row0 + ra) * ldo + (i64)h * HD;
  float* ob = o + (i64)(row0 + rb) * ldo + (i64)h * HD;
#pragma unroll
  for (int j = 0; j < NO; j++) {
    int c = 8 * j + 2 * tg;
    if (ra < n) {
      oa[c] = oacc[j][0] * ia;
      oa[c + 1] = oacc[j][1] * ia;
    }
    if (rb < n) {
      ob[c] = oacc[j][2] * ib;
      ob[c + 1] = oacc[j][3] * ib;
    }
  }
}
extern "C" __global__ void __launch_bounds__(512) k_fattn64(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* caches, int H, int Hkv, float scale) { PDL_ENTER();
  fattn_impl<64>(o, ldo, q, ldq, spans, caches, H, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(256) k_fattn128(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* caches, int H, int Hkv, float scale) { PDL_ENTER();
  fattn_impl<128>(o, ldo, q, ldq, spans, caches, H, Hkv, scale);
}

// ---------------------------------------------------------------------------
// Flash attention for prefill from a BF16 copy of the keys and values.
//
// k_kvbf16 copies the cached keys and values of each span (positions
// 0..pos+n-1) into BF16 per KV head: span sp's head kvh starts at row
// off[sp] + kvh*L (L = pos+n) of kb and vb, rows of hd values; vb null: the
// keys only (k_fattn4 reads k_vtbf16's values). grid
// (ceil(maxL*Hkv*hd/8 / 256), spans), 256 threads; hd % 8 == 0.
extern "C" __global__ void k_kvbf16(const int* spans, const i64* caches, const i64* off, int Hkv, int hd, u16* kb, u16* vb) { PDL_ENTER();
  int sp = blockIdx.y;
  i64 L = spans[3 * sp + 1] + spans[3 * sp + 2];
  int per = Hkv * hd / 8;  // 8-value chunks per key
  i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= L * per) return;
  i64 key = idx / per;
  int c = (int)(idx % per), kvh = c / (hd / 8), cc = (c % (hd / 8)) * 8;
  const float* K = (const float*)caches[4 * sp] + key * caches[4 * sp + 2] + kvh * hd + cc;
  i64 o = (off[sp] + kvh * L + key) * hd + cc;
  float4 k0 = *(const float4*)K, k1 = *(const float4*)(K + 4);
  *(uint4*)(kb + o) = make_uint4(pack_bf16(k0.x, k0.y), pack_bf16(k0.z, k0.w), pack_bf16(k1.x, k1.y), pack_bf16(k1.z, k1.w));
  if (!vb) return;
  const float* V = (const float*)caches[4 * sp + 1] + key * caches[4 * sp + 3] + kvh * hd + cc;
  float4 v0 = *(const float4*)V, v1 = *(const float4*)(V + 4);
  *(uint4*)(vb + o) = make_uint4(pack_bf16(v0.x, v0.y), pack_bf16(v0.z, v0.w), pack_bf16(v1.x, v1.y), pack_bf16(v1.z, v1.w));
}

// k_fattn2: causal GQA flash attention (head dim HD = 64 or 128) over k_kvbf16's
// copy: grid (ceil(maxN/64), H/G, spans), 128*G threads, dynamic shared memory
// 2 stages of a 64-key tile of keys and of values (8*64*HD bytes). The block
// runs the G query heads of one KV head for 64 query rows (warp w: rows
// 16(w%4)..+15 of head h0 + w/4); tiles come in by cp.async while the previous
// one is used, fragments by ldmatrix (values transposed); online softmax in
// FP32 (base 2), as k_fattn.
template <int HD>
__device__ __forceinline__ void fattn2_impl(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb, const u16* vb,
                                            int H, int Hkv, float scale) {
  constexpr int NO = HD / 8, KS = HD / 16, CH = HD / 8;  // CH: 16-byte chunks per row
  extern __shared__ __align__(128) u16 fas[];
  int sp = blockIdx.z;
  int tid = threadIdx.x, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, tg = lane & 3, nt = blockDim.x;
  int G = nt / 128;
  int h = blockIdx.y * G + (tid >> 7);
  int row0 = spans[3 * sp], n = spans[3 * sp + 1], pos = spans[3 * sp + 2];
  int r0 = (gridDim.x - 1 - blockIdx.x) * 64;  // the last rows, which see the most keys, first
  if (r0 >= n) return;
  i64 L = pos + n;
  int kvh = (blockIdx.y * G) / (H / Hkv);
  const u16* Kg = kb + (off[sp] + kvh * L) * HD;
  const u16* Vg = vb + (off[sp] + kvh * L) * HD;
  int ra = r0 + 16 * warp + g, rb = ra + 8;
  float qscale = scale * 1.4426950408889634f;
  u32 qa[KS][4];
  {
    const float* qpa = q + (i64)(row0 + ra) * ldq + (i64)h * HD;
    const float* qpb = q + (i64)(row0 + rb) * ldq + (i64)h * HD;
    bool va = ra < n, vb_ = rb < n;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      int c = 16 * ks + 2 * tg;
      qa[ks][0] = va ? pack_bf16(qpa[c] * qscale, qpa[c + 1] * qscale) : 0u;
      qa[ks][1] = vb_ ? pack_bf16(qpb[c] * qscale, qpb[c + 1] * qscale) : 0u;
      qa[ks][2] = va ? pack_bf16(qpa[c + 8] * qscale, qpa[c + 9] * qscale) : 0u;
      qa[ks][3] = vb_ ? pack_bf16(qpb[c + 8] * qscale, qpb[c + 9] * qscale) : 0u;
    }
  }
  float oacc[NO][4];
#pragma unroll
  for (int j = 0; j < NO; j++) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
  float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;
  int qposA = pos + ra, qposB = pos + rb;
  int maxKey = pos + min(n, r0 + 64) - 1;
  int warpMin = pos + r0 + 16 * warp;
  int warpMax = pos + min(n - 1, r0 + 16 * warp + 15);
  auto load = [&](int st, int j0) {
    u16* Ks = fas + st * 2 * 64 * HD;
    u16* Vs = Ks + 64 * HD;
    for (int idx = tid; idx < 64 * CH; idx += nt) {
      int j = idx / CH, c = idx % CH;
      bool ok = j0 + j <= maxKey;
      i64 src = (i64)(ok ? j0 + j : 0) * HD + 8 * c;
      cp_async16(Ks + swz(j, c, HD), Kg + src, ok);
      cp_async16(Vs + swz(j, c, HD), Vg + src, ok);
    }
  };
  load(0, 0);
  cp_async_commit();
  for (int j0 = 0, st = 0; j0 <= maxKey; j0 += 64, st ^= 1) {
    cp_async_wait<0>();
    __syncthreads();
    if (j0 + 64 <= maxKey) load(st ^ 1, j0 + 64);
    cp_async_commit();
    if (j0 > warpMax) continue;  // every key of the tile is after this warp's rows
    const u16* Ks = fas + st * 2 * 64 * HD;
    const u16* Vs = Ks + 64 * HD;
    float s[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
#pragma unroll
      for (int jp = 0; jp < 4; jp++) {
        u32 b[4];
        int r = 16 * jp + (lane & 7) + ((lane >> 4) << 3);
        ldsm4(b, Ks + swz(r, 2 * ks + ((lane >> 3) & 1), HD));
        mma_bf16(s[2 * jp], qa[ks], b[0], b[1]);
        mma_bf16(s[2 * jp + 1], qa[ks], b[2], b[3]);
      }
    }
    if (j0 + 63 > warpMin) fa_mask(s, j0, tg, qposA, qposB);
    fa_online<NO>(s, oacc, ma, mb, la, lb);
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 pa[4];
      fa_pfrag(pa, s, kk);
      int r = 16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
      for (int dp = 0; dp < HD / 16; dp++) {
        u32 b[4];
        ldsm4t(b, Vs + swz(r, 2 * dp + (lane >> 4), HD));
        mma_bf16(oacc[2 * dp], pa, b[0], b[1]);
        mma_bf16(oacc[2 * dp + 1], pa, b[2], b[3]);
      }
    }
  }
  cp_async_wait<0>();
  fa_store<NO>(o, ldo, row0, h * HD, n, ra, rb, tg, oacc, la, lb);
}
extern "C" __global__ void __launch_bounds__(512) k_fattn2_64(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb,
                                                              const u16* vb, int H, int Hkv, float scale) { PDL_ENTER();
  fattn2_impl<64>(o, ldo, q, ldq, spans, off, kb, vb, H, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(256) k_fattn2_128(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb,
                                                               const u16* vb, int H, int Hkv, float scale) { PDL_ENTER();
  fattn2_impl<128>(o, ldo, q, ldq, spans, off, kb, vb, H, Hkv, scale);
}

// k_fattn3: k_fattn2 with 32 query rows per warp (two m16 tiles sharing every
// key and value fragment, as FlashAttention-2 lays them out) and the queries in
// shared memory: grid (ceil(maxN/128), H, spans), 128 threads (warp w: rows
// 32w..32w+31 of the block's 128, one head), dynamic shared memory
// fa3Smem = the BF16 query tile (128 x HD) + 2 stages of 64-key K and V tiles.
// q rows 8-byte aligned (ldq even).
template <int HD>
__device__ __forceinline__ void fattn3_impl(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb, const u16* vb,
                                            int H, int Hkv, float scale) {
  constexpr int NO = HD / 8, KS = HD / 16, CH = HD / 8;
  extern __shared__ __align__(128) u16 faqs[];
  u16* Qs = faqs;
  u16* KVs = faqs + 128 * HD;
  int sp = blockIdx.z, h = blockIdx.y;
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1], pos = spans[3 * sp + 2];
  int r0 = (gridDim.x - 1 - blockIdx.x) * 128;  // the last rows, which see the most keys, first
  if (r0 >= n) return;
  i64 L = pos + n;
  int kvh = h / (H / Hkv);
  const u16* Kg = kb + (off[sp] + kvh * L) * HD;
  const u16* Vg = vb + (off[sp] + kvh * L) * HD;
  int maxKey = pos + min(n, r0 + 128) - 1;
  auto load = [&](int st, int j0) {
    u16* Ks = KVs + st * 2 * 64 * HD;
    u16* Vs = Ks + 64 * HD;
    for (int idx = tid; idx < 64 * CH; idx += 128) {
      int j = idx / CH, c = idx % CH;
      bool ok = j0 + j <= maxKey;
      i64 src = (i64)(ok ? j0 + j : 0) * HD + 8 * c;
      cp_async16(Ks + swz(j, c, HD), Kg + src, ok);
      cp_async16(Vs + swz(j, c, HD), Vg + src, ok);
    }
  };
  load(0, 0);
  cp_async_commit();
  {
    float qscale = scale * 1.4426950408889634f;
    for (int idx = tid; idx < 128 * HD / 2; idx += 128) {
      int r = idx / (HD / 2), c = (idx % (HD / 2)) * 2;
      float2 v = make_float2(0.f, 0.f);
      if (r0 + r < n) v = *(const float2*)(q + (i64)(row0 + r0 + r) * ldq + (i64)h * HD + c);
      *(u32*)(Qs + swz(r, c >> 3, HD) + (c & 7)) = pack_bf16(v.x * qscale, v.y * qscale);
    }
  }
  int wr = r0 + 32 * warp;  // the warp's first row
  float oacc[2][NO][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < NO; j++) oacc[i][j][0] = oacc[i][j][1] = oacc[i][j][2] = oacc[i][j][3] = 0.f;
  float m[2][2] = {{NEG_INF, NEG_INF}, {NEG_INF, NEG_INF}}, l[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
  int warpMax = pos + min(n - 1, wr + 31);
  for (int j0 = 0, st = 0; j0 <= maxKey; j0 += 64, st ^= 1) {
    cp_async_wait<0>();
    __syncthreads();
    if (j0 + 64 <= maxKey) load(st ^ 1, j0 + 64);
    cp_async_commit();
    if (j0 > warpMax) continue;  // every key of the tile is after this warp's rows
    const u16* Ks = KVs + st * 2 * 64 * HD;
    const u16* Vs = Ks + 64 * HD;
    float s[2][8][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 8; j++) s[i][j][0] = s[i][j][1] = s[i][j][2] = s[i][j][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      u32 qa[2][4];
#pragma unroll
      for (int i = 0; i < 2; i++) ldsm4(qa[i], Qs + swz(32 * warp + 16 * i + (lane & 15), 2 * ks + (lane >> 4), HD));
#pragma unroll
      for (int jp = 0; jp < 4; jp++) {
        u32 b[4];
        ldsm4(b, Ks + swz(16 * jp + (lane & 7) + ((lane >> 4) << 3), 2 * ks + ((lane >> 3) & 1), HD));
#pragma unroll
        for (int i = 0; i < 2; i++) {
          mma_bf16(s[i][2 * jp], qa[i], b[0], b[1]);
          mma_bf16(s[i][2 * jp + 1], qa[i], b[2], b[3]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
      int ra = wr + 16 * i + g;
      if (j0 + 63 > pos + wr + 16 * i) fa_mask(s[i], j0, tg, pos + ra, pos + ra + 8);
      fa_online<NO>(s[i], oacc[i], m[i][0], m[i][1], l[i][0], l[i][1]);
    }
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 pa[2][4];
      fa_pfrag(pa[0], s[0], kk);
      fa_pfrag(pa[1], s[1], kk);
      int r = 16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3);
#pragma unroll
      for (int dp = 0; dp < HD / 16; dp++) {
        u32 b[4];
        ldsm4t(b, Vs + swz(r, 2 * dp + (lane >> 4), HD));
#pragma unroll
        for (int i = 0; i < 2; i++) {
          mma_bf16(oacc[i][2 * dp], pa[i], b[0], b[1]);
          mma_bf16(oacc[i][2 * dp + 1], pa[i], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int i = 0; i < 2; i++) {
    int ra = wr + 16 * i + g;
    fa_store<NO>(o, ldo, row0, h * HD, n, ra, ra + 8, tg, oacc[i], l[i][0], l[i][1]);
  }
}
extern "C" __global__ void __launch_bounds__(128, 2) k_fattn3_64(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb,
                                                                 const u16* vb, int H, int Hkv, float scale) { PDL_ENTER();
  fattn3_impl<64>(o, ldo, q, ldq, spans, off, kb, vb, H, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(128, 2) k_fattn3_128(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb,
                                                                  const u16* vb, int H, int Hkv, float scale) { PDL_ENTER();
  fattn3_impl<128>(o, ldo, q, ldq, spans, off, kb, vb, H, Hkv, scale);
}

// ---------------------------------------------------------------------------
// k_fattn4: prefill flash attention (head dim 128) on Hopper's wgmma.
//
// k_vtbf16 writes the values of each span transposed, in BF16: span sp's KV
// head kvh is 128 rows (one per value channel) of Lp = L rounded up to 128
// keys (zeros past L) from element offT[sp] + kvh·128·Lp of vt. grid
// (maxLp/64, Hkv, spans), 256 threads.
extern "C" __global__ void k_vtbf16(const int* spans, const i64* caches, const i64* offT, int Hkv, u16* vt) { PDL_ENTER();
  __shared__ u16 t[64][136];
  int sp = blockIdx.z, kvh = blockIdx.y, j0 = blockIdx.x * 64, tid = threadIdx.x;
  i64 L = spans[3 * sp + 1] + spans[3 * sp + 2], Lp = (L + 127) & ~127ll;
  if (j0 >= Lp) return;
  const float* V = (const float*)caches[4 * sp + 1] + kvh * 128;
  i64 ldv = caches[4 * sp + 3];
  for (int idx = tid; idx < 64 * 32; idx += 256) {
    int j = idx >> 5, c = (idx & 31) * 4;
    float4 v = j0 + j < L ? *(const float4*)(V + (j0 + j) * ldv + c) : make_float4(0.f, 0.f, 0.f, 0.f);
    *(uint2*)&t[j][c] = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
  }
  __syncthreads();
  u16* out = vt + offT[sp] + (i64)kvh * 128 * Lp + j0;
  for (int idx = tid; idx < 128 * 8; idx += 256) {
    int d = idx >> 3, c = (idx & 7) * 8;
    u32 w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) w[i] = (u32)t[c + 2 * i][d] | ((u32)t[c + 2 * i + 1][d] << 16);
    *(uint4*)(out + (i64)d * Lp + c) = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// wgmma64ss: S (m64 x n64, 32 accumulators per thread) += A·Bᵀ from two
// shared-memory descriptors; wgmma128rs: O (m64 x n128) += A·Bᵀ with A from
// registers (the m16n8k16 A fragment layout per warp: fa_pfrag's).
__device__ __forceinline__ void wgmma64ss(float* d, unsigned long long da, unsigned long long db) {
#ifdef WG_OK
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
               : "l"(da), "l"(db), "r"(1));
#else
  __trap();
#endif
}
__device__ __forceinline__ void wgmma128rs(float* d, const u32* a, unsigned long long db) {
#ifdef WG_OK
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
#else
  __trap();
#endif
}

// k_fattn4_128: k_fattn3's attention (causal GQA, head dim 128, over
// k_kvbf16's keys and k_vtbf16's transposed values) by two warpgroups of 64
// query rows: S = Q·Kᵀ by wgmma from shared memory (Q and each KN-key tile
// of K stored as two 64-column halves in the 128-byte swizzle), the online
// softmax on the accumulators (the m16n8 layout: fa_mask, fa_online), and
// O += P·V by wgmma with P from registers and Vᵀ's tile (64-key halves)
// from shared memory. k_fattn4_128 takes tiles of KN = 64 keys (k_fattn3's,
// the same values bit for bit), k_fattn4w_128 of 128 (half the barriers and
// waits per key; the running maxima move per 128 keys). grid (ceil(maxN/128),
// H, spans), 256 threads, dynamic shared memory fa4Smem(KN): Q (2 x 128 x
// 64) and 2 stages of K (2 x KN x 64) and Vᵀ (KN/64 x 128 x 64).
template <int KN>
__device__ __forceinline__ void fattn4_impl(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off, const u16* kb, const i64* offT,
                                            const u16* vt, int H, int Hkv, float scale) {
  constexpr int HD = 128, NS = KN / 8;
  extern __shared__ __align__(1024) u16 fawg[];
  u16* Qs = fawg;                  // halves at Qs and Qs + 128·64
  u16* KVs = fawg + 2 * 128 * 64;  // stage st: K halves at +0 and +KN·64, Vᵀ halves at +2·KN·64 (+128·64)
  int sp = blockIdx.z, h = blockIdx.y;
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3, wg = warp >> 2;
  int row0 = spans[3 * sp], n = spans[3 * sp + 1], pos = spans[3 * sp + 2];
  int r0 = (gridDim.x - 1 - blockIdx.x) * 128;  // the last rows, which see the most keys, first
  if (r0 >= n) return;
  i64 L = pos + n, Lp = (L + 127) & ~127ll;
  int kvh = h / (H / Hkv);
  const u16* Kg = kb + (off[sp] + kvh * L) * HD;
  const u16* Vg = vt + offT[sp] + (i64)kvh * HD * Lp;
  int maxKey = pos + min(n, r0 + 128) - 1;
  auto load = [&](int st, int j0) {
    u16* Ks = KVs + st * 4 * KN * 64;
    u16* Vs = Ks + 2 * KN * 64;
    for (int idx = tid; idx < KN * 16; idx += 256) {  // K: KN keys x 16 chunks
      int j = idx >> 4, c = idx & 15;
      bool ok = j0 + j <= maxKey;
      cp_async16(Ks + (c >> 3) * KN * 64 + swz(j, c & 7, 64), Kg + (i64)(ok ? j0 + j : 0) * HD + 8 * c, ok);
    }
    for (int idx = tid; idx < 128 * KN / 8; idx += 256) {  // Vᵀ: 128 channels x KN/8 chunks of keys
      int d = idx / (KN / 8), c = idx % (KN / 8);
      cp_async16(Vs + (c >> 3) * 128 * 64 + swz(d, c & 7, 64), Vg + (i64)d * Lp + j0 + 8 * c, true);
    }
  };
  load(0, 0);
  cp_async_commit();
  {
    float qscale = scale * 1.4426950408889634f;
    for (int idx = tid; idx < 128 * HD / 2; idx += 256) {
      int r = idx / (HD / 2), c = (idx % (HD / 2)) * 2;
      float2 v = make_float2(0.f, 0.f);
      if (r0 + r < n) v = *(const float2*)(q + (i64)(row0 + r0 + r) * ldq + (i64)h * HD + c);
      *(u32*)(Qs + (c >> 6) * 128 * 64 + swz(r, (c & 63) >> 3, 64) + (c & 7)) = pack_bf16(v.x * qscale, v.y * qscale);
    }
  }
  int wr = r0 + 64 * wg + 16 * (warp & 3);  // the warp's first row
  float oacc[16][4], s[NS][4];
#pragma unroll
  for (int j = 0; j < 16; j++) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
  float ma = NEG_INF, mb = NEG_INF, la = 0.f, lb = 0.f;
  int wgMax = pos + min(n - 1, r0 + 64 * wg + 63);  // the warpgroup's last position
  for (int j0 = 0, st = 0; j0 <= maxKey; j0 += KN, st ^= 1) {
    cp_async_wait<0>();
    proxy_fence();
    __syncthreads();
    if (j0 + KN <= maxKey) load(st ^ 1, j0 + KN);
    cp_async_commit();
    if (j0 > wgMax) continue;  // every key of the tile is after the warpgroup's rows
    const u16* Ks = KVs + st * 4 * KN * 64;
    const u16* Vs = Ks + 2 * KN * 64;
#pragma unroll
    for (int j = 0; j < NS; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
    if constexpr (KN == 64) {
      wg_keep32(&s[0][0]);
    } else {
      wg_keep(&s[0][0]);
    }
    wg_fence();
#pragma unroll
    for (int ks = 0; ks < HD / 16; ks++) {
      int hf = ks >> 2, kk = ks & 3;
      unsigned long long da = wg_desc(Qs + hf * 128 * 64 + wg * 64 * 64) + 2 * kk, db = wg_desc(Ks + hf * KN * 64) + 2 * kk;
      if constexpr (KN == 64) {
        wgmma64ss(&s[0][0], da, db);
      } else {
        wgmma128(&s[0][0], da, db);
      }
    }
    wg_commit();
    wg_wait<0>();
    if constexpr (KN == 64) {
      wg_keep32(&s[0][0]);
    } else {
      wg_keep(&s[0][0]);
    }
    int ra = wr + g;
    if (j0 + KN - 1 > pos + wr) fa_mask<NS>(s, j0, tg, pos + ra, pos + ra + 8);
    fa_online<16, NS>(s, oacc, ma, mb, la, lb);
    u32 pa[KN / 16][4];
#pragma unroll
    for (int kk = 0; kk < KN / 16; kk++) fa_pfrag<NS>(pa[kk], s, kk);
    wg_keep(&oacc[0][0]);
    wg_fence();
#pragma unroll
    for (int kk = 0; kk < KN / 16; kk++) wgmma128rs(&oacc[0][0], pa[kk], wg_desc(Vs + (kk >> 2) * 128 * 64) + 2 * (kk & 3));
    wg_commit();
    wg_wait<0>();
    wg_keep(&oacc[0][0]);
  }
  cp_async_wait<0>();
  int ra = wr + g;
  fa_store<16>(o, ldo, row0, h * HD, n, ra, ra + 8, tg, oacc, la, lb);
}
extern "C" __global__ void __launch_bounds__(256, 1) k_fattn4_128(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off,
                                                                  const u16* kb, const i64* offT, const u16* vt, int H, int Hkv, float scale) {
  PDL_ENTER();
  fattn4_impl<64>(o, ldo, q, ldq, spans, off, kb, offT, vt, H, Hkv, scale);
}
extern "C" __global__ void __launch_bounds__(256, 1) k_fattn4w_128(float* o, i64 ldo, const float* q, i64 ldq, const int* spans, const i64* off,
                                                                   const u16* kb, const i64* offT, const u16* vt, int H, int Hkv, float scale) {
  PDL_ENTER();
  fattn4_impl<128>(o, ldo, q, ldq, spans, off, kb, offT, vt, H, Hkv, scale);
}

// ---------------------------------------------------------------------------
// Chunk-parallel lightning attention on tensor cores (head dim D = 64 or 128,
// chunk C = 64). chunks: int[4*nch] = (first row, rows nc, span, 0); a span's
// chunks are consecutive. kv: per (chunk, head) a D x D FP32 block.
//   k_ltc_kv:   kv[c] = sum_j l^{nc-1-j} k_j (x) v_j            (all chunks at once)
//   k_ltc_scan: sb[c] <- state before chunk c (BF16); state <- state after the span
//   k_ltc_out:  O_i = s*( sum_{j<=i} l^{i-j}(q_i.k_j) v_j + l^{i+1} q_i S_c ), S_c = sb[c]

#define LC 64

// ltc_ld stores rows row0..row0+nc-1 of a head's D values (src + h*D, row
// stride ld; LC rows, zeros past nc) into dst as BF16, row-major with row
// stride D+8 (ldmatrix reads 8 rows of it without bank conflicts), each
// row's values times wt[i] when wt is set. NT threads; every thread issues
// all its loads before it stores any (16 bytes each where vec: src and ld
// 16-byte aligned), so a block has LC*D*4 bytes in flight.
template <int D, int NT>
__device__ __forceinline__ void ltc_ld(u16* dst, const float* src, i64 ld, int row0, int nc, int h, const float* wt, int vec) {
  constexpr int PER = LC * D / 4 / NT;
  float4 t[PER];
#pragma unroll
  for (int u = 0; u < PER; u++) {
    int idx = threadIdx.x + u * NT, i = idx / (D / 4), m = (idx % (D / 4)) * 4;
    const float* p = src + (i64)(row0 + i) * ld + (i64)h * D + m;
    t[u] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (i < nc) t[u] = vec ? *(const float4*)p : make_float4(p[0], p[1], p[2], p[3]);
  }
#pragma unroll
  for (int u = 0; u < PER; u++) {
    int idx = threadIdx.x + u * NT, i = idx / (D / 4), m = (idx % (D / 4)) * 4;
    float w = wt ? wt[i] : 1.f;
    *(uint2*)(dst + i * (D + 8) + m) = make_uint2(pack_bf16(t[u].x * w, t[u].y * w), pack_bf16(t[u].z * w, t[u].w * w));
  }
}

template <int D>
__device__ __forceinline__ void ltc_kv_impl(const float* k, i64 ldk, const float* v, i64 ldv, const int* chunks, const float* decay, int H, float* kv, int vec) {
  constexpr int LD = D + 8;
  __shared__ __align__(16) u16 Ks[LC * LD];  // the decayed keys, [row][key dim]
  __shared__ __align__(16) u16 Vs[LC * LD];  // [row][value dim]
  __shared__ float wt[LC];
  int c = blockIdx.x / H, h = blockIdx.x % H;
  int row0 = chunks[4 * c], nc = chunks[4 * c + 1];
  double a = (double)decay[h];
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  for (int i = tid; i < LC; i += blockDim.x) wt[i] = i < nc ? (float)exp(-a * (double)(nc - 1 - i)) : 0.f;
  __syncthreads();
  ltc_ld<D, 256>(Ks, k, ldk, row0, nc, h, wt, vec);
  ltc_ld<D, 256>(Vs, v, ldv, row0, nc, h, 0, vec);
  __syncthreads();
  // kv = K^T V: 8 warps, 4 along the key dim (rows m), 2 along the value
  // dim; the A fragments (K^T) and the B fragments (V) by ldmatrix.trans
  constexpr int MT = D / 64, NP = D / 32;
  int wm = warp & 3, wn = warp >> 2;
  float acc[MT][2 * NP][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < 2 * NP; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < LC; kk += 16) {
    u32 af[MT][4];
#pragma unroll
    for (int i = 0; i < MT; i++) ldsm4t(af[i], Ks + (kk + (lane & 7) + ((lane >> 4) << 3)) * LD + wm * (D / 4) + 16 * i + (((lane >> 3) & 1) << 3));
#pragma unroll
    for (int jp = 0; jp < NP; jp++) {
      u32 bs[4];
      ldsm4t(bs, Vs + (kk + (lane & 7) + (((lane >> 3) & 1) << 3)) * LD + wn * (D / 2) + 16 * jp + ((lane >> 4) << 3));
#pragma unroll
      for (int i = 0; i < MT; i++) {
        mma_bf16(acc[i][2 * jp], af[i], bs[0], bs[1]);
        mma_bf16(acc[i][2 * jp + 1], af[i], bs[2], bs[3]);
      }
    }
  }
  float* out = kv + ((i64)c * H + h) * D * D;
  int g = lane >> 2, tg = lane & 3;
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < 2 * NP; j++) {
      int m = wm * (D / 4) + 16 * i + g, col = wn * (D / 2) + 8 * j + 2 * tg;
      *(float2*)(out + (i64)m * D + col) = make_float2(acc[i][j][0], acc[i][j][1]);
      *(float2*)(out + (i64)(m + 8) * D + col) = make_float2(acc[i][j][2], acc[i][j][3]);
    }
}
extern "C" __global__ void __launch_bounds__(256) k_ltc_kv64(const float* k, i64 ldk, const float* v, i64 ldv, const int* chunks, const float* decay, int H, float* kv, int vec) { PDL_ENTER();
  ltc_kv_impl<64>(k, ldk, v, ldv, chunks, decay, H, kv, vec);
}
extern "C" __global__ void __launch_bounds__(256) k_ltc_kv128(const float* k, i64 ldk, const float* v, i64 ldv, const int* chunks, const float* decay, int H, float* kv, int vec) { PDL_ENTER();
  ltc_kv_impl<128>(k, ldk, v, ldv, chunks, decay, H, kv, vec);
}

// k_ltc_scan: grid (spans*H, ceil(D*D/256)); sinfo[2*sp] = (first chunk, chunks).
// The state before chunk c goes to sb[c] in BF16 (as k_ltc_out multiplies it),
// at the offsets of kv[c].
extern "C" __global__ void k_ltc_scan(const float* kv, u16* sb, const int* chunks, const int* sinfo, const i64* states, const float* decay, int H, int D) { PDL_ENTER();
  int sp = blockIdx.x / H, h = blockIdx.x % H;
  int e = blockIdx.y * blockDim.x + threadIdx.x;
  if (e >= D * D) return;
  int c0 = sinfo[2 * sp], nch = sinfo[2 * sp + 1];
  double a = (double)decay[h];
  float* S = (float*)states[sp] + (i64)h * D * D + e;
  float s = *S;
  float full = (float)exp(-a * (double)LC);  // the factor of every full chunk
  i64 step = (i64)H * D * D;
  const float* p = kv + ((i64)c0 * H + h) * D * D + e;
  u16* sp_ = sb + ((i64)c0 * H + h) * D * D + e;
  // loads in groups of 8 chunks, so that they are in flight together
  for (int c = 0; c < nch; c += 8) {
    float t[8];
#pragma unroll
    for (int u = 0; u < 8; u++) t[u] = c + u < nch ? p[(c + u) * step] : 0.f;
#pragma unroll
    for (int u = 0; u < 8; u++) {
      if (c + u < nch) {
        sp_[(c + u) * step] = f2bf16(s);
        int nc = chunks[4 * (c0 + c + u) + 1];
        s = (nc == LC ? full : (float)exp(-a * (double)nc)) * s + t[u];
      }
    }
  }
  *S = s;
}

template <int D>
__device__ __forceinline__ void ltc_out_impl(float* o, i64 ldo, const float* q, i64 ldq, const float* k, i64 ldk, const float* v, i64 ldv,
                                             const int* chunks, const u16* sb, const float* decay, int H, float scale, int vec) {
  constexpr int QLD = D + 8, NO = D / 8, KS = D / 16;
  extern __shared__ __align__(16) unsigned char dsm[];
  u16* Qs = (u16*)dsm;
  u16* Ks = Qs + LC * QLD;
  u16* Vs = Ks + LC * QLD;  // [row][value dim]
  u16* Ss = Vs + LC * QLD;  // the state before the chunk, [key dim][value dim], swizzled
  float* pw = (float*)(Ss + D * D);
  int c = blockIdx.x / H, h = blockIdx.x % H;
  int row0 = chunks[4 * c], nc = chunks[4 * c + 1];
  double a = (double)decay[h];
  int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
  const u16* S = sb + ((i64)c * H + h) * D * D;
  for (int idx = tid; idx < D * D / 8; idx += blockDim.x) {
    int m = idx / (D / 8), ch = idx % (D / 8);
    cp_async16(Ss + swz(m, ch, D), S + (i64)m * D + 8 * ch, true);
  }
  cp_async_commit();
  for (int i = tid; i <= LC; i += blockDim.x) pw[i] = (float)exp(-a * (double)i);
  ltc_ld<D, 128>(Qs, q, ldq, row0, nc, h, 0, vec);
  ltc_ld<D, 128>(Ks, k, ldk, row0, nc, h, 0, vec);
  ltc_ld<D, 128>(Vs, v, ldv, row0, nc, h, 0, vec);
  cp_async_wait<0>();
  __syncthreads();
  int rw = 16 * warp;
  if (rw >= nc) return;
  int ia = rw + g, ib = ia + 8;
  // P = (Q K^T) masked and decayed
  float s[8][4];
#pragma unroll
  for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
  float oacc[NO][4];
#pragma unroll
  for (int j = 0; j < NO; j++) oacc[j][0] = oacc[j][1] = oacc[j][2] = oacc[j][3] = 0.f;
#pragma unroll
  for (int ks = 0; ks < KS; ks++) {
    u32 af[4];
    lda_frag(af, Qs, QLD, rw, 16 * ks, g, tg);
#pragma unroll
    for (int j = 0; j < 8; j++) {
      const u16* bp = Ks + (8 * j + g) * QLD + 16 * ks + 2 * tg;
      mma_bf16(s[j], af, lds32(bp), lds32(bp + 8));
    }
#pragma unroll
    for (int jp = 0; jp < NO / 2; jp++) {
      u32 bs[4];
      ldsm4t(bs, Ss + swz(16 * ks + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * jp + (lane >> 4), D));
      mma_bf16(oacc[2 * jp], af, bs[0], bs[1]);
      mma_bf16(oacc[2 * jp + 1], af, bs[2], bs[3]);
    }
  }
  float fa = pw[min(ia + 1, LC)], fb = pw[min(ib + 1, LC)];
#pragma unroll
  for (int j = 0; j < NO; j++) {
    oacc[j][0] *= fa;
    oacc[j][1] *= fa;
    oacc[j][2] *= fb;
    oacc[j][3] *= fb;
  }
#pragma unroll
  for (int j = 0; j < 8; j++) {
    int kj = 8 * j + 2 * tg;
    s[j][0] = kj <= ia ? s[j][0] * pw[ia - kj] : 0.f;
    s[j][1] = kj + 1 <= ia ? s[j][1] * pw[ia - kj - 1] : 0.f;
    s[j][2] = kj <= ib ? s[j][2] * pw[ib - kj] : 0.f;
    s[j][3] = kj + 1 <= ib ? s[j][3] * pw[ib - kj - 1] : 0.f;
  }
#pragma unroll
  for (int kk = 0; kk < 4; kk++) {
    u32 pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                 pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
    for (int jp = 0; jp < NO / 2; jp++) {
      u32 bs[4];
      ldsm4t(bs, Vs + (16 * kk + (lane & 7) + (((lane >> 3) & 1) << 3)) * QLD + 16 * jp + ((lane >> 4) << 3));
      mma_bf16(oacc[2 * jp], pa, bs[0], bs[1]);
      mma_bf16(oacc[2 * jp + 1], pa, bs[2], bs[3]);
    }
  }
  float* oa = o + (i64)(row0 + ia) * ldo + (i64)h * D;
  float* ob = o + (i64)(row0 + ib) * ldo + (i64)h * D;
#pragma unroll
  for (int j = 0; j < NO; j++) {
    int col = 8 * j + 2 * tg;
    if (ia < nc) {
      oa[col] = scale * oacc[j][0];
      oa[col + 1] = scale * oacc[j][1];
    }
    if (ib < nc) {
      ob[col] = scale * oacc[j][2];
      ob[col + 1] = scale * oacc[j][3];
    }
  }
}
extern "C" __global__ void __launch_bounds__(128) k_ltc_out64(float* o, i64 ldo, const float* q, i64 ldq, const float* k, i64 ldk, const float* v, i64 ldv,
                                                              const int* chunks, const u16* sb, const float* decay, int H, float scale, int vec) { PDL_ENTER();
  ltc_out_impl<64>(o, ldo, q, ldq, k, ldk, v, ldv, chunks, sb, decay, H, scale, vec);
}
extern "C" __global__ void __launch_bounds__(128) k_ltc_out128(float* o, i64 ldo, const float* q, i64 ldq, const float* k, i64 ldk, const float* v, i64 ldv,
                                                               const int* chunks, const u16* sb, const float* decay, int H, float scale, int vec) { PDL_ENTER();
  ltc_out_impl<128>(o, ldo, q, ldq, k, ldk, v, ldv, chunks, sb, decay, H, scale, vec);
}

// ---------------------------------------------------------------------------
// moe_gd_bf16v: the decode MoE of one row with its shared expert (BF16, the
// shared expert as slot topk, of the same intermediate size I) in one
// kernel: moe_gu_bf16v's SwiGLU pairs, then moe_dc2_bf16v's down
// projections and weighted sum, with the same arithmetic in the same order
// (bit-identical, TestMoEShared). The down projections' rows are copied into
// shared memory (cp.async) while the gate|up rows stream, instead of being
// read after them, so that both streams are in flight together.
//   Grid: D/GD_ROWS blocks of GD_WARPS warps, all resident at once (the host
// checks the occupancy, gdFits). Block b computes the pairs [b·P, b·P + P)
// of the m·I (P = ceil(m·I / blocks)), warp w the pairs w, w + GD_WARPS, ...
// of them, and the output rows [GD_ROWS·b, GD_ROWS·b + GD_ROWS). The blocks
// meet once, at a grid barrier after the pairs (gd_sync: bar[0] counts
// arrivals, bar[1] is the generation), as every row needs every pair; each
// block then copies the pairs into shared memory once (every warp reading
// them from L2 made the down phase 10 µs instead of 2).
//   Dynamic shared memory: GD_ROWS·m·I BF16 values, the rows in
// [r][slot][I] order, then the m·I pairs (FP32). With early set (the
// routing is the command just before) the warps whose pairs are all the
// shared expert's compute them before the PDL wait, as moe_gu does. late
// (RINGO_CUDA_GD_STAGE) says when each thread issues its copies of the
// routed rows: 0 right after the wait, before its first pair's loads; 1
// after its pairs (for comparisons); 2 (the default) right after its first
// pair's first loads, 3 after its second round of them, 4 half after each
// of the two, so that the pairs, which the grid barrier waits for, are
// asked for first. With na (the default; RINGO_CUDA_GD_NA=0 for
// comparisons) the routed rows are loaded past L1 (ldg_na), which keeps X,
// read by every pair, there: 2.8 % faster decode steps on the H200. With
// pipe (the default; RINGO_CUDA_GD_PIPE=0 for comparisons) the pairs are
// summed by gu_pair_pipe: 0.7 % faster.
#define GD_ROWS 8
#define GD_WARPS 18
// gd_sync is a barrier of all nb blocks of the grid (all resident): the
// block's writes before it are visible to every block after it. Thread 0
// sets *ta to when the block arrived (timeline builds; 0 otherwise). With
// flip every block adds to bar[0] with release semantics, block 0 2^31 -
// (nb - 1) and the others 1, so that the word's top bit flips when the
// last add lands and the waiting blocks see it on their next read, with
// nothing to reset (the last one then counts the generation in bar[1],
// which only the block trace reads). Without it (for comparisons) the
// last block resets the count and stores the next generation in bar[1],
// which the others wait for.
__device__ __forceinline__ void gd_sync(unsigned int* bar, unsigned int nb, int flip, unsigned long long* ta) {
  __syncthreads();
  if (threadIdx.x == 0) {
    *ta = tl_now();
    unsigned int g, c;
    if (flip) {
      unsigned int add = blockIdx.x == 0 ? 0x80000000u - (nb - 1) : 1u;
      asm volatile("atom.add.release.gpu.u32 %0, [%1], %2;" : "=r"(g) : "l"(bar), "r"(add) : "memory");
      if (((g ^ (g + add)) & 0x80000000u) != 0) {
        atomicAdd(bar + 1, 1u);
      } else {
        do {
          asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(c) : "l"(bar) : "memory");
        } while (((g ^ c) & 0x80000000u) == 0);
      }
    } else {
      asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(g) : "l"(bar + 1) : "memory");
      __threadfence();
      // the top bit may be left set by the other way
      if ((atomicAdd(bar, 1u) & 0x7fffffffu) == nb - 1) {
        atomicExch(bar, 0u);
        __threadfence();
        asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(bar + 1), "r"(g + 1) : "memory");
      } else {
        do {
          asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(c) : "l"(bar + 1) : "memory");
        } while (c == g);
      }
    }
  }
  __syncthreads();
}
// gd_stage copies the block's down rows of the slots j with shared(j) ==
// sh (of its chunks, in [row][slot][chunk] order, part of parts equal
// shares) into shared memory (cp.async, one group).
__device__ __forceinline__ void gd_stage(u16* sm, const int* ids, int topk, int m, const u16* __restrict__ Wd, const u16* __restrict__ Sd, int D, int I,
                                         int n0, bool sh, int part = 0, int parts = 1) {
  int CI = I / 8, total = GD_ROWS * m * CI;
  for (int c = total / parts * part + threadIdx.x; c < (part == parts - 1 ? total : total / parts * (part + 1)); c += blockDim.x) {
    int kc = c % CI, j = (c / CI) % m, r = c / (CI * m);
    if ((j == topk) != sh) continue;
    const u16* src = j == topk ? Sd + (i64)(n0 + r) * I : Wd + ((i64)ids[j] * D + n0 + r) * I;
    cp_async16(sm + (i64)c * 8, src + kc * 8, true);
  }
  cp_async_commit();
}
// moe_gd_bf16v's parameters and arguments, for its variants below
#define MOE_GD_PARAMS                                                                                                                             \
  const float *X, const int *ids, const float *wts, int topk, const u16 *__restrict__ Wgu, const u16 *__restrict__ Wd, int I, int D, float *A, \
      float *Y, const u16 *__restrict__ Sgu, const u16 *__restrict__ Sd, unsigned int *bar, int early, int late, int spre, int flip, int na, int pipe
#define MOE_GD_ARGS X, ids, wts, topk, Wgu, Wd, I, D, A, Y, Sgu, Sd, bar, early, late, spre, flip, na, pipe
template <int U, bool SPEC>
__device__ __forceinline__ void moe_gd_impl(MOE_GD_PARAMS) {
  if (SPEC) {  // the defaults, as constants
    late = 2, spre = 1, flip = 1, na = 1, pipe = 1;
  }
  extern __shared__ __align__(16) u16 gd_dsm[];  // (a name of its own: this is not a kernel)
  u16* gsm = gd_dsm;
  __shared__ float vsm[GD_ROWS * MOE_DC_MAXS], wsm[MOE_DC_MAXS];
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, m = topk + 1, nb = gridDim.x;
  int n0 = blockIdx.x * GD_ROWS, KC = D / 8, CI = I / 8;
  // the block's work items q < nq: without spre the pairs [q0, q0 + nq) in
  // slot order; with it nr routed pairs from q0, then the shared expert's
  // from s0 (pair(q) maps an item to its pair)
  int nr, q0, s0, nq;
  if (spre) {
    int RP = (topk * I + nb - 1) / nb, SP = (I + nb - 1) / nb;
    q0 = blockIdx.x * RP, nr = max(0, min(RP, topk * I - q0));
    s0 = blockIdx.x * SP, nq = nr + max(0, min(SP, I - s0));
  } else {
    int P = (m * I + nb - 1) / nb;
    q0 = blockIdx.x * P, nq = max(0, min(P, m * I - q0)), nr = nq, s0 = 0;
  }
  auto pair = [&](int q) { return q < nr ? q0 + q : topk * I + s0 + q - nr; };
  // with spre the shared pairs' gate and up rows go to shared memory before
  // the wait, each lane copying the chunks it reads (in the region of the
  // pairs, which are stored there only after the grid barrier)
  u16* shs = gsm + GD_ROWS * m * I;
  unsigned long long t0 = tl_now(), tst = t0, tw0 = 0;
  if (spre)
    for (int q = nr + ((w - nr) % GD_WARPS + GD_WARPS) % GD_WARPS; q < nq; q += GD_WARPS) {
      int k = s0 + q - nr;
      for (int h = 0; h < 2; h++)
        for (int c = lane; c < KC; c += 32) cp_async16(shs + ((i64)(q - nr) * 2 + h) * D + c * 8, Sgu + ((i64)h * I + k) * D + c * 8, true);
    }
  gd_stage(gsm, ids, topk, m, Wd, Sd, D, I, n0, true);  // the shared expert's rows: no dependency
  bool entered = false, pending = false;
  // late 2, 3: the routed copies after the first pair's round 0 or 1 of
  // loads; 4: half after round 0, half after round 1 (hook(-1), at the
  // pair's end, issues what is left)
  int at = late == 3 ? 1 : 0, parts = late == 4 ? 2 : 1, staged = 0;
  auto hook = [&](int r) {
    if (!pending) return;
    for (int upto = r < 0 ? parts : min(parts, r - at + 1); staged < upto; staged++)
      gd_stage(gsm, ids, topk, m, Wd, Sd, D, I, n0, false, staged, parts);
  };
  for (int q = w; q < nq; q += GD_WARPS) {
    int p = pair(q), s = p / I, k = p % I;
    if (!entered && !(early && s == topk)) {
      PDL_ENTER();
      entered = true;
      if (threadIdx.x < topk) wsm[threadIdx.x] = wts[threadIdx.x];  // used after the barrier
      if (late == 0) gd_stage(gsm, ids, topk, m, Wd, Sd, D, I, n0, false);
      pending = late >= 2;
      staged = 0;
      tl_probe(6, t0);
      tl_started(t0);
      t0 = tl_now();
      tw0 = t0;
    }
    i64 e = s < topk ? ids[s] : 0;
    const uint4* W = (const uint4*)(s < topk ? Wgu : Sgu);
    float a;
    if (spre && s == topk) {
      // from the rows staged before the wait (the lane's own copies)
      cp_async_wait<0>();
      const u16* rs = shs + (i64)(q - nr) * 2 * D;
      auto lds = [&](int h, int c) { return *(const uint4*)(rs + (i64)h * D + c * 8); };
      a = pipe ? gu_pair_pipe<GvBF16, U>(lds, 0, 0, 1, X, KC, hook) : gu_pair_ld<GvBF16, U>(lds, 0, 0, 1, X, KC, hook);
      pending = false;
    } else {
      // (the staging copies, while pending, issued behind this pair's
      // first loads); with na the rows pass L1 by, leaving it to X
      const uint4 *wg = W + (e * 2 * I + k) * KC, *wu = W + (e * 2 * I + I + k) * KC;
      auto ldr = [&](int h, int c) { return na ? ldg_na((h ? wu : wg) + c) : __ldg((h ? wu : wg) + c); };
      a = pipe ? gu_pair_pipe<GvBF16, U>(ldr, 0, 0, 1, X, KC, hook) : gu_pair_ld<GvBF16, U>(ldr, 0, 0, 1, X, KC, hook);
      pending = false;
    }
    if (lane == 0) A[(i64)s * I + k] = a;
    if (q == 0) tl_probe(7, t0);
  }
  if (!entered) {
    PDL_ENTER();
    if (threadIdx.x < topk) wsm[threadIdx.x] = wts[threadIdx.x];
    tl_started(t0);
    t0 = tl_now();
    tw0 = t0;
  }
  if (!entered || late == 1) gd_stage(gsm, ids, topk, m, Wd, Sd, D, I, n0, false);
  unsigned long long ta = 0;
  gd_sync(bar, nb, flip, &ta);
  tl_probe(8, t0);
  unsigned long long tb0 = tl_now();
  // the pairs, once per block into shared memory (every warp of every
  // block reading them from L2 would hammer the few L2 slices holding them)
  float* As = (float*)(gsm + GD_ROWS * m * I);
  for (int i = threadIdx.x; i < m * I / 4; i += blockDim.x) ((float4*)As)[i] = __ldcg((const float4*)A + i);
  cp_async_wait<0>();
  __syncthreads();
  tl_probe(15, t0);
  unsigned long long tg0 = tl_now();
  // moe_dcs<GvBF16, 2>'s sums, the rows from shared memory: warp 2j + h
  // computes slot j's products for rows 4h .. 4h + 3, each chunk of the
  // slot's pairs read once for the four rows (shared memory bandwidth, not
  // latency, bounds this phase); then thread r < GD_ROWS sums row r's
  // slots with their weights as moe_dc2's two warps do (even slots, odd
  // slots, then the two sums)
  constexpr int RH = GD_ROWS / 2;
  int j = w >> 1, r0 = (w & 1) * RH;
  if (j < m) {
    float acc[RH];
#pragma unroll
    for (int u = 0; u < RH; u++) acc[u] = 0.f;
    for (int kc = lane; kc < CI; kc += 32) {
      float xv[8];
      ldx8(As + j * I + kc * 8, xv);
      uint4 wv[RH];
#pragma unroll
      for (int u = 0; u < RH; u++) wv[u] = *(const uint4*)(gsm + ((i64)((r0 + u) * m + j) * CI + kc) * 8);
#pragma unroll
      for (int u = 0; u < RH; u++) {
        float wf[8];
        bf16x8(wv[u], wf);
        acc[u] += dotn<8>(wf, xv);
      }
    }
#pragma unroll
    for (int u = 0; u < RH; u++) {
      float v = warp_sum(acc[u]);
      if (lane == 0) vsm[(r0 + u) * MOE_DC_MAXS + j] = v;
    }
  }
  __syncthreads();
  int r = threadIdx.x, n = n0 + r;
  if (r < GD_ROWS && n < D) {
    float o0 = 0.f, o1 = 0.f;  // (not an array: it went to local memory)
    for (int jj = 0; jj < m; jj++) {
      float v = vsm[r * MOE_DC_MAXS + jj];
      if (jj & 1)
        o1 += jj < topk ? v * wsm[jj] : v;
      else
        o0 += jj < topk ? v * wsm[jj] : v;
    }
    Y[n] = o0 + o1;
  }
  tl_probe(9, t0);
  tl_block(*(volatile unsigned int*)(bar + 1), tst, tw0, tb0, tg0, ta);
  tl_end();
}
// moe_gd_bf16v runs the pairs in rounds of one chunk per row and lane
// (gu_pair_pipe: two loads in flight per lane, each issued as the one
// before is summed) with every knob but early compiled in at its default.
// With rounds of GV_U (4) and the knobs as arguments, the 56 registers that
// two blocks of 576 threads leave made the compiler spill each row's loads
// right after issuing them, which stalled the warp for the whole round
// trip (104 bytes spilled per thread, none now): 11 % faster decode steps
// on the H200 (rounds of 2: 9.5 %). moe_gd_bf16v_any takes the knobs from
// its arguments (any other setting); for comparisons, _u4 is the kernel
// before (RINGO_CUDA_GD_VAR=u4) and _s2 runs rounds of 2 chunks with the
// knobs compiled in (RINGO_CUDA_GD_VAR=s2).
extern "C" __global__ void __launch_bounds__(32 * GD_WARPS, 2) moe_gd_bf16v(MOE_GD_PARAMS) {
  moe_gd_impl<1, true>(MOE_GD_ARGS);
}
extern "C" __global__ void __launch_bounds__(32 * GD_WARPS, 2) moe_gd_bf16v_any(MOE_GD_PARAMS) {
  moe_gd_impl<1, false>(MOE_GD_ARGS);
}
extern "C" __global__ void __launch_bounds__(32 * GD_WARPS, 2) moe_gd_bf16v_u4(MOE_GD_PARAMS) {
  moe_gd_impl<4, false>(MOE_GD_ARGS);
}
extern "C" __global__ void __launch_bounds__(32 * GD_WARPS, 2) moe_gd_bf16v_s2(MOE_GD_PARAMS) {
  moe_gd_impl<2, true>(MOE_GD_ARGS);
}

// ---------------------------------------------------------------------------
// k_fp8rate_hw, k_fp8rate_int, k_bf16rate: decoding throughput alone (no
// memory traffic): every thread decodes n chunks of 16 E4M3 values (GvFP8,
// GvFP8I) or 8 BF16 ones (GvBF16) held in registers and sums their products
// with x, as gv_rows_chunk does with four rows per chunk of x; out keeps the
// sums from being optimised away (BenchmarkFP8MoEHot).
template <class F>
__device__ __forceinline__ void dec_rate(int n, float* out) {
  u32 s = threadIdx.x * 0x9e3779b9u + blockIdx.x;
  uint4 w[4];
#pragma unroll
  for (int j = 0; j < 4; j++) w[j] = make_uint4(s ^ (j * 0x01010101u), s * 3u + j, s * 5u + j, s * 7u + j);
  float x[F::N], acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < F::N; i++) x[i] = (float)(i + 1) * 1e-3f;
  for (int k = 0; k < n; k++) {
#pragma unroll
    for (int j = 0; j < 4; j++) {
      float wf[F::N];
      w[j] = make_uint4(w[j].x + 0x01010101u, w[j].y + 0x01010101u, w[j].z + 0x01010101u, w[j].w + 0x01010101u);  // (4 adds per chunk)
      F::dec(w[j], wf);
      acc[j] += dotn<F::N>(wf, x);
    }
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc[0] + acc[1] + acc[2] + acc[3];
}
extern "C" __global__ void k_fp8rate_hw(int n, float* out) { dec_rate<GvFP8>(n, out); }
extern "C" __global__ void k_fp8rate_int(int n, float* out) { dec_rate<GvFP8I>(n, out); }
extern "C" __global__ void k_bf16rate(int n, float* out) { dec_rate<GvBF16>(n, out); }

// k_bulkpat (BenchmarkBulkPattern): the bulk-copy streams of the FP8 decode
// kernels without their arithmetic. Each of a block's 9 warps streams nr
// rounds into its ring of 2 stages of np·psz bytes: round u is np pieces
// of psz bytes (np <= 32), ps bytes apart, from base + w·wb + u·ru (w the
// warp's index in the grid); it waits for each round, reads a word of it,
// and asks for the round 2 after it. Dynamic shared memory: 9·2·np·psz.
extern "C" __global__ void __launch_bounds__(288, 1) k_bulkpat(const unsigned char* base, i64 wb, int nr, int np, int psz, i64 ps, i64 ru, float* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char fsm[];
  __shared__ __align__(8) unsigned long long bars[9 * 2];
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, stg = np * psz;
  const unsigned char* st = fsm + w * 2 * stg;
  u32 bar0 = smem_addr(bars + w * 2), st0 = smem_addr(st);
  if (lane == 0) {
    mbar_init(bar0, 1);
    mbar_init(bar0 + 8, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncwarp();
  const unsigned char* wbase = base + (i64)(blockIdx.x * 9 + w) * wb;
  auto ask = [&](int u) {
    int b = u & 1;
    if (lane == 0) mbar_expect(bar0 + 8 * b, stg);
    __syncwarp();
    if (lane < np) bulk_g2s(st0 + b * stg + lane * psz, wbase + u * ru + lane * ps, psz, bar0 + 8 * b);
  };
  PDL_ENTER();
  for (int u = 0; u < 2 && u < nr; u++) ask(u);
  float acc = 0.f;
  for (int u = 0; u < nr; u++) {
    int b = u & 1;
    mbar_wait(bar0 + 8 * b, (u32)(u >> 1) & 1);
    acc += *(const float*)(st + b * stg + 4 * lane);
    __syncwarp();
    if (u + 2 < nr) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
      ask(u + 2);
    }
  }
  if (acc == 1234.5f) out[0] = acc;
#endif
}

// Roofline helpers: k_readsum streams a buffer (HBM read bandwidth);
// k_randbf16 fills a BF16 buffer with small pseudo-random values.
extern "C" __global__ void k_readsum(const float4* p, i64 n4, float* out) { PDL_ENTER();
  float s = 0.f;
  GRID_LOOP(n4) {
    float4 v = p[idx];
    s += v.x + v.y + v.z + v.w;
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0 && s == 12345.678f) out[0] = s;  // never true for the fill used; keeps the loads
}
// k_readexp (BenchmarkMoERead): blocks (x, j) stream expert ids[j]'s
// gate|up (n4gu 16-byte chunks) and down (n4dn) matrices, four loads in
// flight per thread, summing them so that they are kept: the rate at which
// a decode MoE's weights can be read, with nothing else in the kernel.
extern "C" __global__ void k_readexp(const uint4* gu, const uint4* dn, const int* ids, i64 n4gu, i64 n4dn, float* out) {
  PDL_ENTER();
  i64 e = ids[blockIdx.y], n = n4gu + n4dn, stride = (i64)gridDim.x * blockDim.x;
  const uint4* a = gu + e * n4gu;
  const uint4* c = dn + e * n4dn - n4gu;
  float s = 0.f;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++) {
      i64 k = i + u * stride;
      v[u] = k < n ? __ldg(k < n4gu ? a + k : c + k) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < 4; u++) s += __uint_as_float(v[u].x) + __uint_as_float(v[u].w);
  }
  s = warp_sum(s);
  if ((threadIdx.x & 31) == 0 && s == 12345.678f) out[0] = s;  // never true for zeroed memory; keeps the loads
}
// k_readgd (BenchmarkMoEPattern) makes moe_gd_bf16v's loads of its
// routed pairs and down rows with little else: its grid and blocks, warp w
// of block b reading the gate and up rows of the pairs w, w + GD_WARPS, ...
// of the block's share (in rounds of GV_U chunks per lane, each summed
// before the next is asked for) and, with mode & 1, the block's down rows
// copied into shared memory (gd_stage) behind its first pair's first
// round; mode & 2 asks for all 8 chunks per lane of both rows at once (D =
// 2048); mode & 4 leaves out the pairs (the copies alone); mode & 8 does
// moe_gd's arithmetic on them instead (gu_pair_ld with the activations X,
// lane 0 storing each pair in A); mode & 16 loads the rows through L1
// (__ldg) instead of past it (ldg_na).
extern "C" __global__ void __launch_bounds__(32 * GD_WARPS, 2) k_readgd(const u16* __restrict__ Wgu, const u16* __restrict__ Wd, const int* ids, int topk,
                                                                         int I, int D, int mode, const float* X, float* A, float* out) {
  extern __shared__ __align__(16) u16 gsm[];
  PDL_ENTER();
  int w = threadIdx.x >> 5, lane = threadIdx.x & 31, nb = gridDim.x, KC = D / 8;
  int RP = (topk * I + nb - 1) / nb, q0 = blockIdx.x * RP, nr = max(0, min(RP, topk * I - q0)), n0 = blockIdx.x * GD_ROWS;
  bool copies = mode & 1, l1 = mode & 16;
  float s = 0.f;
  if (mode & 4) {
    if (copies) gd_stage(gsm, ids, topk, topk, Wd, Wd, D, I, n0, false);
  } else {
    for (int q = w; q < nr; q += GD_WARPS) {
      int p = q0 + q, sl = p / I, k = p % I;
      const uint4* wg = (const uint4*)Wgu + ((i64)ids[sl] * 2 * I + k) * KC;
      const uint4* wu = wg + (i64)I * KC;
      auto ld = [&](int h, int c) { return l1 ? __ldg((h ? wu : wg) + c) : ldg_na((h ? wu : wg) + c); };
      bool pend = copies && q == w;
      if (mode & 8) {
        float a = gu_pair_ld<GvBF16>(ld, 0, 0, 1, X, KC, [&](int r) {
          if (pend && r == 0) gd_stage(gsm, ids, topk, topk, Wd, Wd, D, I, n0, false);
        });
        if (lane == 0) A[p] = a;
      } else if (mode & 2) {
        uint4 vg[8], vu[8];
#pragma unroll
        for (int u = 0; u < 8; u++) {
          vg[u] = ld(0, lane + 32 * u);
          vu[u] = ld(1, lane + 32 * u);
        }
        if (pend) gd_stage(gsm, ids, topk, topk, Wd, Wd, D, I, n0, false);
#pragma unroll
        for (int u = 0; u < 8; u++) s += __uint_as_float(vg[u].x) + __uint_as_float(vu[u].w);
      } else {
        for (int k0 = lane; k0 < KC; k0 += 32 * GV_U) {
          uint4 vg[GV_U], vu[GV_U];
#pragma unroll
          for (int u = 0; u < GV_U; u++) {
            vg[u] = ld(0, k0 + 32 * u);
            vu[u] = ld(1, k0 + 32 * u);
          }
          if (pend && k0 == lane) gd_stage(gsm, ids, topk, topk, Wd, Wd, D, I, n0, false);
#pragma unroll
          for (int u = 0; u < GV_U; u++) s += __uint_as_float(vg[u].x) + __uint_as_float(vu[u].w);
        }
      }
    }
  }
  if (copies) {
    cp_async_wait<0>();
    __syncthreads();
    s += bf16f(gsm[threadIdx.x]);
  }
  s = warp_sum(s);
  if (lane == 0 && s == 12345.678f) out[0] = s;  // never true for zeroed memory; keeps the loads
}
// k_pstep (BenchmarkPersistentStep) is the skeleton of a persistent decode
// step: one resident block per SM runs `steps` steps of np phases, each
// phase's bytes read once (every block a contiguous slice, summed into
// out[0] so that none can be dropped; TestPersistentStep checks the sum),
// with a grid barrier between phases, and no model arithmetic: what such a
// kernel would reach if its work were free, to weigh against the chain of
// kernels. ph holds 5 words per phase: byte offset into W, bytes (a
// multiple of 16), pre (1: its addresses are known ahead, so its first
// bytes may be asked for before the barriers ahead of it, as the weights of
// a GEMV; 0: only after its own barrier, as the routed experts'), and the
// nanoseconds of latency work (all threads spinning) on the critical path
// before its stream (a norm) and after it (a top-k). The first
// min(pmax, slice) bytes of a block's slice go to shared memory by bulk
// copies: right after the barrier that starts the phase, or, when pre, once
// the block has streamed the last phase with bytes before it (looking over
// one phase without bytes); the rest, PS_U 16-byte loads in flight per
// thread. pmax 0: every byte by those loads. bar: [0] arrivals, [32] the
// barrier's generation (both zero at first use; left ready for the next
// launch); a barrier waited on for 2 s traps (blocks not all resident).
#define PS_U 16
// ps_spin holds the calling thread for ns nanoseconds (none when ns <= 0).
__device__ __forceinline__ void ps_spin(i64 ns) {
  if (ns <= 0) return;
  unsigned long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while ((i64)(t - t0) < ns);
}
extern "C" __global__ void __launch_bounds__(512, 1) k_pstep(const unsigned char* W, const i64* ph, int np, int steps, int pmax, u32* bar, u32* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char psm[];
  __shared__ __align__(8) unsigned long long mb;
  PDL_ENTER();
  int tid = threadIdx.x, nb = gridDim.x, b = blockIdx.x;
  u32 mbar = smem_addr(&mb), dst = smem_addr(psm);
  if (tid == 0) {
    mbar_init(mbar, 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  u32 gen;
  asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(gen) : "l"(bar + 32) : "memory");
  u32 acc = 0, fills = 0;
  int total = np * steps;
  // the block's slice of phase q % np: [lo, hi) bytes from W
  auto slice = [&](int q, i64& lo, i64& hi) {
    const i64* f = ph + 5 * (q % np);
    i64 n16 = f[1] / 16;
    lo = f[0] + 16 * (n16 * b / nb);
    hi = f[0] + 16 * (n16 * (b + 1) / nb);
  };
  int asked = -1;  // the phase whose first bytes are in shared memory (or on their way)
  i64 plen = 0;
  auto ask = [&](int q) {
    i64 lo, hi;
    slice(q, lo, hi);
    plen = min((i64)pmax, hi - lo);
    asked = q;
    if (plen == 0 || tid >= 32) return;
    constexpr int PC = 16384;  // bytes a copy
    int n = (int)((plen + PC - 1) / PC);
    if (tid == 0) mbar_expect(mbar, (u32)plen);
    __syncwarp();
    for (int i = tid; i < n; i += 32) {
      i64 o = (i64)i * PC;
      bulk_g2s(dst + (u32)o, W + lo + o, (u32)min((i64)PC, plen - o), mbar);
    }
  };
  for (int q = 0; q < total; q++) {
    const i64* f = ph + 5 * (q % np);
    i64 lo, hi;
    slice(q, lo, hi);
    if (asked != q && hi > lo) ask(q);
    ps_spin(f[3]);
    i64 start = lo;
    if (asked == q && plen > 0) {
      mbar_wait(mbar, fills & 1);
      fills++;
      for (i64 i = 16 * tid; i < plen; i += 16 * blockDim.x) {
        uint4 v = *(const uint4*)(psm + i);
        acc += v.x + v.y + v.z + v.w;
      }
      start += plen;
    }
    __syncthreads();  // shared memory free for the next ask
    const uint4* w = (const uint4*)(W + start);
    i64 n4 = (hi - start) / 16;
    for (i64 i = tid; i < n4; i += PS_U * (i64)blockDim.x) {
      uint4 v[PS_U];
#pragma unroll
      for (int u = 0; u < PS_U; u++) {
        i64 k = i + u * (i64)blockDim.x;
        v[u] = k < n4 ? ldg_na(w + k) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < PS_U; u++) acc += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    // the next phase with bytes (over at most one without), asked for ahead when pre
    for (int r = q + 1; r < total && r <= q + 2; r++) {
      const i64* g = ph + 5 * (r % np);
      if (g[1] == 0) continue;
      if (g[2] && asked != r) ask(r);
      break;
    }
    ps_spin(f[4]);
    if (q == total - 1) break;
    // grid barrier
    __syncthreads();
    if (tid == 0) {
      __threadfence();
      u32 a = atomicAdd(bar, 1u);
      if (a == (u32)nb - 1) {
        atomicExch(bar, 0u);
        __threadfence();
        asm volatile("st.release.gpu.u32 [%0], %1;" ::"l"(bar + 32), "r"(gen + 1) : "memory");
      } else {
        u32 g;
        unsigned long long t0 = 0, t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
        do {
          asm volatile("ld.acquire.gpu.u32 %0, [%1];" : "=r"(g) : "l"(bar + 32) : "memory");
          asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
          if (t - t0 > 2000000000ull) __trap();  // blocks not all resident: an error, not a hang
        } while (g == gen);
      }
    }
    gen++;
    __syncthreads();
  }
  acc += __shfl_xor_sync(0xffffffffu, acc, 16);
  acc += __shfl_xor_sync(0xffffffffu, acc, 8);
  acc += __shfl_xor_sync(0xffffffffu, acc, 4);
  acc += __shfl_xor_sync(0xffffffffu, acc, 2);
  acc += __shfl_xor_sync(0xffffffffu, acc, 1);
  if ((tid & 31) == 0) atomicAdd(out, acc);
#endif
}
// k_spin holds the GPU for ns nanoseconds (one thread of one block, HBM
// idle): BenchmarkReadAfterIdle's gap between reads.
extern "C" __global__ void k_spin(i64 ns) {
  PDL_ENTER();
  ps_spin(ns);
}
extern "C" __global__ void k_randbf16(u16* p, i64 n, u32 seed) { PDL_ENTER();
  GRID_LOOP(n) {
    u32 x = (u32)idx * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995u;
    x ^= x >> 15;
    p[idx] = f2bf16(((float)(x & 0xffff) / 65536.f - 0.5f) * 0.1f);
  }
}

// Token draws (Backend.DrawTokens, backend.Drawer). Row y of the logits x
// draws with prm[4y..4y+3] (draw_prm): u (a double's bits: the uniform
// number), 1/temperature (0: greedy) and lcut = log(min-p, or 1e-4)
// (floats), top-k (0: off), top-p and min-p (floats, 0: off), over DRAW_NB
// blocks of columns per row. k_draw_max takes each block's largest scaled
// logit (lowest column first), k_draw_sum each block's sum of the weights
// ExpNeg(v − mx) of its v ≥ mx − 30 (float64, each thread's piece of
// consecutive columns in order, then a tree over the threads). Without
// filters k_draw_pick then draws: the block where the blocks' running sum
// first exceeds u times their total, and the column there by a scan over
// its threads' pieces (the largest v, lowest column, when rounding leaves
// none; greedy takes that). With filters (sample.Sampler's drawSorted) the
// candidates are gathered instead: the top-k ones from a histogram of
// mx − v over 256 bins of [0, 30] (k_draw_sum's, summed by k_draw_kcut: the
// bins up to the one where the count reaches k hold every top-k token), or
// the tokens with v ≥ mx + lcut for top-p and min-p (k_draw_kcut checks
// that their weight reaches top-p of the total, else the host draws, as
// Sample then takes every token); k_draw_cand gathers their keys (as
// sample's descKey: descending value, then ascending id) and k_draw_sorted
// sorts them (at most DRAW_CAP, else the host draws) and draws as
// drawSorted does: probabilities exp(v − v₀) in float64, min-p, top-p,
// u times what is kept. The weights are the host's (sample.Draw:
// kernels.ExpNeg, every product rounded apart) and so are the candidates;
// only the order of the sums differs. Top-p and min-p draws without top-k
// that those kernels decline (top-p over every token, or more than DRAW_CAP
// candidates) are made by k_draw_selp and k_draw_sel instead: a radix
// selection over the same order (below). A row the kernels decline gets -1
// (top-k with more than DRAW_CAP candidates, or fewer than k tokens within
// 30 of the largest scaled logit).
#define DRAW_NB 128
#define DRAW_T 256
#define DRAW_CAP 2048
#define DRAW_HB 2048  // the selection's bins: 11-bit digits (the last 10 bits)
#define DRAW_SEL_T 1024

struct DrawPrm {
  double u;
  float inv, lcut, topp, minp;
  int topk;
  bool filt;  // temperature sampling with a filter
};
__device__ __forceinline__ DrawPrm draw_prm(const i64* prm, int y) {
  DrawPrm d;
  unsigned long long w1 = (unsigned long long)prm[4 * y + 1], w2 = (unsigned long long)prm[4 * y + 2];
  d.u = __longlong_as_double(prm[4 * y]);
  d.inv = __uint_as_float((u32)w1);
  d.lcut = __uint_as_float((u32)(w1 >> 32));
  d.topk = (int)(u32)w2;
  d.topp = __uint_as_float((u32)(w2 >> 32));
  d.minp = __uint_as_float((u32)(unsigned long long)prm[4 * y + 3]);
  d.filt = d.inv != 0.f && (d.topk > 0 || d.topp > 0.f || d.minp > 0.f);
  return d;
}

// expneg_rn is kernels.ExpNeg with the same roundings (no contraction into
// FMAs).
__device__ __forceinline__ float expneg_rn(float x) {
  float t = __fadd_rn(__fmul_rn(x, 1.44269504088896341f), 12582912.f);
  float k = __fsub_rn(t, 12582912.f);
  float r = __fsub_rn(x, __fmul_rn(k, 0.693359375f));
  r = __fsub_rn(r, __fmul_rn(k, -2.12194440e-4f));
  float p = __fadd_rn(__fmul_rn(1.9875691500e-4f, r), 1.3981999507e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
  p = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.f);
  return __fmul_rn(p, __uint_as_float((__float_as_uint(t) + 127u) << 23));
}
// draw_better reports whether (v, i) goes before (bv, bi): larger, then
// lower column.
__device__ __forceinline__ bool draw_better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }
// draw_bin is the histogram bin of v ≥ mx − 30 for top-k.
__device__ __forceinline__ int draw_bin(float mx, float v) { return min(255, (int)__fmul_rn(__fsub_rn(mx, v), 256.f / 30.f)); }
// draw_key is sample's descKey: ascending keys order by descending value
// (−0 as +0), then ascending id.
__device__ __forceinline__ unsigned long long draw_key(float v, int id) {
  u32 b = v == 0.f ? 0u : __float_as_uint(v);
  b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return ((unsigned long long)(~b) << 32) | (u32)id;
}
// draw_piece is thread tid's piece [*a, *e) of block b's columns: it
// returns the sum of their weights, adds those of v ≥ cut into *mass, and
// counts the weighted ones into hist (when not null).
__device__ __forceinline__ double draw_piece(const float* xr, int V, int b, int tid, float inv, float mx, float cut, int* a, int* e, double* mass,
                                             int* hist) {
  int per = (V + DRAW_NB - 1) / DRAW_NB, c1 = min(V, (b + 1) * per), tp = (per + DRAW_T - 1) / DRAW_T;
  *a = min(c1, b * per + tid * tp);
  *e = min(c1, *a + tp);
  float lo = __fsub_rn(mx, 30.f);
  double s = 0.0, m = 0.0;
  for (int i = *a; i < *e; i++) {
    float v = __fmul_rn(xr[i], inv);
    if (v >= lo) {
      double w = (double)expneg_rn(__fsub_rn(v, mx));
      s += w;
      if (v >= cut) m += w;
      if (hist) atomicAdd(&hist[draw_bin(mx, v)], 1);
    }
  }
  *mass = m;
  return s;
}
// draw_rowmax is the largest of row y's blocks' maxima.
__device__ __forceinline__ float draw_rowmax(const float* pm, int y) {
  float m = NEG_INF;
  for (int j = 0; j < DRAW_NB; j++) m = fmaxf(m, pm[y * DRAW_NB + j]);
  return m;
}
extern "C" __global__ void k_draw_max(const float* x, i64 ldx, int V, const i64* prm, float* pm, int* pi) {
  PDL_ENTER();
  __shared__ float sv[DRAW_T / 32];
  __shared__ int si[DRAW_T / 32];
  int y = blockIdx.y, b = blockIdx.x, tid = threadIdx.x;
  float inv = draw_prm(prm, y).inv;
  int per = (V + DRAW_NB - 1) / DRAW_NB, c1 = min(V, (b + 1) * per);
  const float* xr = x + (i64)y * ldx;
  float bv = NEG_INF;
  int bi = 0x7fffffff;
  for (int i = b * per + tid; i < c1; i += DRAW_T) {
    float v = inv != 0.f ? __fmul_rn(xr[i], inv) : xr[i];
    if (draw_better(v, i, bv, bi)) bv = v, bi = i;
  }
  for (int o = 16; o > 0; o >>= 1) {
    float v = __shfl_xor_sync(0xffffffffu, bv, o);
    int i = __shfl_xor_sync(0xffffffffu, bi, o);
    if (draw_better(v, i, bv, bi)) bv = v, bi = i;
  }
  if ((tid & 31) == 0) sv[tid >> 5] = bv, si[tid >> 5] = bi;
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < DRAW_T / 32; w++)
      if (draw_better(sv[w], si[w], bv, bi)) bv = sv[w], bi = si[w];
    pm[y * DRAW_NB + b] = bv;
    pi[y * DRAW_NB + b] = bi;
  }
}
extern "C" __global__ void k_draw_sum(const float* x, i64 ldx, int V, const i64* prm, const float* pm, double* ps, double* pmass, int* ph) {
  PDL_ENTER();
  __shared__ double sh[DRAW_T], sm[DRAW_T];
  __shared__ int hist[256];
  __shared__ float smx;
  int y = blockIdx.y, b = blockIdx.x, tid = threadIdx.x;
  DrawPrm d = draw_prm(prm, y);
  if (d.inv == 0.f) return;  // greedy
  if (tid == 0) smx = draw_rowmax(pm, y);
  bool hk = d.filt && d.topk > 0;
  for (int i = tid; i < 256; i += DRAW_T) hist[i] = 0;
  __syncthreads();
  float mx = smx, cut = d.filt && d.topk == 0 ? __fadd_rn(mx, d.lcut) : __int_as_float(0x7f800000);
  int a, e;
  double mass;
  sh[tid] = draw_piece(x + (i64)y * ldx, V, b, tid, d.inv, mx, cut, &a, &e, &mass, hk ? hist : nullptr);
  sm[tid] = mass;
  __syncthreads();
  for (int o = DRAW_T / 2; o > 0; o >>= 1) {
    if (tid < o) sh[tid] += sh[tid + o], sm[tid] += sm[tid + o];
    __syncthreads();
  }
  if (tid == 0) ps[y * DRAW_NB + b] = sh[0], pmass[y * DRAW_NB + b] = sm[0];
  if (hk)
    for (int i = tid; i < 256; i += DRAW_T) ph[((i64)y * DRAW_NB + b) * 256 + i] = hist[i];
}
// k_draw_kcut (DRAW_T = 256 threads, a block per row) sets row y's state
// st[4y..4y+3] for the filtered draws: the candidates' count (0), whether
// the host draws (1), the last top-k bin, the row's largest scaled logit.
// With h1 (not null) it also clears row y's first histogram of the
// selection (k_draw_selp's) for the draws without top-k.
extern "C" __global__ void k_draw_kcut(const i64* prm, const float* pm, const double* ps, const double* pmass, const int* ph, int* st,
                                       unsigned long long* h1) {
  PDL_ENTER();
  __shared__ int cs[256];
  __shared__ int res;
  int y = blockIdx.x, tid = threadIdx.x;
  DrawPrm d = draw_prm(prm, y);
  if (!d.filt) return;
  if (h1 && d.topk == 0)
    for (int i = tid; i < DRAW_HB; i += DRAW_T) h1[(i64)y * DRAW_HB + i] = 0ull;
  if (tid == 0) {
    st[4 * y] = 0;
    st[4 * y + 1] = 0;
    st[4 * y + 2] = 255;
    st[4 * y + 3] = __float_as_int(draw_rowmax(pm, y));
    res = 256;
  }
  if (d.topk > 0) {
    int c = 0;
    for (int b = 0; b < DRAW_NB; b++) c += ph[((i64)y * DRAW_NB + b) * 256 + tid];
    cs[tid] = c;
    __syncthreads();
    for (int o = 1; o < 256; o <<= 1) {  // inclusive scan
      int v = tid >= o ? cs[tid - o] : 0;
      __syncthreads();
      cs[tid] += v;
      __syncthreads();
    }
    if (cs[tid] >= d.topk && (tid == 0 || cs[tid - 1] < d.topk)) res = tid;
    __syncthreads();
    if (tid == 0) {
      if (res == 256)
        st[4 * y + 1] = 1;  // fewer than k tokens within 30 of the largest
      else
        st[4 * y + 2] = res;
    }
  } else if (d.minp == 0.f && tid == 0) {
    double z = 0.0, mass = 0.0;
    for (int b = 0; b < DRAW_NB; b++) z += ps[y * DRAW_NB + b], mass += pmass[y * DRAW_NB + b];
    if (mass / z < (double)d.topp) st[4 * y + 1] = 1;  // Sample takes every token
  }
}
extern "C" __global__ void k_draw_cand(const float* x, i64 ldx, int V, const i64* prm, int* st, unsigned long long* cand) {
  PDL_ENTER();
  int y = blockIdx.y, b = blockIdx.x, tid = threadIdx.x, lane = tid & 31;
  DrawPrm d = draw_prm(prm, y);
  if (!d.filt || st[4 * y + 1]) return;
  float mx = __int_as_float(st[4 * y + 3]), lo = __fsub_rn(mx, 30.f), cut = __fadd_rn(mx, d.lcut);
  int kb = st[4 * y + 2];
  int per = (V + DRAW_NB - 1) / DRAW_NB, c0 = b * per, c1 = min(V, (b + 1) * per);
  const float* xr = x + (i64)y * ldx;
  for (int base = c0; base < c1; base += DRAW_T) {
    int i = base + tid;
    float v = i < c1 ? __fmul_rn(xr[i], d.inv) : NEG_INF;
    bool ok = i < c1 && (d.topk > 0 ? v >= lo && draw_bin(mx, v) <= kb : v >= cut);
    unsigned m = __ballot_sync(0xffffffffu, ok);
    if (m == 0u) continue;
    int leader = __ffs(m) - 1, pos = 0;
    if (lane == leader) pos = atomicAdd(&st[4 * y], __popc(m));
    pos = __shfl_sync(0xffffffffu, pos, leader) + __popc(m & ((1u << lane) - 1u));
    if (ok && pos < DRAW_CAP) cand[(i64)y * DRAW_CAP + pos] = draw_key(v, i);
  }
}
extern "C" __global__ void k_draw_pick(const float* x, i64 ldx, int V, const i64* prm, const float* pm, const int* pi, const double* ps,
                                       int* out) {
  PDL_ENTER();
  __shared__ double sc[DRAW_T];
  __shared__ double sr;
  __shared__ float smx;
  __shared__ int sb;
  int y = blockIdx.x, tid = threadIdx.x;
  DrawPrm d = draw_prm(prm, y);
  if (d.filt) return;  // k_draw_sorted's
  float inv = d.inv;
  if (tid == 0) {
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int b = 0; b < DRAW_NB; b++)
      if (draw_better(pm[y * DRAW_NB + b], pi[y * DRAW_NB + b], bv, bi)) bv = pm[y * DRAW_NB + b], bi = pi[y * DRAW_NB + b];
    out[y] = bi;  // greedy, or no block reached
    int pick = -1;
    double r = 0.0;
    if (inv != 0.f) {
      double z = 0.0;
      for (int b = 0; b < DRAW_NB; b++) z += ps[y * DRAW_NB + b];
      r = d.u * z;
      for (int b = 0; b < DRAW_NB; b++) {
        double v = ps[y * DRAW_NB + b];
        if (r < v) {
          pick = b;
          break;
        }
        r -= v;
      }
    }
    sb = pick, sr = r, smx = bv;
  }
  __syncthreads();
  int b = sb;
  if (b < 0) return;
  const float* xr = x + (i64)y * ldx;
  float mx = smx, lo = __fsub_rn(mx, 30.f);
  int a, e;
  double mass;
  sc[tid] = draw_piece(xr, V, b, tid, inv, mx, __int_as_float(0x7f800000), &a, &e, &mass, nullptr);
  __syncthreads();
  for (int o = 1; o < DRAW_T; o <<= 1) {  // inclusive scan
    double v = tid >= o ? sc[tid - o] : 0.0;
    __syncthreads();
    sc[tid] += v;
    __syncthreads();
  }
  double r = sr, excl = tid ? sc[tid - 1] : 0.0;
  // the thread whose piece holds r; if rounding put r past the scan's total,
  // the last thread with weights
  bool mine = excl <= r && r < sc[tid];
  if (r >= sc[DRAW_T - 1] && sc[tid] > excl) {
    mine = true;
    for (int t = tid + 1; t < DRAW_T; t++)
      if (sc[t] > sc[t - 1]) mine = false;
  }
  if (!mine) return;
  double q = r - excl;
  int last = -1;
  for (int i = a; i < e; i++) {
    float v = __fmul_rn(xr[i], inv);
    if (v < lo) continue;
    last = i;
    q -= (double)expneg_rn(__fsub_rn(v, mx));
    if (q < 0.0) break;
  }
  out[y] = last;  // (the piece's last weighted column when rounding left none)
}
// k_draw_sorted (1024 threads, a block per row): the filtered draw over the
// sorted candidates (see above).
extern "C" __global__ void k_draw_sorted(const float* x, i64 ldx, const i64* prm, const double* ps, const int* st, const unsigned long long* cand,
                                         int* out) {
  PDL_ENTER();
  __shared__ unsigned long long ks[DRAW_CAP];
  __shared__ double pr[DRAW_CAP];
  __shared__ double ts[1024];
  __shared__ double sz;
  __shared__ int first;
  int y = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
  DrawPrm d = draw_prm(prm, y);
  if (!d.filt) return;
  int n = st[4 * y];
  if (st[4 * y + 1] || n > DRAW_CAP) {
    if (tid == 0) out[y] = -1;
    return;
  }
  int N = 2;
  while (N < n) N <<= 1;
  for (int i = tid; i < N; i += nt) ks[i] = i < n ? cand[(i64)y * DRAW_CAP + i] : ~0ull;
  __syncthreads();
  for (int k = 2; k <= N; k <<= 1)  // bitonic sort, ascending
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < N; i += nt) {
        int l = i ^ j;
        if (l > i) {
          unsigned long long p = ks[i], q = ks[l];
          if ((p > q) == ((i & k) == 0)) ks[i] = q, ks[l] = p;
        }
      }
      __syncthreads();
    }
  int nk = d.topk > 0 ? min(d.topk, n) : n;
  const float* xr = x + (i64)y * ldx;
  float v0 = __fmul_rn(xr[(u32)ks[0]], d.inv);
  for (int i = tid; i < nk; i += nt) pr[i] = exp((double)__fsub_rn(__fmul_rn(xr[(u32)ks[i]], d.inv), v0));
  if (tid == 0) {
    first = nk;
    double z = 0.0;
    for (int b = 0; b < DRAW_NB; b++) z += ps[y * DRAW_NB + b];
    sz = z;
  }
  __syncthreads();
  // min-p keeps the prefix with p ≥ min-p (at least one)
  if (d.minp > 0.f)
    for (int i = tid; i < nk; i += nt)
      if (pr[i] < (double)d.minp) atomicMin(&first, max(i, 1));
  // running sums: thread t adds elements 2t and 2t + 1
  int i0 = 2 * tid;
  double a0 = i0 < nk ? pr[i0] : 0.0, a1 = i0 + 1 < nk ? pr[i0 + 1] : 0.0;
  ts[tid] = a0 + a1;
  __syncthreads();
  for (int o = 1; o < nt; o <<= 1) {
    double v = tid >= o ? ts[tid - o] : 0.0;
    __syncthreads();
    ts[tid] += v;
    __syncthreads();
  }
  double excl = tid ? ts[tid - 1] : 0.0;
  if (i0 < nk) pr[i0] = excl + a0;
  if (i0 + 1 < nk) pr[i0 + 1] = (excl + a0) + a1;
  __syncthreads();
  int n1 = first;
  double z = d.topk > 0 ? pr[nk - 1] : sz;  // top-k normalises over its k
  __syncthreads();
  // top-p keeps the prefix whose running probability reaches top-p
  if (d.topp > 0.f)
    for (int i = tid; i < n1; i += nt)
      if (pr[i] / z >= (double)d.topp) atomicMin(&first, i + 1);
  __syncthreads();
  int n2 = first;
  double r = d.u * pr[n2 - 1];
  __syncthreads();
  if (tid == 0) first = n2 - 1;
  __syncthreads();
  for (int i = tid; i < n2; i += nt)
    if (pr[i] > r) atomicMin(&first, i);
  __syncthreads();
  if (tid == 0) out[y] = (int)(u32)ks[first];
}

// The selection (k_draw_selp, k_draw_sel): a top-p or min-p draw without
// top-k over more candidates than k_draw_sorted holds. Sample's kept tokens
// are a prefix of the descKey order (descending value, then ascending id):
// min-p's tokens with p ≥ min-p and, for top-p, the shortest prefix whose
// probabilities p = exp(v − v₀) (float64) reach top-p of the whole
// weight; the draw is the first kept token whose running sum exceeds u
// times the kept total. Each is the first token in that order whose
// running weight reaches a target, which a radix selection finds without
// sorting: the value keys (descKey's upper half) in three digits (11, 11
// and 10 bits), each digit's bins weighted by the tokens' probabilities,
// then the tied tokens of the key found in id order. The probabilities
// are summed in fixed point (p·2^S, S = 62 − bits(V), 64-bit integers),
// so that their sums are exact and do not depend on the order of the
// atomic adds: a token of p below 2^-S weighs nothing (S = 44 for
// Ring's vocabulary: under e^-30, which Sample's own weights drop too).

// draw_sel_row reports whether row y's draw is the selection's.
__device__ __forceinline__ bool draw_sel_row(const DrawPrm& d, const int* st, int y) {
  return d.filt && d.topk == 0 && (st[4 * y + 1] != 0 || st[4 * y] > DRAW_CAP);
}
// draw_vkey is descKey's upper half: ascending keys order by descending value.
__device__ __forceinline__ u32 draw_vkey(float v) { return (u32)(draw_key(v, 0) >> 32); }
// draw_qbits is S for a vocabulary of V tokens (V < 2^b; V·2^S < 2^62).
__device__ __forceinline__ int draw_qbits(int V) {
  int b = 0;
  while (b < 31 && (1 << b) <= V) b++;
  return 62 - b;
}
// draw_q is the fixed-point weight of scaled logit v (mx the largest): 0
// for min-p below its candidates' cut (v < mx + lcut, as Sample's) or p <
// min-p.
__device__ __forceinline__ unsigned long long draw_q(float v, float mx, float lcut, float minp, int S) {
  double p = exp((double)__fsub_rn(v, mx));
  if (minp > 0.f && (v < __fadd_rn(mx, lcut) || p < (double)minp)) return 0ull;
  return __double2ull_rn(ldexp(p, S));
}
// k_draw_selp (DRAW_NB blocks of DRAW_T threads per row): the selection's
// rows' fixed-point weights into q (V per row) and the first digit's
// histogram into h1 (DRAW_HB per row, cleared by k_draw_kcut).
extern "C" __global__ void k_draw_selp(const float* x, i64 ldx, int V, const i64* prm, const int* st, unsigned long long* q, unsigned long long* h1) {
  PDL_ENTER();
  __shared__ unsigned long long h[DRAW_HB];
  int y = blockIdx.y, b = blockIdx.x, tid = threadIdx.x;
  DrawPrm d = draw_prm(prm, y);
  if (!draw_sel_row(d, st, y)) return;
  for (int i = tid; i < DRAW_HB; i += DRAW_T) h[i] = 0ull;
  __syncthreads();
  float mx = __int_as_float(st[4 * y + 3]);
  int S = draw_qbits(V), per = (V + DRAW_NB - 1) / DRAW_NB, c1 = min(V, (b + 1) * per);
  const float* xr = x + (i64)y * ldx;
  unsigned long long* qr = q + (i64)y * V;
  for (int i = b * per + tid; i < c1; i += DRAW_T) {
    float v = __fmul_rn(xr[i], d.inv);
    unsigned long long w = draw_q(v, mx, d.lcut, d.minp, S);
    qr[i] = w;
    if (w) atomicAdd(&h[draw_vkey(v) >> 21], w);
  }
  __syncthreads();
  for (int i = tid; i < DRAW_HB; i += DRAW_T)
    if (h[i]) atomicAdd(&h1[(i64)y * DRAW_HB + i], h[i]);
}
// sel_scan is the block's exclusive prefix sum of v (thread order), with
// the total in *tot; ws: 32 words of shared memory. Every thread calls it.
__device__ __forceinline__ unsigned long long sel_scan(unsigned long long v, unsigned long long* ws, unsigned long long* tot) {
  int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  unsigned long long s = v;
  for (int o = 1; o < 32; o <<= 1) {
    unsigned long long t = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += t;
  }
  if (lane == 31) ws[w] = s;
  __syncthreads();
  if (w == 0) {
    unsigned long long t = lane < nw ? ws[lane] : 0ull;
    for (int o = 1; o < 32; o <<= 1) {
      unsigned long long u = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += u;
    }
    if (lane < nw) ws[lane] = t;
  }
  __syncthreads();
  unsigned long long ex = (w ? ws[w - 1] : 0ull) + s - v;
  *tot = ws[nw - 1];
  __syncthreads();
  return ex;
}
// The selection's cluster: DRAW_SEL_CL blocks per row share its passes
// (block r the columns [r·per, (r + 1)·per)), their histograms added
// through distributed shared memory.
#define DRAW_SEL_CL 8
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DRAW_SEL_CLUSTER __cluster_dims__(DRAW_SEL_CL, 1, 1)
__device__ __forceinline__ void sel_csync() { asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory"); }
__device__ __forceinline__ u32 sel_rank() {
  u32 r;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(r));
  return r;
}
// sel_ld is the 64-bit word at p in block r's shared memory.
__device__ __forceinline__ unsigned long long sel_ld(const void* p, u32 r) {
  u32 a;
  unsigned long long v;
  asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(a) : "r"(smem_addr(p)), "r"(r));
  asm volatile("ld.shared::cluster.u64 %0, [%1];" : "=l"(v) : "r"(a) : "memory");
  return v;
}
#else
#define DRAW_SEL_CLUSTER
__device__ __forceinline__ void sel_csync() {}
__device__ __forceinline__ u32 sel_rank() { return 0u; }
__device__ __forceinline__ unsigned long long sel_ld(const void* p, u32 r) { return *(const unsigned long long*)p; }
#endif
// draw_keyval is the scaled logit of value key k (draw_vkey's inverse, −0
// as +0).
__device__ __forceinline__ float draw_keyval(u32 k) {
  u32 b = ~k;
  return __uint_as_float((b & 0x80000000u) ? (b & 0x7fffffffu) : ~b);
}
// draw_select (every thread of the cluster) finds the first token of a row
// (scaled logits xr·inv, weights qr from k_draw_selp, first digit's
// histogram h0) in descKey order whose running weight reaches target (1 ≤
// target ≤ the row's total): it returns the running weight up to and with
// it, and with out (not null) stores its id there. mx, lcut, minp and S
// are k_draw_selp's. hs, hm: DRAW_HB words of shared memory each (this
// block's histogram, the cluster's), ws: 32.
__device__ unsigned long long draw_select(const float* xr, const unsigned long long* qr, int V, float inv, float mx, float lcut, float minp, int S,
                                          const unsigned long long* h0, unsigned long long target, int* out, unsigned long long* hs,
                                          unsigned long long* hm, unsigned long long* ws) {
  __shared__ unsigned long long sA, sCnt;
  __shared__ u32 sKey;
  int tid = threadIdx.x, nt = blockDim.x;
  u32 rank = sel_rank();
  int per = (V + DRAW_SEL_CL - 1) / DRAW_SEL_CL, c0 = min(V, (int)rank * per), c1 = min(V, c0 + per);
  unsigned long long A = 0ull, tot;  // A: the weight before the key's range
  u32 key = 0u;
  for (int lev = 0; lev < 3; lev++) {
    int shift = lev == 0 ? 21 : lev == 1 ? 10 : 0, nb = lev == 2 ? 1024 : 2048, hi = shift + (lev == 2 ? 10 : 11);
    if (lev == 0) {
      for (int i = tid; i < DRAW_HB; i += nt) hm[i] = h0[i];
    } else {
      for (int i = tid; i < DRAW_HB; i += nt) hs[i] = 0ull;
      __syncthreads();
      u32 pre = key >> hi;  // the digits found so far
      for (int i = c0 + tid; i < c1; i += nt) {
        unsigned long long w = qr[i];
        if (!w) continue;
        u32 k = draw_vkey(__fmul_rn(xr[i], inv));
        if ((k >> hi) == pre) atomicAdd(&hs[(k >> shift) & (nb - 1)], w);
      }
      sel_csync();  // every block's histogram is complete
      for (int i = tid; i < nb; i += nt) {
        unsigned long long v = 0ull;
        for (u32 r = 0; r < DRAW_SEL_CL; r++) v += sel_ld(&hs[i], r);
        hm[i] = v;
      }
      sel_csync();  // and read before any block clears it again
    }
    __syncthreads();
    // the bin where the running weight reaches target: thread t's bins 2t, 2t + 1
    unsigned long long a0 = 2 * tid < nb ? hm[2 * tid] : 0ull, a1 = 2 * tid + 1 < nb ? hm[2 * tid + 1] : 0ull;
    unsigned long long ex = A + sel_scan(a0 + a1, ws, &tot);
    if (ex < target && target <= ex + a0 + a1) {
      int bn = target <= ex + a0 ? 2 * tid : 2 * tid + 1;
      sA = bn == 2 * tid ? ex : ex + a0;
      sKey = key | ((u32)bn << shift);
    }
    __syncthreads();
    A = sA;
    key = sKey;
    __syncthreads();
  }
  // the key's tokens have one value and one weight; the m-th of them in id
  // order is the one
  unsigned long long qk = max(1ull, draw_q(draw_keyval(key), mx, lcut, minp, S)), m = (target - A + qk - 1) / qk;
  if (!out) return A + m * qk;
  // thread t of block r counts them in its part [a, e) of the block's columns
  int tp = (c1 - c0 + nt - 1) / nt, a = min(c1, c0 + tid * tp), e = min(c1, a + tp), c = 0;
  for (int i = a; i < e; i++)
    if (qr[i] && draw_vkey(__fmul_rn(xr[i], inv)) == key) c++;
  unsigned long long bt;
  unsigned long long cx = sel_scan((unsigned long long)c, ws, &bt);
  if (tid == 0) sCnt = bt;
  sel_csync();
  for (u32 r = 0; r < rank; r++) cx += sel_ld(&sCnt, r);
  if (cx < m && m <= cx + c) {
    int k = (int)(m - cx);
    for (int i = a; i < e; i++)
      if (qr[i] && draw_vkey(__fmul_rn(xr[i], inv)) == key && --k == 0) {
        *out = i;
        break;
      }
  }
  sel_csync();  // sCnt read by every block
  return A + m * qk;
}
// k_draw_sel (a cluster of DRAW_SEL_CL blocks of DRAW_SEL_T threads per
// row): the selection's draw (above) for the rows k_draw_selp prepared:
// the kept prefix ends at the first token whose running weight reaches
// top-p times the whole weight (k_draw_sum's, as k_draw_sorted's z), or at
// the last weighted token; the draw is the first token whose running
// weight exceeds u times the kept total.
extern "C" __global__ void DRAW_SEL_CLUSTER __launch_bounds__(DRAW_SEL_T) k_draw_sel(const float* x, i64 ldx, int V, const i64* prm, const double* ps,
                                                                                    const int* st, const unsigned long long* q,
                                                                                    const unsigned long long* h1, int* out) {
  PDL_ENTER();
  __shared__ unsigned long long hs[DRAW_HB], hm[DRAW_HB], ws[32], sT;
  int y = blockIdx.y, tid = threadIdx.x;
  DrawPrm d = draw_prm(prm, y);
  if (!draw_sel_row(d, st, y)) return;  // (the whole cluster)
  const float* xr = x + (i64)y * ldx;
  const unsigned long long* qr = q + (i64)y * V;
  const unsigned long long* hr = h1 + (i64)y * DRAW_HB;
  float mx = __int_as_float(st[4 * y + 3]);
  int S = draw_qbits(V);
  unsigned long long tot;
  sel_scan(hr[2 * tid] + hr[2 * tid + 1], ws, &tot);  // (DRAW_SEL_T = DRAW_HB / 2)
  if (tid == 0) {
    unsigned long long T = tot;
    if (d.topp > 0.f) {
      double z = 0.0;
      for (int b = 0; b < DRAW_NB; b++) z += ps[y * DRAW_NB + b];
      double t = ceil(ldexp((double)d.topp * z, S));
      if (t < (double)tot) T = max(1ull, (unsigned long long)t);
    }
    sT = T;
  }
  __syncthreads();
  unsigned long long kept = draw_select(xr, qr, V, d.inv, mx, d.lcut, d.minp, S, hr, sT, nullptr, hs, hm, ws);
  // the first running weight above u·kept: the first to reach floor(u·kept) + 1
  double r = floor(d.u * (double)kept);
  unsigned long long t2 = r < (double)kept ? (unsigned long long)r + 1ull : kept;
  draw_select(xr, qr, V, d.inv, mx, d.lcut, d.minp, S, hr, t2, out + y, hs, hm, ws);
}
