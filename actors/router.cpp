#include "actors/router.hpp"

#include <algorithm>
#include <optional>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/request_check.hpp"
#include "actors/request_table.hpp"

namespace troupe::actors {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

struct router_state {
  router_setup setup;
  std::unique_ptr<request_table> requests;  // over setup's tokenizer and stop rule
  std::vector<int> load;  // requests in progress per replica
  std::vector<bool> failed;  // replicas that gave up (their SCHEDULER said "replica failed")
  uint64_t next_id = 1;
  static inline const char* name = "router";
};

using router_pointer = router_actor::stateful_pointer<router_state>;

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
  --st.load[e.replica];
  const caf::actor_addr client = e.client.address();
  if (st.requests->erase(e.id)) self->demonitor(client);
}

// Sends what is ready and completes the request once every token it produced has arrived.
void progress(router_pointer self, request_entry& e) {
  if (!e.accepted) return;
  send_chunk(self, e);
  if (e.all_arrived()) {
    const serve_errc err = e.reason == finish_reason::failed ? serve_errc::failed : serve_errc::none;
    std::string why;
    if (err != serve_errc::none) why = e.failure.empty() ? "a pipeline step failed" : e.failure;
    complete(self, e, e.reason, err, std::move(why));
  }
}

void cancel_request(router_pointer self, request_entry& e) {
  self->send(self->state.setup.schedulers[e.replica], cancel_atom::value, e.id);
  if (!e.accepted) {  // the admit reply is still to come: finish when it does
    self->state.requests->cancel(e);
    return;
  }
  complete(self, e, finish_reason::cancelled);
}

// The replica with the fewest requests in progress, among those that have not failed.
std::optional<size_t> pick_replica(const router_state& st) {
  std::optional<size_t> best;
  for (size_t r = 0; r < st.load.size(); ++r) {
    if (st.failed[r]) continue;
    if (!best || st.load[r] < st.load[*best]) best = r;
  }
  return best;
}

// The request's replica failed: admit it on another one with the tokens it has so far (they are
// recomputed there; sampling goes on at the next index, so the text is unchanged). False when no
// other replica is left.
bool move_to_other_replica(router_pointer self, request_entry& e) {
  auto& st = self->state;
  auto other = pick_replica(st);
  if (!other) return false;
  logger().warn("moving request_id={} from failed replica {} to replica {} tokens_so_far={}", e.id.value, e.replica,
                *other, e.generated.size());
  --st.load[e.replica];
  ++st.load[*other];
  e.replica = *other;
  sequence_request sr;
  sr.spec = e.spec;
  sr.spec.generated = e.generated;
  sr.sampling = e.sampling;
  sr.sink = caf::actor_cast<token_sink_actor>(self);
  self->request(st.setup.schedulers[*other], st.setup.admit_timeout, admit_atom::value, std::move(sr))
    .then([](request_id) {},
          [self, id = e.id](caf::error& err) {
            request_entry* e = self->state.requests->find(id);
            if (e == nullptr) return;
            complete(self, *e, finish_reason::failed, serve_errc_of(err),
                     "its replica failed, and another refused it: " + describe(err));
          });
  return true;
}

// The ROUTER's rules for check_request: the whole context, vocabulary and max_tokens.
request_rules rules_of(const router_setup& setup) {
  return {.tokenizer = setup.tokenizer.get(),
          .max_prompt_tokens = size_t(std::max(1, setup.ctx_size - 1)),
          .max_prompt_bytes = 0,
          .vocab_size = setup.vocab_size,
          .max_new_tokens = setup.max_new_tokens};
}

router_actor::behavior_type router_behavior(router_pointer self, router_setup setup) {
  auto& init = self->state;
  init.setup = std::move(setup);
  init.load.assign(init.setup.schedulers.size(), 0);
  init.failed.assign(init.setup.schedulers.size(), false);
  init.requests = std::make_unique<request_table>(*init.setup.tokenizer, init.setup.stop_rule);
  // A client that goes away cancels what it had in progress.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& rs = self->state;
    for (auto [id, replica] : rs.requests->erase_client(dm.source)) {
      logger().debug("client gone, cancelling request_id={}", id.value);
      self->send(rs.setup.schedulers[replica], cancel_atom::value, id);
      --rs.load[replica];
    }
  });
  return {
    // A completion request: validate, tokenize, pick a replica, admit.
    [self](generate_atom, serve_request& r, stream_client_actor client) -> caf::result<request_id> {
      auto& st = self->state;
      if (!client) return make_error(serve_errc::invalid_request, "no client to stream to");
      if (st.setup.schedulers.empty()) return make_error(serve_errc::shutting_down, "no replicas");
      if (auto ok = check_request(r, rules_of(st.setup)); !ok) return make_error(ok.error().code, ok.error().message);
      const auto picked = pick_replica(st);
      if (!picked) return make_error(serve_errc::failed, "every replica has failed (see the server's log)");
      const request_id id{st.next_id++};
      const size_t replica = *picked;
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
      if (request_entry* e = st.requests->find(id)) {
        e->spec = sr.spec;
        e->sampling = sr.sampling;
      }
      logger().debug("admitting request_id={} prompt_tokens={} replica={}", id.value, sr.spec.prompt.size(), replica);

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
              --rs.load[e->replica];
              const caf::actor_addr client = e->client.address();
              if (rs.requests->erase(id)) self->demonitor(client);
            }
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
      for (const sampled_token& t : b.tokens) {
        request_entry* e = st.requests->find(t.id);
        if (e == nullptr) continue;
        const bool running = e->finish_total < 0;
        if (!st.requests->append(*e, t.index, t.token)) continue;
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
        if (e->replica < st.failed.size()) st.failed[e->replica] = true;
        if (e->accepted && move_to_other_replica(self, *e)) return;
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
  };
}

}  // namespace

router_actor spawn_router(caf::actor_system& sys, router_setup setup) {
  return sys.spawn(router_behavior, std::move(setup));
}

}  // namespace troupe::actors
