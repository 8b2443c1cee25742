#pragma once
// Reading the client protocol's msgpack payloads field by field (internal to transport/: the
// encoders and decoders of client_protocol.hpp use it). A payload is one msgpack map keyed by
// field name; every reader checks the value's type and range and names the field in its error.
#include <cstdint>
#include <array>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "transport/error.hpp"
#include "transport/utf8.hpp"

namespace troupe::transport::msgpack_fields {

/// "integer", "string", ... for error messages.
const char* type_name(const msgpack::object& o);

/// One payload unpacked into a msgpack object that points into `payload` (zero copy); bad_frame
/// unless it is exactly one msgpack map. `what` names the message in errors.
result<msgpack::object_handle> parse_map(std::string_view payload, const char* what);

/// Where a field error is reported: the message kind and the request it belongs to.
struct field_context {
  const char* what;
  uint64_t request_id = 0;
};

/// invalid_request: "<what>: field '<field>' must be <expected>, got <type>".
unexpected_error wrong_type(const field_context& c, std::string_view field, const char* expected,
                            const msgpack::object& got);

/// invalid_request: "<what>: <message>", for the context's request.
template <class... Args>
unexpected_error invalid(const field_context& c, fmt::format_string<Args...> f, Args&&... args) {
  return unexpected_error(error{errc::invalid_request,
                                fmt::format("{}: {}", c.what, fmt::format(f, std::forward<Args>(args)...)),
                                c.request_id});
}

result<uint64_t> read_u64(const field_context& c, std::string_view field, const msgpack::object& o);
result<int64_t> read_i64(const field_context& c, std::string_view field, const msgpack::object& o);
result<uint32_t> read_u32(const field_context& c, std::string_view field, const msgpack::object& o);
/// An integer or float, finite.
result<double> read_number(const field_context& c, std::string_view field, const msgpack::object& o);
/// A number stored as float: also within float's range (converting a larger double is UB).
result<float> read_float(const field_context& c, std::string_view field, const msgpack::object& o);
result<bool> read_bool(const field_context& c, std::string_view field, const msgpack::object& o);
/// A string of at most `max_bytes` (else `too_long`); points into the payload.
result<std::string_view> read_string(const field_context& c, std::string_view field, const msgpack::object& o,
                                     size_t max_bytes, errc too_long = errc::invalid_request);
/// An array of at most `max_count` (else `too_many`) token ids in [0, INT32_MAX].
result<std::vector<int32_t>> read_ids(const field_context& c, std::string_view field, const msgpack::object& o,
                                      size_t max_count, errc too_many = errc::invalid_request);

/// The request_id of a generate/cancel map when it is present and valid, else 0 (so that
/// errors about other fields can still name the request).
uint64_t peek_request_id(const msgpack::object& map);

/// Walks a map's entries: string keys, each at most once, each one of `known` (else
/// unknown_field when `reject_unknown`, else skipped). A `nil` value counts as absent.
/// `on_field(name, value)` reads one present field.
template <class OnField>
result<void> for_each_field(const field_context& c, const msgpack::object& map,
                            std::initializer_list<std::string_view> known, bool reject_unknown,
                            OnField&& on_field) {
  std::array<bool, 16> seen{};
  const auto& m = map.via.map;
  for (uint32_t i = 0; i < m.size; ++i) {
    const auto& kv = m.ptr[i];
    if (kv.key.type != msgpack::type::STR) {
      return invalid(c, "field names must be strings, got {}", type_name(kv.key));
    }
    const std::string_view name(kv.key.via.str.ptr, kv.key.via.str.size);
    size_t index = 0;
    for (auto k : known) {
      if (k == name) break;
      ++index;
    }
    if (index == known.size()) {
      if (!reject_unknown) continue;  // server frames: a client ignores fields it does not know
      return fail_request(c.request_id, errc::unknown_field, "{}: unknown field '{}'", c.what,
                          printable(name));
    }
    if (index < seen.size()) {
      if (seen[index]) return invalid(c, "field '{}' appears twice", name);
      seen[index] = true;
    }
    if (kv.val.type == msgpack::type::NIL) continue;
    auto r = on_field(name, kv.val);
    if (!r) return unexpected_error(std::move(r).error());
  }
  return {};
}

/// Assigns `*r` to `out` or returns the error from the enclosing lambda.
#define TROUPE_READ(out, expr)                                            \
  do {                                                                    \
    auto troupe_r_ = (expr);                                              \
    if (!troupe_r_) return unexpected_error(std::move(troupe_r_).error()); \
    out = std::move(*troupe_r_);                                          \
  } while (0)

}  // namespace troupe::transport::msgpack_fields
