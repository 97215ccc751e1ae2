// The CUDA backend's memory: the helpers of cuda_memory.h, and the C ABI's device status,
// device memory and copies.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "checks.h"
#include "cuda_memory.h"
#include "fused_dpo.h"

namespace fdpo {

int32_t cudaFail(char* error, size_t size, cudaError_t e, const char* what) {
  const int32_t status = e == cudaErrorMemoryAllocation ? FDPO_ERR_OUT_OF_MEMORY : FDPO_ERR_DEVICE;
  return fail(error, size, status, "CUDA error in %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

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

}  // extern "C"
