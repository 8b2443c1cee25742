#include "transport/client_session.hpp"

#include <algorithm>
#include <exception>
#include <iterator>
#include <utility>

#include <sys/socket.h>
#include <sys/types.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "transport/logger.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

/// The stream_sink of one request on one session.
class session_stream_sink final : public stream_sink {
 public:
  session_stream_sink(std::shared_ptr<client_session> session, uint64_t request_id, bool stream)
      : session_(std::move(session)), request_id_(request_id), stream_(stream), version_(session_->version()) {
    pending_.request_id = request_id;
  }

  ~session_stream_sink() override {
    std::lock_guard lock(mu_);
    if (ended_ || !session_->is_open()) return;
    ended_ = true;
    logger().warn("stream dropped without a final frame connection={} request_id={}",
                  static_cast<uint64_t>(session_->id()), request_id_);
    session_->enqueue(encode(error_frame{request_id_, errc::internal, "the server dropped this request"}, version_),
                      request_id_);
  }

  connection_id connection() const override { return session_->id(); }
  uint64_t request_id() const override { return request_id_; }

  bool send_chunk(std::string text, std::vector<int32_t> ids) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    if (text.empty() && ids.empty()) return session_->is_open();
    if (!stream_) {
      pending_.text += text;
      pending_.ids.insert(pending_.ids.end(), ids.begin(), ids.end());
      return session_->is_open();
    }
    return session_->enqueue(encode(token_chunk{request_id_, std::move(text), std::move(ids)}, version_), 0);
  }

  bool send_final(final_frame f) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    f.request_id = request_id_;
    session_->charge_tokens(uint64_t(f.prompt_tokens) + f.completion_tokens);
    if (!pending_.text.empty() || !pending_.ids.empty()) session_->enqueue(encode(pending_, version_), 0);
    return session_->enqueue(encode(f, version_), request_id_);
  }

  bool send_error(errc code, std::string message) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    return session_->enqueue(encode(error_frame{request_id_, code, std::move(message)}, version_), request_id_);
  }

  bool closed() const override {
    std::lock_guard lock(mu_);
    return ended_ || !session_->is_open();
  }

 private:
  const std::shared_ptr<client_session> session_;
  const uint64_t request_id_;
  const bool stream_;
  const uint8_t version_;
  mutable std::mutex mu_;
  bool ended_ = false;
  token_chunk pending_;  // stream = false: everything so far
};

}  // namespace

client_session::client_session(std::shared_ptr<asio::io_context> io, tcp::socket socket, connection_id id,
                               std::shared_ptr<const server_options> options, request_handler& handler,
                               std::shared_ptr<connection_registry> registry, std::string peer)
    : io_(std::move(io)),
      socket_(std::move(socket)),
      strand_(socket_.get_executor()),
      deadline_timer_(strand_),
      linger_timer_(strand_),
      id_(id),
      options_(std::move(options)),
      handler_(handler),
      registry_(std::move(registry)),
      peer_(std::move(peer)),
      fd_(socket_.native_handle()),
      decoder_(frame_decoder_options{options_->limits.max_frame_bytes, min_protocol_version, protocol_version}) {}

client_session::~client_session() = default;

void client_session::start() {
  asio::post(strand_, [self = shared_from_this()] {
    boost::system::error_code ignored;
    self->socket_.non_blocking(true, ignored);  // on_readable reads what is there, never waits
    self->arm_deadline(self->next_deadline(clock::now()));
    self->do_read();
  });
}

void client_session::shutdown(errc code, std::string message) {
  asio::post(strand_, [self = shared_from_this(), code, message = std::move(message)] {
    self->fail(error{code, message, 0});
  });
}

bool client_session::is_open() const {
  std::lock_guard lock(mu_);
  return state_ == state::open;
}

std::optional<client_session::clock::time_point> client_session::idle_since() const {
  std::lock_guard lock(mu_);
  if (state_ != state::open) return std::nullopt;
  if (!handshaken_) return accepted_at_;
  if (!active_.empty() || partial_input_) return std::nullopt;
  return idle_since_;
}

