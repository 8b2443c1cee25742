#pragma once
// What the ROUTER measures per replica on the tokens it relays, and the rules it acts on, as plain
// classes (no actor, no clock: time is passed in) so tests drive them directly:
// - replica_metrics: tokens per second over the last 10 s, TTFT and inter-token latency
//   percentiles over the last minute;
// - replica_picker: which replica gets a new request (weighted routing, drain flags);
// - rollback_reason: when a replica's weight goes to 0 by itself (automatic rollback).
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "actors/messages.hpp"

namespace troupe::actors {

class replica_metrics {
 public:
  static constexpr int64_t throughput_window_ns = 10'000'000'000;  // tok/s over the last 10 s
  static constexpr int64_t latency_window_ns = 60'000'000'000;     // TTFT / ITL over the last minute
  static constexpr size_t max_samples = 4096;                      // per latency series

  struct percentiles {
    double p50_ms = 0;
    double p99_ms = 0;
    int32_t n = 0;
  };

  void add_tokens(int64_t now_ns, int32_t n);
  void add_ttft(int64_t now_ns, double ms);
  void add_itl(int64_t now_ns, double ms);

  /// Tokens per second over the last 10 s (over the time since the first token, when shorter).
  double tok_per_s(int64_t now_ns);
  percentiles ttft(int64_t now_ns);
  percentiles itl(int64_t now_ns);
  /// Forget the latency samples (after a rollback: the replica starts afresh when it comes back).
  void reset_latency();

 private:
  void prune(int64_t now_ns);
  static percentiles of(const std::deque<std::pair<int64_t, double>>& samples);

  std::deque<std::pair<int64_t, int32_t>> tokens_;  // (time, tokens) per relayed batch
  std::deque<std::pair<int64_t, double>> ttft_;
  std::deque<std::pair<int64_t, double>> itl_;
  int64_t first_token_ns_ = 0;
};

/// What the picker knows of a replica.
struct pick_candidate {
  double weight = 1.0;
  int32_t load = 0;        // requests in flight
  bool takes_new = true;   // not drained, not removed
};

/// Chooses the replica for a new request among those that take new ones and have weight > 0:
/// the least loaded one when their weights are equal (the plain load balancing), else by smooth
/// weighted round robin (nginx's), so a canary at weight 0.05 next to a replica at 1 gets about
/// 1 request in 21 whatever the load.
class replica_picker {
 public:
  /// The chosen index, or nullopt when no replica takes requests. `exclude` (if set) is skipped:
  /// a request retried after a failure goes elsewhere.
  std::optional<size_t> pick(const std::vector<pick_candidate>& replicas,
                             std::optional<size_t> exclude = std::nullopt);

 private:
  std::vector<double> current_;  // smooth WRR state
};

/// Why a replica should be rolled back now under `policy` (empty: it should not).
std::string rollback_reason(const rollback_policy& policy, int32_t consecutive_failures,
                            const replica_metrics::percentiles& ttft);

}  // namespace troupe::actors
