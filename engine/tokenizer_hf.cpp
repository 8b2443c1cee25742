// Hugging Face tokenizer.json with a BPE model, encoded as the `tokenizers` library does:
// normalize (Prepend / Replace), pre-tokenize (none or Metaspace), then per word split into
// characters (unknown ones: byte fallback tokens, else <unk>, fused) and apply merges by lowest
// rank (ties: leftmost) with a priority queue over a linked list of symbols.
// Components outside that set are refused with an error naming them. Added tokens are not cut
// out of the text (special tokens in a prompt stay text, as llama.cpp does without parse_special).
#include <array>
#include <fstream>
#include <optional>
#include <queue>
#include <sstream>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "engine/tokenizer_formats.hpp"

namespace troupe::engine {

using tokenizer_detail::find_piece;
using tokenizer_detail::parse_byte_piece;
using tokenizer_detail::piece_index;
using tokenizer_detail::replace_all;
using tokenizer_detail::space_marker;
using json = nlohmann::json;

namespace {

// ---- what a tokenizer.json describes ------------------------------------------------------

struct merge_rule {
  int32_t rank;
  int32_t merged_id;
};

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

/// The BPE model plus the added tokens.
struct bpe_model {
  std::vector<std::string> pieces;  // by id; "" where the id is unused
  std::vector<uint8_t> special;     // special added tokens decode to nothing
  piece_index vocab;                // the model's vocabulary (added tokens not included)
  piece_index all_tokens;           // vocabulary + added tokens, to find BOS/EOS by name
  std::unordered_map<uint64_t, merge_rule> merges;
  std::array<int32_t, 256> byte_ids{};  // "<0xNN>" tokens, -1 where missing
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

/// Normalizer, pre-tokenizer and decoder settings.
struct pipeline {
  struct norm_step {
    bool prepend;  // else replace
    std::string pattern, content;
  };
  std::vector<norm_step> normalizers;  // applied in order
  bool metaspace = false;
  std::string ms_replacement{space_marker};
  bool ms_prepend = true;  // prepend_scheme always/first (there is only one split: the text)
  bool ms_split = true;
  std::vector<std::pair<std::string, std::string>> decode_replace;
  bool decode_bytes = false;
  size_t strip_after_bos = 0;  // leading spaces dropped from the piece after BOS
};

struct specials {
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  bool add_bos = true;
};

// ---- the tokenizer ---------------------------------------------------------------------

class hf_bpe_tokenizer final : public tokenizer {
 public:
  hf_bpe_tokenizer(bpe_model m, pipeline p, specials s)
      : m_(std::move(m)), p_(std::move(p)), s_(s) {}

  std::vector<int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() + 2);
    if (add_bos && s_.add_bos && s_.bos_id >= 0) ids.push_back(s_.bos_id);
    std::string s(text);
    for (const pipeline::norm_step& n : p_.normalizers) {
      if (!n.prepend) {
        s = replace_all(s, n.pattern, n.content);
      } else if (!s.empty()) {
        s.insert(0, n.content);
      }
    }
    if (!p_.metaspace) {
      encode_word(s, ids);
      return ids;
    }
    // Metaspace: spaces become the marker, the marker is prepended, and with split each marker
    // starts a new word (SplitDelimiterBehavior::MergedWithNext).
    const std::string& marker = p_.ms_replacement;
    s = replace_all(s, " ", marker);
    if (p_.ms_prepend && !s.empty() && !s.starts_with(marker)) s.insert(0, marker);
    if (!p_.ms_split) {
      encode_word(s, ids);
      return ids;
    }
    const std::string_view all = s;
    size_t start = 0;
    for (size_t hit = all.find(marker, 1); hit != std::string_view::npos;
         hit = all.find(marker, hit + marker.size())) {
      encode_word(all.substr(start, hit - start), ids);
      start = hit;
    }
    encode_word(all.substr(start), ids);
    return ids;
  }

