#include "checks.h"

#include "loss_kinds.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

namespace fdpo {

int32_t fail(char* error, size_t size, int32_t status, const char* format, ...) {
  if (error && size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, size, format, args);
    va_end(args);
  }
  return status;
}

size_t writableSize(uint32_t structSize, size_t abi2Size, size_t ownSize) {
  if (structSize < abi2Size) return 0;
  return structSize < ownSize ? structSize : ownSize;
}

namespace {

bool overlap(const Extent& a, const Extent& b) {
  if (!a.begin || !b.begin || a.bytes == 0 || b.bytes == 0) return false;
  const uintptr_t a0 = (uintptr_t)a.begin, b0 = (uintptr_t)b.begin;
  return a0 < b0 + b.bytes && b0 < a0 + a.bytes;
}

// Every output against every other buffer: an output that overlaps anything would be read after
// (or while) it is written. The one exception is the in-place gradient, exactly over the logits.
int32_t checkOverlaps(const TokenSnapshot& snapshot, const fdpo_loss_config& c, const fdpo_loss_outputs& o, char* error,
                      size_t size) {
  const fdpo_tokens& t = snapshot.tokens;
  const size_t rows = (size_t)t.rows, seqs = (size_t)t.num_seqs, pairs = seqs / 2;
  const size_t logitsBytes = rows * (size_t)t.vocab * (t.dtype == FDPO_FLOAT32 ? 4 : 2);
  const Extent extents[] = {
      {"logits", t.logits, logitsBytes, o.grad == t.logits},
      {"labels", snapshot.callerLabels, rows * 4, false},
      {"cu_seqlens", snapshot.callerCuSeqlens, (seqs + 1) * 4, false},
      {"ref_chosen", c.ref_chosen, pairs * 8, false},
      {"ref_rejected", c.ref_rejected, pairs * 8, false},
      {"ref_token_logps", c.ref_token_logps, rows * 8, false},
      {"grad", o.grad == t.logits ? nullptr : o.grad, logitsBytes, true},
      {"row_scale", o.row_scale, rows * 4, true},
      {"seq_logps", o.seq_logps, seqs * 8, true},
      {"seq_counts", o.seq_counts, seqs * 4, true},
      {"seq_grad", o.seq_grad, seqs * 8, true},
      {"pair_losses", o.pair_losses, pairs * 8, true},
      {"chosen_rewards", o.chosen_rewards, pairs * 8, true},
      {"rejected_rewards", o.rejected_rewards, pairs * 8, true},
      {"stats", o.stats, FDPO_STAT_COUNT * 8, true},
      {"seq_plain_grad", o.seq_plain_grad, seqs * 8, true},
  };
  return checkExtents(extents, sizeof extents / sizeof extents[0], error, size);
}

}  // namespace

int32_t checkExtents(const Extent* extents, size_t n, char* error, size_t size) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = i + 1; j < n; ++j) {
      if ((extents[i].written || extents[j].written) && overlap(extents[i], extents[j])) {
        return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                    "%s and %s overlap in memory: an output may share memory with no other buffer (only an exact "
                    "in-place gradient, grad == logits, may)",
                    extents[i].name, extents[j].name);
      }
    }
  }
  return FDPO_OK;
}

int32_t LossSnapshot::take(const TokenSnapshot& snapshot, const fdpo_loss_config* c, const fdpo_loss_outputs* o,
                           char* error, size_t size) {
  const fdpo_tokens& t = snapshot.tokens;
  int32_t status = readVersioned(c, config, kConfigAbi2Size, "fdpo_loss_config", error, size);
  if (status == FDPO_OK) status = readVersioned(o, outputs, kOutputsAbi2Size, "fdpo_loss_outputs", error, size);
  if (status != FDPO_OK) return status;
  if (t.num_seqs < 2 || t.num_seqs % 2 != 0) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_seqs must be 2B with B >= 1, got %lld",
                (long long)t.num_seqs);
  }
  if (config.num_losses < 1 || config.num_losses > FDPO_MAX_LOSSES) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_losses must be in [1, %d]", FDPO_MAX_LOSSES);
  }
  if (config.num_params < 0 || config.num_params > FDPO_PARAM_COUNT) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                "num_params is %d: this library knows %d loss hyperparameters (a newer fused_dpo.h has more: use a "
                "newer library)",
                (int)config.num_params, FDPO_PARAM_COUNT);
  }
  for (int p = config.num_params; p < FDPO_MAX_PARAMS; ++p) config.params[p] = p < FDPO_PARAM_COUNT ? lossParamDefault(p) : 0.0;
  config.num_params = FDPO_PARAM_COUNT;
  if (config.f_divergence < 0 || config.f_divergence >= FDPO_F_COUNT) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "f_divergence %d is not a fdpo_f_divergence", (int)config.f_divergence);
  }
  bool needsRef = false;
  for (int k = 0; k < config.num_losses; ++k) {
    const int kind = config.kinds[k];
    if (kind < 0 || kind >= FDPO_LOSS_COUNT) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "unknown loss kind %d", kind);
    needsRef = needsRef || (lossKindFlags(kind) & FDPO_KIND_NEEDS_REF);
  }
  if (config.use_weighting != 0 && config.use_weighting != 1) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "use_weighting must be 0 or 1, got %d", (int)config.use_weighting);
  }
  if (config.ref_token_logps && (config.ref_chosen || config.ref_rejected)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                "ref_token_logps replaces ref_chosen and ref_rejected: pass one or the other");
  }
  if (needsRef && !config.ref_token_logps && (!config.ref_chosen || !config.ref_rejected)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                "a loss in the list needs ref_chosen and ref_rejected (or ref_token_logps)");
  }
  const fdpo_loss_outputs& out = outputs;
  if (!out.seq_logps || !out.seq_counts || !out.pair_losses || !out.chosen_rewards || !out.rejected_rewards || !out.stats) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "an output array is NULL");
  }
  return checkOverlaps(snapshot, config, outputs, error, size);
}

