#include "engine/error.hpp"

namespace troupe::engine {

const char* errc_name(errc c) {
  switch (c) {
    case errc::io_error: return "io_error";
    case errc::bad_format: return "bad_format";
    case errc::truncated: return "truncated";
    case errc::unsupported: return "unsupported";
    case errc::invalid_argument: return "invalid_argument";
    case errc::out_of_memory: return "out_of_memory";
  }
  return "unknown";
}

void assert_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "troupe: assertion failed: %s at %s:%d\n", expr, file, line);
  std::abort();
}

}  // namespace troupe::engine
