#pragma once
// The data plane: tagged byte messages (hidden states) between nodes over UCX, stage i straight to
// stage i+1. One UCP worker per data_plane, driven by one thread that sleeps on the worker's event
// fd and an eventfd for local commands: it never busy-polls. Messages are UCP active messages
// (eager for small ones, rendezvous for large ones); the control plane carries only their tags.
//
// Security: a peer must prove it holds the cluster secret before anything it sends is accepted.
// On connect both sides exchange nonces and answer with HMAC-SHA256(secret, nonce) (each side
// proves itself to the other); until then a peer's data messages are dropped and its endpoint is
// closed. Knows no actors (transport/).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "transport/error.hpp"

namespace troupe::transport {

struct data_plane_options {
  std::string host = "127.0.0.1";  // address to listen on (an IPv4 address)
  uint16_t port = 0;               // 0: an ephemeral port, see data_plane::port()
  std::string secret;              // the cluster secret; must not be empty
  std::string net_devices;         // UCX_NET_DEVICES ("lo", "eth0", ...); empty: UCX's choice
  /// UCX_TLS. The default leaves out shared memory: stage-to-stage traffic crosses hosts, and
  /// between processes of one machine in different network namespaces (the test hosts) shared
  /// memory moves the bytes but its wake-up signal (an abstract UNIX socket) does not arrive, so
  /// every message would wait for the next periodic progress (measured: ~1 s). TCP and RDMA
  /// transports stay. Empty: UCX's choice (all).
  std::string transports = "^sm";
  std::chrono::milliseconds handshake_timeout{5'000};
  /// Messages that arrived before anyone asked for their tag are kept up to this many bytes;
  /// past it the oldest are dropped (with a warning).
  size_t max_unclaimed_bytes = size_t(1) << 30;
};

/// A peer of this data plane (an endpoint to another process); 0 is none.
using peer_id = uint64_t;

/// A message from an authenticated peer.
struct data_message {
  peer_id from = 0;
  uint64_t tag = 0;
  std::vector<std::byte> bytes;
};

class data_plane {
 public:
  /// Runs on the data plane's thread when a peer's connection fails (process killed, link cut,
  /// closed): pending receives from it have already failed.
  using peer_down_fn = std::function<void(peer_id, const error&)>;
  using send_done_fn = std::function<void(result<void>)>;
  using receive_fn = std::function<void(result<data_message>)>;

  /// Creates the UCP context and worker, listens on options.host:port and starts the thread.
  /// errc::io_error when UCX cannot start or the address cannot be bound.
  static result<std::unique_ptr<data_plane>> start(data_plane_options options, peer_down_fn on_peer_down = {});
  ~data_plane();  // closes every endpoint (flushing what is queued), stops the thread
  data_plane(const data_plane&) = delete;
  data_plane& operator=(const data_plane&) = delete;

  /// The port the listener is bound to.
  uint16_t port() const;

  /// Connects to a peer's listener and runs the handshake; blocks until it is done or
  /// handshake_timeout passes. errc::unauthorized when the peer does not prove the secret (or
  /// rejects ours), errc::timeout, errc::io_error.
  result<peer_id> connect(const std::string& host, uint16_t port);

  /// Closes the connection to `peer` (without flushing) and forgets it: its pending receives
  /// fail, the other side sees the connection reset. For a connection whose user is gone (a stage
  /// replaced or stopped): every connect() makes a new one, and each holds UCX buffers. Unknown
  /// peers are ignored.
  void disconnect(peer_id peer);

  /// Sends `bytes` tagged `tag` to an authenticated peer. `done` (optional) runs on the data
  /// plane's thread once UCX is done with the bytes (ok) or the send failed.
  void send(peer_id to, uint64_t tag, std::vector<std::byte> bytes, send_done_fn done = {});

  /// Takes the message tagged `tag`: at once if it arrived already, else when it does. Fails with
  /// errc::timeout after `timeout`, and with errc::io_error when `from` (if not 0) goes down
  /// first. `done` runs on the data plane's thread. A tag is taken once.
  void receive(uint64_t tag, peer_id from, std::chrono::milliseconds timeout, receive_fn done);
  /// receive() that waits on the calling thread (not on the data plane's own).
  result<data_message> receive_wait(uint64_t tag, peer_id from, std::chrono::milliseconds timeout);

  struct counters {
    uint64_t n_sent = 0;
    uint64_t n_received = 0;
    uint64_t n_rejected = 0;  // messages or handshakes from peers without the secret
    uint64_t n_peers = 0;     // authenticated peers now
  };
  counters stats() const;

  /// Tests only: connects WITHOUT the handshake, as a peer that does not know the secret would.
  result<peer_id> connect_unauthenticated_for_test(const std::string& host, uint16_t port);

  struct impl;

 private:
  explicit data_plane(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::transport
