#pragma once
// The numbers GET /metrics exposes, in Prometheus' text format (version 0.0.4): HTTP requests by
// route and status, prompt and generated tokens, time-to-first-token and inter-token latency
// histograms, and the SCHEDULERs' gauges (queue depth, running sequences, KV blocks, preemptions)
// as read at scrape time. Thread-safe; knows no actors.
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace troupe::transport {

/// A cumulative histogram with fixed upper bounds (seconds).
class histogram {
 public:
  explicit histogram(std::vector<double> bounds);
  void observe(double value);
  /// The sample lines of metric `name` (_bucket{le=...}, _sum, _count).
  void render(std::string& out, const std::string& name) const;
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bound, not cumulative; the last is +Inf
  double sum_ = 0;
  uint64_t n_ = 0;
};

/// One replica's SCHEDULER, as its stats say.
struct replica_gauges {
  int64_t n_waiting = 0;
  int64_t n_running = 0;
  int64_t n_blocks = 0;
  int64_t n_free_blocks = 0;
  int64_t n_preemptions = 0;
};

class serve_metrics {
 public:
  serve_metrics();

  /// One HTTP request answered: route is the route's pattern ("/v1/tasks/{id}", or "other").
  void count_request(const std::string& route, int status);
  void count_tokens(uint64_t prompt, uint64_t generated);
  /// How a generation request (or task) ended: "stop", "length", "cancelled" or "error".
  void count_outcome(const std::string& outcome);
  void observe_ttft(double seconds);
  void observe_inter_token(double seconds, uint64_t n = 1);

  /// The exposition text; `replicas` empty when the SCHEDULERs did not answer. `rate_limited`:
  /// requests refused by their API key's rate limits (both protocols), by key name.
  std::string render(const std::vector<replica_gauges>& replicas,
                     const std::vector<std::pair<std::string, uint64_t>>& rate_limited = {}) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  std::map<std::string, uint64_t> outcomes_;
  uint64_t prompt_tokens_ = 0;
  uint64_t generated_tokens_ = 0;
  histogram ttft_;
  histogram itl_;
};

}  // namespace troupe::transport
