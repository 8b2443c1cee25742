#include "transport/api_keys.hpp"

#include <cerrno>
#include <cstdlib>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "transport/logger.hpp"

namespace troupe::transport {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    const size_t start = i;
    while (i < line.size() && !is_space(line[i])) ++i;
    if (i > start) words.push_back(line.substr(start, i - start));
  }
  return words;
}

std::optional<double> parse_number(std::string_view s) {
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || !std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

// "60/min" -> 60 per minute; N/s, N/min, N/h.
std::optional<double> parse_per_minute(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto n = parse_number(s.substr(0, slash));
  if (!n || *n <= 0) return std::nullopt;
  const std::string_view unit = s.substr(slash + 1);
  if (unit == "s" || unit == "sec") return *n * 60;
  if (unit == "min" || unit == "m") return *n;
  if (unit == "h" || unit == "hour") return *n / 60;
  return std::nullopt;
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
  }
  return true;
}

}  // namespace

result<std::vector<api_key>> read_api_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(errc::io_error, "cannot read API key file {}: {}", path, std::strerror(errno));
  std::vector<api_key> keys;
  std::set<std::string, std::less<>> seen_keys, seen_names;
  std::string line;
  for (size_t line_no = 1; std::getline(in, line); ++line_no) {
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '#' && (i == 0 || is_space(line[i - 1]))) {
        line.resize(i);
        break;
      }
    }
    const auto words = split_words(line);
    if (words.empty()) continue;
    api_key k;
    k.key = std::string(words[0]);
    k.name = fmt::format("key-{}", line_no);
    for (size_t w = 1; w < words.size(); ++w) {
      const std::string_view word = words[w];
      const size_t eq = word.find('=');
      if (eq == std::string_view::npos) {
        return fail(errc::invalid_request,
                    "{}:{}: '{}' is not an option: a line is KEY then name=, rate=, tokens=, burst=, priority= "
                    "(an API key may not contain whitespace)",
                    path, line_no, printable(word, 40));
      }
      const std::string_view opt = word.substr(0, eq), value = word.substr(eq + 1);
      if (opt == "name") {
        if (!valid_name(value)) {
          return fail(errc::invalid_request, "{}:{}: name '{}' must be 1-64 of [A-Za-z0-9_.-]", path, line_no,
                      printable(value, 80));
        }
        k.name = std::string(value);
      } else if (opt == "rate" || opt == "tokens") {
        auto v = parse_per_minute(value);
        if (!v) {
          return fail(errc::invalid_request, "{}:{}: {}={} must be N/s, N/min or N/h with N > 0", path, line_no, opt,
                      printable(value, 40));
        }
        (opt == "rate" ? k.limits.requests_per_minute : k.limits.tokens_per_minute) = *v;
      } else if (opt == "burst") {
        auto v = parse_number(value);
        if (!v || *v < 1) {
          return fail(errc::invalid_request, "{}:{}: burst={} must be a number >= 1", path, line_no,
                      printable(value, 40));
        }
        k.limits.burst = *v;
      } else if (opt == "priority") {
        if (value == "interactive") {
          k.priority = request_priority::interactive;
        } else if (value == "batch") {
          k.priority = request_priority::batch;
        } else {
          return fail(errc::invalid_request, "{}:{}: priority={} must be interactive or batch", path, line_no,
                      printable(value, 40));
        }
      } else {
        return fail(errc::invalid_request,
                    "{}:{}: unknown option '{}' (known: name, rate, tokens, burst, priority)", path, line_no,
                    printable(opt, 40));
      }
    }
    if (k.limits.burst > 0 && k.limits.requests_per_minute == 0) {
      return fail(errc::invalid_request, "{}:{}: burst= limits requests: give rate= too", path, line_no);
    }
    if (!seen_keys.insert(k.key).second) {
      // The key itself is not repeated here: error messages end up in logs.
      return fail(errc::invalid_request, "{}:{}: this key is already on an earlier line", path, line_no);
    }
    if (!seen_names.insert(k.name).second) {
      return fail(errc::invalid_request, "{}:{}: name '{}' is already used by an earlier key", path, line_no, k.name);
    }
    keys.push_back(std::move(k));
  }
  if (in.bad()) return fail(errc::io_error, "cannot read API key file {}", path);
  if (keys.empty()) return fail(errc::invalid_request, "{}: no API key in the file (one key per line)", path);
  return keys;
}

int64_t rate_limit_refusal::retry_after_s() const {
  return std::max<int64_t>(1, std::chrono::ceil<std::chrono::seconds>(retry_after).count());
}

api_key_set::api_key_set(std::vector<api_key> keys, clock::time_point now) : keys_(std::move(keys)) {
  states_.reserve(keys_.size());
  for (const auto& k : keys_) {
    const auto& l = k.limits;
    const double burst = l.burst > 0 ? l.burst : std::max(1.0, l.requests_per_minute);
    states_.push_back(state{token_bucket(l.requests_per_minute / 60.0, l.requests_per_minute > 0 ? burst : 0, now),
                            token_bucket(l.tokens_per_minute / 60.0, l.tokens_per_minute, now), 0});
  }
}

std::shared_ptr<api_key_set> api_key_set::without_limits(std::vector<std::string> keys) {
  std::vector<api_key> v;
  for (size_t i = 0; i < keys.size(); ++i) {
    api_key k;
    k.key = std::move(keys[i]);
    k.name = fmt::format("key-{}", i + 1);
    v.push_back(std::move(k));
  }
  return std::make_shared<api_key_set>(std::move(v));
}

const api_key* api_key_set::find(std::string_view presented) const {
  const api_key* found = nullptr;
  for (const auto& k : keys_) {
    // Every byte of every key compared: the time does not tell how much of a key matched.
    unsigned diff = k.key.size() == presented.size() ? 0u : 1u;
    for (size_t i = 0; i < k.key.size(); ++i) {
      diff |= unsigned(static_cast<unsigned char>(k.key[i]) ^
                       (i < presented.size() ? static_cast<unsigned char>(presented[i]) : 0u));
    }
    if (diff == 0) found = &k;
  }
  return found;
}

size_t api_key_set::index_of(const api_key& key) const {
  const size_t i = size_t(&key - keys_.data());
  if (i >= keys_.size()) {  // a bug: a key of another set
    logger().critical("api_key_set: a key that is not in this set");
    std::abort();
  }
  return i;
}

std::optional<rate_limit_refusal> api_key_set::admit(const api_key& key, clock::time_point now) {
  const size_t i = index_of(key);
  std::lock_guard lock(mu_);
  auto& s = states_[i];
  // A key in debt for tokens waits until it is out of debt (at least one token).
  const auto token_wait = s.tokens.wait_for(1, now);
  const auto request_wait = s.requests.wait_for(1, now);
  if (token_wait.count() == 0 && request_wait.count() == 0) {
    s.requests.try_take(1, now);
    return std::nullopt;
  }
  ++s.n_rate_limited;
  return rate_limit_refusal{std::max(token_wait, request_wait), token_wait >= request_wait};
}

void api_key_set::charge_tokens(const api_key& key, uint64_t n_tokens, clock::time_point now) {
  const size_t i = index_of(key);
  std::lock_guard lock(mu_);
  states_[i].tokens.charge(double(n_tokens), now);
}

std::vector<std::pair<std::string, uint64_t>> api_key_set::rate_limited_counts() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(keys_.size());
  for (size_t i = 0; i < keys_.size(); ++i) out.emplace_back(keys_[i].name, states_[i].n_rate_limited);
  return out;
}

}  // namespace troupe::transport
