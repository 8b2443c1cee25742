// transport::token_bucket with an injected clock: no sleeps.
#include <boost/test/unit_test.hpp>

#include <chrono>

#include "transport/token_bucket.hpp"

using bucket = troupe::transport::token_bucket;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(token_bucket)

BOOST_AUTO_TEST_CASE(starts_full_and_refuses_once_empty_saying_when_to_retry) {
  const auto t0 = bucket::clock::time_point{} + 1h;
  bucket b(1.0, 3.0, t0);  // 1 per second, 3 at once
  for (int i = 0; i < 3; ++i) BOOST_TEST(b.try_take(1, t0).count() == 0);
  BOOST_TEST(b.try_take(1, t0).count() == 1000);
  BOOST_TEST(b.try_take(1, t0 + 400ms).count() == 600);  // a refusal takes nothing
  BOOST_TEST(b.try_take(1, t0 + 1000ms).count() == 0);
  BOOST_TEST(b.try_take(1, t0 + 1000ms).count() == 1000);
}

BOOST_AUTO_TEST_CASE(refills_continuously_up_to_its_capacity_and_no_further) {
  const auto t0 = bucket::clock::time_point{} + 1h;
  bucket b(2.0, 4.0, t0);
  BOOST_TEST(b.try_take(4, t0).count() == 0);
  BOOST_TEST(b.level(t0 + 500ms) == 1.0);
  BOOST_TEST(b.level(t0 + 1h) == 4.0);  // a long quiet time does not bank more than the capacity
  BOOST_TEST(b.try_take(4, t0 + 1h).count() == 0);
  BOOST_TEST(b.try_take(1, t0 + 1h).count() == 500);
}

BOOST_AUTO_TEST_CASE(a_charge_after_the_fact_puts_it_in_debt_until_refilled) {
  const auto t0 = bucket::clock::time_point{} + 1h;
  bucket b(100.0, 1000.0, t0);  // 6000 tokens per minute
  b.charge(1500, t0);                 // a request that used more than the bucket holds
  BOOST_TEST(b.level(t0) == -500.0);
  BOOST_TEST(b.wait_for(1, t0).count() == 5010);  // 501 tokens at 100/s
  BOOST_TEST(b.wait_for(1, t0 + 5010ms).count() == 0);
}

BOOST_AUTO_TEST_CASE(more_than_the_capacity_waits_for_a_full_bucket) {
  const auto t0 = bucket::clock::time_point{} + 1h;
  bucket b(1.0, 2.0, t0);
  BOOST_TEST(b.try_take(2, t0).count() == 0);
  BOOST_TEST(b.wait_for(10, t0).count() == 2000);
}

BOOST_AUTO_TEST_CASE(zero_rate_or_capacity_means_unlimited) {
  const auto t0 = bucket::clock::time_point{} + 1h;
  bucket none(0.0, 0.0, t0);
  BOOST_TEST(none.unlimited());
  for (int i = 0; i < 1000; ++i) BOOST_TEST_REQUIRE(none.try_take(1000, t0).count() == 0);
  none.charge(1e9, t0);
  BOOST_TEST(none.wait_for(1, t0).count() == 0);
}

BOOST_AUTO_TEST_SUITE_END()
