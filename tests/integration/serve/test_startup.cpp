// `troupe serve` and `troupe generate` under bad configuration and at the edges of their life:
// start-up is all or nothing (a stage that cannot start fails the command, naming it; `listening`
// is never printed), every thread has SIGINT/SIGTERM blocked (one thread takes them with
// sigwait), a second signal while stopping exits 128 + signal with a log line, and bad tokenizer
// files and zero limits are clear errors.
#include <boost/test/unit_test.hpp>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/test_support.hpp"
#include "tests/test_support.hpp"

using namespace troupe::test;
using namespace std::chrono_literals;

namespace {

/// A file under the system temp folder, removed with the object.
struct temp_file {
  std::filesystem::path path;
  explicit temp_file(const std::string& name, const std::string& contents)
      : path(std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid()))) {
    std::ofstream(path, std::ios::binary) << contents;
  }
  ~temp_file() { std::filesystem::remove(path); }
};

std::string file_prefix(const std::filesystem::path& p, size_t n) {
  std::ifstream in(p, std::ios::binary);
  std::string s(n, '\0');
  in.read(s.data(), std::streamsize(n));
  s.resize(size_t(in.gcount()));
  return s;
}

/// SigBlk of every thread of `pid` but the main one (hex masks from /proc/PID/task/*/status), by
/// thread id and name. The main thread is left out: it waits in sigwait, and while it does the
/// kernel shows the waited signals as unblocked there (rt_sigtimedwait unblocks them for the wait).
std::vector<std::pair<std::string, unsigned long long>> blocked_masks(pid_t pid) {
  std::vector<std::pair<std::string, unsigned long long>> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    if (task.path().filename() == std::to_string(pid)) continue;
    std::ifstream in(task.path() / "status");
    std::string line, name;
    while (std::getline(in, line)) {
      if (line.rfind("Name:", 0) == 0) name = line.substr(5);
      if (line.rfind("SigBlk:", 0) == 0) {
        out.emplace_back(task.path().filename().string() + name, std::stoull(line.substr(7), nullptr, 16));
      }
    }
  }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(startup, *needs_models({"stories260K.bin", "tok512.bin", "TinyStories-656K-Q8_0.gguf"}))

BOOST_AUTO_TEST_CASE(a_stage_that_cannot_start_fails_serve_naming_it_and_never_listens) {
  const std::string model = model_path("TinyStories-656K-Q8_0.gguf").string();
  BOOST_REQUIRE_MESSAGE(std::filesystem::exists(model), "missing model file " << model);
  // 1. An obviously impossible KV cache (16M blocks of 4096 positions: terabytes per stage).
  {
    serve_process server({"--model", model, "--stages", "2", "--kv-blocks", "16777216", "--block-size", "4096"});
    BOOST_REQUIRE(server.wait_exit(60s));
    const std::string err = server.stderr_text();
    BOOST_TEST(server.exit_code() == 1, err);
    BOOST_TEST(server.output.find("listening") == std::string::npos, server.output);
    BOOST_TEST(err.find("replica 0 stage 1 (layers [1, 2)) cannot start: KV cache of 16777216 blocks x 4096 "
                        "positions x 1 layers needs") != std::string::npos,
               err);
    BOOST_TEST(err.find("more than this machine's memory") != std::string::npos, err);
  }
  // 2. A cache that fits the machine but not the process (RLIMIT_AS): the allocation itself fails.
  //    stories260K: K and V of 2 layers x 2^21 blocks x 8 positions x 32 f16 values are 2 GiB each.
  {
    const std::string small = model_path("stories260K.bin").string();
    serve_process server({"--model", small, "--tokenizer", model_path("tok512.bin").string(), "--stages", "2",
                          "--kv-blocks", "2097152", "--block-size", "8"},
                         60s, size_t(3) << 30);
    BOOST_REQUIRE(server.wait_exit(60s));
    const std::string err = server.stderr_text();
    BOOST_TEST(server.exit_code() == 1, err);
    BOOST_TEST(server.output.find("listening") == std::string::npos, server.output);
    BOOST_TEST(err.find("replica 0 stage 1 (layers [3, 5)) cannot start: KV cache of 2097152 blocks x 8 positions x "
                        "2 layers (4.0 GiB): cannot allocate") != std::string::npos,
               err);
  }
}

BOOST_AUTO_TEST_CASE(every_thread_blocks_stop_signals_and_a_second_signal_exits_at_once_with_a_log_line) {
  const std::string model = model_path("stories260K.bin").string();
  const std::string tok = model_path("tok512.bin").string();
  serve_process server({"--model", model, "--tokenizer", tok, "--stages", "2", "--threads", "2"});
  BOOST_REQUIRE_MESSAGE(server.port != 0, "no listening line: " << server.output << server.stderr_text());
  // A request first, so every thread a request needs (stages, engine pools, BLAS) is up.
  auto client = run_command(troupe_binary().string() + " client --host 127.0.0.1 --port " +
                            std::to_string(server.port) + " --prompt 'Once upon a time' -n 8 2>/dev/null");
  BOOST_REQUIRE_EQUAL(client.exit_code, 0);
  const auto masks = blocked_masks(server.pid);
  BOOST_TEST(masks.size() > 3u);
  const unsigned long long want = (1ull << (SIGINT - 1)) | (1ull << (SIGTERM - 1));
  for (const auto& [thread, mask] : masks) {
    BOOST_TEST_CONTEXT("thread " << thread) { BOOST_TEST((mask & want) == want); }
  }
  // Two signals pending at once (the process stopped while they are sent): sigwait takes SIGINT
  // first (the lower number) and begins stopping; SIGTERM is then the second signal.
  ::kill(server.pid, SIGSTOP);
  ::kill(server.pid, SIGTERM);
  ::kill(server.pid, SIGINT);
  ::kill(server.pid, SIGCONT);
  BOOST_REQUIRE(server.wait_exit(30s));
  const std::string err = server.stderr_text();
  BOOST_TEST(server.exit_code() == 143, err);
  BOOST_TEST(err.find("troupe serve: SIGINT, stopping") != std::string::npos, err);
  BOOST_TEST(err.find("troupe serve: second SIGTERM while stopping, exiting now") != std::string::npos, err);
}

