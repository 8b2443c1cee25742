// load_tokenizer (which format a model's tokenizer is in) and the streaming, UTF-8 safe
// incremental_decoder. The formats live in tokenizer_llama2c.cpp (llama2.c .bin),
// tokenizer_spm.cpp (GGUF vocab) and tokenizer_hf.cpp (tokenizer.json BPE).
#include "engine/tokenizer.hpp"

#include <cstring>
#include <fstream>

#include "engine/tokenizer_formats.hpp"

namespace troupe::engine {

namespace tokenizer_detail {

std::optional<uint8_t> parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(piece[3]);
  const int lo = hex(piece[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

std::string byte_piece(uint8_t b) { return fmt::format("<0x{:02X}>", b); }

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  if (from.empty()) return std::string(s);
  out.reserve(s.size());
  size_t pos = 0;
  for (;;) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

}  // namespace tokenizer_detail

namespace {

enum class file_kind { missing, directory, hf_json, gguf, other };

file_kind sniff(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return file_kind::directory;
  if (!std::filesystem::exists(path, ec)) return file_kind::missing;
  if (path.extension() == ".json") return file_kind::hf_json;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return file_kind::gguf;
  return file_kind::other;
}

result<std::unique_ptr<tokenizer>> load_from_directory(const std::filesystem::path& dir) {
  const auto json = dir / "tokenizer.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(json, ec)) {
    return fail(errc::io_error, "tokenizer: {}: no tokenizer.json in the model directory",
                dir.string());
  }
  return load_hf_tokenizer(json);
}

/// An explicit tokenizer file: tokenizer.json (or a directory holding one), a GGUF file's
/// vocabulary, else a llama2.c tokenizer .bin.
result<std::unique_ptr<tokenizer>> load_tokenizer_file(const std::filesystem::path& path) {
  switch (sniff(path)) {
    case file_kind::missing:
      return fail(errc::io_error, "tokenizer: {}: no such file", path.string());
    case file_kind::directory: return load_from_directory(path);
    case file_kind::hf_json: return load_hf_tokenizer(path);
    case file_kind::gguf: return load_gguf_tokenizer(path);
    case file_kind::other: return load_llama2c_tokenizer(path);
  }
  return fail(errc::unsupported, "tokenizer: {}: unknown file kind", path.string());
}

}  // namespace

result<std::unique_ptr<tokenizer>> load_tokenizer(const std::filesystem::path& model_path,
                                                  const std::filesystem::path& tokenizer_path) {
  if (!tokenizer_path.empty()) return load_tokenizer_file(tokenizer_path);
  switch (sniff(model_path)) {
    case file_kind::missing:
      return fail(errc::io_error, "tokenizer: {}: model path does not exist", model_path.string());
    case file_kind::directory: return load_from_directory(model_path);
    case file_kind::hf_json: return load_hf_tokenizer(model_path);
    case file_kind::gguf: return load_gguf_tokenizer(model_path);
    case file_kind::other: break;
  }
  // A single .safetensors file: its directory's tokenizer.json.
  if (model_path.extension() == ".safetensors") {
    return load_from_directory(model_path.has_parent_path() ? model_path.parent_path() : ".");
  }
  return fail(errc::invalid_argument, "tokenizer: {}: llama2.c checkpoint needs --tokenizer",
              model_path.string());
}

result<void> check_tokenizer_fits(const tokenizer& tok, int model_vocab_size, const std::filesystem::path& source) {
  if (tok.vocab_size() == model_vocab_size) return {};
  return fail(errc::invalid_argument,
              "tokenizer: {}: {} tokens, but the model's vocabulary has {}: not this model's tokenizer (or a "
              "truncated file)",
              source.string(), tok.vocab_size(), model_vocab_size);
}

// ---- incremental_decoder ------------------------------------------------------------------

namespace {

constexpr std::string_view replacement_char = "\xef\xbf\xbd";  // U+FFFD

/// Moves the complete UTF-8 characters at the front of `pending` to the result; malformed
/// sequences become U+FFFD (one per maximal invalid subpart, as the Unicode standard
/// recommends). An incomplete sequence at the end stays in `pending` unless `final`, when it
/// also becomes U+FFFD.
std::string take_complete(std::string& pending, bool final) {
  std::string out;
  out.reserve(pending.size());
  const auto* s = reinterpret_cast<const uint8_t*>(pending.data());
  const size_t n = pending.size();
  size_t i = 0;
  while (i < n) {
    const uint8_t b = s[i];
    if (b < 0x80) {
      out.push_back(static_cast<char>(b));
      ++i;
      continue;
    }
    size_t need = 0;  // continuation bytes after the lead
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (b >= 0xC2 && b <= 0xDF) {
      need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      need = 2;
      if (b == 0xE0) lo = 0xA0;   // no overlong forms
      if (b == 0xED) hi = 0x9F;   // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      need = 3;
      if (b == 0xF0) lo = 0x90;   // no overlong forms
      if (b == 0xF4) hi = 0x8F;   // nothing above U+10FFFF
    } else {
      out.append(replacement_char);  // stray continuation byte or invalid lead
      ++i;
      continue;
    }
    size_t k = 1;
    bool bad = false;
    for (; k <= need; ++k) {
      if (i + k >= n) break;  // ran out: incomplete
      const uint8_t c = s[i + k];
      const uint8_t min = k == 1 ? lo : 0x80;
      const uint8_t max = k == 1 ? hi : 0xBF;
      if (c < min || c > max) {
        bad = true;
        break;
      }
    }
    if (bad) {  // [i, i + k) is a maximal invalid subpart
      out.append(replacement_char);
      i += k;
      continue;
    }
    if (k <= need) {  // incomplete tail
      if (!final) break;
      out.append(replacement_char);
      i = n;
      break;
    }
    out.append(pending, i, need + 1);
    i += need + 1;
  }
  pending.erase(0, i);
  return out;
}

}  // namespace

std::string incremental_decoder::push(int32_t id) {
  pending_ += tok_.decode_piece(prev_, id);
  prev_ = id;
  return take_complete(pending_, false);
}

std::string incremental_decoder::flush() { return take_complete(pending_, true); }

}  // namespace troupe::engine
