#pragma once
// A scratch directory for engine tests that write model files, removed with everything in it at
// the end of the test.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <system_error>

namespace troupe::test {

struct temp_dir {
  std::filesystem::path path;

  explicit temp_dir(const std::string& prefix = "troupe-test") {
    static std::atomic<int> counter{0};
    path = std::filesystem::temp_directory_path() /
           (prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

}  // namespace troupe::test
