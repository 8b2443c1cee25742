// troupe: one executable, many subcommands (see `troupe --help`).
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "app/command.hpp"

namespace troupe::app {

namespace {
std::vector<command>& registry() {
  static std::vector<command> r;
  return r;
}
}  // namespace

void register_command(command c) { registry().push_back(std::move(c)); }
const std::vector<command>& commands() { return registry(); }

}  // namespace troupe::app

namespace {
void print_help() {
  std::printf(
      "troupe - serve large language models from a cluster of machines\n\n"
      "usage: troupe <command> [options]   (troupe <command> --help for its options)\n\n"
      "commands:\n");
  for (const auto& c : troupe::app::commands()) std::printf("  %-16s %s\n", c.name.c_str(), c.summary.c_str());
}
}  // namespace

namespace {

/// Blocks SIGINT and SIGTERM in this thread, and so in every thread it starts from now on: a
/// server takes them with sigwait on one thread, so no other thread may have them unblocked
/// (the kernel hands a process signal to any thread that does, and the default action ends the
/// process there, with no log line and no orderly shutdown).
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

}  // namespace

int main(int argc, char** argv) {
  // Before anything else starts a thread.
  const sigset_t stop_signals = block_stop_signals();
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  // Longest match first: two words ("model info"), then one.
  for (int words = 2; words >= 1; --words) {
    if (argc < 1 + words) continue;
    std::string name = argv[1];
    if (words == 2) name += std::string(" ") + argv[2];
    for (const auto& c : troupe::app::commands()) {
      if (c.name == name) {
        if (!c.takes_stop_signals) pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
        return c.run(argc - words, argv + words);
      }
    }
  }
  std::fprintf(stderr, "troupe: unknown command '%s' (see troupe --help)\n", argv[1]);
  return 2;
}
