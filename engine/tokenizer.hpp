#pragma once
// Tokenizers: SentencePiece-style score merging (llama2.c tokenizer .bin, GGUF "llama" vocab,
// byte fallback <0xNN>) and Hugging Face tokenizer.json BPE (merge rank), plus an incremental,
// UTF-8 safe detokenizer for streaming.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.hpp"

namespace troupe::engine {

class tokenizer {
 public:
  virtual ~tokenizer() = default;

  /// Token ids for `text`; BOS first when add_bos. The SentencePiece dummy prefix (a leading
  /// space) is added as the format's own rule says.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos) const = 0;

  /// The bytes token `id` adds to the output when it follows token `prev` (the leading space
  /// of the first piece after BOS is dropped; byte tokens give one raw byte, which may be part
  /// of a UTF-8 sequence; control tokens such as BOS/EOS give nothing).
  virtual std::string decode_piece(int32_t prev, int32_t id) const = 0;

  /// The token's vocabulary string as stored (for debugging and `model info`).
  virtual std::string token_text(int32_t id) const = 0;

  /// The most bytes of text one token can stand for (its longest piece, decoded or as stored),
  /// at least 1: a text of n bytes needs more than max_tokens tokens when
  /// n > max_piece_bytes() * max_tokens, which a server can tell before encoding. Scans the
  /// vocabulary: callers keep the value.
  size_t max_piece_bytes() const {
    size_t n = 1;
    for (int32_t id = 0; id < vocab_size(); ++id) {
      n = std::max({n, decode_piece(-1, id).size(), token_text(id).size()});
    }
    return n;
  }

  virtual int vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
};

/// Loads the tokenizer that belongs to a model: the GGUF's own vocabulary, a HF directory's
/// tokenizer.json, or (for llama2.c checkpoints) the file given as tokenizer_path. An explicit
/// tokenizer_path (a llama2.c tokenizer .bin, a tokenizer.json or a .gguf) always wins.
result<std::unique_ptr<tokenizer>> load_tokenizer(const std::filesystem::path& model_path,
                                                  const std::filesystem::path& tokenizer_path = {});

/// A tokenizer fits a model when both have the same vocabulary size: every id the model samples is
/// one the tokenizer can show, and every id the tokenizer makes is one the model has a row for.
/// The error names `source` (the tokenizer's file, or the model's when it carries its own) and
/// both sizes: a truncated tokenizer file or another model's tokenizer ends up here.
result<void> check_tokenizer_fits(const tokenizer& tok, int model_vocab_size, const std::filesystem::path& source);

/// Turns a stream of token ids into text, emitting only complete UTF-8 characters.
class incremental_decoder {
 public:
  explicit incremental_decoder(const tokenizer& tok, int32_t prev = -1) : tok_(tok), prev_(prev) {}
  /// Text that became complete with this token (may be empty).
  std::string push(int32_t id);
  /// Whatever is still buffered (an incomplete UTF-8 tail is replaced by U+FFFD).
  std::string flush();

 private:
  const tokenizer& tok_;
  int32_t prev_;
  std::string pending_;
};

}  // namespace troupe::engine
