// How every CUDA call of the C ABI starts and ends (cuda_backend.cu, cuda_kto.cu, cuda_policy.cu):
// its device made current, its stream and workspace, the tokens checked and on the device, the
// passes' timers, and C++ exceptions turned into status codes.
#ifndef FUSED_DPO_CUDA_CALL_H
#define FUSED_DPO_CUDA_CALL_H

#include <cuda_runtime.h>
#include <stdint.h>

#include <new>

#include "checks.h"
#include "cuda_kernels.h"
#include "cuda_memory.h"
#include "fused_dpo.h"

namespace fdpo {

inline int64_t elementBytes(int32_t dtype) { return dtype == FDPO_FLOAT32 ? 4 : 2; }

// Events around the passes, when the caller asked for timings.
struct PassTimer {
  float* out;
  cudaEvent_t marks[4] = {nullptr, nullptr, nullptr, nullptr};
  explicit PassTimer(float* out_) : out(out_) {
    for (int i = 0; out && i < 4; ++i) cudaEventCreate(&marks[i]);
  }
  ~PassTimer() {
    for (cudaEvent_t e : marks) {
      if (e) cudaEventDestroy(e);
    }
  }
  void mark(int i, cudaStream_t stream) {
    if (out) cudaEventRecord(marks[i], stream);
  }
  // After the stream is synchronised: pass A = marks 0..1, reduce = 1..2, pass B = 2..3.
  void report() {
    if (!out) return;
    for (int i = 0; i < 3; ++i) {
      out[i] = 0.0f;
      cudaEventElapsedTime(&out[i], marks[i], marks[i + 1]);
    }
  }
};

inline int32_t begin(const fdpo_cuda_launch* launch, char* error, size_t error_size) {
  if (!launch) return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "launch is NULL");
  return useDevice(launch->device, error, error_size);
}

// The logits and labels on the device; labels that were already there are checked there.
struct DeviceTokens {
  Staged logits;
  const int32_t* labels = nullptr;
  int32_t* cuSeqlens = nullptr;
  DeviceRows rows;
};

// The tokens, checked on the host (labels only when they are host memory).
inline int32_t snapshotTokens(const fdpo_tokens* tokens, TokenSnapshot& snapshot, bool& labelsOnHost, int deviceIndex,
                       char* error, size_t error_size) {
  const Memory labels = tokens && tokens->labels ? memoryOf(tokens->labels, deviceIndex) : Memory::Host;
  if (labels == Memory::OtherDevice) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "labels are memory of another device than device %d", deviceIndex);
  }
  labelsOnHost = labels == Memory::Host;
  return snapshot.take(tokens, error, error_size, labelsOnHost);
}

inline int32_t prepareTokens(Workspace& ws, const TokenSnapshot& snapshot, bool labelsOnHost, DeviceTokens& d,
                      int deviceIndex, cudaStream_t stream, char* error, size_t error_size) {
  const fdpo_tokens& t = snapshot.tokens;
  int32_t status = stage(ws, d.logits, (void*)t.logits, t.rows * t.vocab * elementBytes(t.dtype), true, deviceIndex,
                 elementBytes(t.dtype), "logits", stream, error, error_size);
  if (status != FDPO_OK) return status;
  if (labelsOnHost) {
    int32_t* labels = nullptr;
    FDPO_CUDA_CHECK(ws.upload(&labels, t.labels, t.rows), "uploading labels");
    d.labels = labels;
  } else {
    d.labels = t.labels;
  }
  FDPO_CUDA_CHECK(ws.upload(&d.cuSeqlens, t.cu_seqlens, t.num_seqs + 1), "uploading cu_seqlens");
  d.rows = DeviceRows{d.logits.device, t.dtype, t.rows, t.vocab, d.labels, t.ignore_index, rowOptionsFor(t, false)};
  if (!labelsOnHost && t.rows > 0) {
    // Device labels: find the first bad one before any kernel indexes with them (one sync).
    unsigned long long* badRow = nullptr;
    const unsigned long long none = ~0ull;
    FDPO_CUDA_CHECK(ws.upload(&badRow, &none, 1), "checking labels");
    FDPO_CUDA_CHECK(launchCheckLabels(d.rows, badRow, stream), "checking labels");
    unsigned long long found = none;
    FDPO_CUDA_CHECK(cudaMemcpyAsync(&found, badRow, sizeof found, cudaMemcpyDeviceToHost, stream), "checking labels");
    FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "checking labels");
    if (found != none) {
      int32_t label = 0;
      FDPO_CUDA_CHECK(cudaMemcpy(&label, d.labels + found, sizeof label, cudaMemcpyDeviceToHost), "checking labels");
      return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "labels[%llu] = %d is outside [0, %lld)", found, (int)label,
                  (long long)t.vocab);
    }
  }
  return FDPO_OK;
}

// What every CUDA call starts with: its device made current, its stream and workspace, and the
// tokens checked and on the device. `check` runs the call's own checks before anything is uploaded.
struct CallStart {
  cudaStream_t stream;
  Workspace ws;
  TokenSnapshot snapshot;
  DeviceTokens d;

  explicit CallStart(const fdpo_cuda_launch* launch)
      : stream(launch ? (cudaStream_t)launch->stream : nullptr), ws(stream) {}

  template <class Check>
  int32_t begin(const fdpo_tokens* tokens, const fdpo_cuda_launch* launch, char* error, size_t error_size, Check check) {
    int32_t status = fdpo::begin(launch, error, error_size);
    bool labelsOnHost = true;
    if (status == FDPO_OK) status = snapshotTokens(tokens, snapshot, labelsOnHost, launch->device, error, error_size);
    if (status == FDPO_OK) status = check(snapshot.tokens);
    if (status == FDPO_OK) status = prepareTokens(ws, snapshot, labelsOnHost, d, launch->device, stream, error, error_size);
    return status;
  }
};

// Runs body, turning C++ exceptions (allocation of host staging) into status codes.
template <class Body>
int32_t guarded(char* error, size_t error_size, Body body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(error, error_size, FDPO_ERR_OUT_OF_MEMORY, "out of host memory");
  } catch (...) {
    return fail(error, error_size, FDPO_ERR_INTERNAL, "internal error");
  }
}

}  // namespace fdpo

#endif
