// Pass A and pass B on the GPU. The CPU twin of each kernel is in row_kernels_impl.h
// (forwardRow, backwardRow); the per-token formulas both use are token_math.h's.
//
// A row is handled by a group of threads: a warp for small vocabularies (several rows per
// block), a whole block otherwise. Each thread walks its share of the row in 16-byte vectors
// (a scalar head up to 16-byte alignment and a scalar tail), keeping an online max / sum-exp;
// the group then merges the threads' states in a fixed tree, so every run gives the same bits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda_kernels.h"
#include "cuda_launch.h"
#include "host_device.h"

namespace fdpo {
namespace {
#include "half_convert.h"
#include "token_math.h"

constexpr int kWarp = 32;
constexpr unsigned kAllLanes = 0xffffffffu;
// Vocabularies up to this size get a warp per row; larger ones a block per row.
constexpr int64_t kWarpRowVocab = 4096;
constexpr int kWarpRowsBlock = 256;    // 8 rows per block
// Pass A, a block per row: two 512-thread blocks per SM (at most 64 registers a thread), so one
// block's loads keep HBM busy while the other merges its row (with one 1024-thread block, the
// SM's loads would stop at every row's end).
constexpr int kForwardBlock = 512;
constexpr int kForwardBlocksPerSm = 2;
// The deferred mode: one 1024-thread block per SM (see kDeferredBlocksPerSm).
constexpr int kDeferredBlock = 1024;
constexpr int kBackwardBlock = 512;    // pass B, block per row
// The deferred mode re-reads each row right after its reduction: few rows in flight per SM keep
// the rows being re-read within L2 (132 SMs x one 256 KB bf16 row of V = 128256 is 33 MB of
// H200's 50 MB; 2 blocks of 8 rows of at most 16 KB for the warp kernels), so that re-read costs
// no HBM traffic. Unmeasured on a GPU so far: test/gpu/check.ts times it.
constexpr int kDeferredBlocksPerSm = 1;
constexpr int kDeferredWarpBlocksPerSm = 2;

// exp(x) in fp32 within ~2 ulp (the CPU twin is expPortable): n = round(x log2 e) from the exact
// product, Cody-Waite r = x - n ln2, 2^(r log2 e) on the special function unit (its argument is
// within +-1/2, where the unit is accurate to ~2^-22 relative), and 2^n through the exponent
// bits. Below -87.3 the result is 0, as on the CPU; NaN stays NaN.
__device__ __forceinline__ float deviceExp(float x);

// The scalar ops token_math.h's templates take, on the device (min and max as x86's: the second
// operand when either is NaN).
struct DeviceOps {
  using F = float;
  FDPO_HD static float set1(float v) { return v; }
  FDPO_HD static float add(float a, float b) { return a + b; }
  FDPO_HD static float sub(float a, float b) { return a - b; }
  FDPO_HD static float mul(float a, float b) { return a * b; }
  FDPO_HD static float div(float a, float b) { return a / b; }
  FDPO_HD static float fma(float a, float b, float c) { return fmaf(a, b, c); }
  FDPO_HD static float min(float a, float b) { return a < b ? a : b; }
  FDPO_HD static float max(float a, float b) { return a > b ? a : b; }
  __device__ static float exp(float x) { return deviceExp(x); }
  __device__ static float expBelowClamp(float x) { return deviceExp(x); }
  // 2^n for integral n in [-126, 127].
  __device__ static float exp2i(float n) { return __int_as_float((__float2int_rz(n) + 127) << 23); }
};

// The model-head transform t(z) on the device (token_math.h's headValue).
template <int Mode>
__device__ __forceinline__ float headAt(const HeadConstants& h, float z) {
  return headValue<Mode, DeviceOps>(h, z);
}

__device__ __forceinline__ float deviceExp(float x) {
  const bool below = x < kExpFlushBelow;
  x = x > kExpClamp ? kExpClamp : x;  // comparisons are false for NaN: it passes through
  x = x < -kExpClamp ? -kExpClamp : x;
  const float n = expExponent<DeviceOps>(x);
  const float r = expRemainder<DeviceOps>(x, n);
  const float e = hardwareExp2(r * kLog2e);
  const float scale = __int_as_float((__float2int_rz(n) + 127) << 23);
  return below ? 0.0f : e * scale;
}

// A dtype's 16-byte vectors and scalar conversions.
template <int DT>
struct Elements;

template <>
struct Elements<FDPO_FLOAT32> {
  static constexpr int kPerVector = 4;
  __device__ static float load(const void* p, int64_t i) { return ((const float*)p)[i]; }
  __device__ static void store(void* p, int64_t i, float v) { __stcs((float*)p + i, v); }
  __device__ static void unpack(const uint4& v, float (&z)[4]) {
    z[0] = __uint_as_float(v.x);
    z[1] = __uint_as_float(v.y);
    z[2] = __uint_as_float(v.z);
    z[3] = __uint_as_float(v.w);
  }
  __device__ static uint4 pack(const float (&g)[4]) {
    return make_uint4(__float_as_uint(g[0]), __float_as_uint(g[1]), __float_as_uint(g[2]), __float_as_uint(g[3]));
  }
};

// bf16 and fp16 share the word layout: element 2k in the low half of word k.
template <class Convert>
struct HalfElements {
  static constexpr int kPerVector = 8;
  __device__ static float load(const void* p, int64_t i) { return Convert::toFloat(((const uint16_t*)p)[i]); }
  __device__ static void store(void* p, int64_t i, float v) {
    __stcs((unsigned short*)p + i, (unsigned short)Convert::fromFloat(v));
  }
  __device__ static void unpack(const uint4& v, float (&z)[8]) {
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      z[2 * k] = Convert::toFloat((uint16_t)(words[k] & 0xffffu));
      z[2 * k + 1] = Convert::toFloat((uint16_t)(words[k] >> 16));
    }
  }
  __device__ static uint4 pack(const float (&g)[8]) {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) words[k] = (uint32_t)Convert::fromFloat(g[2 * k]) | ((uint32_t)Convert::fromFloat(g[2 * k + 1]) << 16);
    return make_uint4(words[0], words[1], words[2], words[3]);
  }
};

