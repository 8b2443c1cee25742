#include "actors/tcp_gateway.hpp"

#include <map>
#include <mutex>
#include <random>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/logger.hpp"

namespace troupe::actors {

struct tcp_gateway::registry {
  mutable std::mutex mutex;
  std::map<std::pair<uint64_t, uint64_t>, caf::actor> relays;

  void erase(std::pair<uint64_t, uint64_t> key) {
    std::lock_guard lock(mutex);
    relays.erase(key);
  }
};

namespace {

using clock = std::chrono::steady_clock;

// The one place where control-plane errors become client error codes.
transport::errc client_code(serve_errc e) {
  switch (e) {
    case serve_errc::invalid_request: return transport::errc::invalid_request;
    case serve_errc::overloaded: return transport::errc::overloaded;
    case serve_errc::too_long: return transport::errc::prompt_too_long;
    case serve_errc::cancelled: return transport::errc::cancelled;
    case serve_errc::deadline_exceeded: return transport::errc::deadline_exceeded;
    case serve_errc::shutting_down: return transport::errc::shutting_down;
    case serve_errc::none:
    case serve_errc::failed:
    case serve_errc::internal: return transport::errc::internal;
  }
  return transport::errc::internal;
}

struct relay_state {
  std::shared_ptr<transport::stream_sink> sink;
  std::shared_ptr<tcp_gateway::registry> registry;
  std::pair<uint64_t, uint64_t> key;
  router_actor router;
  request_id id{};
  bool accepted = false;
  bool cancel_requested = false;
  clock::time_point received = clock::now();
  double ttft_ms = -1;
  static inline const char* name = "tcp_relay";
};

double ms_since(clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); }

caf::behavior relay(caf::stateful_actor<relay_state>* self, std::shared_ptr<transport::stream_sink> sink,
                    std::shared_ptr<tcp_gateway::registry> reg, router_actor router, serve_request req,
                    std::chrono::milliseconds admit_timeout) {
  auto& init = self->state;
  init.sink = std::move(sink);
  init.registry = std::move(reg);
  init.key = {uint64_t(init.sink->connection()), init.sink->request_id()};
  init.router = router;
  self->attach_functor([reg = init.registry, key = init.key] { reg->erase(key); });
  self->request(router, admit_timeout, generate_atom::value, std::move(req), caf::actor_cast<caf::actor>(self))
    .then(
      [self](request_id id) {
        auto& rs = self->state;
        rs.id = id;
        rs.accepted = true;
        if (rs.cancel_requested) self->send(rs.router, cancel_atom::value, id);
      },
      [self](caf::error& e) {
        self->state.sink->send_error(client_code(serve_errc_of(e)), describe(e));
        self->quit();
      });
  return {
    [self](stream_chunk& c) {
      auto& st = self->state;
      if (st.ttft_ms < 0) st.ttft_ms = ms_since(st.received);
      if (!st.sink->send_chunk(std::move(c.text), std::move(c.ids)) && st.sink->closed()) {
        self->send(st.router, cancel_atom::value, st.id);  // nobody is listening any more
      }
    },
    [self](stream_end& e) {
      auto& st = self->state;
      if (e.error != serve_errc::none) {
        st.sink->send_error(client_code(e.error), e.message.empty() ? serve_errc_name(e.error) : e.message);
      } else if (e.reason == finish_reason::deadline && e.completion_tokens == 0) {
        st.sink->send_error(transport::errc::deadline_exceeded, "the deadline passed before any output");
      } else {
        transport::final_frame f;
        switch (e.reason) {
          case finish_reason::eos: f.reason = transport::finish_reason::stop; break;
          case finish_reason::length:
          case finish_reason::context_full: f.reason = transport::finish_reason::length; break;
          case finish_reason::stop:
            f.reason = e.stop_string ? transport::finish_reason::stop_string : transport::finish_reason::stop;
            break;
          case finish_reason::cancelled: f.reason = transport::finish_reason::cancelled; break;
          case finish_reason::deadline: f.reason = transport::finish_reason::deadline; break;
          case finish_reason::failed: f.reason = transport::finish_reason::stop; break;
        }
        f.prompt_tokens = uint32_t(e.prompt_tokens);
        f.completion_tokens = uint32_t(e.completion_tokens);
        f.ttft_ms = st.ttft_ms < 0 ? 0 : st.ttft_ms;
        f.total_ms = ms_since(st.received);
        st.sink->send_final(f);
      }
      self->quit();
    },
    // The client cancelled this request.
    [self](cancel_atom) {
      auto& st = self->state;
      if (st.accepted) {
        self->send(st.router, cancel_atom::value, st.id);
      } else {
        st.cancel_requested = true;
      }
    },
  };
}

}  // namespace

