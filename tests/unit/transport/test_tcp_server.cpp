// The TCP server and the client library over loopback (127.0.0.1, ephemeral ports), with a fake
// request_handler. Waits are on condition variables and futures with timeouts, never sleeps.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <condition_variable>
#include <future>
#include <stdexcept>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <spdlog/sinks/ostream_sink.h>

#include "transport/api_keys.hpp"
#include "transport/client.hpp"
#include "transport/logger.hpp"
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

  /// Sends as much of `bytes` as the server takes; false once it has closed the connection.
  bool send_until_closed(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  int fd() const { return fd_; }

  void stop_reading_small_buffer() {
    int size = 4096;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }

 private:
  int fd_ = -1;
  frame_decoder decoder_{frame_decoder_options{16u << 20, 1, 1}};
  bool timed_out_ = false;
};

/// This process's resident set (VmRSS), in bytes; 0 when /proc is not readable.
size_t vm_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // "VmRSS:   1234 kB"
  }
  return 0;
}

/// Raises the soft descriptor limit to at least `n` (within the hard limit); false if impossible.
bool raise_fd_limit(rlim_t n) {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return false;
  if (l.rlim_cur >= n) return true;
  if (l.rlim_max != RLIM_INFINITY && l.rlim_max < n) return false;
  l.rlim_cur = n;
  return ::setrlimit(RLIMIT_NOFILE, &l) == 0;
}

/// Everything the transport logger writes while it lives, as text.
class log_capture {
 public:
  log_capture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    sink_->set_pattern("[%l] %v");
    logger().sinks().push_back(sink_);
  }
  ~log_capture() {
    auto& sinks = logger().sinks();
    std::erase(sinks, sink_);
  }
  std::string text() {
    logger().flush();
    std::lock_guard lock(mu_);
    return out_.str();
  }
  /// Lines that contain `needle`.
  size_t count_lines(std::string_view needle) {
    std::istringstream in(text());
    std::string line;
    size_t n = 0;
    while (std::getline(in, line)) n += line.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }

 private:
  std::mutex mu_;
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

using steady = std::chrono::steady_clock;

