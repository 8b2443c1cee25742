#pragma once
// Helpers shared by every test suite (one copy each): where the real models are and how a test that
// needs them skips loudly, scratch directories and whole-file I/O, running the troupe binary, and
// `troupe serve` as a child process.
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>
#include <string_view>
#include <sstream>
#include <thread>
#include <vector>

namespace troupe::test {

// ---- real models -----------------------------------------------------------------------------

/// ../shared/models (override with TROUPE_MODELS_DIR in the environment).
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("TROUPE_MODELS_DIR")) return env;
  return TROUPE_MODELS_DIR;
}
inline std::filesystem::path model_path(const std::string& rel) { return models_dir() / rel; }

/// Exit code of a test run in which something was skipped and nothing failed; tests/CMakeLists.txt
/// gives every CTest entry SKIP_RETURN_CODE 77, so CTest reports it as "Skipped", not "Passed".
inline constexpr int skip_exit_code = 77;

/// Test cases skipped in this run (test_main.cpp turns a clean run with skips into skip_exit_code).
inline std::atomic<int>& n_skipped() {
  static std::atomic<int> n{0};
  return n;
}

/// Decorator for a test case or suite that reads real model files (paths relative to models_dir()):
/// when one is missing it is not run, "SKIP: <path> missing" goes to stderr and the run ends with
/// skip_exit_code. tests/CMakeLists.txt also gives a suite whose file uses it the CTest label `model`.
///   BOOST_AUTO_TEST_CASE(loads_the_656k_gguf, *troupe::test::needs_models({"TinyStories-656K-Q8_0.gguf"}))
inline boost::unit_test::precondition needs_models(std::initializer_list<const char*> rel) {
  std::vector<std::string> files(rel.begin(), rel.end());
  return boost::unit_test::precondition([files](boost::unit_test::test_unit_id) {
    for (const auto& f : files) {
      std::error_code ec;
      const auto p = model_path(f);
      if (std::filesystem::exists(p, ec)) continue;
      ++n_skipped();
      std::fprintf(stderr, "SKIP: %s missing (set TROUPE_MODELS_DIR to the real models)\n", p.c_str());
      boost::test_tools::assertion_result r(false);
      r.message() << p.string() << " missing";
      return r;
    }
    return boost::test_tools::assertion_result(true);
  });
}

// ---- files -----------------------------------------------------------------------------------

/// A scratch directory, unique in this process, removed with everything in it at the end of the test.
struct temp_dir {
  std::filesystem::path path;
  explicit temp_dir(std::string_view tag = "test") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           ("troupe-" + std::string(tag) + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

/// The whole file (empty if it cannot be read).
inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// The whole file as bytes of type Byte (char, uint8_t).
template <class Byte = char>
std::vector<Byte> read_bytes(const std::filesystem::path& p) {
  const std::string s = read_file(p);
  return {reinterpret_cast<const Byte*>(s.data()), reinterpret_cast<const Byte*>(s.data() + s.size())};
}

/// Replaces the file's contents with `n` bytes at `data`.
inline void write_bytes(const std::filesystem::path& p, const void* data, size_t n) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(n));
}
inline void write_bytes(const std::filesystem::path& p, std::string_view bytes) {
  write_bytes(p, bytes.data(), bytes.size());
}
template <class Byte>
void write_bytes(const std::filesystem::path& p, const std::vector<Byte>& bytes) {
  write_bytes(p, bytes.data(), bytes.size() * sizeof(Byte));
}

// ---- the troupe binary -----------------------------------------------------------------------

inline std::filesystem::path troupe_binary() { return TROUPE_BINARY; }

struct command_result {
  int exit_code = -1;
  std::string out;  // stdout only; stderr goes to the given file or is discarded
};

/// Runs a shell command and captures its stdout.
inline command_result run_command(const std::string& cmd) {
  command_result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

/// A self-signed certificate for 127.0.0.1 (and its key), made with the openssl CLI in a scratch
/// directory; for HTTPS tests (curl --cacert cert).
struct self_signed_certificate {
  temp_dir dir{"tls"};
  std::string cert = (dir.path / "cert.pem").string();
  std::string key = (dir.path / "key.pem").string();
  self_signed_certificate() {
    auto r = run_command("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 "
                         "-addext subjectAltName=IP:127.0.0.1 -keyout " + key + " -out " + cert + " 2>&1");
    BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "openssl req failed: " << r.out);
  }
};

/// `troupe serve ARGS... --host 127.0.0.1 --port 0` as a child process: waits (bounded) for its
/// "listening on 127.0.0.1:PORT" line (or its exit), keeps its stderr in a file (stderr_text()),
/// optionally under RLIMIT_AS; stopped with SIGTERM (SIGKILL after 30 s) by stop() or however the
/// test ends.
struct serve_process {
  pid_t pid = -1;
  int fd = -1;
  int status = -1;   // waitpid status once exited
  uint16_t port = 0;
  std::string output;  // stdout up to the listening line (or up to exit)
  std::string stderr_path;

  /// args: what follows `troupe serve`; --host 127.0.0.1 --port 0 are added.
  /// address_space_bytes > 0: the child runs under RLIMIT_AS (allocations past it fail).
  explicit serve_process(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(60),
                         size_t address_space_bytes = 0) {
    char tmpl[] = "/tmp/troupe-serve-stderr-XXXXXX";
    const int err_fd = ::mkstemp(tmpl);
    stderr_path = tmpl;
    int out[2];
    if (err_fd < 0 || ::pipe(out) != 0) return;
    std::vector<std::string> argv_s{troupe_binary().string(), "serve"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    for (const char* a : {"--host", "127.0.0.1", "--port", "0"}) argv_s.emplace_back(a);
    pid = ::fork();
    if (pid < 0) return;
    if (pid == 0) {
      if (address_space_bytes > 0) {
        const rlimit lim{address_space_bytes, address_space_bytes};
        ::setrlimit(RLIMIT_AS, &lim);
      }
      ::dup2(out[1], 1);
      ::dup2(err_fd, 2);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> av;
      for (auto& a : argv_s) av.push_back(a.data());
      av.push_back(nullptr);
      ::execv(av[0], av.data());
      ::_exit(127);
    }
    ::close(err_fd);
    ::close(out[1]);
    fd = out[0];
    // Bounded wait for the "listening on 127.0.0.1:PORT" line (or the end of stdout: it exited).
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    std::string line;
    while (std::chrono::steady_clock::now() < give_up) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      char ch = 0;
      if (::read(fd, &ch, 1) != 1) break;  // the server exited
      if (ch != '\n') {
        line += ch;
        continue;
      }
      output += line + "\n";
      if (const auto at = line.find("listening on 127.0.0.1:"); at != std::string::npos) {
        port = uint16_t(std::stoi(line.substr(at + 23)));
        break;
      }
      line.clear();
    }
    output += line;
  }

  /// Waits (bounded) for the process to exit; false if it is still running at the deadline.
  bool wait_exit(std::chrono::milliseconds timeout) {
    if (pid <= 0) return true;
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < give_up) {
      if (::waitpid(pid, &status, WNOHANG) == pid) {
        pid = 0;
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  /// The exit code (128 + signal when killed by one), -1 while running.
  int exit_code() const {
    if (pid != 0 || status == -1) return -1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return -1;
  }

  std::string stderr_text() const {
    std::ifstream in(stderr_path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

  void stop() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      if (!wait_exit(std::chrono::seconds(30))) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        pid = 0;
      }
    }
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  ~serve_process() {
    stop();
    if (!stderr_path.empty()) std::remove(stderr_path.c_str());
  }
};

}  // namespace troupe::test
