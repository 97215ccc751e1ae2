// How the CPU backend splits rows among its threads, and pass A over every row: shared by the
// DPO loss (cpu_backend.cpp) and the policy loss (cpu_policy.cpp).
#ifndef FUSED_DPO_CPU_ROW_PASSES_H
#define FUSED_DPO_CPU_ROW_PASSES_H

#include <algorithm>

#include "fused_dpo.h"
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

}  // namespace fdpo

#endif
