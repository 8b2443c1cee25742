// troupe bench data-plane: hidden-state transfer latency and bandwidth over the UCX data plane,
// for a decode-sized message (1 x dim floats) and a prefill-sized one (512 x dim floats).
// Ping-pong: the client sends message i tagged i, the echo side sends it back tagged i | 2^63;
// one-way latency = round trip / 2, bandwidth = bytes / one-way time.
//   troupe bench data-plane                       both ends in this process, over loopback
//   troupe bench data-plane --serve --host A --port P [--net-devices DEV]     the echo end
//   troupe bench data-plane --connect A:P [--net-devices DEV]                the measuring end
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "app/args.hpp"
#include "app/command.hpp"
#include "transport/data_plane.hpp"

namespace troupe::app {
namespace {

using clock_type = std::chrono::steady_clock;
constexpr uint64_t echo_bit = uint64_t(1) << 63;

struct size_result {
  std::string name;
  size_t bytes = 0;
  double p50_us = 0;
  double p99_us = 0;
  double gib_per_s = 0;
};

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, size_t(q * double(v.size() - 1) + 0.5))];
}

// The echo end: takes messages 1, 2, 3, ... in order and sends each back to its sender. Two
// seconds without a message end a measuring run: the next run starts at 1 again.
void echo_loop(transport::data_plane& plane, const std::atomic<bool>& stop) {
  uint64_t tag = 1;
  while (!stop) {
    auto m = plane.receive_wait(tag, 0, std::chrono::milliseconds(2000));
    if (!m) {
      if (m.error().code != transport::errc::timeout) return;
      tag = 1;
      continue;
    }
    plane.send(m->from, tag | echo_bit, std::move(m->bytes));
    ++tag;
  }
}