BOOST_AUTO_TEST_CASE(one_signal_stops_serve_cleanly) {
  serve_process server({"--model", model_path("stories260K.bin").string(), "--tokenizer",
                        model_path("tok512.bin").string()});
  BOOST_REQUIRE_MESSAGE(server.port != 0, "no listening line: " << server.output << server.stderr_text());
  ::kill(server.pid, SIGINT);
  BOOST_REQUIRE(server.wait_exit(30s));
  BOOST_TEST(server.exit_code() == 0, server.stderr_text());
}

BOOST_AUTO_TEST_CASE(bad_tokenizer_files_are_clear_errors_in_generate_and_serve) {
  const std::string bin = troupe_binary().string();
  const std::string model = model_path("stories260K.bin").string();
  const std::string tok512 = model_path("tok512.bin").string();
  BOOST_REQUIRE_MESSAGE(std::filesystem::exists(tok512), "missing " << tok512);
  // The first 100 bytes of tok512.bin end exactly after token 6: a valid-looking file of 7 tokens.
  temp_file truncated("tok512-head100.bin", file_prefix(tok512, 100));
  struct bad_case {
    std::string tokenizer;
    std::string expect;
  };
  const std::vector<bad_case> cases = {
    {truncated.path.string(), truncated.path.string() + ": 7 tokens, but the model's vocabulary has 512"},
    {model_path("TinyStories-656K-Q8_0.gguf").string(), "TinyStories-656K-Q8_0.gguf: 2048 tokens, but the model's "
                                                        "vocabulary has 512"},
  };
  for (const bad_case& c : cases) {
    BOOST_TEST_CONTEXT("tokenizer " << c.tokenizer) {
      auto gen = run_command(bin + " generate --model " + model + " --tokenizer " + c.tokenizer +
                             " --prompt 'Once upon a time' -n 8 2>&1");
      BOOST_TEST(gen.exit_code == 1);
      BOOST_TEST(gen.out.find("troupe: tokenizer: ") != std::string::npos, gen.out);
      BOOST_TEST(gen.out.find(c.expect) != std::string::npos, gen.out);
      serve_process server({"--model", model, "--tokenizer", c.tokenizer});
      BOOST_REQUIRE(server.wait_exit(60s));
      BOOST_TEST(server.exit_code() == 1);
      BOOST_TEST(server.output.find("listening") == std::string::npos, server.output);
      BOOST_TEST(server.stderr_text().find(c.expect) != std::string::npos, server.stderr_text());
    }
  }
  // Cut inside a token: the loader names the token and the byte.
  temp_file cut("tok512-head103.bin", file_prefix(tok512, 103));
  auto gen = run_command(bin + " generate --model " + model + " --tokenizer " + cut.path.string() +
                         " --prompt hi -n 4 2>&1");
  BOOST_TEST(gen.exit_code == 1);
  BOOST_TEST(gen.out.find(cut.path.string() + ": token 7 header at byte 100 runs past the end") != std::string::npos,
             gen.out);
}

BOOST_AUTO_TEST_CASE(zero_limits_are_refused_from_flags_and_from_the_cluster_file) {
  const std::string bin = troupe_binary().string();
  const std::string model = model_path("stories260K.bin").string();
  const std::string tok = model_path("tok512.bin").string();
  // `timeout 60`: a server that accepts the limit would otherwise serve until the test is killed.
  auto flag = run_command("timeout 60 " + bin + " serve --model " + model + " --tokenizer " + tok +
                          " --host 127.0.0.1 --port 0 --max-waiting 0 2>&1");
  BOOST_TEST(flag.exit_code == 2);
  BOOST_TEST(flag.out.find("max-waiting") != std::string::npos, flag.out);
  BOOST_TEST(flag.out.find("listening") == std::string::npos, flag.out);
  temp_file cfg("zero-limits.toml", "[model]\npath = \"" + model + "\"\ntokenizer = \"" + tok +
                                        "\"\n\n[limits]\nmax_new_tokens = 0\n\n[[stages]]\nfirst_layer = 0\n");
  auto file = run_command("timeout 60 " + bin + " serve --config " + cfg.path.string() + " --host 127.0.0.1 --port 0 2>&1");
  BOOST_TEST(file.exit_code == 1);
  BOOST_TEST(file.out.find(cfg.path.filename().string() + ":6: limits.max_new_tokens: 0 is out of range [1,") !=
               std::string::npos,
             file.out);
}

BOOST_AUTO_TEST_SUITE_END()
