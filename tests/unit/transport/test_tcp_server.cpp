// The TCP server and the client library over loopback (127.0.0.1, ephemeral ports), with a fake
// request_handler. Waits are on condition variables and futures with timeouts, never sleeps.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <stdexcept>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "transport/client.hpp"
#include "transport/tcp_server.hpp"

using namespace troupe::transport;
using namespace std::chrono_literals;

namespace {

constexpr auto wait_limit = 10s;

/// Streams `n_chunks` chunks and a final frame at once, or holds the sink for the test to drive.
class fake_handler final : public request_handler {
 public:
  enum class mode { stream_now, hold };
  explicit fake_handler(mode m = mode::stream_now, int n_chunks = 3) : mode_(m), n_chunks_(n_chunks) {}

  void on_generate(std::shared_ptr<stream_sink> sink, generate_request req) override {
    const auto prompt_bytes = static_cast<uint32_t>(req.prompt.size());
    {
      std::lock_guard lock(mu_);
      requests_.push_back(std::move(req));
      n_requests_ = requests_.size();
      if (mode_ == mode::hold) {
        held_.push_back(sink);
        n_held_ = held_.size();
      }
      cv_.notify_all();
    }
    if (mode_ == mode::stream_now) {
      for (int i = 0; i < n_chunks_; ++i) sink->send_chunk(fmt::format("t{}", i), {100 + i});
      sink->send_final(final_frame{0, finish_reason::length, prompt_bytes, static_cast<uint32_t>(n_chunks_), 1.5,
                                   3.25});
    }
  }

  void on_cancel(connection_id c, uint64_t request_id) override {
    std::lock_guard lock(mu_);
    cancels_.emplace_back(c, request_id);
    n_cancels_ = cancels_.size();
    for (auto& s : held_) {
      if (s->connection() == c && s->request_id() == request_id) {
        s->send_final(final_frame{0, finish_reason::cancelled, 1, 0, 0, 0});
      }
    }
    cv_.notify_all();
  }

  void on_disconnect(connection_id c) override {
    std::lock_guard lock(mu_);
    disconnects_.push_back(c);
    n_disconnects_ = disconnects_.size();
    cv_.notify_all();
  }

  template <class Pred>
  bool wait(Pred pred) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, wait_limit, [&] { return pred(*this); });
  }

  // Readable with or without the lock (inside wait() predicates and outside).
  size_t n_requests() const { return n_requests_; }
  size_t n_held() const { return n_held_; }
  size_t n_cancels() const { return n_cancels_; }
  size_t n_disconnects() const { return n_disconnects_; }

  std::shared_ptr<stream_sink> held(size_t i) {
    std::lock_guard lock(mu_);
    return held_.at(i);
  }
  generate_request request(size_t i) {
    std::lock_guard lock(mu_);
    return requests_.at(i);
  }
  std::vector<connection_id> disconnects() {
    std::lock_guard lock(mu_);
    return disconnects_;
  }
  std::vector<std::pair<connection_id, uint64_t>> cancels() {
    std::lock_guard lock(mu_);
    return cancels_;
  }
  void drop_held() {
    std::vector<std::shared_ptr<stream_sink>> dropped;
    {
      std::lock_guard lock(mu_);
      dropped.swap(held_);
    }
  }

 private:
  const mode mode_;
  const int n_chunks_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<generate_request> requests_;
  std::vector<std::shared_ptr<stream_sink>> held_;
  std::vector<std::pair<connection_id, uint64_t>> cancels_;
  std::vector<connection_id> disconnects_;
  std::atomic<size_t> n_requests_{0}, n_held_{0}, n_cancels_{0}, n_disconnects_{0};
};

server_options test_options() {
  server_options o;
  o.host = "127.0.0.1";
  o.port = 0;
  o.model = "fake-model";
  o.close_linger = 500ms;
  return o;
}

/// A started server on an ephemeral port.
struct running_server {
  running_server(request_handler& h, server_options o = test_options()) : server(std::move(o), h) {
    auto ok = server.start();
    BOOST_TEST_REQUIRE(ok.has_value(), (ok ? "" : ok.error().message));
    BOOST_TEST_REQUIRE(server.port() != 0);
  }
  tcp_server server;
};

client connect_client(uint16_t port, std::string api_key = {}) {
  client_options o;
  o.port = port;
  o.api_key = std::move(api_key);
  auto c = client::connect(o);
  BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error().message));
  return std::move(*c);
}

generate_request text_request(std::string prompt = "hello") {
  generate_request r;
  r.prompt = std::move(prompt);
  r.max_tokens = 8;
  return r;
}