// Round to nearest even, as half_convert.h does on the CPU (NaN stays a NaN).
struct Bf16Convert {
  __device__ static float toFloat(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
  __device__ static uint16_t fromFloat(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
};
struct F16Convert {
  __device__ static float toFloat(uint16_t h) { return __half2float(__ushort_as_half(h)); }
  __device__ static uint16_t fromFloat(float v) { return __half_as_ushort(__float2half_rn(v)); }
};

template <>
struct Elements<FDPO_BFLOAT16> : HalfElements<Bf16Convert> {};
template <>
struct Elements<FDPO_FLOAT16> : HalfElements<F16Convert> {};

template <int DT>
__device__ __forceinline__ int64_t elementBytes() {
  return DT == FDPO_FLOAT32 ? 4 : 2;
}

template <int DT>
__device__ __forceinline__ const void* rowAt(const void* base, int64_t r, int64_t vocab) {
  return (const char*)base + r * vocab * elementBytes<DT>();
}

// Elements before p reaches 16-byte alignment (p is element-aligned: stage() in cuda_memory.cu checks).
template <int DT>
__device__ __forceinline__ int64_t headElements(const void* p, int64_t vocab) {
  const int64_t head = (int64_t)((16 - ((uintptr_t)p & 15)) & 15) / elementBytes<DT>();
  return head < vocab ? head : vocab;
}

// Calls visit.one(i, z) / visit.many(i0, z[kPerVector]) for the elements of a row that thread t
// of nt owns: head element t, vectors t, t+nt, ..., tail element t. Each thread sees its
// elements in increasing index order. Four vectors are loaded before any is used, so each
// thread keeps 64 bytes in flight.
template <int DT, class Visit>
__device__ __forceinline__ void visitRow(const void* row, int64_t vocab, int t, int nt, Visit& visit) {
  using E = Elements<DT>;
  constexpr int N = E::kPerVector;
  const int64_t head = headElements<DT>(row, vocab);
  const int64_t vectors = (vocab - head) / N;
  const int64_t tail = head + vectors * N;
  if (t < head) visit.one(t, E::load(row, t));
  const uint4* body = (const uint4*)((const char*)row + head * elementBytes<DT>());
  int64_t v = t;
  for (; v + 3 * (int64_t)nt < vectors; v += 4 * (int64_t)nt) {
    uint4 raw[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) raw[u] = __ldg(body + v + u * nt);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float z[N];
      E::unpack(raw[u], z);
      visit.many(head + (v + u * nt) * N, z);
    }
  }
  for (; v < vectors; v += nt) {
    float z[N];
    E::unpack(__ldg(body + v), z);
    visit.many(head + v * N, z);
  }
  if (t < vocab - tail) visit.one(tail + t, E::load(row, tail + t));
}

// One thread's (then the group's) online state over a row (forwardRow's sweeps): the raw max m,
// over v != label s = sum exp(t - t(m)) and x = sum exp(t - t(m))(t - t(m)) (t the transformed
// logit: t = z without a transform), q = sum exp(2(t - t(m))) (useWeighting), the sum of t, z*0
// summed (NaN exactly when a logit is inf or NaN), and the first index holding m.
struct RowState {
  float m, s, x, sum, nonFinite, q;
  int32_t argmax;

