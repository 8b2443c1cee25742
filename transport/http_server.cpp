#include "transport/http_server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <sys/socket.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include "transport/listen.hpp"
#include "transport/logger.hpp"
#include "transport/openai_api.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

const std::string* http_request::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (h.name == name) return &h.value;
  }
  return nullptr;
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The bytes of a whole response (status line, headers, body).
std::string serialize(const http_response& r, bool keep_alive, unsigned version, const std::string& server) {
  http::response<http::string_body> res{http::int_to_status(unsigned(r.status)), version};
  res.set(http::field::server, server);
  res.set(http::field::content_type, r.content_type);
  for (const auto& h : r.headers) res.set(h.name, h.value);
  res.keep_alive(keep_alive);
  res.body() = r.body;
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  return std::move(os).str();
}

}  // namespace

// One connection: read a request (idle wait, then header + body under the read timeout),
// dispatch it, write its response from the queue the responder fills, repeat while keep-alive.
// Socket, parser and timers live on the session's strand; the write queue is guarded by mu_.
class http_session : public std::enable_shared_from_this<http_session> {
 public:
  using closed_callback = std::function<void(connection_id)>;

  http_session(std::shared_ptr<asio::io_context> io, tcp::socket socket, connection_id id,
               std::shared_ptr<const http_server_options> options, http_handler& handler,
               std::shared_ptr<std::atomic<uint64_t>> request_numbers, closed_callback on_closed)
      : io_(std::move(io)),
        socket_(std::move(socket)),
        read_timer_(socket_.get_executor()),
        write_timer_(socket_.get_executor()),
        linger_timer_(socket_.get_executor()),
        id_(id),
        options_(std::move(options)),
        handler_(handler),
        request_numbers_(std::move(request_numbers)),
        on_closed_(std::move(on_closed)),
        fd_(socket_.native_handle()) {}

  connection_id id() const { return id_; }

