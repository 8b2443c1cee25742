// Decoding the frames a server sends (hello_ok, token_chunk, final, error). Unknown fields are
// skipped: a newer server may add fields an older client does not know.
#include <array>

#include "transport/client_protocol.hpp"
#include "transport/msgpack_fields.hpp"

namespace troupe::transport {

using namespace msgpack_fields;

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

result<admin_reply> decode_admin_reply(std::string_view payload) {
  auto root = parse_map(payload, "admin_reply");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"admin_reply", peek_request_id(root->get())};
  admin_reply r;
  auto fields = for_each_field(c, root->get(), {"request_id", "ok", "code", "message", "json"}, false,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(r.request_id, read_u64(c, name, v));
    } else if (name == "ok") {
      TROUPE_READ(r.ok, read_bool(c, name, v));
    } else if (name == "code") {
      TROUPE_READ(r.code, read_string(c, name, v, max_name_bytes));
    } else if (name == "message") {
      TROUPE_READ(r.message, read_string(c, name, v, payload.size()));
    } else if (name == "json") {
      TROUPE_READ(r.json, read_string(c, name, v, payload.size()));
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  return r;
}

}  // namespace troupe::transport
