#pragma once
// The HTTP API's JSON (docs/http-api.md): request bodies of /v1/completions, /v1/chat/completions
// and /v1/inference parsed and checked field by field into a generate_request; responses, stream
// chunks (Server-Sent Events) and error objects in OpenAI's shapes. Plain functions, no I/O;
// nlohmann-json stays out of this header.
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "transport/chat_template.hpp"
#include "transport/client_protocol.hpp"

namespace troupe::transport {

/// An error as the HTTP API reports it: {"error":{"message","type","param","code"}}.
struct api_error {
  int status = 400;
  std::string message;
  std::string type;   // empty: "invalid_request_error" below 500, "server_error" from 500
  std::string param;  // the request field concerned; empty: null
  std::string code;   // e.g. "model_not_found"; empty: null
};
std::string error_body(const api_error& e);

template <class T>
using api_result = std::expected<T, api_error>;

enum class api_kind { completion, chat, inference };

/// A parsed request. gen.request_id is 1 (the gateway numbers requests itself).
struct api_request {
  api_kind kind = api_kind::completion;
  std::string model;  // as the client named it (empty for /v1/inference)
  generate_request gen;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::vector<chat_message> messages;
};

/// POST /v1/completions: model, prompt (a string, [string] or [token ids]), max_tokens (16),
/// temperature, top_p, seed, stop (string or array), stream, stream_options, n (1 only).
/// Unknown fields are ignored; a known field of the wrong type or out of range is a 400 naming it.
api_result<api_request> parse_completion_request(std::string_view body, const protocol_limits& limits);
/// POST /v1/chat/completions: messages instead of prompt (rendered with `chat`, whose stop() is
/// added to the stop strings); max_tokens or max_completion_tokens (default: the limit).
api_result<api_request> parse_chat_request(std::string_view body, const protocol_limits& limits,
                                           const chat_template& chat = chat_template{});
/// POST /v1/inference and /v1/tasks: input_text, max_length (16), temperature (1), top_p, seed, stop.
api_result<api_request> parse_inference_request(std::string_view body, const protocol_limits& limits);


/// One finished (or streaming) completion, for building responses.
struct api_completion {
  std::string id;  // "cmpl-...", "chatcmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;
  std::string text;
  std::string finish_reason;  // "stop" or "length"
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
};

/// OpenAI's finish_reason for the client protocol's.
const char* api_finish_reason(finish_reason r);

std::string completion_body(const api_completion& c);  // object "text_completion"
std::string chat_body(const api_completion& c);        // object "chat.completion"
std::string inference_body(const api_completion& c);   // {generated_text, finish_reason, usage...}

/// Server-Sent Events, each "data: <json>\n\n". An empty finish_reason is null.
std::string completion_chunk_event(const api_completion& c, std::string_view text, std::string_view finish_reason);
/// A chat.completion.chunk; `role` adds "role":"assistant" to the delta (the first chunk).
std::string chat_chunk_event(const api_completion& c, bool role, std::string_view content,
                             std::string_view finish_reason);
/// A non-empty text chunk event (completion_chunk_event / chat_chunk_event without role or finish reason)
/// as prefix + JSON string of the text + suffix: built once per request, so a chunk costs one
/// string escape instead of a JSON document.
struct chunk_template {
  std::string prefix;
  std::string suffix;
  std::string event(std::string_view text) const;
};
chunk_template make_chunk_template(const api_completion& c, bool chat);

/// The usage-only chunk sent last when stream_options.include_usage is set (choices empty).
std::string usage_chunk_event(const api_completion& c, bool chat);
std::string error_event(const api_error& e);
inline constexpr std::string_view done_event = "data: [DONE]\n\n";

/// GET /v1/models for one served model.
std::string models_body(const std::string& model_id, int64_t created);

/// JSON text of a string value (quotes and escapes; invalid UTF-8 replaced).
std::string json_string(std::string_view s);

}  // namespace troupe::transport