  std::string decode_piece(int32_t prev, int32_t id) const override {
    if (id < 0 || id >= int32_t(m_.pieces.size()) || m_.special[id]) return {};
    std::string out = m_.pieces[id];
    for (const auto& [pattern, content] : p_.decode_replace) out = replace_all(out, pattern, content);
    if (p_.decode_bytes) {
      if (auto b = parse_byte_piece(out)) return std::string(1, char(*b));
    }
    if (prev == s_.bos_id && s_.bos_id >= 0) {
      size_t n = 0;
      while (n < p_.strip_after_bos && n < out.size() && out[n] == ' ') ++n;
      out.erase(0, n);
    }
    return out;
  }

  std::string token_text(int32_t id) const override {
    return id >= 0 && id < int32_t(m_.pieces.size()) ? m_.pieces[id] : std::string();
  }
  int vocab_size() const override { return int(m_.pieces.size()); }
  int32_t bos_id() const override { return s_.bos_id; }
  int32_t eos_id() const override { return s_.eos_id; }

 private:
  const merge_rule* find_merge(int32_t a, int32_t b) const {
    const auto it = m_.merges.find(pair_key(a, b));
    return it == m_.merges.end() ? nullptr : &it->second;
  }

  /// BPE::merge_word: characters to ids (unknown ones: bytes, else <unk>), then merge_all.
  void encode_word(std::string_view w, std::vector<int32_t>& out) const {
    if (w.empty()) return;
    if (m_.ignore_merges) {
      if (const int32_t id = find_piece(m_.vocab, w); id >= 0) {
        out.push_back(id);
        return;
      }
    }
    std::vector<int32_t> ids;
    ids.reserve(w.size());
    int32_t pending_unk = 0;  // unknown characters waiting to be emitted as <unk>
    for (size_t offs = 0; offs < w.size();) {
      const size_t len = std::min(tokenizer_detail::utf8_len(uint8_t(w[offs])), w.size() - offs);
      const std::string_view ch = w.substr(offs, len);
      offs += len;
      if (const int32_t id = find_piece(m_.vocab, ch); id >= 0) {
        for (; pending_unk > 0; --pending_unk) ids.push_back(m_.unk_id);
        ids.push_back(id);
        continue;
      }
      if (m_.byte_fallback &&
          std::ranges::all_of(ch, [&](char c) { return m_.byte_ids[uint8_t(c)] >= 0; })) {
        // As tokenizers does, a pending <unk> is not flushed here (it follows the bytes).
        for (const char c : ch) ids.push_back(m_.byte_ids[uint8_t(c)]);
        continue;
      }
      // Without an unk token the character is dropped, as tokenizers does.
      if (m_.unk_id >= 0) pending_unk = m_.fuse_unk ? 1 : pending_unk + 1;
    }
    for (; pending_unk > 0; --pending_unk) ids.push_back(m_.unk_id);
    merge(ids);
    out.insert(out.end(), ids.begin(), ids.end());
  }

  /// Word::merge_all without dropout: lowest rank first, then lowest position.
  void merge(std::vector<int32_t>& ids) const {
    const int32_t n = int32_t(ids.size());
    if (n < 2) return;
    struct candidate {
      int32_t rank, pos, merged_id;
    };
    auto worse = [](const candidate& a, const candidate& b) {
      return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
    };
    std::priority_queue<candidate, std::vector<candidate>, decltype(worse)> queue(worse);
    auto consider = [&](int32_t left, int32_t right) {
      if (const merge_rule* m = find_merge(ids[left], ids[right])) {
        queue.push({m->rank, left, m->merged_id});
      }
    };
    std::vector<int32_t> next(n), prev(n);
    for (int32_t i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
      if (i + 1 < n) consider(i, i + 1);
    }
    while (!queue.empty()) {
      const candidate c = queue.top();
      queue.pop();
      const int32_t right = next[c.pos];
      if (ids[c.pos] < 0 || right < 0) continue;  // absorbed, or last
      // Stale unless the pair there now merges into the same token (tokenizers' own check).
      const merge_rule* now = find_merge(ids[c.pos], ids[right]);
      if (now == nullptr || now->merged_id != c.merged_id) continue;
      ids[c.pos] = c.merged_id;
      ids[right] = -1;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      if (prev[c.pos] >= 0) consider(prev[c.pos], c.pos);
      if (next[c.pos] >= 0) consider(c.pos, next[c.pos]);
    }
    std::erase(ids, -1);
  }

