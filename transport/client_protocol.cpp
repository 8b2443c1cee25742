#include "transport/client_protocol.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <initializer_list>
#include <limits>

#include <msgpack.hpp>

namespace troupe::transport {

const char* priority_name(request_priority p) {
  switch (p) {
    case request_priority::interactive: return "interactive";
    case request_priority::batch: return "batch";
  }
  return "interactive";
}

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::deadline: return "deadline";
  }
  return "stop";
}

bool is_valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

std::string printable(std::string_view s, size_t max_bytes) {
  std::string out;
  const size_t n = std::min(s.size(), max_bytes);
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (n < s.size()) out += "...";
  return out;
}

namespace {

// ---- encoding ------------------------------------------------------------------------------

/// msgpack-c stream that appends to a std::string (the frame header is patched in at the end).
struct string_stream {
  std::string* out;
  void write(const char* data, size_t n) { out->append(data, n); }
};
using packer = msgpack::packer<string_stream>;

void pack_string(packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

/// `body(pk, out)` packs the map's entries; `out` is the frame so far, for pack_f32/pack_f64.
template <class Body>
std::string build_frame(frame_kind kind, uint8_t version, uint32_t n_fields, Body&& body) {
  std::string out(frame_header_bytes, '\0');
  string_stream stream{&out};
  packer pk(stream);
  pk.pack_map(n_fields);
  body(pk, out);
  write_frame_header(out.data(),
                     frame_header{version, kind, static_cast<uint32_t>(out.size() - frame_header_bytes)});
  return out;
}

// Floats are written by hand as msgpack float32/float64: msgpack-c's pack_float/pack_double
// store integral values as integers, and their range check converts 2^64 to uint64_t, which is
// undefined behaviour (found by fuzz_frame). Always-float encoding is also kinder to clients.
void pack_f32(std::string& out, float f) {
  uint32_t bits = 0;
  std::memcpy(&bits, &f, sizeof bits);
  out += static_cast<char>(0xca);
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((bits >> shift) & 0xff);
}

void pack_f64(std::string& out, double d) {
  uint64_t bits = 0;
  std::memcpy(&bits, &d, sizeof bits);
  out += static_cast<char>(0xcb);
  for (int shift = 56; shift >= 0; shift -= 8) out += static_cast<char>((bits >> shift) & 0xff);
}

void pack_ids(packer& pk, const std::vector<int32_t>& ids) {
  pk.pack_array(static_cast<uint32_t>(ids.size()));
  for (int32_t id : ids) pk.pack_int32(id);
}

void pack_limits(packer& pk, const protocol_limits& l) {
  pk.pack_map(6);
  pack_string(pk, "max_frame_bytes");
  pk.pack_uint32(l.max_frame_bytes);
  pack_string(pk, "max_prompt_bytes");
  pk.pack_uint32(l.max_prompt_bytes);
  pack_string(pk, "max_prompt_tokens");
  pk.pack_uint32(l.max_prompt_tokens);
  pack_string(pk, "max_tokens");
  pk.pack_uint32(l.max_tokens);
  pack_string(pk, "max_stop_strings");
  pk.pack_uint32(l.max_stop_strings);
  pack_string(pk, "max_stop_string_bytes");
  pk.pack_uint32(l.max_stop_string_bytes);
}

// ---- decoding ------------------------------------------------------------------------------

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

bool reference_everything(msgpack::type::object_type, std::size_t, void*) { return true; }

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

/// Where a field error is reported: the message kind and the request it belongs to.
struct field_context {
  const char* what;
  uint64_t request_id = 0;
};

unexpected_error wrong_type(const field_context& c, std::string_view field, const char* expected,
                            const msgpack::object& got) {
  return fail_request(c.request_id, errc::invalid_request, "{}: field '{}' must be {}, got {}", c.what, field,
                      expected, type_name(got));
}

template <class... Args>
unexpected_error invalid(const field_context& c, fmt::format_string<Args...> f, Args&&... args) {
  return unexpected_error(error{errc::invalid_request,
                                fmt::format("{}: {}", c.what, fmt::format(f, std::forward<Args>(args)...)),
                                c.request_id});
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
                                     size_t max_bytes, errc too_long = errc::invalid_request) {
  if (o.type != msgpack::type::STR) return wrong_type(c, field, "a string", o);
  if (o.via.str.size > max_bytes) {
    return fail_request(c.request_id, too_long, "{}: field '{}' has {} bytes, the limit is {}", c.what, field,
                        o.via.str.size, max_bytes);
  }
  return std::string_view(o.via.str.ptr, o.via.str.size);
}

result<std::vector<int32_t>> read_ids(const field_context& c, std::string_view field, const msgpack::object& o,
                                      size_t max_count, errc too_many = errc::invalid_request) {
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

}  // namespace

// ---- encode ----------------------------------------------------------------------------------

std::string encode(const hello& m, uint8_t version) {
  return build_frame(frame_kind::hello, version, 4, [&](packer& pk, std::string&) {
    pack_string(pk, "version");
    pk.pack_uint8(m.version);
    pack_string(pk, "min_version");
    pk.pack_uint8(m.min_version);
    pack_string(pk, "api_key");
    pack_string(pk, m.api_key);
    pack_string(pk, "client_name");
    pack_string(pk, m.client_name);
  });
}

std::string encode(const hello_ok& m, uint8_t version) {
  return build_frame(frame_kind::hello_ok, version, 4, [&](packer& pk, std::string&) {
    pack_string(pk, "version");
    pk.pack_uint8(m.version);
    pack_string(pk, "server_name");
    pack_string(pk, m.server_name);
    pack_string(pk, "model");
    pack_string(pk, m.model);
    pack_string(pk, "limits");
    pack_limits(pk, m.limits);
  });
}

std::string encode(const generate_request& m, uint8_t version) {
  const uint32_t n_fields = 11 + (m.seed ? 1 : 0);
  return build_frame(frame_kind::generate, version, n_fields, [&](packer& pk, std::string& out) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    if (!m.prompt_tokens.empty()) {
      pack_string(pk, "prompt_tokens");
      pack_ids(pk, m.prompt_tokens);
    } else {
      pack_string(pk, "prompt");
      pack_string(pk, m.prompt);
    }
    pack_string(pk, "max_tokens");
    pk.pack_uint32(m.max_tokens);
    pack_string(pk, "temperature");
    pack_f32(out, m.temperature);
    pack_string(pk, "top_p");
    pack_f32(out, m.top_p);
    pack_string(pk, "top_k");
    pk.pack_int32(m.top_k);
    pack_string(pk, "repetition_penalty");
    pack_f32(out, m.repetition_penalty);
    if (m.seed) {
      pack_string(pk, "seed");
      pk.pack_uint64(*m.seed);
    }
    pack_string(pk, "stop");
    pk.pack_array(static_cast<uint32_t>(m.stop.size()));
    for (const auto& s : m.stop) pack_string(pk, s);
    pack_string(pk, "priority");
    pack_string(pk, priority_name(m.priority));
    pack_string(pk, "deadline_ms");
    pk.pack_uint32(m.deadline_ms);
    pack_string(pk, "stream");
    if (m.stream) {
      pk.pack_true();
    } else {
      pk.pack_false();
    }
  });
}

std::string encode(const cancel_request& m, uint8_t version) {
  return build_frame(frame_kind::cancel, version, 1, [&](packer& pk, std::string&) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
  });
}

