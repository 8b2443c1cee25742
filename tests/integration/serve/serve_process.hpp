#pragma once
// `troupe serve` as a child process for integration tests: started with the given arguments,
// stdout read up to its "listening on 127.0.0.1:PORT" line (bounded wait), stderr kept in a file
// the test can read. Stopped with SIGTERM however the test ends; every wait is bounded.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/test_support.hpp"

namespace troupe::test {

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
