// The O(rows) middle of the loss (SPEC.md, "Per sequence" onward), written once for both
// backends: per-sequence fp64 sums, then the batch's pair losses, phase by phase.
// A phase is either `each` (independent work per pair) or `once` (serial work: sums over the
// batch, sorts). The CPU runs each phase as a plain loop (reduce.cpp); the CUDA backend runs them
// in one thread block with a barrier after every phase (cuda_reduce.cu). Both get the same
// arithmetic in the same order, so the batch's reduce adds no difference between the backends.
// The per-sequence sums are the exception: the CPU adds a sequence's rows in order, the GPU in a
// fixed tree across a block (a serial walk over T rows would cost the GPU more than pass A); the
// two differ by fp64 rounding, ~1e-16 relative.
#ifndef FUSED_DPO_REDUCE_MATH_H
#define FUSED_DPO_REDUCE_MATH_H

#include <math.h>
#include <stdint.h>

#include "fused_dpo.h"
#include "loss_kinds.h"
#include "loss_math.h"
#include "row_kernels.h"

namespace fdpo {

// One sequence's sums over its non-ignored rows; weightLog: of logp - log sum p^2 (WPO; meaningful
// only when pass A summed the squares).
struct SequenceSums {
  double logp, logitSum, entropySum, correct;
  int32_t count;
  double weightLog;
};

// log sum_v p_v^2 of a row, in fp64 from pass A's fp32 sums.
FDPO_HD double logSumSquares(const RowForward& f) { return log((double)f.squares) - 2.0 * (double)f.logSum; }

// WPO's per-sequence mean of logp - log sum p^2 (count clamped to >= 1, so an empty sequence weighs exp(0)).
FDPO_HD double weightMean(const SequenceSums& s) { return s.weightLog / (s.count > 0 ? (double)s.count : 1.0); }

// Adds row r to a sequence's sums when its label is not ignored.
FDPO_HD void addRowToSums(SequenceSums& s, const RowForward* rows, const int32_t* labels, int32_t ignoreIndex,
                          int64_t r) {
  if (labels[r] == ignoreIndex) return;
  s.logp += (double)rows[r].logp;
  s.logitSum += (double)rows[r].meanLogit;
  s.entropySum += (double)rows[r].entropy;
  s.correct += rows[r].correct;
  ++s.count;
  s.weightLog += (double)rows[r].logp - logSumSquares(rows[r]);
}

// a += b, for sums of disjoint row sets (the GPU's tree over a sequence's parts).
FDPO_HD void mergeSums(SequenceSums& a, const SequenceSums& b) {
  a.logp += b.logp;
  a.logitSum += b.logitSum;
  a.entropySum += b.entropySum;
  a.correct += b.correct;
  a.count += b.count;
  a.weightLog += b.weightLog;
}

// One sequence's sums in row order (the CPU's order; the GPU splits a sequence across a block).
FDPO_HD SequenceSums sumSequence(const RowForward* rows, const int32_t* labels, int32_t ignoreIndex, int64_t begin,
                                 int64_t end) {
  SequenceSums s = {0.0, 0.0, 0.0, 0.0, 0, 0.0};
  for (int64_t r = begin; r < end; ++r) addRowToSums(s, rows, labels, ignoreIndex, r);
  return s;
}

// LD-DPO and per-token references (SPEC.md, "LD-DPO", "Per-token reference log-probs"): a
// sequence's sums split at its pair's public length L = min(N_c, N_r), counted over completion
// tokens in order: the first L weigh 1 (front), the later ones ld_alpha (rear). Without LD-DPO,
// L is past every token and all of them are front. ratio* are of logp - ref and ref* of ref
// (per-token references only; 0 otherwise).
struct WeightedSums {
  double front, rear;
  double ratioFront, ratioRear;
  double refFront, refRear;
};

// How a call weighs tokens: alpha, and whether LD-DPO is on (ld_weighting).
struct TokenWeighting {
  bool ld;
  double alpha;
  const double* refTokens;  // rows, or NULL
};

FDPO_HD TokenWeighting tokenWeightingFor(const fdpo_tokens& t, const double* refTokens) {
  const TokenWeighting w = {t.ld_weighting != 0, t.ld_weighting != 0 ? t.ld_alpha : 1.0, refTokens};
  return w;
}

// The other sequence of s's pair (of 2B: s and s +- B).
FDPO_HD int64_t partnerOf(int64_t s, int64_t numSeqs) { return s < numSeqs / 2 ? s + numSeqs / 2 : s - numSeqs / 2; }

// L of a sequence of `mine` completion tokens whose partner has `partner`, or past any count without LD-DPO.
FDPO_HD int64_t publicLength(const TokenWeighting& w, int32_t mine, int32_t partner) {
  if (!w.ld) return INT64_MAX;
  return mine < partner ? mine : partner;
}

// Adds scored row r to the weighted sums: to the front ones (weight 1) or the rear ones (alpha).
FDPO_HD void addRowToWeightedSums(WeightedSums& s, const RowForward* rows, const TokenWeighting& w, int64_t r,
                                  bool front) {
  const double logp = (double)rows[r].logp;
  (front ? s.front : s.rear) += logp;
  if (w.refTokens) {
    (front ? s.ratioFront : s.ratioRear) += logp - w.refTokens[r];
    (front ? s.refFront : s.refRear) += w.refTokens[r];
  }
}

FDPO_HD void mergeWeightedSums(WeightedSums& a, const WeightedSums& b) {
  a.front += b.front;
  a.rear += b.rear;
  a.ratioFront += b.ratioFront;
  a.ratioRear += b.ratioRear;
  a.refFront += b.refFront;
  a.refRear += b.refRear;
}

// One sequence's weighted sums in row order (the CPU's order; the GPU splits a sequence across a
// block); rear[r] (when not NULL) = 1 for the rows weighing alpha, else 0.
FDPO_HD WeightedSums weighSequence(const RowForward* rows, const int32_t* labels, int32_t ignoreIndex,
                                   const TokenWeighting& w, int64_t begin, int64_t end, int64_t publicLen,
                                   uint8_t* rear) {
  WeightedSums s = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
  int64_t ordinal = 0;
  for (int64_t r = begin; r < end; ++r) {
    const bool scored = labels[r] != ignoreIndex;
    const bool front = ordinal < publicLen;
    if (rear) rear[r] = scored && !front ? 1 : 0;
    if (!scored) continue;
    addRowToWeightedSums(s, rows, w, r, front);
    ++ordinal;
  }
  return s;
}

// front + alpha * rear: the weighted sum (exactly front when nothing is rear).
FDPO_HD double weightedSum(double front, double rear, double alpha) { return rear == 0.0 ? front : front + alpha * rear; }

// Row r's gradient scale: d loss/d logp_r = G_s * w_r + H_s (H_s: the plain-sum terms, or none).
FDPO_HD float rowScaleOf(double seqGrad, const double* plainGrad, int64_t s, bool rear, double alpha) {
  const double g = rear ? alpha * seqGrad : seqGrad;
  return (float)(plainGrad ? g + plainGrad[s] : g);
}

// Sequence s's scores from its plain sum and weighted sums: the score pi_s (LD-weighted when on),
// the log-ratio sum_t w_t (logp_t - ref_t) and the reference score sum_t w_t ref_t.
struct SequenceScores {
  double score, ratio, ref;
};

FDPO_HD SequenceScores sequenceScores(double plain, const WeightedSums& s, const TokenWeighting& w) {
  const SequenceScores out = {w.ld ? weightedSum(s.front, s.rear, w.alpha) : plain,
                              weightedSum(s.ratioFront, s.ratioRear, w.alpha), weightedSum(s.refFront, s.refRear, w.alpha)};
  return out;
}

// Adds a sequence's token metrics to stats (fdpo_stat); called in sequence order.
FDPO_HD void addSequenceStats(double* stats, const SequenceSums& s, bool chosen) {
  stats[chosen ? FDPO_STAT_CHOSEN_LOGIT_SUM : FDPO_STAT_REJECTED_LOGIT_SUM] += s.logitSum;
  stats[chosen ? FDPO_STAT_CHOSEN_TOKENS : FDPO_STAT_REJECTED_TOKENS] += s.count;
  stats[FDPO_STAT_ENTROPY_SUM] += s.entropySum;
  if (chosen) stats[FDPO_STAT_CHOSEN_CORRECT] += s.correct;
}

// Strict weak order on values with NaN last, so sorting is defined for any input.
FDPO_HD bool valueBefore(double a, double b) {
  if (isnan(a)) return false;
  if (isnan(b)) return true;
  return a < b;
}

// order = 0..n-1 stably sorted by values (bottom-up merge sort; temp holds n indexes).
FDPO_HD void stableOrder(const double* values, int64_t n, int64_t* order, int64_t* temp) {
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  for (int64_t width = 1; width < n; width *= 2) {
    for (int64_t lo = 0; lo < n; lo += 2 * width) {
      const int64_t mid = lo + width < n ? lo + width : n;
      const int64_t hi = lo + 2 * width < n ? lo + 2 * width : n;
      int64_t i = lo, j = mid, k = lo;
      // Take from the right run only when strictly before: equal values keep their order.
      while (i < mid && j < hi) temp[k++] = valueBefore(values[order[j]], values[order[i]]) ? order[j++] : order[i++];
      while (i < mid) temp[k++] = order[i++];
      while (j < hi) temp[k++] = order[j++];
    }
    for (int64_t i = 0; i < n; ++i) order[i] = temp[i];
  }
}

// Device-visible (on CUDA) scratch for the batch: B values and orders each, 2 for the sft sums.
struct BatchScratch {
  double* first;
  double* second;
  int64_t* firstOrder;
  int64_t* secondOrder;
  int64_t* temp;
  double* sft;  // [sum of chosen logps, chosen tokens, sum of the pair weights]
};

// The batch's state: its config and where each result goes. ref_chosen/ref_rejected, logps and
// every output must be readable and writable where the phases run.
struct Batch {
  fdpo_loss_config config;
  int64_t numPairs;
  const double* logps;  // 2B sequence sums
  const int32_t* counts;
  double* pairLoss;
  double* chosenRewards;
  double* rejectedRewards;
  double* seqGrad;
  double* stats;
  BatchScratch scratch;
  const double* weightMeans;  // 2B (WPO: weightMean of each sequence), or NULL: every pair weighs 1
  // LD-DPO and per-token references (NULL: off; see sequenceScores).
  const double* plainLogps;  // 2B unweighted sums, which the NLL terms read (as TRL's nll_loss), or NULL: logps
  double* plainGrad;         // 2B, where the NLL terms' gradient goes when plainLogps is given
  const double* ratios;      // 2B log-ratios sum_t w_t (logp_t - ref_t), or NULL: logps - ref
  const double* refScores;   // 2B reference scores sum_t w_t ref_t, or NULL: config.ref_chosen/ref_rejected

