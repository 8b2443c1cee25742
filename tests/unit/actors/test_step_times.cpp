// step_times: the median of a stage's last 32 step times, as status shows it.
#include <boost/test/unit_test.hpp>

#include "actors/step_times.hpp"

namespace actors = troupe::actors;

BOOST_AUTO_TEST_SUITE(step_times)

BOOST_AUTO_TEST_CASE(is_not_measured_before_the_first_step) {
  actors::step_times t;
  BOOST_TEST(t.median_ms() == -1.0);
  t.add(0);   // a stage that did not measure
  t.add(-5);
  BOOST_TEST(t.median_ms() == -1.0);
  BOOST_TEST(t.size() == 0u);
}

BOOST_AUTO_TEST_CASE(is_the_median_in_ms_not_the_mean) {
  actors::step_times t;
  for (int64_t ns : {3'000'000, 1'000'000, 900'000'000}) t.add(ns);  // one slow outlier
  BOOST_TEST(t.median_ms() == 3.0);
  t.add(5'000'000);  // even count: the mean of the two middle ones (3 and 5 ms)
  BOOST_TEST(t.median_ms() == 4.0);
}

BOOST_AUTO_TEST_CASE(forgets_all_but_the_last_32_steps) {
  actors::step_times t;
  for (int i = 0; i < 20; ++i) t.add(50'000'000);  // 50 ms: before the model got warm
  for (int i = 0; i < 32; ++i) t.add(2'000'000);   // 2 ms since
  BOOST_TEST(t.size() == actors::step_times::window);
  BOOST_TEST(t.median_ms() == 2.0);
}

BOOST_AUTO_TEST_SUITE_END()
