// How the CPU runs the shared reduces' phases (reduce_math.h's reduceBatch, kto_math.h's
// reduceKto): each(n, f) calls f(i) for i in [0, n) and once(f) calls f(), as plain loops in one
// thread, so the order of every sum is fixed. The CUDA twin is cuda_kernels.h's BlockExec.
#ifndef FUSED_DPO_SERIAL_EXEC_H
#define FUSED_DPO_SERIAL_EXEC_H

#include <stdint.h>

namespace fdpo {

struct SerialExec {
  template <class Step>
  void each(int64_t n, const Step& step) {
    for (int64_t i = 0; i < n; ++i) step(i);
  }
  template <class Step>
  void once(const Step& step) {
    step();
  }
};

}  // namespace fdpo

#endif