  bpe_model m_;
  pipeline p_;
  specials s_;
};

// ---- reading tokenizer.json (no exceptions: every access is checked) -------------------------

const json* member(const json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::string> string_member(const json& j, const char* key) {
  const json* m = member(j, key);
  if (m == nullptr || !m->is_string()) return std::nullopt;
  return m->get<std::string>();
}

std::optional<bool> bool_member(const json& j, const char* key) {
  const json* m = member(j, key);
  if (m == nullptr || !m->is_boolean()) return std::nullopt;
  return m->get<bool>();
}

/// A non-negative int32 id, or nullopt.
std::optional<int32_t> id_value(const json* j) {
  if (j == nullptr || !j->is_number_integer()) return std::nullopt;
  const int64_t v = j->get<int64_t>();
  if (v < 0 || v >= INT32_MAX) return std::nullopt;
  return int32_t(v);
}

std::string type_of(const json& j) { return string_member(j, "type").value_or("?"); }

/// The members of a "Sequence" component (under `list_key`), or the component itself.
result<std::vector<const json*>> components(const json& j, const char* list_key) {
  if (type_of(j) != "Sequence") return std::vector<const json*>{&j};
  const json* list = member(j, list_key);
  if (list == nullptr || !list->is_array()) {
    return fail(errc::bad_format, "Sequence without \"{}\"", list_key);
  }
  std::vector<const json*> out;
  for (const json& e : *list) out.push_back(&e);
  return out;
}

/// A JSON file, or nullopt when it is missing and not required; a parse failure is an error.
result<std::optional<json>> read_json(const std::filesystem::path& path, bool required) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!required) return std::optional<json>();
    return fail(errc::io_error, "tokenizer: {}: cannot open", path.string());
  }
  std::ostringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return fail(errc::bad_format, "tokenizer: {}: not valid JSON", path.string());
  }
  return std::optional<json>(std::move(j));
}

std::unexpected<error> unsupported(std::string what) {
  return std::unexpected<error>(error{errc::unsupported, std::move(what)});
}
std::unexpected<error> bad(std::string what) {
  return std::unexpected<error>(error{errc::bad_format, std::move(what)});
}

