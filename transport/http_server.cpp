#include "transport/http_server.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>

#include "transport/listen.hpp"
#include "transport/logger.hpp"
#include "transport/openai_api.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using tls_stream = asio::ssl::stream<tcp::socket>;

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

// The last OpenSSL error as text (and clears the queue).
std::string openssl_error(const boost::system::error_code& ec) {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return ec.message();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// The server's TLS context from PEM files; errors name the file.
result<std::shared_ptr<asio::ssl::context>> make_tls_context(const std::string& cert_file,
                                                             const std::string& key_file) {
  if (cert_file.empty()) return fail(errc::invalid_request, "TLS needs a certificate file (--tls-cert) with its key file");
  if (key_file.empty()) return fail(errc::invalid_request, "TLS needs a key file (--tls-key) with its certificate file");
  for (const auto& [file, what] : {std::pair{&cert_file, "certificate"}, std::pair{&key_file, "key"}}) {
    std::ifstream in(*file);
    if (!in) return fail(errc::io_error, "cannot read TLS {} file {}: {}", what, *file, std::strerror(errno));
  }
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1 |
                   asio::ssl::context::single_dh_use);
  boost::system::error_code ec;
  ERR_clear_error();
  ctx->use_certificate_chain_file(cert_file, ec);
  if (ec) {
    return fail(errc::invalid_request, "TLS certificate file {} holds no usable PEM certificate: {}", cert_file,
                openssl_error(ec));
  }
  ctx->use_private_key_file(key_file, asio::ssl::context::pem, ec);
  if (ec) {
    return fail(errc::invalid_request, "TLS key file {} holds no usable PEM private key for the certificate in {}: {}",
                key_file, cert_file, openssl_error(ec));
  }
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return fail(errc::invalid_request, "TLS key file {} does not match the certificate in {}", key_file, cert_file);
  }
  return ctx;
}

}  // namespace

// What the server and the responders see of a session, plain or TLS.
class http_session_base : public std::enable_shared_from_this<http_session_base> {
 public:
  virtual ~http_session_base() = default;
  virtual connection_id id() const = 0;
  virtual void start() = 0;
  /// Answers `status` without reading anything, then closes (the connection cap).
  virtual void refuse(int status, std::string message) = 0;
  /// Closes at once (server stop). Any thread.
  virtual void close() = 0;
  /// Queues response bytes; `last` ends the response. Any thread. False if the connection is
  /// not open; closes it when the queue would exceed the limit (the client is not reading).
  virtual bool send(std::string bytes, bool last) = 0;
  virtual bool is_open() const = 0;
  virtual const http_server_options& options() const = 0;
};

// One connection: (TLS: the handshake, then) read a request (idle wait, then header + body under
// the read timeout), dispatch it, write its response from the queue the responder fills, repeat
// while keep-alive. Stream is tcp::socket or tls_stream: one code path, the few steps that differ
// (handshake, the direct send, the wait for a request, the close) chosen by `tls`.
// Socket, parser and timers live on the session's strand; the write queue is guarded by mu_.
template <class Stream>
class http_session final : public http_session_base {
 public:
  static constexpr bool tls = std::is_same_v<Stream, tls_stream>;
  using closed_callback = std::function<void(connection_id)>;

  http_session(std::shared_ptr<asio::io_context> io, Stream stream, connection_id id,
               std::shared_ptr<const http_server_options> options, http_handler& handler,
               std::shared_ptr<std::atomic<uint64_t>> request_numbers, closed_callback on_closed,
               std::shared_ptr<asio::ssl::context> tls_context = nullptr)
      : io_(std::move(io)),
        tls_context_(std::move(tls_context)),
        stream_(std::move(stream)),
        read_timer_(stream_.get_executor()),
        write_timer_(stream_.get_executor()),
        linger_timer_(stream_.get_executor()),
        id_(id),
        options_(std::move(options)),
        handler_(handler),
        request_numbers_(std::move(request_numbers)),
        on_closed_(std::move(on_closed)),
        fd_(socket().native_handle()) {}

  connection_id id() const override { return id_; }

  void start() override {
    asio::post(stream_.get_executor(), [self = self()] {
      if constexpr (tls) {
        self->handshake();
      } else {
        self->wait_for_request();
      }
    });
  }

  void refuse(int status, std::string message) override {
    asio::post(stream_.get_executor(), [self = self(), status, m = std::move(message)] {
      if constexpr (tls) {
        // Said in plain text would mean nothing to a TLS client: close.
        self->close_now(m);
      } else {
        self->reject(status, m);
      }
    });
  }

