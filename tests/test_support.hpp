#pragma once
// Helpers shared by test suites: where the real models are, running the troupe binary.
#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace troupe::test {

/// ../shared/models (override with TROUPE_MODELS_DIR in the environment).
inline std::filesystem::path models_dir() {
  if (const char* env = std::getenv("TROUPE_MODELS_DIR")) return env;
  return TROUPE_MODELS_DIR;
}
inline std::filesystem::path model_path(const std::string& rel) { return models_dir() / rel; }

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

}  // namespace troupe::test