  FDPO_HD double refChosen(int64_t i) const {
    return refScores ? refScores[i] : config.ref_chosen ? config.ref_chosen[i] : 0.0;
  }
  FDPO_HD double refRejected(int64_t i) const {
    return refScores ? refScores[numPairs + i] : config.ref_rejected ? config.ref_rejected[i] : 0.0;
  }
  FDPO_HD double ratioChosen(int64_t i) const { return ratios ? ratios[i] : logps[i] - refChosen(i); }
  FDPO_HD double ratioRejected(int64_t i) const {
    return ratios ? ratios[numPairs + i] : logps[numPairs + i] - refRejected(i);
  }
  FDPO_HD double plainLogp(int64_t s) const { return plainLogps ? plainLogps[s] : logps[s]; }
  // Adds the gradient of weight * (a term of the plain sums) to sequence s.
  FDPO_HD void addPlainGrad(int64_t s, double weight, double d) const {
    (plainLogps ? plainGrad : seqGrad)[s] += config.scale * weight * d;
  }
  FDPO_HD double clampedCount(int64_t s) const { return counts[s] > 0 ? (double)counts[s] : 1.0; }
  // Adds the gradient of weight * (a term of pair-loss sums) to sequence s.
  FDPO_HD void addGrad(int64_t s, double weight, double d) const { seqGrad[s] += config.scale * weight * d; }
  // WPO's detached weight of pair i, min(1, w_c*w_r) as TRL clamps it (NaN stays NaN); exactly 1 without it.
  FDPO_HD double pairWeight(int64_t i) const {
    if (!weightMeans) return 1.0;
    const double w = exp(weightMeans[i] + weightMeans[numPairs + i]);
    return w > 1.0 ? 1.0 : w;
  }
};

// The phases. Each `each` step touches pair i's outputs (and sequences i, B+i) only, or, for the
// sorted losses, rank k's pair, so no two threads write the same value.
struct ZeroStep {
  const Batch& b;
  FDPO_HD void operator()(int64_t i) const {
    b.pairLoss[i] = 0.0;
    b.seqGrad[i] = 0.0;
    b.seqGrad[b.numPairs + i] = 0.0;
    if (b.plainLogps) b.plainGrad[i] = b.plainGrad[b.numPairs + i] = 0.0;
  }
};

// averaged: a sum-scored kind in a list that reports averaged log-probs (averagesEveryKind) reads
// them too: its scores, references and log-ratios divided by max(N, 1), and its derivatives, taken
// with respect to those, by max(N, 1) again (the chain rule back to the sums).
struct PairLocalStep {
  const Batch& b;
  int kind;
  double weight;
  bool averaged;
  FDPO_HD void operator()(int64_t i) const {
    const fdpo_loss_config& c = b.config;
    const int64_t B = b.numPairs;
    const double nc = b.clampedCount(i), nr = b.clampedCount(B + i);
    const double dc = averaged ? nc : 1.0, dr = averaged ? nr : 1.0;
    const PairScores s = {b.logps[i] / dc,      b.logps[B + i] / dr,    b.refChosen(i) / dc,     b.refRejected(i) / dr,
                          nc,                   nr,                     (double)b.counts[i],     (double)b.counts[B + i],
                          b.ratioChosen(i) / dc, b.ratioRejected(i) / dr};
    const PairTerm t = pairLoss(kind, c.params, c.f_divergence, s);
    const double w = weight * b.pairWeight(i);
    b.pairLoss[i] += w * t.loss;
    b.addGrad(i, w, t.dChosen / dc);
    b.addGrad(B + i, w, t.dRejected / dr);
  }
};

// Token-mean NLL over all chosen tokens, the same value for every pair (TRL's cross_entropy).
struct SftTotalsStep {
  const Batch& b;
  FDPO_HD void operator()() const {
    double sum = 0.0, tokens = 0.0, weights = 0.0;
    for (int64_t i = 0; i < b.numPairs; ++i) {
      sum += b.plainLogp(i);
      tokens += b.counts[i];
      weights += b.pairWeight(i);
    }
    b.scratch.sft[0] = sum;
    b.scratch.sft[1] = tokens > 0 ? tokens : 1.0;
    b.scratch.sft[2] = weights;
  }
};

struct SftStep {
  const Batch& b;
  double weight;
  FDPO_HD void operator()(int64_t i) const {
    const double sum = b.scratch.sft[0], denom = b.scratch.sft[1], weights = b.scratch.sft[2];
    b.pairLoss[i] += weight * b.pairWeight(i) * (-sum / denom);
    // Every pair's term depends on every chosen sum: d(sum_i w_i l_i)/d pi_c = (sum_i w_i) * (-1/denom)
    // (B without WPO: a sum of ones, exact).
    b.addPlainGrad(i, weight, -weights / denom);
  }
};

// aot (paired): sorted policy log-ratio margins against sorted reference margins;
// aot_unpaired: sorted chosen log-ratios against sorted rejected log-ratios.
// (averaged: as PairLocalStep's, each sequence's values divided by max(N, 1).)
struct AlignedValuesStep {
  const Batch& b;
  bool paired;
  bool averaged;
  FDPO_HD void operator()(int64_t i) const {
    const int64_t B = b.numPairs;
    const double dc = averaged ? b.clampedCount(i) : 1.0, dr = averaged ? b.clampedCount(B + i) : 1.0;
    if (paired) {
      b.scratch.first[i] = b.logps[i] / dc - b.logps[B + i] / dr;
      b.scratch.second[i] = b.refChosen(i) / dc - b.refRejected(i) / dr;
    } else {
      b.scratch.first[i] = b.ratioChosen(i) / dc;
      b.scratch.second[i] = b.ratioRejected(i) / dr;
    }
  }
};

struct AlignedSortStep {
  const Batch& b;
  FDPO_HD void operator()() const {
    stableOrder(b.scratch.first, b.numPairs, b.scratch.firstOrder, b.scratch.temp);
    stableOrder(b.scratch.second, b.numPairs, b.scratch.secondOrder, b.scratch.temp);
  }
};

struct AlignedStep {
  const Batch& b;
  bool paired;
  double weight;
  bool averaged;
  FDPO_HD void operator()(int64_t k) const {
    const int64_t p = b.scratch.firstOrder[k], q = b.scratch.secondOrder[k];
    const double beta = b.config.params[FDPO_PARAM_BETA];
    const UnaryTerm t = smoothedLogistic(beta * (b.scratch.first[p] - b.scratch.second[q]),
                                         b.config.params[FDPO_PARAM_LABEL_SMOOTHING]);
    // WPO weighs sorted position k by pair k's weight, as TRL multiplies its rank-ordered losses.
    const double w = weight * b.pairWeight(k);
    b.pairLoss[p] += w * t.loss;
    // Paired: the policy margin at k is pair p's (the reference side has no gradient).
    const int64_t rejected = b.numPairs + (paired ? p : q);
    b.addGrad(p, w, beta * t.dU / (averaged ? b.clampedCount(p) : 1.0));
    b.addGrad(rejected, w, -beta * t.dU / (averaged ? b.clampedCount(rejected) : 1.0));
  }
};

// alphaRewards: AlphaPO's, beta*r(averaged log-prob), as TRL's CPOTrainer logs them with alpha != 0.
struct RewardsStep {
  const Batch& b;
  bool reportAveraged;
  bool alphaRewards;
  FDPO_HD void operator()(int64_t i) const {
    const int64_t B = b.numPairs;
    const double nc = reportAveraged ? b.clampedCount(i) : 1.0;
    const double nr = reportAveraged ? b.clampedCount(B + i) : 1.0;
    const double beta = b.config.params[FDPO_PARAM_BETA];
    b.chosenRewards[i] = beta * b.ratioChosen(i) / nc;
    b.rejectedRewards[i] = beta * b.ratioRejected(i) / nr;
    if (alphaRewards) {
      const double alpha = b.config.params[FDPO_PARAM_ALPHA];
      b.chosenRewards[i] = beta * alphaReward(alpha, b.logps[i] / b.clampedCount(i)).value;
      b.rejectedRewards[i] = beta * alphaReward(alpha, b.logps[B + i] / b.clampedCount(B + i)).value;
    }
  }
};

// The loss in pair order; NaN when any sequence sum is.
struct TotalStep {
  const Batch& b;
  FDPO_HD void operator()() const {
    double total = 0.0;
    bool anyNan = false;
    for (int64_t i = 0; i < b.numPairs; ++i) total += b.pairLoss[i];
    for (int64_t s = 0; s < 2 * b.numPairs; ++s) anyNan = anyNan || isnan(b.logps[s]);
    b.stats[FDPO_STAT_LOSS] = anyNan ? NAN : b.config.scale * total;
  }
};

// From the sequence sums: pair losses, the total loss (stats[FDPO_STAT_LOSS]), rewards and
// seqGrad[s] = dloss/dpi_s. Exec runs the phases: each(n, f) calls f(i) for i in [0, n), once(f)
// calls f() in one thread, and both return when every thread is done.
#if defined(__CUDACC__)
#pragma nv_exec_check_disable
#endif
template <class Exec>
FDPO_HD void reduceBatch(const Batch& b, Exec& exec) {
  const int64_t B = b.numPairs;
  exec.each(B, ZeroStep{b});
  // A list with a kind that reports averaged log-probs (ipo, simpo, orpo) averages them for every
  // kind, as TRL's DPOTrainer does when ipo is in its list (it divides every log-prob by its token
  // count before any loss reads it); the NLL terms read their own token mean either way.
  bool reportAveraged = false, alphaRewards = false;
  for (int k = 0; k < b.config.num_losses; ++k) {
    if (lossKindFlags(b.config.kinds[k]) & FDPO_KIND_REPORTS_AVERAGED) reportAveraged = true;
  }
  for (int k = 0; k < b.config.num_losses; ++k) {
    const int kind = b.config.kinds[k];
    if (kind == FDPO_LOSS_SIMPO && b.config.params[FDPO_PARAM_ALPHA] != 0.0) alphaRewards = true;
    const double weight = b.config.weights[k];
    const uint32_t flags = lossKindFlags(kind);
    const bool averaged = reportAveraged && !(flags & FDPO_KIND_AVERAGED_SCORES);
    if (kind == FDPO_LOSS_AOT || kind == FDPO_LOSS_AOT_UNPAIRED) {
      const bool paired = kind == FDPO_LOSS_AOT;
      exec.each(B, AlignedValuesStep{b, paired, averaged});
      exec.once(AlignedSortStep{b});
      exec.each(B, AlignedStep{b, paired, weight, averaged});
    }
    if (flags & FDPO_KIND_PAIR_TERM) exec.each(B, PairLocalStep{b, kind, weight, averaged});
    if (flags & FDPO_KIND_CHOSEN_NLL) {  // sft; ORPO = NLL on chosen + its odds-ratio term
      exec.once(SftTotalsStep{b});
      exec.each(B, SftStep{b, weight});
    }
  }
  exec.each(B, RewardsStep{b, reportAveraged, alphaRewards});
  exec.once(TotalStep{b});
}

}  // namespace fdpo

#endif  // FUSED_DPO_REDUCE_MATH_H
