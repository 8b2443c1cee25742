// troupe bench serve: a load generator for a running `troupe serve`, over the client protocol
// (or, with --http, over the HTTP API: streamed /v1/completions, one keep-alive connection each).
// Closed loop (--concurrency N connections, each with one request in flight, --requests M in all)
// or open loop (--rate R requests/s, Poisson or fixed-interval arrivals, M requests spread over N
// connections). Prompts are exactly --prompt-len token ids; greedy, max_tokens --gen-len. The
// protocol has no ignore-EOS field, so a request may end early at EOS: the report counts the
// tokens actually generated. Bounded: M requests and --timeout-s seconds in all. Chaos runs
// (scripts/chaos/run) use --record, --verify and --disconnect-after (clients that go away).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/args.hpp"
#include "app/command.hpp"
#include "engine/generator.hpp"
#include "engine/model_weights.hpp"
#include "engine/stop_rule.hpp"
#include "engine/tokenizer.hpp"
#include "transport/client.hpp"

namespace troupe::app {
namespace {

using clock_type = std::chrono::steady_clock;
using ms_double = std::chrono::duration<double, std::milli>;

struct request_result {
  bool ok = false;
  uint32_t completion_tokens = 0;
  bool early_eos = false;
  double ttft_ms = -1;             // send to the first chunk with tokens (client side)
  double decode_ms = 0;            // first token to the final frame
  std::vector<double> itl_ms;      // one entry per token after the first
  std::optional<transport::error> err;
  std::vector<int32_t> ids;        // the tokens streamed (--record, --verify)
  std::vector<std::pair<int64_t, int>> chunks;  // (wall-clock ms since the epoch, tokens) per chunk (--record)
  int64_t start_ms = 0, end_ms = 0;  // wall clock: sent, and ended (final frame, error or disconnect)
  bool disconnected = false;         // --disconnect-after: the client dropped the connection mid-stream
};

bool refused_overloaded(const request_result& r) {
  return !r.ok && r.err && r.err->code == transport::errc::overloaded && r.ids.empty();
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

// --sampled: every request samples (temperature 0.8, top-p 0.9, top-k 40), seeded by its index, so
// its text is still known in advance (--verify).
constexpr float sampled_temperature = 0.8f;
constexpr float sampled_top_p = 0.9f;
constexpr int sampled_top_k = 40;

/// Deterministic prompt of `len` ids in [3, 200), different for each request (no shared prefix).
std::vector<int32_t> make_prompt(int len, int request) {
  std::vector<int32_t> ids(static_cast<size_t>(len));
  uint64_t x = 0x9E3779B97F4A7C15ull * uint64_t(request + 1);
  for (auto& id : ids) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    id = int32_t(3 + x % 197);
  }
  return ids;
}

// disconnect_after > 0: drop the connection (no cancel) once that many tokens have come.
request_result run_one_untimed(transport::client& c, int index, int prompt_len, int gen_len,
                               clock_type::time_point deadline, bool sampled, int disconnect_after) {
  request_result r;
  transport::generate_request req;
  req.prompt_tokens = make_prompt(prompt_len, index);
  req.max_tokens = uint32_t(gen_len);
  req.temperature = 0;
  if (sampled) {
    req.temperature = sampled_temperature;
    req.top_p = sampled_top_p;
    req.top_k = sampled_top_k;
  }
  req.seed = uint64_t(index);
  req.stream = true;
  const auto now = clock_type::now();
  if (now >= deadline) {
    r.err = transport::error{transport::errc::timeout, "benchmark time limit reached before the request started"};
    return r;
  }
  const auto budget = std::max(std::chrono::milliseconds(1),
                               std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
  const auto t0 = clock_type::now();
  auto last = t0;
  auto fin = c.generate(req, [&](const transport::token_chunk& ch) {
    if (ch.ids.empty() || r.disconnected) return;
    const auto t = clock_type::now();
    r.ids.insert(r.ids.end(), ch.ids.begin(), ch.ids.end());
    r.chunks.emplace_back(wall_ms(), int(ch.ids.size()));
    if (r.ttft_ms < 0) {
      r.ttft_ms = ms_double(t - t0).count();
      // Tokens that came with the first one count as arriving together with it.
      for (size_t i = 1; i < ch.ids.size(); ++i) r.itl_ms.push_back(0.0);
    } else {
      // A chunk of k tokens after a gap g: k tokens at g/k each.
      const double per = ms_double(t - last).count() / double(ch.ids.size());
      for (size_t i = 0; i < ch.ids.size(); ++i) r.itl_ms.push_back(per);
    }
    last = t;
    if (disconnect_after > 0 && r.ids.size() >= size_t(disconnect_after)) {
      r.disconnected = true;
      c.disconnect();
    }
  }, budget);
  if (r.disconnected) return r;  // not ok, not an error: what the client chose
  if (!fin) {
    r.err = fin.error();
    return r;
  }
  r.ok = fin->reason == transport::finish_reason::length || fin->reason == transport::finish_reason::stop ||
         fin->reason == transport::finish_reason::stop_string;
  if (!r.ok) {
    r.err = transport::error{transport::errc::internal,
                             std::string("request ended with ") + transport::finish_reason_name(fin->reason)};
  }
  r.completion_tokens = fin->completion_tokens;
  if (r.ttft_ms >= 0) r.decode_ms = ms_double(clock_type::now() - t0).count() - r.ttft_ms;
  r.early_eos = fin->reason == transport::finish_reason::stop;
  return r;
}

request_result run_one(transport::client& c, int index, int prompt_len, int gen_len, clock_type::time_point deadline,
                       bool sampled = false, int disconnect_after = 0) {
  const int64_t start_ms = wall_ms();
  request_result r = run_one_untimed(c, index, prompt_len, gen_len, deadline, sampled, disconnect_after);
  r.start_ms = start_ms;
  r.end_ms = wall_ms();
  return r;
}

// ---- --http: the same requests as streamed POST /v1/completions ---------------------------------

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

/// One keep-alive HTTP connection; HTTPS when given a TLS context (--https).
struct http_connection {
  explicit http_connection(boost::asio::ssl::context* tls_context) : tls_context(tls_context) {}

  boost::asio::io_context io;
  beast::tcp_stream stream{io};
  boost::asio::ssl::context* tls_context;
  std::optional<beast::ssl_stream<beast::tcp_stream&>> tls;  // over `stream`
  beast::flat_buffer buffer;
  bool open = false;

  /// f(the stream to read and write: TLS or plain).
  template <class F>
  void with_stream(F f) {
    if (tls) {
      f(*tls);
    } else {
      f(stream);
    }
  }

  std::optional<transport::error> connect(const std::string& host, uint16_t port) {
    beast::error_code ec;
    boost::asio::ip::tcp::resolver resolver(io);
    auto found = resolver.resolve(host, std::to_string(port), ec);
    if (!ec) stream.connect(found, ec);
    if (ec) return transport::error{transport::errc::io_error, "connect: " + ec.message()};
    stream.socket().set_option(boost::asio::ip::tcp::no_delay(true), ec);
    if (tls_context != nullptr) {
      tls.emplace(stream, *tls_context);
      SSL_set_tlsext_host_name(tls->native_handle(), host.c_str());
      tls->handshake(boost::asio::ssl::stream_base::client, ec);
      if (ec) return transport::error{transport::errc::io_error, "TLS handshake: " + ec.message()};
    }
    open = true;
    return std::nullopt;
  }
  void close() {
    beast::error_code ec;
    stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    stream.close();
    tls.reset();
    open = false;
  }
};

/// The served model's id (GET /v1/models).
std::optional<std::string> http_model_id(const std::string& host, uint16_t port, boost::asio::ssl::context* tls) {
  http_connection c(tls);
  if (c.connect(host, port)) return std::nullopt;
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, "/v1/models", 11};
  req.set(bhttp::field::host, host);
  bhttp::response<bhttp::string_body> res;
  beast::error_code ec;
  c.with_stream([&](auto& s) {
    bhttp::write(s, req, ec);
    if (!ec) bhttp::read(s, c.buffer, res, ec);
  });
  if (ec || res.result_int() != 200) return std::nullopt;
  auto j = nlohmann::json::parse(res.body(), nullptr, false);
  if (j.is_discarded() || !j.contains("data") || j["data"].empty()) return std::nullopt;
  return j["data"][0]["id"].get<std::string>();
}

request_result run_one_http(http_connection& c, const std::string& host, const std::string& model, int index,
                            int prompt_len, int gen_len, clock_type::time_point deadline) {
  request_result r;
  nlohmann::json body{{"model", model},         {"prompt", make_prompt(prompt_len, index)},
                      {"max_tokens", gen_len},  {"temperature", 0},
                      {"seed", index},          {"stream", true},
                      {"stream_options", {{"include_usage", true}}}};
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/completions", 11};
  req.set(bhttp::field::host, host);
  req.set(bhttp::field::content_type, "application/json");
  req.body() = body.dump();
  req.prepare_payload();
  const auto t0 = clock_type::now();
  if (t0 >= deadline) {
    r.err = transport::error{transport::errc::timeout, "benchmark time limit reached before the request started"};
    return r;
  }
  c.stream.expires_at(deadline);
  beast::error_code ec;
  c.with_stream([&](auto& s) { bhttp::write(s, req, ec); });
  // Events as they arrive: one gap per text event; tokens per event are known only at the end
  // (the usage chunk), so each event's gap is split evenly over the average tokens per event.
  std::vector<double> gaps;
  auto last = t0;
  std::string pending;
  std::string finish;
  bool done = false;
  std::string error_text;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(std::numeric_limits<uint64_t>::max());
  auto on_chunk = [&](uint64_t, beast::string_view data, beast::error_code&) -> size_t {
    pending.append(data.data(), data.size());
    for (size_t end; (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      const std::string ev = pending.substr(0, end);
      if (ev.rfind("data: ", 0) != 0) continue;
      if (ev == "data: [DONE]") {
        done = true;
        continue;
      }
      auto j = nlohmann::json::parse(ev.substr(6), nullptr, false);
      if (j.is_discarded()) continue;
      if (j.contains("error")) error_text = j["error"].value("message", "error");
      if (j.contains("usage") && j["usage"].is_object()) r.completion_tokens = j["usage"]["completion_tokens"].get<uint32_t>();
      if (!j.contains("choices") || j["choices"].empty()) continue;
      const auto& ch = j["choices"][0];
      if (ch.contains("finish_reason") && ch["finish_reason"].is_string()) finish = ch["finish_reason"].get<std::string>();
      if (!ch.contains("text") || ch["text"].get<std::string>().empty()) continue;
      const auto t = clock_type::now();
      if (r.ttft_ms < 0) {
        r.ttft_ms = ms_double(t - t0).count();
      } else {
        gaps.push_back(ms_double(t - last).count());
      }
      last = t;
    }
    return data.size();
  };
  parser.on_chunk_body(on_chunk);
  if (!ec) c.with_stream([&](auto& s) { bhttp::read(s, c.buffer, parser, ec); });
  if (ec) {
    c.close();
    r.err = transport::error{ec == beast::error::timeout ? transport::errc::timeout : transport::errc::io_error,
                             "http: " + ec.message()};
    return r;
  }
  if (!parser.get().keep_alive()) c.close();
  if (parser.get().result_int() != 200 || !done || !error_text.empty()) {
    r.err = transport::error{transport::errc::internal,
                             fmt::format("http status {}: {}{}", parser.get().result_int(), error_text,
                                         parser.get().body())};
    return r;
  }
  r.ok = true;
  r.early_eos = finish == "stop";
  if (r.ttft_ms >= 0) r.decode_ms = ms_double(clock_type::now() - t0).count() - r.ttft_ms;
  const double per_event = gaps.empty() ? 1.0 : double(std::max<uint32_t>(r.completion_tokens, 1) - 1) / double(gaps.size());
  for (double g : gaps) {
    const int n = std::max(1, int(std::lround(per_event)));
    for (int i = 0; i < n; ++i) r.itl_ms.push_back(g / n);
  }
  return r;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  // Nearest rank.
  size_t rank = size_t(std::ceil(p / 100.0 * double(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

std::string fmt_rate(double r) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", r);
  return buf;
}

int run_bench_serve(int argc, char** argv) {
  arg_parser args(
    "troupe bench serve [--host H] --port P [--concurrency N] [--requests M] [--prompt-len L] [--gen-len G] "
    "[--rate R] [--json]",
    "Load test of a running troupe server over the client protocol. Closed loop by default: N connections,\n"
    "each with one request in flight, until M requests have been sent. With --rate R: open loop, requests\n"
    "arrive at R per second (Poisson or fixed interval) over N connections, M in all. Prompts are L token ids,\n"
    "greedy decoding, max_tokens G (a request may still end early at EOS: generated tokens are counted as\n"
    "they came). Reports throughput, time to first token and inter-token latency.");
  add_server_options(args)
    .option("concurrency", "N", "connections (closed loop: requests in flight)", "1")
    .option("requests", "M", "requests in all", "32");
  add_length_options(args, "request", "max_tokens per request")
    .option("rate", "R", "open loop: requests per second (0: closed loop)", "0")
    .option("arrivals", "KIND", "open loop arrivals: poisson or fixed", "poisson")
    .option("seed", "S", "seed of the Poisson arrivals", "0")
    .option("timeout-s", "S", "stop everything after this many seconds (unfinished requests are errors)", "600")
    .option("warmup", "W", "requests sent one at a time before the measurement (not counted)", "0")
    .flag("http", "use the HTTP API (--port is the HTTP port): streamed /v1/completions, closed loop only")
    .flag("https", "with --http: over TLS (the certificate is checked only with --cacert)")
    .option("cacert", "FILE", "with --https: verify the server's certificate against this CA file")
    .flag("sampled", "sample (temperature 0.8, top-p 0.9, top-k 40, seed = request index) instead of greedy")
    .option("record", "FILE", "write one JSON line per request: index, ok, error, disconnected, start_ms, end_ms (wall "
            "clock), ids, chunks [[wall ms, tokens]]")
    .option("disconnect-after", "N", "closed loop: drop the connection (no cancel frame) after N tokens of each "
            "request, as a client that goes away mid-stream; the next request connects again (0: off)", "0")
    .option("overloaded-pause-ms", "MS", "closed loop: after a request refused as overloaded, the connection waits "
            "this long before its next request (a client backing off)", "0")
    .option("verify", "MODEL", "after the run, compute every request's tokens with the engine on MODEL (as `troupe "
            "generate`) and count the requests whose tokens differ (\"mismatches\")")
    .option("tokenizer", "PATH", "with --verify: the tokenizer file, if MODEL has none")
    .flag("json", "print exactly one JSON object instead of a table");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  const bool sampled = args.flag_set("sampled");
  auto co = read_server_options(args, "troupe bench serve");
  auto concurrency = args.integer("concurrency", 1, 1024);
  auto requests = args.integer("requests", 1, 100'000);
  auto lengths = read_length_options(args);
  auto rate = args.number("rate", 0, 1e6);
  auto seed = args.integer("seed", 0, std::numeric_limits<long long>::max());
  auto timeout_s = args.number("timeout-s", 0.001, 86'400);
  auto warmup = args.integer("warmup", 0, 1000);
  auto disconnect_after = args.integer("disconnect-after", 0, 1'000'000);
  auto overloaded_pause_ms = args.integer("overloaded-pause-ms", 0, 60'000);
  if (!overloaded_pause_ms || !disconnect_after || !warmup || !co || !concurrency || !requests || !lengths || !rate || !seed || !timeout_s) {
    return args.usage_error();
  }
  const std::string arrivals = args.str("arrivals");
  if (arrivals != "poisson" && arrivals != "fixed") {
    std::fprintf(stderr, "troupe: --arrivals: expected poisson or fixed, got '%s'\n", arrivals.c_str());
    return 2;
  }
  const bool json = args.flag_set("json");
  const bool use_http = args.flag_set("http") || args.flag_set("https");
  std::optional<boost::asio::ssl::context> tls;
  if (args.flag_set("https")) {
    tls.emplace(boost::asio::ssl::context::tls_client);
    if (args.given("cacert")) {
      boost::system::error_code ec;
      tls->load_verify_file(args.str("cacert"), ec);
      if (ec) {
        std::fprintf(stderr, "troupe: cannot use CA file %s: %s\n", args.str("cacert").c_str(), ec.message().c_str());
        return 2;
      }
      tls->set_verify_mode(boost::asio::ssl::verify_peer);
    } else {
      tls->set_verify_mode(boost::asio::ssl::verify_none);
    }
  }
  boost::asio::ssl::context* tls_context = tls ? &*tls : nullptr;
  if (*disconnect_after > 0 && (use_http || *rate > 0)) {
    std::fprintf(stderr, "troupe: --disconnect-after works in the closed loop over the client protocol only\n");
    return 2;
  }
  if (use_http && *rate > 0) {
    std::fprintf(stderr, "troupe: --http runs a closed loop only (HTTP/1.1 has one request in flight per connection)\n");
    return 2;
  }
  const int n_conn = int(*concurrency);
  const int n_req = int(*requests);
  const int plen = lengths->prompt_len;
  const int glen = lengths->gen_len;

  std::vector<request_result> results(static_cast<size_t>(n_req));
  std::mutex err_mu;
  std::optional<transport::error> first_error;
  auto note_error = [&](const transport::error& e) {
    std::lock_guard lock(err_mu);
    if (!first_error) first_error = e;
  };

  auto start = clock_type::now();
  const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(*timeout_s));
  std::string model;
  if (use_http) {
    auto m = http_model_id(co->host, co->port, tls_context);
    if (!m) {
      std::fprintf(stderr, "troupe: GET /v1/models on %s:%u failed (is --port the HTTP port?)\n", co->host.c_str(),
                   unsigned(co->port));
      return 1;
    }
    model = *m;
  }
  if (*warmup > 0 && use_http) {
    http_connection c(tls_context);
    if (auto e = c.connect(co->host, co->port)) {
      std::fprintf(stderr, "troupe: %s\n", e->message.c_str());
      return 1;
    }
    for (int i = 0; i < int(*warmup); ++i) {
      auto r = run_one_http(c, co->host, model, n_req + i, plen, glen, deadline);
      if (r.err) {
        std::fprintf(stderr, "troupe: warmup: %s\n", r.err->message.c_str());
        return 1;
      }
      if (!c.open && c.connect(co->host, co->port)) return 1;
    }
    c.close();
    start = clock_type::now();
  } else if (*warmup > 0) {
    auto c = transport::client::connect(*co);
    if (!c) {
      std::fprintf(stderr, "troupe: %s: %s\n", transport::errc_name(c.error().code), c.error().message.c_str());
      return 1;
    }
    for (int i = 0; i < int(*warmup); ++i) {
      auto r = run_one(*c, n_req + i, plen, glen, deadline, sampled);
      if (r.err) {
        std::fprintf(stderr, "troupe: warmup: %s: %s\n", transport::errc_name(r.err->code), r.err->message.c_str());
        return 1;
      }
    }
    c->close();
    start = clock_type::now();
  }

  if (use_http) {
    // Closed loop over HTTP: each thread its own keep-alive connection, one request at a time.
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < n_conn; ++t) {
      threads.emplace_back([&] {
        http_connection c(tls_context);
        for (int i = next++; i < n_req; i = next++) {
          if (!c.open) {
            if (auto e = c.connect(co->host, co->port)) {
              results[size_t(i)].err = e;
              note_error(*e);
              continue;
            }
          }
          results[size_t(i)] = run_one_http(c, co->host, model, i, plen, glen, deadline);
          if (results[size_t(i)].err) note_error(*results[size_t(i)].err);
        }
        if (c.open) c.close();
      });
    }
    for (auto& t : threads) t.join();
  } else if (*rate <= 0) {
    // Closed loop: each thread its own connection, one request at a time.
    std::atomic<int> next{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < n_conn; ++t) {
      threads.emplace_back([&] {
        std::optional<transport::client> c;
        for (int i = next++; i < n_req; i = next++) {
          if (!c || !c->is_open()) {
            auto nc = transport::client::connect(*co);
            if (!nc) {
              results[size_t(i)].err = nc.error();
              note_error(nc.error());
              c.reset();
              continue;
            }
            c.emplace(std::move(*nc));
          }
          results[size_t(i)] = run_one(*c, i, plen, glen, deadline, sampled, int(*disconnect_after));
          if (results[size_t(i)].err) note_error(*results[size_t(i)].err);
          if (results[size_t(i)].disconnected) {
            c->close();  // joins the I/O thread of the dropped connection
            c.reset();
          }
          if (*overloaded_pause_ms > 0 && refused_overloaded(results[size_t(i)])) {
            std::this_thread::sleep_for(std::chrono::milliseconds(*overloaded_pause_ms));
          }
        }
        if (c) c->close();
      });
    }
    for (auto& t : threads) t.join();
  } else {
    // Open loop: arrivals on schedule, whatever is in flight; requests spread over the connections.
    std::vector<std::optional<transport::client>> clients(static_cast<size_t>(n_conn));
    for (auto& c : clients) {
      auto nc = transport::client::connect(*co);
      if (!nc) {
        note_error(nc.error());
        continue;
      }
      c.emplace(std::move(*nc));
    }
    std::mt19937_64 rng(static_cast<uint64_t>(*seed));
    std::exponential_distribution<double> gap(*rate);
    std::vector<std::thread> threads;
    threads.reserve(size_t(n_req));
    double at_s = 0;
    for (int i = 0; i < n_req; ++i) {
      const auto when = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(at_s));
      if (when >= deadline) {
        for (int j = i; j < n_req; ++j) {
          results[size_t(j)].err = transport::error{transport::errc::timeout, "benchmark time limit reached"};
        }
        note_error(*results[size_t(i)].err);
        break;
      }
      std::this_thread::sleep_until(when);
      auto& c = clients[size_t(i % n_conn)];
      if (!c || !c->is_open()) {
        results[size_t(i)].err = transport::error{transport::errc::connection_closed, "no connection"};
        note_error(*results[size_t(i)].err);
      } else {
        threads.emplace_back([&, i] {
          results[size_t(i)] = run_one(*clients[size_t(i % n_conn)], i, plen, glen, deadline, sampled);
          if (results[size_t(i)].err) note_error(*results[size_t(i)].err);
        });
      }
      at_s += arrivals == "fixed" ? 1.0 / *rate : gap(rng);
    }
    for (auto& t : threads) t.join();
    for (auto& c : clients) if (c) c->close();
  }
  const double wall_s = std::chrono::duration<double>(clock_type::now() - start).count();

  int completed = 0, errors = 0, early = 0, overloaded = 0, disconnected = 0;
  uint64_t gen_tokens = 0, decode_tokens = 0;
  double decode_ms = 0;
  std::vector<double> ttft, itl;
  for (const auto& r : results) {
    if (r.disconnected) {
      ++disconnected;
      continue;
    }
    if (!r.ok) {
      ++errors;
      overloaded += refused_overloaded(r) ? 1 : 0;
      continue;
    }
    ++completed;
    early += r.early_eos ? 1 : 0;
    gen_tokens += r.completion_tokens;
    if (r.completion_tokens > 1) {
      decode_tokens += r.completion_tokens - 1;
      decode_ms += r.decode_ms;
    }
    if (r.ttft_ms >= 0) ttft.push_back(r.ttft_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
  }
  // --record: what every request streamed, and when.
  if (args.given("record")) {
    std::FILE* f = std::fopen(args.str("record").c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "troupe: --record: cannot write %s\n", args.str("record").c_str());
      return 2;
    }
    for (size_t i = 0; i < results.size(); ++i) {
      const auto& r = results[i];
      nlohmann::ordered_json j;
      j["index"] = i;
      j["ok"] = r.ok;
      j["error"] = r.err ? std::string(transport::errc_name(r.err->code)) + ": " + r.err->message : std::string();
      j["disconnected"] = r.disconnected;
      j["start_ms"] = r.start_ms;
      j["end_ms"] = r.end_ms;
      j["ids"] = r.ids;
      j["chunks"] = r.chunks;
      std::fprintf(f, "%s\n", j.dump().c_str());
    }
    std::fclose(f);
  }
  // --verify: the engine's tokens for every request, as `troupe generate` computes them.
  int mismatches = -1;
  if (args.given("verify")) {
    auto model = engine::load_model(args.str("verify"));
    auto tok = engine::load_tokenizer(args.str("verify"), args.str("tokenizer"));
    if (!model || !tok) {
      std::fprintf(stderr, "troupe: --verify: %s\n", (!model ? model.error().message : tok.error().message).c_str());
      return 2;
    }
    const engine::stop_rule rule = engine::make_stop_rule(model->config, **tok);
    mismatches = 0;
    for (size_t i = 0; i < results.size(); ++i) {
      // Refused at admission (no token): nothing to compare. A request the client dropped
      // (--disconnect-after): its tokens must be the engine's first ones.
      if (refused_overloaded(results[i])) continue;
      const auto prompt = make_prompt(plen, int(i));
      engine::generate_options opts;
      opts.max_new_tokens = results[i].disconnected ? int(results[i].ids.size()) : glen;
      opts.end_ids = rule.end_ids;
      if (sampled) {
        opts.sampling.temperature = sampled_temperature;
        opts.sampling.top_p = sampled_top_p;
        opts.sampling.top_k = sampled_top_k;
      }
      opts.sampling.seed = uint64_t(i);
      std::vector<int32_t> want;
      auto st = engine::generate(*model, prompt, opts, [&](int32_t id) {
        want.push_back(id);
        return !rule.ends(id);
      });
      if (!st || want != results[i].ids) {
        ++mismatches;
        if (mismatches <= 3) {
          std::fprintf(stderr, "troupe: --verify: request %zu: %zu tokens streamed, the engine gives %zu%s\n", i,
                       results[i].ids.size(), want.size(),
                       results[i].ok || results[i].disconnected ? "" : " (the request failed)");
        }
      }
    }
    if (!json) {
      std::printf("verify: %d of %d requests differ from the engine (%d refused as overloaded: not compared; %d "
                  "dropped by the client: their first tokens compared)\n",
                  mismatches, n_req, overloaded, disconnected);
    }
  }
  const double req_s = wall_s > 0 ? completed / wall_s : 0;
  const double tok_s = wall_s > 0 ? double(gen_tokens) / wall_s : 0;
  if (first_error) {
    std::fprintf(stderr, "troupe: %d request(s) failed; first error: %s: %s\n", errors,
                 transport::errc_name(first_error->code), first_error->message.c_str());
  }
  if (json) {
    nlohmann::ordered_json j;
    j["concurrency"] = n_conn;
    j["requests"] = n_req;
    j["completed"] = completed;
    j["errors"] = errors;
    j["overloaded"] = overloaded;
    j["disconnected"] = disconnected;
    j["req_s"] = req_s;
    j["gen_tok_s"] = tok_s;
    j["ttft_ms_p50"] = percentile(ttft, 50);
    j["ttft_ms_p99"] = percentile(ttft, 99);
    j["itl_ms_p50"] = percentile(itl, 50);
    j["itl_ms_p99"] = percentile(itl, 99);
    if (mismatches >= 0) j["mismatches"] = mismatches;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("mode: %s%s | connections: %d | prompt: %d tokens | max_tokens: %d\n", use_http ? "HTTP, " : "",
                *rate > 0 ? (arrivals + " arrivals at " + fmt_rate(*rate) + " req/s").c_str() : "closed loop",
                n_conn, plen, glen);
    std::printf("%-10s %-10s %-7s %-9s %-11s %-8s %-13s %-13s %-12s %-12s\n", "requests", "completed", "errors",
                "req/s", "gen tok/s", "tokens", "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms");
    std::printf("%-10d %-10d %-7d %-9.2f %-11.1f %-8llu %-13.1f %-13.1f %-12.2f %-12.2f\n", n_req, completed, errors,
                req_s, tok_s, (unsigned long long)gen_tokens, percentile(ttft, 50), percentile(ttft, 99),
                percentile(itl, 50), percentile(itl, 99));
    std::printf("wall: %.2f s | per-stream decode (tokens after the first / time after the first): %.1f tok/s | "
                "requests that ended at EOS before max_tokens: %d\n",
                wall_s, decode_ms > 0 ? double(decode_tokens) / (decode_ms / 1000.0) : 0.0, early);
    if (overloaded > 0 || disconnected > 0) {
      std::printf("refused as overloaded (among the errors): %d | dropped by the client (--disconnect-after, not "
                  "errors): %d\n", overloaded, disconnected);
    }
  }
  std::fflush(stdout);
  return errors == 0 && mismatches <= 0 ? 0 : 1;
}

const command_registrar reg{{"bench serve", "load-test a running troupe server (throughput, TTFT, ITL)",
                             run_bench_serve}};

}  // namespace
}  // namespace troupe::app
