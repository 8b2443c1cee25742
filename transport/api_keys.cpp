#include "transport/api_keys.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace troupe::transport {

namespace {
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
}  // namespace

result<std::vector<std::string>> read_api_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(errc::io_error, "cannot read API key file {}: {}", path, std::strerror(errno));
  std::vector<std::string> keys;
  std::string line;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || is_space(line[i - 1]))) {
        line.resize(i);
        break;
      }
    }
    size_t first = 0, last = line.size();
    while (first < last && is_space(line[first])) ++first;
    while (last > first && is_space(line[last - 1])) --last;
    if (first == last) continue;
    std::string key = line.substr(first, last - first);
    for (char c : key) {
      if (is_space(c)) return fail(errc::invalid_request, "{}:{}: an API key may not contain whitespace", path, line_no);
    }
    keys.push_back(std::move(key));
  }
  if (in.bad()) return fail(errc::io_error, "cannot read API key file {}", path);
  if (keys.empty()) return fail(errc::invalid_request, "{}: no API key in the file (one key per line)", path);
  return keys;
}

}  // namespace troupe::transport
