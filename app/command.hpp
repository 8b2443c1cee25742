#pragma once
// Subcommands of the `troupe` executable. Each cmd_*.cpp registers its commands with a static
// command_registrar; main() picks the longest matching name ("model info" before "model").
#include <functional>
#include <string>
#include <vector>

namespace troupe::app {

struct command {
  std::string name;     // one or two words: "generate", "model info"
  std::string summary;  // one line for `troupe --help`
  std::function<int(int argc, char** argv)> run;  // argv[0] is the command name
  // main() starts every command with SIGINT/SIGTERM blocked; a command that takes them itself
  // (sigwait) keeps them blocked, every other gets them unblocked (their default action then).
  bool takes_stop_signals = false;
};

void register_command(command c);
const std::vector<command>& commands();

struct command_registrar {
  explicit command_registrar(command c) { register_command(std::move(c)); }
};

}  // namespace troupe::app