result<bpe_model> read_model(const json& root) {
  const json* model = member(root, "model");
  if (model == nullptr || !model->is_object()) return bad("no \"model\"");
  const std::string type =
      string_member(*model, "type").value_or(member(*model, "merges") != nullptr ? "BPE" : "?");
  if (type != "BPE") return unsupported(fmt::format("model type \"{}\" (only BPE)", type));
  if (!string_member(*model, "continuing_subword_prefix").value_or("").empty()) {
    return unsupported("BPE continuing_subword_prefix");
  }
  if (!string_member(*model, "end_of_word_suffix").value_or("").empty()) {
    return unsupported("BPE end_of_word_suffix");
  }
  const json* dropout = member(*model, "dropout");
  if (dropout != nullptr && dropout->is_number() && dropout->get<double>() > 0) {
    return unsupported("BPE dropout");
  }

  // Vocabulary and added tokens (which may extend past it).
  const json* vocab = member(*model, "vocab");
  if (vocab == nullptr || !vocab->is_object()) return bad("model.vocab is not an object");
  struct added {
    int32_t id;
    std::string content;
    bool special;
  };
  std::vector<added> added_tokens;
  if (const json* a = member(root, "added_tokens")) {
    if (!a->is_array()) return bad("added_tokens is not an array");
    for (const json& e : *a) {
      const auto id = id_value(member(e, "id"));
      auto content = string_member(e, "content");
      if (!id || !content) return bad("added_tokens entry without id/content");
      added_tokens.push_back({*id, std::move(*content), bool_member(e, "special").value_or(false)});
    }
  }
  int64_t max_id = -1;
  for (const auto& [piece, id] : vocab->items()) {
    const auto v = id_value(&id);
    if (!v) return bad(fmt::format("model.vocab[\"{}\"] is not a token id", piece));
    max_id = std::max<int64_t>(max_id, *v);
  }
  for (const added& a : added_tokens) max_id = std::max<int64_t>(max_id, a.id);
  if (max_id < 0) return bad("empty vocabulary");
  // Ids are dense in real vocabularies; a stray huge id would make the id table enormous.
  const size_t n_entries = vocab->size() + added_tokens.size();
  if (size_t(max_id) >= 2 * n_entries + 1024) {
    return bad(fmt::format("token id {} is far beyond the {} tokens", max_id, n_entries));
  }
  bpe_model m;
  m.pieces.assign(size_t(max_id) + 1, std::string());
  m.special.assign(size_t(max_id) + 1, 0);
  m.vocab.reserve(vocab->size());
  for (const auto& [piece, id] : vocab->items()) {
    m.pieces[size_t(*id_value(&id))] = piece;
    m.vocab[piece] = *id_value(&id);
  }
  m.all_tokens = m.vocab;
  for (const added& a : added_tokens) {
    if (m.pieces[a.id].empty()) m.pieces[a.id] = a.content;
    m.special[a.id] = a.special ? 1 : 0;
    m.all_tokens[a.content] = a.id;
  }

  // Merges: "a b" strings or ["a", "b"] pairs; rank = position; a later duplicate wins.
  if (const json* merges = member(*model, "merges")) {
    if (!merges->is_array()) return bad("model.merges is not an array");
    m.merges.reserve(merges->size());
    int32_t rank = 0;
    for (const json& e : *merges) {
      std::string a, b;
      if (e.is_string()) {
        const std::string& line = e.get_ref<const std::string&>();
        const size_t sp = line.find(' ');
        if (sp == std::string::npos) {
          return bad(fmt::format("merge {} \"{}\" is not \"a b\"", rank, line));
        }
        a = line.substr(0, sp);
        b = line.substr(sp + 1);
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      } else {
        return bad(fmt::format("merge {} is neither \"a b\" nor [\"a\", \"b\"]", rank));
      }
      const int32_t ia = find_piece(m.vocab, a);
      const int32_t ib = find_piece(m.vocab, b);
      const int32_t merged = find_piece(m.vocab, a + b);
      if (ia < 0 || ib < 0 || merged < 0) {
        return bad(fmt::format("merge {} (\"{}\" \"{}\") uses a token outside the vocabulary",
                               rank, a, b));
      }
      m.merges[pair_key(ia, ib)] = {rank++, merged};
    }
  }
  if (auto unk = string_member(*model, "unk_token")) {
    m.unk_id = find_piece(m.vocab, *unk);
    if (m.unk_id < 0) return bad(fmt::format("unk_token \"{}\" is not in the vocabulary", *unk));
  }
  m.fuse_unk = bool_member(*model, "fuse_unk").value_or(false);
  m.byte_fallback = bool_member(*model, "byte_fallback").value_or(false);
  m.ignore_merges = bool_member(*model, "ignore_merges").value_or(false);
  for (int b = 0; b < 256; ++b) {
    m.byte_ids[b] = find_piece(m.vocab, tokenizer_detail::byte_piece(uint8_t(b)));
  }
  return m;
}

/// A Replace component's String pattern and content.
std::optional<std::pair<std::string, std::string>> replace_rule(const json& j) {
  const json* pattern = member(j, "pattern");
  auto from = pattern != nullptr ? string_member(*pattern, "String") : std::nullopt;
  auto to = string_member(j, "content");
  if (!from || !to) return std::nullopt;
  return std::pair{std::move(*from), std::move(*to)};
}

