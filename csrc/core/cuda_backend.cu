// The CUDA backend of the C ABI: the same checks as the CPU backend, staging of host memory,
// then pass A, the reduce and pass B on one stream with a single synchronisation at the end.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <vector>

#include "checks.h"
#include "cuda_kernels.h"
#include "fused_dpo.h"
#include "reduce_math.h"

namespace fdpo {
namespace {

int32_t cudaFail(char* error, size_t size, cudaError_t e, const char* what) {
  const int32_t status = e == cudaErrorMemoryAllocation ? FDPO_ERR_OUT_OF_MEMORY : FDPO_ERR_DEVICE;
  return fail(error, size, status, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

#define FDPO_CUDA_CHECK(call, what)                                    \
  do {                                                                 \
    const cudaError_t fdpoStatus_ = (call);                            \
    if (fdpoStatus_ != cudaSuccess) return cudaFail(error, error_size, fdpoStatus_, what); \
  } while (0)

int64_t elementBytes(int32_t dtype) { return dtype == FDPO_FLOAT32 ? 4 : 2; }

// Where a pointer lives, for the device the call runs on.
enum class Memory { Host, Device, OtherDevice };

Memory memoryOf(const void* p, int device) {
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, p) != cudaSuccess) {
    cudaGetLastError();  // an unknown pointer is host memory; clear the error it leaves
    return Memory::Host;
  }
  if (attributes.type == cudaMemoryTypeManaged) return Memory::Device;
  if (attributes.type != cudaMemoryTypeDevice) return Memory::Host;
  return attributes.device == device ? Memory::Device : Memory::OtherDevice;
}

// Device allocations of one call, stream-ordered (cudaMallocAsync), freed when the call ends.
class Workspace {
 public:
  explicit Workspace(cudaStream_t stream) : stream_(stream) {}
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() {
    for (void* p : blocks_) {
      if (pooled_) {
        cudaFreeAsync(p, stream_);
      } else {
        cudaFree(p);
      }
    }
  }

  template <class T>
  cudaError_t alloc(T** out, int64_t count) {
    *out = nullptr;
    if (count <= 0) return cudaSuccess;
    void* p = nullptr;
    cudaError_t e = pooled_ ? cudaMallocAsync(&p, (size_t)count * sizeof(T), stream_) : cudaErrorNotSupported;
    if (e == cudaErrorNotSupported) {  // a driver without memory pools
      cudaGetLastError();
      pooled_ = false;
      e = cudaMalloc(&p, (size_t)count * sizeof(T));
    }
    if (e != cudaSuccess) return e;
    blocks_.push_back(p);
    *out = (T*)p;
    return cudaSuccess;
  }

  // A device copy of count host values.
  template <class T>
  cudaError_t upload(T** out, const T* host, int64_t count) {
    cudaError_t e = alloc(out, count);
    if (e == cudaSuccess && count > 0) e = cudaMemcpyAsync(*out, host, (size_t)count * sizeof(T), cudaMemcpyHostToDevice, stream_);
    return e;
  }

 private:
  cudaStream_t stream_;
  bool pooled_ = true;
  std::vector<void*> blocks_;
};

// A buffer the kernels use in device memory: the caller's own when it is device memory of this
// device, else a staging copy (copied in when asked, copied back by copyOut).
struct Staged {
  void* device = nullptr;
  void* host = nullptr;  // the caller's host buffer, when staged
  int64_t bytes = 0;
};

int32_t stage(Workspace& ws, Staged& s, void* p, int64_t bytes, bool copyIn, int deviceIndex, int64_t alignment,
              const char* name, cudaStream_t stream, char* error, size_t error_size) {
  s.bytes = bytes;
  const Memory memory = memoryOf(p, deviceIndex);
  if (memory == Memory::OtherDevice) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "%s is memory of another device than device %d", name,
                deviceIndex);
  }
  if (memory == Memory::Device) {
    if ((uintptr_t)p % (uintptr_t)alignment != 0) {
      return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "%s must be aligned to %lld bytes", name,
                  (long long)alignment);
    }
    s.device = p;
    return FDPO_OK;
  }
  s.host = p;
  char* d = nullptr;
  FDPO_CUDA_CHECK(ws.alloc(&d, bytes), name);
  s.device = d;
  if (copyIn && bytes > 0) FDPO_CUDA_CHECK(cudaMemcpyAsync(d, p, (size_t)bytes, cudaMemcpyHostToDevice, stream), name);
  return FDPO_OK;
}