/// A plain blocking socket with a receive timeout, for sending exactly the bytes a test wants.
class raw_connection {
 public:
  explicit raw_connection(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    BOOST_TEST_REQUIRE(fd_ >= 0);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_TEST_REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~raw_connection() { ::close(fd_); }
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;

  void send(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      BOOST_TEST_REQUIRE(n > 0);
      bytes.remove_prefix(static_cast<size_t>(n));
    }
  }

  /// The next frame; nullopt when the server closed the connection (or after the 5 s timeout,
  /// which `timed_out()` tells).
  std::optional<frame> read_frame() {
    for (;;) {
      auto f = decoder_.next();
      BOOST_TEST_REQUIRE(f.has_value());
      if (*f) return std::move(**f);
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        timed_out_ = true;
        return std::nullopt;
      }
      if (n <= 0) return std::nullopt;  // EOF or reset: closed
      decoder_.feed(std::string_view(buf, static_cast<size_t>(n)));
    }
  }

  error_frame read_error() {
    auto f = read_frame();
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST_REQUIRE(static_cast<int>(f->kind) == static_cast<int>(frame_kind::error));
    auto e = decode_error(f->payload);
    BOOST_TEST_REQUIRE(e.has_value());
    return *e;
  }

  /// True when the server closed the connection (EOF) with no further frames.
  bool closed_by_server() {
    auto f = read_frame();
    return !f && !timed_out_;
  }

  void handshake() {
    send(encode(hello{}));
    auto f = read_frame();
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST_REQUIRE(static_cast<int>(f->kind) == static_cast<int>(frame_kind::hello_ok));
  }

  void stop_reading_small_buffer() {
    int size = 4096;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }

 private:
  int fd_ = -1;
  frame_decoder decoder_{frame_decoder_options{16u << 20, 1, 1}};
  bool timed_out_ = false;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(tcp_server)

BOOST_AUTO_TEST_CASE(client_receives_chunks_then_final) {
  fake_handler handler;
  running_server s(handler);
  auto c = connect_client(s.server.port());
  BOOST_TEST(c.server_info().model == "fake-model");
  BOOST_TEST(c.server_info().version == protocol_version);
  BOOST_TEST((c.server_info().limits == protocol_limits{}));

  std::vector<token_chunk> chunks;
  auto fin = c.generate(text_request("hello"), [&](const token_chunk& t) { chunks.push_back(t); });
  BOOST_TEST_REQUIRE(fin.has_value(), (fin ? "" : fin.error().message));
  BOOST_TEST_REQUIRE(chunks.size() == 3u);
  BOOST_TEST(chunks[0].text == "t0");
  BOOST_TEST(chunks[2].text == "t2");
  BOOST_TEST((chunks[1].ids == std::vector<int32_t>{101}));
  BOOST_TEST((fin->reason == finish_reason::length));
  BOOST_TEST(fin->prompt_tokens == 5u);
  BOOST_TEST(fin->completion_tokens == 3u);
  BOOST_TEST(fin->ttft_ms == 1.5);
  BOOST_TEST(fin->total_ms == 3.25);
  BOOST_TEST(fin->request_id == chunks[0].request_id);

  // The handler saw the validated request.
  BOOST_TEST(handler.request(0).prompt == "hello");
  BOOST_TEST(handler.request(0).max_tokens == 8u);

  // A second request on the same connection.
  auto again = c.generate(text_request("x"));
  BOOST_TEST_REQUIRE(again.has_value());
  BOOST_TEST(again->request_id != fin->request_id);
}

BOOST_AUTO_TEST_CASE(concurrent_requests_on_one_connection_and_many_connections) {
  fake_handler handler(fake_handler::mode::stream_now, 5);
  auto o = test_options();
  o.io_threads = 2;
  running_server s(handler, o);
  auto shared = connect_client(s.server.port());
  std::vector<std::future<bool>> results;
  for (int i = 0; i < 4; ++i) {
    results.push_back(std::async(std::launch::async, [&] {
      std::string text;
      auto fin = shared.generate(text_request(), [&](const token_chunk& t) { text += t.text; });
      return fin.has_value() && text == "t0t1t2t3t4";
    }));
    results.push_back(std::async(std::launch::async, [&] {
      // No Boost.Test macros off the main thread: they are not thread-safe.
      client_options co;
      co.port = s.server.port();
      auto own = client::connect(co);
      if (!own) return false;
      auto fin = own->generate(text_request());
      return fin.has_value() && fin->completion_tokens == 5;
    }));
  }
  for (auto& r : results) {
    BOOST_TEST_REQUIRE((r.wait_for(wait_limit) == std::future_status::ready));
    BOOST_TEST(r.get());
  }
}

