#include "transport/control_gate.hpp"

#include <array>
#include <atomic>
#include <thread>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "transport/cluster_secret.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// The gate's handshake: the gate sends a nonce Ng; the client answers its nonce Nc and
// proof(client label, Ng); the gate checks it and answers proof(gate label, Nc), which the client
// checks. Only then is a byte relayed.
constexpr std::string_view label_client = "troupe control gate v1: client proves";
constexpr std::string_view label_gate = "troupe control gate v1: gate proves";

unexpected_error fail(errc code, std::string message) { return unexpected_error(error{code, std::move(message), 0}); }

// Relays bytes both ways between two connected sockets until either side closes.
class relay : public std::enable_shared_from_this<relay> {
 public:
  relay(tcp::socket a, tcp::socket b) : a_(std::move(a)), b_(std::move(b)) {}
  void start() {
    pump(a_, b_, buf_ab_);
    pump(b_, a_, buf_ba_);
  }

 private:
  void pump(tcp::socket& from, tcp::socket& to, std::array<char, 65536>& buf) {
    from.async_read_some(asio::buffer(buf), [self = shared_from_this(), &from, &to, &buf](auto ec, size_t n) {
      if (ec) return self->close();
      asio::async_write(to, asio::buffer(buf.data(), n), [self, &from, &to, &buf](auto ec2, size_t) {
        if (ec2) return self->close();
        self->pump(from, to, buf);
      });
    });
  }
  void close() {
    boost::system::error_code ec;
    a_.shutdown(tcp::socket::shutdown_both, ec);
    b_.shutdown(tcp::socket::shutdown_both, ec);
    a_.close(ec);
    b_.close(ec);
  }
  tcp::socket a_, b_;
  std::array<char, 65536> buf_ab_{}, buf_ba_{};
};

void no_delay(tcp::socket& s) {
  boost::system::error_code ec;
  s.set_option(tcp::no_delay(true), ec);
}

}  // namespace

// ---- gate_server ------------------------------------------------------------------------------------

struct gate_server::impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  uint16_t target_port = 0;
  gate_options options;
  std::atomic<uint64_t> n_rejected{0};
  std::thread thread;

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) handshake(std::make_shared<tcp::socket>(std::move(s)));
      accept();
    });
  }

  void reject(const std::shared_ptr<tcp::socket>& s, const std::string& peer, const char* why) {
    ++n_rejected;
    logger().warn("control gate: refused peer={} reason={}", peer, why);
    boost::system::error_code ec;
    s->close(ec);
  }

  void handshake(std::shared_ptr<tcp::socket> s) {
    boost::system::error_code ec;
    const auto ep = s->remote_endpoint(ec);
    const std::string peer = ec ? std::string("?") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
    auto timer = std::make_shared<asio::steady_timer>(io, options.handshake_timeout);
    timer->async_wait([s](boost::system::error_code e) {
      if (!e) {
        boost::system::error_code ignored;
        s->close(ignored);  // too slow: whatever is pending fails
      }
    });
    auto ng = std::make_shared<secret_nonce>(random_nonce());
    auto in = std::make_shared<std::array<unsigned char, secret_nonce_bytes + secret_proof_bytes>>();
    asio::async_write(*s, asio::buffer(*ng), [this, s, ng, in, timer, peer](auto e1, size_t) {
      if (e1) return reject(s, peer, "closed before the handshake");
      asio::async_read(*s, asio::buffer(*in), [this, s, ng, in, timer, peer](auto e2, size_t) {
        if (e2) return reject(s, peer, "no proof of the cluster secret (closed or too slow)");
        if (!proof_matches(in->data() + secret_nonce_bytes, prove_secret(options.secret, label_client, *ng))) {
          return reject(s, peer, "wrong proof of the cluster secret");
        }
        secret_nonce nc{};
        std::copy_n(in->begin(), secret_nonce_bytes, nc.begin());
        auto answer = std::make_shared<secret_proof>(prove_secret(options.secret, label_gate, nc));
        asio::async_write(*s, asio::buffer(*answer), [this, s, answer, timer, peer](auto e3, size_t) {
          timer->cancel();
          if (e3) return reject(s, peer, "closed during the handshake");
          auto target = std::make_shared<tcp::socket>(io);
          target->async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), target_port),
                                [s, target, peer](auto e4) {
                                  if (e4) {
                                    logger().error("control gate: cannot reach the local control port: {}",
                                                   e4.message());
                                    boost::system::error_code ignored;
                                    s->close(ignored);
                                    return;
                                  }
                                  logger().debug("control gate: admitted peer={}", peer);
                                  no_delay(*s);
                                  no_delay(*target);
                                  std::make_shared<relay>(std::move(*s), std::move(*target))->start();
                                });
        });
      });
    });
  }
};

