#pragma once
// Throttles API key guessing: failed hellos are counted per peer address; a peer with
// max_failures failures inside its window is locked out (its hellos are refused without looking
// at the key) until that window ends. Failures are not logged one by one: summary() gives one
// line per period for all peers together. Thread-safe; a plain class (no sockets, no timers).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace troupe::transport {

class auth_throttle {
 public:
  using clock = std::chrono::steady_clock;

  /// max_failures 0: never lock out (failures are still counted for the summary).
  auth_throttle(size_t max_failures, std::chrono::milliseconds window);

  /// How much longer `peer` is locked out; zero when its hello may be checked.
  /// A refusal while locked out is counted for the summary.
  std::chrono::milliseconds check(const std::string& peer, clock::time_point now = clock::now());
  /// Records a failed attempt (wrong or missing key) from `peer`.
  void failed(const std::string& peer, clock::time_point now = clock::now());
  /// One line describing the attempts since the previous call, or nullopt when there were none.
  /// Also forgets peers whose window has ended.
  std::optional<std::string> summary(clock::time_point now = clock::now());

 private:
  struct peer_state {
    clock::time_point window_start;
    size_t failures = 0;
  };

  const size_t max_failures_;
  const std::chrono::milliseconds window_;
  std::mutex mu_;
  std::unordered_map<std::string, peer_state> peers_;
  // Since the last summary.
  uint64_t n_failed_ = 0;
  uint64_t n_refused_ = 0;
  std::unordered_map<std::string, uint64_t> attempts_by_peer_;
  clock::time_point last_summary_ = clock::now();
};

}  // namespace troupe::transport