BOOST_AUTO_TEST_CASE(malformed_frame_closes_only_that_connection) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto good = connect_client(s.server.port());
  std::vector<std::string> texts;
  auto stream = std::async(std::launch::async, [&] {
    return good.generate(text_request(), [&](const token_chunk& t) { texts.push_back(t.text); });
  });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  auto sink = handler.held(0);
  BOOST_TEST(sink->send_chunk("before", {1}));

  // Another connection sends garbage after its handshake.
  raw_connection bad(s.server.port());
  bad.handshake();
  bad.send("this is not a frame");
  const auto e = bad.read_error();
  BOOST_TEST((e.code == errc::bad_frame));
  BOOST_TEST(e.request_id == 0u);
  BOOST_TEST(bad.closed_by_server());
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_disconnects() == 1; }));
  BOOST_TEST((handler.disconnects()[0] != sink->connection()));

  // The first connection's stream carries on.
  BOOST_TEST(!sink->closed());
  BOOST_TEST(sink->send_chunk(" after", {2}));
  BOOST_TEST(sink->send_final(final_frame{0, finish_reason::stop, 1, 2, 0.5, 1.0}));
  BOOST_TEST(sink->closed());
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto fin = stream.get();
  BOOST_TEST_REQUIRE(fin.has_value(), (fin ? "" : fin.error().message));
  BOOST_TEST((texts == std::vector<std::string>{"before", " after"}));
  BOOST_TEST(good.is_open());
}

BOOST_AUTO_TEST_CASE(oversize_frame_gets_error_and_close) {
  fake_handler handler;
  auto o = test_options();
  o.limits.max_frame_bytes = 4096;
  running_server s(handler, o);
  raw_connection c(s.server.port());
  c.handshake();
  std::string header = encode_frame(frame_kind::generate, "");
  header[6] = 0x7f;  // length ~2 GiB; no payload follows
  c.send(header);
  const auto e = c.read_error();
  BOOST_TEST((e.code == errc::frame_too_large));
  BOOST_TEST(c.closed_by_server());
  BOOST_TEST(handler.wait([](auto& h) { return h.n_disconnects() == 1; }));
}

BOOST_AUTO_TEST_CASE(non_protocol_bytes_before_hello_get_bad_frame) {
  fake_handler handler;
  running_server s(handler);
  raw_connection c(s.server.port());
  c.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  BOOST_TEST((c.read_error().code == errc::bad_frame));
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_CASE(first_frame_must_be_hello) {
  fake_handler handler;
  running_server s(handler);
  raw_connection c(s.server.port());
  auto req = text_request();
  req.request_id = 1;
  c.send(encode(req));
  const auto e = c.read_error();
  BOOST_TEST((e.code == errc::bad_frame));
  BOOST_TEST(e.message.find("hello") != std::string::npos);
  BOOST_TEST(c.closed_by_server());
  BOOST_TEST(handler.n_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(unsupported_version_is_refused) {
  fake_handler handler;
  running_server s(handler);
  {
    raw_connection c(s.server.port());
    c.send(encode(hello{}, 9));  // header version 9
    BOOST_TEST((c.read_error().code == errc::unsupported_version));
    BOOST_TEST(c.closed_by_server());
  }
  {
    raw_connection c(s.server.port());
    c.send(encode(hello{7, 5, "", ""}));  // speaks 5..7 only
    BOOST_TEST((c.read_error().code == errc::unsupported_version));
    BOOST_TEST(c.closed_by_server());
  }
  {
    raw_connection c(s.server.port());  // speaks 1..7: gets 1
    c.send(encode(hello{7, 1, "", ""}));
    auto f = c.read_frame();
    BOOST_TEST_REQUIRE(f.has_value());
    auto ok = decode_hello_ok(f->payload);
    BOOST_TEST_REQUIRE(ok.has_value());
    BOOST_TEST(ok->version == 1);
  }
}

BOOST_AUTO_TEST_CASE(api_key_is_enforced) {
  fake_handler handler;
  auto o = test_options();
  o.api_keys = {"first-key", "second-key"};
  running_server s(handler, o);
  client_options co;
  co.port = s.server.port();

  auto none = client::connect(co);
  BOOST_TEST_REQUIRE(!none.has_value());
  BOOST_TEST((none.error().code == errc::unauthorized));

  co.api_key = "second-kez";
  auto wrong = client::connect(co);
  BOOST_TEST_REQUIRE(!wrong.has_value());
  BOOST_TEST((wrong.error().code == errc::unauthorized));

  co.api_key = "second-key";
  auto right = client::connect(co);
  BOOST_TEST_REQUIRE(right.has_value(), (right ? "" : right.error().message));
  BOOST_TEST(right->generate(text_request()).has_value());
  // Refused connections never reached the handler.
  BOOST_TEST(handler.n_disconnects() == 0u);
}

BOOST_AUTO_TEST_CASE(client_disconnect_triggers_on_disconnect) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto stream = std::async(std::launch::async, [&] { return c.generate(text_request()); });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  auto sink = handler.held(0);
  BOOST_TEST(!sink->closed());

  c.close();
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto r = stream.get();
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::connection_closed));

  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_disconnects() == 1; }));
  BOOST_TEST((handler.disconnects()[0] == sink->connection()));
  BOOST_TEST(sink->closed());
  BOOST_TEST(!sink->send_chunk("late", {1}));
}

