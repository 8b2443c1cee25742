#include "actors/scheduler.hpp"

#include <algorithm>
#include <memory>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"

namespace troupe::actors {
namespace {


struct scheduler_state {
  scheduler_setup setup;
  std::unique_ptr<batch_policy> policy;
  struct sequence_meta {
    engine::sampling_params sampling;
    token_sink_actor sink;
  };
  std::unordered_map<request_id, sequence_meta> meta;
  // Micro-batches in flight -> when they were sent (ns) and their decode steps. A reply for one
  // no longer here (the watchdog failed it) is ignored.
  struct in_flight_step {
    int64_t since = 0;
    int n_steps = 1;
  };
  std::unordered_map<uint64_t, in_flight_step> in_flight;
  int64_t step_ns = 0;  // time of one decode step, as last measured (0: not yet)
  bool schedule_queued = false;
  bool watchdog_armed = false;
  // The replica is being rebuilt: nothing is planned until it says it is back (wait_atom).
  bool paused = false;
  std::string replica_failed;  // the replica gave up (why): new requests are refused
  uint64_t generation = 1;     // the replica's chain our sequences are on (step_request::generation)
  scheduler_stats stats;
  static inline const char* name = "scheduler";
};

using scheduler_pointer = scheduler_actor::stateful_pointer<scheduler_state>;

// The actor system's clock (the steady clock; simulated time under CAF's test coordinator, so
// the watchdog can be tested without waiting).
int64_t now_ns(scheduler_pointer self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(self->clock().now().time_since_epoch()).count();
}

// Tells each finished sequence's sink; forgets the sequence.
void notify_finished(scheduler_pointer self, const std::vector<finished_seq>& finished) {
  auto& st = self->state;
  for (const finished_seq& f : finished) {
    auto it = st.meta.find(f.id);
    if (it == st.meta.end()) continue;
    logger().debug("finished request_id={} reason={} tokens={}", f.id.value, finish_reason_name(f.reason),
                   f.n_generated);
    if (it->second.sink) self->send(it->second.sink, finished_atom::value, f);
    st.meta.erase(it);
  }
}

// Coalesces wake-ups: one schedule message however many admissions arrive at once.
void queue_schedule(scheduler_pointer self) {
  if (self->state.schedule_queued) return;
  self->state.schedule_queued = true;
  self->send(self, schedule_atom::value);
}

// One timer for all steps in flight, not a timeout per step request: a per-request timeout
// wakes CAF's clock thread on every step (once per generated token at batch 1), which on a
// 2-core machine is taken from the engine's threads. A step is failed between step_timeout
// and 1.5 x step_timeout after it was sent.
void arm_watchdog(scheduler_pointer self) {
  auto& st = self->state;
  if (st.watchdog_armed || st.in_flight.empty()) return;
  st.watchdog_armed = true;
  self->delayed_send(self, std::max(st.setup.step_timeout / 2, std::chrono::milliseconds(1)), watchdog_atom::value);
}

void pump(scheduler_pointer self);

// The replica lost its stages (error interrupted): every sequence is recomputed on the new chain
// (batch_policy::reset_all), nothing is planned until the replica is back; if it never comes
// back, every sequence fails.
void pause_for_recovery(scheduler_pointer self) {
  auto& st = self->state;
  st.in_flight.clear();  // their replies, if any, are stale
  const int n = st.policy->reset_all();
  if (st.paused) return;
  st.paused = true;
  logger().warn("replica recovering: scheduler paused, replaying sequences={}", n);
  self->request(st.setup.replica, caf::infinite, wait_atom::value)
    .then(
      [self](uint64_t generation) {
        self->state.paused = false;
        self->state.generation = generation;
        logger().info("replica back generation={}: scheduler resumed", generation);
        pump(self);
      },
      [self](caf::error& e) {
        auto& cur = self->state;
        cur.paused = false;
        logger().error("replica cannot recover: failing its sequences error={}", describe(e));
        cur.replica_failed = describe(e);
        auto finished = cur.policy->finish_all(finish_reason::failed);
        for (auto& f : finished) f.message = "replica failed: " + describe(e);
        notify_finished(self, finished);
        pump(self);
      });
}

// A step's reply (or its failure): the micro-batch leaves the pipeline.
bool take_in_flight(scheduler_pointer self, uint64_t micro_batch, bool measure = false) {
  auto& st = self->state;
  auto it = st.in_flight.find(micro_batch);
  if (it == st.in_flight.end()) return false;  // already failed by the watchdog
  if (measure && st.in_flight.size() == 1) st.step_ns = (now_ns(self) - it->second.since) / it->second.n_steps;
  st.in_flight.erase(it);
  return true;
}

// Decode steps the next request may run: as many as fit the budget at the last measured speed.
int decode_steps(const scheduler_state& st) {
  if (st.setup.max_decode_steps <= 1 || st.step_ns <= 0) return 1;
  const int64_t budget = std::chrono::duration_cast<std::chrono::nanoseconds>(st.setup.decode_steps_budget).count();
  return int(std::clamp<int64_t>(budget / st.step_ns, 1, st.setup.max_decode_steps));
}

// Plans and sends micro-batches while the pipeline has room.
void pump(scheduler_pointer self) {
  auto& st = self->state;
  while (!st.paused && int(st.in_flight.size()) < st.setup.max_in_flight) {
    step_plan plan = st.policy->plan(now_ns(self), decode_steps(st));
    notify_finished(self, plan.finished);
    if (plan.empty()) break;

    step_request req;
    req.micro_batch = plan.micro_batch;
    req.released = std::move(plan.released);
    for (planned_seq& p : plan.seqs) {
      if (!p.is_new) continue;
      const auto& m = st.meta.at(p.id);
      req.added.push_back(new_sequence{p.id, std::move(p.history), m.sampling, m.sink, st.policy->stop_ids(p.id)});
      p.history.clear();
    }
    req.work = std::move(plan.seqs);
    req.n_steps = plan.n_steps;
    req.generation = st.generation;
    st.stats.n_steps += plan.n_steps;
    ++st.stats.n_step_requests;
    st.stats.n_step_tokens += int64_t(plan.n_tokens) * plan.n_steps;
    logger().trace("step micro_batch={} seqs={} tokens={} decodes={} steps={} preempted={}", plan.micro_batch,
                   req.work.size(), plan.n_tokens, plan.n_decodes, plan.n_steps, plan.n_preempted);
    const uint64_t mb = plan.micro_batch;
    st.in_flight[mb] = scheduler_state::in_flight_step{now_ns(self), plan.n_steps};
    arm_watchdog(self);
    self->request(st.setup.replica, caf::infinite, step_atom::value, std::move(req))
      .then(
        [self, mb](step_result& r) {
          if (!take_in_flight(self, mb, true)) return;
          notify_finished(self, self->state.policy->on_result(r.micro_batch, r.tokens));
          pump(self);
        },
        [self, mb](caf::error& e) {
          if (!take_in_flight(self, mb)) return;
          if (serve_errc_of(e) == serve_errc::interrupted) {
            pause_for_recovery(self);
            return;
          }
          logger().error("step failed micro_batch={} error={}", mb, describe(e));
          auto finished = self->state.policy->on_failure(mb);
          for (auto& f : finished) f.message = describe(e);
          notify_finished(self, finished);
          pump(self);
        });
  }
}

scheduler_actor::behavior_type scheduler_behavior(scheduler_pointer self, scheduler_setup setup) {
  auto& init = self->state;
  init.setup = std::move(setup);
  init.policy = std::make_unique<batch_policy>(init.setup.policy);
  init.stats.n_blocks = init.setup.policy.n_blocks;
  return {
    // Queue a sequence (or refuse it); planning happens after the reply is out.
    [self](admit_atom, sequence_request& r) -> caf::result<request_id> {
      auto& st = self->state;
      const request_id id = r.spec.id;
      const int n_prompt = int(r.spec.prompt.size());
      if (!st.replica_failed.empty()) return make_error(serve_errc::failed, "replica failed: " + st.replica_failed);
      switch (st.policy->admit(std::move(r.spec), now_ns(self))) {
        case admit_status::ok: break;
        case admit_status::overloaded:
          return make_error(serve_errc::overloaded,
                            fmt::format("the waiting queue is full ({} requests)", st.setup.policy.max_waiting));
        case admit_status::too_long:
          return make_error(serve_errc::too_long,
                            fmt::format("a prompt of {} tokens plus max_tokens does not fit the context ({}) or "
                                        "the KV cache ({} blocks of {})",
                                        n_prompt, st.setup.policy.ctx_size, st.setup.policy.n_blocks,
                                        st.setup.policy.block_size));
      }
      st.meta[id] = scheduler_state::sequence_meta{r.sampling, std::move(r.sink)};
      logger().debug("admitted request_id={} prompt_tokens={}", id.value, n_prompt);
      queue_schedule(self);
      return id;
    },
    // Cancel: blocks are free at once; a result in flight for it is ignored.
    [self](cancel_atom, request_id id) {
      if (self->state.policy->cancel(id)) {
        self->state.meta.erase(id);
        logger().debug("cancelled request_id={}", id.value);
        queue_schedule(self);
      }
    },
    [self](schedule_atom) {
      self->state.schedule_queued = false;
      pump(self);
    },
    [self](watchdog_atom) {
      auto& st = self->state;
      st.watchdog_armed = false;
      const int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(st.setup.step_timeout).count();
      const int64_t now = now_ns(self);
      std::vector<uint64_t> expired;
      for (const auto& [mb, f] : st.in_flight) {
        if (now - f.since >= limit * f.n_steps) expired.push_back(mb);
      }
      for (uint64_t mb : expired) {
        take_in_flight(self, mb);
        logger().error("step failed micro_batch={} error=no reply within the step timeout ({} ms)", mb,
                       st.setup.step_timeout.count());
        notify_finished(self, st.policy->on_failure(mb));
      }
      arm_watchdog(self);
      if (!expired.empty()) pump(self);
    },
    [self](stats_atom) -> scheduler_stats {
      auto& st = self->state;
      scheduler_stats s = st.stats;
      s.n_free_blocks = st.policy->n_free_blocks();
      s.n_waiting = st.policy->n_waiting();
      s.n_running = st.policy->n_running();
      s.n_in_flight = st.policy->n_in_flight();
      s.n_preemptions = st.policy->n_preemptions();
      s.step_ns = st.step_ns;
      return s;
    },
  };
}

}  // namespace

scheduler_actor spawn_scheduler(caf::actor_system& sys, scheduler_setup setup) {
  return sys.spawn(scheduler_behavior, std::move(setup));
}

}  // namespace troupe::actors
