#include "transport/serve_metrics.hpp"

#include <fmt/format.h>

namespace troupe::transport {

histogram::histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++n_;
}

uint64_t histogram::count() const { return n_; }

void histogram::render(std::string& out, const std::string& name) const {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cumulative);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, n_);
  out += fmt::format("{}_sum {}\n", name, sum_);
  out += fmt::format("{}_count {}\n", name, n_);
}

serve_metrics::serve_metrics()
    : ttft_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}) {}

void serve_metrics::count_request(const std::string& route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{route, status}];
}

void serve_metrics::count_tokens(uint64_t prompt, uint64_t generated) {
  std::lock_guard lock(mu_);
  prompt_tokens_ += prompt;
  generated_tokens_ += generated;
}

void serve_metrics::count_outcome(const std::string& outcome) {
  std::lock_guard lock(mu_);
  ++outcomes_[outcome];
}

void serve_metrics::observe_ttft(double seconds) {
  std::lock_guard lock(mu_);
  ttft_.observe(seconds);
}

void serve_metrics::observe_inter_token(double seconds, uint64_t n) {
  std::lock_guard lock(mu_);
  for (uint64_t i = 0; i < n; ++i) itl_.observe(seconds);
}

namespace {

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

std::string serve_metrics::render(const std::vector<replica_gauges>& replicas,
                                  const std::vector<std::pair<std::string, uint64_t>>& rate_limited) const {
  std::string out;
  std::lock_guard lock(mu_);
  header(out, "troupe_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [key, n] : requests_) {
    out += fmt::format("troupe_http_requests_total{{route=\"{}\",code=\"{}\"}} {}\n", key.first, key.second, n);
  }
  header(out, "troupe_generation_requests_total", "counter",
         "HTTP generation requests and tasks by how they ended: stop, length, cancelled (client gone or "
         "DELETE), error.");
  for (const auto& [outcome, n] : outcomes_) {
    out += fmt::format("troupe_generation_requests_total{{outcome=\"{}\"}} {}\n", outcome, n);
  }
  header(out, "troupe_rate_limited_requests_total", "counter",
         "Requests refused by their API key's rate limits (HTTP 429, client protocol rate_limited), by key name.");
  for (const auto& [name, n] : rate_limited) {
    out += fmt::format("troupe_rate_limited_requests_total{{key=\"{}\"}} {}\n", name, n);
  }
  header(out, "troupe_prompt_tokens_total", "counter", "Prompt tokens of completed HTTP generation requests.");
  out += fmt::format("troupe_prompt_tokens_total {}\n", prompt_tokens_);
  header(out, "troupe_generation_tokens_total", "counter", "Tokens generated for HTTP generation requests.");
  out += fmt::format("troupe_generation_tokens_total {}\n", generated_tokens_);
  header(out, "troupe_time_to_first_token_seconds", "histogram",
         "Time from receiving a generation request to its first generated text.");
  ttft_.render(out, "troupe_time_to_first_token_seconds");
  header(out, "troupe_inter_token_latency_seconds", "histogram",
         "Time between generated tokens of one request (a chunk of n tokens counts n gaps of 1/n).");
  itl_.render(out, "troupe_inter_token_latency_seconds");

  header(out, "troupe_scheduler_up", "gauge", "1 if every SCHEDULER answered the stats request of this scrape.");
  out += fmt::format("troupe_scheduler_up {}\n", replicas.empty() ? 0 : 1);
  header(out, "troupe_queue_depth", "gauge", "Requests waiting for admission to a running batch, per replica.");
  for (size_t i = 0; i < replicas.size(); ++i) {
    out += fmt::format("troupe_queue_depth{{replica=\"{}\"}} {}\n", i, replicas[i].n_waiting);
  }
  header(out, "troupe_running_sequences", "gauge", "Sequences holding KV blocks, per replica.");
  for (size_t i = 0; i < replicas.size(); ++i) {
    out += fmt::format("troupe_running_sequences{{replica=\"{}\"}} {}\n", i, replicas[i].n_running);
  }
  header(out, "troupe_kv_blocks_used", "gauge", "KV cache blocks in use, per replica.");
  for (size_t i = 0; i < replicas.size(); ++i) {
    out += fmt::format("troupe_kv_blocks_used{{replica=\"{}\"}} {}\n", i,
                       replicas[i].n_blocks - replicas[i].n_free_blocks);
  }
  header(out, "troupe_kv_blocks_free", "gauge", "KV cache blocks free, per replica.");
  for (size_t i = 0; i < replicas.size(); ++i) {
    out += fmt::format("troupe_kv_blocks_free{{replica=\"{}\"}} {}\n", i, replicas[i].n_free_blocks);
  }
  header(out, "troupe_preemptions_total", "counter", "Sequences preempted (KV blocks ran out), per replica.");
  for (size_t i = 0; i < replicas.size(); ++i) {
    out += fmt::format("troupe_preemptions_total{{replica=\"{}\"}} {}\n", i, replicas[i].n_preemptions);
  }
  return out;
}

}  // namespace troupe::transport
