#pragma once
// The one check of a serve_request, and the one place its prompt text is tokenized. The gateways
// run it on their I/O threads (so a long prompt is tokenized, or refused by its length alone,
// without holding up the ROUTER), and the ROUTER runs it on what reaches it (in-process callers,
// or a gateway without a tokenizer) with the rules it alone knows (the model's vocabulary, the
// server's max_tokens). Wire-format checks (field types, UTF-8, frame limits) stay in transport/.
#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>

#include "actors/messages.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::actors {

/// What a request must satisfy. A zero limit is not checked by this caller.
struct request_rules {
  const engine::tokenizer* tokenizer = nullptr;  // tokenizes prompt text (none: text is kept as it is)
  size_t max_prompt_tokens = 0;  // the context less one
  size_t max_prompt_bytes = 0;   // text longer than this cannot fit max_prompt_tokens (refused untokenized)
  int32_t vocab_size = 0;        // token ids must be below it
  int32_t max_new_tokens = 0;    // largest max_tokens
};

/// Why a request was refused: invalid_request or too_long, and a message for the client.
struct request_refusal {
  serve_errc code = serve_errc::invalid_request;
  std::string message;
};

/// Checks `r` against `rules` and, with a tokenizer, replaces its prompt text by its token ids
/// (BOS first) in r.prompt_tokens.
std::expected<void, request_refusal> check_request(serve_request& r, const request_rules& rules);

/// The most prompt bytes that can fit `max_prompt_tokens`: no token covers more bytes than the
/// tokenizer's longest piece (0: no limit).
size_t max_prompt_bytes(const engine::tokenizer& tokenizer, size_t max_prompt_tokens);

}  // namespace troupe::actors
