#include "reduce.h"

#include <math.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "loss_math.h"

namespace fdpo {

void sumSequences(const fdpo_tokens& tokens, const RowForward* rows, int64_t numChosen, double* logps, int32_t* counts,
                  double* stats) {
  for (int64_t s = 0; s < tokens.num_seqs; ++s) {
    double sum = 0.0, logitSum = 0.0, entropySum = 0.0, correct = 0.0;
    int32_t n = 0;
    for (int64_t r = tokens.cu_seqlens[s]; r < tokens.cu_seqlens[s + 1]; ++r) {
      if (tokens.labels[r] == tokens.ignore_index) continue;
      sum += (double)rows[r].logp;
      ++n;
      logitSum += (double)rows[r].meanLogit;
      entropySum += (double)rows[r].entropy;
      correct += rows[r].correct;
    }
    logps[s] = sum;
    counts[s] = n;
    if (!stats) continue;
    const bool chosen = s < numChosen;
    stats[chosen ? FDPO_STAT_CHOSEN_LOGIT_SUM : FDPO_STAT_REJECTED_LOGIT_SUM] += logitSum;
    stats[chosen ? FDPO_STAT_CHOSEN_TOKENS : FDPO_STAT_REJECTED_TOKENS] += n;
    stats[FDPO_STAT_ENTROPY_SUM] += entropySum;
    if (chosen) stats[FDPO_STAT_CHOSEN_CORRECT] += correct;
  }
}

namespace {

// Indexes 0..n-1 ordered by value ascending, ties by index, NaN last: a strict weak order even
// with NaN, so the sort is defined for any input.
std::vector<int64_t> stableOrder(const std::vector<double>& values) {
  std::vector<int64_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    if (isnan(values[i])) return false;
    if (isnan(values[j])) return true;
    return values[i] < values[j];
  });
  return order;
}

struct Batch {
  const fdpo_loss_config& config;
  int64_t numPairs;
  const double* logps;
  const int32_t* counts;
  double* pairLoss;
  double* seqGrad;

  double refChosen(int64_t i) const { return config.ref_chosen ? config.ref_chosen[i] : 0.0; }
  double refRejected(int64_t i) const { return config.ref_rejected ? config.ref_rejected[i] : 0.0; }
  double clampedCount(int64_t s) const { return counts[s] > 0 ? (double)counts[s] : 1.0; }

  // Adds the gradient of weight * (a term of pair-loss sums) to sequence s.
  void addGrad(int64_t s, double weight, double d) { seqGrad[s] += config.scale * weight * d; }

  void pairLocal(int kind, double weight) {
    const LossParams params = {config.beta, config.label_smoothing, config.simpo_gamma, config.discopop_tau};
    for (int64_t i = 0; i < numPairs; ++i) {
      const PairScores s = {logps[i], logps[numPairs + i], refChosen(i), refRejected(i), clampedCount(i),
                            clampedCount(numPairs + i)};
      const PairTerm t = fdpo::pairLoss(kind, params, s);
      pairLoss[i] += weight * t.loss;
      addGrad(i, weight, t.dChosen);
      addGrad(numPairs + i, weight, t.dRejected);
    }
  }

  // Token-mean NLL over all chosen tokens, the same value for every pair (TRL's cross_entropy).
  void sft(double weight) {
    double sum = 0.0, tokens = 0.0;
    for (int64_t i = 0; i < numPairs; ++i) {
      sum += logps[i];
      tokens += counts[i];
    }
    const double denom = tokens > 0 ? tokens : 1.0;
    for (int64_t i = 0; i < numPairs; ++i) {
      pairLoss[i] += weight * (-sum / denom);
      // Every pair's term depends on every chosen sum: d(sum_i l_i)/d pi_c = B * (-1/denom).
      addGrad(i, weight, -(double)numPairs / denom);
    }
  }

  // aot (paired = true): sorted policy log-ratio margins against sorted reference margins;
  // aot_unpaired: sorted chosen log-ratios against sorted rejected log-ratios.
  void alignedOrder(bool paired, double weight) {
    std::vector<double> first(numPairs), second(numPairs);
    for (int64_t i = 0; i < numPairs; ++i) {
      if (paired) {
        first[i] = logps[i] - logps[numPairs + i];
        second[i] = refChosen(i) - refRejected(i);
      } else {
        first[i] = logps[i] - refChosen(i);
        second[i] = logps[numPairs + i] - refRejected(i);
      }
    }
    const std::vector<int64_t> p = stableOrder(first), q = stableOrder(second);
    for (int64_t k = 0; k < numPairs; ++k) {
      const double d = first[p[k]] - second[q[k]];
      const UnaryTerm t = smoothedLogistic(config.beta * d, config.label_smoothing);
      pairLoss[p[k]] += weight * t.loss;
      addGrad(p[k], weight, config.beta * t.dU);
      // Paired: the policy margin at k is pair p[k]'s (the reference side has no gradient).
      addGrad(numPairs + (paired ? p[k] : q[k]), weight, -config.beta * t.dU);
    }
  }
};

}  // namespace

void pairLosses(const fdpo_loss_config& config, int64_t numPairs, const double* logps, const int32_t* counts,
                double* pairLoss, double* chosenRewards, double* rejectedRewards, double* seqGrad, double* stats) {
  std::fill(pairLoss, pairLoss + numPairs, 0.0);
  std::fill(seqGrad, seqGrad + 2 * numPairs, 0.0);
  Batch batch{config, numPairs, logps, counts, pairLoss, seqGrad};
  bool reportAveraged = false;
  for (int k = 0; k < config.num_losses; ++k) {
    const int kind = config.kinds[k];
    const double weight = config.weights[k];
    if (kind == FDPO_LOSS_SIMPO || kind == FDPO_LOSS_ORPO) reportAveraged = true;
    if (kind == FDPO_LOSS_SFT) {
      batch.sft(weight);
    } else if (kind == FDPO_LOSS_AOT || kind == FDPO_LOSS_AOT_UNPAIRED) {
      batch.alignedOrder(kind == FDPO_LOSS_AOT, weight);
    } else {
      batch.pairLocal(kind, weight);
      if (kind == FDPO_LOSS_ORPO) batch.sft(weight);  // ORPO = NLL on chosen + the odds-ratio term
    }
  }
  double total = 0.0;
  bool anyNan = false;
  for (int64_t i = 0; i < numPairs; ++i) {
    total += pairLoss[i];
    const double nc = reportAveraged ? batch.clampedCount(i) : 1.0;
    const double nr = reportAveraged ? batch.clampedCount(numPairs + i) : 1.0;
    chosenRewards[i] = config.beta * (logps[i] - batch.refChosen(i)) / nc;
    rejectedRewards[i] = config.beta * (logps[numPairs + i] - batch.refRejected(i)) / nr;
  }
  for (int64_t s = 0; s < 2 * numPairs; ++s) anyNan = anyNan || isnan(logps[s]);
  stats[FDPO_STAT_LOSS] = anyNan ? NAN : config.scale * total;
}

}  // namespace fdpo
