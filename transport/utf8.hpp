#pragma once
// Client-supplied bytes as text: the UTF-8 check every text field of the client protocol and the
// HTTP API passes, and the escaped form such bytes take in error messages and log lines.
#include <cstddef>
#include <string>
#include <string_view>

namespace troupe::transport {

/// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool is_valid_utf8(std::string_view s);

/// Client-supplied bytes made safe for an error message or a log line: printable ASCII kept,
/// anything else as \xNN, at most `max_bytes` of input (then "...").
std::string printable(std::string_view s, size_t max_bytes = 64);

}  // namespace troupe::transport
