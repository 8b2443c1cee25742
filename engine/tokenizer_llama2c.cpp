// llama2.c tokenizer .bin files (karpathy/llama2.c run.c): the file format, checked field by
// field, and the tokenizer, encoded exactly as run.c encode() does: repeatedly merge the adjacent
// pair whose concatenation is a piece with the highest score (ties: leftmost). run.c rescans the
// whole sequence per merge (quadratic); here a priority queue of candidate pairs over a linked
// list of symbols gives the same merges in n log n.
#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
#include <queue>

#include "engine/tokenizer_formats.hpp"

namespace troupe::engine {

using tokenizer_detail::find_piece;
using tokenizer_detail::parse_byte_piece;
using tokenizer_detail::piece_index;

namespace {

class llama2c_tokenizer final : public tokenizer {
 public:
  static constexpr int32_t bos = 1;
  static constexpr int32_t eos = 2;

  llama2c_tokenizer(std::vector<std::string> pieces, std::vector<float> scores)
      : pieces_(std::move(pieces)), scores_(std::move(scores)) {
    for (int32_t id = 0; id < int32_t(pieces_.size()); ++id) index_.emplace(pieces_[id], id);
    for (int b = 0; b < 256; ++b) {
      // run.c uses id = byte + 3, which is right for vocabularies with the 256 byte pieces at
      // 3..258 (every Llama 2 sentencepiece export); elsewhere the "<0xNN>" piece, else <unk>.
      const std::string piece = tokenizer_detail::byte_piece(uint8_t(b));
      const int32_t at = b + 3;
      if (at < int32_t(pieces_.size()) && pieces_[at] == piece) {
        byte_ids_[b] = at;
      } else {
        const int32_t id = find_piece(index_, piece);
        byte_ids_[b] = id >= 0 ? id : 0;
      }
    }
  }

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 2);
    if (add_bos) ids.push_back(bos);
    // The dummy prefix: the piece for " " when the text is not empty.
    if (!text.empty()) append_piece_or_bytes(" ", ids);
    // One piece per UTF-8 codepoint (a lead byte and up to three continuation bytes), else
    // its bytes' tokens.
    std::string cp;
    for (size_t i = 0; i < text.size(); ++i) {
      if ((uint8_t(text[i]) & 0xC0) != 0x80) cp.clear();
      cp.push_back(text[i]);
      const bool next_continues = i + 1 < text.size() && (uint8_t(text[i + 1]) & 0xC0) == 0x80;
      if (next_continues && cp.size() < 4) continue;
      append_piece_or_bytes(cp, ids);
      cp.clear();
    }
    merge(ids);
    return ids;
  }

  std::string decode_piece(int32_t prev, int32_t id) const override {
    if (id < 0 || id >= int32_t(pieces_.size()) || id == bos || id == eos) return {};
    std::string_view piece = pieces_[id];
    if (prev == bos && piece.starts_with(' ')) piece.remove_prefix(1);
    if (auto b = parse_byte_piece(piece)) return std::string(1, char(*b));
    return std::string(piece);
  }

  std::string token_text(int32_t id) const override {
    return id >= 0 && id < int32_t(pieces_.size()) ? pieces_[id] : std::string();
  }
  int vocab_size() const override { return int(pieces_.size()); }
  int32_t bos_id() const override { return bos; }
  int32_t eos_id() const override { return eos; }

 private:
  void append_piece_or_bytes(std::string_view s, std::vector<int32_t>& ids) const {
    const int32_t id = find_piece(index_, s);
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    for (const char c : s) ids.push_back(byte_ids_[uint8_t(c)]);
  }

  /// run.c's merge loop: while some adjacent pair concatenates to a piece, replace the pair with
  /// the highest-scoring such piece (the first pair on ties; scores must beat -1e10).
  void merge(std::vector<int32_t>& ids) const {
    const int32_t n = int32_t(ids.size());
    if (n < 2) return;
    struct candidate {
      float score;
      int32_t left;  // position of the left symbol (positions keep their order)
      int32_t left_id, right_id, merged_id;
    };
    auto worse = [](const candidate& a, const candidate& b) {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    };
    std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> queue(worse);
    std::vector<int32_t> next(n), prev(n);
    for (int32_t i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    std::string joined;
    auto consider = [&](int32_t left) {
      if (left < 0 || next[left] < 0) return;
      const int32_t a = ids[left], b = ids[next[left]];
      joined.assign(pieces_[a]);
      joined.append(pieces_[b]);
      const int32_t id = find_piece(index_, joined);
      if (id < 0 || !(scores_[id] > -1e10f)) return;
      queue.push({scores_[id], left, a, b, id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!queue.empty()) {
      const candidate c = queue.top();
      queue.pop();
      const int32_t right = next[c.left];
      // Stale when the left symbol was absorbed (its next link was cut) or either side changed.
      if (right < 0 || ids[c.left] != c.left_id || ids[right] != c.right_id) continue;
      ids[c.left] = c.merged_id;
      ids[right] = -1;
      next[c.left] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.left;
      next[right] = -1;
      consider(prev[c.left]);
      consider(c.left);
    }
    std::erase(ids, -1);
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  piece_index index_;
  std::array<int32_t, 256> byte_ids_{};
};

}  // namespace

result<std::unique_ptr<tokenizer>> load_llama2c_tokenizer(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "tokenizer: {}: cannot open", path.string());
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) return fail(errc::io_error, "tokenizer: {}: read failed", path.string());

  size_t pos = 0;
  auto read_i32 = [&](int32_t& v) {
    std::memcpy(&v, bytes.data() + pos, 4);
    pos += 4;
  };
  if (bytes.size() < 4) {
    return fail(errc::truncated, "tokenizer: {}: {} bytes, too short for a llama2.c tokenizer",
                path.string(), bytes.size());
  }
  int32_t max_token_length = 0;
  read_i32(max_token_length);
  if (max_token_length <= 0) {
    return fail(errc::bad_format, "tokenizer: {}: max_token_length {} is not positive",
                path.string(), max_token_length);
  }
  std::vector<std::string> pieces;
  std::vector<float> scores;
  while (pos < bytes.size()) {
    const size_t id = pieces.size();
    if (bytes.size() - pos < 8) {
      return fail(errc::truncated, "tokenizer: {}: token {} header at byte {} runs past the end",
                  path.string(), id, pos);
    }
    float score = 0;
    std::memcpy(&score, bytes.data() + pos, 4);
    pos += 4;
    int32_t len = 0;
    read_i32(len);
    if (len < 0) {
      return fail(errc::bad_format, "tokenizer: {}: token {} has negative length {}",
                  path.string(), id, len);
    }
    if (size_t(len) > bytes.size() - pos) {
      return fail(errc::truncated, "tokenizer: {}: token {} ({} bytes at byte {}) runs past the end",
                  path.string(), id, len, pos);
    }
    if (len > max_token_length) {
      return fail(errc::bad_format, "tokenizer: {}: token {} has length {}, more than the file's max_token_length {}",
                  path.string(), id, len, max_token_length);
    }
    pieces.emplace_back(bytes.data() + pos, size_t(len));
    scores.push_back(score);
    pos += size_t(len);
  }
  if (pieces.size() <= size_t(llama2c_tokenizer::eos)) {
    return fail(errc::bad_format, "tokenizer: {}: {} tokens; need at least <unk>, BOS and EOS",
                path.string(), pieces.size());
  }
  return std::make_unique<llama2c_tokenizer>(std::move(pieces), std::move(scores));
}

}  // namespace troupe::engine
