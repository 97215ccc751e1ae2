// The CPU backend's runs of the C ABI: validation that keeps memory safe, then pass A (rows in
// parallel), the fp64 reduce (one thread, fixed order), and pass B (rows in parallel). The SIMD
// level's kernels come from cpu_simd_dispatch.cpp; the benchmark ceilings are cpu_ceilings.cpp.
#include <algorithm>
#include <new>
#include <vector>

#include "checks.h"
#include "cpu_row_passes.h"
#include "fused_dpo.h"
#include "reduce.h"
#include "row_kernels.h"
#include "unfused_passes.h"

namespace fdpo {
namespace {

// The unfused baseline knows no row options (it is for the benchmark's plain call).
struct UnfusedRun {
  static constexpr bool kHasRowOptions = false;
  UnfusedPasses passes;
  void forward(const fdpo_tokens& t, const RowOptions&, RowForward* rows, int threads) { passes.forward(t, rows, threads); }
  void forwardDeferred(const fdpo_tokens& t, const RowOptions&, RowForward* rows, void* grad, int threads) {
    passes.forwardDeferred(t, rows, grad, threads);
  }
  void backward(const fdpo_tokens& t, const RowOptions&, const float* rowScale, const RowForward* rows, void* grad,
                int threads) {
    passes.backward(t, rowScale, rows, grad, threads);
  }
};

// The loss call around a pair of passes: checks, pass A, the fp64 reduce, pass B.
template <class Passes>
int32_t runDpoLoss(Passes& passes, const fdpo_tokens* tokens, const fdpo_loss_config* config,
                   fdpo_loss_outputs* outputs, int32_t threads, char* error, size_t error_size) {
  try {
    TokenSnapshot snapshot;
    LossSnapshot loss;
    int32_t status = snapshot.take(tokens, error, error_size);
    if (status == FDPO_OK) status = loss.take(snapshot, config, outputs, error, error_size);
    if (status != FDPO_OK) return status;
    config = &loss.config;
    outputs = &loss.outputs;
    const fdpo_tokens& t = snapshot.tokens;
    const int nThreads = resolveThreads(threads);
    const int64_t numPairs = t.num_seqs / 2;
    const bool weighting = config->use_weighting != 0;
    const RowOptions options = rowOptionsFor(t, weighting);
    if (!Passes::kHasRowOptions && (options.headMode != kHeadIdentity || weighting)) {
      return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT,
                  "the unfused baseline has no model-head transforms and no use_weighting");
    }

    const bool deferred = outputs->grad && outputs->row_scale;
    std::vector<RowForward> rows(t.rows);
    if (deferred) {
      passes.forwardDeferred(t, options, rows.data(), outputs->grad, nThreads);
    } else {
      passes.forward(t, options, rows.data(), nThreads);
    }

    std::fill(outputs->stats, outputs->stats + FDPO_STAT_COUNT, 0.0);
    std::vector<double> weightMeans(weighting ? t.num_seqs : 0);
    sumSequences(t, rows.data(), numPairs, outputs->seq_logps, outputs->seq_counts, outputs->stats,
                 weighting ? weightMeans.data() : nullptr);
    // LD-DPO and per-token references: the scores from a second walk over the rows' log-probs.
    const TokenWeighting tokenWeighting = tokenWeightingFor(t, config->ref_token_logps);
    const bool ld = tokenWeighting.ld, refTokens = tokenWeighting.refTokens != nullptr;
    std::vector<double> plainLogps(ld ? t.num_seqs : 0), plainGrad(ld ? t.num_seqs : 0);
    std::vector<double> ratios(refTokens ? t.num_seqs : 0), refScores(refTokens ? t.num_seqs : 0);
    std::vector<uint8_t> rear(ld ? t.rows : 0);
    if (ld || refTokens) {
      weighSequences(t, rows.data(), tokenWeighting, outputs->seq_counts, outputs->seq_logps,
                     ld ? plainLogps.data() : nullptr, refTokens ? ratios.data() : nullptr,
                     refTokens ? refScores.data() : nullptr, ld ? rear.data() : nullptr);
    }
    const ScoreArrays scores = {ld ? plainLogps.data() : nullptr, ld ? plainGrad.data() : nullptr,
                                refTokens ? ratios.data() : nullptr, refTokens ? refScores.data() : nullptr};
    std::vector<double> seqGrad(t.num_seqs);
    pairLosses(*config, numPairs, outputs->seq_logps, outputs->seq_counts, weighting ? weightMeans.data() : nullptr,
               outputs->pair_losses, outputs->chosen_rewards, outputs->rejected_rewards, seqGrad.data(), outputs->stats,
               scores);
    if (outputs->seq_grad) std::copy(seqGrad.begin(), seqGrad.end(), outputs->seq_grad);
    if (outputs->seq_plain_grad) {
      for (int64_t s = 0; s < t.num_seqs; ++s) outputs->seq_plain_grad[s] = ld ? plainGrad[s] : 0.0;
    }
    if (!outputs->grad) return FDPO_OK;

    // Per-row scale for pass B: G of the row's sequence (times the row's LD-DPO weight, plus the
    // plain-sum terms), 0 for ignored rows (written as zeros).
    std::vector<float> rowScale = rowScales(t, seqGrad.data(), ld ? plainGrad.data() : nullptr,
                                            ld ? rear.data() : nullptr, tokenWeighting.alpha);
    if (deferred) {
      std::copy(rowScale.begin(), rowScale.end(), outputs->row_scale);
    } else {
      passes.backward(t, options, rowScale.data(), rows.data(), outputs->grad, nThreads);
    }
    return FDPO_OK;
  } catch (const std::bad_alloc&) {
    return fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}

}  // namespace
}  // namespace fdpo

using namespace fdpo;

extern "C" {

int32_t fdpo_abi_version(void) { return FDPO_ABI_VERSION; }

int32_t fdpo_sequence_logps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                            int32_t threads, char* error, size_t error_size) {
  try {
    TokenSnapshot snapshot;
    const int32_t status = snapshot.take(tokens, error, error_size);
    if (status != FDPO_OK) return status;
    // Zero sequences have nothing to write (a caller may pass NULL for empty arrays).
    if (snapshot.tokens.num_seqs > 0 && (!logps || !counts)) {
      return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "logps or counts is NULL");
    }
    const fdpo_tokens& t = snapshot.tokens;
    std::vector<RowForward> rows(t.rows);
    forwardPass(selectRowKernels(), t, rowOptionsFor(t, false), rows.data(), resolveThreads(threads));
    sumSequences(t, rows.data(), 0, logps, counts, nullptr, nullptr);
    // The pair-aware form: LD-DPO's weights, for reference scores that match the policy's.
    const TokenWeighting weighting = tokenWeightingFor(t, nullptr);
    if (weighting.ld) weighSequences(t, rows.data(), weighting, counts, logps, nullptr, nullptr, nullptr, nullptr);
    if (average) {
      for (int64_t s = 0; s < t.num_seqs; ++s) logps[s] /= counts[s] > 0 ? counts[s] : 1;
    }
    return FDPO_OK;
  } catch (const std::bad_alloc&) {
    return fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}

int32_t fdpo_dpo_loss(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                      int32_t threads, char* error, size_t error_size) {
  FusedPasses passes{selectRowKernels()};
  return runDpoLoss(passes, tokens, config, outputs, threads, error, error_size);
}

int32_t fdpo_dpo_loss_unfused(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                              int32_t threads, char* error, size_t error_size) {
  UnfusedRun passes;
  return runDpoLoss(passes, tokens, config, outputs, threads, error, error_size);
}

}  // extern "C"