  __device__ static RowState empty() { return RowState{-INFINITY, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, INT32_MAX}; }

  // Rebase s, x and q from m to a larger max: e' = e*alpha and (t - t(m')) = (t - t(m)) + d.
  template <int Mode>
  __device__ void rebase(float newMax, const HeadConstants& h) {
    if (m != -INFINITY) {
      const float d = headAt<Mode>(h, m) - headAt<Mode>(h, newMax);
      const float alpha = deviceExp(d);
      x = alpha * fmaf(d, s, x);
      s = alpha * s;
      q = alpha * (alpha * q);
    }
    m = newMax;
  }

  // Merges another thread's state; symmetric in its two operands, so every lane of a butterfly
  // ends with the same bits.
  template <int Mode>
  __device__ void merge(const RowState& o, const HeadConstants& h) {
    const float mm = fmaxf(m, o.m);
    float s1 = 0.0f, x1 = 0.0f, q1 = 0.0f, s2 = 0.0f, x2 = 0.0f, q2 = 0.0f;
    if (m != -INFINITY) {
      const float d = headAt<Mode>(h, m) - headAt<Mode>(h, mm), alpha = deviceExp(d);
      s1 = alpha * s;
      x1 = alpha * fmaf(d, s, x);
      q1 = alpha * (alpha * q);
    }
    if (o.m != -INFINITY) {
      const float d = headAt<Mode>(h, o.m) - headAt<Mode>(h, mm), alpha = deviceExp(d);
      s2 = alpha * o.s;
      x2 = alpha * fmaf(d, o.s, o.x);
      q2 = alpha * (alpha * o.q);
    }
    argmax = m == o.m ? min(argmax, o.argmax) : (m > o.m ? argmax : o.argmax);
    m = mm;
    s = s1 + s2;
    x = x1 + x2;
    q = q1 + q2;
    sum += o.sum;
    nonFinite += o.nonFinite;
  }

  __device__ RowState shuffled(int mask) const {
    return RowState{__shfl_xor_sync(kAllLanes, m, mask),   __shfl_xor_sync(kAllLanes, s, mask),
                    __shfl_xor_sync(kAllLanes, x, mask),   __shfl_xor_sync(kAllLanes, sum, mask),
                    __shfl_xor_sync(kAllLanes, nonFinite, mask), __shfl_xor_sync(kAllLanes, q, mask),
                    __shfl_xor_sync(kAllLanes, argmax, mask)};
  }
};

template <int N, int Mode>
struct RowVisitor {
  RowState st;
  int64_t label;
  HeadConstants head;
  bool squares;

  __device__ void one(int64_t i, float z) {
    float zs[1] = {z};
    add<1>(i, zs);
  }
  __device__ void many(int64_t i0, const float (&z)[N]) { add<N>(i0, z); }