result<void> read_pipeline(const json& root, pipeline& p) {
  // Normalizer: Prepend / Replace (string patterns), possibly in a Sequence.
  if (const json* n = member(root, "normalizer")) {
    auto steps = components(*n, "normalizers");
    if (!steps) return std::unexpected(steps.error());
    for (const json* step : *steps) {
      const std::string type = type_of(*step);
      if (type == "Prepend") {
        auto text = string_member(*step, "prepend");
        if (!text) return bad("normalizer Prepend without \"prepend\"");
        p.normalizers.push_back({true, {}, *text});
      } else if (type == "Replace") {
        auto rule = replace_rule(*step);
        if (!rule) return unsupported("normalizer Replace without a String pattern");
        p.normalizers.push_back({false, rule->first, rule->second});
      } else {
        return unsupported(fmt::format("normalizer \"{}\"", type));
      }
    }
  }

  // Pre-tokenizer: none or Metaspace (alone or as the only member of a Sequence).
  if (const json* pre = member(root, "pre_tokenizer")) {
    auto steps = components(*pre, "pretokenizers");
    if (!steps) return std::unexpected(steps.error());
    if (steps->size() != 1 || type_of(*steps->front()) != "Metaspace") {
      const std::string type = steps->size() == 1 ? type_of(*steps->front()) : "Sequence";
      return unsupported(fmt::format("pre_tokenizer \"{}\" (only Metaspace)", type));
    }
    const json& ms = *steps->front();
    p.metaspace = true;
    p.ms_replacement = string_member(ms, "replacement").value_or(std::string(space_marker));
    if (p.ms_replacement.empty()) return bad("Metaspace with an empty replacement");
    if (auto scheme = string_member(ms, "prepend_scheme")) {
      if (*scheme != "always" && *scheme != "first" && *scheme != "never") {
        return unsupported(fmt::format("Metaspace prepend_scheme \"{}\"", *scheme));
      }
      p.ms_prepend = *scheme != "never";
    } else {
      p.ms_prepend = bool_member(ms, "add_prefix_space").value_or(true);
    }
    p.ms_split = bool_member(ms, "split").value_or(true);
  }

  // Decoder: Replace / ByteFallback / Fuse / Strip / Metaspace, possibly in a Sequence.
  if (const json* d = member(root, "decoder")) {
    auto steps = components(*d, "decoders");
    if (!steps) return std::unexpected(steps.error());
    for (const json* step : *steps) {
      const std::string type = type_of(*step);
      if (type == "Replace") {
        auto rule = replace_rule(*step);
        if (!rule) return unsupported("decoder Replace without a String pattern");
        p.decode_replace.push_back(std::move(*rule));
      } else if (type == "ByteFallback") {
        p.decode_bytes = true;
      } else if (type == "Fuse") {
        // pieces are concatenated anyway
      } else if (type == "Strip") {
        const auto stop = id_value(member(*step, "stop"));
        if (stop && *stop != 0) return unsupported(fmt::format("decoder Strip with stop {}", *stop));
        const auto start = id_value(member(*step, "start"));
        if (start && string_member(*step, "content").value_or(" ") == " ") {
          p.strip_after_bos = size_t(*start);
        }
      } else if (type == "Metaspace") {
        const std::string marker = string_member(*step, "replacement").value_or(std::string(space_marker));
        p.decode_replace.emplace_back(marker, " ");
        if (string_member(*step, "prepend_scheme").value_or("always") != "never" &&
            bool_member(*step, "add_prefix_space").value_or(true)) {
          p.strip_after_bos = std::max<size_t>(p.strip_after_bos, 1);
        }
      } else {
        return unsupported(fmt::format("decoder \"{}\"", type));
      }
    }
  }
  return {};
}

