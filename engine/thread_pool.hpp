#pragma once
// The engine's own worker threads: created once, reused by every op (no per-op thread creation).
// parallel_for splits [0, n) into chunks that the threads claim one by one; the caller's thread
// works too and waits only for chunks that were claimed, never for a worker to wake up: a thread
// descheduled by another process on its core just takes fewer chunks. Between jobs the workers
// spin briefly (a forward pass issues a job every few microseconds), then sleep on a futex, so
// an idle pool costs no CPU.
#include <atomic>
#include <cstdint>
#include <functional>
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
  /// Chunks are multiples of `grain` (except the last); thread_index in [0, size()) names the
  /// thread running the chunk (for per-thread scratch). Which thread runs which chunk varies from
  /// call to call. Not reentrant; call from one thread at a time.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain = 1);

 private:
  void worker(int index);
  void run_chunks(uint32_t generation, int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  // The current job. Written before the release stores that publish a generation; a thread
  // that has claimed a chunk of that generation reads them (the job cannot end before its
  // chunk is done).
  const std::function<void(int64_t, int64_t, int)>* job_ = nullptr;
  std::vector<int64_t> starts_;  // chunk k is [starts_[k], starts_[k + 1])
  alignas(64) std::atomic<uint64_t> claim_{0};  // generation << 32 | chunk count << 16 | next chunk
  alignas(64) std::atomic<uint32_t> generation_{0};  // bumped once per job; idle workers wait on it
  alignas(64) std::atomic<uint32_t> done_{0};        // chunks of the current job finished
  std::atomic<bool> stop_{false};
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
