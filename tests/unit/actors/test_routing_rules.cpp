// The ROUTER's per-replica measurements and rules for the ADMIN CONSOLE, driven without actors.
#include <boost/test/unit_test.hpp>

#include "actors/replica_metrics.hpp"

using namespace troupe::actors;

namespace {
constexpr int64_t s = 1'000'000'000;
}

BOOST_AUTO_TEST_SUITE(routing_rules)

BOOST_AUTO_TEST_CASE(throughput_counts_the_last_ten_seconds) {
  replica_metrics m;
  for (int i = 0; i < 20; ++i) m.add_tokens(100 * s + i * s, 50);  // 50 tokens a second for 20 s
  BOOST_TEST(m.tok_per_s(119 * s) == 55.0);  // 11 batches in [109, 119]
  BOOST_TEST(m.tok_per_s(200 * s) == 0.0);
}

BOOST_AUTO_TEST_CASE(a_young_replica_is_measured_over_its_age_not_ten_seconds) {
  replica_metrics m;
  m.add_tokens(10 * s, 100);
  m.add_tokens(12 * s, 100);
  BOOST_TEST(m.tok_per_s(12 * s) == 100.0);  // 200 tokens over 2 s
}

BOOST_AUTO_TEST_CASE(latency_percentiles_cover_the_last_minute) {
  replica_metrics m;
  for (int i = 1; i <= 100; ++i) m.add_ttft(s, double(i));
  auto p = m.ttft(2 * s);
  BOOST_TEST(p.n == 100);
  BOOST_TEST(p.p50_ms == 50.0);
  BOOST_TEST(p.p99_ms == 99.0);
  BOOST_TEST(m.ttft(62 * s).n == 0);  // a minute later: gone
  m.add_itl(s, 3.0);
  m.reset_latency();
  BOOST_TEST(m.itl(s).n == 0);
}

BOOST_AUTO_TEST_CASE(equal_weights_pick_the_least_loaded_replica) {
  replica_picker p;
  std::vector<pick_candidate> c{{1.0, 3, true}, {1.0, 1, true}, {1.0, 2, true}};
  BOOST_TEST(*p.pick(c) == 1u);
  BOOST_TEST(*p.pick(c, size_t(1)) == 2u);  // a retry goes elsewhere
}

BOOST_AUTO_TEST_CASE(drained_and_zero_weight_replicas_get_nothing) {
  replica_picker p;
  std::vector<pick_candidate> c{{1.0, 9, true}, {1.0, 0, false}, {0.0, 0, true}};
  for (int i = 0; i < 10; ++i) BOOST_TEST(*p.pick(c) == 0u);
  c[0].takes_new = false;
  BOOST_TEST(!p.pick(c).has_value());
}

BOOST_AUTO_TEST_CASE(unequal_weights_split_requests_in_proportion_whatever_the_load) {
  replica_picker p;
  std::vector<pick_candidate> c{{1.0, 0, true}, {0.25, 0, true}};
  int to_canary = 0;
  for (int i = 0; i < 100; ++i) {
    const size_t k = *p.pick(c);
    to_canary += k == 1;
    c[k].load += 1;  // the load does not matter with unequal weights
  }
  BOOST_TEST(to_canary == 20);
}

BOOST_AUTO_TEST_CASE(rollback_after_n_consecutive_failures_or_a_slow_ttft_p99) {
  rollback_policy pol;  // 5 failures; TTFT off
  replica_metrics::percentiles slow{100, 900, 50};
  BOOST_TEST(rollback_reason(pol, 4, slow).empty());
  BOOST_TEST(rollback_reason(pol, 5, slow) == "5 consecutive failed requests (threshold 5)");
  pol.ttft_p99_ms = 500;
  BOOST_TEST(rollback_reason(pol, 0, slow).find("TTFT p99 900.0 ms") == 0u);
  slow.n = 10;  // too few samples to judge
  BOOST_TEST(rollback_reason(pol, 0, slow).empty());
  pol.max_consecutive_failures = 0;  // off
  BOOST_TEST(rollback_reason(pol, 100, slow).empty());
}

BOOST_AUTO_TEST_SUITE_END()