  void start() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->wait_for_request(); });
  }

  /// Answers `status` without reading anything, then closes (the connection cap).
  void refuse(int status, std::string message) {
    asio::post(socket_.get_executor(), [self = shared_from_this(), status, m = std::move(message)] {
      self->reject(status, m);
    });
  }

  /// Closes at once (server stop). Any thread.
  void close() {
    asio::post(socket_.get_executor(), [self = shared_from_this()] { self->close_now("server stopping"); });
  }

  /// Queues response bytes; `last` ends the response. Any thread. False if the connection is
  /// not open; closes it when the queue would exceed the limit (the client is not reading).
  bool send(std::string bytes, bool last) {
    bool start_write = false;
    bool overflow = false;
    {
      std::lock_guard lock(mu_);
      if (state_ != state::open) return false;
      if (!last && queued_bytes_ + bytes.size() > options_->max_write_queue_bytes) {
        overflow = true;
        state_ = state::closing;
      } else {
        if (!writing_ && queue_.empty()) {
          // Nothing queued or being written: send from this thread now instead of waking the I/O
          // thread (an SSE event is small and the socket buffer has room), as client_session
          // does. What does not fit, or an error, goes the asynchronous way, which reports errors.
          // The fd stays open while mu_ is held with state open (close_now marks the state first).
          const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
          if (n == static_cast<ssize_t>(bytes.size())) {
            if (last) {
              asio::post(socket_.get_executor(), [self = shared_from_this()] { self->response_done(); });
            }
            return true;
          }
          if (n > 0) bytes.erase(0, static_cast<size_t>(n));
        }
        queued_bytes_ += bytes.size();
        queue_.push_back({std::move(bytes), last});
        if (!writing_) writing_ = start_write = true;
      }
    }
    if (overflow) {
      logger().warn("http client not reading, closing connection={} queued_bytes={}", uint64_t(id_),
                    options_->max_write_queue_bytes);
      asio::post(socket_.get_executor(), [self = shared_from_this()] { self->close_now("write queue full"); });
      return false;
    }
    if (start_write) asio::post(socket_.get_executor(), [self = shared_from_this()] { self->do_write(); });
    return true;
  }

  bool is_open() const {
    std::lock_guard lock(mu_);
    return state_ == state::open;
  }

  const http_server_options& options() const { return *options_; }

 private:
  enum class state { open, closing, closed };
  struct piece {
    std::string bytes;
    bool last = false;
  };

  // ---- reading ----------------------------------------------------------------------------
  void wait_for_request() {
    if (finished_) return;
    if (buffer_.size() > 0) {  // pipelined bytes already here
      read_request();
      return;
    }
    arm_read_timer(options_->idle_timeout);
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const boost::system::error_code& ec) {
      if (self->finished_) return;
      if (ec) {
        self->close_now(self->timed_out_ ? "idle timeout" : ec.message());
        return;
      }
      self->read_request();
    });
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(options_->max_header_bytes);
    parser_->body_limit(options_->max_body_bytes);
    arm_read_timer(options_->read_timeout);
    http::async_read_header(socket_, buffer_, *parser_,
                            [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
                              self->on_header(ec);
                            });
  }

  void arm_read_timer(std::chrono::milliseconds timeout) {
    timed_out_ = false;
    read_timer_.expires_after(timeout);
    read_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->finished_) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket_.cancel(ignored);
    });
  }

  // True if `ec` ended the request read; answers or closes.
  bool read_failed(const boost::system::error_code& ec) {
    if (!ec) return false;
    read_timer_.cancel();
    if (timed_out_) {
      reject(408, fmt::format("the request did not arrive within {} ms", options_->read_timeout.count()));
    } else if (ec == http::error::end_of_stream || ec == asio::error::eof) {
      close_now("client closed the connection");
    } else if (ec == http::error::header_limit) {
      reject(431, fmt::format("the request headers exceed {} bytes", options_->max_header_bytes));
    } else if (ec == http::error::body_limit) {
      reject(413, fmt::format("the request body exceeds {} bytes", options_->max_body_bytes));
    } else if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
      reject(400, fmt::format("malformed HTTP request: {}", ec.message()));
    } else {
      close_now(ec.message());
    }
    return true;
  }

  void on_header(const boost::system::error_code& ec) {
    if (finished_ || read_failed(ec)) return;
    const auto& h = parser_->get();
    if (auto e = h.find(http::field::expect); e != h.end() && beast::iequals(e->value(), "100-continue")) {
      // curl and others wait for this before sending a larger body.
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      asio::async_write(socket_, asio::buffer(*cont),
                        [self = shared_from_this(), cont](const boost::system::error_code& wec, size_t) {
                          if (self->finished_) return;
                          if (wec) {
                            self->close_now(wec.message());
                            return;
                          }
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(socket_, buffer_, *parser_, [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
      if (self->finished_ || self->read_failed(ec)) return;
      self->read_timer_.cancel();
      self->dispatch();
    });
  }

  void dispatch();

  // While a response is pending nothing is read: a readable socket with no bytes means the client
  // went away (its requests are then cancelled through on_disconnect).
  void watch_for_close() {
    const uint64_t generation = ++watch_generation_;
    socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), generation](
                                                 const boost::system::error_code& ec) {
      if (ec || self->finished_ || generation != self->watch_generation_ || !self->pending_) return;
      boost::system::error_code aec;
      const size_t n = self->socket_.available(aec);
      if (aec || n == 0) self->close_now("client went away before the response was complete");
      // Otherwise: a pipelined request, read once this response is out.
    });
  }

  // ---- writing ----------------------------------------------------------------------------
  void do_write() {
    if (finished_) return;
    {
      std::lock_guard lock(mu_);
      if (queue_.empty()) {
        writing_ = false;
        return;
      }
      in_flight_.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
    }
    std::vector<asio::const_buffer> buffers;
    buffers.reserve(in_flight_.size());
    for (const auto& p : in_flight_) buffers.push_back(asio::buffer(p.bytes));
    write_timer_.expires_after(options_->write_timeout);
    write_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) self->close_now("write timeout");
    });
    asio::async_write(socket_, buffers, [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
      self->on_write(ec);
    });
  }

  void on_write(const boost::system::error_code& ec) {
    write_timer_.cancel();
    if (finished_) return;
    if (ec) {
      close_now(fmt::format("write failed: {}", ec.message()));
      return;
    }
    size_t written = 0;
    bool last = false;
    for (const auto& p : in_flight_) {
      written += p.bytes.size();
      last = last || p.last;
    }
    in_flight_.clear();
    bool closing = false;
    {
      std::lock_guard lock(mu_);
      queued_bytes_ -= std::min(queued_bytes_, written);
      closing = state_ != state::open;
    }
    if (last) response_done(closing);
    do_write();
  }

  // The response's last byte is out: read the next request, or close.
  void response_done(bool closing = false) {
    if (finished_) return;
    if (!closing) {
      std::lock_guard lock(mu_);
      closing = state_ != state::open;
    }
    pending_ = false;
    ++watch_generation_;
    if (closing || !keep_alive_) {
      close_gracefully();
    } else {
      wait_for_request();
    }
  }

  // ---- closing ----------------------------------------------------------------------------
  // A session-level error: answer with `status` and close.
  void reject(int status, const std::string& message) {
    if (finished_) return;
    logger().debug("http request refused connection={} status={} message={}", uint64_t(id_), status, message);
    keep_alive_ = false;
    pending_ = true;
    http_response r;
    r.status = status;
    r.body = error_body(api_error{status, message, "", "", ""});
    if (!send(serialize(r, false, 11, options_->server_name), true)) {
      close_now("closed while refusing a request");
      return;
    }
    std::lock_guard lock(mu_);
    state_ = state::closing;
  }

  // Half-close, then read whatever the client still sends (so our last bytes are not lost to a
  // reset) until it closes or a second passes.
  void close_gracefully() {
    {
      std::lock_guard lock(mu_);
      state_ = state::closing;
    }
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    linger_timer_.expires_after(std::chrono::seconds(1));
    linger_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec) self->close_now("linger timeout");
    });
    drain();
  }

  void drain() {
    socket_.async_read_some(asio::buffer(drain_buf_), [self = shared_from_this()](const boost::system::error_code& ec,
                                                                                   size_t) {
      if (self->finished_) return;
      if (ec) {
        self->close_now("closed");
        return;
      }
      self->drain();
    });
  }

  void close_now(std::string_view reason) {
    if (finished_) return;
    finished_ = true;
    {
      std::lock_guard lock(mu_);
      state_ = state::closed;
      queue_.clear();
      queued_bytes_ = 0;
    }
    boost::system::error_code ignored;
    read_timer_.cancel();
    write_timer_.cancel();
    linger_timer_.cancel();
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    logger().debug("http connection closed connection={} reason={}", uint64_t(id_), reason);
    if (dispatched_any_) {
      try {
        handler_.on_disconnect(id_);
      } catch (...) {
        logger().error("http handler threw on disconnect connection={}", uint64_t(id_));
      }
    }
    if (on_closed_) on_closed_(id_);
  }

  std::shared_ptr<asio::io_context> io_;  // first: outlives the socket and timers
  tcp::socket socket_;
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
  asio::steady_timer linger_timer_;
  const connection_id id_;
  std::shared_ptr<const http_server_options> options_;
  http_handler& handler_;
  std::shared_ptr<std::atomic<uint64_t>> request_numbers_;
  closed_callback on_closed_;
  const int fd_;  // socket_'s descriptor, for send()'s direct write from other threads

  // Strand only.
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::vector<piece> in_flight_;
  std::array<char, 4096> drain_buf_{};
  bool timed_out_ = false;
  bool pending_ = false;  // a request was dispatched and its response is not out yet
  bool keep_alive_ = true;
  bool dispatched_any_ = false;
  bool finished_ = false;
  uint64_t watch_generation_ = 0;

  // Guarded by mu_.
  mutable std::mutex mu_;
  state state_ = state::open;
  std::deque<piece> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;

  friend class session_responder;
};

