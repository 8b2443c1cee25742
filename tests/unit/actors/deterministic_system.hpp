#pragma once
// An actor system on CAF 0.17's deterministic test coordinator (scheduler.policy = testing):
// every actor runs on the test's thread when run() is called, and time is simulated: delayed
// messages and request timeouts fire only when the test advances the clock. Actor tests assert
// on what happened, never on how long it took, and never sleep.
#include <boost/test/unit_test.hpp>

#include <functional>
#include <memory>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors/spawn_serve.hpp"

namespace troupe::test {

class deterministic_system {
 public:
  deterministic_system() {
    actors::configure_actor_system(cfg_);
    cfg_.set("scheduler.policy", caf::atom("testing"));
    cfg_.set("logger.inline-output", true);
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    sched_ = &dynamic_cast<caf::scheduler::test_coordinator&>(sys_->scheduler());
  }
  deterministic_system(const deterministic_system&) = delete;
  deterministic_system& operator=(const deterministic_system&) = delete;
  /// Stops every actor spawned through keep() and lets them finish, or the system would wait.
  ~deterministic_system() {
    for (const caf::actor& a : kept_) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    run();
  }

  caf::actor_system& sys() { return *sys_; }
  caf::scheduler::test_coordinator& coordinator() { return *sched_; }

  /// Spawns `fun` and stops it at the end of the test.
  template <class... Ts>
  auto spawn(Ts&&... xs) {
    return keep(sys_->spawn(std::forward<Ts>(xs)...));
  }
  template <class Handle>
  Handle keep(Handle h) {
    kept_.push_back(caf::actor_cast<caf::actor>(h));
    return h;
  }

  /// Runs every queued message (bounded: a test that loops forever fails instead of hanging).
  size_t run() {
    const size_t n = sched_->run(max_events);
    BOOST_REQUIRE_MESSAGE(n < max_events, "actors still busy after " << max_events << " messages");
    return n;
  }
  /// Moves simulated time forward (firing what falls due), then runs what that queued.
  void advance(caf::timespan d) {
    sched_->advance_time(d);
    run();
  }

  /// Sends a request from a throwaway actor; `on_reply` or `on_error` runs during run().
  template <class Handle, class OnReply, class... Ts>
  void request(const Handle& to, OnReply on_reply, std::function<void(caf::error&)> on_error, Ts... xs) {
    auto to_h = to;
    sys_->spawn([=](caf::event_based_actor* self) mutable {
      self->request(to_h, caf::infinite, xs...).then(std::move(on_reply), std::move(on_error));
    });
  }

  static constexpr size_t max_events = 100'000;

 private:
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::scheduler::test_coordinator* sched_ = nullptr;
  std::vector<caf::actor> kept_;
};

}  // namespace troupe::test
