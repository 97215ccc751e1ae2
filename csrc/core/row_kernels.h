// The two passes over one row of logits, compiled once per SIMD level (row_kernels_impl.h is
// the single source; row_kernels_{avx512,avx2,baseline}.cpp instantiate it) and picked at run
// time, so one binary runs on any x86-64 and uses the widest vectors the CPU has.
#ifndef FUSED_DPO_ROW_KERNELS_H
#define FUSED_DPO_ROW_KERNELS_H

#include <stdint.h>

#include "fused_dpo.h"

namespace fdpo {

// What pass A learns about one row (SPEC.md, "Per token"); z is the transformed logit t(z) when
// a model-head transform is on.
struct RowForward {
  float max;        // m
  float logSum;     // log(s), s = sum exp(z - m)
  float logp;       // (z_y - m) - log(s); NaN when the row holds a non-finite logit
  float entropy;    // log(s) - sum exp(z - m)(z - m) / s
  float meanLogit;  // sum z / V
  int32_t correct;  // argmax == label (the argmax of the raw logits: the transforms are increasing)
  float labelSlope; // t'(z_y), the label's chain-rule factor (1 without a transform)
  float squares;    // sum exp(2(z - m)) (useWeighting: log sum p^2 = log(squares) - 2 log(s)); else 0
};

// The model-head transform t(z) of fdpo_tokens (SPEC.md, "Model-head transforms"), as one of three
// kernels: none (t = z, the kernels of before, bit for bit), linear (t = z*s/T) or capped
// (t = (c/T)*tanh(z*s/c)).
enum HeadMode { kHeadIdentity = 0, kHeadLinear = 1, kHeadCapped = 2 };

// The constants the kernels use, formed in double and rounded once.
struct HeadConstants {
  float slope;  // linear: s/T (t = slope*z, t' = slope); capped: 4s/T (t' = slope*w/(1 + w)^2)
  float inner;  // capped: -2s/c, so x = inner*z = -2u with u = z*s/c, and w = exp(x)
  float outer;  // capped: -c/T (t = outer*expm1(x)/(1 + w) = (c/T)*tanh(u))
};

// What the row kernels apply to each logit, and whether pass A also sums the squares.
struct RowOptions {
  int32_t headMode;  // HeadMode
  HeadConstants head;
  bool squares;      // fill RowForward.squares (useWeighting)
};

inline RowOptions rowOptionsFor(const fdpo_tokens& t, bool squares) {
  const double s = t.logit_scale != 0.0 ? t.logit_scale : 1.0;
  const double T = t.temperature != 0.0 ? t.temperature : 1.0;
  const double c = t.softcap;
  RowOptions o = {kHeadIdentity, {1.0f, 0.0f, 0.0f}, squares};
  if (c != 0.0) {
    o.headMode = kHeadCapped;
    o.head = {(float)(4.0 * s / T), (float)(-2.0 * s / c), (float)(-c / T)};
  } else if (s != 1.0 || T != 1.0) {
    o.headMode = kHeadLinear;
    o.head = {(float)(s / T), 0.0f, 0.0f};
  }
  return o;
}

struct RowKernels {
  const char* name;
  // Pass A over rows [begin, end): one read of each non-ignored row; ignored rows are skipped.
  void (*forward)(const void* logits, int32_t dtype, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                  const RowOptions& options, int64_t begin, int64_t end, RowForward* out);
  // Pass A for the deferred scale: forward, and while each row is still in cache, its unscaled
  // onehot - p into grad (zeros for ignored rows).
  // With a transform the unscaled gradient is t'(z) * (onehot - p).
  void (*forwardDeferred)(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                          int32_t ignoreIndex, const RowOptions& options, int64_t begin, int64_t end, RowForward* out);
  // Pass B over rows [begin, end): grad = scale * t'(z) * (onehot - p), written in the logits dtype.
  // Rows whose scale is 0 are written as zeros without reading the logits. grad may equal logits.
  void (*backward)(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                   const RowOptions& options, const float* rowScale, const RowForward* rows, int64_t begin,
                   int64_t end);
  // The vectorised exp on n values (for the accuracy test).
  void (*exp)(const float* in, float* out, int64_t n);
  // Pass B with the entropy bonus (policyLoss): grad = t'(z) * (scale * (onehot - p) + E * p * (log p + H)),
  // E = entropyScale[r], H = the row's entropy. Rows whose scale and E are both 0 are zeros, unread.
  void (*backwardEntropy)(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                          const RowOptions& options, const float* rowScale, const float* entropyScale,
                          const RowForward* rows, int64_t begin, int64_t end);
};

// Every set gives the same bits (row_kernels_impl.h), except kBaselineMulAddKernels: the
// baseline with separate multiplies and adds, for x86-64 CPUs without FMA (portable: any CPU may
// be forced to it).
extern const RowKernels kBaselineKernels;
extern const RowKernels kBaselineMulAddKernels;
#if defined(__x86_64__)
extern const RowKernels kAvx2Kernels;
extern const RowKernels kAvx512Kernels;
#endif
#if defined(__aarch64__)
extern const RowKernels kNeonKernels;
#endif

// The widest set the running CPU supports (or the one FDPO_SIMD=baseline|avx2|avx512|neon names, when
// the CPU supports it).
const RowKernels& selectRowKernels();

}  // namespace fdpo

#endif
