// The CPU's ceilings for the benchmark: memory bandwidth (a parallel copy) and the kernels' exp
// throughput, on the thread pool the loss uses.
#include <string.h>

#include <algorithm>
#include <vector>

#include "fused_dpo.h"
#include "row_kernels.h"
#include "thread_pool.h"

using namespace fdpo;

extern "C" {

int32_t fdpo_cpu_copy(void* dst, const void* src, int64_t bytes, int32_t threads) {
  if (bytes < 0 || (bytes > 0 && (!dst || !src))) return FDPO_ERR_INVALID_ARGUMENT;
  const int64_t block = (int64_t)1 << 20;
  ThreadPool::instance().parallelFor((bytes + block - 1) / block, 1, resolveThreads(threads), [&](int64_t b, int64_t e) {
    const int64_t begin = b * block, end = std::min(bytes, e * block);
    memcpy((char*)dst + begin, (const char*)src + begin, (size_t)(end - begin));
  });
  return FDPO_OK;
}

double fdpo_cpu_exp_throughput(int64_t count, int32_t threads) {
  const int64_t kBlock = 4096;  // 16 KB in, 16 KB out: stays in L1
  const int n = resolveThreads(threads);
  std::vector<double> partial(n, 0.0);
  const RowKernels& k = selectRowKernels();
  ThreadPool::instance().parallelFor(n, 1, n, [&](int64_t b, int64_t e) {
    std::vector<float> in(kBlock), out(kBlock);
    for (int64_t i = 0; i < kBlock; ++i) in[i] = -20.0f * (float)i / (float)kBlock;
    for (int64_t part = b; part < e; ++part) {
      double checksum = 0.0;
      for (int64_t done = 0; done < count / n; done += kBlock) {
        k.exp(in.data(), out.data(), kBlock);
        checksum += out[(done / kBlock) % kBlock];
      }
      partial[part] = checksum;
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // extern "C"
