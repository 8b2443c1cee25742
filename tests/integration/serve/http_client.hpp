#pragma once
// A small blocking HTTP/1.1 client for tests (Boost.Beast): one keep-alive connection to
// 127.0.0.1, whole responses (chunked bodies joined), raw bytes for malformed or slow requests,
// and every read bounded by a deadline.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace troupe::test {

struct http_reply {
  int status = 0;  // 0: no response (connection closed, timeout)
  std::string body;
  bool chunked = false;
  bool keep_alive = false;
  std::string content_type;
  std::string allow;
  std::string retry_after;
  std::string error;  // why there is no response

  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

class http_client {
 public:
  explicit http_client(uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(60))
      : stream_(io_), timeout_(timeout) {
    boost::beast::error_code ec;
    stream_.expires_after(timeout_);
    stream_.connect(boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port), ec);
    connected_ = !ec;
  }
  bool connected() const { return connected_; }

  http_reply request(const std::string& method, const std::string& target, const std::string& body = {},
                     const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    namespace http = boost::beast::http;
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    if (req.method() == http::verb::unknown) req.method_string(method);
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == "POST") {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    boost::beast::error_code ec;
    stream_.expires_after(timeout_);
    http::write(stream_, req, ec);
    if (ec) return http_reply{0, {}, false, false, {}, {}, {}, "write: " + ec.message()};
    return read_reply();
  }
  http_reply post(const std::string& target, const std::string& body) { return request("POST", target, body); }
  http_reply get(const std::string& target) { return request("GET", target); }

  /// Sends bytes as they are (no framing).
  bool send_raw(const std::string& bytes) {
    boost::beast::error_code ec;
    stream_.expires_after(timeout_);
    boost::asio::write(stream_, boost::asio::buffer(bytes), ec);
    return !ec;
  }

  http_reply read_reply() {
    namespace http = boost::beast::http;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    boost::beast::error_code ec;
    stream_.expires_after(timeout_);
    http::read(stream_, buffer_, parser, ec);
    http_reply r;
    if (ec) {
      r.error = ec.message();
      return r;
    }
    const auto& res = parser.get();
    r.status = int(res.result_int());
    r.body = res.body();
    r.chunked = res.chunked();
    r.keep_alive = res.keep_alive();
    r.content_type = std::string(res[http::field::content_type]);
    r.allow = std::string(res[http::field::allow]);
    r.retry_after = std::string(res[http::field::retry_after]);
    return r;
  }

  /// Reads until the first body bytes of a streamed response arrive (the header and >= 1 byte).
  bool read_some(std::string& out) {
    boost::beast::error_code ec;
    char buf[4096];
    stream_.expires_after(timeout_);
    const size_t n = stream_.read_some(boost::asio::buffer(buf), ec);
    out.append(buf, n);
    return !ec;
  }

  /// True if the server closed the connection (EOF) within the timeout.
  bool closed_by_server() {
    boost::beast::error_code ec;
    char buf[256];
    stream_.expires_after(timeout_);
    for (int i = 0; i < 1000; ++i) {
      stream_.read_some(boost::asio::buffer(buf), ec);
      if (ec) return ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset;
    }
    return false;
  }

  void close() {
    boost::beast::error_code ec;
    stream_.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    stream_.close();
  }

 private:
  boost::asio::io_context io_;
  boost::beast::tcp_stream stream_;
  boost::beast::flat_buffer buffer_;
  std::chrono::milliseconds timeout_;
  bool connected_ = false;
};

/// The "data: ..." payloads of a Server-Sent Events body, in order; false if the framing is off
/// (an event not starting with "data: " or not ended by a blank line).
inline bool sse_events(const std::string& body, std::vector<std::string>& events) {
  size_t at = 0;
  while (at < body.size()) {
    const size_t end = body.find("\n\n", at);
    if (end == std::string::npos) return false;
    const std::string ev = body.substr(at, end - at);
    if (ev.rfind("data: ", 0) != 0 || ev.find('\n') != std::string::npos) return false;
    events.push_back(ev.substr(6));
    at = end + 2;
  }
  return true;
}

}  // namespace troupe::test