// The responder of one request: whole response or chunked stream, into the session's queue.
class session_responder final : public http_responder {
 public:
  session_responder(std::shared_ptr<http_session> s, uint64_t number, bool keep_alive, unsigned version)
      : session_(std::move(s)), number_(number), keep_alive_(keep_alive), version_(version) {}
  ~session_responder() override {
    if (phase_ == phase::none) {
      respond(http_response{500, "application/json", error_body(api_error{500, "the server produced no response", "", "", ""}), {}});
    } else if (phase_ == phase::streaming) {
      end();
    }
  }

  connection_id connection() const override { return session_->id(); }
  uint64_t request_number() const override { return number_; }

  bool respond(http_response r) override {
    std::lock_guard lock(mu_);
    if (phase_ != phase::none) return false;
    phase_ = phase::done;
    return session_->send(serialize(r, keep_alive_, version_, session_->options().server_name), true);
  }

  bool start_stream(int status, std::string content_type) override {
    std::lock_guard lock(mu_);
    if (phase_ != phase::none) return false;
    phase_ = phase::streaming;
    http::response<http::empty_body> res{http::int_to_status(unsigned(status)), version_};
    res.set(http::field::server, session_->options().server_name);
    res.set(http::field::content_type, content_type);
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(keep_alive_);
    res.chunked(true);
    std::ostringstream os;
    os << res.base();
    return session_->send(std::move(os).str(), false);
  }

