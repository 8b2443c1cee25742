#pragma once
// API keys (troupe serve --api-key-file, listen.api_key_file) for both the client protocol and the
// HTTP API: who a key belongs to, its rate limits and its priority class.
//
// The key file: one key per line, optionally followed by options (docs/http-api.md):
//   sk-alice-0123  name=alice rate=60/min tokens=20000/min burst=10 priority=interactive
//   sk-batch-4567  name=nightly tokens=100000/h priority=batch
//   sk-plain                      # a key alone: no limits, interactive (the older format)
// Blank lines and comments ('#' at the start of a line or after whitespace) are skipped. Rates are
// N/s, N/min or N/h (N may have a fraction). burst is how many requests may arrive at once (the
// request bucket's size; default: one minute's worth, at least 1); the token bucket holds one
// minute's worth of tokens. Keys are never logged: logs and /metrics name the key's name.
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transport/client_protocol.hpp"
#include "transport/error.hpp"
#include "transport/token_bucket.hpp"

namespace troupe::transport {

struct api_key_limits {
  double requests_per_minute = 0;  // 0: no limit
  double tokens_per_minute = 0;    // prompt + generated tokens; 0: no limit
  double burst = 0;                // requests at once; 0: max(1, requests_per_minute)
};

struct api_key {
  std::string key;   // the secret: compared in constant time, never logged
  std::string name;  // [A-Za-z0-9_.-]+, unique in the file; default "key-LINE"
  api_key_limits limits;
  request_priority priority = request_priority::interactive;  // every request of this key gets it
};

/// The keys in `path`. errc::io_error when the file cannot be read; errc::invalid_request
/// ("FILE:LINE: ...") for a malformed option, a duplicate key or name, or a file without keys.
result<std::vector<api_key>> read_api_key_file(const std::string& path);

/// Why a request of a key was refused by its limits.
struct rate_limit_refusal {
  std::chrono::milliseconds retry_after{0};  // when it would be admitted
  bool tokens = false;                       // the token limit (else the request limit)
  /// The seconds to tell the client (Retry-After): retry_after rounded up, at least 1.
  int64_t retry_after_s() const;
};

/// The keys a server accepts, with a request bucket and a token bucket per key. Thread-safe;
/// shared by the client-protocol and HTTP gateways, so a key's limits hold across both.
class api_key_set {
 public:
  using clock = token_bucket::clock;

  explicit api_key_set(std::vector<api_key> keys, clock::time_point now = clock::now());
  /// Keys without limits, named key-1, key-2, ... (--api-key, tests).
  static std::shared_ptr<api_key_set> without_limits(std::vector<std::string> keys);

  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  const std::vector<api_key>& keys() const { return keys_; }

  /// The key equal to `presented`, or nullptr. Every byte of every key is compared, so the time
  /// taken does not tell how much of a key matched.
  const api_key* find(std::string_view presented) const;

  /// Admits one request of `key` (one of keys()): takes one from its request bucket unless that
  /// is empty or its token bucket is in debt. nullopt: admitted. Otherwise the refusal, counted
  /// in rate_limited_counts().
  std::optional<rate_limit_refusal> admit(const api_key& key, clock::time_point now = clock::now());
  /// Charges `n_tokens` (prompt + generated, once known) to the key's token bucket.
  void charge_tokens(const api_key& key, uint64_t n_tokens, clock::time_point now = clock::now());
  /// Requests refused by admit(), by key name, every key in file order.
  std::vector<std::pair<std::string, uint64_t>> rate_limited_counts() const;

 private:
  struct state {
    token_bucket requests;
    token_bucket tokens;
    uint64_t n_rate_limited = 0;
  };
  size_t index_of(const api_key& key) const;

  const std::vector<api_key> keys_;
  mutable std::mutex mu_;
  std::vector<state> states_;  // guarded by mu_; parallel to keys_
};

}  // namespace troupe::transport
