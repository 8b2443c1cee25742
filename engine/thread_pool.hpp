#pragma once
// The engine's own worker threads: created once, reused by every op (no per-op thread creation).
// parallel_for splits [0, n) into contiguous chunks, one per thread; the caller's thread works too.
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace troupe::engine {

class thread_pool {
 public:
  /// n_threads includes the calling thread: thread_pool(1) runs everything inline.
  explicit thread_pool(int n_threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return n_threads_; }

  /// Calls fn(begin, end, thread_index) on disjoint chunks covering [0, n); returns when all ran.
  /// Chunks are multiples of `grain` (except the last). Not reentrant.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

 private:
  void worker(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  int64_t n_ = 0;
  int64_t grain_ = 1;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

/// Runs fn over [0, n) on the pool, or inline when pool is null.
inline void parallel_for(thread_pool* pool, int64_t n,
                         const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1) {
  if (pool == nullptr || pool->size() <= 1 || n <= grain) {
    if (n > 0) fn(0, n, 0);
    return;
  }
  pool->parallel_for(n, fn, grain);
}

}  // namespace troupe::engine
