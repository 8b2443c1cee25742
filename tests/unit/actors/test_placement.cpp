// Where `replica add` puts a new replica's stages: on the nodes the operator names, or on the
// spare nodes that are up, the least loaded first; in `troupe serve`, in the process itself.
#include <boost/test/unit_test.hpp>

#include "actors/placement.hpp"

using namespace troupe;
using namespace troupe::actors;

namespace {

config::cluster_config three_roles() {
  config::cluster_config c;
  auto node = [&c](std::string name, config::node_role role) {
    config::node_section n;
    n.name = std::move(name);
    n.host = "10.0.0." + std::to_string(c.nodes.size() + 1);
    n.role = role;
    c.nodes.push_back(n);
  };
  node("h1", config::node_role::head);
  node("w1", config::node_role::worker);
  node("s1", config::node_role::spare);
  node("s2", config::node_role::spare);
  return c;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(placement)

BOOST_AUTO_TEST_CASE(spreads_stages_over_the_spare_nodes_that_are_up_least_loaded_first) {
  const auto c = three_roles();
  auto two = choose_replica_nodes(c, 2, {}, node_load{{"h1", "w1", "s1", "s2"}, {}});
  BOOST_REQUIRE(two);
  BOOST_TEST(*two == (std::vector<std::string>{"s1", "s2"}), boost::test_tools::per_element());
  // s1 holds a stage already (it took over one of a lost node): s2 gets the first, then s1 and s2 even.
  auto three = choose_replica_nodes(c, 3, {}, node_load{{"h1", "w1", "s1", "s2"}, {{"s1", 1}, {"w1", 5}}});
  BOOST_REQUIRE(three);
  BOOST_TEST(*three == (std::vector<std::string>{"s2", "s1", "s2"}), boost::test_tools::per_element());
  // A spare that is down is passed over; workers and the head are never chosen by themselves.
  auto one_up = choose_replica_nodes(c, 2, {}, node_load{{"h1", "w1", "s2"}, {}});
  BOOST_REQUIRE(one_up);
  BOOST_TEST(*one_up == (std::vector<std::string>{"s2", "s2"}), boost::test_tools::per_element());
  auto none = choose_replica_nodes(c, 2, {}, node_load{{"h1", "w1"}, {}});
  BOOST_REQUIRE(!none);
  BOOST_TEST(none.error().find("no spare node is up") != std::string::npos, none.error());
}

BOOST_AUTO_TEST_CASE(takes_the_nodes_named_one_per_stage_or_one_for_all) {
  const auto c = three_roles();
  const node_load up{{"h1", "w1", "s1"}, {}};
  auto per_stage = choose_replica_nodes(c, 2, {"w1", "h1"}, up);
  BOOST_REQUIRE(per_stage);
  BOOST_TEST(*per_stage == (std::vector<std::string>{"w1", "h1"}), boost::test_tools::per_element());
  auto all = choose_replica_nodes(c, 3, {"w1"}, up);
  BOOST_REQUIRE(all);
  BOOST_TEST(*all == (std::vector<std::string>{"w1", "w1", "w1"}), boost::test_tools::per_element());
  auto unknown = choose_replica_nodes(c, 2, {"w9"}, up);
  BOOST_REQUIRE(!unknown);
  BOOST_TEST(unknown.error().find("no node named 'w9'") != std::string::npos, unknown.error());
  auto down = choose_replica_nodes(c, 2, {"s2"}, up);
  BOOST_REQUIRE(!down);
  BOOST_TEST(down.error() == "node s2 is not up");
  auto miscount = choose_replica_nodes(c, 3, {"w1", "h1"}, up);
  BOOST_REQUIRE(!miscount);
  BOOST_TEST(miscount.error().find("one per stage (3 stages), not 2") != std::string::npos, miscount.error());
}

BOOST_AUTO_TEST_CASE(runs_every_stage_in_this_process_without_nodes) {
  config::cluster_config c;  // `troupe serve`: no [[nodes]]
  auto here = choose_replica_nodes(c, 2, {}, {});
  BOOST_REQUIRE(here);
  BOOST_TEST(*here == (std::vector<std::string>{"", ""}), boost::test_tools::per_element());
  BOOST_TEST(!choose_replica_nodes(c, 2, {"h1"}, {}));
}

BOOST_AUTO_TEST_SUITE_END()
