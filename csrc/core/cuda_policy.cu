// The CUDA backend's policy loss (fdpo_cuda_policy_loss): pass A, the per-token reduce of
// policy_math.h (the CPU's arithmetic, a thread per row), the sums of TRL's metrics in one block
// in a fixed order, and pass B with per-row scales (with the entropy bonus, pass B's entropy
// mode); one synchronisation at the end.
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "checks.h"
#include "cuda_call.h"
#include "cuda_kernels.h"
#include "cuda_launch.h"
#include "cuda_memory.h"
#include "fused_dpo.h"
#include "policy_math.h"

namespace fdpo {
namespace {

constexpr int kStatsThreads = 256;
constexpr int kRowThreads = 256;
// The per-row values the stats add: every fdpo_policy_stat but the token count.
constexpr int kRowStats = FDPO_POLICY_STAT_COUNT;

// The completion tokens of the call, from the per-sequence counts (one thread: integers, exact).
__global__ void totalTokensKernel(const SequenceSums* sums, int64_t numSeqs, int64_t* total) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int64_t n = 0;
  for (int64_t s = 0; s < numSeqs; ++s) n += sums[s].count;
  *total = n;
}

// Row r's token: its outputs, pass B's two scales, and what it adds to each stat.
__global__ void policyRowsKernel(fdpo_policy_config config, DeviceRows rows, const RowForward* forward,
                                 const int32_t* cuSeqlens, int64_t numSeqs, const SequenceSums* sums,
                                 const int64_t* total, double* tokenLogps, double* tokenGrad, float* rowScale,
                                 float* entropyScale, double* rowStats) {
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows.rows; r += (int64_t)gridDim.x * blockDim.x) {
    double* stats = rowStats + r * kRowStats;
    for (int k = 0; k < kRowStats; ++k) stats[k] = 0.0;
    tokenLogps[r] = 0.0;
    tokenGrad[r] = 0.0;
    if (rowScale) rowScale[r] = 0.0f;
    if (entropyScale) entropyScale[r] = 0.0f;
    if (rows.labels[r] == rows.ignoreIndex) continue;
    const int64_t s = sequenceOf(cuSeqlens, numSeqs, r);
    const RowForward& f = forward[r];
    const double weight = policyWeight(config, numSeqs, sums[s].count, *total);
    const PolicyRow row = policyRowAt(config, weight, r, s, (double)f.logp, (double)f.entropy);
    tokenLogps[r] = (double)f.logp;
    tokenGrad[r] = row.tokenGrad;
    if (rowScale) rowScale[r] = (float)row.tokenGrad;
    if (entropyScale) entropyScale[r] = (float)row.entropyScale;
    stats[FDPO_POLICY_STAT_LOSS] = row.weightedLoss;
    stats[FDPO_POLICY_STAT_TOKENS] = 1.0;
    stats[FDPO_POLICY_STAT_LOW_CLIPPED] = row.token.lowClipped;
    stats[FDPO_POLICY_STAT_HIGH_CLIPPED] = row.token.highClipped;
    stats[FDPO_POLICY_STAT_REGION_CLIPPED] = row.token.lowClipped | row.token.highClipped;
    stats[FDPO_POLICY_STAT_KL_SUM] = row.token.kl;
    stats[FDPO_POLICY_STAT_ENTROPY_SUM] = (double)f.entropy;
  }
}

// The stats: thread t adds rows t, t + 256, ... in order, then the block merges the parts in a
// fixed tree (the order depends on kStatsThreads alone, not on the GPU).
__global__ void __launch_bounds__(kStatsThreads) policyStatsKernel(const double* rowStats, int64_t rows, double* stats) {
  __shared__ double parts[kStatsThreads][kRowStats];
  const int t = threadIdx.x;
  for (int k = 0; k < kRowStats; ++k) parts[t][k] = 0.0;
  for (int64_t r = t; r < rows; r += kStatsThreads) {
    for (int k = 0; k < kRowStats; ++k) parts[t][k] += rowStats[r * kRowStats + k];
  }
  __syncthreads();  // every part is written
  for (int half = kStatsThreads / 2; half > 0; half /= 2) {
    if (t < half) {
      for (int k = 0; k < kRowStats; ++k) parts[t][k] += parts[t + half][k];
    }
    __syncthreads();  // this level is written before the next one reads it
  }
  if (t == 0) {
    for (int k = 0; k < kRowStats; ++k) stats[k] = parts[0][k];
  }
}

