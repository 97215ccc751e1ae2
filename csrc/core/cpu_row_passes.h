// How the CPU backend splits rows among its threads, pass A and pass B over every row, and pass
// B's row scales: shared by the DPO loss (cpu_backend.cpp), the KTO loss (cpu_kto.cpp) and the
// policy loss (cpu_policy.cpp).
#ifndef FUSED_DPO_CPU_ROW_PASSES_H
#define FUSED_DPO_CPU_ROW_PASSES_H

#include <algorithm>
#include <vector>

#include "fused_dpo.h"
#include "reduce_math.h"
#include "row_kernels.h"
#include "thread_pool.h"

namespace fdpo {

// Rows per chunk handed to a thread: about 256K elements, at least 4 chunks per thread, but never
// under 128K elements: waking a second thread costs more than that much work (tens of us).
inline int64_t rowGrain(int64_t rows, int64_t vocab, int threads) {
  const int64_t most = std::max<int64_t>(1, (int64_t)262144 / vocab);
  const int64_t least = std::max<int64_t>(1, ((int64_t)131072 + vocab - 1) / vocab);
  const int64_t balanced = rows / ((int64_t)threads * 4);
  return std::max(least, std::min(most, balanced));
}

inline void forwardPass(const RowKernels& k, const fdpo_tokens& t, const RowOptions& o, RowForward* rows, int threads) {
  ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
    k.forward(t.logits, t.dtype, t.vocab, t.labels, t.ignore_index, o, b, e, rows);
  });
}

// Pass A and pass B of the fused path: the SIMD row kernels.
struct FusedPasses {
  static constexpr bool kHasRowOptions = true;
  const RowKernels& kernels;
  void forward(const fdpo_tokens& t, const RowOptions& o, RowForward* rows, int threads) {
    forwardPass(kernels, t, o, rows, threads);
  }
  void forwardDeferred(const fdpo_tokens& t, const RowOptions& o, RowForward* rows, void* grad, int threads) {
    ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
      kernels.forwardDeferred(t.logits, grad, t.dtype, t.vocab, t.labels, t.ignore_index, o, b, e, rows);
    });
  }
  void backward(const fdpo_tokens& t, const RowOptions& o, const float* rowScale, const RowForward* rows, void* grad,
                int threads) {
    ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, threads), threads, [&](int64_t b, int64_t e) {
      kernels.backward(t.logits, grad, t.dtype, t.vocab, t.labels, o, rowScale, rows, b, e);
    });
  }
};

// Per-row scale for pass B: rowScaleOf (reduce_math.h) of the row's sequence, 0 for ignored rows
// (written as zeros). NULL plainGrad and rear: plain G_s (no LD-DPO weights).
inline std::vector<float> rowScales(const fdpo_tokens& t, const double* seqGrad, const double* plainGrad,
                                    const uint8_t* rear, double alpha) {
  std::vector<float> rowScale(t.rows, 0.0f);
  for (int64_t s = 0; s < t.num_seqs; ++s) {
    for (int64_t r = t.cu_seqlens[s]; r < t.cu_seqlens[s + 1]; ++r) {
      if (t.labels[r] != t.ignore_index) rowScale[r] = rowScaleOf(seqGrad[s], plainGrad, s, rear && rear[r], alpha);
    }
  }
  return rowScale;
}

}  // namespace fdpo

#endif
