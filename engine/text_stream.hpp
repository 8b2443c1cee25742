#pragma once
// Streaming detokenization with stop strings: turns generated token ids into text that is safe to
// show now. Text that could be the start of a stop string is held back until it is known; when a
// stop string completes, the text before it is released and the stream reports the stop (the stop
// string itself is never shown, as in vLLM and TGI). Used by `troupe generate` and the ROUTER.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/stop_rule.hpp"  // implicit_stop_strings, used with text_stream
#include "engine/tokenizer.hpp"

namespace troupe::engine {

class text_stream {
 public:
  /// prev: the last prompt token (for the leading-space rule after BOS).
  text_stream(const tokenizer& tok, int32_t prev, std::vector<std::string> stop_strings);

  struct output {
    std::string text;      // safe to show now
    bool stopped = false;  // a stop string completed: generation should end here
    size_t stop_index = 0; // when stopped: which of the stop strings (its index as given)
  };
  output push(int32_t id);
  /// End of generation for another reason: releases what was held back.
  std::string finish();

 private:
  incremental_decoder dec_;
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace troupe::engine