int32_t copyOut(const Staged& s, cudaStream_t stream, char* error, size_t error_size) {
  if (s.host && s.bytes > 0) {
    FDPO_CUDA_CHECK(cudaMemcpyAsync(s.host, s.device, (size_t)s.bytes, cudaMemcpyDeviceToHost, stream), "copying results back");
  }
  return FDPO_OK;
}

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

// Makes `device` current: FDPO_ERR_UNAVAILABLE without a driver or device, so callers can tell
// "no CUDA here" from a failing one.
int32_t useDevice(int32_t device, char* error, size_t error_size) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    cudaGetLastError();
    return fail(error, error_size, FDPO_ERR_UNAVAILABLE, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
  }
  if (device < 0 || device >= count) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "device %d does not exist (%d found)", (int)device, count);
  }
  FDPO_CUDA_CHECK(cudaSetDevice(device), "cudaSetDevice");
  return FDPO_OK;
}

int32_t begin(const fdpo_cuda_launch* launch, char* error, size_t error_size) {
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
int32_t snapshotTokens(const fdpo_tokens* tokens, TokenSnapshot& snapshot, bool& labelsOnHost, int deviceIndex,
                       char* error, size_t error_size) {
  const Memory labels = tokens && tokens->labels ? memoryOf(tokens->labels, deviceIndex) : Memory::Host;
  if (labels == Memory::OtherDevice) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "labels are memory of another device than device %d", deviceIndex);
  }
  labelsOnHost = labels == Memory::Host;
  return snapshot.take(tokens, error, error_size, labelsOnHost);
}

