#include "thread_pool.h"

#include <thread>

namespace fdpo {

ThreadPool& ThreadPool::instance() {
  // Never destroyed: at process exit a libuv thread may still be inside parallelFor, and a pool
  // torn down under it would be worse than idle workers the OS reclaims.
  static ThreadPool* pool = new ThreadPool();
  return *pool;
}

int ThreadPool::hardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : (int)n;
}

void ThreadPool::ensureWorkers(int count) {
  while (workers_ < count) {
    const int index = workers_;
    try {
      std::thread([this, index] { workerLoop(index); }).detach();
      ++workers_;
    } catch (...) {
      return;  // the system refused a thread: run with the ones we have
    }
  }
}

void ThreadPool::runChunks() {
  for (;;) {
    const int64_t begin = next_.fetch_add(grain_, std::memory_order_relaxed);
    if (begin >= n_) return;
    const int64_t end = begin + grain_ < n_ ? begin + grain_ : n_;
    (*body_)(begin, end);
  }
}

void ThreadPool::workerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= participants_) continue;
    }
    runChunks();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (--running_ == 0) done_.notify_one();
    }
  }
}

void ThreadPool::parallelFor(int64_t n, int64_t grain, int threads,
                             const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t chunks = (n + grain - 1) / grain;
  int helpers = threads - 1;
  if (helpers > chunks - 1) helpers = (int)(chunks - 1);
  if (helpers <= 0) {
    body(0, n);
    return;
  }
  std::lock_guard<std::mutex> call(callMutex_);
  ensureWorkers(helpers);
  if (helpers > workers_) helpers = workers_;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    body_ = &body;
    n_ = n;
    grain_ = grain;
    next_.store(0, std::memory_order_relaxed);
    participants_ = helpers;
    running_ = helpers;
    ++generation_;
  }
  wake_.notify_all();
  runChunks();
  // Wait for the helpers: their rows must be complete before the caller reads or returns them.
  std::unique_lock<std::mutex> lock(mutex_);
  done_.wait(lock, [&] { return running_ == 0; });
  body_ = nullptr;
}

}  // namespace fdpo
