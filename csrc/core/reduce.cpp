// The CPU's run of the shared reduce (reduce_math.h): each phase as a plain loop.
#include "reduce.h"

#include <vector>

#include "reduce_math.h"
#include "serial_exec.h"

namespace fdpo {

void sumSequences(const fdpo_tokens& tokens, const RowForward* rows, int64_t numChosen, double* logps, int32_t* counts,
                  double* stats, double* weightMeans) {
  for (int64_t s = 0; s < tokens.num_seqs; ++s) {
    const SequenceSums sums =
        sumSequence(rows, tokens.labels, tokens.ignore_index, tokens.cu_seqlens[s], tokens.cu_seqlens[s + 1]);
    logps[s] = sums.logp;
    counts[s] = sums.count;
    if (stats) addSequenceStats(stats, sums, s < numChosen);
    if (weightMeans) weightMeans[s] = weightMean(sums);
  }
}

void weighSequences(const fdpo_tokens& tokens, const RowForward* rows, const TokenWeighting& weighting,
                    const int32_t* counts, double* logps, double* plainLogps, double* ratios, double* refScores,
                    uint8_t* rear) {
  for (int64_t s = 0; s < tokens.num_seqs; ++s) {
    const WeightedSums sums =
        weighSequence(rows, tokens.labels, tokens.ignore_index, weighting, tokens.cu_seqlens[s], tokens.cu_seqlens[s + 1],
                      publicLength(weighting, counts[s], counts[partnerOf(s, tokens.num_seqs)]), rear);
    const SequenceScores scores = sequenceScores(logps[s], sums, weighting);
    if (plainLogps) plainLogps[s] = logps[s];
    logps[s] = scores.score;
    if (ratios) ratios[s] = scores.ratio;
    if (refScores) refScores[s] = scores.ref;
  }
}

void pairLosses(const fdpo_loss_config& config, int64_t numPairs, const double* logps, const int32_t* counts,
                const double* weightMeans, double* pairLoss, double* chosenRewards, double* rejectedRewards,
                double* seqGrad, double* stats, const ScoreArrays& scores) {
  std::vector<double> values(2 * numPairs + 3);
  std::vector<int64_t> orders(3 * numPairs);
  const BatchScratch scratch = {values.data(), values.data() + numPairs, orders.data(), orders.data() + numPairs,
                                orders.data() + 2 * numPairs, values.data() + 2 * numPairs};
  const Batch batch = {config, numPairs, logps, counts, pairLoss, chosenRewards, rejectedRewards, seqGrad, stats,
                       scratch, weightMeans, scores.plainLogps, scores.plainGrad, scores.ratios, scores.refScores};
  SerialExec exec;
  reduceBatch(batch, exec);
}

}  // namespace fdpo
