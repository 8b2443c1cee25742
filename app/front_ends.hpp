#pragma once
// What `troupe serve` and the head of a multi-host cluster (`troupe node`) put in front of the
// ROUTER: the client-protocol TCP server and, when the config enables it, the HTTP API. And the
// wait for SIGINT/SIGTERM both end with.
#include <signal.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/spawn_serve.hpp"
#include "transport/api_keys.hpp"
#include "transport/error.hpp"

namespace troupe::app {

class front_ends {
 public:
  /// `node` must outlive this object; api_keys: clients' keys with their limits (empty: open),
  /// one set for both listeners.
  front_ends(caf::actor_system& sys, actors::serve_node& node, std::shared_ptr<transport::api_key_set> api_keys);
  ~front_ends();  // stop()
  front_ends(const front_ends&) = delete;
  front_ends& operator=(const front_ends&) = delete;

  /// Starts listening (an address in use, ... is an error naming it).
  transport::result<void> start();
  void stop();

  /// "HOST:PORT" of the client protocol; of the HTTP API (empty when it is off); the HTTP API's
  /// URL ("https://HOST:PORT" with TLS).
  std::string client_address() const;
  std::string http_address() const;
  std::string http_url() const;
  /// The model id the HTTP API serves the model under.
  const std::string& model_id() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Waits up to `period` for SIGINT or SIGTERM (blocked in `signals`): the signal, or 0.
int stop_signal_within(const sigset_t& signals, std::chrono::milliseconds period);

/// Waits for SIGINT or SIGTERM (blocked in `signals`), calling `tick` every `period` meanwhile.
/// After the first signal, a second one exits the process at once with 128 + signal, after saying
/// so (the operator wants out now). `who` prefixes the messages ("troupe serve").
void wait_for_stop_signal(const sigset_t& signals, const std::string& who,
                          std::chrono::milliseconds period = std::chrono::milliseconds(500),
                          const std::function<void()>& tick = {});

}  // namespace troupe::app
