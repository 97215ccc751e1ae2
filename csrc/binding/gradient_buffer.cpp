// New gradient arrays (grad: true) from a small pool of warm memory.
//
// A fresh ArrayBuffer of hundreds of MB costs a page fault per 4 KB on first write, on this
// project's VMs 2-10 times the loss call itself. So large gradients live in blocks this file maps
// (2 MB aligned, MADV_HUGEPAGE: a fault per 2 MB, about a quarter of the 4 KB faults' time for the
// same bytes, measured) and lends out as external ArrayBuffers, and a block is lent again once
// the buffer that held it is gone. Two signals say that:
//  - the buffer's finalizer, which Node runs on the event loop once V8 has freed the backing store
//    (or, when an environment ends, after detaching the buffer). Always safe, but a loop that never
//    yields never sees it.
//  - a weak reference to the buffer, which V8 clears in the garbage collection that finds it
//    unreachable, synchronously, in the middle of a loop that never yields. The memory can outlive
//    the JS object only if the buffer was moved (a transfer: postMessage, structuredClone,
//    ArrayBuffer.prototype.transfer), which detaches the original first. So this signal is used
//    only where the runtime refuses to move an external buffer (probed once: transferSafe), and a
//    lent buffer seen detached is left to its finalizer. A lending that finds no returned block
//    asks V8 for a full collection (collectNow) before it maps a fresh one: the collection returns
//    the blocks the caller dropped, and costs far less than a fresh block's first touch.
// At most kMaxLent blocks are out at once; past that (or where external buffers are refused, or
// mapping fails) lib/grad-buffer.ts makes a plain array.
#include "gradient_buffer.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include <atomic>
#include <mutex>
#include <vector>

namespace {

// Below this a plain ArrayBuffer: the allocator's heap serves it, usually from warm memory.
constexpr size_t kPoolMinBytes = (size_t)4 << 20;
constexpr size_t kHugePage = (size_t)2 << 20;
// Lent blocks at once: a loop holds the array of the call before while the next call runs (two),
// plus one whose buffer the collector has not reached yet; more would pile up in a loop that
// keeps its gradients.
constexpr int kMaxLent = 3;
// Gradients up to this size rotate through three blocks, larger ones through two. A loop's frame
// keeps its previous result in a register until the next call returns (V8 scans an interpreted
// frame's registers whole, dead ones too), so a collection at a lending never returns the block
// of the call before: with two blocks every call pays a collection (3-4 ms on this project's VMs,
// 15% of a 25 ms call), with three every other call. Above this size a call takes long enough
// that a collection is a few percent, and a third block would cost more memory than it saves time.
constexpr size_t kThreeBlockMaxBytes = (size_t)512 << 20;
// Returned blocks kept for reuse (of the size the pool last mapped); others are unmapped.
constexpr int kMaxFree = 3;

struct Block {
  void* base = nullptr;  // the mapping
  size_t mapped = 0;     // its length
  void* data = nullptr;  // 2 MB aligned, inside the mapping
  size_t capacity = 0;   // usable bytes from data
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

// One lending of a block: the finalizer's hint, alive until the finalizer has run.
struct Lending {
  Block block;
  napi_env env = nullptr;    // where the buffer and `weak` live
  napi_ref weak = nullptr;   // cleared by the collection that frees the buffer
  bool returned = false;     // the block is back in the pool (by either signal)
  bool finalizerOnly = false;  // seen detached: only the finalizer may return it
};

struct Pool {
  std::mutex mutex;
  std::vector<Block> free;
  std::vector<Lending*> lent;  // not yet returned
  size_t workingCapacity = 0;  // the capacity of the block mapped last
  int collectionsRest = 0;     // lendings left that do not ask for a collection (pooledBuffer)

  void keepOrUnmap(const Block& b) {
    if ((int)free.size() < kMaxFree && b.capacity == workingCapacity) {
      free.push_back(b);
    } else {
      unmap(b);
    }
  }

  void markReturned(Lending* l) {
    l->returned = true;
    collectionsRest = 0;  // blocks come back: asking may pay again
    for (size_t i = 0; i < lent.size(); ++i) {
      if (lent[i] == l) {
        lent.erase(lent.begin() + (long)i);
        break;
      }
    }
    keepOrUnmap(l->block);
  }

