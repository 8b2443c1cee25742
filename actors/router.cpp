#include "actors/router.hpp"

#include <algorithm>
#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "engine/sampling.hpp"

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
  std::unique_ptr<engine::incremental_decoder> decoder;
  std::vector<std::string> stop;   // stop strings: the request's, then the model's end markers
  size_t n_request_stops = 0;      // stop[0, n) are the request's (reason stop); the rest end with eos
  size_t max_stop = 0;             // longest stop string
  std::string held;                // text not yet sent (may be the start of a stop string)
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

// Moves text out of `held` once it can no longer be the start of a stop string.
void release_text(request_entry& e, bool all) {
  size_t cut = e.held.size();
  if (!all && e.max_stop > 1) {
    cut = e.held.size() > e.max_stop - 1 ? e.held.size() - (e.max_stop - 1) : 0;
    while (cut > 0 && cut < e.held.size() && (static_cast<unsigned char>(e.held[cut]) & 0xC0) == 0x80) --cut;
  }
  e.ready.append(e.held, 0, cut);
  e.held.erase(0, cut);
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
    e.held += e.decoder->flush();
    release_text(e, true);
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
  e.held += e.decoder->push(token);
  if (!e.stop.empty()) {
    size_t hit = std::string::npos;
    bool model_marker = false;  // the earliest match is the model's end marker spelled out
    for (size_t i = 0; i < e.stop.size(); ++i) {
      const size_t at = e.held.find(e.stop[i]);
      if (at < hit) {
        hit = at;
        model_marker = i >= e.n_request_stops;
      }
    }
    if (hit != std::string::npos) {
      e.held.resize(hit);
      e.stop_string = !model_marker;
      e.finish_total = int32_t(e.generated.size());
      e.reason = model_marker ? finish_reason::eos : finish_reason::stop;
      self->send(st.setup.schedulers[e.replica], cancel_atom::value, e.id);
      release_text(e, true);
      return;
    }
  }
  release_text(e, false);
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

// Validates a request; returns the prompt's token ids or an error.
caf::expected<std::vector<int32_t>> prepare(const router_state& st, const serve_request& r) {
  if (r.max_tokens < 0 || r.max_tokens > st.setup.max_new_tokens) {
    return make_error(serve_errc::invalid_request,
                      fmt::format("max_tokens {} is outside [0, {}]", r.max_tokens, st.setup.max_new_tokens));
  }
  if (auto bad = engine::validate(r.sampling); !bad.empty()) return make_error(serve_errc::invalid_request, bad);
  if (!r.prompt.empty() && !r.prompt_tokens.empty()) {
    return make_error(serve_errc::invalid_request, "give either prompt text or prompt tokens, not both");
  }
  for (const std::string& s : r.stop) {
    if (s.empty()) return make_error(serve_errc::invalid_request, "empty stop string");
  }
  std::vector<int32_t> ids = r.prompt_tokens;
  if (ids.empty()) {
    if (r.prompt.empty()) return make_error(serve_errc::invalid_request, "the prompt is empty");
    ids = st.setup.tokenizer->encode(r.prompt, true);
  }
  for (int32_t t : ids) {
    if (t < 0 || (st.setup.vocab_size > 0 && t >= st.setup.vocab_size)) {
      return make_error(serve_errc::invalid_request, fmt::format("token id {} is outside the vocabulary", t));
    }
  }
  if (int(ids.size()) >= st.setup.ctx_size) {
    return make_error(serve_errc::too_long,
                      fmt::format("a prompt of {} tokens does not fit the context of {}", ids.size(), st.setup.ctx_size));
  }
  return ids;
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
      auto ids = prepare(st, r);
      if (!ids) return std::move(ids.error());
      const request_id id{st.next_id++};
      const size_t replica = size_t(std::min_element(st.load.begin(), st.load.end()) - st.load.begin());
      ++st.load[replica];

      request_entry e;
      e.id = id;
      e.client = client;
      e.replica = replica;
      e.stop_at_eos = r.stop_at_eos;
      e.n_prompt = int32_t(ids->size());
      e.decoder = std::make_unique<engine::incremental_decoder>(*st.setup.tokenizer, ids->back());
      e.stop = r.stop;
      e.n_request_stops = e.stop.size();
      if (r.stop_at_eos) {
        e.stop.insert(e.stop.end(), st.setup.stop_rule.end_texts.begin(), st.setup.stop_rule.end_texts.end());
      }
      for (const auto& s : e.stop) e.max_stop = std::max(e.max_stop, s.size());
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
