#pragma once
// Token sampling: greedy, temperature, top-k, top-p, repetition penalty. Randomness is
// counter-based: the draw for the i-th generated token depends only on (seed, i), so a request
// replayed after a failure, or run in any batch, yields the same text.
#include <cstdint>
#include <span>
#include <string>

namespace troupe::engine {

struct sampling_params {
  float temperature = 0.0f;         // <= 0: greedy (argmax)
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float repetition_penalty = 1.0f;  // 1: off; applied to every token in `history`
  uint64_t seed = 0;
};

/// Empty when valid, else a message naming the bad field.
std::string validate(const sampling_params& p);

/// Uniform float in [0, 1) for draw `counter` of stream `seed` (SplitMix64-based).
float counter_uniform(uint64_t seed, uint64_t counter);

/// Picks the next token. `logits` is modified (penalty, temperature). `step` is the index of the
/// token being generated (0 for the first new token). `history`: the sequence's tokens so far
/// (prompt + generated), the set the repetition penalty applies to.
int32_t sample(std::span<float> logits, const sampling_params& p, uint64_t step,
               std::span<const int32_t> history);

/// The two largest logits and their ids (ties: the lower id first, as argmax picks it), for
/// traces that compare runs step by step. Needs at least two logits.
struct top2_logits {
  int32_t id[2];
  float logit[2];
};
top2_logits top2(std::span<const float> logits);

}  // namespace troupe::engine
