#include "kto_checks.h"

#include <math.h>

namespace fdpo {

int32_t KtoSnapshot::take(const TokenSnapshot& snapshot, const fdpo_kto_config* c, const fdpo_kto_outputs* o,
                          char* error, size_t size) {
  const fdpo_tokens& t = snapshot.tokens;
  int32_t status = readVersioned(c, config, kKtoConfigSize, "fdpo_kto_config", error, size);
  if (status == FDPO_OK) status = readVersioned(o, outputs, kKtoOutputsSize, "fdpo_kto_outputs", error, size);
  if (status != FDPO_OK) return status;
  // LD-DPO's weights pair the sequences; KTO's are unpaired: never ignored silently.
  if (t.ld_weighting) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "ld_weighting is not read by fdpo_kto_loss: leave it 0");
  if (t.num_seqs < 1) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_seqs must be >= 1, got %lld", (long long)t.num_seqs);
  if (config.loss_type < 0 || config.loss_type >= FDPO_KTO_LOSS_COUNT) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "loss_type %d is not a fdpo_kto_loss_type", (int)config.loss_type);
  }
  if (!(isfinite(config.beta) && config.beta > 0.0)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "beta must be finite and > 0, got %g", config.beta);
  }
  if (!(isfinite(config.desirable_weight) && config.desirable_weight >= 0.0) ||
      !(isfinite(config.undesirable_weight) && config.undesirable_weight >= 0.0)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "desirable_weight and undesirable_weight must be finite and >= 0");
  }
  if (!isfinite(config.scale)) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "scale must be finite");
  if (!config.desirable || !config.ref_logps) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "desirable or ref_logps is NULL");
  }
  const bool kto = config.loss_type == FDPO_KTO_LOSS_KTO;
  if (kto && (config.kl_count < 1 || config.kl_count >= ((int64_t)1 << 40) || !config.kl_logps || !config.kl_ref_logps)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                "loss_type kto needs the KL batch: kl_count >= 1 (got %lld), kl_logps and kl_ref_logps",
                (long long)config.kl_count);
  }
  if (!kto && (config.kl_count != 0 || config.kl_logps || config.kl_ref_logps)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "apo_zero_unpaired has no KL batch: leave kl_* 0");
  }
  const size_t seqs = (size_t)t.num_seqs;
  desirable.assign(config.desirable, config.desirable + seqs);
  for (size_t s = 0; s < seqs; ++s) {
    if (desirable[s] > 1) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "desirable[%zu] is %d, not 0 or 1", s, (int)desirable[s]);
    }
  }
  const fdpo_kto_outputs& out = outputs;
  if (!out.seq_logps || !out.seq_counts || !out.seq_losses || !out.rewards || !out.stats || !out.kl) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "an output array is NULL");
  }
  const size_t logitsBytes = (size_t)t.rows * (size_t)t.vocab * (t.dtype == FDPO_FLOAT32 ? 4 : 2);
  const size_t kl = (size_t)config.kl_count;
  const Extent extents[] = {
      {"logits", t.logits, logitsBytes, out.grad == t.logits},
      {"labels", snapshot.callerLabels, (size_t)t.rows * 4, false},
      {"cu_seqlens", snapshot.callerCuSeqlens, (seqs + 1) * 4, false},
      {"desirable", config.desirable, seqs, false},
      {"ref_logps", config.ref_logps, seqs * 8, false},
      {"kl_logps", config.kl_logps, kl * 8, false},
      {"kl_ref_logps", config.kl_ref_logps, kl * 8, false},
      {"grad", out.grad == t.logits ? nullptr : out.grad, logitsBytes, true},
      {"row_scale", out.row_scale, (size_t)t.rows * 4, true},
      {"seq_logps", out.seq_logps, seqs * 8, true},
      {"seq_counts", out.seq_counts, seqs * 4, true},
      {"seq_grad", out.seq_grad, seqs * 8, true},
      {"seq_losses", out.seq_losses, seqs * 8, true},
      {"rewards", out.rewards, seqs * 8, true},
      {"stats", out.stats, FDPO_STAT_COUNT * 8, true},
      {"kl", out.kl, 8, true},
  };
  config.desirable = desirable.data();
  return checkExtents(extents, sizeof extents / sizeof extents[0], error, size);
}

}  // namespace fdpo