  void close() override {
    asio::post(stream_.get_executor(), [self = self()] { self->close_now("server stopping"); });
  }

  bool send(std::string bytes, bool last) override {
    bool start_write = false;
    bool overflow = false;
    {
      std::lock_guard lock(mu_);
      if (state_ != state::open) return false;
      if (!last && queued_bytes_ + bytes.size() > options_->max_write_queue_bytes) {
        overflow = true;
        state_ = state::closing;
      } else {
        if (!tls && !writing_ && queue_.empty()) {
          // Nothing queued or being written: send from this thread now instead of waking the I/O
          // thread (an SSE event is small and the socket buffer has room), as client_session
          // does. What does not fit, or an error, goes the asynchronous way, which reports errors.
          // The fd stays open while mu_ is held with state open (close_now marks the state first).
          // Not under TLS: its bytes go through the TLS stream, on the strand.
          const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
          if (n == static_cast<ssize_t>(bytes.size())) {
            if (last) {
              asio::post(stream_.get_executor(), [self = self()] { self->response_done(); });
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
      asio::post(stream_.get_executor(), [self = self()] { self->close_now("write queue full"); });
      return false;
    }
    if (start_write) asio::post(stream_.get_executor(), [self = self()] { self->do_write(); });
    return true;
  }

  bool is_open() const override {
    std::lock_guard lock(mu_);
    return state_ == state::open;
  }

  const http_server_options& options() const override { return *options_; }

 private:
  std::shared_ptr<http_session> self() { return std::static_pointer_cast<http_session>(shared_from_this()); }
  tcp::socket& socket() { return beast::get_lowest_layer(stream_); }

  // ---- TLS ---------------------------------------------------------------------------------
  // The handshake, under the read timeout. A plain HTTP request to this port gets a plain 400
  // saying so (as nginx does), then the connection closes; other clients never notice.
  void handshake() {
    arm_read_timer(options_->read_timeout);
    stream_.async_handshake(asio::ssl::stream_base::server, [self = self()](const boost::system::error_code& ec) {
      if (self->finished_) return;
      self->read_timer_.cancel();
      if (!ec) {
        self->wait_for_request();
        return;
      }
      if (ec.category() == asio::error::get_ssl_category() && ERR_GET_REASON(ec.value()) == SSL_R_HTTP_REQUEST) {
        self->refuse_plain_http();
        return;
      }
      self->close_now(self->timed_out_ ? std::string("TLS handshake timeout")
                                       : fmt::format("TLS handshake failed: {}", ec.message()));
    });
  }

  void refuse_plain_http() {
    http_response r;
    r.status = 400;
    r.body = error_body(api_error{400, "a plain HTTP request was sent to this HTTPS port: use https://", "", "",
                                  "plain_http_to_https_port"});
    auto bytes = std::make_shared<std::string>(serialize(r, false, 11, options_->server_name));
    write_timer_.expires_after(options_->write_timeout);
    write_timer_.async_wait([self = self()](const boost::system::error_code& ec) {
      if (!ec) self->close_now("write timeout");
    });
    asio::async_write(socket(), asio::buffer(*bytes), [self = self(), bytes](const boost::system::error_code&, size_t) {
      self->close_now("plain HTTP request on the TLS port");
    });
  }

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
    if constexpr (tls) {
      // Bytes may wait inside the TLS stream where the socket shows none: read the first ones.
      stream_.async_read_some(buffer_.prepare(4096), [self = self()](const boost::system::error_code& ec, size_t n) {
        if (self->finished_) return;
        self->buffer_.commit(n);
        if (ec) {
          self->close_now(self->timed_out_ ? "idle timeout" : ec.message());
          return;
        }
        self->read_request();
      });
    } else {
      socket().async_wait(tcp::socket::wait_read, [self = self()](const boost::system::error_code& ec) {
        if (self->finished_) return;
        if (ec) {
          self->close_now(self->timed_out_ ? "idle timeout" : ec.message());
          return;
        }
        self->read_request();
      });
    }
  }

  void read_request() {
    parser_.emplace();
    parser_->header_limit(options_->max_header_bytes);
    parser_->body_limit(options_->max_body_bytes);
    arm_read_timer(options_->read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = self()](const boost::system::error_code& ec, size_t) {
                              self->on_header(ec);
                            });
  }

  void arm_read_timer(std::chrono::milliseconds timeout) {
    timed_out_ = false;
    read_timer_.expires_after(timeout);
    read_timer_.async_wait([self = self()](const boost::system::error_code& ec) {
      if (ec || self->finished_) return;
      self->timed_out_ = true;
      boost::system::error_code ignored;
      self->socket().cancel(ignored);
    });
  }

  // True if `ec` ended the request read; answers or closes.
  bool read_failed(const boost::system::error_code& ec) {
    if (!ec) return false;
    read_timer_.cancel();
    if (timed_out_) {
      reject(408, fmt::format("the request did not arrive within {} ms", options_->read_timeout.count()));
    } else if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
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
      asio::async_write(stream_, asio::buffer(*cont),
                        [self = self(), cont](const boost::system::error_code& wec, size_t) {
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
    http::async_read(stream_, buffer_, *parser_, [self = self()](const boost::system::error_code& ec, size_t) {
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
    socket().async_wait(tcp::socket::wait_read, [self = self(), generation](
                                                 const boost::system::error_code& ec) {
      if (ec || self->finished_ || generation != self->watch_generation_ || !self->pending_) return;
      boost::system::error_code aec;
      const size_t n = self->socket().available(aec);
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
    write_timer_.async_wait([self = self()](const boost::system::error_code& ec) {
      if (!ec) self->close_now("write timeout");
    });
    asio::async_write(stream_, buffers, [self = self()](const boost::system::error_code& ec, size_t) {
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
    linger_timer_.expires_after(std::chrono::seconds(1));
    linger_timer_.async_wait([self = self()](const boost::system::error_code& ec) {
      if (!ec) self->close_now("linger timeout");
    });
    if constexpr (tls) {
      // close_notify, then the peer's (or the linger timeout).
      stream_.async_shutdown([self = self()](const boost::system::error_code&) { self->close_now("closed"); });
    } else {
      boost::system::error_code ignored;
      socket().shutdown(tcp::socket::shutdown_send, ignored);
      drain();
    }
  }

  void drain() {
    socket().async_read_some(asio::buffer(drain_buf_), [self = self()](const boost::system::error_code& ec,
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
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
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
  std::shared_ptr<asio::ssl::context> tls_context_;  // TLS: outlives the stream
  Stream stream_;
  asio::steady_timer read_timer_;
  asio::steady_timer write_timer_;
  asio::steady_timer linger_timer_;
  const connection_id id_;
  std::shared_ptr<const http_server_options> options_;
  http_handler& handler_;
  std::shared_ptr<std::atomic<uint64_t>> request_numbers_;
  closed_callback on_closed_;
  const int fd_;  // the socket's descriptor, for send()'s direct write from other threads

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

};

// The responder of one request: whole response or chunked stream, into the session's queue.
class session_responder final : public http_responder {
 public:
  session_responder(std::shared_ptr<http_session_base> s, uint64_t number, bool keep_alive, unsigned version)
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
  std::shared_ptr<http_session_base> session_;
  const uint64_t number_;
  const bool keep_alive_;
  const unsigned version_;
  mutable std::mutex mu_;
  phase phase_ = phase::none;
};

template <class Stream>
void http_session<Stream>::dispatch() {
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
    std::shared_ptr<http_session_base> session;
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
      auto on_closed = [weak](connection_id cid) {
        if (auto server = weak.lock()) server->remove(cid);
      };
      if (tls_context) {
        session = std::make_shared<http_session<tls_stream>>(io, tls_stream(std::move(socket), *tls_context),
                                                             connection_id{id}, options, handler, request_numbers,
                                                             std::move(on_closed), tls_context);
      } else {
        session = std::make_shared<http_session<tcp::socket>>(io, std::move(socket), connection_id{id}, options,
                                                              handler, request_numbers, std::move(on_closed));
      }
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
  std::unordered_map<uint64_t, std::weak_ptr<http_session_base>> sessions;
  std::shared_ptr<asio::ssl::context> tls_context;  // null: plain HTTP
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
  if (!o.tls_cert_file.empty() || !o.tls_key_file.empty()) {
    auto ctx = make_tls_context(o.tls_cert_file, o.tls_key_file);
    if (!ctx) return std::unexpected(ctx.error());
    s.tls_context = std::move(*ctx);
  }
  auto bound = listen_on(s.acceptor, *s.io, o.host, o.port, "HTTP");
  if (!bound) return std::unexpected(bound.error());
  const tcp::endpoint endpoint = *bound;
  s.port = endpoint.port();
  s.started = true;
  s.work.emplace(asio::make_work_guard(*s.io));
  s.do_accept();
  start_io_threads(s.threads, s.io, o.io_threads, "HTTP");
  logger().info("http listening host={} port={} tls={}", o.host, s.port.load(), s.tls_context ? "on" : "off");
  return {};
}

void http_server::stop() {
  auto& s = *impl_;
  std::vector<std::shared_ptr<http_session_base>> open;
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
