#pragma once
// The seam between the TCP server and whoever serves requests (the ROUTER): the server decodes
// and validates frames and calls a request_handler; the handler answers through a stream_sink.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "transport/client_protocol.hpp"
#include "transport/error.hpp"

namespace troupe::transport {

/// One client connection, unique for the server's lifetime (starts at 1).
enum class connection_id : uint64_t {};

/// The way back to the client for one generate request. Thread-safe: call from any thread.
/// A stream ends with exactly one send_final or send_error; later calls are ignored.
/// With `stream = false` in the request, chunks are collected and sent as one token_chunk
/// right before the final frame (an error drops them).
/// Dropping the last reference to a sink that has not ended sends errc::internal, so a client
/// never waits forever on a request the server forgot.
class stream_sink {
 public:
  virtual ~stream_sink() = default;

  virtual connection_id connection() const = 0;
  virtual uint64_t request_id() const = 0;

  /// Tokens produced since the previous chunk and the text they completed. False if the stream
  /// has ended or the connection is gone (the caller should stop generating).
  virtual bool send_chunk(std::string text, std::vector<int32_t> ids) = 0;
  /// Ends the stream with a final frame (its request_id is set by the sink).
  virtual bool send_final(final_frame f) = 0;
  /// Ends the stream with an error frame for this request.
  virtual bool send_error(errc code, std::string message) = 0;
  /// True once the stream has ended or the connection is closing or closed.
  virtual bool closed() const = 0;
};

/// Implemented by the ROUTER. Called on the server's I/O threads: return quickly (hand the work
/// to an actor), never block, never throw (an exception is caught, logged, and the request gets
/// errc::internal). Calls for one connection are serialized: on_generate/on_cancel in the order
/// the frames arrived, then on_disconnect exactly once, after which that connection's sinks
/// report closed() and no further calls for it come.
class request_handler {
 public:
  virtual ~request_handler() = default;

  /// A decoded, validated generate request (limits already checked).
  virtual void on_generate(std::shared_ptr<stream_sink> sink, generate_request request) = 0;
  /// The client cancelled request_id, which is in flight on this connection. The handler should
  /// end the stream with final_frame{reason = finish_reason::cancelled}.
  virtual void on_cancel(connection_id connection, uint64_t request_id) = 0;
  /// The connection closed (client went away, protocol error, backpressure, or server stop):
  /// cancel everything it had in flight. Called only for connections that completed the handshake.
  virtual void on_disconnect(connection_id connection) = 0;

  /// An admin frame (an ADMIN CONSOLE command, docs/protocol.md): answer exactly once through
  /// `reply` (any thread). `who` describes the connection for the audit log. The token is the
  /// handler's to check. Default: this server has no admin console.
  virtual void on_admin(admin_request request, std::string who, std::function<void(admin_reply)> reply) {
    (void)who;
    reply(admin_reply{request.request_id, false, "not_supported", "this server has no admin console", ""});
  }
  /// True when `token` is the admin token: a hello that carries it needs no API key (the
  /// connection may then send admin frames only).
  virtual bool admin_token_valid(std::string_view token) const {
    (void)token;
    return false;
  }
};

}  // namespace troupe::transport