  // This environment's lent blocks whose buffers the collector has freed come back (how many is
  // returned); a buffer still alive but detached (moved, or detached by native code) is left to
  // its finalizer.
  int reclaimCollected(napi_env env) {
    // A handle scope of its own: the handles the scan takes of live buffers would otherwise keep
    // them alive through a collection later in the same call.
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) return 0;
    int blocks = 0;
    for (size_t i = lent.size(); i-- > 0;) {
      Lending* l = lent[i];
      if (l->env != env || l->finalizerOnly) continue;
      napi_value buffer = nullptr;
      if (napi_get_reference_value(env, l->weak, &buffer) != napi_ok) {
        l->finalizerOnly = true;
        continue;
      }
      bool detached = false;
      if (buffer == nullptr) {
        ++blocks;
        markReturned(l);
      } else if (napi_is_detached_arraybuffer(env, buffer, &detached) != napi_ok || detached) {
        l->finalizerOnly = true;
      }
    }
    napi_close_handle_scope(env, scope);
    return blocks;
  }

  // The returned block that fits `bytes`, or free.size() when none does.
  size_t fitting(size_t bytes) const {
    size_t i = 0;
    while (i < free.size() && free[i].capacity != roundUp(bytes, kHugePage)) ++i;
    return i;
  }
  bool holds(size_t bytes) const { return fitting(bytes) < free.size(); }

  // A block for `bytes`: a returned one that fits, or a fresh one; base == nullptr when kMaxLent
  // are out or the mapping fails.
  Block take(size_t bytes) {
    if ((int)lent.size() >= kMaxLent) return Block{};
    const size_t i = fitting(bytes);
    if (i < free.size()) {
      Block b = free[i];
      free.erase(free.begin() + (long)i);
      return b;
    }
    // Another size now: the kept blocks would only hold memory.
    for (const Block& b : free) unmap(b);
    free.clear();
    Block b = mapBlock(bytes);
    if (b.base) workingCapacity = b.capacity;
    return b;
  }
};

// Never destroyed: finalizers of buffers in other environments may run during process exit.
Pool& pool() {
  static Pool* p = new Pool;
  return *p;
}

void finalizeLending(napi_env env, void* /*data*/, void* hint) {
  Lending* l = static_cast<Lending*>(hint);
  {
    std::lock_guard<std::mutex> lock(pool().mutex);
    if (!l->returned) pool().markReturned(l);
  }
  if (l->weak) napi_delete_reference(env, l->weak);
  delete l;
}

void freeProbe(napi_env, void* data, void*) { free(data); }

// (What the probe's JS calls throw, a replaced global's getter included, is dropped here.)
void clearPending(napi_env env) {
  bool pending = false;
  napi_value error;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &error);
}

// Whether this runtime refuses to move an external ArrayBuffer: one is offered to
// ArrayBuffer.prototype.transfer and to structuredClone's transfer list, and must come back still
// attached (Node copies such buffers instead of moving them, or throws).
bool probeTransferSafe(napi_env env) {
  void* data = malloc(64);
  if (!data) return false;
  napi_value buffer, global, ctor, proto, transfer, clone;
  if (napi_create_external_arraybuffer(env, data, 64, freeProbe, nullptr, &buffer) != napi_ok) {
    free(data);
    return false;
  }
  bool detached = false;
  napi_valuetype type;
  bool ok = napi_get_global(env, &global) == napi_ok;
  // ArrayBuffer.prototype.transfer, where it exists.
  ok = ok && napi_get_named_property(env, global, "ArrayBuffer", &ctor) == napi_ok &&
       napi_get_named_property(env, ctor, "prototype", &proto) == napi_ok &&
       napi_get_named_property(env, proto, "transfer", &transfer) == napi_ok &&
       napi_typeof(env, transfer, &type) == napi_ok;
  if (ok && type == napi_function) {
    napi_value result;
    const bool moved = napi_call_function(env, buffer, transfer, 0, nullptr, &result) == napi_ok;
    clearPending(env);
    if (moved) return false;
  }
  // structuredClone(buffer, { transfer: [buffer] }) (postMessage transfers the same way).
  ok = ok && napi_get_named_property(env, global, "structuredClone", &clone) == napi_ok &&
       napi_typeof(env, clone, &type) == napi_ok;
  if (ok && type == napi_function) {
    napi_value options, list, args[2], result;
    ok = napi_create_object(env, &options) == napi_ok && napi_create_array_with_length(env, 1, &list) == napi_ok &&
         napi_set_element(env, list, 0, buffer) == napi_ok &&
         napi_set_named_property(env, options, "transfer", list) == napi_ok;
    if (ok) {
      args[0] = buffer;
      args[1] = options;
      napi_call_function(env, global, clone, 2, args, &result);
      clearPending(env);
    }
  }
  return ok && napi_is_detached_arraybuffer(env, buffer, &detached) == napi_ok && !detached;
}

