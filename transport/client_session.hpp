#pragma once
// One client connection on the server side: a read loop feeding the frame decoder, the hello
// handshake, request dispatch to the request_handler, a bounded write queue, and the deadlines
// of every stage (handshake, frame header, frame payload, idle). Internal to tcp_server; the
// ROUTER sees only request_handler.hpp.
//
// Threads: everything that touches the socket, the decoder or the handler runs on the session's
// strand (the socket's executor). Sinks call enqueue() from any thread; the write queue, the
// state and the set of in-flight request ids are guarded by mu_.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "transport/client_protocol.hpp"
#include "transport/connection_registry.hpp"
#include "transport/frame.hpp"
#include "transport/request_handler.hpp"
#include "transport/tcp_server.hpp"

namespace troupe::transport {

class client_session : public std::enable_shared_from_this<client_session> {
 public:
  using clock = std::chrono::steady_clock;

  /// `socket`'s executor must be a strand. `io` is kept alive as long as the session (sinks may
  /// hold it past the server's lifetime). `registry` already holds this session (add()); the
  /// session leaves it when it closes. `peer` is the client's address.
  client_session(std::shared_ptr<boost::asio::io_context> io, boost::asio::ip::tcp::socket socket,
                 connection_id id, std::shared_ptr<const server_options> options, request_handler& handler,
                 std::shared_ptr<connection_registry> registry, std::string peer);
  ~client_session();
  client_session(const client_session&) = delete;
  client_session& operator=(const client_session&) = delete;

  /// Starts the handshake timer and the read loop.
  void start();
  /// Sends a connection-level error frame, then closes. Any thread.
  void shutdown(errc code, std::string message);

  connection_id id() const { return id_; }
  const std::string& peer() const { return peer_; }
  /// Since when the connection has been idle (no hello yet, or no request in flight and no
  /// partial frame); nullopt when it is busy or closing. Any thread.
  std::optional<clock::time_point> idle_since() const;
  /// False once the connection is closing or closed (sinks then report closed()).
  bool is_open() const;
  /// The negotiated protocol version (valid after the handshake).
  uint8_t version() const { return version_.load(); }

  /// Queues a whole frame for writing. Any thread. `ending_request_id` (0: none) is removed from
  /// the in-flight set. False if the connection is not open; closes the connection when the
  /// queue would exceed options.max_write_queue_bytes (the client is not reading).
  bool enqueue(std::string bytes, uint64_t ending_request_id);
  /// Charges a finished request's tokens (prompt + generated) to the connection's API key, if
  /// keys are in use. Any thread.
  void charge_tokens(uint64_t n_tokens);

 private:
  enum class state { open, closing, closed };

  void do_read();
  void on_readable(boost::system::error_code ec);
  void after_input(clock::time_point now);
  clock::time_point next_deadline(clock::time_point now) const;
  void arm_deadline(clock::time_point t);
  void on_deadline();
  void handle_frame(frame f);
  void handle_hello(const frame& f);
  void handle_generate(std::string_view payload);
  void handle_cancel(std::string_view payload);
  void handle_admin(std::string_view payload);
  void send_request_error(const error& e);
  // A frame after hello that did not decode: the connection closes when the error spoils it or
  // names no request (request_id 0); else that request alone gets an error frame.
  void refuse_frame(const error& e);
  void fail(const error& e);
  void do_write();
  void on_write(const boost::system::error_code& ec);
  void on_flushed();
  void close_now(std::string_view reason);
  void report_disconnect();

  std::shared_ptr<boost::asio::io_context> io_;  // first member: outlives the socket and timers
  boost::asio::ip::tcp::socket socket_;
  boost::asio::any_io_executor strand_;
  boost::asio::steady_timer deadline_timer_;  // the earliest deadline of the current stage
  boost::asio::steady_timer linger_timer_;
  const connection_id id_;
  std::shared_ptr<const server_options> options_;
  request_handler& handler_;
  std::shared_ptr<connection_registry> registry_;
  const std::string peer_;
  const clock::time_point accepted_at_ = clock::now();
  std::atomic<uint8_t> version_{min_protocol_version};
  const int fd_;  // socket_'s descriptor, for enqueue()'s direct send from other threads

  // Strand only.
  frame_decoder decoder_;
  std::vector<std::string> in_flight_;  // buffers of the async_write in progress
  bool handshake_done_ = false;
  bool timer_armed_ = false;
  const api_key* key_ = nullptr;  // the hello's key (set before any request: read by sinks too)
  bool admin_only_ = false;       // let in by the admin token without an API key: admin frames only
  std::string client_name_;       // the hello's (audit log)
  std::optional<clock::time_point> frame_started_;  // first byte of the partial frame arrived
  std::optional<clock::time_point> body_started_;   // its header was complete
  size_t charged_ = 0;                              // partial input reported to the registry
  bool disconnect_reported_ = false;
  bool read_done_ = false;  // the peer's side ended while we were closing
  bool flushed_ = false;    // the last frame went out while closing
  bool finished_ = false;   // close_now ran

  // Guarded by mu_.
  mutable std::mutex mu_;
  state state_ = state::open;
  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;  // queue_ plus in_flight_
  bool writing_ = false;     // a do_write is posted or an async_write is in progress
  std::unordered_set<uint64_t> active_;
  bool handshaken_ = false;     // handshake_done_, readable from other threads
  bool partial_input_ = false;  // a frame is partly received
  clock::time_point idle_since_ = accepted_at_;  // handshake or end of the last request
};

}  // namespace troupe::transport