BOOST_AUTO_TEST_CASE(cancel_reaches_the_handler) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto req = text_request();
  req.request_id = c.next_request_id();
  auto stream = std::async(std::launch::async, [&] { return c.generate(req); });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  BOOST_TEST(c.cancel(req.request_id).has_value());
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_cancels() == 1; }));
  BOOST_TEST(handler.cancels()[0].second == req.request_id);
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto fin = stream.get();
  BOOST_TEST_REQUIRE(fin.has_value());
  BOOST_TEST((fin->reason == finish_reason::cancelled));
}

BOOST_AUTO_TEST_CASE(exception_from_the_chunk_callback_cancels_and_comes_out_of_generate) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto req = text_request();
  req.request_id = c.next_request_id();
  int calls = 0;
  auto stream = std::async(std::launch::async, [&] {
    return c.generate(req, [&](const token_chunk&) {
      ++calls;
      throw std::runtime_error("callback refused the chunk");
    });
  });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  handler.held(0)->send_chunk("a", {1});
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  BOOST_CHECK_THROW(stream.get(), std::runtime_error);
  BOOST_TEST(calls == 1);
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_cancels() == 1; }));  // the request was cancelled
  handler.held(0)->send_chunk("b", {2});  // after generate returned: not delivered to the gone callback

  // The connection still serves.
  auto again = std::async(std::launch::async, [&] { return c.generate(text_request("x")); });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 2; }));
  handler.held(1)->send_final(final_frame{0, finish_reason::length, 1, 0, 0, 0});
  BOOST_TEST_REQUIRE((again.wait_for(wait_limit) == std::future_status::ready));
  BOOST_TEST(again.get().has_value());
  BOOST_TEST(calls == 1);
}

BOOST_AUTO_TEST_CASE(request_errors_keep_the_connection_open) {
  fake_handler handler;
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto bad = text_request();
  bad.temperature = -1;
  auto r = c.generate(bad);
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::invalid_request));
  BOOST_TEST(r.error().message.find("temperature") != std::string::npos);

  auto big = text_request();
  big.max_tokens = protocol_limits{}.max_tokens + 1;
  auto r2 = c.generate(big);
  BOOST_TEST_REQUIRE(!r2.has_value());
  BOOST_TEST((r2.error().code == errc::max_tokens_too_large));

  BOOST_TEST(c.is_open());
  BOOST_TEST(c.generate(text_request()).has_value());
  BOOST_TEST(handler.n_requests() == 1u);
}

BOOST_AUTO_TEST_CASE(unknown_field_gets_an_error_naming_it) {
  fake_handler handler;
  running_server s(handler);
  raw_connection c(s.server.port());
  c.handshake();
  // A generate frame with an extra "temprature" field, written by hand.
  auto req = text_request();
  req.request_id = 11;
  std::string bytes = encode(req);
  std::string payload = bytes.substr(frame_header_bytes);
  BOOST_TEST_REQUIRE(static_cast<unsigned char>(payload[0]) == 0x8b);  // fixmap of 11
  payload[0] = static_cast<char>(0x8c);
  payload += "\xaa" "temprature";
  payload += "\xcb";  // float64 0.5
  payload += std::string("\x3f\xe0\x00\x00\x00\x00\x00\x00", 8);
  c.send(encode_frame(frame_kind::generate, payload));
  const auto e = c.read_error();
  BOOST_TEST((e.code == errc::unknown_field));
  BOOST_TEST(e.request_id == 11u);
  BOOST_TEST(e.message.find("'temprature'") != std::string::npos);
  // Still open: a valid request goes through.
  req.request_id = 12;
  c.send(encode(req));
  int n_chunks = 0;
  for (;;) {
    auto f = c.read_frame();
    BOOST_TEST_REQUIRE(f.has_value());
    if (f->kind == frame_kind::token_chunk) ++n_chunks;
    if (f->kind == frame_kind::final) break;
  }
  BOOST_TEST(n_chunks == 3);
}

