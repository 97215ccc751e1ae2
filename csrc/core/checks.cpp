#include "checks.h"

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

namespace {

// Everything the kernels index with comes from JavaScript or a foreign caller: check it all.
int32_t checkTokens(const fdpo_tokens* t, char* error, size_t size, bool labelsOnHost) {
  if (!t) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "tokens is NULL");
  if (t->dtype != FDPO_FLOAT32 && t->dtype != FDPO_BFLOAT16 && t->dtype != FDPO_FLOAT16) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "dtype %d is not a fdpo_dtype", (int)t->dtype);
  }
  if (t->rows < 0) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "rows is negative");
  if (t->vocab < 1 || t->vocab > 0x7fffffff) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "vocab must be in [1, 2^31), got %lld", (long long)t->vocab);
  }
  if (t->rows > 0 && (!t->logits || !t->labels)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "logits or labels is NULL");
  }
  if (t->num_seqs < 0 || !t->cu_seqlens) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens is NULL");
  if (t->cu_seqlens[0] != 0) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens[0] must be 0");
  for (int64_t s = 0; s < t->num_seqs; ++s) {
    if (t->cu_seqlens[s + 1] < t->cu_seqlens[s]) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens decreases at %lld", (long long)(s + 1));
    }
  }
  if (t->cu_seqlens[t->num_seqs] != t->rows) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "cu_seqlens must end at rows (%lld), got %d", (long long)t->rows,
                (int)t->cu_seqlens[t->num_seqs]);
  }
  for (int64_t r = 0; labelsOnHost && r < t->rows; ++r) {
    const int32_t y = t->labels[r];
    if (y != t->ignore_index && (y < 0 || y >= t->vocab)) {
      return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "labels[%lld] = %d is outside [0, %lld)", (long long)r, (int)y,
                  (long long)t->vocab);
    }
  }
  return FDPO_OK;
}


}  // namespace

int32_t checkConfig(const fdpo_tokens* t, const fdpo_loss_config* c, const fdpo_loss_outputs* o, char* error,
                    size_t size) {
  if (!c || !o) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "config or outputs is NULL");
  if (t->num_seqs < 2 || t->num_seqs % 2 != 0) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_seqs must be 2B with B >= 1, got %lld",
                (long long)t->num_seqs);
  }
  if (c->num_losses < 1 || c->num_losses > FDPO_MAX_LOSSES) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "num_losses must be in [1, %d]", FDPO_MAX_LOSSES);
  }
  bool needsRef = false;
  for (int k = 0; k < c->num_losses; ++k) {
    const int kind = c->kinds[k];
    if (kind < 0 || kind >= FDPO_LOSS_COUNT) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "unknown loss kind %d", kind);
    needsRef = needsRef || (kind != FDPO_LOSS_SFT && kind != FDPO_LOSS_SIMPO && kind != FDPO_LOSS_ORPO);
  }
  if (needsRef && (!c->ref_chosen || !c->ref_rejected)) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "a loss in the list needs ref_chosen and ref_rejected");
  }
  if (!o->seq_logps || !o->seq_counts || !o->pair_losses || !o->chosen_rewards || !o->rejected_rewards || !o->stats) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "an output array is NULL");
  }
  return FDPO_OK;
}

int32_t TokenSnapshot::take(const fdpo_tokens* t, char* error, size_t size, bool labelsOnHost) {
  if (!t) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "tokens is NULL");
  tokens = *t;
  if (t->rows < 0 || t->num_seqs < 0) return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "rows or num_seqs is negative");
  if ((t->rows > 0 && !t->labels) || !t->cu_seqlens) {
    return fail(error, size, FDPO_ERR_INVALID_ARGUMENT, "labels or cu_seqlens is NULL");
  }
  if (labelsOnHost) {
    labels.assign(t->labels, t->labels + t->rows);
    tokens.labels = labels.data();
  }
  cuSeqlens.assign(t->cu_seqlens, t->cu_seqlens + t->num_seqs + 1);
  tokens.cu_seqlens = cuSeqlens.data();
  return checkTokens(&tokens, error, size, labelsOnHost);
}

}  // namespace fdpo
