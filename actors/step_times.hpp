#pragma once
// What a stage's steps took, as status shows it: the median of the last 32 steps' compute time
// (per forward pass). A plain class: the REPLICA feeds it the times its stages report with each
// step (step_result::stage_ns), tests drive it directly.
#include <cstddef>
#include <cstdint>
#include <deque>

namespace troupe::actors {

class step_times {
 public:
  static constexpr size_t window = 32;

  /// One step's time (ns); a time <= 0 (a stage that did not measure) is ignored.
  void add(int64_t ns);
  /// The median of the last `window` steps in ms; -1 before the first.
  double median_ms() const;
  size_t size() const { return recent_.size(); }

 private:
  std::deque<int64_t> recent_;
};

}  // namespace troupe::actors