std::string encode(const token_chunk& m, uint8_t version) {
  return build_frame(frame_kind::token_chunk, version, 3, [&](packer& pk, std::string&) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    pack_string(pk, "text");
    pack_string(pk, m.text);
    pack_string(pk, "ids");
    pack_ids(pk, m.ids);
  });
}

std::string encode(const final_frame& m, uint8_t version) {
  return build_frame(frame_kind::final, version, 6, [&](packer& pk, std::string& out) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    pack_string(pk, "finish_reason");
    pack_string(pk, finish_reason_name(m.reason));
    pack_string(pk, "prompt_tokens");
    pk.pack_uint32(m.prompt_tokens);
    pack_string(pk, "completion_tokens");
    pk.pack_uint32(m.completion_tokens);
    pack_string(pk, "ttft_ms");
    pack_f64(out, m.ttft_ms);
    pack_string(pk, "total_ms");
    pack_f64(out, m.total_ms);
  });
}

std::string encode(const error_frame& m, uint8_t version) {
  return build_frame(frame_kind::error, version, 3, [&](packer& pk, std::string&) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    pack_string(pk, "code");
    pack_string(pk, errc_name(m.code));
    pack_string(pk, "message");
    pack_string(pk, m.message);
  });
}

// ---- decode (client -> server: unknown fields are errors) -----------------------------------

