// named_logger: one spdlog logger per area, shared by everyone who asks for that area.
#include <boost/test/unit_test.hpp>

#include <spdlog/spdlog.h>

#include "transport/logger.hpp"

using namespace troupe;

BOOST_AUTO_TEST_SUITE(logger)

BOOST_AUTO_TEST_CASE(an_area_gets_one_registered_logger_with_the_default_sinks) {
  auto a = transport::named_logger("test-area-a");
  BOOST_REQUIRE(a);
  BOOST_TEST(a->name() == "test-area-a");
  BOOST_TEST(spdlog::get("test-area-a") == a);
  BOOST_TEST(transport::named_logger("test-area-a") == a);  // the same one again
  BOOST_TEST(transport::named_logger("test-area-b") != a);
  BOOST_TEST((a->sinks() == spdlog::default_logger()->sinks()));
}

BOOST_AUTO_TEST_CASE(a_logger_registered_first_is_the_one_used) {
  auto mine = spdlog::default_logger()->clone("test-area-c");
  spdlog::register_logger(mine);
  BOOST_TEST(transport::named_logger("test-area-c") == mine);
  BOOST_TEST(transport::logger().name() == "transport");
  BOOST_TEST(&transport::logger() == transport::named_logger("transport").get());
}

BOOST_AUTO_TEST_SUITE_END()
