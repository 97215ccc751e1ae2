// A CPU emulation of the part of CUDA the fused-dpo CUDA backend uses, so that its .cu files can be
// compiled by a C++ compiler and their logic tested where there is no GPU (npm run test:cuda-emulated).
// Device memory is host memory that this layer tracks, each allocation ending at an inaccessible
// page (a 16-byte access past its end faults); a launch runs its blocks one after another,
// each block's threads as OS threads, with __syncthreads, __syncwarp and the warp shuffles as
// barriers, and a misaligned 16-byte load or store stops the process as a GPU would fault. It
// checks the kernels' arithmetic, indexing, synchronisation structure and the host orchestration;
// it says nothing about speed, the memory model, or the exact bits of the GPU's exp2 and
// conversions (emulated here with libm and half_convert.h).
#ifndef FDPO_CUDA_EMULATION_RUNTIME_H
#define FDPO_CUDA_EMULATION_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// A launch runs one block at a time (and launches one at a time): a static is the block's memory.
#define __shared__ static

struct uint4 {
  unsigned int x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

struct EmulatedIndex {
  unsigned x;
};
extern thread_local EmulatedIndex threadIdx, blockIdx, blockDim, gridDim;

void __syncthreads();
// The calling thread's warp exchanges 8-byte slots: every lane writes its own, then reads lane ^ mask's.
uint64_t emulatedShuffleXor(uint64_t bits, int laneMask);

template <class T>
T __shfl_xor_sync(unsigned, T value, int laneMask) {
  static_assert(sizeof(T) <= 8, "a shuffled value fits a slot");
  uint64_t bits = 0;
  memcpy(&bits, &value, sizeof(T));
  bits = emulatedShuffleXor(bits, laneMask);
  T out;
  memcpy(&out, &bits, sizeof(T));
  return out;
}

void __syncwarp(unsigned mask = 0xffffffffu);

// A GPU faults on a 16-byte access that is not 16-byte aligned; the emulation stops there too.
void emulatedCheckAligned(const void* p, size_t bytes);
template <class T>
T __ldg(const T* p) {
  emulatedCheckAligned(p, sizeof(T));
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  emulatedCheckAligned(p, sizeof(T));
  return *p;
}
template <class T>
void __stcs(T* p, T v) {
  emulatedCheckAligned(p, sizeof(T));
  *p = v;
}
unsigned long long atomicMin(unsigned long long* address, unsigned long long value);

template <class To, class From>
inline To emulatedBitCast(From value) {
  static_assert(sizeof(To) == sizeof(From), "a bit cast keeps the size");
  To out;
  memcpy(&out, &value, sizeof out);
  return out;
}
inline float __int_as_float(int i) { return emulatedBitCast<float>(i); }
inline float __uint_as_float(unsigned u) { return emulatedBitCast<float>(u); }
inline unsigned __float_as_uint(float f) { return emulatedBitCast<unsigned>(f); }
// cvt.rzi: NaN gives 0, out-of-range values saturate.
inline int __float2int_rz(float f) {
  if (f != f) return 0;
  if (f >= 2147483647.0f) return 2147483647;
  if (f <= -2147483648.0f) return (-2147483647 - 1);
  return (int)f;
}
inline int min(int a, int b) { return a < b ? a : b; }

namespace fdpo {
inline float hardwareExp2(float x) { return exp2f(x); }
}  // namespace fdpo

// ---- the runtime API ----------------------------------------------------------------------------

typedef int cudaError_t;
enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNotSupported = 801,
};
typedef struct EmulatedStream* cudaStream_t;
typedef struct EmulatedEvent* cudaEvent_t;

enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaMemoryType { cudaMemoryTypeUnregistered, cudaMemoryTypeHost, cudaMemoryTypeDevice, cudaMemoryTypeManaged };
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
};
struct cudaDeviceProp {
  char name[256];
  int major, minor;
  size_t totalGlobalMem;
  int multiProcessorCount;
};
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount };
enum cudaDriverEntryPointQueryResult { cudaDriverEntryPointSuccess, cudaDriverEntryPointSymbolNotFound };
enum { cudaEnableDefault = 0 };

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* props, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t stream);
cudaError_t cudaFree(void* p);
cudaError_t cudaFreeAsync(void* p, cudaStream_t stream);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* p);
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned version, unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* result);
template <class Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int, size_t) {
  *blocks = 1;
  return cudaSuccess;
}

// Runs `grid` blocks of `block` threads of body (which calls the kernel) as described above.
cudaError_t emulateLaunch(unsigned grid, unsigned block, const std::function<void()>& body);

namespace fdpo {
template <class... Params, class... Args>
cudaError_t launchKernel(void (*kernel)(Params...), unsigned grid, unsigned block, cudaStream_t, Args... args) {
  return emulateLaunch(grid, block, [&] { kernel(args...); });
}
}  // namespace fdpo

#endif
