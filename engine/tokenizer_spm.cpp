// GGUF "llama" vocabularies, encoded as llama.cpp's SPM tokenizer does: repeatedly merge the
// adjacent pair whose concatenation is a piece with the highest score (ties: leftmost). The
// llama2.c tokenizer, which merges the same way, is in tokenizer_llama2c.cpp.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <queue>

#include "engine/gguf.hpp"
#include "engine/tokenizer_formats.hpp"

namespace troupe::engine {

using tokenizer_detail::find_piece;
using tokenizer_detail::parse_byte_piece;
using tokenizer_detail::piece_index;
using tokenizer_detail::space_marker;

namespace {

// ---- GGUF (llama.cpp SPM) -----------------------------------------------------------------

class spm_tokenizer final : public tokenizer {
 public:
  explicit spm_tokenizer(spm_vocab v) : v_(std::move(v)) {
    const int32_t n = int32_t(v_.tokens.size());
    for (int32_t id = 0; id < n; ++id) index_[v_.tokens[id]] = id;  // later ids win, as in llama.cpp
    for (int b = 0; b < 256; ++b) {
      int32_t id = find_piece(index_, tokenizer_detail::byte_piece(uint8_t(b)));
      if (id < 0) id = find_piece(index_, std::string(1, char(b)));
      byte_ids_[b] = id;
    }
    for (int32_t id = 0; id < n; ++id) {
      if (v_.types[id] == spm_vocab::user_defined && !v_.tokens[id].empty()) {
        user_defined_.push_back(id);
      }
    }
    std::stable_sort(user_defined_.begin(), user_defined_.end(), [&](int32_t a, int32_t b) {
      return v_.tokens[a].size() > v_.tokens[b].size();
    });
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 2);
    if (add_bos && v_.add_bos && v_.bos_id >= 0) ids.push_back(v_.bos_id);
    if (text.empty()) return ids;
    // User-defined tokens are cut out of the text first (longest first); the raw fragments in
    // between are tokenized on their own, with a space prefix at the start and after a token.
    struct fragment {
      int32_t token;  // -1: raw text
      std::string_view text;
    };
    std::vector<fragment> fragments{{-1, text}};
    for (const int32_t special : user_defined_) {
      const std::string_view needle = v_.tokens[special];
      std::vector<fragment> split;
      for (const fragment& f : fragments) {
        if (f.token >= 0) {
          split.push_back(f);
          continue;
        }
        size_t pos = 0;
        for (size_t hit; (hit = f.text.find(needle, pos)) != std::string_view::npos;) {
          if (hit > pos) split.push_back({-1, f.text.substr(pos, hit - pos)});
          split.push_back({special, needle});
          pos = hit + needle.size();
        }
        if (pos < f.text.size()) split.push_back({-1, f.text.substr(pos)});
      }
      fragments = std::move(split);
    }
    bool prev_special = true;
    for (const fragment& f : fragments) {
      if (f.token >= 0) {
        ids.push_back(f.token);
        prev_special = true;
        continue;
      }
      std::string escaped;
      if (v_.add_space_prefix && prev_special) escaped.assign(space_marker);
      escaped += tokenizer_detail::replace_all(f.text, " ", space_marker);
      tokenize_fragment(escaped, ids);
      prev_special = false;
    }
    return ids;
  }

  std::string decode_piece(int32_t prev, int32_t id) const override {
    if (id < 0 || id >= int32_t(v_.tokens.size())) return {};
    const std::string& text = v_.tokens[id];
    switch (v_.types[id]) {
      case spm_vocab::normal: {
        std::string out = tokenizer_detail::replace_all(text, space_marker, " ");
        if (prev == v_.bos_id && v_.add_space_prefix && out.starts_with(' ')) out.erase(0, 1);
        return out;
      }
      case spm_vocab::user_defined: return text;
      case spm_vocab::byte: {
        const auto b = parse_byte_piece(text);
        return b ? std::string(1, char(*b)) : std::string();
      }
      default: return {};  // control, unknown, unused, undefined: nothing, as llama.cpp
    }
  }

  std::string token_text(int32_t id) const override {
    return id >= 0 && id < int32_t(v_.tokens.size()) ? v_.tokens[id] : std::string();
  }
  int vocab_size() const override { return int(v_.tokens.size()); }
  int32_t bos_id() const override { return v_.bos_id; }
  int32_t eos_id() const override { return v_.eos_id; }