double ms_between(steady::time_point a, steady::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

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
    c.send(encode(hello{7, 5, "", "", ""}));  // speaks 5..7 only
    BOOST_TEST((c.read_error().code == errc::unsupported_version));
    BOOST_TEST(c.closed_by_server());
  }
  {
    raw_connection c(s.server.port());  // speaks 1..7: gets 1
    c.send(encode(hello{7, 1, "", "", ""}));
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
  o.api_keys = api_key_set::without_limits({"first-key", "second-key"});
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

BOOST_AUTO_TEST_CASE(api_key_limits_refuse_with_rate_limited_and_its_class_sets_the_priority) {
  fake_handler handler;  // charges prompt bytes + 3 tokens per request
  auto o = test_options();
  std::vector<api_key> keys(3);
  keys[0] = {"alice-key", "alice", {60, 0, 1}, request_priority::interactive};  // 1 request a second
  keys[1] = {"night-key", "nightly", {}, request_priority::batch};
  keys[2] = {"carol-key", "carol", {0, 6, 0}, request_priority::interactive};  // 6 tokens a minute
  o.api_keys = std::make_shared<api_key_set>(std::move(keys));
  running_server s(handler, o);
  client_options co;
  co.port = s.server.port();

  co.api_key = "alice-key";
  auto alice = client::connect(co);
  BOOST_TEST_REQUIRE(alice.has_value(), (alice ? "" : alice.error().message));
  BOOST_TEST(alice->generate(text_request()).has_value());
  auto refused = alice->generate(text_request());
  BOOST_TEST_REQUIRE(!refused.has_value());
  BOOST_TEST((refused.error().code == errc::rate_limited));
  BOOST_TEST(refused.error().message.find("'alice'") != std::string::npos, refused.error().message);
  BOOST_TEST(refused.error().message.find("retry in 1 s") != std::string::npos, refused.error().message);
  BOOST_TEST(handler.n_requests() == 1u);  // the refused one never reached the handler

  // Another key is unaffected; a batch key's request runs as batch whatever it asks.
  co.api_key = "night-key";
  auto night = client::connect(co);
  BOOST_TEST_REQUIRE(night.has_value(), (night ? "" : night.error().message));
  auto asks_interactive = text_request();
  asks_interactive.priority = request_priority::interactive;
  BOOST_TEST(night->generate(asks_interactive).has_value());
  BOOST_TEST_REQUIRE(handler.n_requests() == 2u);
  BOOST_TEST((handler.request(1).priority == request_priority::batch));
  BOOST_TEST((handler.request(0).priority == request_priority::interactive));

  // Tokens are charged when the request ends (5 prompt bytes + 3 here): the next one waits.
  co.api_key = "carol-key";
  auto carol = client::connect(co);
  BOOST_TEST_REQUIRE(carol.has_value(), (carol ? "" : carol.error().message));
  BOOST_TEST(carol->generate(text_request()).has_value());
  auto over = carol->generate(text_request());
  BOOST_TEST_REQUIRE(!over.has_value());
  BOOST_TEST((over.error().code == errc::rate_limited));
  BOOST_TEST(over.error().message.find("tokens per minute") != std::string::npos, over.error().message);

  // The connection stayed open: alice is served again once her bucket has refilled (1 s).
  const auto give_up = steady::now() + wait_limit;
  result<final_frame> again = alice->generate(text_request());
  while (!again && again.error().code == errc::rate_limited && steady::now() < give_up) {
    std::this_thread::sleep_for(100ms);
    again = alice->generate(text_request());
  }
  BOOST_TEST(again.has_value());
  const auto counts = o.api_keys->rate_limited_counts();
  BOOST_TEST(counts[0].second >= 1u);
  BOOST_TEST(counts[1].second == 0u);
  BOOST_TEST(counts[2].second == 1u);
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

BOOST_AUTO_TEST_CASE(disconnect_from_the_chunk_callback_drops_the_connection_without_a_cancel) {
  fake_handler handler(fake_handler::mode::hold);
  running_server s(handler);
  auto c = connect_client(s.server.port());
  int calls = 0;
  auto stream = std::async(std::launch::async, [&] {
    return c.generate(text_request(), [&](const token_chunk&) {
      ++calls;
      c.disconnect();  // on the I/O thread, as `troupe bench serve --disconnect-after` does
    });
  });
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  auto sink = handler.held(0);
  sink->send_chunk("a", {1});
  BOOST_TEST_REQUIRE((stream.wait_for(wait_limit) == std::future_status::ready));
  auto r = stream.get();
  BOOST_TEST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::connection_closed));
  BOOST_TEST(calls == 1);
  BOOST_TEST(!c.is_open());
  // The server hears of the disconnect (which frees the request's KV blocks); no cancel frame.
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_disconnects() == 1; }));
  BOOST_TEST(sink->closed());
  BOOST_TEST(handler.n_cancels() == 0u);
  c.close();  // joins the I/O thread
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

// ---- hostile clients ------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(idle_connection_is_closed_on_schedule_but_not_while_a_request_is_in_flight) {
  fake_handler handler(fake_handler::mode::hold);
  auto o = test_options();
  o.idle_timeout = 300ms;
  running_server s(handler, o);
  // Idle after the handshake: closed after idle_timeout, not long before or after.
  raw_connection idle(s.server.port());
  idle.handshake();
  const auto t0 = steady::now();
  const auto e = idle.read_error();
  const double waited = ms_between(t0, steady::now());
  BOOST_TEST((e.code == errc::timeout));
  BOOST_TEST(e.message.find("idle") != std::string::npos, e.message);
  BOOST_TEST(waited >= 280.0, "closed after " << waited << " ms");
  BOOST_TEST(waited < 1300.0, "closed after " << waited << " ms");
  BOOST_TEST(idle.closed_by_server());

  // A request in flight keeps it open past idle_timeout; once it ends the idle clock starts.
  raw_connection busy(s.server.port());
  busy.handshake();
  generate_request r = text_request();
  r.request_id = 7;
  busy.send(encode(r));
  BOOST_TEST_REQUIRE(handler.wait([](auto& h) { return h.n_held() == 1; }));
  std::this_thread::sleep_for(600ms);  // twice idle_timeout with the request in flight
  BOOST_TEST(s.server.connection_count() == 1u);
  const auto t1 = steady::now();
  handler.held(0)->send_final(final_frame{0, finish_reason::length, 1, 1, 0, 0});
  auto fin = busy.read_frame();
  BOOST_TEST_REQUIRE(fin.has_value());
  BOOST_TEST(static_cast<int>(fin->kind) == static_cast<int>(frame_kind::final));
  const auto e2 = busy.read_error();
  const double waited2 = ms_between(t1, steady::now());
  BOOST_TEST((e2.code == errc::timeout));
  BOOST_TEST(waited2 >= 280.0, "closed " << waited2 << " ms after the request ended");
  BOOST_TEST(waited2 < 1300.0, "closed " << waited2 << " ms after the request ended");
}

