#include "transport/listen.hpp"

#include <algorithm>
#include <exception>

#include "transport/logger.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

result<tcp::endpoint> listen_on(tcp::acceptor& acceptor, asio::io_context& io, const std::string& host, uint16_t port,
                                std::string_view what) {
  boost::system::error_code ec;
  tcp::endpoint endpoint;
  const auto address = asio::ip::make_address(host, ec);
  if (!ec) {
    endpoint = tcp::endpoint(address, port);
  } else {
    tcp::resolver resolver(io);
    auto found = resolver.resolve(host, std::to_string(port), ec);
    if (ec || found.empty()) {
      return fail(errc::io_error, "cannot resolve host={} ({}): {}", host, what, ec ? ec.message() : "no address");
    }
    endpoint = found.begin()->endpoint();
  }
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor.close(ignored);
    return fail(errc::io_error, "cannot listen on {}:{} ({}): {}", host, port, what, ec.message());
  }
  return acceptor.local_endpoint(ec);
}

void start_io_threads(std::vector<std::thread>& threads, const std::shared_ptr<asio::io_context>& io, size_t n,
                      std::string_view what) {
  for (size_t i = 0; i < std::max<size_t>(1, n); ++i) {
    threads.emplace_back([io, what = std::string(what)] {
      for (;;) {
        try {
          io->run();
          return;
        } catch (const std::exception& e) {
          logger().error("{} I/O thread caught an exception what={}", what, e.what());
        } catch (...) {
          logger().error("{} I/O thread caught an unknown exception", what);
        }
      }
    });
  }
}

}  // namespace troupe::transport