// The policy loss's buffers: the caller's (before the copies replace them in config).
static int32_t checkPolicyOverlaps(const TokenSnapshot& snapshot, const fdpo_policy_config& c, const fdpo_policy_outputs& o,
                            char* error, size_t size) {
  const fdpo_tokens& t = snapshot.tokens;
  const size_t rows = (size_t)t.rows, seqs = (size_t)t.num_seqs;
  const size_t logitsBytes = rows * (size_t)t.vocab * (t.dtype == FDPO_FLOAT32 ? 4 : 2);
  const Extent extents[] = {
      {"logits", t.logits, logitsBytes, o.grad == t.logits},
      {"labels", snapshot.callerLabels, rows * 4, false},
      {"cu_seqlens", snapshot.callerCuSeqlens, (seqs + 1) * 4, false},
      {"advantages", c.advantages, (c.advantages_per_token ? rows : seqs) * 8, false},
      {"old_logps", c.old_logps, rows * 8, false},
      {"ref_logps", c.ref_logps, rows * 8, false},
      {"grad", o.grad == t.logits ? nullptr : o.grad, logitsBytes, true},
      {"token_logps", o.token_logps, rows * 8, true},
      {"token_grad", o.token_grad, rows * 8, true},
      {"stats", o.stats, FDPO_POLICY_STAT_COUNT * 8, true},
  };
  return checkExtents(extents, sizeof extents / sizeof extents[0], error, size);
}

int32_t PolicySnapshot::take(const TokenSnapshot& snapshot, const fdpo_policy_config* c, const fdpo_policy_outputs* o,
                             char* error, size_t size) {
  const fdpo_tokens& t = snapshot.tokens;
  int32_t status = readVersioned(c, config, kPolicyConfigSize, "fdpo_policy_config", error, size);
  if (status == FDPO_OK) status = readVersioned(o, outputs, kPolicyOutputsSize, "fdpo_policy_outputs", error, size);
  if (status != FDPO_OK) return status;
  const fdpo_policy_config& k = config;
  // The tokens' LD-DPO weights belong to the pair losses: never ignored silently.
  if (t.ld_weighting) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "ld_weighting is not read by fdpo_policy_loss: leave it 0");
  if (k.loss_type < 0 || k.loss_type >= FDPO_POLICY_LOSS_TYPE_COUNT) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "loss_type %d is not a fdpo_policy_loss_type", (int)k.loss_type);
  }
  if (k.advantages_per_token != 0 && k.advantages_per_token != 1) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "advantages_per_token must be 0 or 1, got %d", (int)k.advantages_per_token);
  }
  const bool anyRows = k.advantages_per_token ? t.rows > 0 : t.num_seqs > 0;
  if (anyRows && !k.advantages) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "advantages is NULL");
  if (!(isfinite(k.beta) && k.beta >= 0.0)) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "beta must be finite and >= 0, got %g", k.beta);
  if (!(isfinite(k.epsilon) && k.epsilon >= 0.0 && k.epsilon <= 1.0)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "epsilon must be in [0, 1], got %g", k.epsilon);
  }
  if (!(isfinite(k.epsilon_high) && k.epsilon_high >= 0.0)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "epsilon_high must be finite and >= 0, got %g", k.epsilon_high);
  }
  if (!isfinite(k.entropy_coef)) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "entropy_coef must be finite, got %g", k.entropy_coef);
  if (k.beta != 0.0 && !k.ref_logps && t.rows > 0) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "beta is not 0 but ref_logps is NULL");
  if (k.loss_type == FDPO_POLICY_DR_GRPO && k.max_completion_length < 1) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "dr_grpo needs max_completion_length >= 1, got %lld", (long long)k.max_completion_length);
  }
  if (!(isfinite(k.num_items_in_batch) && k.num_items_in_batch >= 0.0)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_items_in_batch must be finite and >= 0 (0: this call's tokens), got %g", k.num_items_in_batch);
  }
  if (!outputs.stats) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "stats is NULL");
  status = checkPolicyOverlaps(snapshot, config, outputs, error, size);
  if (status != FDPO_OK) return status;
  const size_t rows = (size_t)t.rows;
  if (k.advantages) advantages.assign(k.advantages, k.advantages + (k.advantages_per_token ? rows : (size_t)t.num_seqs));
  if (k.old_logps) oldLogps.assign(k.old_logps, k.old_logps + rows);
  if (k.ref_logps) refLogps.assign(k.ref_logps, k.ref_logps + rows);
  config.advantages = k.advantages ? advantages.data() : nullptr;
  config.old_logps = k.old_logps ? oldLogps.data() : nullptr;
  config.ref_logps = k.ref_logps ? refLogps.data() : nullptr;
  return FDPO_OK;
}

