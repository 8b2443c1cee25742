#include "transport/client.hpp"

#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <exception>
#include <variant>

#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "transport/frame.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

struct client::impl {
  using event = std::variant<final_frame, error>;  // chunks go to the callback (deliver_chunk)
  struct pending {
    std::deque<event> events;  // guarded by impl::mu
    // The caller's chunk callback, run on the I/O thread under deliver_mu; generate() clears it
    // (under deliver_mu) before it returns, so the callback never runs after that.
    std::mutex deliver_mu;
    const chunk_callback* on_chunk = nullptr;
    std::exception_ptr callback_failure;  // what on_chunk threw (guarded by impl::mu)
  };

  explicit impl(client_options o)
      : options(std::move(o)),
        decoder(frame_decoder_options{options.max_frame_bytes, min_protocol_version, protocol_version}) {}

  result<void> handshake();
  bool run_until(const bool& done, clock_type::time_point deadline);
  void start_io_thread();
  void do_read();
  void process_frames();
  void on_frame(const frame& f);
  void post_write(std::string bytes);
  void do_write();
  void fail_connection(error e);
  void deliver(uint64_t request_id, event ev);
  void deliver_chunk(uint64_t request_id, const token_chunk& chunk);

  client_options options;
  asio::io_context io;
  tcp::socket socket{io};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  frame_decoder decoder;
  std::array<char, 64 * 1024> read_buf{};
  hello_ok server;
  std::atomic<uint64_t> next_id{1};

  // I/O thread only.
  std::deque<std::string> write_queue;
  bool writing = false;

  mutable std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<uint64_t, std::shared_ptr<pending>> requests;
  bool open = true;
  bool closed_by_user = false;
  std::optional<error> connection_failure;  // why the connection ended
  std::optional<error_frame> server_error;  // connection-level error frame from the server
};

// ---- connect + handshake (on the caller's thread, before the I/O thread exists) ------------

bool client::impl::run_until(const bool& done, clock_type::time_point deadline) {
  io.restart();
  while (!done) {
    if (io.run_one_until(deadline) == 0 && !done) {
      boost::system::error_code ignored;
      socket.close(ignored);  // completes the pending operation with operation_aborted
      io.restart();
      io.run();
      return false;
    }
  }
  return true;
}

result<void> client::impl::handshake() {
  const auto deadline = clock_type::now() + options.connect_timeout;
  const auto timed_out = [&](const char* what) {
    return fail(errc::timeout, "{} {}:{} timed out after {} ms", what, options.host, options.port,
                options.connect_timeout.count());
  };
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(options.host, std::to_string(options.port), ec);
  if (ec) return fail(errc::io_error, "cannot resolve {}: {}", options.host, ec.message());

  bool done = false;
  asio::async_connect(socket, endpoints, [&](const boost::system::error_code& e, const tcp::endpoint&) {
    ec = e;
    done = true;
  });
  if (!run_until(done, deadline)) return timed_out("connecting to");
  if (ec) return fail(errc::io_error, "cannot connect to {}:{}: {}", options.host, options.port, ec.message());
  socket.set_option(tcp::no_delay(true), ec);

  const std::string hello_bytes =
      encode(hello{protocol_version, min_protocol_version, options.api_key, options.client_name, {}});
  done = false;
  asio::async_write(socket, asio::buffer(hello_bytes), [&](const boost::system::error_code& e, size_t) {
    ec = e;
    done = true;
  });
  if (!run_until(done, deadline)) return timed_out("hello to");
  if (ec) return fail(errc::io_error, "cannot send hello to {}:{}: {}", options.host, options.port, ec.message());

  for (;;) {
    auto next = decoder.next();
    if (!next) return unexpected_error(next.error());
    if (*next) {
      const frame& f = **next;
      if (f.kind == frame_kind::hello_ok) {
        auto ok = decode_hello_ok(f.payload);
        if (!ok) return unexpected_error(ok.error());
        if (ok->version < min_protocol_version || ok->version > protocol_version) {
          return fail(errc::unsupported_version, "server chose protocol version {}", ok->version);
        }
        server = std::move(*ok);
        decoder.set_versions(server.version, server.version);
        return {};
      }
      if (f.kind == frame_kind::error) {
        auto e = decode_error(f.payload);
        if (!e) return unexpected_error(e.error());
        return unexpected_error(error{e->code, e->message, 0});
      }
      return fail(errc::bad_frame, "server answered hello with a {} frame", frame_kind_name(f.kind));
    }
    size_t n = 0;
    done = false;
    socket.async_read_some(asio::buffer(read_buf), [&](const boost::system::error_code& e, size_t got) {
      ec = e;
      n = got;
      done = true;
    });
    if (!run_until(done, deadline)) return timed_out("handshake with");
    if (ec) {
      return fail(errc::connection_closed, "server {}:{} closed the connection during the handshake: {}",
                  options.host, options.port, ec.message());
    }
    decoder.feed(std::string_view(read_buf.data(), n));
  }
}

