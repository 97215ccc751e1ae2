// The CPU emulation's runtime (see cuda_runtime.h here): one emulated device whose memory is
// tracked host memory, synchronous copies and streams, and launches that run each block's threads
// as OS threads meeting at barriers.
#include <stdlib.h>

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_runtime.h"

thread_local EmulatedIndex threadIdx, blockIdx, blockDim, gridDim;

namespace {

// A reusable barrier for n threads.
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const unsigned generation = generation_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      all_.notify_all();
      return;
    }
    all_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable all_;
  unsigned n_, arrived_ = 0, generation_ = 0;
};

struct Warp {
  Barrier barrier{32};
  uint64_t slots[32] = {};
};

struct Block {
  explicit Block(unsigned threads) : barrier(threads), warps((threads + 31) / 32) {
    for (auto& w : warps) w = std::make_unique<Warp>();
  }
  Barrier barrier;
  std::vector<std::unique_ptr<Warp>> warps;
};

thread_local Block* currentBlock = nullptr;

// Allocations: base -> bytes, for cudaPointerGetAttributes and the address-range query.
std::mutex allocationsMutex;
std::map<uintptr_t, size_t> allocations;

// One launch at a time: the kernels' __shared__ arrays are statics.
std::mutex launchMutex;
std::mutex atomicMutex;

bool isAllocated(const void* p, uintptr_t* base, size_t* size) {
  std::lock_guard<std::mutex> lock(allocationsMutex);
  const uintptr_t address = (uintptr_t)p;
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return false;
  --it;
  if (address >= it->first + (it->second > 0 ? it->second : 1)) return false;
  if (base) *base = it->first;
  if (size) *size = it->second;
  return true;
}

// cuMemGetAddressRange's emulation, handed out by cudaGetDriverEntryPointByVersion.
int addressRange(unsigned long long* base, size_t* size, unsigned long long address) {
  uintptr_t b = 0;
  size_t s = 0;
  if (!isAllocated((const void*)(uintptr_t)address, &b, &s)) return 1;
  *base = b;
  *size = s;
  return 0;
}


}  // namespace

struct EmulatedEvent {
  int unused;
};

void __syncthreads() { currentBlock->barrier.wait(); }

uint64_t emulatedShuffleXor(uint64_t bits, int laneMask) {
  Warp& warp = *currentBlock->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  warp.slots[lane] = bits;
  warp.barrier.wait();  // every lane has written
  const uint64_t other = warp.slots[lane ^ (unsigned)laneMask];
  warp.barrier.wait();  // every lane has read before the next shuffle writes
  return other;
}

unsigned long long atomicMin(unsigned long long* address, unsigned long long value) {
  std::lock_guard<std::mutex> lock(atomicMutex);
  const unsigned long long old = *address;
  if (value < old) *address = value;
  return old;
}

cudaError_t emulateLaunch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (grid == 0 || block == 0 || block > 1024) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(launchMutex);
  for (unsigned b = 0; b < grid; ++b) {
    Block state(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (unsigned t = 0; t < block; ++t) {
      threads.emplace_back([&, t] {
        currentBlock = &state;
        threadIdx.x = t;
        blockIdx.x = b;
        blockDim.x = block;
        gridDim.x = grid;
        body();
      });
    }
    for (auto& thread : threads) thread.join();
  }
  return cudaSuccess;
}

const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "emulated CUDA error"; }
const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorEmulated"; }
cudaError_t cudaGetLastError() { return cudaSuccess; }

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 13000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = 13000;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* props, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  memset(props, 0, sizeof *props);
  strncpy(props->name, "fused-dpo CPU emulation of a CUDA device", sizeof props->name - 1);
  props->major = 9;
  props->minor = 0;
  props->totalGlobalMem = (size_t)1 << 32;
  props->multiProcessorCount = 1;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 1;  // one SM: the row loops then run every row through one block
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = malloc(bytes > 0 ? bytes : 1);
  if (!*p) return cudaErrorMemoryAllocation;
  // Poison: a kernel that reads memory nobody wrote gets NaNs, not zeros that look right.
  memset(*p, 0xff, bytes);
  std::lock_guard<std::mutex> lock(allocationsMutex);
  allocations[(uintptr_t)*p] = bytes;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(allocationsMutex);
    if (allocations.erase((uintptr_t)p) == 0) return cudaErrorInvalidValue;
  }
  free(p);
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  // The direction must match where the pointers are, as on a GPU.
  const bool dstDevice = isAllocated(dst, nullptr, nullptr), srcDevice = isAllocated(src, nullptr, nullptr);
  if ((kind == cudaMemcpyHostToDevice && (!dstDevice || srcDevice)) ||
      (kind == cudaMemcpyDeviceToHost && (dstDevice || !srcDevice)) ||
      (kind == cudaMemcpyDeviceToDevice && (!dstDevice || !srcDevice))) {
    return cudaErrorInvalidValue;
  }
  memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attributes, const void* p) {
  if (!p) return cudaErrorInvalidValue;
  attributes->type = isAllocated(p, nullptr, nullptr) ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  attributes->device = 0;
  return cudaSuccess;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new EmulatedEvent{0};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.0f;
  return cudaSuccess;
}

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned, unsigned long long,
                                             cudaDriverEntryPointQueryResult* result) {
  const bool known = strcmp(symbol, "cuMemGetAddressRange") == 0;
  *fn = known ? (void*)&addressRange : nullptr;
  if (result) *result = known ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
  return cudaSuccess;
}
