#pragma once
// The HTTP/1.1 server behind the HTTP API (Boost.Beast on Asio): keep-alive connections, one
// request at a time per connection, caps on header and body size (431/413), slow-client timeouts
// (408), a cap on open connections (503); HTTPS with a certificate and key (Asio's OpenSSL stream). Parsed requests go to an http_handler, which answers
// through an http_responder: one whole response, or a chunked stream (Server-Sent Events).
// Beast stays out of this header; knows no actors.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transport/error.hpp"
#include "transport/request_handler.hpp"

namespace troupe::transport {

struct http_server_options {
  std::string host = "127.0.0.1";  // address to bind (an IP address or a resolvable name)
  uint16_t port = 0;               // 0: an ephemeral port, see http_server::port()
  size_t io_threads = 1;
  /// Open connections; one more gets 503 and is closed.
  size_t max_connections = 1024;
  /// Request line + headers; more gets 431 and the connection closes.
  uint32_t max_header_bytes = 16 * 1024;
  /// Request body; more gets 413 and the connection closes.
  uint32_t max_body_bytes = 1 << 20;
  /// A request, once its first byte arrived, must arrive in full within this, else 408.
  std::chrono::milliseconds read_timeout{30'000};
  /// A keep-alive connection with no request for this long is closed.
  std::chrono::milliseconds idle_timeout{60'000};
  /// Response bytes queued for a client that is not reading; past this the connection closes.
  size_t max_write_queue_bytes = 8u << 20;
  /// A write that makes no progress for this long closes the connection.
  std::chrono::milliseconds write_timeout{30'000};
  std::string server_name = "troupe";
  /// TLS (HTTPS) when both are given: PEM files of the certificate (chain) and its private key.
  /// Plain HTTP when both are empty.
  std::string tls_cert_file;
  std::string tls_key_file;
};

struct http_header {
  std::string name;  // lower case
  std::string value;
};

struct http_request {
  std::string method;  // "GET", "POST", ... as sent
  std::string target;  // path and query, as sent
  std::string path;    // target without the query
  std::vector<http_header> headers;
  std::string body;

  /// The first header of that (lower-case) name; nullptr if absent.
  const std::string* header(std::string_view name) const;
};

struct http_response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<http_header> headers;  // extra headers (Allow, Retry-After, ...)
};

/// The way back for one request. Thread-safe: call from any thread. Either respond() once, or
/// start_stream(), write() any number of times, end(). Later calls return false.
/// Dropping the last reference without an answer sends 500 (or ends a started stream).
class http_responder {
 public:
  virtual ~http_responder() = default;

  virtual connection_id connection() const = 0;
  /// Unique per server (starts at 1).
  virtual uint64_t request_number() const = 0;

  virtual bool respond(http_response r) = 0;
  /// Sends the status line and headers of a chunked response.
  virtual bool start_stream(int status, std::string content_type) = 0;
  /// One chunk of the body. False if the stream ended, the client went away or stopped reading.
  virtual bool write(std::string data) = 0;
  /// The last chunk.
  virtual bool end() = 0;
  /// True once the response is complete or the connection is gone.
  virtual bool closed() const = 0;
};

/// Implemented by the HTTP API. Called on the server's I/O threads: return quickly, never block.
/// An exception is caught and logged, and the request gets 500.
class http_handler {
 public:
  virtual ~http_handler() = default;
  virtual void on_request(std::shared_ptr<http_responder> out, http_request request) = 0;
  /// The connection closed (also while a response was pending: the client went away). Called
  /// once per connection that carried at least one request.
  virtual void on_disconnect(connection_id connection) = 0;
};

class http_server {
 public:
  /// `handler` must outlive stop().
  http_server(http_server_options options, http_handler& handler);
  ~http_server();  // stop()
  http_server(const http_server&) = delete;
  http_server& operator=(const http_server&) = delete;

  /// Loads the TLS files (if any), binds, listens and starts the I/O threads. errc::io_error
  /// when the address cannot be bound or a TLS file cannot be read; errc::invalid_request (naming
  /// the file) for a TLS file that holds no PEM certificate / key, or a key that does not match.
  result<void> start();
  /// The bound port; 0 before start().
  uint16_t port() const;
  /// Stops accepting, closes every connection, joins the I/O threads. Idempotent.
  void stop();
  size_t connection_count() const;
  const http_server_options& options() const;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace troupe::transport
