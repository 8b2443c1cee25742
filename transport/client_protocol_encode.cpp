// The client protocol's encoders: each message as a whole frame (header + msgpack map).
#include <cstring>

#include <msgpack.hpp>

#include "transport/client_protocol.hpp"

namespace troupe::transport {
namespace {

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

}  // namespace

std::string encode(const hello& m, uint8_t version) {
  return build_frame(frame_kind::hello, version, m.admin_token.empty() ? 4 : 5, [&](packer& pk, std::string&) {
    if (!m.admin_token.empty()) {
      pack_string(pk, "admin_token");
      pack_string(pk, m.admin_token);
    }
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

std::string encode(const admin_request& m, uint8_t version) {
  return build_frame(frame_kind::admin, version, 3, [&](packer& pk, std::string&) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    pack_string(pk, "token");
    pack_string(pk, m.token);
    pack_string(pk, "command");
    pk.pack_array(static_cast<uint32_t>(m.command.size()));
    for (const auto& w : m.command) pack_string(pk, w);
  });
}

std::string encode(const admin_reply& m, uint8_t version) {
  return build_frame(frame_kind::admin_reply, version, 5, [&](packer& pk, std::string&) {
    pack_string(pk, "request_id");
    pk.pack_uint64(m.request_id);
    pack_string(pk, "ok");
    if (m.ok) {
      pk.pack_true();
    } else {
      pk.pack_false();
    }
    pack_string(pk, "code");
    pack_string(pk, m.code);
    pack_string(pk, "message");
    pack_string(pk, m.message);
    pack_string(pk, "json");
    pack_string(pk, m.json);
  });
}

}  // namespace troupe::transport
