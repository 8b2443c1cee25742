#pragma once
// A token bucket: holds up to `capacity` tokens and refills at `rate_per_second`, continuously.
// The per-key rate limits of the API keys (requests per minute, tokens per minute) are two of
// them. A plain value type: the caller passes the time (tests inject it) and does the locking.
#include <chrono>

namespace troupe::transport {

class token_bucket {
 public:
  using clock = std::chrono::steady_clock;

  /// Starts full. rate_per_second 0 or capacity 0: unlimited (every take succeeds).
  token_bucket(double rate_per_second, double capacity, clock::time_point now);

  bool unlimited() const { return rate_per_second_ <= 0 || capacity_ <= 0; }
  /// Tokens held at `now` (negative while in debt after charge()).
  double level(clock::time_point now) const;
  /// How long until the bucket holds at least `n` (zero: now; never longer than refilling the
  /// whole capacity plus any debt). n above the capacity waits for a full bucket.
  std::chrono::milliseconds wait_for(double n, clock::time_point now) const;
  /// Takes `n` if they are there now: zero. Otherwise takes nothing and returns wait_for(n).
  std::chrono::milliseconds try_take(double n, clock::time_point now);
  /// Takes `n` whether or not they are there (the bucket may go into debt): for costs known
  /// only afterwards, such as the tokens a request generated.
  void charge(double n, clock::time_point now);

 private:
  void refill(clock::time_point now);

  double rate_per_second_;
  double capacity_;
  double level_;
  clock::time_point updated_;
};

}  // namespace troupe::transport