// Everything the kernels index with comes from JavaScript or a foreign caller: check every size
// relation before reading an array whose length it gives, so a wrong count is an error, not a read
// past the caller's memory.
int32_t TokenSnapshot::take(const fdpo_tokens* in, char* error, size_t size, bool labelsOnHost) {
  const int32_t status = readVersioned(in, tokens, kTokensAbi2Size, "fdpo_tokens", error, size);
  if (status != FDPO_OK) return status;
  const fdpo_tokens& t = tokens;
  if (t.dtype != FDPO_FLOAT32 && t.dtype != FDPO_BFLOAT16 && t.dtype != FDPO_FLOAT16) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "dtype %d is not a fdpo_dtype", (int)t.dtype);
  }
  if (t.vocab < 1 || t.vocab > 0x7fffffff) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "vocab must be in [1, 2^31), got %lld", (long long)t.vocab);
  }
  if (t.rows < 0 || t.rows > 0x7fffffff) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "rows must be in [0, 2^31), got %lld", (long long)t.rows);
  }
  if (t.num_seqs < 0 || t.num_seqs >= 0x7fffffff) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_seqs must be in [0, 2^31 - 1), got %lld",
                (long long)t.num_seqs);
  }
  const struct {
    const char* name;
    double value;
  } transforms[] = {{"logit_scale", t.logit_scale}, {"softcap", t.softcap}, {"temperature", t.temperature}};
  for (const auto& tr : transforms) {
    if (tr.value != 0.0 && !(isfinite(tr.value) && tr.value > 0.0)) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "%s must be 0 (off) or finite and > 0, got %g", tr.name, tr.value);
    }
  }
  if (t.ld_weighting != 0 && t.ld_weighting != 1) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "ld_weighting must be 0 or 1, got %d", (int)t.ld_weighting);
  }
  if (t.ld_weighting) {
    if (!(t.ld_alpha >= 0.0 && t.ld_alpha <= 1.0)) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "ld_alpha must be in [0, 1], got %g", t.ld_alpha);
    }
    if (t.num_seqs % 2 != 0) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT,
                  "ld_weighting needs pairs: num_seqs = 2B (B chosen then B rejected), got %lld", (long long)t.num_seqs);
    }
  }
  if (!t.cu_seqlens) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens is NULL");
  if (t.rows > 0 && (!t.logits || !t.labels)) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "logits or labels is NULL");
  callerLabels = t.labels;
  callerCuSeqlens = t.cu_seqlens;
  cuSeqlens.assign(t.cu_seqlens, t.cu_seqlens + t.num_seqs + 1);
  tokens.cu_seqlens = cuSeqlens.data();
  if (t.cu_seqlens[0] != 0) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens[0] must be 0");
  for (int64_t s = 0; s < t.num_seqs; ++s) {
    if (t.cu_seqlens[s + 1] < t.cu_seqlens[s]) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens decreases at %lld", (long long)(s + 1));
    }
  }
  if (t.cu_seqlens[t.num_seqs] != t.rows) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens must end at rows (%lld), got %d", (long long)t.rows,
                (int)t.cu_seqlens[t.num_seqs]);
  }
  if (!labelsOnHost) return FDPO_OK;
  labels.assign(t.labels, t.labels + t.rows);
  tokens.labels = labels.data();
  for (int64_t r = 0; r < t.rows; ++r) {
    const int32_t y = t.labels[r];
    if (y != t.ignore_index && (y < 0 || y >= t.vocab)) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "labels[%lld] = %d is outside [0, %lld)", (long long)r, (int)y,
                  (long long)t.vocab);
    }
  }
  return FDPO_OK;
}

}  // namespace fdpo