  template <int K>
  __device__ __forceinline__ void add(int64_t i0, const float (&z)[K]) {
    float top = z[0];
#pragma unroll
    for (int j = 1; j < K; ++j) top = fmaxf(top, z[j]);
    if (top > st.m) {
      st.rebase<Mode>(top, head);
      int first = K - 1;
#pragma unroll
      for (int j = K - 1; j >= 0; --j) first = z[j] == top ? j : first;
      st.argmax = (int32_t)(i0 + first);
    }
    const float mt = headAt<Mode>(head, st.m);
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const float t = headAt<Mode>(head, z[j]);
      st.sum += t;
      st.nonFinite = fmaf(z[j], 0.0f, st.nonFinite);
      const float d = t - mt;
      // The label's terms are added once the row is done (forwardRow does the same).
      const float e = i0 + j == label ? 0.0f : deviceExp(d);
      st.s += e;
      st.x = fmaf(e, d, st.x);
      if (squares) st.q = fmaf(e, e, st.q);
    }
  }
};

// Merges a group's states; every thread of the group returns the group's state. A block-wide
// group goes through shared memory: warp results, then warp 0's butterfly, then a broadcast.
template <int kGroup, int Mode>
__device__ RowState reduceGroup(RowState st, const HeadConstants& h) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask /= 2) st.merge<Mode>(st.shuffled(mask), h);
  if constexpr (kGroup == kWarp) {
    // Shuffles order no memory: this orders every lane's reads of the row (the label logit
    // included) before any lane's in-place writes to it in the deferred mode.
    __syncwarp();
    return st;
  }
  __shared__ RowState warps[kGroup / kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  if (lane == 0) warps[warp] = st;
  __syncthreads();  // every warp's state is in shared memory
  if (warp == 0) {
    st = lane < kGroup / kWarp ? warps[lane] : RowState::empty();
#pragma unroll
    for (int mask = kWarp / 2; mask > 0; mask /= 2) st.merge<Mode>(st.shuffled(mask), h);
    if (lane == 0) warps[0] = st;
  }
  __syncthreads();  // the merged state is in warps[0]
  st = warps[0];
  __syncthreads();  // everyone has read it before the next row overwrites warps[]
  return st;
}

// scale * t'(z) * (onehot - p) of one row (GradValues on the CPU). Entropy: plus t'(z) times the
// entropy bonus's term with the row's entropy scale (token_math.h); off, the code of before.
template <int Mode, bool Entropy = false>
struct GradValues {
  float m, logSum, negScale, labelGrad, entropyScale, entropy;
  int64_t label;
  HeadConstants head;
  __device__ GradValues(const RowForward& f, float scale, int32_t label_, const HeadConstants& head_,
                        float entropyScale_ = 0.0f)
      : m(f.max), logSum(f.logSum), negScale(-scale),
        labelGrad(Entropy ? labelGradientWithEntropy(Mode == kHeadIdentity ? scale : scale * f.labelSlope,
                                                     Mode == kHeadIdentity ? entropyScale_ : entropyScale_ * f.labelSlope,
                                                     f.logp, f.entropy)
                          : labelGradient(Mode == kHeadIdentity ? scale : scale * f.labelSlope, f.logp)),
        entropyScale(entropyScale_), entropy(f.entropy), label(label_), head(head_) {}
  __device__ float element(float t) const {
    if (Entropy) return otherGradientWithEntropy<DeviceOps>(negScale, entropyScale, entropy, t, m, logSum);
    return otherGradient<DeviceOps>(negScale, t, m, logSum);
  }
  __device__ float at(int64_t i, float z) const {
    if (i == label) return labelGrad;
    if (Mode == kHeadIdentity) return element(z);
    float slope;
    const float t = headValue<Mode, DeviceOps>(head, z, &slope);
    return element(t) * slope;
  }
};

struct ZeroValues {
  __device__ float at(int64_t, float) const { return 0.0f; }
};

