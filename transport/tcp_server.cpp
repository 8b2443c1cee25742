#include "transport/tcp_server.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "transport/client_session.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct tcp_server::impl : std::enable_shared_from_this<tcp_server::impl> {
  impl(server_options o, request_handler& h)
      : options(std::make_shared<const server_options>(std::move(o))),
        handler(h),
        io(std::make_shared<asio::io_context>()),
        acceptor(asio::make_strand(*io)),
        retry_timer(acceptor.get_executor()) {}

  void do_accept();
  void on_accept(tcp::socket socket);
  void remove(connection_id id);

  const std::shared_ptr<const server_options> options;
  request_handler& handler;
  const std::shared_ptr<asio::io_context> io;  // before the acceptor: destroyed after it
  tcp::acceptor acceptor;                      // strand executor
  asio::steady_timer retry_timer;              // after a failed accept (e.g. out of descriptors)
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<uint16_t> port{0};

  mutable std::mutex mu;
  std::unordered_map<uint64_t, std::weak_ptr<client_session>> sessions;
  uint64_t next_id = 1;
  bool started = false;
  bool stopping = false;
};

void tcp_server::impl::do_accept() {
  acceptor.async_accept(asio::make_strand(*io), [self = shared_from_this()](const boost::system::error_code& ec,
                                                                             tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) return;
    if (ec) {
      logger().warn("accept failed error={}", ec.message());
      self->retry_timer.expires_after(std::chrono::milliseconds(100));
      self->retry_timer.async_wait([self](const boost::system::error_code& tec) {
        if (!tec && self->acceptor.is_open()) self->do_accept();
      });
      return;
    }
    self->on_accept(std::move(socket));
    self->do_accept();
  });
}

void tcp_server::impl::on_accept(tcp::socket socket) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::shared_ptr<client_session> session;
  bool reject = false;
  {
    std::lock_guard lock(mu);
    if (stopping) {
      socket.close(ignored);
      return;
    }
    const uint64_t id = next_id++;
    reject = sessions.size() >= options->max_connections;
    std::weak_ptr<impl> weak = shared_from_this();
    session = std::make_shared<client_session>(io, std::move(socket), connection_id{id}, options, handler,
                                               [weak](connection_id cid) {
                                                 if (auto server = weak.lock()) server->remove(cid);
                                               });
    sessions.emplace(id, session);
  }
  logger().debug("connection accepted connection={}", static_cast<uint64_t>(session->id()));
  session->start();
  if (reject) {
    session->shutdown(errc::overloaded,
                      fmt::format("too many connections (limit {})", options->max_connections));
  }
}

void tcp_server::impl::remove(connection_id id) {
  std::lock_guard lock(mu);
  sessions.erase(static_cast<uint64_t>(id));
}

tcp_server::tcp_server(server_options options, request_handler& handler)
    : impl_(std::make_shared<impl>(std::move(options), handler)) {}

tcp_server::~tcp_server() { stop(); }

const server_options& tcp_server::options() const { return *impl_->options; }

uint16_t tcp_server::port() const { return impl_->port.load(); }

size_t tcp_server::connection_count() const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.size();
}

result<void> tcp_server::start() {
  auto& s = *impl_;
  std::lock_guard lock(s.mu);
  if (s.started) return fail(errc::internal, "tcp_server::start called twice");
  const auto& o = *s.options;
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  const auto address = asio::ip::make_address(o.host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, o.port);
  } else {
    tcp::resolver resolver(*s.io);
    auto found = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || found.empty()) {
      return fail(errc::io_error, "cannot resolve host={}: {}", o.host, ec ? ec.message() : "no address");
    }
    endpoint = found.begin()->endpoint();
  }
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    s.acceptor.close(ignored);
    return fail(errc::io_error, "cannot listen on {}:{}: {}", o.host, o.port, ec.message());
  }
  s.port = s.acceptor.local_endpoint(ec).port();
  s.started = true;
  s.work.emplace(asio::make_work_guard(*s.io));
  s.do_accept();
  const size_t n_threads = std::max<size_t>(1, o.io_threads);
  for (size_t i = 0; i < n_threads; ++i) {
    s.threads.emplace_back([io = s.io] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          logger().error("I/O thread caught an exception what={}", e.what());
        } catch (...) {
          logger().error("I/O thread caught an unknown exception");
        }
      }
    });
  }
  logger().info("listening host={} port={} io_threads={} auth={}", o.host, s.port.load(), n_threads,
                o.api_keys.empty() ? "none" : "api_key");
  return {};
}

void tcp_server::stop() {
  auto& s = *impl_;
  std::vector<std::shared_ptr<client_session>> open;
  {
    std::lock_guard lock(s.mu);
    if (!s.started || s.stopping) return;
    s.stopping = true;
    for (auto& [id, weak] : s.sessions) {
      if (auto session = weak.lock()) open.push_back(std::move(session));
    }
  }
  logger().info("stopping port={} connections={}", s.port.load(), open.size());
  asio::post(s.acceptor.get_executor(), [self = impl_] {
    boost::system::error_code ignored;
    self->acceptor.close(ignored);
    self->retry_timer.cancel();
  });
  for (auto& session : open) session->shutdown(errc::shutting_down, "the server is shutting down");
  open.clear();
  // Sessions close once their last frame is out (or after close_linger); then run() returns.
  s.work.reset();
  for (auto& t : s.threads) {
    if (t.get_id() == std::this_thread::get_id()) {
      logger().error("tcp_server::stop called from an I/O thread: not joining it");
      t.detach();
    } else {
      t.join();
    }
  }
  s.threads.clear();
  logger().info("stopped port={}", s.port.load());
}

}  // namespace troupe::transport
