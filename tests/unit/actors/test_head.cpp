// The HEAD actor's view of its nodes on CAF's deterministic coordinator (simulated time): how long
// ago each node last answered a heartbeat, and a node that stops answering is down after the
// heartbeat timeout, its silence still counted (what `troupe admin status` shows per node).
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/node.hpp"
#include "deterministic_system.hpp"

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

// A worker's NODE that answers heartbeats until `mute` is set (then it holds them: a node cut off),
// and keeps the chain generations the head tells it to retire below.
node_actor::behavior_type fake_node(node_actor::pointer self, std::shared_ptr<bool> mute,
                                    std::shared_ptr<std::vector<chain_generations>> retired) {
  return {
    [](place_atom, const stage_placement&) -> caf::result<placed_stage> {
      return make_error(serve_errc::failed, "no stages here");
    },
    [](release_atom) {},
    [retired](retire_atom, const chain_generations& g) { retired->push_back(g); },
    [self, mute](ping_atom) -> caf::result<int32_t> {
      if (*mute) return self->make_response_promise<int32_t>();  // never delivered
      return int32_t(4242);
    },
  };
}

struct head_fixture : troupe::test::deterministic_system {
  std::shared_ptr<bool> mute = std::make_shared<bool>(false);
  std::shared_ptr<std::vector<chain_generations>> retired = std::make_shared<std::vector<chain_generations>>();
  head_actor head = keep(spawn_head_actor(sys(), {"w1"}));
  node_actor node = spawn(fake_node, mute, retired);

  void join() { join_as(node); }
  void join_as(const node_actor& who) {
    int32_t head_pid = 0;
    request(
      head, [&head_pid](int32_t pid) { head_pid = pid; },
      [](caf::error& e) { BOOST_FAIL("join refused: " << caf::to_string(e)); }, join_atom::value,
      node_hello{"w1", 4242}, who);
    run();
    BOOST_REQUIRE(head_pid > 0);
  }
  node_state w1() {
    std::vector<node_state> out;
    request(head, [&out](std::vector<node_state>& v) { out = std::move(v); },
            [](caf::error& e) { BOOST_FAIL("nodes: " << caf::to_string(e)); }, nodes_atom::value);
    run();
    BOOST_REQUIRE_EQUAL(out.size(), 1u);
    BOOST_REQUIRE_EQUAL(out[0].name, "w1");
    return out[0];
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(head)

BOOST_FIXTURE_TEST_CASE(reports_how_long_ago_each_node_answered_a_heartbeat, head_fixture) {
  run();
  join();
  BOOST_TEST(w1().up);
  BOOST_TEST(w1().pid == 4242);
  BOOST_TEST(w1().last_heartbeat_ms == 0);  // the join counts as an answer
  advance(100ms);
  BOOST_TEST(w1().last_heartbeat_ms == 100);
  advance(200ms);  // 300 ms: the first heartbeat, answered at once
  BOOST_TEST(w1().last_heartbeat_ms == 0);
  advance(250ms);
  BOOST_TEST(w1().last_heartbeat_ms == 250);
}

BOOST_FIXTURE_TEST_CASE(a_node_that_stops_answering_is_down_and_its_silence_counted, head_fixture) {
  run();
  join();
  advance(300ms);  // answered at 300 ms
  BOOST_TEST(w1().last_heartbeat_ms == 0);
  *mute = true;
  // Pings at 600, 900, 1200 and 1500 ms go unanswered; the first times out at 1600 ms.
  for (int i = 0; i < 12; ++i) advance(100ms);  // now: 1500 ms
  BOOST_TEST(w1().up);
  BOOST_TEST(w1().last_heartbeat_ms == 1200);
  advance(100ms);  // 1600 ms
  for (int i = 0; i < 2; ++i) advance(100ms);  // 1800 ms
  const node_state n = w1();
  BOOST_TEST(!n.up);
  BOOST_TEST(n.last_heartbeat_ms == 1500);
}

// After a rebuild the head tells every node up which chain each replica runs now, and tells a
// node that joins (again) at once: a stage left on a node of an older chain is stopped there.
BOOST_FIXTURE_TEST_CASE(nodes_learn_the_current_chains_after_a_rebuild_and_when_they_join, head_fixture) {
  run();
  join();
  BOOST_TEST(retired->empty());  // nothing built yet: nothing to retire
  caf::anon_send(head, retire_atom::value, int32_t(1), uint64_t(3));
  run();
  BOOST_REQUIRE_EQUAL(retired->size(), 1u);
  BOOST_TEST((retired->back().current == std::vector<uint64_t>{0, 3}));
  caf::anon_send(head, retire_atom::value, int32_t(1), uint64_t(2));  // older than known: ignored
  caf::anon_send(head, retire_atom::value, int32_t(0), uint64_t(1));
  run();
  BOOST_REQUIRE_EQUAL(retired->size(), 2u);
  BOOST_TEST((retired->back().current == std::vector<uint64_t>{1, 3}));
  // The node starts again (a new actor under the same name): told on joining.
  auto again = std::make_shared<std::vector<chain_generations>>();
  node_actor restarted = spawn(fake_node, mute, again);
  join_as(restarted);
  BOOST_REQUIRE_EQUAL(again->size(), 1u);
  BOOST_TEST((again->back().current == std::vector<uint64_t>{1, 3}));
}

BOOST_AUTO_TEST_SUITE_END()
