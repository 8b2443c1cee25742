#pragma once
// A small blocking client for the client protocol (docs/protocol.md), for `troupe client`,
// `troupe bench` and tests. One client = one connection with its own I/O thread; generate()
// blocks the calling thread, and several threads may call it at once on one client (their
// requests run concurrently on the connection). For many connections, make many clients.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "transport/client_protocol.hpp"
#include "transport/error.hpp"

namespace troupe::transport {

struct client_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string api_key;  // empty: none
  std::string client_name = "troupe-client";
  std::chrono::milliseconds connect_timeout{5'000};  // TCP connect plus the hello exchange
  uint32_t max_frame_bytes = default_max_frame_bytes;
};

/// Called once per token_chunk received, in order, on the client's I/O thread while generate()
/// waits (no hand-off to the caller's thread per token). It must not call generate() on the same
/// client; an exception it throws cancels the request and is rethrown by generate().
using chunk_callback = std::function<void(const token_chunk&)>;

class client {
 public:
  /// Connects, sends hello, waits for hello_ok. An error frame from the server comes back as its
  /// error (e.g. errc::unauthorized); errc::io_error / errc::timeout for network failures.
  static result<client> connect(client_options options);

  client(client&&) noexcept;
  client& operator=(client&&) noexcept;
  ~client();  // close()

  /// What the server said in hello_ok (negotiated version, model, limits).
  const hello_ok& server_info() const;

  /// A fresh request id for this connection (1, 2, ...).
  uint64_t next_request_id();

  /// Sends `request` (request_id 0: next_request_id() is used) and blocks until its final frame
  /// (returned) or error frame (returned as the error, request_id set). `timeout` 0: none; on
  /// timeout the request is cancelled and errc::timeout returned. If the connection fails, the
  /// error is errc::connection_closed or the connection-level error the server sent.
  result<final_frame> generate(generate_request request, const chunk_callback& on_chunk = {},
                               std::chrono::milliseconds timeout = std::chrono::milliseconds{0});

  /// Asks the server to cancel a request in flight (from any thread): its generate() then
  /// returns a final frame with finish_reason::cancelled.
  result<void> cancel(uint64_t request_id);

  /// Writes raw bytes on the connection (tests: malformed frames).
  result<void> send_raw(std::string bytes);

  /// False once the connection has failed or been closed.
  bool is_open() const;
  /// The connection-level error frame (request_id 0) the server sent, if any.
  std::optional<error_frame> connection_error() const;

  /// Closes the connection and joins the I/O thread; pending generate() calls return
  /// errc::connection_closed. Idempotent. Do not destroy a client while other threads use it.
  void close();

  /// Drops the connection at once, as a client that goes away does (no cancel frame is sent);
  /// pending generate() calls return errc::connection_closed. Safe from any thread, also from a
  /// chunk callback (it does not wait for the I/O thread). close() still joins the thread later.
  void disconnect();

 private:
  struct impl;
  explicit client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::transport