BOOST_AUTO_TEST_CASE(duplicate_request_id_and_too_many_requests_are_refused) {
  fake_handler handler(fake_handler::mode::hold);
  auto o = test_options();
  o.max_requests_per_connection = 2;
  running_server s(handler, o);
  raw_connection c(s.server.port());
  c.handshake();
  auto req = text_request();
  req.request_id = 5;
  c.send(encode(req));
  c.send(encode(req));
  auto dup = c.read_error();
  BOOST_TEST((dup.code == errc::duplicate_request_id));
  BOOST_TEST(dup.request_id == 5u);
  req.request_id = 6;
  c.send(encode(req));
  req.request_id = 7;
  c.send(encode(req));
  auto over = c.read_error();
  BOOST_TEST((over.code == errc::overloaded));
  BOOST_TEST(over.request_id == 7u);
  BOOST_TEST(handler.n_requests() == 2u);

  // Once 5 ends, its id may be used again.
  BOOST_TEST(handler.held(0)->send_final(final_frame{0, finish_reason::stop, 1, 0, 0, 0}));
  auto fin = c.read_frame();
  BOOST_TEST_REQUIRE(fin.has_value());
  BOOST_TEST((fin->kind == frame_kind::final));
  req.request_id = 5;
  c.send(encode(req));
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_requests() == 3; }));
}

BOOST_AUTO_TEST_CASE(non_streaming_request_gets_one_chunk_before_final) {
  fake_handler handler(fake_handler::mode::stream_now, 4);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto req = text_request();
  req.stream = false;
  std::vector<token_chunk> chunks;
  auto fin = c.generate(req, [&](const token_chunk& t) { chunks.push_back(t); });
  BOOST_TEST_REQUIRE(fin.has_value());
  BOOST_TEST_REQUIRE(chunks.size() == 1u);
  BOOST_TEST(chunks[0].text == "t0t1t2t3");
  BOOST_TEST((chunks[0].ids == std::vector<int32_t>{100, 101, 102, 103}));
}

BOOST_AUTO_TEST_CASE(dropped_sink_sends_internal_error) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto stream = std::async(std::launch::async, [&] { return c.generate(text_request()); });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  handler.drop_held();
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto r = stream.get();
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::internal));
  BOOST_TEST(c.is_open());
}

BOOST_AUTO_TEST_CASE(client_that_does_not_read_is_closed) {
  fake_handler handler(fake_handler::mode::hold);
  auto o = test_options();
  o.max_write_queue_bytes = 64 * 1024;
  running_server s(handler, o);
  raw_connection c(s.server.port());
  c.stop_reading_small_buffer();
  c.handshake();
  auto req = text_request();
  req.request_id = 1;
  c.send(encode(req));
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  auto sink = handler.held(0);
  // Kernel buffers take a few MB; after that the queue fills and the server drops the client.
  const std::string text(16 * 1024, 'z');
  int sent = 0;
  while (sent < 100'000 && sink->send_chunk(text, {1})) ++sent;
  BOOST_TEST(sent < 100'000);
  BOOST_TEST(sink->closed());
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_disconnects() == 1; }));
}

BOOST_AUTO_TEST_CASE(handshake_timeout_closes_a_silent_connection) {
  fake_handler handler;
  auto o = test_options();
  o.handshake_timeout = 100ms;
  running_server s(handler, o);
  raw_connection c(s.server.port());
  BOOST_TEST((c.read_error().code == errc::timeout));
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_CASE(stop_closes_connections_and_reports_disconnects) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  auto stream = std::async(std::launch::async, [&] { return c.generate(text_request()); });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  s.server.stop();
  BOOST_TEST(handler.n_disconnects() == 1u);  // stop() returns after the handler heard of it
  BOOST_TEST(s.server.connection_count() == 0u);
  BOOST_TEST(handler.held(0)->closed());
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto r = stream.get();
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::shutting_down));
  s.server.stop();  // idempotent
}

BOOST_AUTO_TEST_CASE(connect_to_a_closed_port_fails_cleanly) {
  uint16_t port = 0;
  {
    fake_handler handler;
    running_server s(handler);
    port = s.server.port();
  }
  client_options co;
  co.port = port;
  auto c = client::connect(co);
  BOOST_TEST_REQUIRE(!c.has_value());
  BOOST_TEST((c.error().code == errc::io_error));
}

BOOST_AUTO_TEST_SUITE_END()
