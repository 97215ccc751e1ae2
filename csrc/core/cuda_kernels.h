// The CUDA backend's kernels, as plain launch functions for cuda_backend.cu. Pointers are device
// memory unless a comment says otherwise; every launch goes on `stream` and none synchronises.
#ifndef FUSED_DPO_CUDA_KERNELS_H
#define FUSED_DPO_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "reduce_math.h"
#include "row_kernels.h"

namespace fdpo {

// The row layout every row kernel gets: logits rows x vocab of dtype, labels, ignore index.
struct DeviceRows {
  const void* logits;
  int32_t dtype;
  int64_t rows;
  int64_t vocab;
  const int32_t* labels;
  int32_t ignoreIndex;
  RowOptions options;  // the model-head transform, and whether pass A sums the squares
};

// Smallest row index whose label is neither ignoreIndex nor in [0, vocab), into *badRow (which
// must hold INT64_MAX before the launch).
cudaError_t launchCheckLabels(const DeviceRows& rows, unsigned long long* badRow, cudaStream_t stream);

// Pass A: RowForward for every non-ignored row. With deferredGrad, also the unscaled onehot - p
// of each row into deferredGrad (zeros for ignored rows).
cudaError_t launchForward(const DeviceRows& rows, RowForward* out, void* deferredGrad, cudaStream_t stream);

// Per-sequence sums (sequence s = rows cuSeqlens[s]..cuSeqlens[s+1]-1).
cudaError_t launchSequenceSums(const RowForward* forward, const int32_t* labels, int32_t ignoreIndex,
                               const int32_t* cuSeqlens, int64_t numSeqs, SequenceSums* out, cudaStream_t stream);

// LD-DPO and per-token references: each sequence's WeightedSums (weighSequence's, with its
// pair's counts from sums), and rear[r] (when not NULL) = 1 for rows weighing alpha.
// weighting.refTokens is device memory.
cudaError_t launchWeightedSums(const RowForward* forward, const int32_t* labels, int32_t ignoreIndex,
                               const int32_t* cuSeqlens, int64_t numSeqs, const SequenceSums* sums,
                               const TokenWeighting& weighting, WeightedSums* out, uint8_t* rear, cudaStream_t stream);

// sequenceLogps' results from the sums: logps (LD-weighted when weighted is not NULL, averaged when
// asked) and counts.
cudaError_t launchSequenceResults(const SequenceSums* sums, const WeightedSums* weighted, const TokenWeighting& weighting,
                                  int64_t numSeqs, bool average, double* logps, int32_t* counts, cudaStream_t stream);

// The loss's reduce: stats from the sums in sequence order (and batch.weightMeans when it is not
// NULL), the scores (sequenceScores, when weighted is not NULL), then reduceBatch in one block.
// batch's pointers (config.ref_*, scratch, weightMeans, outputs) are device memory.
cudaError_t launchBatch(const SequenceSums* sums, const WeightedSums* weighted, const TokenWeighting& weighting,
                        const Batch& batch, cudaStream_t stream);

// What rowScaleOf needs beyond G_s (device memory; NULL plainGrad and rear: plain G_s).
struct RowWeights {
  const double* plainGrad;
  const uint8_t* rear;
  double alpha;
};

// rowScale[r] = rowScaleOf(seqGrad[sequence of r], ...), 0 for ignored rows.
cudaError_t launchRowScale(const int32_t* cuSeqlens, int64_t numSeqs, const int32_t* labels, int32_t ignoreIndex,
                           int64_t rows, const double* seqGrad, const RowWeights& weights, float* rowScale,
                           cudaStream_t stream);

// Pass B: grad = rowScale * (onehot - p); rows with scale 0 are zeros and are not read. grad may
// equal logits.
cudaError_t launchBackward(const DeviceRows& rows, const RowForward* forward, const float* rowScale, void* grad,
                           cudaStream_t stream);

// Pass B with the entropy bonus (policyLoss): grad = t'(z) * (rowScale * (onehot - p) + E * p * (log p + H)),
// E = entropyScale[r]; rows where both scales are 0 are zeros and are not read.
cudaError_t launchBackwardEntropy(const DeviceRows& rows, const RowForward* forward, const float* rowScale,
                                  const float* entropyScale, void* grad, cudaStream_t stream);

// The sequence of row r: the last s with cuSeqlens[s] <= r (empty sequences share their start).
__device__ inline int64_t sequenceOf(const int32_t* cuSeqlens, int64_t numSeqs, int64_t r) {
  int64_t lo = 0, hi = numSeqs;  // cuSeqlens[lo] <= r < cuSeqlens[hi]
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (cuSeqlens[mid] <= r) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Runs a shared reduce's phases (reduceBatch, reduceKto) across one block; the barrier after each
// makes its global-memory writes visible to the next phase's threads. (The CPU's twin: serial_exec.h.)
struct BlockExec {
  template <class Step>
  __device__ void each(int64_t n, const Step& step) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) step(i);
    __syncthreads();
  }
  template <class Step>
  __device__ void once(const Step& step) {
    if (threadIdx.x == 0) step();
    __syncthreads();
  }
};

}  // namespace fdpo

#endif
