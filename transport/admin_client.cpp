#include "transport/admin_client.hpp"

#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "transport/frame.hpp"

namespace troupe::transport {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

struct admin_client::impl {
  admin_client_options options;
  asio::io_context io;
  tcp::socket socket{io};
  frame_decoder decoder;
  hello_ok info;
  uint64_t next_id = 1;

  error io_fail(const std::string& what) { return error{errc::connection_closed, what, 0}; }

  // The next whole frame, waiting at most options.timeout.
  result<frame> read_frame() {
    const auto deadline = std::chrono::steady_clock::now() + options.timeout;
    for (;;) {
      auto f = decoder.next();
      if (!f) return std::unexpected(f.error());
      if (*f) return std::move(**f);
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::unexpected(error{errc::timeout, "no reply from the server in time", 0});
      pollfd p{socket.native_handle(), POLLIN, 0};
      const int n = ::poll(&p, 1, int(left.count()));
      if (n == 0) continue;
      if (n < 0) return std::unexpected(io_fail("poll failed"));
      char buf[16 * 1024];
      boost::system::error_code ec;
      const size_t got = socket.read_some(asio::buffer(buf), ec);
      if (ec) return std::unexpected(io_fail("the server closed the connection"));
      decoder.feed(std::string_view(buf, got));
    }
  }

  result<void> write(const std::string& bytes) {
    boost::system::error_code ec;
    asio::write(socket, asio::buffer(bytes), ec);
    if (ec) return std::unexpected(io_fail("write failed: " + ec.message()));
    return {};
  }
};

admin_client::admin_client(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
admin_client::admin_client(admin_client&&) noexcept = default;
admin_client& admin_client::operator=(admin_client&&) noexcept = default;
admin_client::~admin_client() {
  if (impl_) {
    boost::system::error_code ignored;
    impl_->socket.close(ignored);
  }
}

const hello_ok& admin_client::server_info() const { return impl_->info; }

result<admin_client> admin_client::connect(admin_client_options options) {
  auto p = std::make_unique<impl>();
  p->options = std::move(options);
  boost::system::error_code ec;
  tcp::resolver resolver(p->io);
  auto endpoints = resolver.resolve(p->options.host, std::to_string(p->options.port), ec);
  if (ec) return std::unexpected(error{errc::io_error, fmt::format("cannot resolve {}: {}", p->options.host, ec.message()), 0});
  asio::connect(p->socket, endpoints, ec);
  if (ec) {
    return std::unexpected(error{errc::io_error,
                                 fmt::format("cannot connect to {}:{}: {}", p->options.host, p->options.port, ec.message()),
                                 0});
  }
  hello h;
  h.api_key = p->options.api_key;
  h.client_name = p->options.client_name;
  h.admin_token = p->options.token;
  if (auto w = p->write(encode(h)); !w) return std::unexpected(w.error());
  auto f = p->read_frame();
  if (!f) return std::unexpected(f.error());
  if (f->kind == frame_kind::error) {
    auto e = decode_error(f->payload);
    if (!e) return std::unexpected(e.error());
    return std::unexpected(error{e->code, e->message, 0});
  }
  if (f->kind != frame_kind::hello_ok) {
    return std::unexpected(error{errc::bad_frame, fmt::format("server answered hello with {}", frame_kind_name(f->kind)), 0});
  }
  auto ok = decode_hello_ok(f->payload);
  if (!ok) return std::unexpected(ok.error());
  p->info = *ok;
  p->decoder.set_versions(ok->version, ok->version);
  return admin_client(std::move(p));
}

result<admin_reply> admin_client::run(const std::vector<std::string>& command) {
  auto& p = *impl_;
  admin_request r;
  r.request_id = p.next_id++;
  r.token = p.options.token;
  r.command = command;
  if (auto w = p.write(encode(r, p.info.version)); !w) return std::unexpected(w.error());
  for (;;) {
    auto f = p.read_frame();
    if (!f) return std::unexpected(f.error());
    if (f->kind == frame_kind::error) {
      auto e = decode_error(f->payload);
      if (!e) return std::unexpected(e.error());
      return std::unexpected(error{e->code, e->message, e->request_id});
    }
    if (f->kind != frame_kind::admin_reply) continue;
    auto reply = decode_admin_reply(f->payload);
    if (!reply) return std::unexpected(reply.error());
    if (reply->request_id != r.request_id) continue;  // an answer to a command that timed out
    return *reply;
  }
}

}  // namespace troupe::transport
