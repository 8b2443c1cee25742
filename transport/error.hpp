#pragma once
// Errors as values for transport/: frame decoding, request validation, connection failures.
// One enum serves in-process results and the wire alike: an error frame carries errc_name(code),
// and a decoder's error is exactly what the server sends back (code, message, request_id).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <version>

#if defined(__cpp_lib_expected) && __cpp_lib_expected >= 202202L
#include <expected>
#define TROUPE_TRANSPORT_STD_EXPECTED 1
#endif

#include <fmt/format.h>

namespace troupe::transport {

/// Stable error codes. The numbers never change meaning; the wire carries the names (errc_name).
enum class errc : uint16_t {
  // Connection-level: the server sends an error frame (request_id 0) and closes the connection.
  bad_frame = 1,            // bad magic, undecodable msgpack, payload not a map, wrong frame kind
  frame_too_large = 2,      // declared frame length above the limit
  unsupported_version = 3,  // frame header or hello asks for a protocol version we do not speak
  unauthorized = 4,         // missing or wrong API key
  // Request-level: the request fails, the connection stays open.
  invalid_request = 10,       // a field has the wrong type or an out-of-range value
  unknown_field = 11,         // a field name this protocol version does not define
  prompt_too_long = 12,       // prompt bytes or tokens above the limit
  max_tokens_too_large = 13,  // max_tokens above the limit
  duplicate_request_id = 14,  // request_id already in flight on this connection
  overloaded = 15,            // too many requests or connections; retry later
  cancelled = 16,             // the request was cancelled before it produced anything
  deadline_exceeded = 17,     // deadline_ms passed before the request produced anything
  internal = 18,              // a bug or an unexpected failure in the server
  shutting_down = 19,         // the server is stopping (may be connection-level)
  timeout = 20,               // no hello in time (server) or no answer in time (client)
  rate_limited = 21,          // the API key is over its requests or tokens per minute; retry later
  // Local only, never sent: what a client library reports about its own connection.
  io_error = 100,           // connect/read/write failed
  connection_closed = 101,  // the peer closed the connection
};

/// The stable wire name of a code ("bad_frame", "prompt_too_long", ...).
const char* errc_name(errc code);
/// The code for a wire name; nullopt for a name this build does not know.
std::optional<errc> errc_from_name(std::string_view name);
/// True for the codes after which the server closes the connection.
bool closes_connection(errc code);

struct error {
  errc code = errc::internal;
  std::string message;
  uint64_t request_id = 0;  // the request this concerns; 0: the connection as a whole

  friend bool operator==(const error&, const error&) = default;
};

// ---- result<T> ------------------------------------------------------------------------------
// std::expected where the standard library has it (g++ 12 in C++23 mode: every normal build).
// clang 14 with libstdc++ 12 (the libFuzzer build) lacks it: a minimal stand-in with the same
// surface (has_value, operator bool, *, ->, value, error) takes its place there.
#if defined(TROUPE_TRANSPORT_STD_EXPECTED)
template <class T>
using result = std::expected<T, error>;
using unexpected_error = std::unexpected<error>;
#else
namespace detail {
template <class E>
class unexpected {
 public:
  explicit unexpected(E e) : e_(std::move(e)) {}
  E& error() & { return e_; }
  const E& error() const& { return e_; }
  E&& error() && { return std::move(e_); }

 private:
  E e_;
};

template <class T, class E>
class expected {
 public:
  expected() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
  template <class U = T>
    requires(std::is_constructible_v<T, U &&> &&
             !std::is_same_v<std::remove_cvref_t<U>, unexpected<E>> &&
             !std::is_same_v<std::remove_cvref_t<U>, expected>)
  expected(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  expected(unexpected<E> u) : v_(std::in_place_index<1>, std::move(u).error()) {}

  bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }
  T& operator*() & { return std::get<0>(v_); }
  const T& operator*() const& { return std::get<0>(v_); }
  T&& operator*() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  E& error() & { return std::get<1>(v_); }
  const E& error() const& { return std::get<1>(v_); }
  E&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, E> v_;
};

template <class E>
class expected<void, E> {
 public:
  expected() = default;
  expected(unexpected<E> u) : e_(std::move(u).error()) {}
  bool has_value() const { return !e_.has_value(); }
  explicit operator bool() const { return has_value(); }
  void operator*() const {}
  void value() const {}
  E& error() & { return *e_; }
  const E& error() const& { return *e_; }
  E&& error() && { return std::move(*e_); }

 private:
  std::optional<E> e_;
};
}  // namespace detail

template <class T>
using result = detail::expected<T, error>;
using unexpected_error = detail::unexpected<error>;
#endif

/// Builds the unexpected value: `return fail(errc::bad_frame, "bad magic {:02x}", b);`
template <class... Args>
unexpected_error fail(errc code, fmt::format_string<Args...> f, Args&&... args) {
  return unexpected_error(error{code, fmt::format(f, std::forward<Args>(args)...), 0});
}

/// As fail(), for an error that concerns one request.
template <class... Args>
unexpected_error fail_request(uint64_t request_id, errc code, fmt::format_string<Args...> f,
                              Args&&... args) {
  return unexpected_error(error{code, fmt::format(f, std::forward<Args>(args)...), request_id});
}

}  // namespace troupe::transport
