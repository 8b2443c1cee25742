// The REPLICA's hang threshold (actors/step_timing.hpp): scaled to a step's tokens, so that a big
// prefill after a run of decode steps is not taken for a hung stage, while a decode step keeps a
// tight limit; nothing counts as hung before a step was measured.
#include <boost/test/unit_test.hpp>

#include <limits>
#include <vector>

#include "actors/messages.hpp"
#include "actors/step_timing.hpp"

using namespace troupe::actors;

namespace {
constexpr int64_t ms = 1'000'000;
constexpr int64_t floor_ns = 1000 * ms;
}  // namespace

BOOST_AUTO_TEST_SUITE(step_timing)

BOOST_AUTO_TEST_CASE(nothing_measured_means_no_threshold) {
  troupe::actors::step_timing t;
  BOOST_TEST(!t.measured());
  BOOST_TEST(t.threshold_ns(1024, floor_ns, 10.0) == std::numeric_limits<int64_t>::max());
}

BOOST_AUTO_TEST_CASE(decode_steps_keep_a_tight_limit_and_a_prefill_gets_room) {
  troupe::actors::step_timing t;
  for (int i = 0; i < 40; ++i) t.record(80 * ms, 16);  // decode steps of 16 sequences: 5 ms a token
  BOOST_TEST(t.measured());
  // A decode step: max(floor, 10 x 80 ms) = the floor.
  BOOST_TEST(t.threshold_ns(16, floor_ns, 10.0) == floor_ns);
  BOOST_TEST(t.threshold_ns(16, 100 * ms, 10.0) == 800 * ms);
  // A 1024-token prefill: 10 x 5 ms x 1024, far above what a decode-based limit would allow.
  BOOST_TEST(t.threshold_ns(1024, floor_ns, 10.0) == 10 * 5 * ms * 1024);
  // A prefill that took 1.4 s (the false restart this replaces: the limit was 1 s) is well inside.
  BOOST_TEST(t.threshold_ns(1024, floor_ns, 10.0) > 1400 * ms);
}

BOOST_AUTO_TEST_CASE(only_the_last_32_steps_count) {
  troupe::actors::step_timing t;
  t.record(5000 * ms, 1);  // one very slow step, long ago
  for (int i = 0; i < 32; ++i) t.record(10 * ms, 1);
  BOOST_TEST(t.threshold_ns(1, 0, 10.0) == 100 * ms);
}

BOOST_AUTO_TEST_CASE(a_replay_counts_the_history_of_new_sequences) {
  step_request req;
  planned_seq a;
  a.tokens = {1, 2, 3};
  planned_seq b;
  b.tokens = {7};
  b.is_new = true;
  b.history = std::vector<int32_t>(100, 5);
  req.work = {a, b};
  BOOST_TEST(step_tokens(req) == 104);
  BOOST_TEST(step_tokens(step_request{}) == 1);
}

BOOST_AUTO_TEST_SUITE_END()