// Writes values.at(i, z_i) over one row of dst, in dst's 16-byte vectors (a scalar head and tail
// around them). Reads src only when Read; src vectors are loaded whole when src and dst share
// their alignment, element by element otherwise. dst may equal src: each element is read by
// the thread that then writes it. Co-aligned reads go kDepth vectors at a time, all loaded before
// any is written (in place too: they are the thread's own): pass B reads HBM with 4 (64 bytes in
// flight per thread, as visitRow; one at a time would leave it short of bandwidth), the deferred
// mode re-reads L2 with 1 (its 1024-thread blocks have no registers to spare for more).
template <int DT, bool Read, int kDepth, class Values>
__device__ __forceinline__ void writeRow(const void* src, void* dst, int64_t vocab, int t, int nt,
                                         const Values& values) {
  using E = Elements<DT>;
  constexpr int N = E::kPerVector;
  const int64_t head = headElements<DT>(dst, vocab);
  const int64_t vectors = (vocab - head) / N;
  const int64_t tail = head + vectors * N;
  const bool coAligned = (((uintptr_t)src ^ (uintptr_t)dst) & 15) == 0;
  auto scalarAt = [&](int64_t i) { E::store(dst, i, values.at(i, Read ? E::load(src, i) : 0.0f)); };
  if (t < head) scalarAt(t);
  uint4* out = (uint4*)((char*)dst + head * elementBytes<DT>());
  const uint4* in = (const uint4*)((const char*)src + head * elementBytes<DT>());
  // Vector v's values from its unpacked elements z, stored to dst.
  auto writeVector = [&](int64_t v, const float (&z)[N]) {
    float g[N];
#pragma unroll
    for (int j = 0; j < N; ++j) g[j] = values.at(head + v * N + j, z[j]);
    __stcs(out + v, E::pack(g));
  };
  int64_t v = t;
  if (Read && coAligned && kDepth > 1) {
    for (; v + (kDepth - 1) * (int64_t)nt < vectors; v += kDepth * (int64_t)nt) {
      uint4 raw[kDepth];
#pragma unroll
      for (int u = 0; u < kDepth; ++u) raw[u] = __ldcs(in + v + u * nt);
#pragma unroll
      for (int u = 0; u < kDepth; ++u) {
        float z[N];
        E::unpack(raw[u], z);
        writeVector(v + u * nt, z);
      }
    }
  }
  for (; v < vectors; v += nt) {
    float z[N];
    if (!Read) {
#pragma unroll
      for (int j = 0; j < N; ++j) z[j] = 0.0f;
    } else if (coAligned) {
      E::unpack(__ldcs(in + v), z);
    } else {
#pragma unroll
      for (int j = 0; j < N; ++j) z[j] = E::load(src, head + v * N + j);
    }
    writeVector(v, z);
  }
  if (t < vocab - tail) scalarAt(tail + t);
}

// Pass A: rows first, first + step, ...; kGroup threads per row, blockDim / kGroup rows per block.
// Reads each non-ignored row once (Deferred: twice, the second time from L2) and writes its
// RowForward (Deferred: and its unscaled onehot - p into grad; zeros for ignored rows).
template <int DT, int kGroup, bool Deferred, int Mode>
__global__ void __launch_bounds__(kGroup == kWarp ? kWarpRowsBlock : kGroup,
                                  kGroup == kForwardBlock ? kForwardBlocksPerSm : 1) forwardKernel(DeviceRows rows, RowForward* out, void* grad) {
  const HeadConstants& head = rows.options.head;
  const bool squares = rows.options.squares;
  const int groups = blockDim.x / kGroup;
  const int t = threadIdx.x % kGroup;
  for (int64_t r = (int64_t)blockIdx.x * groups + threadIdx.x / kGroup; r < rows.rows; r += (int64_t)gridDim.x * groups) {
    const int32_t label = rows.labels[r];
    const void* row = rowAt<DT>(rows.logits, r, rows.vocab);
    void* gradRow = Deferred ? (void*)rowAt<DT>(grad, r, rows.vocab) : nullptr;
    // The same label for the whole group: the branch (and the barriers after it) stay uniform.
    if (label == rows.ignoreIndex || label < 0 || label >= rows.vocab) {
      if (Deferred) writeRow<DT, false, 1>(row, gradRow, rows.vocab, t, kGroup, ZeroValues());
      continue;
    }
    // Read before the group's reduction: in place, the row is overwritten after it.
    const float labelLogit = Elements<DT>::load(row, label);
    RowVisitor<Elements<DT>::kPerVector, Mode> visitor{RowState::empty(), label, head, squares};
    visitRow<DT>(row, rows.vocab, t, kGroup, visitor);
    const RowState st = reduceGroup<kGroup, Mode>(visitor.st, head);
    float labelSlope;
    const float labelT = headValue<Mode, DeviceOps>(head, labelLogit, &labelSlope);
    RowForward f = finishRow(RowSums{headAt<Mode>(head, st.m), st.s, st.x, st.sum, st.nonFinite, st.q}, labelT,
                             rows.vocab, st.argmax == label, squares);
    f.labelSlope = labelSlope;
    if (t == 0) out[r] = f;
    if (Deferred) writeRow<DT, true, 1>(row, gradRow, rows.vocab, t, kGroup, GradValues<Mode>(f, 1.0f, label, head));
  }
}

