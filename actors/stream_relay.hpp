#pragma once
// The request path every gateway shares (client protocol, HTTP): a serve_request goes to the
// ROUTER with a small relay actor per request, which carries the request's stream_chunk /
// stream_end messages back to a transport::stream_sink. The ROUTER monitors each relay: a relay
// that exits (its client went away) cancels its request.
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/request_check.hpp"
#include "transport/request_handler.hpp"

namespace troupe::actors {

/// The relays of one gateway in progress, by (connection, the client's request id).
class relay_registry {
 public:
  using key = std::pair<uint64_t, uint64_t>;

  /// Checks the request against the gateway's `rules` (check_request: with a tokenizer, the
  /// prompt is tokenized here, so a long prompt does not hold up the ROUTER); a refusal goes to
  /// `sink` at once. Otherwise spawns the relay that asks the ROUTER and streams to `sink`.
  static void start(const std::shared_ptr<relay_registry>& self, caf::actor_system& sys, const router_actor& router,
                    std::chrono::milliseconds admit_timeout, const request_rules& rules,
                    std::shared_ptr<transport::stream_sink> sink, serve_request request);
  /// Asks the relay of (connection, request id) to cancel its request (the stream then ends with
  /// reason cancelled). False if there is no such relay.
  bool cancel(key k);
  /// Stops the relays of a connection (the ROUTER then cancels their requests).
  void stop_connection(uint64_t connection);
  /// Stops every relay.
  void stop_all();
  size_t size() const;

  void erase(key k);

 private:
  mutable std::mutex mutex_;
  std::map<key, relay_actor> relays_;
};

/// The one place where control-plane errors become client error codes.
transport::errc client_code(serve_errc e);

}  // namespace troupe::actors
