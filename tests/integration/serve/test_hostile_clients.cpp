// `troupe serve` (a real process, a real small model, 127.0.0.1) against hostile clients:
// prompts far too long for the context cost the running streams nothing (the gateway refuses
// them from their byte length, on the I/O thread, never the ROUTER), and API keys come from a
// file while a key on the command line draws a warning.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_support.hpp"
#include "transport/client.hpp"
#include "transport/frame.hpp"

using namespace troupe;
using namespace troupe::test;
using steady = std::chrono::steady_clock;

namespace {

/// `troupe serve ARGS...` as a child process (stderr to a file); SIGTERM however the test ends.
std::vector<std::string> model_args() {
  const auto model = model_path("stories260K.bin");
  const auto tok = model_path("tok512.bin");
  return {"--model", model.string(), "--tokenizer", tok.string(), "--threads", "1"};
}

transport::client connect(uint16_t port, const std::string& key = {}) {
  transport::client_options o;
  o.port = port;
  o.api_key = key;
  auto c = transport::client::connect(o);
  BOOST_TEST_REQUIRE(c.has_value(), (c ? "" : c.error().message));
  return std::move(*c);
}

/// Gaps between chunk arrivals of one greedy stream, in ms.
std::vector<double> stream_gaps(transport::client& c, uint32_t max_tokens) {
  transport::generate_request r;
  r.prompt = "Once upon a time";
  r.max_tokens = max_tokens;
  r.temperature = 0;
  r.seed = 1;
  std::vector<steady::time_point> arrivals;
  auto fin = c.generate(r, [&](const transport::token_chunk&) { arrivals.push_back(steady::now()); },
                        std::chrono::milliseconds(120'000));
  BOOST_TEST_REQUIRE(fin.has_value(), (fin ? "" : fin.error().message));
  std::vector<double> gaps;
  for (size_t i = 1; i < arrivals.size(); ++i) {
    gaps.push_back(std::chrono::duration<double, std::milli>(arrivals[i] - arrivals[i - 1]).count());
  }
  return gaps;
}

double p99(std::vector<double> v) {
  BOOST_TEST_REQUIRE(!v.empty());
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(double(v.size()) * 0.99))];
}

}  // namespace

