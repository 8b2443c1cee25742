#include "actors/replica_metrics.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace troupe::actors {

void replica_metrics::add_tokens(int64_t now_ns, int32_t n) {
  if (n <= 0) return;
  if (first_token_ns_ == 0) first_token_ns_ = now_ns;
  if (!tokens_.empty() && tokens_.back().first == now_ns) {
    tokens_.back().second += n;
  } else {
    tokens_.emplace_back(now_ns, n);
  }
  prune(now_ns);
}

void replica_metrics::add_ttft(int64_t now_ns, double ms) {
  ttft_.emplace_back(now_ns, ms);
  prune(now_ns);
}

void replica_metrics::add_itl(int64_t now_ns, double ms) {
  itl_.emplace_back(now_ns, ms);
  prune(now_ns);
}

void replica_metrics::prune(int64_t now_ns) {
  while (!tokens_.empty() && tokens_.front().first < now_ns - throughput_window_ns) tokens_.pop_front();
  for (auto* q : {&ttft_, &itl_}) {
    while (!q->empty() && (q->front().first < now_ns - latency_window_ns || q->size() > max_samples)) q->pop_front();
  }
}

double replica_metrics::tok_per_s(int64_t now_ns) {
  prune(now_ns);
  int64_t n = 0;
  for (const auto& [t, k] : tokens_) n += k;
  if (n == 0) return 0;
  // Over the window, or over the time since the first token when the replica is younger.
  const int64_t span = std::min(throughput_window_ns, std::max<int64_t>(now_ns - first_token_ns_, 1'000'000'000));
  return double(n) * 1e9 / double(span);
}

replica_metrics::percentiles replica_metrics::of(const std::deque<std::pair<int64_t, double>>& samples) {
  percentiles p;
  if (samples.empty()) return p;
  std::vector<double> v;
  v.reserve(samples.size());
  for (const auto& s : samples) v.push_back(s.second);
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, size_t(std::ceil(q * double(v.size()))) - 1)]; };
  p.p50_ms = at(0.50);
  p.p99_ms = at(0.99);
  p.n = int32_t(v.size());
  return p;
}

replica_metrics::percentiles replica_metrics::ttft(int64_t now_ns) {
  prune(now_ns);
  return of(ttft_);
}

replica_metrics::percentiles replica_metrics::itl(int64_t now_ns) {
  prune(now_ns);
  return of(itl_);
}

void replica_metrics::reset_latency() {
  ttft_.clear();
  itl_.clear();
}

std::optional<size_t> replica_picker::pick(const std::vector<pick_candidate>& replicas,
                                           std::optional<size_t> exclude) {
  current_.resize(replicas.size(), 0.0);
  std::vector<size_t> ok;
  for (size_t i = 0; i < replicas.size(); ++i) {
    if (replicas[i].takes_new && replicas[i].weight > 0 && (!exclude || *exclude != i)) ok.push_back(i);
  }
  if (ok.empty()) return std::nullopt;
  const bool equal = std::all_of(ok.begin(), ok.end(), [&](size_t i) { return replicas[i].weight == replicas[ok[0]].weight; });
  if (equal) {
    size_t best = ok[0];
    for (size_t i : ok) {
      if (replicas[i].load < replicas[best].load) best = i;
    }
    return best;
  }
  double total = 0;
  size_t best = ok[0];
  for (size_t i : ok) {
    current_[i] += replicas[i].weight;
    total += replicas[i].weight;
    if (current_[i] > current_[best]) best = i;
  }
  current_[best] -= total;
  return best;
}

std::string rollback_reason(const rollback_policy& policy, int32_t consecutive_failures,
                            const replica_metrics::percentiles& ttft) {
  if (policy.max_consecutive_failures > 0 && consecutive_failures >= policy.max_consecutive_failures) {
    return fmt::format("{} consecutive failed requests (threshold {})", consecutive_failures,
                       policy.max_consecutive_failures);
  }
  if (policy.ttft_p99_ms > 0 && ttft.n >= std::max(1, policy.min_samples) && ttft.p99_ms > policy.ttft_p99_ms) {
    return fmt::format("TTFT p99 {:.1f} ms over the threshold of {:.1f} ms ({} samples)", ttft.p99_ms,
                       policy.ttft_p99_ms, ttft.n);
  }
  return {};
}

}  // namespace troupe::actors
