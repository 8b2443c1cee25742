#pragma once
// A read-only memory map of a whole file. Loaders check every offset against size() first.
#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

#include "engine/error.hpp"

namespace troupe::engine {

class mapped_file {
 public:
  static result<std::shared_ptr<mapped_file>> open(const std::filesystem::path& path);
  ~mapped_file();
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  /// True when [offset, offset + length) lies inside the file (overflow-safe).
  bool contains(uint64_t offset, uint64_t length) const {
    return offset <= size_ && length <= size_ - offset;
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  mapped_file() = default;
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace troupe::engine
