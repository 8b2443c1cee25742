// The SCHEDULER actor against a fake REPLICA, on CAF's deterministic test coordinator (simulated
// time): the step watchdog fails a micro-batch whose reply does not come within the step timeout,
// not before, ignores that reply when it comes late, and keeps serving.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/scheduler.hpp"
#include "actors/spawn_serve.hpp"
#include "deterministic_system.hpp"

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

using release_atom = caf::atom_constant<caf::atom("release")>;
using hold_atom = caf::atom_constant<caf::atom("hold")>;

struct fake_replica_state {
  bool hold = true;  // keep step requests unanswered (a hung stage)
  std::vector<std::pair<caf::response_promise, step_request>> held;
};

step_result answer(const step_request& req, int32_t token) {
  step_result r;
  r.micro_batch = req.micro_batch;
  for (const planned_seq& p : req.work) {
    if (p.sample) r.tokens.push_back(sampled_token{p.id, token, p.step});
  }
  return r;
}

// Answers steps at once (sampling token 7), or holds them until told to release them.
caf::behavior fake_replica(caf::stateful_actor<fake_replica_state>* self) {
  return {
    [self](step_atom, step_request& req) -> caf::result<step_result> {
      if (!self->state.hold) return answer(req, 7);
      auto rp = self->make_response_promise();
      self->state.held.emplace_back(rp, std::move(req));
      return caf::delegated<step_result>{};
    },
    [self](release_atom) {
      self->state.hold = false;
      for (auto& [rp, req] : self->state.held) rp.deliver(answer(req, 7));
      self->state.held.clear();
    },
    [self](hold_atom) -> size_t { return self->state.held.size(); },
  };
}

// Records what a sink receives (the test coordinator runs it on the test's thread).
caf::behavior recording_sink(caf::event_based_actor*, std::shared_ptr<std::vector<finished_seq>> finished) {
  return {
    [](tokens_atom, token_batch&) {},
    [finished](finished_atom, finished_seq& f) { finished->push_back(f); },
  };
}

sequence_request request_for(uint64_t id, int max_tokens, const token_sink_actor& sink) {
  sequence_request r;
  r.spec.id = request_id{id};
  r.spec.prompt.resize(5);
  std::iota(r.spec.prompt.begin(), r.spec.prompt.end(), 10);
  r.spec.max_tokens = max_tokens;
  r.spec.stop_at_eos = false;
  r.sink = sink;
  return r;
}

/// A SCHEDULER over a fake REPLICA (holding steps at first) on the deterministic coordinator.
struct scheduler_fixture : troupe::test::deterministic_system {
  caf::actor replica = spawn(fake_replica);
  std::shared_ptr<std::vector<finished_seq>> finished = std::make_shared<std::vector<finished_seq>>();
  token_sink_actor sink = caf::actor_cast<token_sink_actor>(spawn(recording_sink, finished));
  scheduler_actor sched;

  void start(std::chrono::milliseconds step_timeout) {
    scheduler_setup setup;
    setup.replica = caf::actor_cast<replica_actor>(replica);
    setup.step_timeout = step_timeout;
    sched = keep(spawn_scheduler(sys(), setup));
  }
  void admit(uint64_t id, int max_tokens) {
    bool replied = false;
    request(
      sched, [&replied, id](request_id got) { replied = got.value == id; },
      [](caf::error& e) { BOOST_FAIL("admit failed: " << caf::to_string(e)); }, admit_atom::value,
      request_for(id, max_tokens, sink));
    run();
    BOOST_TEST(replied);
  }
  size_t held() {
    size_t n = 0;
    request(replica, [&n](size_t k) { n = k; }, [](caf::error&) { BOOST_FAIL("replica gone"); }, hold_atom::value);
    run();
    return n;
  }
  scheduler_stats stats() {
    scheduler_stats out;
    out.n_blocks = -1;
    request(sched, [&out](scheduler_stats s) { out = s; }, [](caf::error&) { BOOST_FAIL("no stats"); },
            stats_atom::value);
    run();
    BOOST_REQUIRE(out.n_blocks >= 0);
    return out;
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(scheduler)

BOOST_FIXTURE_TEST_CASE(fails_a_hung_step_after_the_step_timeout_and_ignores_its_late_reply, scheduler_fixture) {
  start(300ms);
  // A: its first step never comes back.
  admit(1, 4);
  BOOST_TEST(held() == 1u);
  BOOST_TEST(finished->empty());

  // The watchdog looks every step_timeout / 2: at 150 ms the step is not late yet...
  advance(150ms);
  BOOST_TEST(finished->empty());
  advance(149ms);
  BOOST_TEST(finished->empty());
  // ...at 300 ms it is: A fails, and nothing else happened meanwhile.
  advance(1ms);
  BOOST_REQUIRE_EQUAL(finished->size(), 1u);
  BOOST_TEST(finished->at(0).id.value == 1u);
  BOOST_TEST(std::string(finish_reason_name(finished->at(0).reason)) == "failed");
  BOOST_TEST(stats().n_in_flight == 0);

  // The hung reply arrives late: ignored (no second finish). Then B runs to completion as usual.
  caf::anon_send(replica, release_atom::value);
  run();
  BOOST_TEST(finished->size() == 1u);
  admit(2, 3);
  BOOST_REQUIRE_EQUAL(finished->size(), 2u);
  BOOST_TEST(finished->at(1).id.value == 2u);
  BOOST_TEST(std::string(finish_reason_name(finished->at(1).reason)) == "length");
  BOOST_TEST(finished->at(1).n_generated == 3);
  const auto st = stats();
  BOOST_TEST(st.n_in_flight == 0);
  BOOST_TEST(st.n_running == 0);
  BOOST_TEST(st.n_free_blocks == st.n_blocks);
}

BOOST_FIXTURE_TEST_CASE(a_step_answered_in_time_is_never_failed, scheduler_fixture) {
  start(300ms);
  admit(1, 2);
  advance(299ms);  // just inside the timeout
  BOOST_TEST(finished->empty());
  caf::anon_send(replica, release_atom::value);  // answers the held step and every later one
  run();
  // Long after: the watchdog has nothing left to fail, and it does not re-arm for nothing.
  advance(10'000ms);
  BOOST_REQUIRE_EQUAL(finished->size(), 1u);
  BOOST_TEST(std::string(finish_reason_name(finished->at(0).reason)) == "length");
  BOOST_TEST(finished->at(0).n_generated == 2);
  BOOST_TEST(!coordinator().has_pending_timeout());
}

BOOST_AUTO_TEST_SUITE_END()
