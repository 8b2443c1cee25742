#include "actors/router.hpp"

#include <algorithm>
#include <deque>
#include <optional>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/replica_metrics.hpp"
#include "actors/request_check.hpp"
#include "actors/request_table.hpp"

namespace troupe::actors {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// The ADMIN CONSOLE's view of a replica: routing (weight, drain) and what the tokens measured.
struct replica_slot {
  double weight = 1.0;
  bool failed = false;  // it gave up after its failover budget (actors/supervisor.hpp)
  bool draining = false;
  bool removed = false;
  int32_t consecutive_failures = 0;
  int64_t n_failures = 0;
  int64_t n_completed = 0;
  replica_metrics metrics;
};

// What a request needs beyond request_table's entry: when it arrived (TTFT), its last token (ITL),
// and the sequence as admitted, so that a request that failed before its first token can be
// admitted again on another replica.
struct request_extra {
  sequence_request admitted;
  int64_t received_ns = 0;
  int64_t last_token_ns = 0;
  int32_t retries = 0;
};

struct router_state {
  router_setup setup;
  std::unique_ptr<request_table> requests;  // over setup's tokenizer and stop rule
  std::vector<int> load;  // requests in progress per replica
  uint64_t next_id = 1;
  std::vector<replica_slot> slots;  // per replica
  replica_picker picker;
  std::unordered_map<request_id, request_extra> extra;
  rollback_policy rollback;
  std::deque<admin_event> events;  // the most recent, oldest first
  static inline const char* name = "router";
};

using router_pointer = full_router_actor::stateful_pointer<router_state>;

void add_event(router_state& st, std::string kind, int32_t replica, std::string message) {
  logger().warn("{} replica={} {}", kind, replica, message);
  st.events.push_back(admin_event{unix_ms(), std::move(kind), replica, std::move(message)});
  while (st.events.size() > 64) st.events.pop_front();
}

// A request left a replica: one less in progress; a draining replica with none left is idle.
void release_load(router_state& st, size_t replica) {
  --st.load[replica];
  if (st.slots[replica].draining && st.load[replica] == 0 && !st.slots[replica].removed) {
    logger().info("replica drained replica={}", replica);
    st.events.push_back(admin_event{unix_ms(), "drained", int32_t(replica), "drained: idle"});
    while (st.events.size() > 64) st.events.pop_front();
  }
}

replica_route route_of(router_state& st, size_t i, int64_t now) {
  const replica_slot& s = st.slots[i];
  replica_route r;
  r.index = int32_t(i);
  r.weight = s.weight;
  r.draining = s.draining;
  r.in_flight = st.load[i];
  r.consecutive_failures = s.consecutive_failures;
  r.n_failures = s.n_failures;
  r.n_completed = s.n_completed;
  if (s.removed) {
    r.state = "removed";
  } else if (s.draining) {
    r.state = st.load[i] > 0 ? "draining" : "idle";
  } else {
    r.state = s.weight > 0 ? "active" : "standby";
  }
  auto& m = st.slots[i].metrics;
  r.tok_per_s = m.tok_per_s(now);
  const auto t = m.ttft(now);
  const auto l = m.itl(now);
  r.ttft_p50_ms = t.p50_ms;
  r.ttft_p99_ms = t.p99_ms;
  r.n_ttft_samples = t.n;
  r.itl_p50_ms = l.p50_ms;
  r.itl_p99_ms = l.p99_ms;
  return r;
}

// The automatic rollback: a replica over the thresholds goes to weight 0 (unless it is the last
// one taking requests: then there is nothing to roll back to, and it is only logged).
void check_rollback(router_state& st, size_t i, int64_t now) {
  replica_slot& s = st.slots[i];
  if (s.weight <= 0 || s.removed) return;
  // The percentiles cost a sort: only when the TTFT threshold is on.
  const auto ttft = st.rollback.ttft_p99_ms > 0 ? s.metrics.ttft(now) : replica_metrics::percentiles{};
  const std::string why = rollback_reason(st.rollback, s.consecutive_failures, ttft);
  if (why.empty()) return;
  bool other = false;
  for (size_t j = 0; j < st.slots.size(); ++j) {
    if (j != i && !st.slots[j].removed && !st.slots[j].draining && st.slots[j].weight > 0) other = true;
  }
  if (!other) {
    logger().error("replica over its rollback threshold but it is the last one taking requests replica={} why={}", i,
                   why);
    return;
  }
  s.weight = 0;
  s.metrics.reset_latency();
  s.consecutive_failures = 0;
  add_event(st, "rollback", int32_t(i), fmt::format("rolled back to weight 0: {}", why));
}

std::vector<pick_candidate> candidates(const router_state& st) {
  std::vector<pick_candidate> c(st.slots.size());
  for (size_t i = 0; i < c.size(); ++i) {
    c[i] = pick_candidate{st.slots[i].weight, st.load[i],
                          !st.slots[i].draining && !st.slots[i].removed && !st.slots[i].failed};
  }
  return c;
}

void send_chunk(router_pointer self, request_entry& e) {
  if (e.ready.empty() && e.ids.empty()) return;
  self->send(e.client, stream_chunk{e.id, std::move(e.ready), std::move(e.ids)});
  e.ready.clear();
  e.ids.clear();
}

// Ends a request: the rest of its text, then stream_end; forgets it.
void complete(router_pointer self, request_entry& e, finish_reason reason, serve_errc err = serve_errc::none,
              std::string message = {}) {
  auto& st = self->state;
  if (err == serve_errc::none) {
    st.requests->flush(e);
    send_chunk(self, e);
  }
  stream_end end;
  end.id = e.id;
  end.reason = reason;
  end.error = err;
  end.message = std::move(message);
  end.prompt_tokens = int32_t(e.prompt.size());
  end.completion_tokens = int32_t(e.generated.size());
  end.stop_string = e.stop_string;
  self->send(e.client, std::move(end));
  logger().debug("completed request_id={} reason={} tokens={}", e.id.value, finish_reason_name(reason),
                 e.generated.size());
  if (err == serve_errc::none && reason != finish_reason::cancelled) {
    st.slots[e.replica].consecutive_failures = 0;
    ++st.slots[e.replica].n_completed;
  }
  st.extra.erase(e.id);
  release_load(st, e.replica);
  const caf::actor_addr client = e.client.address();
  if (st.requests->erase(e.id)) self->demonitor(client);
}

void admit_on(router_pointer self, request_id id, size_t replica);

// A request failed on its replica: counted against it (the automatic rollback), and, when another
// replica takes requests, admitted there instead with the tokens it has so far (recomputed; the
// counter-based sampler goes on at the next index, so the text is the same as a first run; at
// most twice per request). True when it was moved.
bool retry_elsewhere(router_pointer self, request_entry& e) {
  auto& st = self->state;
  const int64_t now = now_ns();
  replica_slot& failed = st.slots[e.replica];
  ++failed.n_failures;
  ++failed.consecutive_failures;
  check_rollback(st, e.replica, now);
  auto x = st.extra.find(e.id);
  if (x == st.extra.end() || x->second.retries >= 2) return false;
  auto next = st.picker.pick(candidates(st), e.replica);
  if (!next) return false;
  logger().info("retrying request_id={} failed_replica={} replica={}", e.id.value, e.replica, *next);
  ++x->second.retries;
  release_load(st, e.replica);
  e.replica = *next;
  ++st.load[*next];
  e.finish_total = -1;
  e.reason = finish_reason::length;
  e.failure.clear();
  // With the tokens it has so far: recomputed there, and sampling goes on at the next index
  // (counter-based), so the client's text continues unchanged.
  x->second.admitted.spec.generated = e.generated;
  admit_on(self, e.id, *next);
  return true;
}

// Sends what is ready and completes the request once every token it produced has arrived.
void progress(router_pointer self, request_entry& e) {
  if (!e.accepted) return;
  send_chunk(self, e);
  if (e.all_arrived() && e.reason == finish_reason::failed && retry_elsewhere(self, e)) return;
  if (e.all_arrived()) {
    const serve_errc err = e.reason == finish_reason::failed ? serve_errc::failed : serve_errc::none;
    std::string why;
    if (err != serve_errc::none) why = e.failure.empty() ? "a pipeline step failed" : e.failure;
    complete(self, e, e.reason, err, std::move(why));
  }
}

// Admits a request that failed before its first token on another replica (retry_elsewhere).
void admit_on(router_pointer self, request_id id, size_t replica) {
  auto& st = self->state;
  auto x = st.extra.find(id);
  if (x == st.extra.end()) return;
  self->request(st.setup.schedulers[replica], st.setup.admit_timeout, admit_atom::value, x->second.admitted)
    .then([](request_id) {},
          [self, id](caf::error& err) {
            request_entry* e = self->state.requests->find(id);
            if (e == nullptr) return;
            logger().warn("retry refused request_id={} error={}", id.value, describe(err));
            complete(self, *e, finish_reason::failed, serve_errc::failed,
                     "a pipeline step failed, and the retry on another replica was refused: " + describe(err));
          });
}

void cancel_request(router_pointer self, request_entry& e) {
  self->send(self->state.setup.schedulers[e.replica], cancel_atom::value, e.id);
  if (!e.accepted) {  // the admit reply is still to come: finish when it does
    self->state.requests->cancel(e);
    return;
  }
  complete(self, e, finish_reason::cancelled);
}

// The ROUTER's rules for check_request: the whole context, vocabulary and max_tokens.
request_rules rules_of(const router_setup& setup) {
  return {.tokenizer = setup.tokenizer.get(),
          .max_prompt_tokens = size_t(std::max(1, setup.ctx_size - 1)),
          .max_prompt_bytes = 0,
          .vocab_size = setup.vocab_size,
          .max_new_tokens = setup.max_new_tokens};
}

full_router_actor::behavior_type router_behavior(router_pointer self, router_setup setup) {
  auto& init = self->state;
  init.setup = std::move(setup);
  init.load.assign(init.setup.schedulers.size(), 0);
  init.slots.resize(init.setup.schedulers.size());
  init.requests = std::make_unique<request_table>(*init.setup.tokenizer, init.setup.stop_rule);
  // A client that goes away cancels what it had in progress.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& rs = self->state;
    for (auto [id, replica] : rs.requests->erase_client(dm.source)) {
      logger().debug("client gone, cancelling request_id={}", id.value);
      self->send(rs.setup.schedulers[replica], cancel_atom::value, id);
      rs.extra.erase(id);
      release_load(rs, replica);
    }
  });
  return {
    // A completion request: validate, tokenize, pick a replica, admit.
    [self](generate_atom, serve_request& r, stream_client_actor client) -> caf::result<request_id> {
      auto& st = self->state;
      if (!client) return make_error(serve_errc::invalid_request, "no client to stream to");
      if (st.setup.schedulers.empty()) return make_error(serve_errc::shutting_down, "no replicas");
      if (auto ok = check_request(r, rules_of(st.setup)); !ok) return make_error(ok.error().code, ok.error().message);
      auto chosen = st.picker.pick(candidates(st));
      if (!chosen) {
        const bool all_failed = std::all_of(st.slots.begin(), st.slots.end(), [](const auto& x) { return x.failed; });
        return all_failed ? make_error(serve_errc::failed, "every replica has failed (see the server's log)")
                          : make_error(serve_errc::overloaded, "no replica takes new requests (all drained or at weight 0)");
      }
      const request_id id{st.next_id++};
      const size_t replica = *chosen;
      ++st.load[replica];

      const int64_t deadline_ns = r.deadline_ms > 0 ? now_ns() + r.deadline_ms * 1'000'000 : 0;
      const bool first_of_client = st.requests->add(request_table::new_request{
        .id = id, .client = client, .replica = replica, .prompt = r.prompt_tokens, .stop = r.stop,
        .stop_at_eos = r.stop_at_eos, .deadline_ns = deadline_ns});
      if (first_of_client) self->monitor(client);

      sequence_request sr;
      sr.spec.id = id;
      sr.spec.prompt = std::move(r.prompt_tokens);
      sr.spec.max_tokens = r.max_tokens;
      sr.spec.prio = r.prio;
      sr.spec.deadline_ns = deadline_ns;
      sr.spec.stop_at_eos = r.stop_at_eos;
      sr.sampling = r.sampling;
      sr.sink = caf::actor_cast<token_sink_actor>(self);
      logger().debug("admitting request_id={} prompt_tokens={} replica={}", id.value, sr.spec.prompt.size(), replica);
      st.extra[id] = request_extra{sr, now_ns(), 0, 0};

      auto rp = self->make_response_promise<request_id>();
      self->request(st.setup.schedulers[replica], st.setup.admit_timeout, admit_atom::value, std::move(sr))
        .then(
          [self, rp, id](request_id) mutable {
            request_entry* e = self->state.requests->find(id);
            rp.deliver(id);
            if (e == nullptr) return;
            e->accepted = true;
            progress(self, *e);
          },
          [self, rp, id](caf::error& err) mutable {
            auto& rs = self->state;
            if (request_entry* e = rs.requests->find(id)) {
              release_load(rs, e->replica);
              const caf::actor_addr client_addr = e->client.address();
              if (rs.requests->erase(id)) self->demonitor(client_addr);
            }
            rs.extra.erase(id);
            logger().debug("refused request_id={} error={}", id.value, describe(err));
            rp.deliver(std::move(err));
          });
      return rp;
    },
    // Client cancel.
    [self](cancel_atom, request_id id) {
      if (request_entry* e = self->state.requests->find(id)) cancel_request(self, *e);
    },
    // Tokens from last stages: in order per request; duplicates and strays are dropped.
    [self](tokens_atom, token_batch& b) {
      auto& st = self->state;
      const int64_t now = now_ns();
      for (const sampled_token& t : b.tokens) {
        request_entry* e = st.requests->find(t.id);
        if (e == nullptr) continue;
        const bool running = e->finish_total < 0;
        const bool first = e->generated.empty();
        if (!st.requests->append(*e, t.index, t.token)) continue;
        // Measurements for the ADMIN CONSOLE: throughput, TTFT, time between token deliveries.
        replica_slot& slot = st.slots[e->replica];
        slot.metrics.add_tokens(now, 1);
        if (auto x = st.extra.find(e->id); x != st.extra.end()) {
          if (first) {
            slot.metrics.add_ttft(now, double(now - x->second.received_ns) / 1e6);
            check_rollback(st, e->replica, now);
          } else if (now > x->second.last_token_ns) {
            slot.metrics.add_itl(now, double(now - x->second.last_token_ns) / 1e6);
          }
          x->second.last_token_ns = now;
        }
        // A stop string matched: the SCHEDULER stops the sequence.
        if (running && e->finish_total >= 0) self->send(st.setup.schedulers[e->replica], cancel_atom::value, e->id);
        progress(self, *e);
      }
    },
    // The SCHEDULER finished a sequence after n_generated tokens (they may still be on their way).
    [self](finished_atom, finished_seq& f) {
      auto& st = self->state;
      request_entry* e = st.requests->find(f.id);
      if (e != nullptr && e->finish_total < 0 && f.reason == finish_reason::failed &&
          f.message.starts_with("replica failed")) {
        // Its replica gave up: no new requests go there; progress() admits this one elsewhere.
        if (e->replica < st.slots.size() && !st.slots[e->replica].failed) {
          st.slots[e->replica].failed = true;
          logger().error("replica {} failed: it takes no more requests", e->replica);
        }
      }
      // Already finishing (stop string, cancel): nothing more to do.
      if (e == nullptr || !st.requests->finish(*e, f.n_generated, f.reason)) return;
      e->failure = std::move(f.message);
      progress(self, *e);
    },
    // Every replica's SCHEDULER counters.
    [self](stats_atom) -> caf::result<std::vector<scheduler_stats>> {
      auto& st = self->state;
      auto rp = self->make_response_promise<std::vector<scheduler_stats>>();
      const size_t n = st.setup.schedulers.size();
      auto acc = std::make_shared<std::vector<scheduler_stats>>(n);
      auto left = std::make_shared<size_t>(n);
      if (n == 0) {
        rp.deliver(std::vector<scheduler_stats>{});
        return rp;
      }
      for (size_t i = 0; i < n; ++i) {
        if (st.slots[i].removed) {  // stopped: nothing to count
          if (--*left == 0) rp.deliver(*acc);
          continue;
        }
        self->request(st.setup.schedulers[i], std::chrono::seconds(10), stats_atom::value)
          .then(
            [rp, acc, left, i](scheduler_stats s) mutable {
              (*acc)[i] = s;
              if (--*left == 0) rp.deliver(*acc);
            },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      }
      return rp;
    },
    // ---- the ADMIN CONSOLE's interface ----
    // Every replica's routing state and measurements.
    [self](status_atom) -> std::vector<replica_route> {
      auto& st = self->state;
      std::vector<replica_route> out;
      const int64_t now = now_ns();
      for (size_t i = 0; i < st.slots.size(); ++i) out.push_back(route_of(st, i, now));
      return out;
    },
    // Requests in flight.
    [self](requests_atom) -> std::vector<request_info> {
      auto& st = self->state;
      std::vector<request_info> out;
      const int64_t now = now_ns();
      for (const auto& [id, x] : st.extra) {
        request_entry* e = st.requests->find(id);
        if (e == nullptr) continue;
        out.push_back(request_info{id, int32_t(e->replica), (now - x.received_ns) / 1'000'000, int32_t(e->prompt.size()),
                                   int32_t(e->generated.size()), x.retries});
      }
      std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
      return out;
    },
    // Drain or undrain.
    [self](drain_atom, int32_t replica, bool on) -> caf::result<replica_route> {
      auto& st = self->state;
      if (replica < 0 || size_t(replica) >= st.slots.size() || st.slots[size_t(replica)].removed) {
        return make_error(admin_errc::bad_argument, fmt::format("no replica {}", replica));
      }
      const bool was = st.slots[size_t(replica)].draining;
      st.slots[size_t(replica)].draining = on;
      logger().info("{} replica={} in_flight={}", on ? "draining" : "undrained", replica, st.load[size_t(replica)]);
      if (on && !was && st.load[size_t(replica)] == 0) {
        st.events.push_back(admin_event{unix_ms(), "drained", replica, "drained: idle"});
      }
      return route_of(st, size_t(replica), now_ns());
    },
    // Weighted routing.
    [self](weight_atom, int32_t replica, double w) -> caf::result<replica_route> {
      auto& st = self->state;
      if (replica < 0 || size_t(replica) >= st.slots.size() || st.slots[size_t(replica)].removed) {
        return make_error(admin_errc::bad_argument, fmt::format("no replica {}", replica));
      }
      if (!(w >= 0) || w > 1e6) return make_error(admin_errc::bad_argument, "a weight is a number >= 0");
      st.slots[size_t(replica)].weight = w;
      if (w > 0) st.slots[size_t(replica)].consecutive_failures = 0;
      return route_of(st, size_t(replica), now_ns());
    },
    // A new replica.
    [self](add_replica_atom, scheduler_actor sched, double w) -> int32_t {
      auto& st = self->state;
      st.setup.schedulers.push_back(std::move(sched));
      st.load.push_back(0);
      st.slots.emplace_back();
      st.slots.back().weight = w;
      logger().info("replica added replica={} weight={}", st.slots.size() - 1, w);
      return int32_t(st.slots.size() - 1);
    },
    // Forget an idle replica.
    [self](remove_replica_atom, int32_t replica) -> caf::result<replica_route> {
      auto& st = self->state;
      if (replica < 0 || size_t(replica) >= st.slots.size() || st.slots[size_t(replica)].removed) {
        return make_error(admin_errc::bad_argument, fmt::format("no replica {}", replica));
      }
      if (!st.slots[size_t(replica)].draining || st.load[size_t(replica)] > 0) {
        return make_error(admin_errc::refused, fmt::format("replica {} is not idle (drain it first)", replica));
      }
      st.slots[size_t(replica)].removed = true;
      st.setup.schedulers[size_t(replica)] = nullptr;
      logger().info("replica removed replica={}", replica);
      return route_of(st, size_t(replica), now_ns());
    },
    // Rollback thresholds.
    [self](rollback_atom, rollback_policy p) -> rollback_policy {
      auto& rb = self->state.rollback;
      if (p.max_consecutive_failures >= 0) rb.max_consecutive_failures = p.max_consecutive_failures;
      if (p.ttft_p99_ms >= 0) rb.ttft_p99_ms = p.ttft_p99_ms;
      if (p.min_samples >= 0) rb.min_samples = p.min_samples;
      return rb;
    },
    // Recent events.
    [self](events_atom) -> std::vector<admin_event> {
      return {self->state.events.begin(), self->state.events.end()};
    },
  };
}

}  // namespace

router_actor spawn_router(caf::actor_system& sys, router_setup setup) {
  return caf::actor_cast<router_actor>(sys.spawn(router_behavior, std::move(setup)));
}

}  // namespace troupe::actors
