#pragma once
// The gate in front of a node's control plane (CAF). CAF's own port listens on 127.0.0.1 only; the
// gate listens on the node's address and lets a TCP connection through to CAF only after the peer
// proved the cluster secret (challenge-response, both directions, within a deadline). Outgoing
// connections go the same way: CAF connects to a local port of a gate_client, which connects to
// the remote gate, proves the secret and relays.
//
// Why not CAF's TLS alone (it still runs, behind the gate): in CAF 0.17.6 a connection that
// closes before its handshake completes (a port scan, a node with the wrong secret failing TLS)
// makes the broker drop established node connections (measured: a joined worker was lost at
// every such attempt). Nothing unauthenticated reaches CAF now. Knows no actors (transport/).
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "transport/error.hpp"

namespace troupe::transport {

struct gate_options {
  std::string secret;                           // the cluster secret (non-empty)
  std::chrono::milliseconds handshake_timeout{5'000};
};

/// Inbound: listens on host:port; relays authenticated connections to 127.0.0.1:target_port.
class gate_server {
 public:
  static result<std::unique_ptr<gate_server>> start(const std::string& host, uint16_t port, uint16_t target_port,
                                                    gate_options options);
  ~gate_server();  // closes the listener and every relay
  gate_server(const gate_server&) = delete;
  gate_server& operator=(const gate_server&) = delete;
  uint16_t port() const;
  uint64_t n_rejected() const;  // connections that did not prove the secret

  struct impl;

 private:
  explicit gate_server(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

/// Outbound: listens on 127.0.0.1:ephemeral; relays each connection to the gate at host:port
/// after proving the secret there (and checking the gate's proof).
class gate_client {
 public:
  static result<std::unique_ptr<gate_client>> start(const std::string& host, uint16_t port, gate_options options);
  ~gate_client();
  gate_client(const gate_client&) = delete;
  gate_client& operator=(const gate_client&) = delete;
  uint16_t local_port() const;  // where CAF connects

  struct impl;

 private:
  explicit gate_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::transport
