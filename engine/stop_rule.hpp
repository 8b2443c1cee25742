#pragma once
// The stop rule: which sampled tokens end a sequence, and which end markers a model may spell out
// in ordinary tokens. One definition for every path: `troupe generate` (engine::generate) and the
// server (the SCHEDULER's policy ends a sequence, the last stage ends a run of decode steps, the
// ROUTER hides the marker) all take it from make_stop_rule().
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_config.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::engine {

struct stop_rule {
  /// Token ids that end a sequence when sampled (the model's EOS, the tokenizer's EOS, and
  /// end-of-generation tokens such as <|end_story|>, <|endoftext|>, <|eot_id|>). Never shown.
  std::vector<int32_t> end_ids;
  /// End markers as text ("<|end_story|>", "</s>"): some models spell the marker out with
  /// ordinary tokens before (or instead of) the end token. The text from a marker on is not
  /// shown and the sequence ends there (reason eos).
  std::vector<std::string> end_texts;

  bool ends(int32_t id) const;
};

/// The stop rule of a model with its tokenizer.
stop_rule make_stop_rule(const model_config& model, const tokenizer& tok);

/// The end markers a tokenizer implies on its own: the text of its EOS token when that text is a
/// visible marker such as "<|end_story|>" or "</s>" (never plain words or whitespace).
std::vector<std::string> implicit_stop_strings(const tokenizer& tok);

}  // namespace troupe::engine
