// The Prometheus text of GET /metrics: counters, histogram buckets (cumulative), gauges.
#include <boost/test/unit_test.hpp>

#include "transport/serve_metrics.hpp"

using namespace troupe::transport;

namespace tt = troupe::transport;

BOOST_AUTO_TEST_SUITE(serve_metrics)

BOOST_AUTO_TEST_CASE(histogram_buckets_are_cumulative) {
  histogram h({0.1, 1});
  h.observe(0.05);
  h.observe(0.1);  // on the bound: in it
  h.observe(0.5);
  h.observe(7);
  std::string out;
  h.render(out, "x");
  BOOST_TEST(out == "x_bucket{le=\"0.1\"} 2\nx_bucket{le=\"1\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_sum 7.65\nx_count 4\n");
}

BOOST_AUTO_TEST_CASE(renders_requests_tokens_and_replica_gauges) {
  tt::serve_metrics m;
  m.count_request("/v1/completions", 200);
  m.count_request("/v1/completions", 200);
  m.count_request("/v1/completions", 400);
  m.count_tokens(6, 20);
  m.observe_ttft(0.02);
  m.observe_inter_token(0.004, 3);
  const std::string t = m.render({replica_gauges{2, 3, 100, 60, 4}});
  for (const char* line : {"# TYPE troupe_http_requests_total counter\n",
                           "troupe_http_requests_total{route=\"/v1/completions\",code=\"200\"} 2\n",
                           "troupe_http_requests_total{route=\"/v1/completions\",code=\"400\"} 1\n",
                           "troupe_prompt_tokens_total 6\n", "troupe_generation_tokens_total 20\n",
                           "troupe_time_to_first_token_seconds_count 1\n",
                           "troupe_inter_token_latency_seconds_bucket{le=\"0.005\"} 3\n",
                           "troupe_queue_depth{replica=\"0\"} 2\n", "troupe_running_sequences{replica=\"0\"} 3\n",
                           "troupe_kv_blocks_used{replica=\"0\"} 40\n", "troupe_kv_blocks_free{replica=\"0\"} 60\n",
                           "troupe_preemptions_total{replica=\"0\"} 4\n", "troupe_scheduler_up 1\n"}) {
    BOOST_TEST(t.find(line) != std::string::npos, "missing: " << line);
  }
  BOOST_TEST(m.render({}).find("troupe_scheduler_up 0\n") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
