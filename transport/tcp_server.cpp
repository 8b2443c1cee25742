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
#include "transport/connection_registry.hpp"
#include "transport/listen.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct tcp_server::impl : std::enable_shared_from_this<tcp_server::impl> {
  impl(server_options o, request_handler& h)
      : options(std::make_shared<const server_options>(std::move(o))),
        handler(h),
        io(std::make_shared<asio::io_context>()),
        registry(std::make_shared<connection_registry>(*options)),
        acceptor(asio::make_strand(*io)),
        retry_timer(acceptor.get_executor()),
        auth_summary_timer(acceptor.get_executor()) {}

  void do_accept();
  void on_accept(tcp::socket socket);
  void schedule_auth_summary();

  const std::shared_ptr<const server_options> options;
  request_handler& handler;
  const std::shared_ptr<asio::io_context> io;  // before the acceptor: destroyed after it
  const std::shared_ptr<connection_registry> registry;
  tcp::acceptor acceptor;                      // strand executor
  asio::steady_timer retry_timer;              // after a failed accept (e.g. out of descriptors)
  asio::steady_timer auth_summary_timer;       // logs the API key throttle's summary once per window
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  std::atomic<uint16_t> port{0};

  mutable std::mutex mu;
  uint64_t next_id = 1;
  bool started = false;
  bool stopping = false;
};

void tcp_server::impl::do_accept() { accept_loop(shared_from_this(), "client protocol"); }

void tcp_server::impl::on_accept(tcp::socket socket) {
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  const auto remote = socket.remote_endpoint(ignored);
  std::string peer = remote.address().to_string();
  std::shared_ptr<client_session> session;
  connection_registry::admission admission;
  {
    std::lock_guard lock(mu);
    if (stopping) {
      socket.close(ignored);
      return;
    }
    const uint64_t id = next_id++;
    session = std::make_shared<client_session>(io, std::move(socket), connection_id{id}, options, handler, registry,
                                               peer);
    admission = registry->add(session, peer);
  }
  logger().debug("connection accepted connection={} peer={}", static_cast<uint64_t>(session->id()), peer);
  session->start();
  if (admission.evicted) {
    logger().debug("closing idle connection={} peer={} to make room", static_cast<uint64_t>(admission.evicted->id()),
                   admission.evicted->peer());
    admission.evicted->shutdown(
      errc::overloaded,
      fmt::format("closed to make room for a new connection: the server is at its limit of {} connections and "
                  "this one was idle the longest",
                  options->max_connections));
  }
  if (admission.refused) session->shutdown(admission.refused->code, admission.refused->message);
}

void tcp_server::impl::schedule_auth_summary() {
  auth_summary_timer.expires_after(options->auth_failure_window);
  auth_summary_timer.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || !self->acceptor.is_open()) return;
    if (auto line = self->registry->throttle().summary()) logger().warn("{}", *line);
    self->schedule_auth_summary();
  });
}

tcp_server::tcp_server(server_options options, request_handler& handler)
    : impl_(std::make_shared<impl>(std::move(options), handler)) {}

tcp_server::~tcp_server() { stop(); }

const server_options& tcp_server::options() const { return *impl_->options; }

uint16_t tcp_server::port() const { return impl_->port.load(); }

size_t tcp_server::connection_count() const { return impl_->registry->size(); }

size_t tcp_server::buffered_input_bytes() const { return impl_->registry->buffered_bytes(); }

result<void> tcp_server::start() {
  auto& s = *impl_;
  std::lock_guard lock(s.mu);
  if (s.started) return fail(errc::internal, "tcp_server::start called twice");
  const auto& o = *s.options;
  auto bound = listen_on(s.acceptor, *s.io, o.host, o.port, "client protocol");
  if (!bound) return std::unexpected(bound.error());
  const tcp::endpoint endpoint = *bound;
  s.port = endpoint.port();
  s.started = true;
  s.work.emplace(asio::make_work_guard(*s.io));
  s.do_accept();
  const bool open_to_all = !o.api_keys || o.api_keys->empty();
  if (!open_to_all && o.auth_failure_window.count() > 0) s.schedule_auth_summary();
  const size_t n_threads = std::max<size_t>(1, o.io_threads);
  start_io_threads(s.threads, s.io, o.io_threads, "client protocol");
  logger().info("listening host={} port={} io_threads={} auth={}", o.host, s.port.load(), n_threads,
                open_to_all ? "none" : "api_key");
  if (open_to_all) {
    logger().warn("NO AUTHENTICATION: the client protocol on {}:{} serves anyone who can reach it{}, without API "
                  "keys or rate limits. Give --api-key-file FILE (or listen.api_key_file) to require a key.",
                  o.host, s.port.load(), endpoint.address().is_loopback() ? " (a loopback address: local users)" : "");
  }
  return {};
}

void tcp_server::stop() {
  auto& s = *impl_;
  std::vector<std::shared_ptr<client_session>> open;
  {
    std::lock_guard lock(s.mu);
    if (!s.started || s.stopping) return;
    s.stopping = true;
  }
  open = s.registry->sessions();
  logger().info("stopping port={} connections={}", s.port.load(), open.size());
  asio::post(s.acceptor.get_executor(), [self = impl_] {
    boost::system::error_code ignored;
    self->acceptor.close(ignored);
    self->retry_timer.cancel();
    self->auth_summary_timer.cancel();
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