/// BOS: the post-processor's template (its first special token), else tokenizer_config.json
/// bos_token, else config.json bos_token_id. EOS: tokenizer_config.json eos_token, else
/// config.json (or generation_config.json) eos_token_id.
result<specials> read_specials(const json& root, const bpe_model& m, const std::filesystem::path& dir) {
  auto tok_config = read_json(dir / "tokenizer_config.json", false);
  if (!tok_config) return std::unexpected(tok_config.error());
  auto model_config = read_json(dir / "config.json", false);
  if (!model_config) return std::unexpected(model_config.error());
  auto gen_config = read_json(dir / "generation_config.json", false);
  if (!gen_config) return std::unexpected(gen_config.error());
  const json empty = json::object();
  const json& tc = *tok_config ? **tok_config : empty;
  const json& mc = *model_config ? **model_config : empty;
  const json& gc = *gen_config ? **gen_config : empty;

  auto in_vocab = [&](std::optional<int32_t> id) {
    return id && *id < int32_t(m.pieces.size()) ? *id : -1;
  };
  auto named = [&](std::optional<std::string> name) {
    return name ? find_piece(m.all_tokens, *name) : -1;
  };
  // tokenizer_config.json names a token as "..." or {"content": "..."}.
  auto config_token = [&](const char* key) -> std::optional<std::string> {
    const json* v = member(tc, key);
    if (v != nullptr && v->is_string()) return v->get<std::string>();
    return v != nullptr ? string_member(*v, "content") : std::nullopt;
  };
  // config.json's eos_token_id may be a list; the first is the main one.
  auto config_id = [&](const json& config, const char* key) -> std::optional<int32_t> {
    const json* v = member(config, key);
    if (v != nullptr && v->is_array() && !v->empty()) v = &(*v)[0];
    return id_value(v);
  };

  specials s;
  std::optional<bool> template_adds_bos;
  if (const json* post = member(root, "post_processor")) {
    std::vector<const json*> processors{post};
    if (const json* list = member(*post, "processors"); list != nullptr && list->is_array()) {
      for (const json& e : *list) processors.push_back(&e);
    }
    for (const json* pp : processors) {
      const json* single = member(*pp, "single");
      if (type_of(*pp) != "TemplateProcessing" || single == nullptr || !single->is_array() ||
          single->empty()) {
        continue;
      }
      const json* first = member((*single)[0], "SpecialToken");
      template_adds_bos = first != nullptr;
      if (first == nullptr) continue;
      const auto name = string_member(*first, "id");
      const json* table = member(*pp, "special_tokens");
      const json* entry = name && table != nullptr ? member(*table, name->c_str()) : nullptr;
      const json* ids = entry != nullptr ? member(*entry, "ids") : nullptr;
      int32_t id = -1;
      if (ids != nullptr && ids->is_array() && !ids->empty()) id = in_vocab(id_value(&(*ids)[0]));
      if (id < 0) id = named(name);
      if (id >= 0) s.bos_id = id;
    }
  }
  if (s.bos_id < 0) s.bos_id = named(config_token("bos_token"));
  if (s.bos_id < 0) s.bos_id = in_vocab(config_id(mc, "bos_token_id"));
  if (s.bos_id < 0) s.bos_id = in_vocab(config_id(gc, "bos_token_id"));
  s.add_bos = template_adds_bos.value_or(bool_member(tc, "add_bos_token").value_or(true));

  s.eos_id = named(config_token("eos_token"));
  if (s.eos_id < 0) s.eos_id = in_vocab(config_id(mc, "eos_token_id"));
  if (s.eos_id < 0) s.eos_id = in_vocab(config_id(gc, "eos_token_id"));
  return s;
}

result<std::unique_ptr<tokenizer>> build(const json& root, const std::filesystem::path& path) {
  if (!root.is_object()) return bad("not a tokenizer.json object");
  auto model = read_model(root);
  if (!model) return std::unexpected(model.error());
  pipeline p;
  if (auto r = read_pipeline(root, p); !r) return std::unexpected(r.error());
  auto s = read_specials(root, *model, path.has_parent_path() ? path.parent_path() : ".");
  if (!s) return std::unexpected(s.error());
  return std::make_unique<hf_bpe_tokenizer>(std::move(*model), std::move(p), *s);
}

}  // namespace

result<std::unique_ptr<tokenizer>> load_hf_tokenizer(const std::filesystem::path& path) {
  auto root = read_json(path, true);
  if (!root) return std::unexpected(root.error());
  result<std::unique_ptr<tokenizer>> tok;
  try {
    tok = build(**root, path);
  } catch (const json::exception& e) {  // a value of an unexpected type slipped past the checks
    return fail(errc::bad_format, "tokenizer: {}: {}", path.string(), e.what());
  }
  if (!tok && !tok.error().message.starts_with("tokenizer: ")) {  // name the file once, here
    return fail(tok.error().code, "tokenizer: {}: {}", path.string(), tok.error().message);
  }
  return tok;
}

}  // namespace troupe::engine