void client::impl::start_io_thread() {
  io.restart();
  work.emplace(asio::make_work_guard(io));
  asio::post(io, [this] {
    process_frames();  // whatever arrived together with hello_ok
    do_read();
  });
  thread = std::thread([this] {
    try {
      io.run();
    } catch (const std::exception& e) {
      logger().error("client I/O thread caught an exception what={}", e.what());
      fail_connection(error{errc::internal, e.what(), 0});
    }
  });
}

// ---- I/O thread -----------------------------------------------------------------------------

void client::impl::do_read() {
  socket.async_read_some(asio::buffer(read_buf), [this](const boost::system::error_code& ec, size_t n) {
    if (ec) {
      fail_connection(error{errc::connection_closed,
                            ec == asio::error::eof ? "the server closed the connection" : ec.message(), 0});
      return;
    }
    decoder.feed(std::string_view(read_buf.data(), n));
    process_frames();
    if (socket.is_open()) do_read();
  });
}

void client::impl::process_frames() {
  while (socket.is_open()) {
    auto next = decoder.next();
    if (!next) {
      fail_connection(next.error());
      return;
    }
    if (!*next) return;
    on_frame(**next);
  }
}

void client::impl::on_frame(const frame& f) {
  switch (f.kind) {
    case frame_kind::token_chunk: {
      auto c = decode_token_chunk(f.payload);
      if (!c) return fail_connection(c.error());
      const uint64_t id = c->request_id;
      return deliver_chunk(id, *c);
    }
    case frame_kind::final: {
      auto fin = decode_final(f.payload);
      if (!fin) return fail_connection(fin.error());
      const uint64_t id = fin->request_id;
      return deliver(id, *fin);
    }
    case frame_kind::error: {
      auto e = decode_error(f.payload);
      if (!e) return fail_connection(e.error());
      if (e->request_id == 0) {
        // Connection-level: the server closes the connection after it.
        {
          std::lock_guard lock(mu);
          server_error = *e;
        }
        return fail_connection(error{e->code, e->message, 0});
      }
      return deliver(e->request_id, error{e->code, e->message, e->request_id});
    }
    default:
      return fail_connection(
          error{errc::bad_frame, fmt::format("unexpected {} frame from the server", frame_kind_name(f.kind)), 0});
  }
}

void client::impl::deliver(uint64_t request_id, event ev) {
  std::lock_guard lock(mu);
  auto it = requests.find(request_id);
  if (it == requests.end()) return;  // timed out or unknown: dropped
  it->second->events.push_back(std::move(ev));
  cv.notify_all();
}

