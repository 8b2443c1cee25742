#pragma once
// API keys from a file (troupe serve --api-key-file, listen.api_key_file): one key per line;
// blank lines and comments ('#' at the start of a line or after whitespace) are skipped, and
// surrounding whitespace is trimmed. Keeps keys out of the process list (/proc/PID/cmdline).
#include <string>
#include <vector>

#include "transport/error.hpp"

namespace troupe::transport {

/// The keys in `path`. errc::io_error when the file cannot be read; errc::invalid_request
/// ("FILE:LINE: ...") for a key with whitespace inside or a file without any key.
result<std::vector<std::string>> read_api_key_file(const std::string& path);

}  // namespace troupe::transport