unsigned blocksFor(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return (unsigned)(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

int32_t runPolicyLoss(const fdpo_tokens* tokens, const fdpo_policy_config* config, fdpo_policy_outputs* outputs,
                      const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  CallStart call(launch);
  PolicySnapshot policy;
  int32_t status = call.begin(tokens, launch, error, error_size, [&](const fdpo_tokens&) {
    return policy.take(call.snapshot, config, outputs, error, error_size);
  });
  if (status != FDPO_OK) return status;
  const fdpo_policy_outputs& out = policy.outputs;
  cudaStream_t stream = call.stream;
  Workspace& ws = call.ws;
  DeviceTokens& d = call.d;
  const fdpo_tokens& t = call.snapshot.tokens;
  const int64_t S = t.num_seqs, R = t.rows;

  Staged grad;
  if (out.grad == t.logits) {
    grad = d.logits;
  } else if (out.grad) {
    status = stage(ws, grad, out.grad, R * t.vocab * elementBytes(t.dtype), false, launch->device, elementBytes(t.dtype),
                   "grad", stream, error, error_size);
    if (status != FDPO_OK) return status;
  }

  // The per-token inputs on the device (the config then points at them).
  fdpo_policy_config deviceConfig = policy.config;
  const int64_t advantages = policy.config.advantages_per_token ? R : S;
  double *deviceAdvantages = nullptr, *deviceOld = nullptr, *deviceRef = nullptr;
  if (policy.config.advantages) FDPO_CUDA_CHECK(ws.upload(&deviceAdvantages, policy.config.advantages, advantages), "uploading advantages");
  if (policy.config.old_logps) FDPO_CUDA_CHECK(ws.upload(&deviceOld, policy.config.old_logps, R), "uploading old_logps");
  if (policy.config.ref_logps) FDPO_CUDA_CHECK(ws.upload(&deviceRef, policy.config.ref_logps, R), "uploading ref_logps");
  deviceConfig.advantages = deviceAdvantages;
  deviceConfig.old_logps = deviceOld;
  deviceConfig.ref_logps = deviceRef;

  RowForward* forward = nullptr;
  SequenceSums* sums = nullptr;
  int64_t* total = nullptr;
  double *results = nullptr, *rowStats = nullptr;
  float *rowScale = nullptr, *entropyScale = nullptr;
  const bool entropy = policy.config.entropy_coef != 0.0;
  // results: token_logps, token_grad (R each), then the stats.
  FDPO_CUDA_CHECK(ws.alloc(&forward, R), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&sums, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&total, 1), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&results, 2 * R + FDPO_POLICY_STAT_COUNT), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&rowStats, R * kRowStats), "allocating the workspace");
  if (out.grad) FDPO_CUDA_CHECK(ws.alloc(&rowScale, R), "allocating the workspace");
  if (out.grad && entropy) FDPO_CUDA_CHECK(ws.alloc(&entropyScale, R), "allocating the workspace");

  PassTimer timer(launch->timings_ms);
  timer.mark(0, stream);
  FDPO_CUDA_CHECK(launchForward(d.rows, forward, nullptr, stream), "pass A");
  timer.mark(1, stream);
  FDPO_CUDA_CHECK(launchSequenceSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, stream), "the reduce");
  FDPO_CUDA_CHECK(launchKernel(totalTokensKernel, 1, 1, stream, (const SequenceSums*)sums, S, total), "the reduce");
  if (R > 0) {
    FDPO_CUDA_CHECK(launchKernel(policyRowsKernel, blocksFor(R, kRowThreads), kRowThreads, stream, deviceConfig, d.rows,
                                 (const RowForward*)forward, (const int32_t*)d.cuSeqlens, S, (const SequenceSums*)sums,
                                 (const int64_t*)total, results, results + R, rowScale, entropyScale, rowStats),
                    "the reduce");
  }
  FDPO_CUDA_CHECK(launchKernel(policyStatsKernel, 1, kStatsThreads, stream, (const double*)rowStats, R, results + 2 * R),
                  "the reduce");
  timer.mark(2, stream);
  if (out.grad) {
    if (entropy) {
      FDPO_CUDA_CHECK(launchBackwardEntropy(d.rows, forward, rowScale, entropyScale, grad.device, stream), "pass B");
    } else {
      FDPO_CUDA_CHECK(launchBackward(d.rows, forward, rowScale, grad.device, stream), "pass B");
    }
  }
  timer.mark(3, stream);

  std::vector<double> host((size_t)(2 * R + FDPO_POLICY_STAT_COUNT));
  FDPO_CUDA_CHECK(cudaMemcpyAsync(host.data(), results, host.size() * sizeof(double), cudaMemcpyDeviceToHost, stream),
                  "copying results back");
  if (out.grad) {
    status = copyOut(grad, stream, error, error_size);
    if (status != FDPO_OK) return status;
  }
  FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "the policy kernels");
  timer.report();
  if (out.token_logps) memcpy(out.token_logps, host.data(), R * sizeof(double));
  if (out.token_grad) memcpy(out.token_grad, host.data() + R, R * sizeof(double));
  memcpy(out.stats, host.data() + 2 * R, FDPO_POLICY_STAT_COUNT * sizeof(double));
  return FDPO_OK;
}

}  // namespace
}  // namespace fdpo

using namespace fdpo;

extern "C" int32_t fdpo_cuda_policy_loss(const fdpo_tokens* tokens, const fdpo_policy_config* config,
                                         fdpo_policy_outputs* outputs, const fdpo_cuda_launch* launch, char* error,
                                         size_t error_size) {
  fdpo_cuda_launch checked;
  const int32_t status = readVersioned(launch, checked, kLaunchAbi2Size, "fdpo_cuda_launch", error, error_size);
  if (status != FDPO_OK) return status;
  return guarded(error, error_size, [&] { return runPolicyLoss(tokens, config, outputs, &checked, error, error_size); });
}