BOOST_AUTO_TEST_CASE(half_sent_header_and_half_sent_payload_are_closed_on_schedule) {
  fake_handler handler;
  auto o = test_options();
  o.header_timeout = 200ms;
  o.body_timeout = 400ms;
  running_server s(handler, o);

  raw_connection header(s.server.port());
  header.handshake();
  const std::string whole = encode(text_request());
  auto t0 = steady::now();
  header.send(std::string_view(whole).substr(0, 5));  // half a header
  auto e = header.read_error();
  double waited = ms_between(t0, steady::now());
  BOOST_TEST((e.code == errc::timeout));
  BOOST_TEST(e.message.find("header") != std::string::npos, e.message);
  BOOST_TEST(waited >= 180.0, "closed after " << waited << " ms");
  BOOST_TEST(waited < 1200.0, "closed after " << waited << " ms");
  BOOST_TEST(header.closed_by_server());

  raw_connection body(s.server.port());
  body.handshake();
  t0 = steady::now();
  body.send(std::string_view(whole).substr(0, whole.size() - 3));  // all but the last 3 payload bytes
  // Trickling bytes does not extend the payload deadline.
  std::this_thread::sleep_for(150ms);
  body.send(std::string_view(whole).substr(whole.size() - 3, 1));
  e = body.read_error();
  waited = ms_between(t0, steady::now());
  BOOST_TEST((e.code == errc::timeout));
  BOOST_TEST(e.message.find("payload") != std::string::npos, e.message);
  BOOST_TEST(waited >= 380.0, "closed after " << waited << " ms");
  BOOST_TEST(waited < 1400.0, "closed after " << waited << " ms");
  BOOST_TEST(body.closed_by_server());
  BOOST_TEST(handler.n_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(new_client_is_served_while_1024_idle_connections_are_open) {
  BOOST_TEST_REQUIRE(raise_fd_limit(4096), "cannot raise RLIMIT_NOFILE to 4096 for 2 x 1024 sockets");
  fake_handler handler;
  auto o = test_options();
  o.max_connections = 1024;
  o.max_connections_per_peer = 0;  // every test connection comes from 127.0.0.1
  running_server s(handler, o);
  std::vector<std::unique_ptr<raw_connection>> idle;
  for (int i = 0; i < 1024; ++i) {
    idle.push_back(std::make_unique<raw_connection>(s.server.port()));
    idle.back()->handshake();
  }
  BOOST_TEST_REQUIRE(s.server.connection_count() == 1024u);
  // A newcomer takes the place of the connection idle the longest (the first).
  auto c = connect_client(s.server.port());
  auto r = c.generate(text_request());
  BOOST_TEST_REQUIRE(r.has_value(), (r ? "" : r.error().message));
  const auto e = idle.front()->read_error();
  BOOST_TEST((e.code == errc::overloaded));
  BOOST_TEST(e.message.find("make room") != std::string::npos, e.message);
  BOOST_TEST(idle.front()->closed_by_server());
}

BOOST_AUTO_TEST_CASE(connections_from_one_address_are_limited_and_busy_ones_are_never_evicted) {
  fake_handler handler(fake_handler::mode::hold);
  auto o = test_options();
  o.max_connections = 3;
  o.max_connections_per_peer = 2;
  running_server s(handler, o);
  raw_connection a(s.server.port()), b(s.server.port());
  a.handshake();
  b.handshake();
  raw_connection third(s.server.port());
  auto e = third.read_error();
  BOOST_TEST((e.code == errc::overloaded));
  BOOST_TEST(e.message.find("from this address") != std::string::npos, e.message);

  // At the global cap with every connection busy, the newcomer is the one refused.
  o.max_connections_per_peer = 0;
  fake_handler handler2(fake_handler::mode::hold);
  running_server s2(handler2, o);
  std::vector<std::unique_ptr<raw_connection>> busy;
  for (uint64_t i = 0; i < 3; ++i) {
    busy.push_back(std::make_unique<raw_connection>(s2.server.port()));
    busy.back()->handshake();
    generate_request r = text_request();
    r.request_id = 1;
    busy.back()->send(encode(r));
  }
  BOOST_TEST_REQUIRE(handler2.wait([](auto& h) { return h.n_held() == 3; }));
  raw_connection late(s2.server.port());
  e = late.read_error();
  BOOST_TEST((e.code == errc::overloaded));
  BOOST_TEST(e.message.find("none of them idle") != std::string::npos, e.message);
  for (size_t i = 0; i < 3; ++i) BOOST_TEST(!handler2.held(i)->closed());
}

BOOST_AUTO_TEST_CASE(hundred_partial_1mib_frames_stay_within_the_input_budget) {
  BOOST_TEST_REQUIRE(raise_fd_limit(1024));
  fake_handler handler;
  auto o = test_options();
  o.max_buffered_input_bytes = 4u << 20;
  o.close_linger = 100ms;
  running_server s(handler, o);
  const uint32_t declared = o.limits.max_frame_bytes;  // 1 MiB
  std::string partial(frame_header_bytes + declared - 1, 'x');
  write_frame_header(partial.data(), frame_header{protocol_version, frame_kind::generate, declared});
  std::vector<std::unique_ptr<raw_connection>> conns;
  for (int i = 0; i < 100; ++i) {
    conns.push_back(std::make_unique<raw_connection>(s.server.port()));
    conns.back()->handshake();
  }
  const size_t rss_before = vm_rss_bytes();
  BOOST_TEST_REQUIRE(rss_before > 0u);
  size_t closed = 0;
  for (auto& c : conns) {
    timeval tv{5, 0};
    ::setsockopt(c->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!c->send_until_closed(partial)) ++closed;
    BOOST_TEST(s.server.buffered_input_bytes() <= o.max_buffered_input_bytes + 64 * 1024);
  }
  // The kernel's socket buffers hold what the server has not read yet: wait until its buffered
  // input stops changing (5 samples 50 ms apart), at most 15 s.
  size_t last = SIZE_MAX;
  int same = 0;
  for (auto deadline = steady::now() + 15s; same < 5 && steady::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
    const size_t now_buffered = s.server.buffered_input_bytes();
    same = now_buffered == last ? same + 1 : 0;
    last = now_buffered;
  }
  BOOST_TEST(same >= 5);
  const size_t rss_after = vm_rss_bytes();
  const double grew_mb = (double(rss_after) - double(rss_before)) / 1e6;
  BOOST_TEST_MESSAGE("100 frames of 1 MiB - 1 byte: RSS grew " << grew_mb << " MB; closed " << closed << "; buffered "
                                                               << s.server.buffered_input_bytes() << " bytes");
  // Before the budget: ~107 MB. With it: the budget (4 MiB) and little more (1.7-6 MB measured).
  BOOST_TEST(grew_mb < 16.0);
  // Those over the budget were told why.
  size_t told = 0;
  for (auto& c : conns) {
    pollfd p{c->fd(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) continue;  // nothing from the server: still open
    auto f = c->read_frame();
    if (!f || static_cast<int>(f->kind) != static_cast<int>(frame_kind::error)) continue;
    auto e = decode_error(f->payload);
    if (e && e->code == errc::overloaded && e->message.find("unparsed input") != std::string::npos) ++told;
    if (told > 0) break;
  }
  BOOST_TEST(told == 1u);
  BOOST_TEST(handler.n_requests() == 0u);
}

BOOST_AUTO_TEST_CASE(wrong_api_keys_are_throttled_per_address_with_one_summary_line) {
  log_capture log;
  fake_handler handler;
  auto o = test_options();
  o.api_keys = api_key_set::without_limits({"the-right-key"});
  o.max_auth_failures = 5;
  o.auth_failure_window = 1500ms;
  running_server s(handler, o);
  client_options co;
  co.port = s.server.port();
  size_t wrong = 0, locked = 0;
  const auto t0 = steady::now();
  for (int i = 0; i < 30; ++i) {
    co.api_key = fmt::format("guess-{}", i);
    auto c = client::connect(co);
    BOOST_TEST_REQUIRE(!c.has_value());
    BOOST_TEST_REQUIRE((c.error().code == errc::unauthorized));
    if (c.error().message.find("too many failed") != std::string::npos) {
      ++locked;
    } else {
      ++wrong;
    }
  }
  // Locked out: even the right key is refused until the window ends.
  co.api_key = "the-right-key";
  auto refused = client::connect(co);
  const bool in_window = ms_between(t0, steady::now()) < 1400.0;
  BOOST_TEST(wrong == 5u);
  BOOST_TEST(locked == 25u);
  if (in_window) {
    BOOST_TEST_REQUIRE(!refused.has_value());
    BOOST_TEST(refused.error().message.find("too many failed") != std::string::npos);
  }
  // After the window the right key works again.
  std::optional<client> ok;
  for (auto deadline = steady::now() + 5s; !ok && steady::now() < deadline;) {
    if (auto c = client::connect(co)) {
      ok.emplace(std::move(*c));
    } else {
      std::this_thread::sleep_for(100ms);
    }
  }
  BOOST_TEST_REQUIRE(ok.has_value());
  // One summary line per window, not a warning per attempt.
  for (auto deadline = steady::now() + 5s; log.count_lines("API key failures") == 0 && steady::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
  }
  const size_t summaries = log.count_lines("API key failures");
  BOOST_TEST(summaries >= 1u);
  BOOST_TEST(summaries <= 2u);  // the attempts may straddle one window boundary
  BOOST_TEST(log.count_lines("[warning]") == summaries, log.text());
  BOOST_TEST(log.count_lines("invalid API key") == 0u, log.text());
}

BOOST_AUTO_TEST_CASE(api_key_file_is_read_with_comments_and_blank_lines) {
  const std::string path = fmt::format("/tmp/troupe-test-keys-{}.txt", ::getpid());
  {
    std::ofstream f(path);
    f << "# keys for the test\n\n  first-key  \nsecond-key # a trailing comment\n";
  }
  auto keys = read_api_key_file(path);
  BOOST_TEST_REQUIRE(keys.has_value(), (keys ? "" : keys.error().message));
  BOOST_TEST(keys->size() == 2u);
  BOOST_TEST(keys->at(0).key == "first-key");
  BOOST_TEST(keys->at(1).key == "second-key");
  {
    std::ofstream f(path);
    f << "# nothing but comments\n";
  }
  auto none = read_api_key_file(path);
  BOOST_TEST_REQUIRE(!none.has_value());
  BOOST_TEST(none.error().message.find("no API key") != std::string::npos, none.error().message);
  std::remove(path.c_str());
  auto missing = read_api_key_file(path);
  BOOST_TEST_REQUIRE(!missing.has_value());
  BOOST_TEST(missing.error().message.find(path) != std::string::npos, missing.error().message);
}

BOOST_AUTO_TEST_CASE(client_name_that_is_not_utf8_is_refused) {
  fake_handler handler;
  running_server s(handler);
  raw_connection c(s.server.port());
  hello h;
  h.client_name = "bad\xff\xfe";
  c.send(encode(h));
  auto e = c.read_error();
  BOOST_TEST((e.code == errc::invalid_request));
  BOOST_TEST(e.message.find("client_name") != std::string::npos, e.message);
  BOOST_TEST(e.message.find("UTF-8") != std::string::npos, e.message);
  BOOST_TEST(c.closed_by_server());
}

BOOST_AUTO_TEST_SUITE_END()
