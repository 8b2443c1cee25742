#pragma once
// The reference path every other path must match token for token: one sequence, the whole model,
// in this process. `troupe generate` and the tests run it.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "engine/finish_reason.hpp"
#include "engine/model_weights.hpp"
#include "engine/sampling.hpp"

namespace troupe::engine {

class thread_pool;

struct generate_options {
  int max_new_tokens = 128;
  sampling_params sampling;
  bool stop_at_eos = true;
  std::vector<int32_t> end_ids;  // tokens that end the sequence (stop_rule::end_ids); empty: the model's EOS
  int ctx_size = 0;        // 0: the model's max_seq_len
  int block_size = 16;     // KV cache block size (positions)
  int prefill_chunk = 512; // prompt tokens per forward call
  thread_pool* pool = nullptr;
  // Teacher forcing (traces compared with another engine's): when not empty, the token fed back
  // after step i is forced_tokens[i] whatever was sampled, and generation ends after
  // forced_tokens.size() steps. on_token still sees the sampled tokens.
  std::span<const int32_t> forced_tokens;
  // Called at every step with the logits the step samples from (before penalties), and the token
  // sampled from them.
  std::function<void(std::span<const float> logits, int32_t sampled)> on_logits;
};


struct generate_stats {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  finish_reason finish = finish_reason::length;
};

/// Runs prompt + up to max_new_tokens. on_token is called for each new token (the end token
/// included when one ends the sequence: see stop_at_eos, end_ids); returning false stops generation.
result<generate_stats> generate(const model_weights& model, std::span<const int32_t> prompt,
                                const generate_options& opts,
                                const std::function<bool(int32_t)>& on_token);

}  // namespace troupe::engine
