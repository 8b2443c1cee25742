#include "engine/thread_pool.hpp"

#include <algorithm>

namespace troupe::engine {

namespace {
// Chunk i of n_chunks over [0, n), aligned to grain.
std::pair<int64_t, int64_t> chunk(int64_t n, int64_t grain, int i, int n_chunks) {
  const int64_t units = (n + grain - 1) / grain;
  const int64_t per = units / n_chunks;
  const int64_t extra = units % n_chunks;
  const int64_t first_unit = i * per + std::min<int64_t>(i, extra);
  const int64_t n_units = per + (i < extra ? 1 : 0);
  const int64_t begin = std::min(n, first_unit * grain);
  const int64_t end = std::min(n, (first_unit + n_units) * grain);
  return {begin, end};
}
}  // namespace

thread_pool::thread_pool(int n_threads) : n_threads_(std::max(1, n_threads)) {
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

thread_pool::~thread_pool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void thread_pool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn,
                               int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  {
    std::lock_guard lock(mutex_);
    job_ = &fn;
    n_ = n;
    grain_ = grain;
    pending_ = n_threads_ - 1;
    ++generation_;
  }
  wake_.notify_all();
  const auto [b, e] = chunk(n, grain, 0, n_threads_);
  if (b < e) fn(b, e, 0);
  std::unique_lock lock(mutex_);
  done_.wait(lock, [this] { return pending_ == 0; });
  job_ = nullptr;
}

void thread_pool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t, int)>* job = nullptr;
    int64_t n = 0;
    int64_t grain = 1;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      n = n_;
      grain = grain_;
    }
    const auto [b, e] = chunk(n, grain, index, n_threads_);
    if (b < e) (*job)(b, e, index);
    {
      std::lock_guard lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }
}

}  // namespace troupe::engine