// Probed once per process: every environment runs the same engine.
bool transferSafe(napi_env env) {
  static std::atomic<int> verdict{-1};  // (workers' JS threads may probe at once: same answer)
  if (verdict.load() < 0) {
    const bool safe = probeTransferSafe(env);
    clearPending(env);
    verdict.store(safe ? 1 : 0);
  }
  return verdict.load() == 1;
}

// A full collection now, where V8 makes one for external memory past its hard limit (half the
// old generation's size limit, so past the heap's size limit surely): reported for a moment and
// withdrawn. In a loop that never yields, V8's own marking (driven by allocation and by event-loop
// tasks) can take seconds to reach the released gradients, old objects by then.
void collectNow(napi_env env, int64_t heapLimit) {
  int64_t ignored;
  if (napi_adjust_external_memory(env, heapLimit, &ignored) == napi_ok) napi_adjust_external_memory(env, -heapLimit, &ignored);
}

// After a collection that brought nothing back, the next kCollectionsRest lendings do not ask
// again (until a block comes back some other way): a loop that keeps its gradients must not pay a
// collection per call.
constexpr int kCollectionsRest = 8;

// Lendings out before a lending that finds no returned block asks for a collection: the blocks of
// the rotation (kThreeBlockMaxBytes) but the one the call before holds.
size_t lentBeforeAsking(size_t bytes) { return roundUp(bytes, kHugePage) <= kThreeBlockMaxBytes ? 3 : 2; }

// heapLimit > 0: when no returned block fits and the rotation's blocks are out (lentBeforeAsking;
// one of them the array of the call before, which the caller still holds), a collection first
// returns those the caller dropped. (Asked after the lending instead, for the next one, it came
// too late whenever the array of the call before was the one to reclaim: a fresh 1 GB block,
// 1.6 s, every few calls.)
napi_value pooledBuffer(napi_env env, size_t bytes, int64_t heapLimit) {
  const bool weakReuse = transferSafe(env);
  Pool& p = pool();
  bool ask = false;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (weakReuse) p.reclaimCollected(env);
    if (weakReuse && heapLimit > 0 && !p.holds(bytes) && p.lent.size() >= lentBeforeAsking(bytes)) {
      ask = p.collectionsRest == 0;
      if (!ask) --p.collectionsRest;
    }
  }
  if (ask) collectNow(env, heapLimit);
  Block b;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (ask && p.reclaimCollected(env) == 0) p.collectionsRest = kCollectionsRest;
    b = p.take(bytes);
  }
  if (!b.base) return nullptr;
  Lending* l = new Lending;
  l->block = b;
  l->env = env;
  l->finalizerOnly = !weakReuse;
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, b.data, bytes, finalizeLending, l, &buffer) != napi_ok) {
    // (V8's sandbox refuses external buffers; the finalizer was not registered.)
    delete l;
    std::lock_guard<std::mutex> lock(p.mutex);
    p.keepOrUnmap(b);
    return nullptr;
  }
  // The weak reference before the lending is listed, so a scan never meets it half made. Without
  // one, only the finalizer returns the block.
  if (weakReuse && napi_create_reference(env, buffer, 0, &l->weak) != napi_ok) {
    l->weak = nullptr;
    l->finalizerOnly = true;
  }
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.lent.push_back(l);
  }
  // (Not reported with napi_adjust_external_memory: V8 counts an external buffer's bytes itself,
  // and its own pressure collections are what return most blocks.)
  return buffer;
}

}  // namespace

// (bytes, heapLimit?): a pooled ArrayBuffer of that length, or null where the pool has none to give
// (small sizes, kMaxLent out, no external buffers, no memory): lib/grad-buffer.ts then makes a
// plain one. heapLimit: the JS heap's size limit (v8.getHeapStatistics().heap_size_limit), which
// lets a lending at the cap ask for a collection (collectNow); absent or 0, it does not.
Napi::Value GradientBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto count = [&](size_t at, double max) -> double {
    if (!info[at].IsNumber()) throw Napi::TypeError::New(env, "fused-dpo: expected a byte count");
    const double d = info[at].As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= max) || d != (double)(int64_t)d) throw Napi::RangeError::New(env, "fused-dpo: byte count is out of range");
    return d;
  };
  if (info.Length() < 1) throw Napi::TypeError::New(env, "fused-dpo: expected a byte count");
  const size_t bytes = (size_t)count(0, 9007199254740991.0);
  // (V8 refuses a change of 2^60 or more in external memory: far past any heap.)
  const int64_t heapLimit = info.Length() >= 2 && !info[1].IsUndefined() ? (int64_t)count(1, 1125899906842624.0) : 0;
  napi_value buffer = bytes >= kPoolMinBytes ? pooledBuffer(env, bytes, heapLimit) : nullptr;
  if (!buffer) return env.Null();
  return Napi::Value(env, buffer);
}
