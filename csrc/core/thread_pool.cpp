#include "thread_pool.h"

namespace fdpo {

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool;
  return pool;
}

int ThreadPool::hardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : (int)n;
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::ensureWorkers(int count) {
  while ((int)workers_.size() < count) {
    const int index = (int)workers_.size();
    try {
      workers_.emplace_back([this, index] { workerLoop(index); });
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
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
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
  if (helpers > (int)workers_.size()) helpers = (int)workers_.size();
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