bool client_session::enqueue(std::string bytes, uint64_t ending_request_id) {
  bool start_write = false;
  {
    std::lock_guard lock(mu_);
    if (state_ != state::open) return false;
    if (ending_request_id != 0 && active_.erase(ending_request_id) > 0 && active_.empty()) {
      idle_since_ = clock::now();  // the idle deadline counts from here (on_deadline re-reads it)
    }
    if (queued_bytes_ + bytes.size() > options_->max_write_queue_bytes) {
      // The client does not read: drop it rather than buffer without bound.
      state_ = state::closed;
      active_.clear();
      asio::post(strand_, [self = shared_from_this(), queued = queued_bytes_] {
        logger().warn("closing connection: client is not reading connection={} queued_bytes={}",
                      static_cast<uint64_t>(self->id_), queued);
        self->close_now("write queue full");
      });
      return false;
    }
    if (!writing_ && queue_.empty()) {
      // Nothing queued or being written: send from this thread now instead of waking the I/O
      // thread (a token frame is small and the socket buffer has room). Whatever does not fit,
      // or an error, goes the asynchronous way below, which also reports errors. The fd stays
      // open while mu_ is held with state open (close_now marks the state first).
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n == static_cast<ssize_t>(bytes.size())) return true;
      if (n > 0) bytes.erase(0, static_cast<size_t>(n));
    }
    queued_bytes_ += bytes.size();
    queue_.push_back(std::move(bytes));
    if (!writing_) {
      writing_ = true;
      start_write = true;
    }
  }
  if (start_write) asio::post(strand_, [self = shared_from_this()] { self->do_write(); });
  return true;
}

// ---- reading --------------------------------------------------------------------------------

void client_session::do_read() {
  socket_.async_wait(tcp::socket::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) { self->on_readable(ec); });
}

void client_session::on_readable(boost::system::error_code ec) {
  if (finished_) return;
  // One read buffer per I/O thread, not per connection: a connection holds only the partial
  // frame it has sent (in the decoder), nothing while it is idle.
  static thread_local std::vector<char> buf(64 * 1024);
  size_t n = 0;
  if (!ec) {
    n = socket_.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      do_read();
      return;
    }
  }
  state st;
  {
    std::lock_guard lock(mu_);
    st = state_;
  }
  if (st != state::open) {
    // Closing: discard what the client still sends until it closes its side or linger ends, so
    // that closing with unread input does not reset the connection before the error frame lands.
    if (ec) {
      read_done_ = true;
      if (flushed_) close_now("closed after an error");
      return;
    }
    do_read();
    return;
  }
  if (ec) {
    close_now(ec == asio::error::eof ? "client closed the connection" : ec.message());
    return;
  }
  decoder_.feed(std::string_view(buf.data(), n));
  while (is_open()) {
    auto next = decoder_.next();
    if (!next) {
      fail(next.error());
      break;
    }
    if (!*next) break;
    frame_started_.reset();
    body_started_.reset();
    handle_frame(std::move(**next));
  }
  if (is_open()) after_input(clock::now());
  do_read();
}

// Notes where the partial frame stands (for its deadline and the input budget) after a read.
void client_session::after_input(clock::time_point now) {
  const size_t buffered = decoder_.buffered_bytes();
  if (buffered == 0) {
    frame_started_.reset();
    body_started_.reset();
  } else {
    if (!frame_started_) frame_started_ = now;
    if (buffered >= frame_header_bytes && !body_started_) body_started_ = now;
  }
  {
    std::lock_guard lock(mu_);
    partial_input_ = buffered > 0;
  }
  if (buffered != charged_) {
    charged_ = buffered;
    if (auto victim = registry_->set_buffered(id_, buffered)) {
      const auto message = fmt::format(
        "the server's buffer for incoming frames ({} bytes across connections) is full and this connection "
        "held the most unparsed input",
        options_->max_buffered_input_bytes);
      if (victim.get() == this) {
        fail(error{errc::overloaded, message, 0});
        return;
      }
      victim->shutdown(errc::overloaded, message);
    }
  }
  arm_deadline(next_deadline(now));
}

namespace {
client_session::clock::time_point after(client_session::clock::time_point t, std::chrono::milliseconds d) {
  return d.count() > 0 ? t + d : client_session::clock::time_point::max();
}
}  // namespace

// The earliest deadline of the stage the connection is in.
client_session::clock::time_point client_session::next_deadline(clock::time_point now) const {
  auto d = clock::time_point::max();
  if (!handshake_done_) d = accepted_at_ + options_->handshake_timeout;
  if (body_started_) {
    d = std::min(d, after(*body_started_, options_->body_timeout));
  } else if (frame_started_) {
    d = std::min(d, after(*frame_started_, options_->header_timeout));
  } else if (handshake_done_) {
    std::lock_guard lock(mu_);
    // With requests in flight, look again an idle_timeout later (they may have ended by then).
    d = std::min(d, after(active_.empty() ? idle_since_ : now, options_->idle_timeout));
  }
  return d;
}