result<hello> decode_hello(std::string_view payload) {
  auto root = parse_map(payload, "hello");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"hello", 0};
  hello h;
  bool have_version = false;
  bool have_min_version = false;
  auto fields = for_each_field(c, root->get(), {"version", "min_version", "api_key", "client_name"}, true,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "version" || name == "min_version") {
      uint32_t x = 0;
      TROUPE_READ(x, read_u32(c, name, v));
      if (x < 1 || x > 255) return invalid(c, "field '{}' must be in [1, 255], got {}", name, x);
      if (name == "version") {
        h.version = static_cast<uint8_t>(x);
        have_version = true;
      } else {
        h.min_version = static_cast<uint8_t>(x);
        have_min_version = true;
      }
    } else if (name == "api_key") {
      TROUPE_READ(h.api_key, read_string(c, name, v, max_name_bytes));
    } else if (name == "client_name") {
      TROUPE_READ(h.client_name, read_string(c, name, v, max_name_bytes));
      if (!is_valid_utf8(h.client_name)) return invalid(c, "field 'client_name' is not valid UTF-8");
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_version) return invalid(c, "field 'version' is required");
  if (!have_min_version) h.min_version = h.version;
  if (h.min_version > h.version) {
    return invalid(c, "min_version {} is above version {}", h.min_version, h.version);
  }
  return h;
}

