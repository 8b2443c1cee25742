#include "transport/token_bucket.hpp"

#include <algorithm>
#include <cmath>

namespace troupe::transport {

token_bucket::token_bucket(double rate_per_second, double capacity, clock::time_point now)
    : rate_per_second_(rate_per_second), capacity_(capacity), level_(capacity), updated_(now) {}

double token_bucket::level(clock::time_point now) const {
  if (unlimited()) return capacity_;
  const double elapsed_s = std::max(0.0, std::chrono::duration<double>(now - updated_).count());
  return std::min(capacity_, level_ + elapsed_s * rate_per_second_);
}

std::chrono::milliseconds token_bucket::wait_for(double n, clock::time_point now) const {
  if (unlimited()) return std::chrono::milliseconds(0);
  const double missing = std::min(n, capacity_) - level(now);
  if (missing <= 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(int64_t(std::ceil(missing / rate_per_second_ * 1000.0)));
}

std::chrono::milliseconds token_bucket::try_take(double n, clock::time_point now) {
  if (unlimited()) return std::chrono::milliseconds(0);
  refill(now);
  if (level_ >= std::min(n, capacity_)) {
    level_ -= n;
    return std::chrono::milliseconds(0);
  }
  return wait_for(n, now);
}

void token_bucket::charge(double n, clock::time_point now) {
  if (unlimited()) return;
  refill(now);
  level_ -= n;
}

void token_bucket::refill(clock::time_point now) {
  level_ = level(now);
  updated_ = std::max(updated_, now);
}

}  // namespace troupe::transport