// Pass B: grad = scale * (onehot - p) per row; rows with scale 0 (ignored, or a pair with no
// gradient) are written as zeros without reading the logits. Entropy: plus the entropy bonus's
// term with entropyScale[r] (zeros only where both scales are 0).
template <int DT, int kGroup, int Mode, bool Entropy = false>
__global__ void __launch_bounds__(kGroup == kWarp ? kWarpRowsBlock : kBackwardBlock, 2) backwardKernel(DeviceRows rows, const RowForward* forward, const float* rowScale, void* grad, const float* entropyScale) {
  const int groups = blockDim.x / kGroup;
  const int t = threadIdx.x % kGroup;
  for (int64_t r = (int64_t)blockIdx.x * groups + threadIdx.x / kGroup; r < rows.rows; r += (int64_t)gridDim.x * groups) {
    const void* row = rowAt<DT>(rows.logits, r, rows.vocab);
    void* gradRow = (void*)rowAt<DT>(grad, r, rows.vocab);
    const float scale = rowScale[r];
    const float entropyAt = Entropy ? entropyScale[r] : 0.0f;
    if (scale == 0.0f && entropyAt == 0.0f) {
      writeRow<DT, false, 1>(row, gradRow, rows.vocab, t, kGroup, ZeroValues());
    } else {
      // The capped transform's tanh needs the registers of two of the four vectors in flight.
      writeRow<DT, true, Mode == kHeadCapped ? 2 : 4>(
          row, gradRow, rows.vocab, t, kGroup, GradValues<Mode, Entropy>(forward[r], scale, rows.labels[r], rows.options.head, entropyAt));
    }
  }
}

__global__ void checkLabelsKernel(DeviceRows rows, unsigned long long* badRow) {
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows.rows; r += (int64_t)gridDim.x * blockDim.x) {
    const int32_t y = rows.labels[r];
    if (y != rows.ignoreIndex && (y < 0 || y >= rows.vocab)) atomicMin(badRow, (unsigned long long)r);
  }
}

int multiprocessors() {
  int device = 0, count = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
  return count > 0 ? count : 1;
}

// Launches a row loop with as many blocks as can be resident at once (at most maxPerSm per SM),
// never more than the rows need. Which rows a group takes does not change what it computes, so
// the results do not depend on the grid (or the GPU).
template <class... Params, class... Args>
cudaError_t launchRows(void (*kernel)(Params...), int block, int rowsPerBlock, int maxPerSm, int64_t rows,
                       cudaStream_t stream, Args... args) {
  int perSm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, kernel, block, 0) != cudaSuccess) {
    cudaGetLastError();
    perSm = 1;
  }
  perSm = perSm < 1 ? 1 : perSm > maxPerSm ? maxPerSm : perSm;
  const int64_t needed = (rows + rowsPerBlock - 1) / rowsPerBlock;
  const int64_t resident = (int64_t)multiprocessors() * perSm;
  return launchKernel(kernel, (unsigned)(needed < resident ? needed : resident), block, stream, args...);
}

template <int DT, int Mode>
cudaError_t launchForwardMode(const DeviceRows& rows, RowForward* out, void* grad, cudaStream_t stream) {
  const int warpRows = kWarpRowsBlock / kWarp;
  if (rows.vocab <= kWarpRowVocab) {
    if (!grad) return launchRows(forwardKernel<DT, kWarp, false, Mode>, kWarpRowsBlock, warpRows, INT32_MAX, rows.rows, stream, rows, out, grad);
    return launchRows(forwardKernel<DT, kWarp, true, Mode>, kWarpRowsBlock, warpRows, kDeferredWarpBlocksPerSm, rows.rows, stream, rows, out, grad);
  }
  if (!grad) return launchRows(forwardKernel<DT, kForwardBlock, false, Mode>, kForwardBlock, 1, INT32_MAX, rows.rows, stream, rows, out, grad);
  return launchRows(forwardKernel<DT, kDeferredBlock, true, Mode>, kDeferredBlock, 1, kDeferredBlocksPerSm, rows.rows, stream, rows, out, grad);
}

