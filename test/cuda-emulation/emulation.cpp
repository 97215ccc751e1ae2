// The CPU emulation's runtime (see cuda_runtime.h here): one emulated device whose memory is
// tracked host memory, synchronous copies and streams, and launches that run each block's threads
// on reused OS threads meeting at futex barriers.
#include <limits.h>
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "cuda_runtime.h"

thread_local EmulatedIndex threadIdx, blockIdx, blockDim, gridDim;

namespace {

// A reusable barrier for n threads on a futex: the last to arrive bumps the generation and wakes
// the others with one call. (A mutex and condition variable made hundreds of woken threads queue
// for the mutex at every __syncthreads.)
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void wait() {
    const unsigned generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      syscall(SYS_futex, &generation_, FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
      return;
    }
    while (generation_.load(std::memory_order_acquire) == generation) {
      syscall(SYS_futex, &generation_, FUTEX_WAIT_PRIVATE, generation, nullptr, nullptr, 0);
    }
  }

 private:
  const unsigned n_;
  std::atomic<unsigned> arrived_{0};
  std::atomic<unsigned> generation_{0};
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

// Allocations: base -> bytes and the pages mapped for it, for cudaPointerGetAttributes, the
// address-range query and cudaFree.
struct Allocation {
  size_t bytes;
  void* mapping;
  size_t mapped;
};
std::mutex allocationsMutex;
std::map<uintptr_t, Allocation> allocations;

// One launch at a time: the kernels' __shared__ arrays are statics.
std::mutex launchMutex;
std::mutex atomicMutex;

bool isAllocated(const void* p, uintptr_t* base, size_t* size) {
  std::lock_guard<std::mutex> lock(allocationsMutex);
  const uintptr_t address = (uintptr_t)p;
  auto it = allocations.upper_bound(address);
  if (it == allocations.begin()) return false;
  --it;
  if (address >= it->first + (it->second.bytes > 0 ? it->second.bytes : 1)) return false;
  if (base) *base = it->first;
  if (size) *size = it->second.bytes;
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

void __syncwarp(unsigned) { currentBlock->warps[threadIdx.x / 32]->barrier.wait(); }

void emulatedCheckAligned(const void* p, size_t bytes) {
  if ((uintptr_t)p % bytes == 0) return;
  fprintf(stderr, "emulated CUDA: misaligned %zu-byte access at %p (block %u, thread %u)\n", bytes, p, blockIdx.x, threadIdx.x);
  abort();
}

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

// The emulated threads: OS threads made once and reused by every block (making 256 or 1024
// threads per block costs far more than the kernels' work at the test sizes). Worker t runs
// thread t of each block; a block starts when its threads are handed the body and ends when all
// of them have returned.
class Workers {
 public:
  void runBlock(Block& state, unsigned b, unsigned grid, unsigned size, const std::function<void()>& body) {
    while (workers_.size() < size) {
      auto worker = std::make_unique<Worker>();
      Worker* w = worker.get();
      const unsigned t = (unsigned)workers_.size();
      worker->thread = std::thread([this, w, t] { loop(*w, t); });
      workers_.push_back(std::move(worker));
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      remaining_ = size;
    }
    for (unsigned t = 0; t < size; ++t) {
      Worker& w = *workers_[t];
      std::lock_guard<std::mutex> lock(w.mutex);
      w.task = Task{&state, &body, b, grid, size};
      w.pending = true;
      w.wake.notify_one();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [&] { return remaining_ == 0; });
  }

 private:
  struct Task {
    Block* block;
    const std::function<void()>* body;
    unsigned blockIndex, grid, blockSize;
  };
  struct Worker {
    std::thread thread;
    std::mutex mutex;
    std::condition_variable wake;
    Task task{};
    bool pending = false;
  };

  void loop(Worker& w, unsigned t) {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(w.mutex);
        w.wake.wait(lock, [&] { return w.pending; });
        w.pending = false;
        task = w.task;
      }
      currentBlock = task.block;
      threadIdx.x = t;
      blockIdx.x = task.blockIndex;
      blockDim.x = task.blockSize;
      gridDim.x = task.grid;
      (*task.body)();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--remaining_ == 0) finished_.notify_one();
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex mutex_;
  std::condition_variable finished_;
  unsigned remaining_ = 0;
};

cudaError_t emulateLaunch(unsigned grid, unsigned block, const std::function<void()>& body) {
  if (grid == 0 || block == 0 || block > 1024) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(launchMutex);
  // Never destroyed: the workers wait for blocks until the process exits.
  static Workers* workers = new Workers();
  for (unsigned b = 0; b < grid; ++b) {
    Block state(block);
    workers->runBlock(state, b, grid, block, body);
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

// Each allocation ends within 15 bytes of an inaccessible page (its start is 16-byte aligned), so
// a kernel's 16-byte access past the end faults here, as compute-sanitizer would flag it on a GPU.
cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t body = ((bytes > 0 ? bytes : 1) + 15) & ~(size_t)15;
  const size_t mapped = (body + page - 1) / page * page + page;
  void* mapping = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* guard = (char*)mapping + mapped - page;
  mprotect(guard, page, PROT_NONE);
  *p = guard - body;
  // Poison: a kernel that reads memory nobody wrote gets NaNs, not zeros that look right.
  memset(*p, 0xff, bytes);
  std::lock_guard<std::mutex> lock(allocationsMutex);
  allocations[(uintptr_t)*p] = Allocation{bytes, mapping, mapped};
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  Allocation allocation;
  {
    std::lock_guard<std::mutex> lock(allocationsMutex);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) return cudaErrorInvalidValue;
    allocation = it->second;
    allocations.erase(it);
  }
  munmap(allocation.mapping, allocation.mapped);
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