result<generate_request> decode_generate(std::string_view payload, const protocol_limits& limits) {
  auto root = parse_map(payload, "generate");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"generate", peek_request_id(root->get())};
  generate_request r;
  bool have_request_id = false;
  bool have_prompt = false;
  bool have_prompt_tokens = false;
  auto fields = for_each_field(c, root->get(),
                               {"request_id", "prompt", "prompt_tokens", "max_tokens", "temperature", "top_p",
                                "top_k", "repetition_penalty", "seed", "stop", "priority", "deadline_ms", "stream"},
                               true,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(r.request_id, read_u64(c, name, v));
      have_request_id = true;
    } else if (name == "prompt") {
      TROUPE_READ(r.prompt, read_string(c, name, v, limits.max_prompt_bytes, errc::prompt_too_long));
      have_prompt = true;
    } else if (name == "prompt_tokens") {
      TROUPE_READ(r.prompt_tokens, read_ids(c, name, v, limits.max_prompt_tokens, errc::prompt_too_long));
      have_prompt_tokens = true;
    } else if (name == "max_tokens") {
      int64_t x = 0;
      TROUPE_READ(x, read_i64(c, name, v));
      if (x < 1) return invalid(c, "field 'max_tokens' must be >= 1, got {}", x);
      if (static_cast<uint64_t>(x) > limits.max_tokens) {
        return fail_request(c.request_id, errc::max_tokens_too_large,
                            "generate: max_tokens {} exceeds the limit of {}", x, limits.max_tokens);
      }
      r.max_tokens = static_cast<uint32_t>(x);
    } else if (name == "temperature") {
      TROUPE_READ(r.temperature, read_float(c, name, v));
    } else if (name == "top_p") {
      TROUPE_READ(r.top_p, read_float(c, name, v));
    } else if (name == "top_k") {
      int64_t x = 0;
      TROUPE_READ(x, read_i64(c, name, v));
      if (x < 0 || x > INT32_MAX) return invalid(c, "field 'top_k' must be in [0, {}], got {}", INT32_MAX, x);
      r.top_k = static_cast<int32_t>(x);
    } else if (name == "repetition_penalty") {
      TROUPE_READ(r.repetition_penalty, read_float(c, name, v));
    } else if (name == "seed") {
      uint64_t x = 0;
      TROUPE_READ(x, read_u64(c, name, v));
      r.seed = x;
    } else if (name == "stop") {
      if (v.type != msgpack::type::ARRAY) return wrong_type(c, name, "an array of strings", v);
      const auto& a = v.via.array;
      if (a.size > limits.max_stop_strings) {
        return invalid(c, "field 'stop' has {} strings, the limit is {}", a.size, limits.max_stop_strings);
      }
      r.stop.clear();
      for (uint32_t i = 0; i < a.size; ++i) {
        std::string_view s;
        TROUPE_READ(s, read_string(c, "stop[]", a.ptr[i], limits.max_stop_string_bytes));
        r.stop.emplace_back(s);
      }
    } else if (name == "priority") {
      std::string_view s;
      TROUPE_READ(s, read_string(c, name, v, 64));
      if (s == "interactive") {
        r.priority = request_priority::interactive;
      } else if (s == "batch") {
        r.priority = request_priority::batch;
      } else {
        return invalid(c, "field 'priority' must be \"interactive\" or \"batch\"");
      }
    } else if (name == "deadline_ms") {
      TROUPE_READ(r.deadline_ms, read_u32(c, name, v));
    } else if (name == "stream") {
      TROUPE_READ(r.stream, read_bool(c, name, v));
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_request_id) return invalid(c, "field 'request_id' is required");
  if (!have_prompt && !have_prompt_tokens) return invalid(c, "one of 'prompt' or 'prompt_tokens' is required");
  if (have_prompt && have_prompt_tokens) return invalid(c, "give 'prompt' or 'prompt_tokens', not both");
  auto ok = validate(r, limits);
  if (!ok) return unexpected_error(std::move(ok).error());
  return r;
}

