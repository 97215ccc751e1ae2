// fdpo_cuda_kto_loss: the CUDA loss call's pass A, sequence sums and pass B around KTO's reduce
// (kto_math.h, the CPU's cpu_kto.cpp runs the same phases), run in one block with a barrier after
// each phase; one synchronisation at the end.
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "cuda_call.h"
#include "cuda_kernels.h"
#include "cuda_launch.h"
#include "cuda_memory.h"
#include "fused_dpo.h"
#include "kto_checks.h"
#include "kto_math.h"

namespace fdpo {
namespace {

constexpr int kKtoThreads = 256;

__global__ void __launch_bounds__(kKtoThreads) ktoBatchKernel(KtoBatch batch) {
  BlockExec exec;
  reduceKto(batch, exec);
}

// The results copied back in one transfer: doubles (logps, losses, rewards, G, stats, z0), then counts.
struct KtoResults {
  int64_t numSeqs;
  int64_t doubles() const { return 4 * numSeqs + FDPO_STAT_COUNT + 1; }
  int64_t bytes() const { return doubles() * 8 + numSeqs * 4; }
  double* logps(char* base) const { return (double*)base; }
  double* seqLoss(char* base) const { return (double*)base + numSeqs; }
  double* rewards(char* base) const { return (double*)base + 2 * numSeqs; }
  double* seqGrad(char* base) const { return (double*)base + 3 * numSeqs; }
  double* stats(char* base) const { return (double*)base + 4 * numSeqs; }
  double* kl(char* base) const { return stats(base) + FDPO_STAT_COUNT; }
  int32_t* counts(char* base) const { return (int32_t*)((double*)base + doubles()); }
};

int32_t runKtoLoss(const fdpo_tokens* tokens, const fdpo_kto_config* config, fdpo_kto_outputs* outputs,
                   const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  CallStart call(launch);
  KtoSnapshot kto;
  int32_t status = call.begin(tokens, launch, error, error_size, [&](const fdpo_tokens&) {
    return kto.take(call.snapshot, config, outputs, error, error_size);
  });
  if (status != FDPO_OK) return status;
  const fdpo_kto_config& c = kto.config;
  const fdpo_kto_outputs& out = kto.outputs;
  cudaStream_t stream = call.stream;
  Workspace& ws = call.ws;
  DeviceTokens& d = call.d;
  const fdpo_tokens& t = call.snapshot.tokens;
  const int64_t S = t.num_seqs, R = t.rows;
  const int64_t gradBytes = R * t.vocab * elementBytes(t.dtype);

  // The gradient's buffer: the logits' own in place, else the caller's (or a staging copy).
  const bool deferred = out.grad && out.row_scale;
  Staged grad, rowScale;
  if (out.grad == t.logits) {
    grad = d.logits;
  } else if (out.grad) {
    status = stage(ws, grad, out.grad, gradBytes, false, launch->device, elementBytes(t.dtype), "grad", stream, error,
                   error_size);
    if (status != FDPO_OK) return status;
  }
  if (deferred) {
    status = stage(ws, rowScale, out.row_scale, R * 4, false, launch->device, 4, "row_scale", stream, error, error_size);
    if (status != FDPO_OK) return status;
  } else if (out.grad) {
    float* scratchScale = nullptr;
    FDPO_CUDA_CHECK(ws.alloc(&scratchScale, R), "allocating row scales");
    rowScale.device = scratchScale;
  }

  const KtoResults layout{S};
  char* results = nullptr;
  RowForward* forward = nullptr;
  SequenceSums* sums = nullptr;
  uint8_t* desirable = nullptr;
  double *refLogps = nullptr, *klLogps = nullptr, *klRefLogps = nullptr;
  FDPO_CUDA_CHECK(ws.alloc(&results, layout.bytes()), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&forward, R), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&sums, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.upload(&desirable, c.desirable, S), "uploading desirable");
  FDPO_CUDA_CHECK(ws.upload(&refLogps, c.ref_logps, S), "uploading ref_logps");
  if (c.kl_count > 0) {
    FDPO_CUDA_CHECK(ws.upload(&klLogps, c.kl_logps, c.kl_count), "uploading kl_logps");
    FDPO_CUDA_CHECK(ws.upload(&klRefLogps, c.kl_ref_logps, c.kl_count), "uploading kl_ref_logps");
  }
  fdpo_kto_config deviceConfig = c;
  deviceConfig.desirable = desirable;
  deviceConfig.ref_logps = refLogps;
  deviceConfig.kl_logps = klLogps;
  deviceConfig.kl_ref_logps = klRefLogps;
  const KtoBatch batch = {deviceConfig,           S, sums, layout.logps(results), layout.counts(results),
                          layout.seqLoss(results), layout.rewards(results), layout.seqGrad(results),
                          layout.stats(results), layout.kl(results)};