void client_session::arm_deadline(clock::time_point t) {
  if (t == clock::time_point::max() || (timer_armed_ && deadline_timer_.expiry() <= t)) return;
  timer_armed_ = true;
  deadline_timer_.expires_at(t);
  deadline_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec) return;  // re-armed earlier, or closing
    self->timer_armed_ = false;
    self->on_deadline();
  });
}

void client_session::on_deadline() {
  if (finished_ || !is_open()) return;
  const auto now = clock::now();
  const auto ms = [](std::chrono::milliseconds d) { return d.count(); };
  if (!handshake_done_ && now >= accepted_at_ + options_->handshake_timeout) {
    fail(error{errc::timeout, fmt::format("no hello within {} ms", ms(options_->handshake_timeout)), 0});
    return;
  }
  if (body_started_ && now >= after(*body_started_, options_->body_timeout)) {
    fail(error{errc::timeout,
               fmt::format("frame payload not complete {} ms after its header ({} bytes received)",
                           ms(options_->body_timeout), decoder_.buffered_bytes() - frame_header_bytes),
               0});
    return;
  }
  if (!body_started_ && frame_started_ && now >= after(*frame_started_, options_->header_timeout)) {
    fail(error{errc::timeout,
               fmt::format("frame header not complete {} ms after its first byte ({} of {} bytes received)",
                           ms(options_->header_timeout), decoder_.buffered_bytes(), frame_header_bytes),
               0});
    return;
  }
  if (handshake_done_ && !frame_started_) {
    bool idle = false;
    {
      std::lock_guard lock(mu_);
      idle = active_.empty() && now >= after(idle_since_, options_->idle_timeout);
    }
    if (idle) {
      fail(error{errc::timeout,
                 fmt::format("idle for {} ms with no request in flight", ms(options_->idle_timeout)), 0});
      return;
    }
  }
  arm_deadline(next_deadline(now));
}

void client_session::handle_frame(frame f) {
  if (!handshake_done_) {
    handle_hello(f);
    return;
  }
  switch (f.kind) {
    case frame_kind::generate: handle_generate(f.payload); break;
    case frame_kind::cancel: handle_cancel(f.payload); break;
    case frame_kind::admin: handle_admin(f.payload); break;
    case frame_kind::hello: fail(error{errc::bad_frame, "hello was already received on this connection", 0}); break;
    default:
      fail(error{errc::bad_frame, fmt::format("a client may not send {} frames", frame_kind_name(f.kind)), 0});
      break;
  }
}

void client_session::handle_hello(const frame& f) {
  if (f.kind != frame_kind::hello) {
    fail(error{errc::bad_frame, fmt::format("the first frame must be hello, got {}", frame_kind_name(f.kind)), 0});
    return;
  }
  auto h = decode_hello(f.payload);
  if (!h) {
    fail(h.error());
    return;
  }
  const uint8_t version = std::min(h->version, protocol_version);
  if (version < std::max(h->min_version, min_protocol_version)) {
    fail(error{errc::unsupported_version,
               fmt::format("client speaks versions {}..{}, this server {}..{}", h->min_version, h->version,
                           min_protocol_version, protocol_version),
               0});
    return;
  }
  if (options_->api_keys && !options_->api_keys->empty()) {
    auto& throttle = registry_->throttle();
    if (const auto wait = throttle.check(peer_); wait.count() > 0) {
      fail(error{errc::unauthorized,
                 fmt::format("too many failed API key attempts from this address; retry in {} s",
                             std::chrono::ceil<std::chrono::seconds>(wait).count()),
                 0});
      return;
    }
    key_ = options_->api_keys->find(h->api_key);
    if (key_ == nullptr && !h->admin_token.empty() && handler_.admin_token_valid(h->admin_token)) {
      admin_only_ = true;  // an admin console: admin frames only
    } else if (key_ == nullptr) {
      if (!h->admin_token.empty()) logger().warn("admin token refused at hello peer={}", peer_);
      throttle.failed(peer_);  // counted, and logged as one summary line per window
      fail(error{errc::unauthorized,
                 !h->admin_token.empty() ? "invalid admin token"
                 : h->api_key.empty()    ? "an API key is required"
                                         : "invalid API key",
                 0});
      return;
    }
  }
  version_ = version;
  client_name_ = printable(h->client_name, 64);
  decoder_.set_versions(version, version);
  handshake_done_ = true;
  {
    std::lock_guard lock(mu_);
    handshaken_ = true;
    idle_since_ = clock::now();
  }
  logger().debug("handshake done connection={} client={} version={}", static_cast<uint64_t>(id_),
                 printable(h->client_name), version);
  enqueue(encode(hello_ok{version, options_->server_name, options_->model, options_->limits}, version), 0);
}

