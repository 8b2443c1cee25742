#pragma once
// How long a REPLICA's step may stay in flight before the stage holding it counts as hung. The
// threshold follows what the replica measured, scaled to the step's work: a prefill of 1024
// tokens takes far longer than a decode step of 16, and must not look hung because the recent
// steps were decodes (on a loaded 2-core machine a 110M-shape prefill step took over a second,
// past a decode-based threshold, and its replays failed the same way until the restart budget
// was spent).
#include <algorithm>
#include <cstdint>
#include <deque>
#include <limits>

namespace troupe::actors {

class step_timing {
 public:
  /// A step that ran `tokens` tokens (>= 1) took `step_ns` (per decode step, for multi-step
  /// requests). The last 32 are kept.
  void record(int64_t step_ns, int64_t tokens) {
    tokens = std::max<int64_t>(1, tokens);
    recent_.push_back({step_ns, step_ns / tokens});
    if (recent_.size() > 32) recent_.pop_front();
  }
  bool measured() const { return !recent_.empty(); }

  /// The threshold for a step of `tokens` tokens: max(floor, factor x max(the slowest recent
  /// step, the slowest recent time per token x tokens)). The per-token time comes from the
  /// slowest steps per token (small decode batches, whose fixed cost weighs most), so it over-
  /// estimates a big prefill: loose for prefills, never a false restart. Before anything was
  /// measured there is no threshold (max): a chain's first steps are prefills of unknown cost;
  /// a dead stage is still noticed by its down message or its node's heartbeats.
  int64_t threshold_ns(int64_t tokens, int64_t floor_ns, double factor) const {
    if (recent_.empty()) return std::numeric_limits<int64_t>::max();
    int64_t slowest = 0, per_token = 0;
    for (const auto& s : recent_) {
      slowest = std::max(slowest, s.step_ns);
      per_token = std::max(per_token, s.ns_per_token);
    }
    const double expected = std::max(double(slowest), double(per_token) * double(std::max<int64_t>(1, tokens)));
    const double limit = std::max(double(floor_ns), factor * expected);
    return limit >= double(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max() : int64_t(limit);
  }

 private:
  struct sample {
    int64_t step_ns;
    int64_t ns_per_token;
  };
  std::deque<sample> recent_;
};

/// The tokens a step runs through the model: every sequence's new tokens, and for a sequence the
/// stages see for the first time (a replay) its whole history.
template <class StepRequest>
int64_t step_tokens(const StepRequest& req) {
  int64_t n = 0;
  for (const auto& w : req.work) n += int64_t(w.tokens.size()) + (w.is_new ? int64_t(w.history.size()) : 0);
  return std::max<int64_t>(1, n);
}

}  // namespace troupe::actors
