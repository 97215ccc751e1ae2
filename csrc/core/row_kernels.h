// The two passes over one row of logits, compiled once per SIMD level (row_kernels_impl.h is
// the single source; row_kernels_{avx512,avx2,baseline}.cpp instantiate it) and picked at run
// time, so one binary runs on any x86-64 and uses the widest vectors the CPU has.
#ifndef FUSED_DPO_ROW_KERNELS_H
#define FUSED_DPO_ROW_KERNELS_H

#include <stdint.h>

#include "fused_dpo.h"

namespace fdpo {

// What pass A learns about one row (SPEC.md, "Per token").
struct RowForward {
  float max;        // m
  float logSum;     // log(s), s = sum exp(z - m)
  float logp;       // (z_y - m) - log(s); NaN when the row holds a non-finite logit
  float entropy;    // log(s) - sum exp(z - m)(z - m) / s
  float meanLogit;  // sum z / V
  int32_t correct;  // argmax == label
};

struct RowKernels {
  const char* name;
  // Pass A over rows [begin, end): one read of each non-ignored row; ignored rows are skipped.
  void (*forward)(const void* logits, int32_t dtype, int64_t vocab, const int32_t* labels, int32_t ignoreIndex,
                  int64_t begin, int64_t end, RowForward* out);
  // Pass A for the deferred scale: forward, and while each row is still in cache, its unscaled
  // onehot - p into grad (zeros for ignored rows).
  void (*forwardDeferred)(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                          int32_t ignoreIndex, int64_t begin, int64_t end, RowForward* out);
  // Pass B over rows [begin, end): grad = scale * (onehot - p), written in the logits dtype.
  // Rows whose scale is 0 are written as zeros without reading the logits. grad may equal logits.
  void (*backward)(const void* logits, void* grad, int32_t dtype, int64_t vocab, const int32_t* labels,
                   const float* rowScale, const RowForward* rows, int64_t begin, int64_t end);
  // The vectorised exp on n values (for the accuracy test).
  void (*exp)(const float* in, float* out, int64_t n);
};

// Every set gives the same bits (row_kernels_impl.h), except kBaselineMulAddKernels: the
// baseline with separate multiplies and adds, for x86-64 CPUs without FMA.
extern const RowKernels kBaselineKernels;
#if defined(__x86_64__)
extern const RowKernels kBaselineMulAddKernels;
extern const RowKernels kAvx2Kernels;
extern const RowKernels kAvx512Kernels;
#endif

// The widest set the running CPU supports (or the one FDPO_SIMD=baseline|avx2|avx512 names, when
// the CPU supports it).
const RowKernels& selectRowKernels();

}  // namespace fdpo

#endif