int run_bench_data_plane(int argc, char** argv) {
  arg_parser args(
    "troupe bench data-plane [--connect HOST:PORT | --serve --host ADDR --port P] [--dim 768] [--rounds 200]",
    "Latency and bandwidth of the UCX data plane for hidden states: 1 x dim floats (a decode step)\n"
    "and 512 x dim floats (a prefill chunk), by ping-pong. Without --connect or --serve both ends\n"
    "run in this process over loopback. Both ends must use the same --secret-file.");
  args.option("connect", "HOST:PORT", "measure against an echo end started with --serve")
    .flag("serve", "be the echo end (until SIGINT/SIGTERM or --duration-s)")
    .option("host", "ADDR", "address to listen on", "127.0.0.1")
    .option("port", "P", "port to listen on (0: ephemeral, printed)", "0")
    .option("net-devices", "DEV", "UCX_NET_DEVICES for this end (e.g. lo, eth0); default: lo for loopback")
    .option("transports", "TLS", "UCX_TLS for this end (default: all but shared memory, '^sm')")
    .option("secret-file", "FILE", "cluster secret (default: a fixed benchmark secret)")
    .option("dim", "N", "floats per token", "768")
    .option("rounds", "N", "ping-pongs per size (after 10 warm-up ones)", "200")
    .option("duration-s", "S", "--serve: stop after this long", "600")
    .flag("json", "print one JSON object instead of the table");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  // Logs go to stderr; stdout carries the table or the JSON object (and --serve's listening line).
  spdlog::set_default_logger(spdlog::stderr_color_mt("troupe"));
  auto dim = args.integer("dim", 1, 1 << 16);
  auto rounds = args.integer("rounds", 1, 1'000'000);
  auto port = args.integer("port", 0, 65535);
  auto duration = args.integer("duration-s", 1, 86400);
  if (!dim || !rounds || !port || !duration) {
    std::fprintf(stderr, "troupe: %s\n", args.error().c_str());
    return 2;
  }
  std::string secret = "troupe bench data-plane";
  if (args.given("secret-file")) {
    std::ifstream in(args.str("secret-file"));
    if (!in || !std::getline(in, secret) || secret.empty()) {
      std::fprintf(stderr, "troupe: cannot read a secret from %s\n", args.str("secret-file").c_str());
      return 1;
    }
  }
  const bool local = !args.given("connect") && !args.flag_set("serve");
  transport::data_plane_options o;
  o.host = args.str("host");
  o.port = uint16_t(*port);
  o.secret = secret;
  if (args.given("transports")) o.transports = args.str("transports");
  o.net_devices = args.given("net-devices") ? args.str("net-devices") : (o.host == "127.0.0.1" ? "lo" : "");

  if (args.flag_set("serve")) {
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    auto plane = transport::data_plane::start(o);
    if (!plane) {
      std::fprintf(stderr, "troupe: %s\n", plane.error().message.c_str());
      return 1;
    }
    std::printf("troupe bench data-plane: echo listening on %s:%u\n", o.host.c_str(), unsigned((*plane)->port()));
    std::fflush(stdout);
    std::atomic<bool> stop{false};
    std::thread echo([&] { echo_loop(**plane, stop); });
    // Until SIGINT/SIGTERM or the duration. sigtimedwait can return early without a signal (seen
    // here: EAGAIN after a few seconds while UCX's threads were busy), so the clock decides.
    const auto until = clock_type::now() + std::chrono::seconds(*duration);
    for (auto now = clock_type::now(); now < until; now = clock_type::now()) {
      const auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(until - now).count();
      timespec limit{long(left / 1'000'000'000), long(left % 1'000'000'000)};
      const int sig = sigtimedwait(&signals, nullptr, &limit);
      if (sig == SIGINT || sig == SIGTERM) break;
    }
    stop = true;
    echo.join();
    return 0;
  }

  // The measuring end (and, locally, an echo end in this process).
  std::unique_ptr<transport::data_plane> echo_plane;
  std::atomic<bool> stop{false};
  std::thread echo;
  std::string peer_host = "127.0.0.1";
  uint16_t peer_port = 0;
  if (local) {
    auto e = transport::data_plane::start(o);
    if (!e) {
      std::fprintf(stderr, "troupe: %s\n", e.error().message.c_str());
      return 1;
    }
    echo_plane = std::move(*e);
    peer_port = echo_plane->port();
    echo = std::thread([&] { echo_loop(*echo_plane, stop); });
    o.port = 0;
  } else {
    const std::string hp = args.str("connect");
    const auto colon = hp.rfind(':');
    if (colon == std::string::npos) {
      std::fprintf(stderr, "troupe: --connect wants HOST:PORT, got '%s'\n", hp.c_str());
      return 2;
    }
    peer_host = hp.substr(0, colon);
    peer_port = uint16_t(std::stoi(hp.substr(colon + 1)));
    o.port = 0;
  }
  auto plane = transport::data_plane::start(o);
  if (!plane) {
    std::fprintf(stderr, "troupe: %s\n", plane.error().message.c_str());
    return 1;
  }
  auto peer = (*plane)->connect(peer_host, peer_port);
  if (!peer) {
    std::fprintf(stderr, "troupe: connect %s:%u: %s\n", peer_host.c_str(), unsigned(peer_port),
                 peer.error().message.c_str());
    return 1;
  }

  uint64_t tag = 1;
  std::vector<size_result> results;
  int rc = 0;
  for (auto [name, n_tokens] : {std::pair{"decode 1 x dim", 1}, std::pair{"prefill 512 x dim", 512}}) {
    const size_t bytes = size_t(n_tokens) * size_t(*dim) * sizeof(float);
    std::vector<double> one_way_us;
    for (long long i = 0; i < 10 + *rounds; ++i, ++tag) {
      const auto t0 = clock_type::now();
      (*plane)->send(*peer, tag, std::vector<std::byte>(bytes, std::byte{1}));
      auto back = (*plane)->receive_wait(tag | echo_bit, *peer, std::chrono::seconds(10));
      if (!back || back->bytes.size() != bytes) {
        std::fprintf(stderr, "troupe: ping-pong %llu failed: %s\n", (unsigned long long)tag,
                     back ? "wrong size" : back.error().message.c_str());
        rc = 1;
        break;
      }
      if (i >= 10) one_way_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count() / 2);
    }
    if (rc != 0) break;
    size_result r;
    r.name = name;
    r.bytes = bytes;
    r.p50_us = percentile(one_way_us, 0.5);
    r.p99_us = percentile(one_way_us, 0.99);
    r.gib_per_s = double(bytes) / (r.p50_us * 1e-6) / double(1u << 30);
    results.push_back(r);
  }
  stop = true;
  if (echo.joinable()) echo.join();
  if (rc != 0) return rc;

  const std::string where = local ? "loopback, one process" : peer_host + ":" + std::to_string(peer_port);
  if (args.flag_set("json")) {
    nlohmann::json j;
    j["where"] = where;
    j["net_devices"] = o.net_devices;
    j["transports"] = o.transports;
    j["dim"] = *dim;
    j["rounds"] = *rounds;
    for (const auto& r : results) {
      j["sizes"].push_back({{"name", r.name}, {"bytes", r.bytes}, {"one_way_us_p50", r.p50_us},
                            {"one_way_us_p99", r.p99_us}, {"gib_per_s", r.gib_per_s}});
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("data plane (%s, net_devices=%s, transports=%s, dim=%lld, %lld rounds)\n", where.c_str(),
                o.net_devices.empty() ? "(ucx default)" : o.net_devices.c_str(),
                o.transports.empty() ? "(ucx default)" : o.transports.c_str(), *dim, *rounds);
    std::printf("%-20s %12s %14s %14s %10s\n", "message", "bytes", "one-way p50 us", "one-way p99 us", "GiB/s");
    for (const auto& r : results) {
      std::printf("%-20s %12zu %14.1f %14.1f %10.2f\n", r.name.c_str(), r.bytes, r.p50_us, r.p99_us, r.gib_per_s);
    }
  }
  return 0;
}

const command_registrar reg{
  {"bench data-plane", "latency and bandwidth of the UCX data plane (hidden-state sizes)", run_bench_data_plane}};

}  // namespace
}  // namespace troupe::app