 private:
  /// llama.cpp llm_tokenizer_spm_session::tokenize: UTF-8 characters, merged by bigram score
  /// (ties: leftmost), then each symbol's piece, or its bytes' tokens.
  void tokenize_fragment(std::string_view text, std::vector<int32_t>& out) const {
    struct symbol {
      uint32_t offset, n;  // bytes of text; n == 0 once merged into its left neighbour
      int32_t prev, next;
    };
    std::vector<symbol> symbols;
    symbols.reserve(text.size());
    for (size_t offs = 0; offs < text.size();) {
      const size_t len = std::min(tokenizer_detail::utf8_len(uint8_t(text[offs])), text.size() - offs);
      const int32_t i = int32_t(symbols.size());
      symbols.push_back({uint32_t(offs), uint32_t(len), i - 1, -1});
      offs += len;
    }
    for (size_t i = 0; i + 1 < symbols.size(); ++i) symbols[i].next = int32_t(i + 1);

    struct bigram {
      float score;
      int32_t left, right;
      uint32_t size;
    };
    auto worse = [](const bigram& a, const bigram& b) {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<bigram, std::vector<bigram>, decltype(worse)> queue(worse);
    auto try_add = [&](int32_t left, int32_t right) {
      if (left < 0 || right < 0) return;
      const uint32_t size = symbols[left].n + symbols[right].n;
      const int32_t id = find_piece(index_, text.substr(symbols[left].offset, size));
      if (id < 0) return;
      queue.push({v_.scores[id], left, right, size});
    };
    for (size_t i = 1; i < symbols.size(); ++i) try_add(int32_t(i - 1), int32_t(i));

    while (!queue.empty()) {
      const bigram b = queue.top();
      queue.pop();
      symbol& left = symbols[b.left];
      symbol& right = symbols[b.right];
      // Symbols only grow, so unchanged lengths mean the pair is still as it was queued.
      if (left.n == 0 || right.n == 0 || left.n + right.n != b.size) continue;
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = b.left;
      try_add(left.prev, b.left);
      try_add(b.left, left.next);
    }

    for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
      const std::string_view piece = text.substr(symbols[i].offset, symbols[i].n);
      const int32_t id = find_piece(index_, piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // Only single characters can miss (merged symbols are pieces): their bytes' tokens, or
      // one <unk> when the vocabulary cannot spell a byte.
      const bool spellable =
          std::ranges::all_of(piece, [&](char c) { return byte_ids_[uint8_t(c)] >= 0; });
      if (!spellable) {
        out.push_back(v_.unk_id);
        continue;
      }
      for (const char c : piece) out.push_back(byte_ids_[uint8_t(c)]);
    }
  }

  spm_vocab v_;
  piece_index index_;
  std::array<int32_t, 256> byte_ids_{};
  std::vector<int32_t> user_defined_;  // longest text first
};

bool read_bool(const gguf::file& f, const std::string& key, bool fallback) {
  const gguf::value* v = f.find(key);
  if (v == nullptr) return fallback;
  if (const bool* b = std::get_if<bool>(&v->data)) return *b;
  if (const uint64_t* u = std::get_if<uint64_t>(&v->data)) return *u != 0;
  if (const int64_t* i = std::get_if<int64_t>(&v->data)) return *i != 0;
  return fallback;
}

}  // namespace

std::unique_ptr<tokenizer> make_spm_tokenizer(spm_vocab vocab) {
  TROUPE_ASSERT(vocab.scores.size() == vocab.tokens.size());
  TROUPE_ASSERT(vocab.types.size() == vocab.tokens.size());
  for (float& s : vocab.scores) {
    if (std::isnan(s)) s = -std::numeric_limits<float>::infinity();  // keeps the queue's order strict
  }
  return std::make_unique<spm_tokenizer>(std::move(vocab));
}

result<std::unique_ptr<tokenizer>> load_gguf_tokenizer(const std::filesystem::path& path) {
  auto f = gguf::file::open(path);
  if (!f) {
    const std::string& why = f.error().message;  // the reader's message may already name the file
    if (why.find(path.string()) != std::string::npos) return fail(f.error().code, "tokenizer: {}", why);
    return fail(f.error().code, "tokenizer: {}: {}", path.string(), why);
  }
  auto bad = [&](const std::string& what) {
    return fail(errc::bad_format, "tokenizer: {}: {}", path.string(), what);
  };

  auto model = f->get_string("tokenizer.ggml.model");
  if (!model) return bad("no vocabulary: " + model.error().message);
  if (*model != "llama") {
    return fail(errc::unsupported, "tokenizer: {}: tokenizer.ggml.model \"{}\" (only \"llama\")",
                path.string(), *model);
  }
  spm_vocab v;
  auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  if (!tokens) return bad(tokens.error().message);
  v.tokens = std::move(*tokens);
  const size_t n = v.tokens.size();
  if (n == 0 || n > size_t(INT32_MAX)) return bad(fmt::format("{} tokens", n));

  // Scores and token types are optional (0 and "normal" then), as llama.cpp reads them.
  if (f->find("tokenizer.ggml.scores") != nullptr) {
    auto scores = f->get_float_array("tokenizer.ggml.scores");
    if (!scores) return bad(scores.error().message);
    if (scores->size() != n) return bad(fmt::format("{} scores for {} tokens", scores->size(), n));
    v.scores = std::move(*scores);
  } else {
    v.scores.assign(n, 0.0f);
  }
  if (f->find("tokenizer.ggml.token_type") != nullptr) {
    auto types = f->get_int_array("tokenizer.ggml.token_type");
    if (!types) return bad(types.error().message);
    if (types->size() != n) return bad(fmt::format("{} token types for {} tokens", types->size(), n));
    v.types.reserve(n);
    for (const int64_t t : *types) {
      v.types.push_back(t >= 0 && t <= spm_vocab::byte ? int32_t(t) : spm_vocab::undefined);
    }
  } else {
    v.types.assign(n, spm_vocab::normal);
  }

  // Special ids: llama.cpp's SPM defaults (unk 0, BOS 1, EOS 2) unless the file names one
  // inside the vocabulary.
  for (auto [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", &v.bos_id},
                         std::pair{"tokenizer.ggml.eos_token_id", &v.eos_id},
                         std::pair{"tokenizer.ggml.unknown_token_id", &v.unk_id}}) {
    if (f->find(key) == nullptr) continue;
    auto u = f->get_uint(key);
    if (!u) return bad(u.error().message);
    if (*u < n) *id = int32_t(*u);
  }
  for (int32_t* id : {&v.bos_id, &v.eos_id, &v.unk_id}) {
    if (*id >= int32_t(n)) *id = -1;
  }
  if (v.unk_id < 0) v.unk_id = 0;
  v.add_space_prefix = read_bool(*f, "tokenizer.ggml.add_space_prefix", true);
  v.add_bos = read_bool(*f, "tokenizer.ggml.add_bos_token", true);
  return make_spm_tokenizer(std::move(v));
}

}  // namespace troupe::engine
