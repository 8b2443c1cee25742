#pragma once
// A tokenizer for actor tests: one token per lowercase letter, so prompts and output read as text.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tokenizer.hpp"

namespace troupe::test {

/// Token i >= 3 is the letter 'a' + (i - 3) % 26; 1 is BOS and 2 is EOS (no text). Vocabulary 32.
class letter_tokenizer final : public engine::tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    if (add_bos) ids.push_back(1);
    for (char c : text) ids.push_back(3 + (c - 'a') % 26);
    return ids;
  }
  std::string decode_piece(int32_t, int32_t id) const override {
    return id < 3 ? std::string() : std::string(1, char('a' + (id - 3) % 26));
  }
  std::string token_text(int32_t id) const override { return decode_piece(0, id); }
  int vocab_size() const override { return 32; }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }

  /// The token of a letter.
  static int32_t of(char c) { return 3 + (c - 'a'); }
};

}  // namespace troupe::test
