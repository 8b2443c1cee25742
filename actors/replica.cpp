#include "actors/replica.hpp"

#include <algorithm>
#include <deque>
#include <limits>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/step_times.hpp"
#include "actors/step_timing.hpp"

namespace troupe::actors {
namespace {

enum class replica_mode { running, recovering, failed };

struct replica_state {
  replica_setup setup;
  std::vector<stage_actor> stages;
  uint64_t generation = 1;  // of the chain in `stages`; bumped when a rebuild starts
  replica_mode mode = replica_mode::running;
  std::string reason;       // why it is recovering or failed
  // Micro-batches in the pipeline, answered when the last stage replies, or failed at once when
  // a stage is lost (its process died, its node's connection closed): the requester does not
  // wait for its step timeout. CAF gives a request to a lost remote actor no error of its own.
  struct pending_step {
    caf::response_promise rp;
    int64_t since_ns = 0;
    int32_t n_steps = 1;
    uint64_t generation = 0;
    int64_t tokens = 1;  // per decode step (step_tokens)
  };
  std::unordered_map<uint64_t, pending_step> pending;
  step_timing timing;  // the last replies' step times (hang threshold); kept across rebuilds
  std::vector<step_times> stage_times;  // [stage] what each stage of the chain reports (status)
  std::vector<caf::response_promise> waiters;  // wait_atom requests while recovering
  bool watchdog_armed = false;
  static inline const char* name = "replica";
};

using replica_pointer = replica_actor::stateful_pointer<replica_state>;

int64_t now_ns(replica_pointer self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(self->clock().now().time_since_epoch()).count();
}

// In flight for longer than this (per decode step of the request) means hung.
int64_t hang_threshold_ns(const replica_state& st, int64_t tokens) {
  const int64_t floor = std::chrono::duration_cast<std::chrono::nanoseconds>(st.setup.hang_floor).count();
  return st.timing.threshold_ns(tokens, floor, st.setup.hang_factor);
}

void arm_watchdog(replica_pointer self) {
  auto& st = self->state;
  if (st.watchdog_armed || st.pending.empty() || !st.setup.supervisor) return;
  st.watchdog_armed = true;
  self->delayed_send(self, std::max(st.setup.hang_floor / 4, std::chrono::milliseconds(20)), watchdog_atom::value);
}

void fail_pending(replica_pointer self, const caf::error& e) {
  auto& st = self->state;
  for (auto& [mb, p] : st.pending) p.rp.deliver(e);
  st.pending.clear();
}

// A stage is lost or hung: stop the chain, fail what is in flight with `interrupted` (the
// SCHEDULER replays it), and ask the SUPERVISOR for a new chain.
void begin_recovery(replica_pointer self, std::string reason) {
  auto& st = self->state;
  if (st.mode != replica_mode::running) return;
  if (!st.setup.supervisor) {
    // No failover: the replica cannot run steps any more.
    st.mode = replica_mode::failed;
    st.reason = reason;
    logger().error("replica lost a stage replica={} reason={} failing_in_flight={}", st.setup.index, reason,
                   st.pending.size());
    fail_pending(self, make_error(serve_errc::failed, reason));
    return;
  }
  st.mode = replica_mode::recovering;
  st.reason = reason;
  ++st.generation;
  logger().warn("replica recovering replica={} generation={} reason={} interrupted_steps={}", st.setup.index,
                st.generation, reason, st.pending.size());
  fail_pending(self, make_error(serve_errc::interrupted, reason));
  for (auto& s : st.stages) {
    self->demonitor(caf::actor_cast<caf::actor_addr>(s));
    // A stage that is only hung (or on a node cut off) stops when its message arrives; its late
    // replies find nothing pending here.
    self->send_exit(s, caf::exit_reason::user_shutdown);
  }
  st.stages.clear();
  st.stage_times.clear();
  const uint64_t generation = st.generation;
  self->request(st.setup.supervisor, caf::infinite, restart_atom::value, st.setup.index, reason)
    .then(
      [self, generation](std::vector<stage_actor>& stages) {
        auto& cur = self->state;
        if (cur.generation != generation || cur.mode != replica_mode::recovering) return;
        cur.stages = std::move(stages);
        cur.stage_times.assign(cur.stages.size(), step_times{});
        for (auto& s : cur.stages) self->monitor(s);
        cur.mode = replica_mode::running;
        logger().info("replica recovered replica={} generation={} stages={}", cur.setup.index, cur.generation,
                      cur.stages.size());
        for (auto& w : cur.waiters) w.deliver(cur.generation);
        cur.waiters.clear();
      },
      [self, generation](const caf::error& e) {
        auto& cur = self->state;
        if (cur.generation != generation) return;
        cur.mode = replica_mode::failed;
        cur.reason = describe(e);
        logger().error("replica failed replica={} reason={}", cur.setup.index, cur.reason);
        for (auto& w : cur.waiters) w.deliver(make_error(serve_errc::failed, cur.reason));
        cur.waiters.clear();
      });
}

replica_actor::behavior_type replica_behavior(replica_pointer self, replica_setup setup) {
  self->state.setup = std::move(setup);
  self->state.stages = std::move(self->state.setup.stages);
  self->state.stage_times.resize(self->state.stages.size());
  for (auto& s : self->state.stages) self->monitor(s);
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& st = self->state;
    for (size_t i = 0; i < st.stages.size(); ++i) {
      if (dm.source != caf::actor_cast<caf::actor_addr>(st.stages[i])) continue;
      begin_recovery(self, fmt::format("stage {} lost ({})", i, caf::to_string(dm.reason)));
      return;
    }
  });
  return {
    // A micro-batch enters at the first stage; the last stage's reply comes back here and goes on
    // to our requester.
    [self](step_atom, step_request& req) -> caf::result<step_result> {
      auto& st = self->state;
      if (st.mode == replica_mode::failed) return make_error(serve_errc::failed, st.reason);
      if (st.mode == replica_mode::recovering) return make_error(serve_errc::interrupted, st.reason);
      if (st.stages.empty()) return make_error(serve_errc::internal, "replica without stages");
      // Planned for an older chain (the SCHEDULER has not replayed on this one yet): its sequences
      // are unknown to the new stages.
      if (req.generation != st.generation) {
        return make_error(serve_errc::interrupted, fmt::format("step planned for chain {} (now {})", req.generation,
                                                               st.generation));
      }
      const uint64_t mb = req.micro_batch;
      auto rp = self->make_response_promise<step_result>();
      st.pending[mb] =
          replica_state::pending_step{rp, now_ns(self), std::max(1, req.n_steps), st.generation, step_tokens(req)};
      arm_watchdog(self);
      self->request(st.stages.front(), caf::infinite, step_atom::value, std::move(req))
        .then(
          [self, mb, generation = st.generation](step_result& r) {
            auto& cur = self->state;
            auto it = cur.pending.find(mb);
            if (it == cur.pending.end() || it->second.generation != generation) {
              logger().debug("stale step reply dropped replica={} micro_batch={} generation={}", cur.setup.index, mb,
                             generation);
              return;
            }
            cur.timing.record((now_ns(self) - it->second.since_ns) / it->second.n_steps, it->second.tokens);
            for (size_t i = 0; i < r.stage_ns.size() && i < cur.stage_times.size(); ++i) {
              cur.stage_times[i].add(r.stage_ns[i]);
            }
            it->second.rp.deliver(std::move(r));
            cur.pending.erase(it);
          },
          [self, mb, generation = st.generation](const caf::error& e) {
            auto& cur = self->state;
            auto it = cur.pending.find(mb);
            if (it == cur.pending.end() || it->second.generation != generation) return;
            if (e.category() == caf::atom("system")) {
              // CAF's own error (request_receiver_down: a stage died with the step): the chain is
              // broken, often before its down message arrives.
              begin_recovery(self, fmt::format("a stage is lost ({})", self->system().render(e)));
              return;
            }
            it->second.rp.deliver(e);
            cur.pending.erase(it);
          });
      return rp;
    },
    [self](wait_atom) -> caf::result<uint64_t> {
      auto& st = self->state;
      if (st.mode == replica_mode::running) return st.generation;
      if (st.mode == replica_mode::failed) return make_error(serve_errc::failed, st.reason);
      auto rp = self->make_response_promise<uint64_t>();
      st.waiters.push_back(rp);
      return rp;
    },
    [self](lost_atom, std::string& reason) { begin_recovery(self, std::move(reason)); },
    [self](stats_atom) {
      const auto& st = self->state;
      replica_report r;
      r.state = st.mode == replica_mode::running      ? "running"
                : st.mode == replica_mode::recovering ? "recovering"
                                                      : "failed";
      r.reason = st.reason;
      r.generation = st.generation;
      for (const auto& t : st.stage_times) r.stage_step_ms.push_back(t.median_ms());
      return r;
    },
    [self](watchdog_atom) {
      auto& st = self->state;
      st.watchdog_armed = false;
      if (st.mode != replica_mode::running) return;
      const int64_t now = now_ns(self);
      for (const auto& [mb, p] : st.pending) {
        const int64_t limit = hang_threshold_ns(st, p.tokens);
        if (limit == std::numeric_limits<int64_t>::max()) continue;  // nothing measured yet
        const int64_t age = now - p.since_ns;
        if (age / p.n_steps > limit) {
          begin_recovery(self, fmt::format("step {} ({} tokens) in flight for {} ms (hang threshold {} ms): a stage "
                                           "is hung", mb, p.tokens, age / 1'000'000,
                                           limit / 1'000'000 * p.n_steps));
          return;
        }
      }
      arm_watchdog(self);
    },
  };
}

}  // namespace

replica_actor spawn_replica(caf::actor_system& sys, replica_setup setup) {
  return sys.spawn(replica_behavior, std::move(setup));
}

}  // namespace troupe::actors