  bool write(std::string data) override {
    std::lock_guard lock(mu_);
    if (phase_ != phase::streaming) return false;
    if (data.empty()) return session_->is_open();  // an empty chunk would end the body
    std::string chunk = fmt::format("{:x}\r\n", data.size());
    chunk += data;
    chunk += "\r\n";
    return session_->send(std::move(chunk), false);
  }

  bool end() override {
    std::lock_guard lock(mu_);
    if (phase_ != phase::streaming) return false;
    phase_ = phase::done;
    return session_->send("0\r\n\r\n", true);
  }

  bool closed() const override {
    std::lock_guard lock(mu_);
    return phase_ == phase::done || !session_->is_open();
  }

 private:
  enum class phase { none, streaming, done };
  std::shared_ptr<http_session> session_;
  const uint64_t number_;
  const bool keep_alive_;
  const unsigned version_;
  mutable std::mutex mu_;
  phase phase_ = phase::none;
};

void http_session::dispatch() {
  auto& m = parser_->get();
  http_request r;
  r.method = std::string(m.method_string());
  r.target = std::string(m.target());
  r.path = r.target.substr(0, r.target.find('?'));
  for (const auto& f : m) r.headers.push_back({lower(std::string_view(f.name_string().data(), f.name_string().size())), std::string(f.value())});
  r.body = std::move(m.body());
  keep_alive_ = m.keep_alive();
  pending_ = true;
  dispatched_any_ = true;
  const uint64_t number = request_numbers_->fetch_add(1) + 1;
  logger().debug("http request connection={} number={} method={} target={} body_bytes={}", uint64_t(id_), number,
                 r.method, printable(r.target, 200), r.body.size());
  auto out = std::make_shared<session_responder>(shared_from_this(), number, keep_alive_, m.version());
  watch_for_close();
  try {
    handler_.on_request(out, std::move(r));
  } catch (const std::exception& e) {
    logger().error("http handler threw connection={} what={}", uint64_t(id_), e.what());
    out->respond(http_response{500, "application/json", error_body(api_error{500, "internal error", "", "", ""}), {}});
  } catch (...) {
    logger().error("http handler threw connection={}", uint64_t(id_));
    out->respond(http_response{500, "application/json", error_body(api_error{500, "internal error", "", "", ""}), {}});
  }
}

