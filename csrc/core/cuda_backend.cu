// The CUDA backend's runs of the C ABI: the same checks as the CPU backend, staging of host
// memory (cuda_memory.h), then pass A, the reduce and pass B on one stream with a single
// synchronisation at the end. How a call starts is cuda_call.h (shared with cuda_policy.cu).
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include <new>
#include <vector>

#include "checks.h"
#include "cuda_call.h"
#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "fused_dpo.h"
#include "reduce_math.h"

namespace fdpo {
namespace {

// The results the loss copies back in one transfer: doubles, then the counts.
struct LossResults {
  int64_t numSeqs, numPairs;
  int64_t doubles() const { return 2 * numSeqs + 3 * numPairs + FDPO_STAT_COUNT; }
  int64_t bytes() const { return doubles() * 8 + numSeqs * 4; }
  double* seqLogps(char* base) const { return (double*)base; }
  double* seqGrad(char* base) const { return (double*)base + numSeqs; }
  double* pairLoss(char* base) const { return (double*)base + 2 * numSeqs; }
  double* chosenRewards(char* base) const { return pairLoss(base) + numPairs; }
  double* rejectedRewards(char* base) const { return pairLoss(base) + 2 * numPairs; }
  double* stats(char* base) const { return pairLoss(base) + 3 * numPairs; }
  int32_t* counts(char* base) const { return (int32_t*)((double*)base + doubles()); }
};

int32_t runDpoLoss(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                   const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  CallStart call(launch);
  LossSnapshot loss;
  int32_t status = call.begin(tokens, launch, error, error_size, [&](const fdpo_tokens&) {
    return loss.take(call.snapshot, config, outputs, error, error_size);
  });
  if (status != FDPO_OK) return status;
  config = &loss.config;
  outputs = &loss.outputs;
  cudaStream_t stream = call.stream;
  Workspace& ws = call.ws;
  DeviceTokens& d = call.d;
  const fdpo_tokens& t = call.snapshot.tokens;
  const int64_t B = t.num_seqs / 2, S = t.num_seqs, R = t.rows;
  const int64_t gradBytes = R * t.vocab * elementBytes(t.dtype);

  // The gradient's buffer: the logits' own in place, else the caller's (or a staging copy).
  const bool deferred = outputs->grad && outputs->row_scale;
  Staged grad, rowScale;
  if (outputs->grad == t.logits) {
    grad = d.logits;
  } else if (outputs->grad) {
    status = stage(ws, grad, outputs->grad, gradBytes, false, launch->device, elementBytes(t.dtype), "grad", stream,
                   error, error_size);
    if (status != FDPO_OK) return status;
  }
  if (deferred) {
    status = stage(ws, rowScale, outputs->row_scale, R * 4, false, launch->device, 4, "row_scale", stream, error,
                   error_size);
    if (status != FDPO_OK) return status;
  } else if (outputs->grad) {
    float* scratchScale = nullptr;
    FDPO_CUDA_CHECK(ws.alloc(&scratchScale, R), "allocating row scales");
    rowScale.device = scratchScale;
  }

  const LossResults layout{S, B};
  char* results = nullptr;
  RowForward* forward = nullptr;
  SequenceSums* sums = nullptr;
  double* scratchValues = nullptr;
  int64_t* scratchOrders = nullptr;
  double *refChosen = nullptr, *refRejected = nullptr, *weightMeans = nullptr;
  const bool weighting = config->use_weighting != 0;
  d.rows.options.squares = weighting;
  FDPO_CUDA_CHECK(ws.alloc(&results, layout.bytes()), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&forward, R), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&sums, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&scratchValues, 2 * B + 3), "allocating the workspace");
  if (weighting) FDPO_CUDA_CHECK(ws.alloc(&weightMeans, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&scratchOrders, 3 * B), "allocating the workspace");
  if (config->ref_chosen) FDPO_CUDA_CHECK(ws.upload(&refChosen, config->ref_chosen, B), "uploading ref_chosen");
  if (config->ref_rejected) FDPO_CUDA_CHECK(ws.upload(&refRejected, config->ref_rejected, B), "uploading ref_rejected");
  // LD-DPO and per-token references: the weighted sums, the scores they make, the rows weighing alpha.
  TokenWeighting tokenWeighting = tokenWeightingFor(t, nullptr);
  const bool ld = tokenWeighting.ld, refTokens = config->ref_token_logps != nullptr;
  WeightedSums* weighted = nullptr;
  double *plainLogps = nullptr, *plainGrad = nullptr, *ratios = nullptr, *refScores = nullptr;
  uint8_t* rear = nullptr;
  if (refTokens) {
    double* deviceRefTokens = nullptr;
    FDPO_CUDA_CHECK(ws.upload(&deviceRefTokens, config->ref_token_logps, R), "uploading ref_token_logps");
    tokenWeighting.refTokens = deviceRefTokens;
    FDPO_CUDA_CHECK(ws.alloc(&ratios, S), "allocating the workspace");
    FDPO_CUDA_CHECK(ws.alloc(&refScores, S), "allocating the workspace");
  }
  if (ld) {
    FDPO_CUDA_CHECK(ws.alloc(&plainLogps, S), "allocating the workspace");
    FDPO_CUDA_CHECK(ws.alloc(&plainGrad, S), "allocating the workspace");
    if (outputs->grad) FDPO_CUDA_CHECK(ws.alloc(&rear, R), "allocating the workspace");
  }
  if (ld || refTokens) FDPO_CUDA_CHECK(ws.alloc(&weighted, S), "allocating the workspace");

