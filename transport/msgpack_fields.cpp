#include "transport/msgpack_fields.hpp"

#include <cmath>
#include <limits>

namespace troupe::transport::msgpack_fields {

const char* type_name(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "boolean";
    case msgpack::type::POSITIVE_INTEGER: return "integer";
    case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "string";
    case msgpack::type::BIN: return "binary";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    case msgpack::type::EXT: return "extension";
  }
  return "unknown";
}

namespace {
bool reference_everything(msgpack::type::object_type, std::size_t, void*) { return true; }
}  // namespace

/// One payload unpacked into a msgpack object that points into `payload` (zero copy).
result<msgpack::object_handle> parse_map(std::string_view payload, const char* what) {
  const size_t n = payload.size();
  // Every element takes at least one byte: these limits bound what msgpack-c allocates up
  // front for an array or map header that claims more elements than the payload could hold.
  const msgpack::unpack_limit limit(n, n / 2 + 1, n, n, n, 8);
  try {
    size_t offset = 0;
    msgpack::object_handle oh = msgpack::unpack(payload.data(), n, offset, reference_everything, nullptr, limit);
    if (offset != n) return fail(errc::bad_frame, "{}: {} bytes after the msgpack map", what, n - offset);
    if (oh.get().type != msgpack::type::MAP) {
      return fail(errc::bad_frame, "{}: payload must be a msgpack map, got {}", what, type_name(oh.get()));
    }
    return oh;
  } catch (const std::exception& e) {
    return fail(errc::bad_frame, "{}: malformed msgpack payload ({})", what, e.what());
  } catch (...) {
    return fail(errc::bad_frame, "{}: malformed msgpack payload", what);
  }
}

unexpected_error wrong_type(const field_context& c, std::string_view field, const char* expected,
                            const msgpack::object& got) {
  return fail_request(c.request_id, errc::invalid_request, "{}: field '{}' must be {}, got {}", c.what, field,
                      expected, type_name(got));
}

result<uint64_t> read_u64(const field_context& c, std::string_view field, const msgpack::object& o) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) return o.via.u64;
  if (o.type == msgpack::type::NEGATIVE_INTEGER) {
    return invalid(c, "field '{}' must be >= 0, got {}", field, o.via.i64);
  }
  return wrong_type(c, field, "a non-negative integer", o);
}

result<int64_t> read_i64(const field_context& c, std::string_view field, const msgpack::object& o) {
  if (o.type == msgpack::type::NEGATIVE_INTEGER) return o.via.i64;
  if (o.type == msgpack::type::POSITIVE_INTEGER) {
    if (o.via.u64 > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return invalid(c, "field '{}' is out of range", field);
    }
    return static_cast<int64_t>(o.via.u64);
  }
  return wrong_type(c, field, "an integer", o);
}

result<uint32_t> read_u32(const field_context& c, std::string_view field, const msgpack::object& o) {
  auto v = read_u64(c, field, o);
  if (!v) return unexpected_error(std::move(v).error());
  if (*v > std::numeric_limits<uint32_t>::max()) {
    return invalid(c, "field '{}' must be <= {}, got {}", field, std::numeric_limits<uint32_t>::max(), *v);
  }
  return static_cast<uint32_t>(*v);
}

result<double> read_number(const field_context& c, std::string_view field, const msgpack::object& o) {
  double v = 0;
  switch (o.type) {
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: v = o.via.f64; break;
    case msgpack::type::POSITIVE_INTEGER: v = static_cast<double>(o.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: v = static_cast<double>(o.via.i64); break;
    default: return wrong_type(c, field, "a number", o);
  }
  if (!std::isfinite(v)) return invalid(c, "field '{}' must be finite", field);
  return v;
}

/// A number stored as float: also within float's range (converting a larger double is UB).
result<float> read_float(const field_context& c, std::string_view field, const msgpack::object& o) {
  auto v = read_number(c, field, o);
  if (!v) return unexpected_error(std::move(v).error());
  if (std::fabs(*v) > static_cast<double>(std::numeric_limits<float>::max())) {
    return invalid(c, "field '{}' is out of range", field);
  }
  return static_cast<float>(*v);
}

result<bool> read_bool(const field_context& c, std::string_view field, const msgpack::object& o) {
  if (o.type != msgpack::type::BOOLEAN) return wrong_type(c, field, "a boolean", o);
  return o.via.boolean;
}

result<std::string_view> read_string(const field_context& c, std::string_view field, const msgpack::object& o,
                                     size_t max_bytes, errc too_long) {
  if (o.type != msgpack::type::STR) return wrong_type(c, field, "a string", o);
  if (o.via.str.size > max_bytes) {
    return fail_request(c.request_id, too_long, "{}: field '{}' has {} bytes, the limit is {}", c.what, field,
                        o.via.str.size, max_bytes);
  }
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

result<std::vector<int32_t>> read_ids(const field_context& c, std::string_view field, const msgpack::object& o,
                                      size_t max_count, errc too_many) {
  if (o.type != msgpack::type::ARRAY) return wrong_type(c, field, "an array of token ids", o);
  const auto& a = o.via.array;
  if (a.size > max_count) {
    return fail_request(c.request_id, too_many, "{}: field '{}' has {} entries, the limit is {}", c.what, field,
                        a.size, max_count);
  }
  std::vector<int32_t> ids;
  ids.reserve(a.size);
  for (uint32_t i = 0; i < a.size; ++i) {
    const auto& e = a.ptr[i];
    if (e.type != msgpack::type::POSITIVE_INTEGER || e.via.u64 > static_cast<uint64_t>(INT32_MAX)) {
      return invalid(c, "field '{}'[{}] must be a token id in [0, {}]", field, i, INT32_MAX);
    }
    ids.push_back(static_cast<int32_t>(e.via.u64));
  }
  return ids;
}

/// The request_id of a generate/cancel map when it is present and valid, else 0 (so that
/// errors about other fields can still name the request).
uint64_t peek_request_id(const msgpack::object& map) {
  const auto& m = map.via.map;
  for (uint32_t i = 0; i < m.size; ++i) {
    const auto& kv = m.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == "request_id" &&
        kv.val.type == msgpack::type::POSITIVE_INTEGER) {
      return kv.val.via.u64;
    }
  }
  return 0;
}

}  // namespace troupe::transport::msgpack_fields