// ---- the server -------------------------------------------------------------------------------

struct http_server::impl : std::enable_shared_from_this<http_server::impl> {
  impl(http_server_options o, http_handler& h)
      : options(std::make_shared<const http_server_options>(std::move(o))),
        handler(h),
        io(std::make_shared<asio::io_context>()),
        acceptor(asio::make_strand(*io)),
        retry_timer(acceptor.get_executor()) {}

  void do_accept() { accept_loop(shared_from_this(), "HTTP"); }

  void on_accept(tcp::socket socket) {
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    std::shared_ptr<http_session> session;
    bool refuse = false;
    {
      std::lock_guard lock(mu);
      if (stopping) {
        socket.close(ignored);
        return;
      }
      const uint64_t id = next_id++;
      refuse = sessions.size() >= options->max_connections;
      std::weak_ptr<impl> weak = shared_from_this();
      session = std::make_shared<http_session>(io, std::move(socket), connection_id{id}, options, handler,
                                               request_numbers, [weak](connection_id cid) {
                                                 if (auto server = weak.lock()) server->remove(cid);
                                               });
      if (!refuse) sessions.emplace(id, session);
    }
    if (refuse) {
      logger().warn("http connection refused: {} open, the limit", options->max_connections);
      session->refuse(503, fmt::format("too many open connections (limit {})", options->max_connections));
    } else {
      session->start();
    }
  }

  void remove(connection_id id) {
    std::lock_guard lock(mu);
    sessions.erase(uint64_t(id));
  }

  const std::shared_ptr<const http_server_options> options;
  http_handler& handler;
  const std::shared_ptr<asio::io_context> io;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<uint16_t> port{0};
  std::shared_ptr<std::atomic<uint64_t>> request_numbers = std::make_shared<std::atomic<uint64_t>>(0);

  mutable std::mutex mu;
  std::unordered_map<uint64_t, std::weak_ptr<http_session>> sessions;
  uint64_t next_id = 1;
  bool started = false;
  bool stopping = false;
};

http_server::http_server(http_server_options options, http_handler& handler)
    : impl_(std::make_shared<impl>(std::move(options), handler)) {}

http_server::~http_server() { stop(); }

const http_server_options& http_server::options() const { return *impl_->options; }
uint16_t http_server::port() const { return impl_->port.load(); }

size_t http_server::connection_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.size();
}

result<void> http_server::start() {
  auto& s = *impl_;
  std::lock_guard lock(s.mu);
  if (s.started) return fail(errc::internal, "http_server::start called twice");
  const auto& o = *s.options;
  auto bound = listen_on(s.acceptor, *s.io, o.host, o.port, "HTTP");
  if (!bound) return std::unexpected(bound.error());
  const tcp::endpoint endpoint = *bound;
  s.port = endpoint.port();
  s.started = true;
  s.work.emplace(asio::make_work_guard(*s.io));
  s.do_accept();
  start_io_threads(s.threads, s.io, o.io_threads, "HTTP");
  logger().info("http listening host={} port={}", o.host, s.port.load());
  return {};
}

void http_server::stop() {
  auto& s = *impl_;
  std::vector<std::shared_ptr<http_session>> open;
  {
    std::lock_guard lock(s.mu);
    if (!s.started || s.stopping) return;
    s.stopping = true;
    for (auto& [id, weak] : s.sessions) {
      if (auto session = weak.lock()) open.push_back(std::move(session));
    }
  }
  asio::post(s.acceptor.get_executor(), [self = impl_] {
    boost::system::error_code ignored;
    self->acceptor.close(ignored);
    self->retry_timer.cancel();
  });
  for (auto& session : open) session->close();
  open.clear();
  s.work.reset();
  for (auto& t : s.threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      t.detach();
    } else {
      t.join();
    }
  }
  s.threads.clear();
  logger().info("http stopped port={}", s.port.load());
}

}  // namespace troupe::transport
