#include "actors/router.hpp"

#include <algorithm>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/request_check.hpp"
#include "engine/text_stream.hpp"

namespace troupe::actors {
namespace {

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

// A request in progress.
struct request_entry {
  request_id id{};
  stream_client_actor client;
  size_t replica = 0;
  bool accepted = false;  // the SCHEDULER admitted it and the client has its id
  bool stop_at_eos = true;
  int32_t n_prompt = 0;
  std::vector<int32_t> generated;  // every token received, in order (for replay later)
  // Detokenizes, holding back what may start a stop string: the request's stop strings, then
  // (with stop_at_eos) the model's end markers.
  std::unique_ptr<engine::text_stream> text;
  size_t n_request_stops = 0;      // stop strings [0, n) are the request's (reason stop); the rest end with eos
  std::string ready;               // text to send with the next chunk
  std::vector<int32_t> ids;        // ids to send with the next chunk
  int32_t finish_total = -1;       // tokens the SCHEDULER says it produced in all (-1: running)
  finish_reason reason = finish_reason::length;
  bool stop_string = false;
};

struct router_state {
  router_setup setup;
  std::unordered_map<request_id, request_entry> requests;
  std::vector<int> load;  // requests in progress per replica
  uint64_t next_id = 1;
  std::unordered_map<caf::actor_addr, int> clients;  // monitored clients -> requests in progress
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
    e.ready += e.text->finish();
    send_chunk(self, e);
  }
  stream_end end;
  end.id = e.id;
  end.reason = reason;
  end.error = err;
  end.message = std::move(message);
  end.prompt_tokens = e.n_prompt;
  end.completion_tokens = int32_t(e.generated.size());
  end.stop_string = e.stop_string;
  self->send(e.client, std::move(end));
  logger().debug("completed request_id={} reason={} tokens={}", e.id.value, finish_reason_name(reason),
                 e.generated.size());
  --st.load[e.replica];
  if (auto c = st.clients.find(e.client.address()); c != st.clients.end() && --c->second == 0) {
    self->demonitor(e.client.address());
    st.clients.erase(c);
  }
  st.requests.erase(e.id);
}

// Sends what is ready and completes the request once every token it produced has arrived.
void progress(router_pointer self, request_entry& e) {
  if (!e.accepted) return;
  send_chunk(self, e);
  if (e.finish_total >= 0 && int32_t(e.generated.size()) >= e.finish_total) {
    const serve_errc err = e.reason == finish_reason::failed ? serve_errc::failed : serve_errc::none;
    complete(self, e, e.reason, err, err == serve_errc::none ? "" : "a pipeline step failed");
  }
}

// One token for a request: detokenize, apply stop strings.
void on_token(router_pointer self, request_entry& e, int32_t token) {
  auto& st = self->state;
  e.generated.push_back(token);
  e.ids.push_back(token);
  if (e.stop_at_eos && st.setup.stop_rule.ends(token)) return;  // the end token itself is not text
  engine::text_stream::output out = e.text->push(token);
  e.ready += out.text;
  if (out.stopped) {
    const bool model_marker = out.stop_index >= e.n_request_stops;  // the model's end marker spelled out
    e.stop_string = !model_marker;
    e.finish_total = int32_t(e.generated.size());
    e.reason = model_marker ? finish_reason::eos : finish_reason::stop;
    self->send(st.setup.schedulers[e.replica], cancel_atom::value, e.id);
  }
}

void cancel_request(router_pointer self, request_entry& e) {
  self->send(self->state.setup.schedulers[e.replica], cancel_atom::value, e.id);
  if (!e.accepted) {  // the admit reply is still to come: finish when it does
    e.finish_total = int32_t(e.generated.size());
    e.reason = finish_reason::cancelled;
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

router_actor::behavior_type router_behavior(router_pointer self, router_setup setup) {
  auto& init = self->state;
  init.setup = std::move(setup);
  init.load.assign(init.setup.schedulers.size(), 0);
  // A client that goes away cancels what it had in progress.
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& rs = self->state;
    std::vector<request_id> mine;
    for (auto& [id, e] : rs.requests) {
      if (e.client.address() == dm.source) mine.push_back(id);
    }
    rs.clients.erase(dm.source);
    for (request_id id : mine) {
      auto it = rs.requests.find(id);
      if (it == rs.requests.end()) continue;
      logger().debug("client gone, cancelling request_id={}", id.value);
      self->send(rs.setup.schedulers[it->second.replica], cancel_atom::value, id);
      --rs.load[it->second.replica];
      rs.requests.erase(it);
    }
  });
  return {
    // A completion request: validate, tokenize, pick a replica, admit.
    [self](generate_atom, serve_request& r, stream_client_actor client) -> caf::result<request_id> {
      auto& st = self->state;
      if (!client) return make_error(serve_errc::invalid_request, "no client to stream to");
      if (st.setup.schedulers.empty()) return make_error(serve_errc::shutting_down, "no replicas");
      if (auto ok = check_request(r, rules_of(st.setup)); !ok) return make_error(ok.error().code, ok.error().message);
      auto ids = &r.prompt_tokens;
      const request_id id{st.next_id++};
      const size_t replica = size_t(std::min_element(st.load.begin(), st.load.end()) - st.load.begin());
      ++st.load[replica];

      request_entry e;
      e.id = id;
      e.client = client;
      e.replica = replica;
      e.stop_at_eos = r.stop_at_eos;
      e.n_prompt = int32_t(ids->size());
      std::vector<std::string> stops = r.stop;
      e.n_request_stops = stops.size();
      if (r.stop_at_eos) {
        stops.insert(stops.end(), st.setup.stop_rule.end_texts.begin(), st.setup.stop_rule.end_texts.end());
      }
      e.text = std::make_unique<engine::text_stream>(*st.setup.tokenizer, ids->back(), std::move(stops));
      st.requests.emplace(id, std::move(e));
      if (st.clients[client.address()]++ == 0) self->monitor(client);

      sequence_request sr;
      sr.spec.id = id;
      sr.spec.prompt = std::move(*ids);
      sr.spec.max_tokens = r.max_tokens;
      sr.spec.prio = r.prio;
      sr.spec.deadline_ns = r.deadline_ms > 0 ? now_ns() + r.deadline_ms * 1'000'000 : 0;
      sr.spec.stop_at_eos = r.stop_at_eos;
      sr.sampling = r.sampling;
      sr.sink = caf::actor_cast<token_sink_actor>(self);
      logger().debug("admitting request_id={} prompt_tokens={} replica={}", id.value, sr.spec.prompt.size(), replica);

      auto rp = self->make_response_promise<request_id>();
      self->request(st.setup.schedulers[replica], st.setup.admit_timeout, admit_atom::value, std::move(sr))
        .then(
          [self, rp, id](request_id) mutable {
            auto it = self->state.requests.find(id);
            rp.deliver(id);
            if (it == self->state.requests.end()) return;
            it->second.accepted = true;
            progress(self, it->second);
          },
          [self, rp, id](caf::error& err) mutable {
            auto& rs = self->state;
            if (auto it = rs.requests.find(id); it != rs.requests.end()) {
              --rs.load[it->second.replica];
              if (auto c = rs.clients.find(it->second.client.address()); c != rs.clients.end() && --c->second == 0) {
                self->demonitor(it->second.client.address());
                rs.clients.erase(c);
              }
              rs.requests.erase(it);
            }
            logger().debug("refused request_id={} error={}", id.value, describe(err));
            rp.deliver(std::move(err));
          });
      return rp;
    },
    // Client cancel.
    [self](cancel_atom, request_id id) {
      auto it = self->state.requests.find(id);
      if (it != self->state.requests.end()) cancel_request(self, it->second);
    },
    // Tokens from last stages: in order per request; duplicates and strays are dropped.
    [self](tokens_atom, token_batch& b) {
      auto& st = self->state;
      for (const sampled_token& t : b.tokens) {
        auto it = st.requests.find(t.id);
        if (it == st.requests.end()) continue;
        request_entry& e = it->second;
        if (e.finish_total >= 0 && int32_t(e.generated.size()) >= e.finish_total) continue;
        if (t.index != int32_t(e.generated.size())) continue;
        on_token(self, e, t.token);
        progress(self, e);
      }
    },
    // The SCHEDULER finished a sequence after n_generated tokens (they may still be on their way).
    [self](finished_atom, finished_seq& f) {
      auto it = self->state.requests.find(f.id);
      if (it == self->state.requests.end()) return;
      request_entry& e = it->second;
      if (e.finish_total >= 0) return;  // already finishing (stop string, cancel)
      e.finish_total = f.n_generated;
      e.reason = f.reason;
      progress(self, e);
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