result<void> validate(const generate_request& r, const protocol_limits& limits) {
  const field_context c{"generate", r.request_id};
  if (r.request_id == 0) return invalid(c, "field 'request_id' must be >= 1");
  if (r.prompt.empty() && r.prompt_tokens.empty()) return invalid(c, "the prompt is empty");
  if (!r.prompt.empty() && !r.prompt_tokens.empty()) {
    return invalid(c, "give 'prompt' or 'prompt_tokens', not both");
  }
  if (r.prompt.size() > limits.max_prompt_bytes) {
    return fail_request(r.request_id, errc::prompt_too_long, "generate: prompt has {} bytes, the limit is {}",
                        r.prompt.size(), limits.max_prompt_bytes);
  }
  if (!is_valid_utf8(r.prompt)) return invalid(c, "field 'prompt' is not valid UTF-8");
  if (r.prompt_tokens.size() > limits.max_prompt_tokens) {
    return fail_request(r.request_id, errc::prompt_too_long, "generate: prompt has {} tokens, the limit is {}",
                        r.prompt_tokens.size(), limits.max_prompt_tokens);
  }
  for (size_t i = 0; i < r.prompt_tokens.size(); ++i) {
    if (r.prompt_tokens[i] < 0) return invalid(c, "field 'prompt_tokens'[{}] is negative", i);
  }
  if (r.max_tokens < 1) return invalid(c, "field 'max_tokens' must be >= 1");
  if (r.max_tokens > limits.max_tokens) {
    return fail_request(r.request_id, errc::max_tokens_too_large, "generate: max_tokens {} exceeds the limit of {}",
                        r.max_tokens, limits.max_tokens);
  }
  if (!std::isfinite(r.temperature) || r.temperature < 0) {
    return invalid(c, "field 'temperature' must be >= 0, got {}", r.temperature);
  }
  if (!std::isfinite(r.top_p) || r.top_p <= 0 || r.top_p > 1) {
    return invalid(c, "field 'top_p' must be in (0, 1], got {}", r.top_p);
  }
  if (r.top_k < 0) return invalid(c, "field 'top_k' must be >= 0, got {}", r.top_k);
  if (!std::isfinite(r.repetition_penalty) || r.repetition_penalty <= 0) {
    return invalid(c, "field 'repetition_penalty' must be > 0, got {}", r.repetition_penalty);
  }
  if (r.stop.size() > limits.max_stop_strings) {
    return invalid(c, "field 'stop' has {} strings, the limit is {}", r.stop.size(), limits.max_stop_strings);
  }
  for (size_t i = 0; i < r.stop.size(); ++i) {
    const auto& s = r.stop[i];
    if (s.empty()) return invalid(c, "field 'stop'[{}] is empty", i);
    if (s.size() > limits.max_stop_string_bytes) {
      return invalid(c, "field 'stop'[{}] has {} bytes, the limit is {}", i, s.size(), limits.max_stop_string_bytes);
    }
    if (!is_valid_utf8(s)) return invalid(c, "field 'stop'[{}] is not valid UTF-8", i);
  }
  return {};
}

result<cancel_request> decode_cancel(std::string_view payload) {
  auto root = parse_map(payload, "cancel");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"cancel", peek_request_id(root->get())};
  cancel_request r;
  bool have_request_id = false;
  auto fields = for_each_field(c, root->get(), {"request_id"}, true,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    TROUPE_READ(r.request_id, read_u64(c, name, v));
    have_request_id = true;
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_request_id || r.request_id == 0) return invalid(c, "field 'request_id' (>= 1) is required");
  return r;
}

// ---- decode (server -> client: unknown fields are ignored) ----------------------------------

result<hello_ok> decode_hello_ok(std::string_view payload) {
  auto root = parse_map(payload, "hello_ok");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"hello_ok", 0};
  hello_ok h;
  bool have_version = false;
  auto fields = for_each_field(c, root->get(), {"version", "server_name", "model", "limits"}, false,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "version") {
      uint32_t x = 0;
      TROUPE_READ(x, read_u32(c, name, v));
      if (x < 1 || x > 255) return invalid(c, "field 'version' must be in [1, 255], got {}", x);
      h.version = static_cast<uint8_t>(x);
      have_version = true;
    } else if (name == "server_name") {
      TROUPE_READ(h.server_name, read_string(c, name, v, max_name_bytes));
    } else if (name == "model") {
      TROUPE_READ(h.model, read_string(c, name, v, max_name_bytes));
    } else if (name == "limits") {
      if (v.type != msgpack::type::MAP) return wrong_type(c, name, "a map", v);
      const field_context lc{"hello_ok.limits", 0};
      auto lf = for_each_field(lc, v,
                               {"max_frame_bytes", "max_prompt_bytes", "max_prompt_tokens", "max_tokens",
                                "max_stop_strings", "max_stop_string_bytes"},
                               false, [&](std::string_view ln, const msgpack::object& lv) -> result<void> {
        uint32_t* dst = nullptr;
        if (ln == "max_frame_bytes") dst = &h.limits.max_frame_bytes;
        if (ln == "max_prompt_bytes") dst = &h.limits.max_prompt_bytes;
        if (ln == "max_prompt_tokens") dst = &h.limits.max_prompt_tokens;
        if (ln == "max_tokens") dst = &h.limits.max_tokens;
        if (ln == "max_stop_strings") dst = &h.limits.max_stop_strings;
        if (ln == "max_stop_string_bytes") dst = &h.limits.max_stop_string_bytes;
        TROUPE_READ(*dst, read_u32(lc, ln, lv));
        return {};
      });
      if (!lf) return unexpected_error(std::move(lf).error());
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_version) return invalid(c, "field 'version' is required");
  return h;
}