// A chunk goes to the callback here, on the I/O thread: waking the caller's thread for every
// token would cost a context switch per token on both sides of the futex.
void client::impl::deliver_chunk(uint64_t request_id, const token_chunk& chunk) {
  std::shared_ptr<pending> p;
  {
    std::lock_guard lock(mu);
    auto it = requests.find(request_id);
    if (it == requests.end() || it->second->callback_failure) return;  // gone, or cancelled by a throw
    p = it->second;
  }
  std::exception_ptr failure;
  {
    std::lock_guard lock(p->deliver_mu);
    if (p->on_chunk == nullptr || !*p->on_chunk) return;
    try {
      (*p->on_chunk)(chunk);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (failure) {
    std::lock_guard lock(mu);
    p->callback_failure = failure;
    cv.notify_all();
  }
}

void client::impl::fail_connection(error e) {
  boost::system::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  std::lock_guard lock(mu);
  if (!open) return;
  open = false;
  if (closed_by_user) e = error{errc::connection_closed, "the client closed the connection", 0};
  connection_failure = e;
  for (auto& [id, p] : requests) p->events.push_back(error{e.code, e.message, id});
  cv.notify_all();
}

void client::impl::post_write(std::string bytes) {
  asio::post(io, [this, bytes = std::move(bytes)]() mutable {
    if (!socket.is_open()) return;
    write_queue.push_back(std::move(bytes));
    if (!writing) do_write();
  });
}

void client::impl::do_write() {
  if (write_queue.empty() || !socket.is_open()) {
    writing = false;
    return;
  }
  writing = true;
  asio::async_write(socket, asio::buffer(write_queue.front()), [this](const boost::system::error_code& ec, size_t) {
    if (ec) {
      writing = false;
      write_queue.clear();
      fail_connection(error{errc::io_error, fmt::format("write failed: {}", ec.message()), 0});
      return;
    }
    write_queue.pop_front();
    do_write();
  });
}

// ---- public API -----------------------------------------------------------------------------

client::client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
client::client(client&&) noexcept = default;
client& client::operator=(client&& other) noexcept {
  if (this != &other) {
    close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}
client::~client() { close(); }

result<client> client::connect(client_options options) {
  auto p = std::make_unique<impl>(std::move(options));
  auto ok = p->handshake();
  if (!ok) {
    boost::system::error_code ignored;
    p->socket.close(ignored);
    return unexpected_error(std::move(ok).error());
  }
  p->start_io_thread();
  return client(std::move(p));
}

const hello_ok& client::server_info() const { return impl_->server; }

uint64_t client::next_request_id() { return impl_->next_id.fetch_add(1); }

result<final_frame> client::generate(generate_request request, const chunk_callback& on_chunk,
                                     std::chrono::milliseconds timeout) {
  auto& s = *impl_;
  if (request.request_id == 0) request.request_id = next_request_id();
  const uint64_t id = request.request_id;
  auto p = std::make_shared<impl::pending>();
  p->on_chunk = &on_chunk;
  {
    std::lock_guard lock(s.mu);
    if (!s.open) {
      auto e = s.connection_failure.value_or(error{errc::connection_closed, "the connection is closed", 0});
      e.request_id = id;
      return unexpected_error(std::move(e));
    }
    if (!s.requests.emplace(id, p).second) {
      return fail_request(id, errc::duplicate_request_id, "request_id {} is already in flight on this client", id);
    }
  }
  // Whatever happens below (even an exception from on_chunk), the request is forgotten at the end.
  struct forget {
    impl& s;
    impl::pending& p;
    uint64_t id;
    ~forget() {
      {
        std::lock_guard lock(s.mu);
        s.requests.erase(id);
      }
      std::lock_guard lock(p.deliver_mu);  // waits for a callback in progress
      p.on_chunk = nullptr;
    }
  } forget_at_exit{s, *p, id};

  s.post_write(encode(request, s.server.version));
  const auto deadline = timeout.count() > 0 ? clock_type::now() + timeout : clock_type::time_point::max();
  // Chunks go to on_chunk on the I/O thread; what comes here ends the request: its final frame,
  // an error, or an exception from on_chunk.
  std::unique_lock lock(s.mu);
  const auto ready = [&] { return !p->events.empty() || p->callback_failure; };
  if (deadline == clock_type::time_point::max()) {
    s.cv.wait(lock, ready);
  } else if (!s.cv.wait_until(lock, deadline, ready)) {
    lock.unlock();
    (void)cancel(id);
    return fail_request(id, errc::timeout, "request {} timed out after {} ms", id, timeout.count());
  }
  if (p->callback_failure) {
    const auto failure = p->callback_failure;
    lock.unlock();
    (void)cancel(id);
    std::rethrow_exception(failure);
  }
  impl::event ev = std::move(p->events.front());
  lock.unlock();
  if (auto* fin = std::get_if<final_frame>(&ev)) return *fin;
  return unexpected_error(std::get<error>(std::move(ev)));
}

result<void> client::cancel(uint64_t request_id) {
  auto& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    if (!s.open) return fail_request(request_id, errc::connection_closed, "the connection is closed");
  }
  s.post_write(encode(cancel_request{request_id}, s.server.version));
  return {};
}

result<void> client::send_raw(std::string bytes) {
  auto& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    if (!s.open) return fail(errc::connection_closed, "the connection is closed");
  }
  s.post_write(std::move(bytes));
  return {};
}

bool client::is_open() const {
  if (!impl_) return false;
  std::lock_guard lock(impl_->mu);
  return impl_->open;
}

std::optional<error_frame> client::connection_error() const {
  std::lock_guard lock(impl_->mu);
  return impl_->server_error;
}

void client::close() {
  if (!impl_ || !impl_->thread.joinable()) return;
  auto& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    s.closed_by_user = true;
  }
  asio::post(s.io, [&s] { s.fail_connection(error{errc::connection_closed, "closed", 0}); });
  s.work.reset();
  s.thread.join();
}

void client::disconnect() {
  if (!impl_) return;
  auto& s = *impl_;
  asio::post(s.io, [&s] { s.fail_connection(error{errc::connection_closed, "disconnected by the client", 0}); });
}

}  // namespace troupe::transport