int32_t prepareTokens(Workspace& ws, const TokenSnapshot& snapshot, bool labelsOnHost, DeviceTokens& d,
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
  d.rows = DeviceRows{d.logits.device, t.dtype, t.rows, t.vocab, d.labels, t.ignore_index};
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
  double *refChosen = nullptr, *refRejected = nullptr;
  FDPO_CUDA_CHECK(ws.alloc(&results, layout.bytes()), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&forward, R), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&sums, S), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&scratchValues, 2 * B + 2), "allocating the workspace");
  FDPO_CUDA_CHECK(ws.alloc(&scratchOrders, 3 * B), "allocating the workspace");
  if (config->ref_chosen) FDPO_CUDA_CHECK(ws.upload(&refChosen, config->ref_chosen, B), "uploading ref_chosen");
  if (config->ref_rejected) FDPO_CUDA_CHECK(ws.upload(&refRejected, config->ref_rejected, B), "uploading ref_rejected");

  fdpo_loss_config deviceConfig = *config;
  deviceConfig.ref_chosen = refChosen;
  deviceConfig.ref_rejected = refRejected;
  const BatchScratch scratch = {scratchValues, scratchValues + B, scratchOrders, scratchOrders + B,
                                scratchOrders + 2 * B, scratchValues + 2 * B};
  const Batch batch = {deviceConfig, B, layout.seqLogps(results), layout.counts(results), layout.pairLoss(results),
                       layout.chosenRewards(results), layout.rejectedRewards(results), layout.seqGrad(results),
                       layout.stats(results), scratch};

  PassTimer timer(launch->timings_ms);
  timer.mark(0, stream);
  FDPO_CUDA_CHECK(launchForward(d.rows, forward, deferred ? grad.device : nullptr, stream), "pass A");
  timer.mark(1, stream);
  FDPO_CUDA_CHECK(launchSequenceSums(forward, d.labels, t.ignore_index, d.cuSeqlens, S, sums, stream), "the reduce");
  FDPO_CUDA_CHECK(launchBatch(sums, batch, stream), "the reduce");
  if (outputs->grad) {
    FDPO_CUDA_CHECK(launchRowScale(d.cuSeqlens, S, d.labels, t.ignore_index, R, batch.seqGrad, (float*)rowScale.device, stream),
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
  FDPO_CUDA_CHECK(cudaStreamSynchronize(stream), "the loss kernels");
  timer.report();

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
  int32_t status = call.begin(tokens, launch, error, error_size, [&](const fdpo_tokens&) {
    return logps && counts ? FDPO_OK : fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "logps or counts is NULL");
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
  FDPO_CUDA_CHECK(launchSequenceResults(sums, S, average != 0, deviceLogps, deviceCounts, stream), "the reduce");
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

}  // namespace
}  // namespace fdpo

using namespace fdpo;

extern "C" {

// Writes status into the caller's struct, as far as its struct_size reaches.
static int32_t writeStatus(fdpo_cuda_status* out, const fdpo_cuda_status& status) {
  const size_t bytes = writableSize(out->struct_size, kCudaStatusAbi2Size, sizeof status);
  if (bytes == 0) return FDPO_ERR_INVALID_ARGUMENT;
  const uint32_t callerSize = out->struct_size;
  memcpy(out, &status, bytes);
  out->struct_size = callerSize;
  return FDPO_OK;
}

int32_t fdpo_cuda_get_status(fdpo_cuda_status* caller) {
  if (!caller) return FDPO_ERR_INVALID_ARGUMENT;
  fdpo_cuda_status status;
  fdpo_cuda_status* out = &status;
  memset(out, 0, sizeof *out);
  out->compiled = 1;
  cudaRuntimeGetVersion(&out->runtime_version);
  cudaDriverGetVersion(&out->driver_version);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    const char* why = e == cudaErrorInsufficientDriver ? "no CUDA driver, or one older than the runtime"
                      : e == cudaErrorNoDevice        ? "no CUDA device"
                                                      : cudaGetErrorString(e);
    snprintf(out->reason, sizeof out->reason, "%s (%s)", why, cudaGetErrorName(e));
    return writeStatus(caller, status);
  }
  out->device_count = count;
  out->available = count > 0;
  if (count == 0) snprintf(out->reason, sizeof out->reason, "no CUDA device");
  return writeStatus(caller, status);
}

int32_t fdpo_cuda_get_device(int32_t device, fdpo_cuda_device_info* caller, char* error, size_t error_size) {
  if (!caller) return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "out is NULL");
  const size_t bytes = writableSize(caller->struct_size, kDeviceInfoAbi2Size, sizeof(fdpo_cuda_device_info));
  if (bytes == 0) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "out->struct_size must be sizeof(fdpo_cuda_device_info)");
  }
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  cudaDeviceProp props;
  FDPO_CUDA_CHECK(cudaGetDeviceProperties(&props, device), "cudaGetDeviceProperties");
  fdpo_cuda_device_info info;
  memset(&info, 0, sizeof info);
  info.struct_size = caller->struct_size;
  strncpy(info.name, props.name, sizeof info.name - 1);
  info.major = props.major;
  info.minor = props.minor;
  info.total_memory = (int64_t)props.totalGlobalMem;
  info.multiprocessors = props.multiProcessorCount;
  memcpy(caller, &info, bytes);
  return FDPO_OK;
}

int32_t fdpo_cuda_alloc(int32_t device, int64_t bytes, void** out, char* error, size_t error_size) {
  if (!out || bytes < 0) return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "bytes must be >= 0 and out not NULL");
  *out = nullptr;
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  FDPO_CUDA_CHECK(cudaMalloc(out, bytes > 0 ? (size_t)bytes : 1), "cudaMalloc");
  return FDPO_OK;
}