  PassTimer timer(launch->timings_ms);
  timer.mark(0, stream);
  FDPO_CUDA_CHECK(launchForward(d.rows, forward, deferred ? grad.device : nullptr, stream), "pass A");
  timer.mark(1, stream);
  FDPO_CUDA_CHECK(launchSequenceSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, stream), "the reduce");
  FDPO_CUDA_CHECK(launchKernel(ktoBatchKernel, 1, kKtoThreads, stream, batch), "the reduce");
  if (out.grad) {
    const RowWeights plain = {nullptr, nullptr, 1.0};  // KTO's G_s, no LD-DPO weights
    FDPO_CUDA_CHECK(launchRowScale(d.cuSeqlens, S, d.labels, t.ignore_index, R, batch.seqGrad, plain,
                                   (float*)rowScale.device, stream),
                    "the reduce");
  }
  timer.mark(2, stream);
  if (out.grad && !deferred) {
    FDPO_CUDA_CHECK(launchBackward(d.rows, forward, (const float*)rowScale.device, grad.device, stream), "pass B");
  }
  timer.mark(3, stream);

  std::vector<char> host((size_t)layout.bytes());
  FDPO_CUDA_CHECK(cudaMemcpyAsync(host.data(), results, host.size(), cudaMemcpyDeviceToHost, stream), "copying results back");
  if (out.grad) {
    status = copyOut(grad, stream, error, error_size);
    if (status == FDPO_OK && deferred) status = copyOut(rowScale, stream, error, error_size);
    if (status != FDPO_OK) return status;
  }
  FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "the loss kernels");
  timer.report();

  char* h = host.data();
  memcpy(out.seq_logps, layout.logps(h), S * sizeof(double));
  memcpy(out.seq_counts, layout.counts(h), S * sizeof(int32_t));
  memcpy(out.seq_losses, layout.seqLoss(h), S * sizeof(double));
  memcpy(out.rewards, layout.rewards(h), S * sizeof(double));
  if (out.seq_grad) memcpy(out.seq_grad, layout.seqGrad(h), S * sizeof(double));
  memcpy(out.stats, layout.stats(h), FDPO_STAT_COUNT * sizeof(double));
  memcpy(out.kl, layout.kl(h), sizeof(double));
  return FDPO_OK;
}

}  // namespace
}  // namespace fdpo

extern "C" int32_t fdpo_cuda_kto_loss(const fdpo_tokens* tokens, const fdpo_kto_config* config, fdpo_kto_outputs* outputs,
                                      const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  fdpo_cuda_launch checked;
  const int32_t status = fdpo::readVersioned(launch, checked, fdpo::kLaunchAbi2Size, "fdpo_cuda_launch", error, error_size);
  if (status != FDPO_OK) return status;
  return fdpo::guarded(error, error_size,
                       [&] { return fdpo::runKtoLoss(tokens, config, outputs, &checked, error, error_size); });
}
