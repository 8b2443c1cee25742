#pragma once
// The client-protocol TCP server: an Asio acceptor on its own I/O threads, one client_session
// per connection, decoded requests handed to a request_handler. Asio stays out of this header.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transport/client_protocol.hpp"
#include "transport/error.hpp"
#include "transport/request_handler.hpp"

namespace troupe::transport {

struct server_options {
  std::string host = "127.0.0.1";  // address to bind (an IP address or a resolvable name)
  uint16_t port = 0;               // 0: an ephemeral port, see tcp_server::port()
  size_t io_threads = 1;
  std::vector<std::string> api_keys;  // empty: no authentication; else hello must carry one of them
  protocol_limits limits;
  std::string server_name = "troupe";
  std::string model;  // reported in hello_ok
  /// Bytes queued for a client that is not reading; past this the connection is closed.
  size_t max_write_queue_bytes = 8u << 20;
  /// Requests in flight on one connection; more get errc::overloaded.
  size_t max_requests_per_connection = 256;
  /// Open connections; more get errc::overloaded and are closed.
  size_t max_connections = 1024;
  /// A connection that sends no hello within this time gets errc::timeout and is closed.
  std::chrono::milliseconds handshake_timeout{10'000};
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
  /// Connections currently open (handshake done or not).
  size_t connection_count() const;

  const server_options& options() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace troupe::transport
