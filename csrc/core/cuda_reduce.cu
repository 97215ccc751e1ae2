// The reduce on the GPU: the shared phases of reduce_math.h (the CPU runs the same ones in
// reduce.cpp), so the pair losses and G_s are computed with the same arithmetic in the same
// order on both backends; only the per-sequence sums take another (fixed) order. O(rows + pairs)
// work in three small kernels, no host synchronisation: sequence sums (a block per sequence),
// the batch (one block), row scales.
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda_kernels.h"
#include "cuda_launch.h"
#include "reduce_math.h"

namespace fdpo {
namespace {

constexpr int kBatchThreads = 256;
constexpr int kSequenceThreads = 256;

// Block b sums sequences b, b + gridDim, ...: thread t adds rows begin + t, begin + t + 256, ...
// (coalesced, T/256 steps where a thread per sequence would take T dependent ones), then the
// block merges the 256 parts in a fixed tree. The order depends on kSequenceThreads alone, so
// the bits do not depend on the grid or the GPU.
__global__ void __launch_bounds__(kSequenceThreads) sequenceSumsKernel(const RowForward* forward, const int32_t* labels,
                                                                      int32_t ignoreIndex, const int32_t* cuSeqlens,
                                                                      int64_t numSeqs, SequenceSums* out) {
  __shared__ SequenceSums parts[kSequenceThreads];
  const int t = threadIdx.x;
  for (int64_t s = blockIdx.x; s < numSeqs; s += gridDim.x) {
    SequenceSums mine = {0.0, 0.0, 0.0, 0.0, 0, 0.0};
    for (int64_t r = cuSeqlens[s] + t; r < cuSeqlens[s + 1]; r += kSequenceThreads) {
      addRowToSums(mine, forward, labels, ignoreIndex, r);
    }
    parts[t] = mine;
    __syncthreads();  // every part is written
    for (int half = kSequenceThreads / 2; half > 0; half /= 2) {
      if (t < half) mergeSums(parts[t], parts[t + half]);
      __syncthreads();  // this level is written before the next one reads it
    }
    if (t == 0) out[s] = parts[0];
    __syncthreads();  // parts[0] is read before the next sequence overwrites parts
  }
}

// LD-DPO and per-token references: block b weighs sequences b, b + gridDim, ... as
// sequenceSumsKernel sums them (thread t takes rows begin + t, begin + t + 256, ..., then the same
// fixed tree), once the counts are known. A row's ordinal among its sequence's completion tokens
// comes from a block-wide scan of the scored flags of each tile of 256 rows. rear (or NULL) gets
// 1 for the rows weighing alpha.
__global__ void __launch_bounds__(kSequenceThreads) weightedSumsKernel(const RowForward* forward, const int32_t* labels,
                                                                      int32_t ignoreIndex, const int32_t* cuSeqlens,
                                                                      int64_t numSeqs, const SequenceSums* sums,
                                                                      TokenWeighting weighting, WeightedSums* out,
                                                                      uint8_t* rear) {
  __shared__ WeightedSums parts[kSequenceThreads];
  __shared__ int32_t scan[kSequenceThreads];
  const int t = threadIdx.x;
  for (int64_t s = blockIdx.x; s < numSeqs; s += gridDim.x) {
    const int64_t publicLen = publicLength(weighting, sums[s].count, sums[partnerOf(s, numSeqs)].count);
    WeightedSums mine = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t before = 0;  // scored rows of s before this tile
    for (int64_t tile = cuSeqlens[s]; tile < cuSeqlens[s + 1]; tile += kSequenceThreads) {
      const int64_t r = tile + t;
      const bool scored = r < cuSeqlens[s + 1] && labels[r] != ignoreIndex;
      scan[t] = scored ? 1 : 0;
      __syncthreads();  // the flags are written
      for (int offset = 1; offset < kSequenceThreads; offset *= 2) {
        const int32_t add = t >= offset ? scan[t - offset] : 0;
        __syncthreads();  // every thread read this level
        scan[t] += add;
        __syncthreads();  // this level is written
      }
      const int64_t ordinal = before + scan[t] - (scored ? 1 : 0);
      const bool front = ordinal < publicLen;
      if (rear && r < cuSeqlens[s + 1]) rear[r] = scored && !front ? 1 : 0;
      if (scored) addRowToWeightedSums(mine, forward, weighting, r, front);
      before += scan[kSequenceThreads - 1];
      __syncthreads();  // scan is read before the next tile overwrites it
    }
    parts[t] = mine;
    __syncthreads();  // every part is written
    for (int half = kSequenceThreads / 2; half > 0; half /= 2) {
      if (t < half) mergeWeightedSums(parts[t], parts[t + half]);
      __syncthreads();  // this level is written before the next one reads it
    }
    if (t == 0) out[s] = parts[0];
    __syncthreads();  // parts[0] is read before the next sequence overwrites parts
  }
}

// sequenceLogps' results; weighted (or NULL) holds LD-DPO's sums.
__global__ void sequenceResultsKernel(const SequenceSums* sums, const WeightedSums* weighted, TokenWeighting weighting,
                                      int64_t numSeqs, bool average, double* logps, int32_t* counts) {
  const int64_t s = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (s >= numSeqs) return;
  counts[s] = sums[s].count;
  const double score = weighted ? sequenceScores(sums[s].logp, weighted[s], weighting).score : sums[s].logp;
  logps[s] = average ? score / (sums[s].count > 0 ? sums[s].count : 1) : score;
}

__global__ void __launch_bounds__(kBatchThreads) batchKernel(const SequenceSums* sums, const WeightedSums* weighted,
                                                              TokenWeighting weighting, Batch batch) {
  const int64_t numSeqs = 2 * batch.numPairs;
  // The sums become the loss's per-sequence outputs (logps and counts point into them).
  for (int64_t s = threadIdx.x; s < numSeqs; s += blockDim.x) {
    if (weighted) {
      const SequenceScores scores = sequenceScores(sums[s].logp, weighted[s], weighting);
      ((double*)batch.logps)[s] = scores.score;
      if (batch.plainLogps) ((double*)batch.plainLogps)[s] = sums[s].logp;
      if (batch.ratios) ((double*)batch.ratios)[s] = scores.ratio;
      if (batch.refScores) ((double*)batch.refScores)[s] = scores.ref;
    } else {
      ((double*)batch.logps)[s] = sums[s].logp;
    }
    ((int32_t*)batch.counts)[s] = sums[s].count;
    if (batch.weightMeans) ((double*)batch.weightMeans)[s] = weightMean(sums[s]);
  }
  if (threadIdx.x == 0) {
    for (int k = 0; k < FDPO_STAT_COUNT; ++k) batch.stats[k] = 0.0;
    for (int64_t s = 0; s < numSeqs; ++s) addSequenceStats(batch.stats, sums[s], s < batch.numPairs);
  }
  __syncthreads();  // logps and counts are written
  BlockExec exec;
  reduceBatch(batch, exec);
}

__global__ void rowScaleKernel(const int32_t* cuSeqlens, int64_t numSeqs, const int32_t* labels, int32_t ignoreIndex,
                               int64_t rows, const double* seqGrad, RowWeights weights, float* rowScale) {
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    if (labels[r] == ignoreIndex) {
      rowScale[r] = 0.0f;
      continue;
    }
    const int64_t s = sequenceOf(cuSeqlens, numSeqs, r);
    rowScale[r] = rowScaleOf(seqGrad[s], weights.plainGrad, s, weights.rear && weights.rear[r], weights.alpha);
  }
}

unsigned blocksFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (unsigned)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

cudaError_t launchSequenceSums(const RowForward* forward, const int32_t* labels, int32_t ignoreIndex,
                               const int32_t* cuSeqlens, int64_t numSeqs, SequenceSums* out, cudaStream_t stream) {
  if (numSeqs == 0) return cudaSuccess;
  return launchKernel(sequenceSumsKernel, blocksFor(numSeqs, 1), kSequenceThreads, stream, forward, labels, ignoreIndex,
                      cuSeqlens, numSeqs, out);
}

cudaError_t launchWeightedSums(const RowForward* forward, const int32_t* labels, int32_t ignoreIndex,
                               const int32_t* cuSeqlens, int64_t numSeqs, const SequenceSums* sums,
                               const TokenWeighting& weighting, WeightedSums* out, uint8_t* rear, cudaStream_t stream) {
  if (numSeqs == 0) return cudaSuccess;
  return launchKernel(weightedSumsKernel, blocksFor(numSeqs, 1), kSequenceThreads, stream, forward, labels, ignoreIndex,
                      cuSeqlens, numSeqs, sums, weighting, out, rear);
}

cudaError_t launchSequenceResults(const SequenceSums* sums, const WeightedSums* weighted, const TokenWeighting& weighting,
                                  int64_t numSeqs, bool average, double* logps, int32_t* counts, cudaStream_t stream) {
  if (numSeqs == 0) return cudaSuccess;
  return launchKernel(sequenceResultsKernel, blocksFor(numSeqs, 128), 128, stream, sums, weighted, weighting, numSeqs,
                      average, logps, counts);
}

cudaError_t launchBatch(const SequenceSums* sums, const WeightedSums* weighted, const TokenWeighting& weighting,
                        const Batch& batch, cudaStream_t stream) {
  return launchKernel(batchKernel, 1, kBatchThreads, stream, sums, weighted, weighting, batch);
}

cudaError_t launchRowScale(const int32_t* cuSeqlens, int64_t numSeqs, const int32_t* labels, int32_t ignoreIndex,
                           int64_t rows, const double* seqGrad, const RowWeights& weights, float* rowScale,
                           cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return launchKernel(rowScaleKernel, blocksFor(rows, 256), 256, stream, cuSeqlens, numSeqs, labels, ignoreIndex, rows,
                      seqGrad, weights, rowScale);
}

}  // namespace fdpo
