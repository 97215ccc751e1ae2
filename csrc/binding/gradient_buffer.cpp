// New gradient arrays (grad: true) from a small pool of warm memory.
//
// A fresh ArrayBuffer of hundreds of MB costs a page fault per 4 KB on first write, and on a VM
// that is several times the loss call itself. So large gradients live in blocks this file maps
// (2 MB aligned, MADV_HUGEPAGE) and lends out as external ArrayBuffers. A block comes back only
// through the buffer's finalizer, which Node runs once V8 has freed the buffer's backing store
// (a transfer moves the backing store, so it cannot outlive the finalizer), or, when an
// environment ends, after detaching the buffer: nothing the caller can still reach is ever handed
// out again. Finalizers run on the event loop, so a loop that never yields gets no block back; at
// most kMaxLent blocks are out at once, and past that (or where external buffers are refused, or
// mapping fails) lib/grad-buffer.ts makes a plain array. (Not advised to use huge pages: on this
// project's VMs, fresh huge pages cost up to seconds when the host must compact memory first,
// several times the 4 KB faults, measured under load.)
#include "gradient_buffer.h"

#include <stdint.h>
#include <sys/mman.h>

#include <mutex>
#include <vector>

namespace {

// Below this a plain ArrayBuffer: the allocator's heap serves it, usually from warm memory.
constexpr size_t kPoolMinBytes = (size_t)4 << 20;
constexpr size_t kHugePage = (size_t)2 << 20;
// Lent blocks at once: two let a loop alternate between the array it holds and the one the GC
// freed; more would pile up unreturned in a loop that never yields.
constexpr int kMaxLent = 2;
// Returned blocks kept for reuse (of the size the pool last mapped); others are unmapped.
constexpr int kMaxFree = 2;

struct Block {
  void* base = nullptr;    // the mapping
  size_t mapped = 0;       // its length
  void* data = nullptr;    // 2 MB aligned, inside the mapping
  size_t capacity = 0;     // usable bytes from data
  size_t lentBytes = 0;    // the lent buffer's byteLength (reported to V8 as external memory)
};

void unmap(const Block& b) { munmap(b.base, b.mapped); }

size_t roundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

// A fresh block of at least `bytes`, or one with base == nullptr when the mapping fails.
Block mapBlock(size_t bytes) {
  Block b;
  b.capacity = roundUp(bytes, kHugePage);
  b.mapped = b.capacity + kHugePage;  // room to align
  void* p = mmap(nullptr, b.mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Block{};
  b.base = p;
  b.data = (void*)roundUp((uintptr_t)p, kHugePage);
  madvise(b.data, b.capacity, MADV_HUGEPAGE);
  return b;
}

struct Pool {
  std::mutex mutex;
  std::vector<Block> free;
  int lent = 0;
  size_t workingCapacity = 0;  // the capacity of the block mapped last

  // A block for `bytes`: a returned one that fits, or a fresh one; base == nullptr when kMaxLent
  // are out or the mapping fails.
  Block take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex);
    if (lent >= kMaxLent) return Block{};
    const size_t capacity = roundUp(bytes, kHugePage);
    for (size_t i = 0; i < free.size(); ++i) {
      if (free[i].capacity == capacity) {
        Block b = free[i];
        free.erase(free.begin() + (long)i);
        ++lent;
        return b;
      }
    }
    // Another size now: the kept blocks would only hold memory.
    for (const Block& b : free) unmap(b);
    free.clear();
    Block b = mapBlock(bytes);
    if (b.base) {
      ++lent;
      workingCapacity = b.capacity;
    }
    return b;
  }

  // A block that was not lent after all (the ArrayBuffer could not be made).
  void untake(const Block& b) {
    std::lock_guard<std::mutex> lock(mutex);
    --lent;
    unmap(b);
  }

  void giveBack(const Block& b) {
    std::lock_guard<std::mutex> lock(mutex);
    --lent;
    if ((int)free.size() < kMaxFree && b.capacity == workingCapacity) {
      free.push_back(b);
    } else {
      unmap(b);
    }
  }
};

// Never destroyed: finalizers of buffers in other environments may run during process exit.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

void returnBlock(napi_env env, void* /*data*/, void* hint) {
  Block* b = static_cast<Block*>(hint);
  int64_t ignored;
  napi_adjust_external_memory(env, -(int64_t)b->lentBytes, &ignored);
  pool().giveBack(*b);
  delete b;
}

napi_value pooledBuffer(napi_env env, size_t bytes) {
  Block b = pool().take(bytes);
  if (!b.base) return nullptr;
  b.lentBytes = bytes;
  Block* hint = new Block(b);
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, b.data, bytes, returnBlock, hint, &buffer) != napi_ok) {
    // (V8's sandbox refuses external buffers; the finalizer was not registered.)
    delete hint;
    pool().untake(b);
    return nullptr;
  }
  int64_t ignored;
  napi_adjust_external_memory(env, (int64_t)bytes, &ignored);
  return buffer;
}

}  // namespace

// (bytes): a pooled ArrayBuffer of that length, or null where the pool has none to give (small
// sizes, kMaxLent out, no external buffers, no memory): lib/grad-buffer.ts then makes a plain one.
Napi::Value GradientBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "fused-dpo: expected a byte count");
  const double d = info[0].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) {
    throw Napi::RangeError::New(env, "fused-dpo: byte count is out of range");
  }
  const size_t bytes = (size_t)d;
  napi_value buffer = bytes >= kPoolMinBytes ? pooledBuffer(env, bytes) : nullptr;
  if (!buffer) return env.Null();
  return Napi::Value(env, buffer);
}
