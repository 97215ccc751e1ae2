// Device memory for the CUDA backend: where a pointer lives, a call's stream-ordered workspace,
// the staging of caller buffers that are host memory, and making a device current. CUDA errors
// become the C ABI's status codes here.
#ifndef FUSED_DPO_CUDA_MEMORY_H
#define FUSED_DPO_CUDA_MEMORY_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include <vector>

namespace fdpo {

// The status for a failed CUDA call (FDPO_ERR_OUT_OF_MEMORY or FDPO_ERR_DEVICE), its message in error.
int32_t cudaFail(char* error, size_t size, cudaError_t e, const char* what);

// Returns from the calling entry point (which has error and error_size) when call fails.
#define FDPO_CUDA_CHECK(call, what)                                    \
  do {                                                                 \
    const cudaError_t fdpoStatus_ = (call);                            \
    if (fdpoStatus_ != cudaSuccess) return cudaFail(error, error_size, fdpoStatus_, what); \
  } while (0)

// Where a pointer lives, for the device the call runs on.
enum class Memory { Host, Device, OtherDevice };

Memory memoryOf(const void* p, int device);

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

// Points s at p when p is device memory of deviceIndex (aligned to alignment), else at a
// workspace copy of bytes (copied in when copyIn).
int32_t stage(Workspace& ws, Staged& s, void* p, int64_t bytes, bool copyIn, int deviceIndex, int64_t alignment,
              const char* name, cudaStream_t stream, char* error, size_t error_size);

// Copies a staged buffer back to the caller's host memory (nothing when it was the caller's own).
int32_t copyOut(const Staged& s, cudaStream_t stream, char* error, size_t error_size);

// Makes `device` current: FDPO_ERR_UNAVAILABLE without a driver or device, so callers can tell
// "no CUDA here" from a failing one.
int32_t useDevice(int32_t device, char* error, size_t error_size);

}  // namespace fdpo

#endif
