#pragma once
// The client protocol's messages (docs/protocol.md). Each frame's payload is one msgpack map
// keyed by field name; encode() builds a whole frame (header + payload), decode_*() takes a
// payload and validates every field: types, ranges, limits. Unknown fields are refused by name.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/error.hpp"
#include "transport/frame.hpp"
#include "transport/utf8.hpp"  // is_valid_utf8, printable: the text checks of every field

namespace troupe::transport {

/// What a server accepts. Reported to clients in hello_ok.
struct protocol_limits {
  uint32_t max_frame_bytes = default_max_frame_bytes;  // payload bytes of one frame
  uint32_t max_prompt_bytes = 256 * 1024;              // prompt text, UTF-8 bytes
  uint32_t max_prompt_tokens = 8192;                   // prompt_tokens entries
  uint32_t max_tokens = 4096;                          // largest max_tokens a request may ask for
  uint32_t max_stop_strings = 16;
  uint32_t max_stop_string_bytes = 256;

  friend bool operator==(const protocol_limits&, const protocol_limits&) = default;
};

/// Longest api_key / client_name / model / message string a decoder accepts.
inline constexpr size_t max_name_bytes = 1024;

// ---- client -> server ---------------------------------------------------------------------

/// First frame of a connection. The client speaks versions [min_version, version].
struct hello {
  uint8_t version = protocol_version;
  uint8_t min_version = min_protocol_version;
  std::string api_key;      // empty: none
  std::string client_name;  // free text for logs; may be empty
  std::string admin_token;  // an admin console's token: lets it in without an API key (admin frames only)

  friend bool operator==(const hello&, const hello&) = default;
};

enum class request_priority : uint8_t { interactive, batch };
const char* priority_name(request_priority p);

/// One completion request. Exactly one of `prompt` (text) and `prompt_tokens` (ids) is non-empty.
struct generate_request {
  uint64_t request_id = 0;  // chosen by the client, >= 1, unique among its in-flight requests
  std::string prompt;
  std::vector<int32_t> prompt_tokens;
  uint32_t max_tokens = 16;         // >= 1
  float temperature = 1.0f;         // >= 0; 0: greedy
  float top_p = 1.0f;               // (0, 1]
  int32_t top_k = 0;                // >= 0; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  std::optional<uint64_t> seed;     // none: the server picks one
  std::vector<std::string> stop;    // stop strings (not included in the output)
  request_priority priority = request_priority::interactive;
  uint32_t deadline_ms = 0;  // from receipt; 0: none
  bool stream = true;        // false: all text in one token_chunk just before the final frame

  friend bool operator==(const generate_request&, const generate_request&) = default;
};

struct cancel_request {
  uint64_t request_id = 0;

  friend bool operator==(const cancel_request&, const cancel_request&) = default;
};

/// An ADMIN CONSOLE command: its words as typed ("drain", "0"), with the admin token.
struct admin_request {
  uint64_t request_id = 0;  // >= 1, echoed in the reply
  std::string token;
  std::vector<std::string> command;  // 1..32 words of at most 1024 bytes

  friend bool operator==(const admin_request&, const admin_request&) = default;
};
inline constexpr size_t max_admin_words = 32;

// ---- server -> client ---------------------------------------------------------------------

struct hello_ok {
  uint8_t version = protocol_version;  // negotiated: every later frame uses it
  std::string server_name;
  std::string model;
  protocol_limits limits;

  friend bool operator==(const hello_ok&, const hello_ok&) = default;
};

/// Tokens produced since the previous chunk, and the UTF-8 text they completed.
struct token_chunk {
  uint64_t request_id = 0;
  std::string text;
  std::vector<int32_t> ids;

  friend bool operator==(const token_chunk&, const token_chunk&) = default;
};

enum class finish_reason : uint8_t {
  stop,         // end-of-sequence token
  length,       // max_tokens reached
  stop_string,  // a stop string matched
  cancelled,    // cancelled by the client
  deadline,     // deadline_ms reached after output had started
};
const char* finish_reason_name(finish_reason r);

/// Last frame of a successful (or cancelled) request.
struct final_frame {
  uint64_t request_id = 0;
  finish_reason reason = finish_reason::stop;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  double ttft_ms = 0;   // receipt to first token sent
  double total_ms = 0;  // receipt to final frame

  friend bool operator==(const final_frame&, const final_frame&) = default;
};

struct error_frame {
  uint64_t request_id = 0;  // 0: the connection as a whole
  errc code = errc::internal;
  std::string message;

  friend bool operator==(const error_frame&, const error_frame&) = default;
};

/// The answer to an admin frame.
struct admin_reply {
  uint64_t request_id = 0;
  bool ok = false;
  std::string code;     // when !ok: unauthorized, bad_argument, refused, not_supported, failed, ...
  std::string message;  // for people (when ok: what was done; else why not)
  std::string json;     // a JSON document for scripts (status, requests, config), or empty

  friend bool operator==(const admin_reply&, const admin_reply&) = default;
};

// ---- encoding: whole frames (header + msgpack payload) --------------------------------------
std::string encode(const hello& m, uint8_t version = min_protocol_version);
std::string encode(const hello_ok& m, uint8_t version = protocol_version);
std::string encode(const generate_request& m, uint8_t version = protocol_version);
std::string encode(const cancel_request& m, uint8_t version = protocol_version);
std::string encode(const token_chunk& m, uint8_t version = protocol_version);
std::string encode(const final_frame& m, uint8_t version = protocol_version);
std::string encode(const error_frame& m, uint8_t version = protocol_version);
std::string encode(const admin_request& m, uint8_t version = protocol_version);
std::string encode(const admin_reply& m, uint8_t version = protocol_version);

// ---- decoding: a frame's payload -----------------------------------------------------------
// A payload that is not one well-formed msgpack map is errc::bad_frame. Field errors are
// invalid_request / unknown_field (naming the field) / prompt_too_long / max_tokens_too_large;
// for generate and cancel, error::request_id is set whenever the payload carried a valid one.
result<hello> decode_hello(std::string_view payload);
result<hello_ok> decode_hello_ok(std::string_view payload);
result<generate_request> decode_generate(std::string_view payload, const protocol_limits& limits);
result<cancel_request> decode_cancel(std::string_view payload);
result<token_chunk> decode_token_chunk(std::string_view payload);
result<final_frame> decode_final(std::string_view payload);
result<error_frame> decode_error(std::string_view payload);
result<admin_request> decode_admin(std::string_view payload);
result<admin_reply> decode_admin_reply(std::string_view payload);

/// The checks decode_generate applies after parsing, for requests built in-process
/// (e.g. by the HTTP gateway): ranges, exactly one prompt, limits, UTF-8.
result<void> validate(const generate_request& req, const protocol_limits& limits);

}  // namespace troupe::transport
