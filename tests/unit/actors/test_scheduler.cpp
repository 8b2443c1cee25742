// The SCHEDULER actor against a fake REPLICA: the step watchdog fails a micro-batch whose reply
// does not come within the step timeout, ignores that reply when it comes late, and keeps serving.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <numeric>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/scheduler.hpp"
#include "actors/spawn_node.hpp"

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

// Forwards what a sink receives to the test's scoped actor.
caf::behavior forwarding_sink(caf::event_based_actor*, caf::actor to) {
  return {
    [](tokens_atom, token_batch&) {},
    [to](finished_atom, finished_seq& f) { caf::anon_send(to, f); },
  };
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<caf::actor> actors;  // stopped at the end, also when a check failed (or the system would wait)
  fixture() {
    configure_actor_system(cfg);
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  ~fixture() {
    for (const caf::actor& a : actors) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  }
  template <class Handle>
  Handle keep(Handle h) {
    actors.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }
};

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

}  // namespace

BOOST_AUTO_TEST_SUITE(scheduler)

BOOST_FIXTURE_TEST_CASE(fails_a_hung_step_after_the_step_timeout_and_ignores_its_late_reply, fixture) {
  caf::scoped_actor test{*sys};
  auto replica = keep(sys->spawn(fake_replica));
  scheduler_setup setup;
  setup.replica = caf::actor_cast<replica_actor>(replica);
  setup.step_timeout = 300ms;
  auto sched = keep(spawn_scheduler(*sys, setup));
  auto sink = caf::actor_cast<token_sink_actor>(keep(sys->spawn(forwarding_sink, caf::actor{test})));

  // A: its first step never comes back; the watchdog fails it within 1.5 x the timeout (+ slack).
  const auto t0 = std::chrono::steady_clock::now();
  test->request(sched, 5s, admit_atom::value, request_for(1, 4, sink)).receive(
    [](request_id id) { BOOST_TEST(id.value == 1u); },
    [](caf::error& e) { BOOST_FAIL("admit failed: " << caf::to_string(e)); });
  bool failed = false;
  test->receive(
    [&](finished_seq& f) {
      BOOST_TEST(f.id.value == 1u);
      failed = f.reason == finish_reason::failed;
    },
    caf::after(5s) >> [] { BOOST_FAIL("no finish for a hung step"); });
  const auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(failed);
  BOOST_TEST(waited >= 300ms);
  BOOST_TEST(waited < 2s);

  // The hung reply arrives late: ignored. Then B runs to completion as usual.
  test->request(replica, 5s, hold_atom::value).receive([](size_t n) { BOOST_TEST(n == 1u); },
                                                       [](caf::error&) { BOOST_FAIL("replica gone"); });
  test->send(replica, release_atom::value);
  test->request(sched, 5s, admit_atom::value, request_for(2, 3, sink)).receive(
    [](request_id id) { BOOST_TEST(id.value == 2u); },
    [](caf::error& e) { BOOST_FAIL("admit failed: " << caf::to_string(e)); });
  test->receive(
    [&](finished_seq& f) {
      BOOST_TEST(f.id.value == 2u);
      BOOST_TEST(std::string(finish_reason_name(f.reason)) == "length");
      BOOST_TEST(f.n_generated == 3);
    },
    caf::after(5s) >> [] { BOOST_FAIL("B did not finish"); });
  test->request(sched, 5s, stats_atom::value).receive(
    [](scheduler_stats s) {
      BOOST_TEST(s.n_in_flight == 0);
      BOOST_TEST(s.n_running == 0);
      BOOST_TEST(s.n_free_blocks == s.n_blocks);
    },
    [](caf::error&) { BOOST_FAIL("no stats"); });

}

BOOST_AUTO_TEST_SUITE_END()
