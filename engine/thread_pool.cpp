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

// How long a thread spins on a value before it sleeps in the kernel. Ops of one forward pass
// follow each other within microseconds; a decode step's sampling takes a few hundred, and in
// `troupe serve` the gap between steps (reply, next plan, tokens to the client) is a few hundred
// more: 1 ms covers it, and the wake-up it saves per step measured ~10 % on a 1 ms step. (No
// sched_yield while spinning: where another process shares the core, a yield can hand it the
// core for a whole scheduler tick.)
constexpr auto spin_for = std::chrono::microseconds(1000);

// Spins until pred() or the spin time is up; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + spin_for;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (pred()) return true;
      TROUPE_CPU_RELAX();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
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

void thread_pool::run_chunks(uint32_t generation, int index) {
  for (;;) {
    // Claim the next chunk of this generation's job, if it has one left. The claim word holds
    // the generation, the job's chunk count and the next index together, so a thread still
    // looping on an old job can never claim against the next job's count.
    uint64_t v = claim_.load(std::memory_order_acquire);
    uint32_t n_chunks = 0;
    uint32_t chunk = 0;
    do {
      n_chunks = uint32_t(v >> 16) & 0xffff;
      chunk = uint32_t(v) & 0xffff;
      if (uint32_t(v >> 32) != generation || chunk >= n_chunks) return;
    } while (!claim_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire));
    // The job cannot end before this chunk is done: its fields are still this generation's.
    (*job_)(starts_[chunk], starts_[chunk + 1], index);
    if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_chunks) done_.notify_one();
  }
}

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn, int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t units = (n + grain - 1) / grain;
  if (n_threads_ == 1 || units <= 1) {
    fn(0, n, 0);
    return;
  }
  const uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  job_ = &fn;
  // Guided chunks: a round of one chunk per thread takes half of what is left, the next half of
  // the rest, ..., down to one grain. Long chunks first (a thread streams through long runs of
  // rows), short ones last (threads finish together; a preempted thread delays little).
  starts_.clear();
  for (int64_t u = 0; u < units;) {
    const int64_t size = std::max<int64_t>(1, (units - u) / (2 * n_threads_));
    for (int i = 0; i < n_threads_ && u < units; ++i, u = std::min(units, u + size)) starts_.push_back(u * grain);
  }
  const uint32_t chunks = uint32_t(starts_.size());  // ~ threads x log2(units), far below 2^16
  starts_.push_back(n);
  done_.store(0, std::memory_order_relaxed);
  claim_.store(uint64_t(generation) << 32 | uint64_t(chunks) << 16, std::memory_order_release);
  generation_.store(generation, std::memory_order_release);
  generation_.notify_all();
  run_chunks(generation, 0);
  // Wait for chunks other threads claimed: spin first, then sleep until the last one wakes us.
  if (!spin_until([&] { return done_.load(std::memory_order_acquire) == chunks; })) {
    for (uint32_t d = done_.load(std::memory_order_acquire); d != chunks; d = done_.load(std::memory_order_acquire)) {
      done_.wait(d, std::memory_order_acquire);
    }
  }
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
    run_chunks(seen, index);
  }
}

}  // namespace troupe::engine