result<token_chunk> decode_token_chunk(std::string_view payload) {
  auto root = parse_map(payload, "token_chunk");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"token_chunk", peek_request_id(root->get())};
  token_chunk t;
  bool have_request_id = false;
  auto fields = for_each_field(c, root->get(), {"request_id", "text", "ids"}, false,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(t.request_id, read_u64(c, name, v));
      have_request_id = true;
    } else if (name == "text") {
      TROUPE_READ(t.text, read_string(c, name, v, payload.size()));
    } else if (name == "ids") {
      TROUPE_READ(t.ids, read_ids(c, name, v, payload.size()));
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_request_id) return invalid(c, "field 'request_id' is required");
  return t;
}

result<final_frame> decode_final(std::string_view payload) {
  auto root = parse_map(payload, "final");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"final", peek_request_id(root->get())};
  final_frame f;
  bool have_request_id = false;
  bool have_reason = false;
  auto fields = for_each_field(c, root->get(),
                               {"request_id", "finish_reason", "prompt_tokens", "completion_tokens", "ttft_ms",
                                "total_ms"},
                               false,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(f.request_id, read_u64(c, name, v));
      have_request_id = true;
    } else if (name == "finish_reason") {
      std::string_view s;
      TROUPE_READ(s, read_string(c, name, v, 64));
      constexpr std::array<finish_reason, 5> all{finish_reason::stop, finish_reason::length,
                                                 finish_reason::stop_string, finish_reason::cancelled,
                                                 finish_reason::deadline};
      have_reason = false;
      for (auto r : all) {
        if (s == finish_reason_name(r)) {
          f.reason = r;
          have_reason = true;
        }
      }
      if (!have_reason) return invalid(c, "unknown finish_reason '{}'", printable(s));
    } else if (name == "prompt_tokens") {
      TROUPE_READ(f.prompt_tokens, read_u32(c, name, v));
    } else if (name == "completion_tokens") {
      TROUPE_READ(f.completion_tokens, read_u32(c, name, v));
    } else if (name == "ttft_ms") {
      TROUPE_READ(f.ttft_ms, read_number(c, name, v));
    } else if (name == "total_ms") {
      TROUPE_READ(f.total_ms, read_number(c, name, v));
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_request_id) return invalid(c, "field 'request_id' is required");
  if (!have_reason) return invalid(c, "field 'finish_reason' is required");
  return f;
}

result<error_frame> decode_error(std::string_view payload) {
  auto root = parse_map(payload, "error");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"error", peek_request_id(root->get())};
  error_frame e;
  bool have_code = false;
  std::string unknown_code;
  auto fields = for_each_field(c, root->get(), {"request_id", "code", "message"}, false,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(e.request_id, read_u64(c, name, v));
    } else if (name == "code") {
      std::string_view s;
      TROUPE_READ(s, read_string(c, name, v, 64));
      // A code from a newer server: keep its name in the message, report it as internal.
      if (auto code = errc_from_name(s)) {
        e.code = *code;
      } else {
        e.code = errc::internal;
        unknown_code = s;
      }
      have_code = true;
    } else if (name == "message") {
      TROUPE_READ(e.message, read_string(c, name, v, payload.size()));
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_code) return invalid(c, "field 'code' is required");
  if (!unknown_code.empty()) e.message = fmt::format("[{}] {}", unknown_code, e.message);
  return e;
}

#undef TROUPE_READ

}  // namespace troupe::transport