  fdpo_loss_config deviceConfig = *config;
  deviceConfig.ref_chosen = refChosen;
  deviceConfig.ref_rejected = refRejected;
  const BatchScratch scratch = {scratchValues, scratchValues + B, scratchOrders, scratchOrders + B,
                                scratchOrders + 2 * B, scratchValues + 2 * B};
  const Batch batch = {deviceConfig, B, layout.seqLogps(results), layout.counts(results), layout.pairLoss(results),
                       layout.chosenRewards(results), layout.rejectedRewards(results), layout.seqGrad(results),
                       layout.stats(results), scratch, weightMeans, plainLogps, plainGrad, ratios, refScores};

  PassTimer timer(launch->timings_ms);
  timer.mark(0, stream);
  FDPO_CUDA_CHECK(launchForward(d.rows, forward, deferred ? grad.device : nullptr, stream), "pass A");
  timer.mark(1, stream);
  FDPO_CUDA_CHECK(launchSequenceSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, stream), "the reduce");
  if (weighted) {
    FDPO_CUDA_CHECK(launchWeightedSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, tokenWeighting, weighted, rear,
                                       stream),
                    "the reduce");
  }
  FDPO_CUDA_CHECK(launchBatch(sums, weighted, tokenWeighting, batch, stream), "the reduce");
  if (outputs->grad) {
    const RowWeights rowWeights = {plainGrad, rear, tokenWeighting.alpha};
    FDPO_CUDA_CHECK(launchRowScale(d.cuSeqlens, S, d.labels, t.ignore_index, R, batch.seqGrad, rowWeights,
                                   (float*)rowScale.device, stream),
                    "the reduce");
  }
  timer.mark(2, stream);
  if (outputs->grad && !deferred) {
    FDPO_CUDA_CHECK(launchBackward(d.rows, forward, (const float*)rowScale.device, grad.device, stream), "pass B");
  }
  timer.mark(3, stream);

  std::vector<char> host((size_t)layout.bytes());
  FDPO_CUDA_CHECK(cudaMemcpyAsync(host.data(), results, host.size(), cudaMemcpyDeviceToHost, stream), "copying results back");
  if (outputs->grad) {
    status = copyOut(grad, stream, error, error_size);
    if (status == FDPO_OK && deferred) status = copyOut(rowScale, stream, error, error_size);
    if (status != FDPO_OK) return status;
  }
  std::vector<double> hostPlainGrad(ld && outputs->seq_plain_grad ? S : 0);
  if (!hostPlainGrad.empty()) {
    FDPO_CUDA_CHECK(cudaMemcpyAsync(hostPlainGrad.data(), plainGrad, S * sizeof(double), cudaMemcpyDeviceToHost, stream),
                    "copying results back");
  }
  FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "the loss kernels");
  timer.report();
  if (outputs->seq_plain_grad) {
    for (int64_t s = 0; s < S; ++s) outputs->seq_plain_grad[s] = ld ? hostPlainGrad[s] : 0.0;
  }

  char* h = host.data();
  memcpy(outputs->seq_logps, layout.seqLogps(h), S * sizeof(double));
  memcpy(outputs->seq_counts, layout.counts(h), S * sizeof(int32_t));
  if (outputs->seq_grad) memcpy(outputs->seq_grad, layout.seqGrad(h), S * sizeof(double));
  memcpy(outputs->pair_losses, layout.pairLoss(h), B * sizeof(double));
  memcpy(outputs->chosen_rewards, layout.chosenRewards(h), B * sizeof(double));
  memcpy(outputs->rejected_rewards, layout.rejectedRewards(h), B * sizeof(double));
  memcpy(outputs->stats, layout.stats(h), FDPO_STAT_COUNT * sizeof(double));
  return FDPO_OK;
}