BOOST_AUTO_TEST_SUITE(hostile_clients, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(prompts_of_256_kib_do_not_stall_a_running_stream) {
  // A model whose steps take tens of milliseconds (synthetic stories110M, f32, one thread), so
  // that the stream's gaps are the model's work: with steps of 1-3 ms the 2-core machine's own
  // scheduling noise (the four sending clients are threads of this test) was as large as a step.
  temp_dir dir("hostile");
  const auto model = dir / "stories110M-f32.gguf";
  const auto synth = run_command(troupe_binary().string() + " model synth --shape stories110M --dtype f32 --quiet --out " +
                                 model.string());
  BOOST_TEST_REQUIRE(synth.exit_code == 0, "troupe model synth failed");
  serve_process server({"--model", model.string(), "--threads", "1"});
  BOOST_TEST_REQUIRE(server.port != 0, "no listening line from troupe serve: " << server.output);
  auto streamer = connect(server.port);
  const uint32_t n_tokens = 100;
  (void)stream_gaps(streamer, 20);  // warm up
  // Gaps pooled over three streams.
  auto pooled_gaps = [&] {
    std::vector<double> all;
    for (int i = 0; i < 3; ++i) {
      auto g = stream_gaps(streamer, n_tokens);
      all.insert(all.end(), g.begin(), g.end());
    }
    return all;
  };
  const double base_before = p99(pooled_gaps());

  // Four clients send 256 KiB prompts back to back while the stream runs.
  std::atomic<bool> stop{false};
  std::atomic<int> refused{0}, other{0};
  std::vector<std::thread> hostile;
  for (int k = 0; k < 4; ++k) {
    hostile.emplace_back([&, k] {
      // A plain socket and one pre-encoded frame: the test's own CPU goes to sending, not encoding.
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(server.port);
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ++other;
        ::close(fd);
        return;
      }
      transport::frame_decoder decoder;
      auto send_all = [&](std::string_view b) {
        while (!b.empty()) {
          const ssize_t n = ::send(fd, b.data(), b.size(), MSG_NOSIGNAL);
          if (n <= 0) return false;
          b.remove_prefix(size_t(n));
        }
        return true;
      };
      auto read_frame = [&]() -> std::optional<transport::frame> {
        for (;;) {
          auto f = decoder.next();
          if (!f) return std::nullopt;
          if (*f) return std::move(**f);
          char buf[4096];
          const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n <= 0) return std::nullopt;
          decoder.feed(std::string_view(buf, size_t(n)));
        }
      };
      transport::generate_request r;
      r.request_id = 1;
      r.prompt = std::string(256 * 1024 - 16, char('a' + k));
      r.max_tokens = 1;
      const std::string frame = transport::encode(r);
      if (!send_all(transport::encode(transport::hello{})) || !read_frame()) {
        ++other;
        ::close(fd);
        return;
      }
      for (int i = 0; i < 100'000 && !stop; ++i) {
        if (!send_all(frame)) break;
        auto f = read_frame();
        if (!f) break;
        auto e = transport::decode_error(f->payload);
        if (f->kind == transport::frame_kind::error && e && e->code == transport::errc::prompt_too_long) {
          ++refused;
        } else {
          ++other;
        }
        // Each client sends about 50 such prompts a second (a 256 KiB prompt every ~20 ms): enough
        // to have one arriving at any time, without the test's own threads taking both cores.
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      ::close(fd);
    });
  }
  const auto t0 = steady::now();
  while (refused < 8 && steady::now() - t0 < std::chrono::seconds(30)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const auto t_loaded = steady::now();
  const int refused_before = refused;
  const double loaded = p99(pooled_gaps());
  const double loaded_s = std::chrono::duration<double>(steady::now() - t_loaded).count();
  const int refused_during = refused - refused_before;
  const int n_refused = refused;
  stop = true;
  for (auto& t : hostile) t.join();
  // The baseline is measured before and after the loaded phase (a sandwich, as
  // scripts/bench-serve.sh does): this VM's speed drifts within minutes, and one quiet phase alone
  // can come out unusually low.
  const double base_after = p99(pooled_gaps());
  const double base = std::max(base_before, base_after);
  BOOST_TEST_MESSAGE("inter-token gap p99: baseline " << base << " ms, with 4 clients sending 256 KiB prompts "
                                                      << loaded << " ms; prompts refused " << n_refused << " ("
                                                      << refused_during << " during the " << loaded_s
                                                      << " s stream)");
  BOOST_TEST(n_refused >= 8);
  BOOST_TEST(other == 0);
  // Within 2x of the baseline. Before the fix each such prompt held the ROUTER (which tokenized
  // it) for tens of milliseconds: p99 went from ~4 ms to over 100 ms.
  const double bound = 2.0 * base;
  BOOST_TEST(loaded <= bound, "p99 " << loaded << " ms vs baseline " << base << " ms (bound " << bound << " ms)");
  // And a new request still gets its first token promptly.
  auto fresh = connect(server.port);
  const auto t1 = steady::now();
  double ttft_ms = -1;
  transport::generate_request r;
  r.prompt = "Once upon a time";
  r.max_tokens = 4;
  auto fin = fresh.generate(r, [&](const transport::token_chunk&) {
    if (ttft_ms < 0) ttft_ms = std::chrono::duration<double, std::milli>(steady::now() - t1).count();
  });
  BOOST_TEST_REQUIRE(fin.has_value());
  BOOST_TEST(ttft_ms < 1000.0);
}

BOOST_AUTO_TEST_CASE(api_keys_from_a_file_and_a_warning_for_a_key_on_the_command_line) {
  const auto key_file = std::filesystem::temp_directory_path() / ("troupe-keys-" + std::to_string(::getpid()));
  {
    std::ofstream f(key_file);
    f << "# clients\nkey-one\nkey-two\n";
  }
  std::filesystem::permissions(key_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  {
    auto args = model_args();
    args.insert(args.end(), {"--api-key-file", key_file.string()});
    serve_process server(args);
    BOOST_TEST_REQUIRE(server.port != 0, "no listening line from troupe serve: " << server.output);
    auto c = connect(server.port, "key-two");
    transport::generate_request r;
    r.prompt = "Once upon a time";
    r.max_tokens = 4;
    BOOST_TEST(c.generate(r).has_value());
    transport::client_options o;
    o.port = server.port;
    o.api_key = "key-three";
    auto wrong = transport::client::connect(o);
    BOOST_TEST_REQUIRE(!wrong.has_value());
    BOOST_TEST((wrong.error().code == transport::errc::unauthorized));
    BOOST_TEST(server.stderr_text().find("process list") == std::string::npos, server.stderr_text());
  }
  {
    auto args = model_args();
    args.insert(args.end(), {"--api-key", "cmdline-key"});
    serve_process server(args);
    BOOST_TEST_REQUIRE(server.port != 0, "no listening line from troupe serve: " << server.output);
    auto c = connect(server.port, "cmdline-key");
    const auto err = server.stderr_text();
    BOOST_TEST(err.find("--api-key puts the key in the process list") != std::string::npos, err);
  }
  std::filesystem::remove(key_file);
}

BOOST_AUTO_TEST_SUITE_END()