gate_server::gate_server(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

gate_server::~gate_server() {
  asio::post(impl_->io, [this] {
    boost::system::error_code ec;
    impl_->acceptor.close(ec);
  });
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t gate_server::port() const { return impl_->acceptor.local_endpoint().port(); }
uint64_t gate_server::n_rejected() const { return impl_->n_rejected.load(); }

result<std::unique_ptr<gate_server>> gate_server::start(const std::string& host, uint16_t port, uint16_t target_port,
                                                        gate_options options) {
  if (options.secret.empty()) return fail(errc::invalid_request, "control gate: empty cluster secret");
  auto p = std::make_unique<impl>();
  p->target_port = target_port;
  p->options = std::move(options);
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return fail(errc::invalid_request, fmt::format("control gate: bad address {}: {}", host, ec.message()));
  const tcp::endpoint ep(address, port);
  p->acceptor.open(ep.protocol(), ec);
  if (!ec) p->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) p->acceptor.bind(ep, ec);
  if (!ec) p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(errc::io_error, fmt::format("control gate: cannot listen on {}:{}: {}", host, port, ec.message()));
  p->accept();
  p->thread = std::thread([io = &p->io] { io->run(); });
  return std::unique_ptr<gate_server>(new gate_server(std::move(p)));
}

// ---- gate_client ------------------------------------------------------------------------------------

struct gate_client::impl {
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::string host;
  uint16_t port = 0;
  gate_options options;
  std::unique_ptr<tcp::socket> ready;  // authenticated at start, for the first local connection
  std::thread thread;

  // Connects to the gate and runs the client side of the handshake (blocking, with a deadline).
  result<tcp::socket> connect_authenticated() {
    tcp::socket s(io);
    boost::system::error_code ec;
    tcp::resolver resolver(io);
    auto endpoints = resolver.resolve(host, std::to_string(port), ec);
    if (ec) return fail(errc::io_error, fmt::format("control gate {}:{}: cannot resolve: {}", host, port, ec.message()));
    asio::connect(s, endpoints, ec);
    if (ec) return fail(errc::io_error, fmt::format("control gate {}:{}: {}", host, port, ec.message()));
    // The deadline: a receive timeout on the socket (the blocking reads below honour it).
    const timeval tv{time_t(options.handshake_timeout.count() / 1000),
                     suseconds_t((options.handshake_timeout.count() % 1000) * 1000)};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    secret_nonce ng{};
    asio::read(s, asio::buffer(ng), ec);
    if (ec) return fail(errc::io_error, fmt::format("control gate {}:{}: no challenge: {}", host, port, ec.message()));
    const secret_nonce nc = random_nonce();
    std::array<unsigned char, secret_nonce_bytes + secret_proof_bytes> out{};
    std::copy(nc.begin(), nc.end(), out.begin());
    const secret_proof mine = prove_secret(options.secret, label_client, ng);
    std::copy(mine.begin(), mine.end(), out.begin() + secret_nonce_bytes);
    asio::write(s, asio::buffer(out), ec);
    secret_proof theirs{};
    if (!ec) asio::read(s, asio::buffer(theirs), ec);
    if (ec) {
      return fail(errc::unauthorized,
                  fmt::format("control gate {}:{}: the gate closed the connection during the handshake: is this "
                              "node's secret file the cluster's? ({})",
                              host, port, ec.message()));
    }
    if (!proof_matches(theirs.data(), prove_secret(options.secret, label_gate, nc))) {
      return fail(errc::unauthorized,
                  fmt::format("control gate {}:{}: the gate did not prove the cluster secret", host, port));
    }
    const timeval none{0, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
    no_delay(s);
    return s;
  }

  void accept() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket local) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        std::unique_ptr<tcp::socket> remote = std::move(ready);
        if (!remote) {
          // Another connection from CAF (rare: it keeps one per node): authenticate anew. This
          // blocks the gate's thread for one handshake.
          auto s = connect_authenticated();
          if (!s) {
            logger().warn("{}", s.error().message);
            boost::system::error_code ignored;
            local.close(ignored);
            accept();
            return;
          }
          remote = std::make_unique<tcp::socket>(std::move(*s));
        }
        no_delay(local);
        std::make_shared<relay>(std::move(local), std::move(*remote))->start();
      }
      accept();
    });
  }
};

gate_client::gate_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

gate_client::~gate_client() {
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint16_t gate_client::local_port() const { return impl_->acceptor.local_endpoint().port(); }

result<std::unique_ptr<gate_client>> gate_client::start(const std::string& host, uint16_t port, gate_options options) {
  if (options.secret.empty()) return fail(errc::invalid_request, "control gate: empty cluster secret");
  auto p = std::make_unique<impl>();
  p->host = host;
  p->port = port;
  p->options = std::move(options);
  // Authenticate before CAF connects at all: a refused secret is an error here, and CAF never
  // sees a connection that closes before its own handshake.
  auto first = p->connect_authenticated();
  if (!first) return unexpected_error(first.error());
  p->ready = std::make_unique<tcp::socket>(std::move(*first));
  boost::system::error_code ec;
  const tcp::endpoint ep(asio::ip::address_v4::loopback(), 0);
  p->acceptor.open(ep.protocol(), ec);
  if (!ec) p->acceptor.bind(ep, ec);
  if (!ec) p->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail(errc::io_error, fmt::format("control gate: cannot listen on 127.0.0.1: {}", ec.message()));
  p->accept();
  p->thread = std::thread([io = &p->io] { io->run(); });
  return std::unique_ptr<gate_client>(new gate_client(std::move(p)));
}

}  // namespace troupe::transport
