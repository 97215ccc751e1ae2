// A fixed pool of worker threads for the CPU backend. Work is a range of rows handed out in
// chunks from an atomic counter; which thread runs a chunk never changes a result, because every
// row is computed independently and all cross-row sums happen afterwards in a fixed order.
#ifndef FUSED_DPO_THREAD_POOL_H
#define FUSED_DPO_THREAD_POOL_H

#include <stdint.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>

namespace fdpo {

class ThreadPool {
 public:
  static ThreadPool& instance();

  // Runs body(begin, end) over [0, n) in chunks of `grain`, on up to `threads` threads (the
  // caller is one of them). Calls from several threads at once take turns.
  void parallelFor(int64_t n, int64_t grain, int threads, const std::function<void(int64_t, int64_t)>& body);

  static int hardwareThreads();

 private:
  ThreadPool() = default;
  [[noreturn]] void workerLoop(int index);
  void runChunks();
  void ensureWorkers(int count);

  std::mutex callMutex_;  // one parallelFor at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  int workers_ = 0;  // detached threads, parked on wake_ between jobs
  uint64_t generation_ = 0;
  int participants_ = 0;  // workers taking part in the current job
  int running_ = 0;       // workers still inside the current job
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
};

// A call's thread count: threads > 0 as given, else every hardware thread.
// A call's thread count: all cores for threads <= 0, and never more than the cores (the pool keeps
// every thread it starts, and results are the same for any count, so more would only cost).
inline int resolveThreads(int32_t threads) {
  const int cores = ThreadPool::hardwareThreads();
  return threads > 0 && threads < cores ? threads : cores;
}

}  // namespace fdpo

#endif
