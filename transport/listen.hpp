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

#include "transport/error.hpp"

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

}  // namespace troupe::transport
