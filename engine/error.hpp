#pragma once
// Errors as values for the engine: every expected failure (bad file, bad argument) is a
// troupe::engine::error carried in std::expected. Bugs use TROUPE_ASSERT.
#include <cstdio>
#include <cstdlib>
#include <expected>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace troupe::engine {

enum class errc {
  io_error,          // open/read/mmap failed
  bad_format,        // wrong magic, inconsistent header, bad value
  truncated,         // an offset or size points past the end of the file
  unsupported,       // valid input we do not handle (dtype, architecture, version)
  invalid_argument,  // caller asked for something impossible (layer range, token id)
  out_of_memory,     // allocation or KV capacity exhausted
};

const char* errc_name(errc c);

struct error {
  errc code;
  std::string message;
};

template <class T>
using result = std::expected<T, error>;

/// Builds the unexpected value: `return fail(errc::bad_format, "gguf: bad magic {}", m);`
template <class... Args>
std::unexpected<error> fail(errc code, fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected<error>(error{code, fmt::format(f, std::forward<Args>(args)...)});
}

[[noreturn]] void assert_failed(const char* expr, const char* file, int line);

}  // namespace troupe::engine

#define TROUPE_ASSERT(cond) \
  ((cond) ? (void)0 : ::troupe::engine::assert_failed(#cond, __FILE__, __LINE__))