serve_request to_serve_request(const transport::generate_request& r) {
  serve_request s;
  s.prompt = r.prompt;
  s.prompt_tokens = r.prompt_tokens;
  s.max_tokens = int32_t(r.max_tokens);
  s.sampling.temperature = r.temperature;
  s.sampling.top_p = r.top_p;
  s.sampling.top_k = r.top_k;
  s.sampling.repetition_penalty = r.repetition_penalty;
  if (r.seed) {
    s.sampling.seed = *r.seed;
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    s.sampling.seed = rng();
  }
  s.stop = r.stop;
  s.prio = r.priority == transport::request_priority::batch ? priority::batch : priority::interactive;
  s.deadline_ms = r.deadline_ms;
  return s;
}

tcp_gateway::tcp_gateway(caf::actor_system& sys, router_actor router, std::chrono::milliseconds admit_timeout,
                         std::shared_ptr<const engine::tokenizer> tokenizer, size_t max_prompt_tokens)
    : sys_(sys),
      router_(std::move(router)),
      admit_timeout_(admit_timeout),
      tokenizer_(std::move(tokenizer)),
      max_prompt_tokens_(max_prompt_tokens),
      registry_(std::make_shared<registry>()) {
  if (tokenizer_ && max_prompt_tokens_ > 0) max_prompt_bytes_ = tokenizer_->max_piece_bytes() * max_prompt_tokens_;
}

tcp_gateway::~tcp_gateway() {
  std::map<std::pair<uint64_t, uint64_t>, caf::actor> relays;
  {
    std::lock_guard lock(registry_->mutex);
    relays = registry_->relays;
  }
  for (auto& [key, a] : relays) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

void tcp_gateway::on_generate(std::shared_ptr<transport::stream_sink> sink, transport::generate_request request) {
  const std::pair<uint64_t, uint64_t> key{uint64_t(sink->connection()), sink->request_id()};
  serve_request req = to_serve_request(request);
  if (tokenizer_ && !req.prompt.empty() && req.prompt_tokens.empty()) {
    // Refused by its length alone, before any tokenizing: no token covers more bytes than the
    // tokenizer's longest piece.
    if (max_prompt_bytes_ > 0 && req.prompt.size() > max_prompt_bytes_) {
      sink->send_error(transport::errc::prompt_too_long,
                       fmt::format("a prompt of {} bytes cannot fit the limit of {} tokens (at most {} bytes)",
                                   req.prompt.size(), max_prompt_tokens_, max_prompt_bytes_));
      return;
    }
    req.prompt_tokens = tokenizer_->encode(req.prompt, true);  // as the ROUTER would
    req.prompt.clear();
  }
  if (max_prompt_tokens_ > 0 && req.prompt_tokens.size() > max_prompt_tokens_) {
    sink->send_error(transport::errc::prompt_too_long,
                     fmt::format("a prompt of {} tokens does not fit the context of {}", req.prompt_tokens.size(),
                                 max_prompt_tokens_ + 1));
    return;
  }
  std::lock_guard lock(registry_->mutex);  // the relay's first steps wait for its registration
  auto a = sys_.spawn(relay, std::move(sink), registry_, router_, std::move(req), admit_timeout_);
  registry_->relays[key] = a;
}

void tcp_gateway::on_cancel(transport::connection_id connection, uint64_t request_id) {
  caf::actor a;
  {
    std::lock_guard lock(registry_->mutex);
    auto it = registry_->relays.find({uint64_t(connection), request_id});
    if (it == registry_->relays.end()) return;
    a = it->second;
  }
  caf::anon_send(a, cancel_atom::value);
}

void tcp_gateway::on_disconnect(transport::connection_id connection) {
  std::vector<caf::actor> gone;
  {
    std::lock_guard lock(registry_->mutex);
    const uint64_t c = uint64_t(connection);
    for (auto it = registry_->relays.lower_bound({c, 0}); it != registry_->relays.end() && it->first.first == c; ++it) {
      gone.push_back(it->second);
    }
  }
  // The ROUTER monitors each relay: their exit cancels their requests.
  for (auto& a : gone) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

size_t tcp_gateway::n_in_progress() const {
  std::lock_guard lock(registry_->mutex);
  return registry_->relays.size();
}

}  // namespace troupe::actors
