// The REPLICA: a micro-batch whose stage is lost (the stage's actor is gone: its process died, or
// its node's connection closed) fails at once with `failed`, instead of waiting for the
// SCHEDULER's step timeout; later steps fail at once too.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <string>

#include <caf/all.hpp>

#include "actors/replica.hpp"
#include "actors/spawn_serve.hpp"

using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

// A stage that takes steps and never answers them (a stage on a node about to be lost).
stage_actor::behavior_type silent_stage(stage_actor::pointer self) {
  return {
    [self](step_atom, step_request&) -> caf::result<step_result> { return self->make_response_promise<step_result>(); },
    [self](hidden_atom, step_request&, hidden_states&) -> caf::result<step_result> {
      return self->make_response_promise<step_result>();
    },
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(replica)

BOOST_AUTO_TEST_CASE(a_lost_stage_fails_the_micro_batches_in_flight_at_once) {
  caf::actor_system_config cfg;
  configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  auto stage = sys.spawn(silent_stage);
  replica_setup setup;  // no supervisor: no failover
  setup.stages = {stage};
  auto replica = spawn_replica(sys, setup);
  caf::scoped_actor self{sys};
  step_request req;
  req.micro_batch = 7;
  const auto t0 = std::chrono::steady_clock::now();
  bool failed = false;
  std::string why;
  auto pending = self->request(replica, 30s, step_atom::value, req);
  caf::anon_send_exit(stage, caf::exit_reason::kill);
  pending.receive([&](const step_result&) { BOOST_FAIL("a silent stage answered"); },
                  [&](const caf::error& e) {
                    failed = serve_errc_of(e) == serve_errc::failed;
                    why = describe(e);
                  });
  BOOST_TEST(failed, why);
  BOOST_TEST(why.find("lost") != std::string::npos, why);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 10s));  // not the 30 s request timeout
  // The replica stays failed: the next step is refused at once.
  bool refused = false;
  self->request(replica, 30s, step_atom::value, req)
    .receive([&](const step_result&) {}, [&](const caf::error& e) { refused = serve_errc_of(e) == serve_errc::failed; });
  BOOST_TEST(refused);
  caf::anon_send_exit(replica, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
