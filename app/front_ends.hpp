#pragma once
// What `troupe serve` and the head of a multi-host cluster (`troupe node`) put in front of the
// ROUTER: the client-protocol TCP server and, when the config enables it, the HTTP API. And the
// wait for SIGINT/SIGTERM both end with.
#include <signal.h>

#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/placement.hpp"
#include "actors/spawn_serve.hpp"
#include "transport/api_keys.hpp"
#include "transport/error.hpp"

namespace troupe::app {

/// The ADMIN CONSOLE of a serving process (docs/operations.md, "The console"). Its token comes from
/// the cluster's [admin] token_file (`troupe serve --admin-token-file` sets it).
struct admin_front_options {
  actors::head_actor head;          // a multi-host head: the nodes it knows (invalid: `troupe serve`)
  std::string this_node = "local";  // where stages placed on no node run
  // `replica add` on a multi-host head: the nodes that are up now, and the stages each holds
  // (unset: `troupe serve`, where replicas start in this process).
  std::function<actors::node_load()> nodes_now;
};

/// The admin token in `path`: its first line, trimmed; an error naming the file when it cannot be
/// read or is empty (a warning when other users may read it).
std::expected<std::string, std::string> read_admin_token(const std::string& path);

class front_ends {
 public:
  /// `node` must outlive this object; api_keys: clients' keys with their limits (empty: open),
  /// one set for both listeners.
  front_ends(caf::actor_system& sys, actors::serve_node& node, std::shared_ptr<transport::api_key_set> api_keys,
             admin_front_options admin = {});
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
  /// The ADMIN actor (tests, the head).
  actors::admin_actor admin() const;

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
