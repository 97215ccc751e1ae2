// The CPU backend's reduce: per-sequence sums in a fixed order, then the pair losses, rewards and
// per-sequence gradient scalars G_s, all in fp64 (the shared phases of reduce_math.h).
#ifndef FUSED_DPO_REDUCE_H
#define FUSED_DPO_REDUCE_H

#include <stdint.h>

#include "fused_dpo.h"
#include "reduce_math.h"
#include "row_kernels.h"

namespace fdpo {

// Sums logp over each sequence's non-ignored rows, in row order, into logps/counts; when stats is
// not NULL also accumulates the token metrics (fdpo_stat) with sequences < numChosen as chosen;
// when weightMeans is not NULL, WPO's per-sequence mean of logp - log sum p^2 into it.
void sumSequences(const fdpo_tokens& tokens, const RowForward* rows, int64_t numChosen, double* logps, int32_t* counts,
                  double* stats, double* weightMeans);

// LD-DPO and per-token references, after sumSequences: logps[s] becomes the weighted score
// (sequenceScores), its plain sum goes to plainLogps, and ratios/refScores (when not NULL) get the
// per-token-reference sums; rear (rows, or NULL) flags the rows weighing alpha.
void weighSequences(const fdpo_tokens& tokens, const RowForward* rows, const TokenWeighting& weighting,
                    const int32_t* counts, double* logps, double* plainLogps, double* ratios, double* refScores,
                    uint8_t* rear);

// The arrays of Batch for LD-DPO and per-token references (all NULL: off).
struct ScoreArrays {
  const double* plainLogps;
  double* plainGrad;
  const double* ratios;
  const double* refScores;
};

// From the sequence sums: pair losses, the total loss (stats[FDPO_STAT_LOSS]), rewards and
// seqGrad[s] = dloss/dpi_s (weighted by WPO's pair weights when weightMeans is not NULL). The
// loss is NaN when any sequence sum is.
void pairLosses(const fdpo_loss_config& config, int64_t numPairs, const double* logps, const int32_t* counts,
                const double* weightMeans, double* pairLoss, double* chosenRewards, double* rejectedRewards,
                double* seqGrad, double* stats, const ScoreArrays& scores = ScoreArrays{nullptr, nullptr, nullptr, nullptr});

}  // namespace fdpo

#endif
