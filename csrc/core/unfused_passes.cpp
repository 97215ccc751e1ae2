#include "unfused_passes.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "host_device.h"
#include "thread_pool.h"

namespace fdpo {
namespace {
#include "half_convert.h"

float logitAt(const fdpo_tokens& t, int64_t r, int64_t v) {
  const int64_t i = r * t.vocab + v;
  if (t.dtype == FDPO_FLOAT32) return loadElement<FDPO_FLOAT32>(t.logits, i);
  if (t.dtype == FDPO_BFLOAT16) return loadElement<FDPO_BFLOAT16>(t.logits, i);
  return loadElement<FDPO_FLOAT16>(t.logits, i);
}

void storeGrad(const fdpo_tokens& t, void* grad, int64_t i, float g) {
  if (t.dtype == FDPO_FLOAT32) return storeElement<FDPO_FLOAT32>(grad, i, g);
  if (t.dtype == FDPO_BFLOAT16) return storeElement<FDPO_BFLOAT16>(grad, i, g);
  storeElement<FDPO_FLOAT16>(grad, i, g);
}

}  // namespace

void UnfusedPasses::forward(const fdpo_tokens& t, RowForward* rows, int threads) {
  logSoftmax.assign((size_t)(t.rows * t.vocab), 0.0f);
  const int64_t V = t.vocab;
  ThreadPool::instance().parallelFor(t.rows, 1, threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* out = logSoftmax.data() + r * V;
      // Op 1: log_softmax, all rows (a port computes it before masking).
      float m = -INFINITY;
      for (int64_t v = 0; v < V; ++v) m = fmaxf(m, logitAt(t, r, v));
      float s = 0.0f;
      for (int64_t v = 0; v < V; ++v) s += expf(logitAt(t, r, v) - m);
      const float logSum = logf(s);
      for (int64_t v = 0; v < V; ++v) out[v] = logitAt(t, r, v) - m - logSum;
      if (t.labels[r] == t.ignore_index) continue;
      // Ops 2-4: gather, entropy, argmax and mean logit, each a pass of its own.
      RowForward& f = rows[r];
      f.max = m;
      f.logSum = logSum;
      f.logp = out[t.labels[r]];
      float entropy = 0.0f, sum = 0.0f;
      int64_t argmax = 0;
      for (int64_t v = 0; v < V; ++v) entropy -= expf(out[v]) * out[v];
      for (int64_t v = 1; v < V; ++v) argmax = out[v] > out[argmax] ? v : argmax;
      for (int64_t v = 0; v < V; ++v) sum += logitAt(t, r, v);
      f.entropy = entropy;
      f.meanLogit = sum / (float)V;
      f.correct = argmax == t.labels[r] ? 1 : 0;
    }
  });
}

void UnfusedPasses::backward(const fdpo_tokens& t, const float* rowScale, const RowForward*, void* grad, int threads) {
  const int64_t V = t.vocab;
  ThreadPool::instance().parallelFor(t.rows, 1, threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* in = logSoftmax.data() + r * V;
      for (int64_t v = 0; v < V; ++v) {
        const float onehot = v == t.labels[r] ? 1.0f : 0.0f;
        storeGrad(t, grad, r * V + v, rowScale[r] * (onehot - expf(in[v])));
      }
    }
  });
}

void UnfusedPasses::forwardDeferred(const fdpo_tokens& t, RowForward* rows, void* grad, int threads) {
  forward(t, rows, threads);
  std::vector<float> ones(t.rows);
  for (int64_t r = 0; r < t.rows; ++r) ones[r] = t.labels[r] == t.ignore_index ? 0.0f : 1.0f;
  backward(t, ones.data(), rows, grad, threads);
}

}  // namespace fdpo
