// Decoding the frames a client sends (hello, generate, cancel) and validating generate requests.
// Unknown fields are refused by name: a client learns at once that the server does not know them.
#include <cmath>
#include <cstdint>

#include "transport/client_protocol.hpp"
#include "transport/msgpack_fields.hpp"

namespace troupe::transport {

using namespace msgpack_fields;

result<hello> decode_hello(std::string_view payload) {
  auto root = parse_map(payload, "hello");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"hello", 0};
  hello h;
  bool have_version = false;
  bool have_min_version = false;
  auto fields = for_each_field(c, root->get(), {"version", "min_version", "api_key", "client_name", "admin_token"}, true,
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
    } else if (name == "admin_token") {
      TROUPE_READ(h.admin_token, read_string(c, name, v, max_name_bytes));
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

result<admin_request> decode_admin(std::string_view payload) {
  auto root = parse_map(payload, "admin");
  if (!root) return unexpected_error(std::move(root).error());
  const field_context c{"admin", peek_request_id(root->get())};
  admin_request r;
  bool have_request_id = false;
  auto fields = for_each_field(c, root->get(), {"request_id", "token", "command"}, true,
                               [&](std::string_view name, const msgpack::object& v) -> result<void> {
    if (name == "request_id") {
      TROUPE_READ(r.request_id, read_u64(c, name, v));
      have_request_id = true;
    } else if (name == "token") {
      TROUPE_READ(r.token, read_string(c, name, v, max_name_bytes));
    } else if (name == "command") {
      if (v.type != msgpack::type::ARRAY) return wrong_type(c, name, "an array of strings", v);
      const auto& a = v.via.array;
      if (a.size == 0 || a.size > max_admin_words) {
        return invalid(c, "field 'command' must have 1 to {} words, got {}", max_admin_words, a.size);
      }
      for (uint32_t i = 0; i < a.size; ++i) {
        std::string_view w;
        TROUPE_READ(w, read_string(c, "command[]", a.ptr[i], max_name_bytes));
        if (!is_valid_utf8(w)) return invalid(c, "field 'command'[{}] is not valid UTF-8", i);
        r.command.emplace_back(w);
      }
    }
    return {};
  });
  if (!fields) return unexpected_error(std::move(fields).error());
  if (!have_request_id || r.request_id == 0) return invalid(c, "field 'request_id' (>= 1) is required");
  if (r.command.empty()) return invalid(c, "field 'command' is required");
  return r;
}

}  // namespace troupe::transport
