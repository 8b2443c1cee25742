#include "actors/step_times.hpp"

#include <algorithm>
#include <vector>

namespace troupe::actors {

void step_times::add(int64_t ns) {
  if (ns <= 0) return;
  recent_.push_back(ns);
  while (recent_.size() > window) recent_.pop_front();
}

double step_times::median_ms() const {
  if (recent_.empty()) return -1;
  std::vector<int64_t> v(recent_.begin(), recent_.end());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(mid), v.end());
  double m = double(v[mid]);
  if (v.size() % 2 == 0) {
    // The mean of the two middle values: the lower one is the largest of the lower half.
    const int64_t lower = *std::max_element(v.begin(), v.begin() + std::ptrdiff_t(mid));
    m = (m + double(lower)) / 2;
  }
  return m / 1e6;
}

}  // namespace troupe::actors
