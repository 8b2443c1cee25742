#include "engine/thread_pool.hpp"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TROUPE_CPU_RELAX() _mm_pause()
#else
#define TROUPE_CPU_RELAX() ((void)0)
#endif

namespace troupe::engine {

namespace {

// How long a thread waits actively for a value before it sleeps in the kernel. Ops of one
// forward pass follow each other within microseconds; a decode step's sampling takes a few
// hundred. After the first few microseconds the waiting thread yields between checks, so a
// thread it waits for that shares its core (more threads than cores, other processes) can run.
constexpr auto spin_for = std::chrono::microseconds(20);
constexpr auto yield_for = std::chrono::microseconds(300);

// Chunks per thread: enough that a thread preempted by another process delays little.
constexpr int64_t chunks_per_thread = 4;

// Waits actively until pred() or the time is up; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      TROUPE_CPU_RELAX();
    }
    const auto waited = std::chrono::steady_clock::now() - start;
    if (waited >= yield_for) return pred();
    if (waited >= spin_for) std::this_thread::yield();
  }
}

}  // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

thread_pool::~thread_pool() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::run_chunks(int index) {
  for (;;) {
    const int64_t begin = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (begin >= n_) return;
    (*job_)(begin, std::min(n_, begin + chunk_), index);
  }
}

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  const int64_t n_chunks = std::min<int64_t>(units, int64_t(n_threads_) * chunks_per_thread);
  if (n_threads_ == 1 || n_chunks <= 1) {
    fn(0, n, 0);
    return;
  }
  job_ = &fn;
  n_ = n;
  chunk_ = (units + n_chunks - 1) / n_chunks * grain;
  next_.store(0, std::memory_order_relaxed);
  busy_.store(n_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  run_chunks(0);
  // Wait for the workers: spin first, then sleep until the last one wakes us.
  if (!spin_until([this] { return busy_.load(std::memory_order_acquire) == 0; })) {
    for (int b = busy_.load(std::memory_order_acquire); b != 0; b = busy_.load(std::memory_order_acquire)) {
      busy_.wait(b, std::memory_order_acquire);
    }
  }
  job_ = nullptr;
}

void thread_pool::worker(int index) {
  uint32_t seen = 0;  // the value before the first job, whenever this thread gets to run
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      generation_.wait(seen, std::memory_order_acquire);
      continue;  // re-check (wait may return spuriously)
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_relaxed)) return;
    run_chunks(index);
    if (busy_.fetch_sub(1, std::memory_order_acq_rel) == 1) busy_.notify_one();
  }
}

}  // namespace troupe::engine
