#include "actors/request_check.hpp"

#include <fmt/format.h>

#include "engine/sampling.hpp"

namespace troupe::actors {

namespace {
std::unexpected<request_refusal> refuse(serve_errc code, std::string message) {
  return std::unexpected(request_refusal{code, std::move(message)});
}
}  // namespace

std::expected<void, request_refusal> check_request(serve_request& r, const request_rules& rules) {
  if (r.max_tokens < 0 || (rules.max_new_tokens > 0 && r.max_tokens > rules.max_new_tokens)) {
    return refuse(serve_errc::invalid_request,
                  fmt::format("max_tokens {} is outside [0, {}]", r.max_tokens, rules.max_new_tokens));
  }
  if (auto bad = engine::validate(r.sampling); !bad.empty()) return refuse(serve_errc::invalid_request, bad);
  if (!r.prompt.empty() && !r.prompt_tokens.empty()) {
    return refuse(serve_errc::invalid_request, "give either prompt text or prompt tokens, not both");
  }
  for (const std::string& s : r.stop) {
    if (s.empty()) return refuse(serve_errc::invalid_request, "empty stop string");
  }
  if (r.prompt.empty() && r.prompt_tokens.empty()) return refuse(serve_errc::invalid_request, "the prompt is empty");
  if (!r.prompt.empty() && rules.tokenizer != nullptr) {
    // Refused by its length alone, before any tokenizing.
    if (rules.max_prompt_bytes > 0 && r.prompt.size() > rules.max_prompt_bytes) {
      return refuse(serve_errc::too_long,
                    fmt::format("a prompt of {} bytes cannot fit the limit of {} tokens (at most {} bytes)",
                                r.prompt.size(), rules.max_prompt_tokens, rules.max_prompt_bytes));
    }
    r.prompt_tokens = rules.tokenizer->encode(r.prompt, true);
    r.prompt.clear();
  }
  for (int32_t t : r.prompt_tokens) {
    if (t < 0 || (rules.vocab_size > 0 && t >= rules.vocab_size)) {
      return refuse(serve_errc::invalid_request, fmt::format("token id {} is outside the vocabulary", t));
    }
  }
  if (rules.max_prompt_tokens > 0 && r.prompt_tokens.size() > rules.max_prompt_tokens) {
    return refuse(serve_errc::too_long, fmt::format("a prompt of {} tokens does not fit the context of {}",
                                                    r.prompt_tokens.size(), rules.max_prompt_tokens + 1));
  }
  return {};
}

size_t max_prompt_bytes(const engine::tokenizer& tokenizer, size_t max_prompt_tokens) {
  return max_prompt_tokens > 0 ? tokenizer.max_piece_bytes() * max_prompt_tokens : 0;
}

}  // namespace troupe::actors