int32_t runSequenceLogps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                         const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  CallStart call(launch);
  int32_t status = call.begin(tokens, launch, error, error_size, [&](const fdpo_tokens& t) {
    // Zero sequences have nothing to write (a caller may pass NULL for empty arrays).
    return t.num_seqs == 0 || (logps && counts) ? FDPO_OK
                                                : fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "logps or counts is NULL");
  });
  if (status != FDPO_OK) return status;
  cudaStream_t stream = call.stream;
  Workspace& ws = call.ws;
  DeviceTokens& d = call.d;
  const fdpo_tokens& t = call.snapshot.tokens;
  const int64_t S = t.num_seqs;
  RowForward* forward = nullptr;
  SequenceSums* sums = nullptr;
  double* deviceLogps = nullptr;
  int32_t* deviceCounts = nullptr;
  FDPO_CUDA_CHECK(ws.alloc(&forward, t.rows), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&sums, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&deviceLogps, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&deviceCounts, S), "allocating the workspace");

  PassTimer timer(launch->timings_ms);
  timer.mark(0, stream);
  FDPO_CUDA_CHECK(launchForward(d.rows, forward, nullptr, stream), "pass A");
  timer.mark(1, stream);
  FDPO_CUDA_CHECK(launchSequenceSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, stream), "the reduce");
  // The pair-aware form: LD-DPO's weights, for reference scores that match the policy's.
  const TokenWeighting weighting = tokenWeightingFor(t, nullptr);
  WeightedSums* weighted = nullptr;
  if (weighting.ld) {
    FDPO_CUDA_CHECK(ws.alloc(&weighted, S), "allocating the workspace");
    FDPO_CUDA_CHECK(launchWeightedSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, weighting, weighted,
                                       nullptr, stream),
                    "the reduce");
  }
  FDPO_CUDA_CHECK(launchSequenceResults(sums, weighted, weighting, S, average != 0, deviceLogps, deviceCounts, stream),
                  "the reduce");
  timer.mark(2, stream);
  timer.mark(3, stream);
  if (S > 0) {
    FDPO_CUDA_CHECK(cudaMemcpyAsync(logps, deviceLogps, S * sizeof(double), cudaMemcpyDeviceToHost, stream), "copying results back");
    FDPO_CUDA_CHECK(cudaMemcpyAsync(counts, deviceCounts, S * sizeof(int32_t), cudaMemcpyDeviceToHost, stream), "copying results back");
  }
  FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "the forward kernels");
  timer.report();
  return FDPO_OK;
}

}  // namespace
}  // namespace fdpo

using namespace fdpo;

extern "C" {

int32_t fdpo_cuda_sequence_logps(const fdpo_tokens* tokens, int32_t average, double* logps, int32_t* counts,
                                 const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  fdpo_cuda_launch checked;
  const int32_t status = readVersioned(launch, checked, kLaunchAbi2Size, "fdpo_cuda_launch", error, error_size);
  if (status != FDPO_OK) return status;
  return guarded(error, error_size, [&] { return runSequenceLogps(tokens, average, logps, counts, &checked, error, error_size); });
}

int32_t fdpo_cuda_dpo_loss(const fdpo_tokens* tokens, const fdpo_loss_config* config, fdpo_loss_outputs* outputs,
                           const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  fdpo_cuda_launch checked;
  const int32_t status = readVersioned(launch, checked, kLaunchAbi2Size, "fdpo_cuda_launch", error, error_size);
  if (status != FDPO_OK) return status;
  return guarded(error, error_size, [&] { return runDpoLoss(tokens, config, outputs, &checked, error, error_size); });
}

}  // extern "C"