int32_t fdpo_cuda_free(int32_t device, void* pointer, char* error, size_t error_size) {
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  FDPO_CUDA_CHECK(cudaFree(pointer), "cudaFree");
  return FDPO_OK;
}

int32_t fdpo_cuda_copy(int32_t device, void* dst, const void* src, int64_t bytes, char* error, size_t error_size) {
  if (bytes < 0 || (bytes > 0 && (!dst || !src))) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "bytes must be >= 0 and dst, src not NULL");
  }
  if (bytes == 0) return FDPO_OK;
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  FDPO_CUDA_CHECK(cudaMemcpy(dst, src, (size_t)bytes, cudaMemcpyDefault), "cudaMemcpy");
  return FDPO_OK;
}

int32_t fdpo_cuda_check_device_buffer(const void* pointer, int64_t bytes, int32_t device, char* error,
                                      size_t error_size) {
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  const Memory memory = memoryOf(pointer, device);
  if (memory == Memory::Host) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "address %p is not CUDA device memory", pointer);
  }
  if (memory == Memory::OtherDevice) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "address %p is memory of another device than device %d",
                pointer, (int)device);
  }
  // The allocation around the address, from the driver (the runtime API has no such query).
  using AddressRange = int (*)(unsigned long long* base, size_t* size, unsigned long long address);
  static const AddressRange addressRange = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return (AddressRange)fn;
  }();
  if (!addressRange) return fail(error, error_size, FDPO_ERR_DEVICE, "the driver has no cuMemGetAddressRange");
  unsigned long long base = 0;
  size_t size = 0;
  const unsigned long long address = (unsigned long long)(uintptr_t)pointer;
  if (addressRange(&base, &size, address) != 0) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "address %p is not inside a device allocation", pointer);
  }
  if (bytes < 0 || (unsigned long long)bytes > base + size - address) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT,
                "the allocation holds %llu bytes from address %p, %lld are needed", base + size - address, pointer,
                (long long)bytes);
  }
  return FDPO_OK;
}

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

int32_t fdpo_cuda_copy_bandwidth(int32_t device, int64_t bytes, int32_t iterations, double* bytes_per_second,
                                 char* error, size_t error_size) {
  if (bytes <= 0 || iterations <= 0 || !bytes_per_second) {
    return fail(error, error_size, FDPO_ERR_INVALID_ARGUMENT, "bytes and iterations must be positive");
  }
  const int32_t status = useDevice(device, error, error_size);
  if (status != FDPO_OK) return status;
  void *a = nullptr, *b = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cudaError_t e = cudaMalloc(&a, (size_t)bytes);
  if (e == cudaSuccess) e = cudaMalloc(&b, (size_t)bytes);
  if (e == cudaSuccess) e = cudaEventCreate(&start);
  if (e == cudaSuccess) e = cudaEventCreate(&stop);
  if (e == cudaSuccess) e = cudaMemcpy(b, a, (size_t)bytes, cudaMemcpyDeviceToDevice);  // warm-up
  if (e == cudaSuccess) e = cudaEventRecord(start);
  for (int i = 0; e == cudaSuccess && i < iterations; ++i) e = cudaMemcpyAsync(b, a, (size_t)bytes, cudaMemcpyDeviceToDevice);
  if (e == cudaSuccess) e = cudaEventRecord(stop);
  if (e == cudaSuccess) e = cudaEventSynchronize(stop);
  float ms = 0.0f;
  if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, start, stop);
  if (e == cudaSuccess) *bytes_per_second = 2.0 * (double)bytes * iterations / (ms * 1e-3);
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  cudaFree(a);
  cudaFree(b);
  if (e != cudaSuccess) return cudaFail(error, error_size, e, "measuring copy bandwidth");
  return FDPO_OK;
}

}  // extern "C"