template <int DT>
cudaError_t launchForwardTyped(const DeviceRows& rows, RowForward* out, void* grad, cudaStream_t stream) {
  if (rows.options.headMode == kHeadLinear) return launchForwardMode<DT, kHeadLinear>(rows, out, grad, stream);
  if (rows.options.headMode == kHeadCapped) return launchForwardMode<DT, kHeadCapped>(rows, out, grad, stream);
  return launchForwardMode<DT, kHeadIdentity>(rows, out, grad, stream);
}

template <int DT, int Mode, bool Entropy>
cudaError_t launchBackwardMode(const DeviceRows& rows, const RowForward* forward, const float* rowScale, void* grad,
                               const float* entropyScale, cudaStream_t stream) {
  if (rows.vocab <= kWarpRowVocab) {
    return launchRows(backwardKernel<DT, kWarp, Mode, Entropy>, kWarpRowsBlock, kWarpRowsBlock / kWarp, INT32_MAX, rows.rows, stream,
                      rows, forward, rowScale, grad, entropyScale);
  }
  return launchRows(backwardKernel<DT, kBackwardBlock, Mode, Entropy>, kBackwardBlock, 1, INT32_MAX, rows.rows, stream, rows, forward,
                    rowScale, grad, entropyScale);
}

template <int DT, bool Entropy>
cudaError_t launchBackwardTyped(const DeviceRows& rows, const RowForward* forward, const float* rowScale, void* grad,
                                const float* entropyScale, cudaStream_t stream) {
  if (rows.options.headMode == kHeadLinear) return launchBackwardMode<DT, kHeadLinear, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
  if (rows.options.headMode == kHeadCapped) return launchBackwardMode<DT, kHeadCapped, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
  return launchBackwardMode<DT, kHeadIdentity, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
}

template <bool Entropy>
cudaError_t launchBackwardAny(const DeviceRows& rows, const RowForward* forward, const float* rowScale, void* grad,
                              const float* entropyScale, cudaStream_t stream) {
  if (rows.rows == 0) return cudaSuccess;
  if (rows.dtype == FDPO_FLOAT32) return launchBackwardTyped<FDPO_FLOAT32, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
  if (rows.dtype == FDPO_BFLOAT16) return launchBackwardTyped<FDPO_BFLOAT16, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
  return launchBackwardTyped<FDPO_FLOAT16, Entropy>(rows, forward, rowScale, grad, entropyScale, stream);
}

}  // namespace

cudaError_t launchCheckLabels(const DeviceRows& rows, unsigned long long* badRow, cudaStream_t stream) {
  if (rows.rows == 0) return cudaSuccess;
  return launchRows(checkLabelsKernel, 256, 256, INT32_MAX, rows.rows, stream, rows, badRow);
}

cudaError_t launchForward(const DeviceRows& rows, RowForward* out, void* deferredGrad, cudaStream_t stream) {
  if (rows.rows == 0) return cudaSuccess;
  if (rows.dtype == FDPO_FLOAT32) return launchForwardTyped<FDPO_FLOAT32>(rows, out, deferredGrad, stream);
  if (rows.dtype == FDPO_BFLOAT16) return launchForwardTyped<FDPO_BFLOAT16>(rows, out, deferredGrad, stream);
  return launchForwardTyped<FDPO_FLOAT16>(rows, out, deferredGrad, stream);
}

cudaError_t launchBackward(const DeviceRows& rows, const RowForward* forward, const float* rowScale, void* grad,
                           cudaStream_t stream) {
  return launchBackwardAny<false>(rows, forward, rowScale, grad, nullptr, stream);
}

cudaError_t launchBackwardEntropy(const DeviceRows& rows, const RowForward* forward, const float* rowScale,
                                  const float* entropyScale, void* grad, cudaStream_t stream) {
  return launchBackwardAny<true>(rows, forward, rowScale, grad, entropyScale, stream);
}

}  // namespace fdpo
