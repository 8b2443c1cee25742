#include "actors/stream_relay.hpp"

#include <caf/all.hpp>

#include "actors/logger.hpp"

namespace troupe::actors {

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
    case serve_errc::interrupted:
    case serve_errc::internal: return transport::errc::internal;
  }
  return transport::errc::internal;
}

namespace {

using clock = std::chrono::steady_clock;

struct relay_state {
  std::shared_ptr<transport::stream_sink> sink;
  std::shared_ptr<relay_registry> registry;
  relay_registry::key key;
  router_actor router;
  request_id id{};
  bool accepted = false;
  bool cancel_requested = false;
  clock::time_point received = clock::now();
  double ttft_ms = -1;
  static inline const char* name = "stream_relay";
};

double ms_since(clock::time_point t) { return std::chrono::duration<double, std::milli>(clock::now() - t).count(); }

relay_actor::behavior_type relay(relay_actor::stateful_pointer<relay_state> self,
                                 std::shared_ptr<transport::stream_sink> sink, std::shared_ptr<relay_registry> reg,
                                 router_actor router, serve_request req, std::chrono::milliseconds admit_timeout) {
  auto& init = self->state;
  init.sink = std::move(sink);
  init.registry = std::move(reg);
  init.key = {uint64_t(init.sink->connection()), init.sink->request_id()};
  init.router = router;
  self->attach_functor([reg = init.registry, key = init.key] { reg->erase(key); });
  self->request(router, admit_timeout, generate_atom::value, std::move(req), stream_client_actor{self})
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

void relay_registry::start(const std::shared_ptr<relay_registry>& self, caf::actor_system& sys,
                           const router_actor& router, std::chrono::milliseconds admit_timeout,
                           const request_rules& rules, std::shared_ptr<transport::stream_sink> sink,
                           serve_request request) {
  const key k{uint64_t(sink->connection()), sink->request_id()};
  if (auto ok = check_request(request, rules); !ok) {
    sink->send_error(client_code(ok.error().code), std::move(ok.error().message));
    return;
  }
  std::lock_guard lock(self->mutex_);  // the relay's first steps wait for its registration
  auto a = sys.spawn(relay, std::move(sink), self, router, std::move(request), admit_timeout);
  self->relays_[k] = a;
}

bool relay_registry::cancel(key k) {
  relay_actor a;
  {
    std::lock_guard lock(mutex_);
    auto it = relays_.find(k);
    if (it == relays_.end()) return false;
    a = it->second;
  }
  caf::anon_send(a, cancel_atom::value);
  return true;
}

void relay_registry::stop_connection(uint64_t connection) {
  std::vector<relay_actor> gone;
  {
    std::lock_guard lock(mutex_);
    for (auto it = relays_.lower_bound({connection, 0}); it != relays_.end() && it->first.first == connection; ++it) {
      gone.push_back(it->second);
    }
  }
  // The ROUTER monitors each relay: their exit cancels their requests.
  for (auto& a : gone) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

void relay_registry::stop_all() {
  std::map<key, relay_actor> relays;
  {
    std::lock_guard lock(mutex_);
    relays = relays_;
  }
  for (auto& [k, a] : relays) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

size_t relay_registry::size() const {
  std::lock_guard lock(mutex_);
  return relays_.size();
}

void relay_registry::erase(key k) {
  std::lock_guard lock(mutex_);
  relays_.erase(k);
}

}  // namespace troupe::actors
