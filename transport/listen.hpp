#pragma once
// What the client-protocol and HTTP servers share when they start: an acceptor bound and
// listening, and the I/O threads that run its io_context. Internal to transport/.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include "transport/error.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {

/// Resolves `host` (an address or a name), then opens, binds (reuse_address) and listens.
/// Returns the bound endpoint (the ephemeral port when `port` was 0); errc::io_error naming
/// `what`, the host and the port when it cannot.
result<boost::asio::ip::tcp::endpoint> listen_on(boost::asio::ip::tcp::acceptor& acceptor,
                                                 boost::asio::io_context& io, const std::string& host, uint16_t port,
                                                 std::string_view what);

/// Starts `n` (at least 1) threads running `io` until it runs out of work; an exception that
/// escapes a handler is logged (naming `what`) and the thread runs on.
void start_io_threads(std::vector<std::thread>& threads, const std::shared_ptr<boost::asio::io_context>& io, size_t n,
                      std::string_view what);

/// Accepts connections for ever (each socket on a strand of its own, handed to
/// server->on_accept), until the acceptor closes. A failed accept (e.g. out of descriptors) is
/// logged and retried after 100 ms on server->retry_timer. Server has acceptor, io, retry_timer.
template <class Server>
void accept_loop(std::shared_ptr<Server> server, std::string_view what) {
  namespace asio = boost::asio;
  auto& s = *server;
  s.acceptor.async_accept(asio::make_strand(*s.io), [server, what](const boost::system::error_code& ec,
                                                                   boost::asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !server->acceptor.is_open()) return;
    if (ec) {
      logger().warn("{} accept failed error={}", what, ec.message());
      server->retry_timer.expires_after(std::chrono::milliseconds(100));
      server->retry_timer.async_wait([server, what](const boost::system::error_code& tec) {
        if (!tec && server->acceptor.is_open()) accept_loop(server, what);
      });
      return;
    }
    server->on_accept(std::move(socket));
    accept_loop(server, what);
  });
}

}  // namespace troupe::transport