void client_session::handle_generate(std::string_view payload) {
  auto req = decode_generate(payload, options_->limits);
  if (!req) {
    refuse_frame(req.error());
    return;
  }
  const uint64_t request_id = req->request_id;
  if (admin_only_) {
    send_request_error(error{errc::unauthorized,
                             "this connection was let in with the admin token, which allows admin frames only; "
                             "generate needs an API key",
                             request_id});
    return;
  }
  if (key_ != nullptr) {
    if (auto limited = options_->api_keys->admit(*key_)) {
      logger().debug("rate limited connection={} request_id={} key_name={} retry_after_ms={}",
                     static_cast<uint64_t>(id_), request_id, key_->name, limited->retry_after.count());
      send_request_error(error{errc::rate_limited,
                               fmt::format("API key '{}' is over its {} limit; retry in {} s", key_->name,
                                           limited->tokens ? "tokens per minute" : "requests per minute",
                                           limited->retry_after_s()),
                               request_id});
      return;
    }
    // The key's priority class: a batch key's requests run as batch whatever they ask.
    if (key_->priority == request_priority::batch) req->priority = request_priority::batch;
  }
  std::optional<error> refused;
  {
    std::lock_guard lock(mu_);
    if (active_.contains(request_id)) {
      refused = error{errc::duplicate_request_id,
                      fmt::format("request_id {} is already in flight on this connection", request_id), request_id};
    } else if (active_.size() >= options_->max_requests_per_connection) {
      refused = error{errc::overloaded,
                      fmt::format("{} requests in flight on this connection, the limit is {}", active_.size(),
                                  options_->max_requests_per_connection),
                      request_id};
    } else {
      active_.insert(request_id);
    }
  }
  if (refused) {
    send_request_error(*refused);
    return;
  }
  auto sink = std::make_shared<session_stream_sink>(shared_from_this(), request_id, req->stream);
  try {
    handler_.on_generate(sink, std::move(*req));
  } catch (const std::exception& e) {
    logger().error("request handler threw connection={} request_id={} what={}", static_cast<uint64_t>(id_),
                   request_id, e.what());
    sink->send_error(errc::internal, "internal error");
  } catch (...) {
    logger().error("request handler threw connection={} request_id={}", static_cast<uint64_t>(id_), request_id);
    sink->send_error(errc::internal, "internal error");
  }
}

void client_session::charge_tokens(uint64_t n_tokens) {
  if (key_ != nullptr && n_tokens > 0) options_->api_keys->charge_tokens(*key_, n_tokens);
}

void client_session::handle_cancel(std::string_view payload) {
  auto c = decode_cancel(payload);
  if (!c) {
    refuse_frame(c.error());
    return;
  }
  bool active = false;
  {
    std::lock_guard lock(mu_);
    active = active_.contains(c->request_id);
  }
  if (!active) {
    // It may have finished while the cancel was on its way: nothing to do.
    logger().debug("cancel for a request not in flight connection={} request_id={}", static_cast<uint64_t>(id_),
                   c->request_id);
    return;
  }
  try {
    handler_.on_cancel(id_, c->request_id);
  } catch (...) {
    logger().error("request handler threw on cancel connection={} request_id={}", static_cast<uint64_t>(id_),
                   c->request_id);
  }
}

void client_session::handle_admin(std::string_view payload) {
  auto req = decode_admin(payload);
  if (!req) {
    refuse_frame(req.error());
    return;
  }
  const uint64_t request_id = req->request_id;
  std::string who = fmt::format("tcp {} connection={} client={}", peer_, static_cast<uint64_t>(id_),
                                client_name_.empty() ? "-" : client_name_);
  auto reply = [self = shared_from_this(), version = version_.load()](admin_reply r) {
    self->enqueue(encode(r, version), 0);
  };
  try {
    handler_.on_admin(std::move(*req), std::move(who), std::move(reply));
  } catch (...) {
    logger().error("request handler threw on admin connection={} request_id={}", static_cast<uint64_t>(id_),
                   request_id);
    enqueue(encode(admin_reply{request_id, false, "internal", "internal error", ""}, version_), 0);
  }
}

