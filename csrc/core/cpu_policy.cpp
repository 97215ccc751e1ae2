// The CPU backend's policy loss (fdpo_policy_loss): pass A (rows in parallel), the per-token fp64
// reduce of policy_math.h (one thread, row order), and pass B with per-row scales (rows in
// parallel; with the entropy bonus, the row kernels' entropy mode).
#include <algorithm>
#include <new>
#include <vector>

#include "checks.h"
#include "cpu_row_passes.h"
#include "fused_dpo.h"
#include "policy_math.h"
#include "row_kernels.h"
#include "thread_pool.h"

namespace fdpo {
namespace {

int32_t runPolicyLoss(const fdpo_tokens* tokens, const fdpo_policy_config* config, fdpo_policy_outputs* outputs,
                      int32_t threads, char* error, size_t error_size) {
  TokenSnapshot snapshot;
  PolicySnapshot policy;
  int32_t status = snapshot.take(tokens, error, error_size);
  if (status == FDPO_OK) status = policy.take(snapshot, config, outputs, error, error_size);
  if (status != FDPO_OK) return status;
  const fdpo_policy_config& c = policy.config;
  const fdpo_policy_outputs& out = policy.outputs;
  const fdpo_tokens& t = snapshot.tokens;
  const int nThreads = resolveThreads(threads);
  const RowKernels& kernels = selectRowKernels();
  const RowOptions options = rowOptionsFor(t, false);

  std::vector<RowForward> rows(t.rows);
  forwardPass(kernels, t, options, rows.data(), nThreads);

  std::vector<int64_t> counts(t.num_seqs, 0);
  int64_t total = 0;
  for (int64_t s = 0; s < t.num_seqs; ++s) {
    for (int64_t r = t.cu_seqlens[s]; r < t.cu_seqlens[s + 1]; ++r) counts[s] += t.labels[r] != t.ignore_index;
    total += counts[s];
  }

  double stats[FDPO_POLICY_STAT_COUNT] = {0};
  stats[FDPO_POLICY_STAT_TOKENS] = (double)total;
  std::vector<float> rowScale(out.grad ? t.rows : 0, 0.0f), entropyScale(out.grad ? t.rows : 0, 0.0f);
  for (int64_t s = 0; s < t.num_seqs; ++s) {
    const double weight = policyWeight(c, t.num_seqs, counts[s], total);
    for (int64_t r = t.cu_seqlens[s]; r < t.cu_seqlens[s + 1]; ++r) {
      const bool scored = t.labels[r] != t.ignore_index;
      double logp = 0.0, tokenGrad = 0.0;
      if (scored) {
        const RowForward& f = rows[r];
        logp = (double)f.logp;
        const PolicyRow row = policyRowAt(c, weight, r, s, logp, (double)f.entropy);
        tokenGrad = row.tokenGrad;
        stats[FDPO_POLICY_STAT_LOSS] += row.weightedLoss;
        stats[FDPO_POLICY_STAT_LOW_CLIPPED] += row.token.lowClipped;
        stats[FDPO_POLICY_STAT_HIGH_CLIPPED] += row.token.highClipped;
        stats[FDPO_POLICY_STAT_REGION_CLIPPED] += row.token.lowClipped | row.token.highClipped;
        stats[FDPO_POLICY_STAT_KL_SUM] += row.token.kl;
        stats[FDPO_POLICY_STAT_ENTROPY_SUM] += (double)f.entropy;
        if (out.grad) {
          rowScale[r] = (float)row.tokenGrad;
          entropyScale[r] = (float)row.entropyScale;
        }
      }
      if (out.token_logps) out.token_logps[r] = logp;
      if (out.token_grad) out.token_grad[r] = tokenGrad;
    }
  }
  std::copy(stats, stats + FDPO_POLICY_STAT_COUNT, out.stats);
  if (!out.grad) return FDPO_OK;

  const bool entropy = c.entropy_coef != 0.0;
  ThreadPool::instance().parallelFor(t.rows, rowGrain(t.rows, t.vocab, nThreads), nThreads, [&](int64_t b, int64_t e) {
    if (entropy) {
      kernels.backwardEntropy(t.logits, out.grad, t.dtype, t.vocab, t.labels, options, rowScale.data(),
                              entropyScale.data(), rows.data(), b, e);
    } else {
      kernels.backward(t.logits, out.grad, t.dtype, t.vocab, t.labels, options, rowScale.data(), rows.data(), b, e);
    }
  });
  return FDPO_OK;
}

}  // namespace
}  // namespace fdpo

extern "C" int32_t fdpo_policy_loss(const fdpo_tokens* tokens, const fdpo_policy_config* config,
                                    fdpo_policy_outputs* outputs, int32_t threads, char* error, size_t error_size) {
  try {
    return fdpo::runPolicyLoss(tokens, config, outputs, threads, error, error_size);
  } catch (const std::bad_alloc&) {
    return fdpo::fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fdpo::fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}
