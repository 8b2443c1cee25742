#pragma once
// The client-protocol TCP server: an Asio acceptor on its own I/O threads, one client_session
// per connection, decoded requests handed to a request_handler. Asio stays out of this header.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transport/api_keys.hpp"
#include "transport/client_protocol.hpp"
#include "transport/error.hpp"
#include "transport/request_handler.hpp"

namespace troupe::transport {

struct server_options {
  std::string host = "127.0.0.1";  // address to bind (an IP address or a resolvable name)
  uint16_t port = 0;               // 0: an ephemeral port, see tcp_server::port()
  size_t io_threads = 1;
  /// Null or empty: no authentication. Else hello must carry one of these keys, and each key's
  /// requests are held to its rate limits (errc::rate_limited) and run at its priority class.
  std::shared_ptr<api_key_set> api_keys;
  protocol_limits limits;
  std::string server_name = "troupe";
  std::string model;  // reported in hello_ok
  /// Bytes queued for a client that is not reading; past this the connection is closed.
  size_t max_write_queue_bytes = 8u << 20;
  /// Requests in flight on one connection; more get errc::overloaded.
  size_t max_requests_per_connection = 256;
  /// Open connections. At the cap a new connection takes the place of the one idle the longest
  /// (past its handshake with no request in flight and no partial frame, or still without a
  /// hello), which gets errc::overloaded and is closed; only when none is idle is the new one
  /// refused (errc::overloaded).
  size_t max_connections = 1024;
  /// Open connections from one peer address; more are refused with errc::overloaded. 0: no limit.
  size_t max_connections_per_peer = 256;
  /// Unparsed input (partial frames) buffered across all connections. Past it, the connection
  /// holding the most is closed with errc::overloaded. 0: no limit.
  size_t max_buffered_input_bytes = 32u << 20;
  // Timeouts: each one closes the connection with errc::timeout. 0: none (handshake: required).
  /// A connection that sends no hello within this time.
  std::chrono::milliseconds handshake_timeout{10'000};
  /// A frame header (10 bytes) not complete this long after its first byte arrived.
  std::chrono::milliseconds header_timeout{10'000};
  /// A frame payload not complete this long after its header arrived.
  std::chrono::milliseconds body_timeout{30'000};
  /// A connection past its handshake with no request in flight and no frame arriving for this
  /// long (counted from the handshake or the end of its last request).
  std::chrono::milliseconds idle_timeout{300'000};
  /// API key throttle: a peer address with this many failed hellos (wrong or missing key) within
  /// auth_failure_window is refused (errc::unauthorized, key not checked) until the window ends.
  /// Failures are logged as one summary line per window. 0: no lockout.
  size_t max_auth_failures = 10;
  std::chrono::milliseconds auth_failure_window{60'000};
  /// How long a closing connection may take to deliver its last error frame.
  std::chrono::milliseconds close_linger{1'000};
};

class tcp_server {
 public:
  /// `handler` must outlive stop().
  tcp_server(server_options options, request_handler& handler);
  ~tcp_server();  // stop()
  tcp_server(const tcp_server&) = delete;
  tcp_server& operator=(const tcp_server&) = delete;

  /// Binds, listens and starts the I/O threads. errc::io_error when the address cannot be bound.
  result<void> start();
  /// The bound port (the ephemeral one when options.port was 0); 0 before start().
  uint16_t port() const;
  /// Stops accepting, sends errc::shutting_down to every connection, closes them (on_disconnect
  /// for each), and joins the I/O threads. Idempotent. Not callable from a handler callback.
  void stop();
  /// Connections currently open (handshake done or not, closing ones included).
  size_t connection_count() const;
  /// Bytes of partial frames buffered across connections (tests).
  size_t buffered_input_bytes() const;

  const server_options& options() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace troupe::transport
