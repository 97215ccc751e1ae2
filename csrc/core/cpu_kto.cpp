// fdpo_kto_loss on the CPU: the loss call's pass A and pass B (cpu_row_passes.h) around KTO's reduce
// (kto_math.h), run as plain loops in one thread.
#include <algorithm>
#include <new>
#include <vector>

#include "checks.h"
#include "cpu_row_passes.h"
#include "fused_dpo.h"
#include "kto_checks.h"
#include "kto_math.h"
#include "serial_exec.h"

namespace fdpo {
namespace {

int32_t runKtoLoss(const fdpo_tokens* tokens, const fdpo_kto_config* config, fdpo_kto_outputs* outputs, int32_t threads,
                   char* error, size_t error_size) {
  TokenSnapshot snapshot;
  KtoSnapshot kto;
  int32_t status = snapshot.take(tokens, error, error_size);
  if (status == FDPO_OK) status = kto.take(snapshot, config, outputs, error, error_size);
  if (status != FDPO_OK) return status;
  const fdpo_tokens& t = snapshot.tokens;
  fdpo_kto_outputs& out = kto.outputs;
  FusedPasses passes{selectRowKernels()};
  const int nThreads = resolveThreads(threads);
  const RowOptions options = rowOptionsFor(t, false);
  const bool deferred = out.grad && out.row_scale;
  std::vector<RowForward> rows(t.rows);
  if (deferred) {
    passes.forwardDeferred(t, options, rows.data(), out.grad, nThreads);
  } else {
    passes.forward(t, options, rows.data(), nThreads);
  }

  std::vector<SequenceSums> sums(t.num_seqs);
  for (int64_t s = 0; s < t.num_seqs; ++s) {
    sums[s] = sumSequence(rows.data(), t.labels, t.ignore_index, t.cu_seqlens[s], t.cu_seqlens[s + 1]);
  }
  std::vector<double> seqGrad(t.num_seqs);
  const KtoBatch batch = {kto.config, t.num_seqs, sums.data(), out.seq_logps, out.seq_counts, out.seq_losses,
                          out.rewards, seqGrad.data(), out.stats, out.kl};
  SerialExec exec;
  reduceKto(batch, exec);
  if (out.seq_grad) std::copy(seqGrad.begin(), seqGrad.end(), out.seq_grad);
  if (!out.grad) return FDPO_OK;

  std::vector<float> rowScale = rowScales(t, seqGrad.data(), nullptr, nullptr, 1.0);
  if (deferred) {
    std::copy(rowScale.begin(), rowScale.end(), out.row_scale);
  } else {
    passes.backward(t, options, rowScale.data(), rows.data(), out.grad, nThreads);
  }
  return FDPO_OK;
}

}  // namespace
}  // namespace fdpo

extern "C" int32_t fdpo_kto_loss(const fdpo_tokens* tokens, const fdpo_kto_config* config, fdpo_kto_outputs* outputs,
                                 int32_t threads, char* error, size_t error_size) {
  try {
    return fdpo::runKtoLoss(tokens, config, outputs, threads, error, error_size);
  } catch (const std::bad_alloc&) {
    return fdpo::fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of memory");
  } catch (...) {
    return fdpo::fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}
