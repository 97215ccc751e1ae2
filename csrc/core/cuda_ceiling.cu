// The CUDA backend's ceiling for the benchmark: device-to-device copy bandwidth.
#include <cuda_runtime.h>
#include <stdint.h>

#include "checks.h"
#include "cuda_memory.h"
#include "fused_dpo.h"

using namespace fdpo;

extern "C" {

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