void client_session::send_request_error(const error& e) {
  logger().debug("request refused connection={} request_id={} code={} message={}", static_cast<uint64_t>(id_),
                 e.request_id, errc_name(e.code), e.message);
  enqueue(encode(error_frame{e.request_id, e.code, e.message}, version_), 0);
}

void client_session::refuse_frame(const error& e) {
  // An error that names no request (request_id 0) is about the connection: it closes.
  if (closes_connection(e.code) || e.request_id == 0) {
    fail(e);
  } else {
    send_request_error(e);
  }
}

void client_session::fail(const error& e) {
  bool start_write = false;
  {
    std::lock_guard lock(mu_);
    if (state_ != state::open) return;
    state_ = state::closing;
    active_.clear();
    auto bytes = encode(error_frame{0, e.code, e.message}, version_);
    queued_bytes_ += bytes.size();
    queue_.push_back(std::move(bytes));
    if (!writing_) {
      writing_ = true;
      start_write = true;
    }
  }
  // Timeouts, refused keys and evictions are what hostile clients cause by the thousand: they are
  // not worth a warning each (the API key throttle logs its own summary).
  if (e.code == errc::shutting_down || e.code == errc::timeout || e.code == errc::unauthorized ||
      e.code == errc::overloaded) {
    logger().debug("closing connection connection={} peer={} code={} message={}", static_cast<uint64_t>(id_), peer_,
                   errc_name(e.code), e.message);
  } else {
    logger().warn("closing connection after error connection={} peer={} code={} message={}",
                  static_cast<uint64_t>(id_), peer_, errc_name(e.code), e.message);
  }
  deadline_timer_.cancel();
  // The connection no longer counts against the caps, and its partial input is dropped now.
  decoder_ = frame_decoder(decoder_.options());
  charged_ = 0;
  registry_->closing(id_);
  report_disconnect();
  linger_timer_.expires_after(options_->close_linger);
  linger_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec) self->close_now("linger timeout");
  });
  if (start_write) do_write();
}

// ---- writing --------------------------------------------------------------------------------

void client_session::do_write() {
  if (finished_) return;
  bool flushed = false;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty()) {
      writing_ = false;
      flushed = state_ == state::closing;
    } else {
      in_flight_.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
    }
  }
  if (flushed) {
    on_flushed();
    return;
  }
  if (in_flight_.empty()) return;
  std::vector<asio::const_buffer> buffers;
  buffers.reserve(in_flight_.size());
  for (const auto& b : in_flight_) buffers.push_back(asio::buffer(b));
  asio::async_write(socket_, buffers,
                    [self = shared_from_this()](const boost::system::error_code& ec, size_t) { self->on_write(ec); });
}

void client_session::on_write(const boost::system::error_code& ec) {
  if (finished_) return;
  if (ec) {
    close_now(fmt::format("write failed: {}", ec.message()));
    return;
  }
  size_t written = 0;
  for (const auto& b : in_flight_) written += b.size();
  in_flight_.clear();
  {
    std::lock_guard lock(mu_);
    queued_bytes_ -= std::min(queued_bytes_, written);
  }
  do_write();
}

void client_session::on_flushed() {
  flushed_ = true;
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_send, ignored);
  if (read_done_) close_now("closed after an error");
}

// ---- closing --------------------------------------------------------------------------------

void client_session::close_now(std::string_view reason) {
  if (finished_) return;
  finished_ = true;
  {
    std::lock_guard lock(mu_);
    state_ = state::closed;
    active_.clear();
    queue_.clear();
    queued_bytes_ = 0;
  }
  boost::system::error_code ignored;
  deadline_timer_.cancel();
  linger_timer_.cancel();
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
  logger().debug("connection closed connection={} reason={}", static_cast<uint64_t>(id_), reason);
  report_disconnect();
  registry_->remove(id_);
}

void client_session::report_disconnect() {
  if (!handshake_done_ || disconnect_reported_) return;
  disconnect_reported_ = true;
  try {
    handler_.on_disconnect(id_);
  } catch (...) {
    logger().error("request handler threw on disconnect connection={}", static_cast<uint64_t>(id_));
  }
}

}  // namespace troupe::transport
