#pragma once
// The tokenizer formats behind load_tokenizer(), one loader per file kind, and what they share:
// a vocabulary index looked up by string_view, "<0xNN>" byte pieces, UTF-8 lengths.
// Internal to engine/ (and its unit tests); everything else uses engine/tokenizer.hpp.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/error.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::engine {

/// llama2.c tokenizer .bin (run.c): int32 max_token_length, then per token float32 score,
/// int32 length, bytes, until the end of the file. BOS = 1, EOS = 2.
result<std::unique_ptr<tokenizer>> load_llama2c_tokenizer(const std::filesystem::path& path);

/// The vocabulary inside a GGUF file (tokenizer.ggml.model "llama", merged by score as
/// llama.cpp's SPM tokenizer does).
result<std::unique_ptr<tokenizer>> load_gguf_tokenizer(const std::filesystem::path& path);

/// A Hugging Face tokenizer.json with a BPE model (merged by rank). tokenizer_config.json and
/// config.json in the same directory name BOS/EOS where the tokenizer.json does not.
result<std::unique_ptr<tokenizer>> load_hf_tokenizer(const std::filesystem::path& path);

/// A SentencePiece vocabulary as a GGUF file stores it (also built directly by tests).
struct spm_vocab {
  enum token_type : int32_t {
    undefined = 0, normal = 1, unknown = 2, control = 3, user_defined = 4, unused = 5, byte = 6,
  };
  std::vector<std::string> tokens;  // U+2581 marks spaces
  std::vector<float> scores;
  std::vector<int32_t> types;
  int32_t bos_id = 1;
  int32_t eos_id = 2;
  int32_t unk_id = 0;
  bool add_space_prefix = true;
  bool add_bos = true;
};

/// The llama.cpp SPM tokenizer over `vocab` (sizes already checked: scores and types match tokens).
std::unique_ptr<tokenizer> make_spm_tokenizer(spm_vocab vocab);

namespace tokenizer_detail {

struct string_hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
/// Piece -> id, looked up without building a std::string.
using piece_index = std::unordered_map<std::string, int32_t, string_hash, std::equal_to<>>;

inline int32_t find_piece(const piece_index& index, std::string_view piece) {
  const auto it = index.find(piece);
  return it == index.end() ? -1 : it->second;
}

/// The byte a "<0xNN>" piece stands for (exactly six characters, hex digits in either case).
std::optional<uint8_t> parse_byte_piece(std::string_view piece);
/// "<0xNN>" with upper-case hex digits, as SentencePiece and HF byte fallback spell it.
std::string byte_piece(uint8_t b);

/// Bytes in the UTF-8 sequence starting with `lead` as llama.cpp counts them (1 for a stray
/// continuation byte); callers clamp to the bytes left.
inline size_t utf8_len(uint8_t lead) {
  static constexpr uint8_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return lookup[lead >> 4];
}

/// Replaces every occurrence of `from` in `s` with `to`.
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

inline constexpr std::string_view space_marker = "\xe2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK

}  // namespace tokenizer_detail
}  // namespace troupe::engine
