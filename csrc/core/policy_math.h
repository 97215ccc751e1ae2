// The policy loss's per-token math (fdpo_policy_config in fused_dpo.h; SPEC.md, "Policy loss"),
// in fp64, shared by the CPU backend (cpu_policy.cpp) and the CUDA kernel (cuda_policy.cu), as
// loss_math.h is for the pairs: a token's term, its derivative in logp, TRL's clip flags, and
// the aggregation weight of TRL's loss_type.
#ifndef FUSED_DPO_POLICY_MATH_H
#define FUSED_DPO_POLICY_MATH_H

#include <math.h>
#include <stdint.h>

#include "fused_dpo.h"
#include "host_device.h"

namespace fdpo {

// One token's share of the loss, before its weight w_t.
struct PolicyToken {
  double loss;   // l_t = surrogate + beta k3 - entropy_coef H
  double dLogp;  // dl_t/dlogp_t of the surrogate and the KL (the entropy's gradient is pass B's own term)
  double kl;     // k3_t (0 without a reference)
  int32_t lowClipped, highClipped;
};

// TRL's GRPO token loss, differentiated as torch differentiates TRL's expression: min() splits the
// gradient in half on a tie, clamp() passes it on [1 - epsilon, 1 + epsilon_high] inclusive.
FDPO_HD PolicyToken policyToken(const fdpo_policy_config& c, double logp, double old, double advantage, double ref,
                                double entropy) {
  const double r = exp(logp - old);
  const double lo = 1.0 - c.epsilon, hi = 1.0 + c.epsilon_high;
  const double clipped = r < lo ? lo : r > hi ? hi : r;
  const double unclippedTerm = r * advantage, clippedTerm = clipped * advantage;
  const double dUnclipped = advantage * r;
  const double dClipped = r >= lo && r <= hi ? advantage * r : 0.0;
  const double dMin = unclippedTerm < clippedTerm ? dUnclipped
                      : unclippedTerm > clippedTerm ? dClipped
                                                    : 0.5 * (dUnclipped + dClipped);
  PolicyToken t;
  t.loss = -(unclippedTerm < clippedTerm ? unclippedTerm : clippedTerm);
  t.dLogp = -dMin;
  t.kl = 0.0;
  if (c.ref_logps) {
    const double d = ref - logp;
    const double e = exp(d);
    t.kl = e - d - 1.0;
    if (c.beta != 0.0) {
      t.loss += c.beta * t.kl;
      t.dLogp += c.beta * (1.0 - e);
    }
  }
  t.loss -= c.entropy_coef * entropy;
  t.lowClipped = r < lo && advantage < 0.0 ? 1 : 0;
  t.highClipped = r > hi && advantage > 0.0 ? 1 : 0;
  return t;
}

// w_t for a token of a sequence with `count` completion tokens, in a call of numSeqs sequences and
// totalTokens completion tokens.
FDPO_HD double policyWeight(const fdpo_policy_config& c, int64_t numSeqs, int64_t count, int64_t totalTokens) {
  const double total = totalTokens > 0 ? (double)totalTokens : 1.0;
  switch (c.loss_type) {
    case FDPO_POLICY_GRPO:
      return 1.0 / ((double)numSeqs * (count > 0 ? (double)count : 1.0));
    case FDPO_POLICY_BNPO:
      return 1.0 / total;
    case FDPO_POLICY_DR_GRPO:
      return 1.0 / ((double)numSeqs * (double)c.max_completion_length);
    default:
      return 1.0 / (c.num_items_in_batch > 0.0 ? c.num_items_in_batch : total);
  }
}

// What one completion token gives the reduce and pass B.
struct PolicyRow {
  double weightedLoss;  // w_t l_t
  double tokenGrad;     // w_t dl_t/dlogp_t: pass B's scale
  double entropyScale;  // w_t entropy_coef: pass B's entropy scale
  PolicyToken token;
};

FDPO_HD PolicyRow policyRow(const fdpo_policy_config& c, double weight, double logp, double old, double advantage,
                            double ref, double entropy) {
  PolicyRow row;
  row.token = policyToken(c, logp, old, advantage, ref, entropy);
  row.weightedLoss = weight * row.token.loss;
  row.tokenGrad = weight * row.token.dLogp;
  row.entropyScale = weight * c.entropy_coef;
  return row;
}

// Row r's inputs from the config's arrays (sequence s): old_t = logp_t on-policy.
FDPO_HD PolicyRow policyRowAt(const fdpo_policy_config& c, double weight, int64_t r, int64_t s, double logp,
                              double entropy) {
  const double advantage = c.advantages_per_token ? c.advantages[r] : c.advantages[s];
  const double old = c.old_logps ? c.old_logps[r] : logp;
  const double ref = c.ref_logps ? c.ref_logps[r] : 0.0;
  return policyRow(c, weight, logp, old, advantage, ref, entropy);
}

}  // namespace fdpo

#endif
