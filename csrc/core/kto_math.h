// KTO's reduce (SPEC.md, "KTO"), written once for both backends as reduce_math.h is for pairs: from
// the per-sequence sums of pass A, the reference point z0, each sequence's loss and G_s, the
// rewards and the total, in phases (`each` per sequence, `once` serial) that the CPU runs as plain
// loops (cpu_kto.cpp) and the GPU in one block (cuda_kto.cu), with the same arithmetic in the same
// order.
#ifndef FUSED_DPO_KTO_MATH_H
#define FUSED_DPO_KTO_MATH_H

#include <math.h>
#include <stdint.h>

#include "fused_dpo.h"
#include "loss_math.h"
#include "reduce_math.h"

namespace fdpo {

// The batch's state. config's arrays, the sums and every output must be readable and writable
// where the phases run.
struct KtoBatch {
  fdpo_kto_config config;
  int64_t numSeqs;
  const SequenceSums* sums;  // numSeqs
  double* logps;
  int32_t* counts;
  double* seqLoss;
  double* rewards;
  double* seqGrad;
  double* stats;  // FDPO_STAT_COUNT
  double* kl;     // 1: z0
};

// z0 = max(0, mean(policy - ref)) over the KL batch, summed in order in fp64; NaN stays NaN (as
// torch's clamp(min=0) keeps it).
FDPO_HD double ktoReferencePoint(const double* policy, const double* ref, int64_t n) {
  double sum = 0.0;
  for (int64_t j = 0; j < n; ++j) sum += policy[j] - ref[j];
  const double mean = n > 0 ? sum / (double)n : 0.0;
  return mean > 0.0 || isnan(mean) ? mean : 0.0;
}

// One sequence's unweighted loss 1 - sig(v) and d/dx, x its log-ratio: v = beta*(x - z0) when
// desirable, beta*(z0 - x) when not. apo_zero_unpaired is this with z0 = 0 (its undesirable term
// sig(beta*x) is 1 - sig(-beta*x)).
struct KtoTerm {
  double loss, dX;
};

FDPO_HD KtoTerm ktoTerm(double beta, bool desirable, double x, double z0) {
  const double v = desirable ? beta * (x - z0) : beta * (z0 - x);
  const double slope = beta * sigmoidPrime(v);
  return {sigmoid(-v), desirable ? -slope : slope};
}

// Sequence logps, counts and token metrics from the sums, in sequence order.
struct KtoSumsStep {
  const KtoBatch& b;
  FDPO_HD void operator()() const {
    for (int k = 0; k < FDPO_STAT_COUNT; ++k) b.stats[k] = 0.0;
    for (int64_t s = 0; s < b.numSeqs; ++s) {
      b.logps[s] = b.sums[s].logp;
      b.counts[s] = b.sums[s].count;
      addSequenceStats(b.stats, b.sums[s], b.config.desirable[s] != 0);
    }
    const fdpo_kto_config& c = b.config;
    *b.kl = c.loss_type == FDPO_KTO_LOSS_KTO ? ktoReferencePoint(c.kl_logps, c.kl_ref_logps, c.kl_count) : 0.0;
  }
};

struct KtoSequenceStep {
  const KtoBatch& b;
  FDPO_HD void operator()(int64_t s) const {
    const fdpo_kto_config& c = b.config;
    const bool desirable = c.desirable[s] != 0;
    const double x = b.logps[s] - c.ref_logps[s];
    const KtoTerm t = ktoTerm(c.beta, desirable, x, *b.kl);
    const double w = desirable ? c.desirable_weight : c.undesirable_weight;
    b.seqLoss[s] = w * t.loss;
    b.seqGrad[s] = c.scale * w * t.dX;
    b.rewards[s] = c.beta * x;
  }
};

// The loss in sequence order; NaN when any sequence sum is (TRL's nanmean would skip such a sequence).
struct KtoTotalStep {
  const KtoBatch& b;
  FDPO_HD void operator()() const {
    double total = 0.0;
    bool anyNan = false;
    for (int64_t s = 0; s < b.numSeqs; ++s) {
      total += b.seqLoss[s];
      anyNan = anyNan || isnan(b.logps[s]);
    }
    b.stats[FDPO_STAT_LOSS] = anyNan ? NAN : b.config.scale * total;
  }
};

#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Exec>
FDPO_HD void reduceKto(const KtoBatch& b, Exec& exec) {
  exec.once(KtoSumsStep{b});
  exec.each(b.numSeqs, KtoSequenceStep{b});
  exec.once(KtoTotalStep{b});
}

}  // namespace fdpo

#endif  // FUSED_DPO_KTO_MATH_H
