// Synthetic Llama models written as GGUF: shapes, the vocabulary, counter-based random weights.
#include "engine/synth_model.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <unordered_set>

#include "engine/fp16.hpp"
#include "engine/gguf.hpp"
#include "engine/kernels.hpp"
#include "engine/llama_tensors.hpp"

namespace troupe::engine {

namespace {

synth_shape make_shape(std::string name, int dim, int hidden_dim, int n_layers, int n_heads, int n_kv_heads,
                       int vocab_size, int max_seq_len) {
  model_config c;
  c.dim = dim;
  c.hidden_dim = hidden_dim;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = n_heads > 0 ? dim / n_heads : 0;
  c.vocab_size = vocab_size;
  c.max_seq_len = max_seq_len;
  return synth_shape{std::move(name), c};
}

}  // namespace

const std::vector<synth_shape>& synth_shapes() {
  static const std::vector<synth_shape> shapes = {
      //          name           dim  hidden layers heads kv  vocab   ctx
      make_shape("tiny", 64, 172, 2, 4, 2, 512, 256),
      make_shape("stories15M", 288, 768, 6, 6, 6, 32000, 256),
      make_shape("stories110M", 768, 2048, 12, 12, 12, 32000, 1024),
  };
  return shapes;
}

std::string synth_shape_names(std::string_view separator) {
  std::string names;
  for (const auto& s : synth_shapes()) {
    if (!names.empty()) names += separator;
    names += s.name;
  }
  return names;
}

std::optional<synth_shape> find_synth_shape(std::string_view name) {
  for (const auto& s : synth_shapes()) {
    if (s.name == name) return s;
  }
  return std::nullopt;
}

// ---- vocabulary ------------------------------------------------------------------------------

namespace {

const std::string space = "\xE2\x96\x81";  // U+2581, SentencePiece's leading-space marker
constexpr std::string_view letters = "etaoinshrdlcumwfgypbvkjxqz";  // English letter frequency order

/// Words of children's stories; each enters the vocabulary with all its "▁" prefixes, so the
/// score-ordered merges of a SentencePiece encoder can always build the whole word.
constexpr std::string_view words[] = {
    "the", "and", "a", "to", "was", "he", "she", "it", "they", "in", "on", "with", "her", "his", "said",
    "of", "you", "I", "that", "had", "for", "day", "big", "play", "not", "but", "so", "very", "happy", "one",
    "saw", "wanted", "little", "time", "upon", "once", "there", "named", "girl", "boy", "friend", "friends",
    "mom", "dad", "went", "what", "do", "did", "like", "loved", "want", "go", "can", "see", "look", "find",
    "found", "help", "toy", "toys", "ball", "park", "tree", "dog", "cat", "bird", "sun", "fun", "run", "jump",
    "home", "house", "room", "box", "red", "blue", "green", "new", "good", "nice", "smile", "smiled", "sad",
    "together", "after", "then", "when", "all", "were", "is", "are", "be", "have", "me", "my", "we", "our",
    "out", "up", "down", "at", "from", "by", "an", "this", "them", "too", "away", "back", "every", "came",
    "asked", "made", "took", "gave", "felt", "thought", "know", "would", "could", "said", "into", "about",
    "Once", "The", "One", "She", "He", "They", "It", "Lily", "Tim", "Ben", "Sue", "Max", "Mom", "Dad",
    "Sam", "Anna", "Spot", "But", "When", "Then", "After", "There", "What", "Can", "Let", "Thank",
};

}  // namespace

synth_vocab make_synth_vocab(int vocab_size) {
  synth_vocab v;
  std::unordered_set<std::string> seen;
  auto add = [&](std::string piece, float score, int32_t type) {
    if (static_cast<int>(v.tokens.size()) >= vocab_size || !seen.insert(piece).second) return;
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0.0f, 2);
  add("<s>", 0.0f, 3);
  add("</s>", 0.0f, 3);
  for (int b = 0; b < 256; ++b) add(fmt::format("<0x{:02X}>", b), 0.0f, 6);

  // Normal pieces, most useful first; scores -0, -1, -2, ... in that order.
  int rank = 0;
  auto piece = [&](const std::string& s) { add(s, 0.0f - static_cast<float>(rank++), 1); };
  piece(space);
  for (char c : letters) piece(std::string(1, c));
  for (char c : letters) piece(space + c);
  for (char c : std::string_view(".,!?'\"-:;()")) piece(std::string(1, c));
  for (char c = '0'; c <= '9'; ++c) piece(std::string(1, c));
  for (char c : letters) piece(std::string(1, char(c - 'a' + 'A')));
  for (char c : letters) piece(space + char(c - 'a' + 'A'));
  for (std::string_view w : words) {
    for (size_t k = 2; k <= w.size(); ++k) piece(space + std::string(w.substr(0, k)));
  }
  // Then every letter string of length 2, 3, ... (plain and with the space marker) until full.
  for (size_t len = 2; static_cast<int>(v.tokens.size()) < vocab_size; ++len) {
    std::vector<size_t> digit(len, 0);
    while (static_cast<int>(v.tokens.size()) < vocab_size) {
      std::string s;
      for (size_t d : digit) s += letters[d];
      piece(s);
      piece(space + s);
      size_t i = len;  // odometer increment, last position fastest
      while (i > 0 && ++digit[i - 1] == letters.size()) digit[--i] = 0;
      if (i == 0) break;
    }
  }
  return v;
}

// ---- weights ---------------------------------------------------------------------------------

namespace {

constexpr uint64_t golden_gamma = 0x9e3779b97f4a7c15ull;

uint64_t mix64(uint64_t z) {  // splitmix64's output function
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return h;
}

/// Element i of the tensor `name`: uniform in [-scale, scale), independent of every other element.
void fill_uniform(float* out, int64_t n, uint64_t seed, std::string_view name, float scale) {
  const uint64_t key = mix64(seed ^ fnv1a(name));
  const float unit = scale / float(1 << 23);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(mix64(key + uint64_t(i + 1) * golden_gamma)) >> 40;  // 24 bits
    out[i] = float(r) * unit;
  }
}

/// `vals` (rows x cols) encoded as `type`.
std::vector<std::byte> encode(const std::vector<float>& vals, dtype type) {
  const int64_t n = static_cast<int64_t>(vals.size());
  std::vector<std::byte> bytes(size_t(n / block_elems(type) * block_bytes(type)));
  switch (type) {
    case dtype::f32: std::memcpy(bytes.data(), vals.data(), bytes.size()); break;
    case dtype::f16:
    case dtype::bf16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = type == dtype::f16 ? f32_to_f16(vals[i]) : f32_to_bf16(vals[i]);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
      break;
    case dtype::q8_0: quantize_q8_0(vals.data(), reinterpret_cast<block_q8_0*>(bytes.data()), n); break;
    case dtype::q4_0: quantize_q4_0(vals.data(), reinterpret_cast<block_q4_0*>(bytes.data()), n); break;
  }
  return bytes;
}

uint32_t file_type(dtype t) {  // llama_ftype
  switch (t) {
    case dtype::f32: return 0;
    case dtype::f16: return 1;
    case dtype::q4_0: return 2;
    case dtype::q8_0: return 7;
    case dtype::bf16: return 32;
  }
  return 0;
}

}  // namespace

result<void> write_synth_model(const synth_shape& shape, dtype type, uint64_t seed, const std::filesystem::path& out,
                               const synth_progress& progress) {
  const model_config& s = shape.config;
  if (s.dim <= 0 || s.hidden_dim <= 0 || s.n_layers <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 ||
      s.max_seq_len <= 0 || s.dim % s.n_heads != 0 || s.n_heads % s.n_kv_heads != 0 || s.vocab_size < 300 ||
      s.head_dim != s.dim / s.n_heads) {
    return fail(errc::invalid_argument, "synth: shape '{}' is inconsistent", shape.name);
  }

  gguf::writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "troupe-synth-" + shape.name);
  w.set_uint32("general.alignment", 32);
  w.set_uint32("general.file_type", file_type(type));
  w.set_uint32("general.quantization_version", 2);
  w.set_string("troupe.synth.shape", shape.name);
  w.set_string("troupe.synth.seed", std::to_string(seed));
  w.set_uint32("llama.context_length", uint32_t(s.max_seq_len));
  w.set_uint32("llama.embedding_length", uint32_t(s.dim));
  w.set_uint32("llama.block_count", uint32_t(s.n_layers));
  w.set_uint32("llama.feed_forward_length", uint32_t(s.hidden_dim));
  w.set_uint32("llama.rope.dimension_count", uint32_t(s.head_dim));
  w.set_uint32("llama.attention.head_count", uint32_t(s.n_heads));
  w.set_uint32("llama.attention.head_count_kv", uint32_t(s.n_kv_heads));
  w.set_float32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_float32("llama.rope.freq_base", 10000.0f);
  w.set_uint32("llama.vocab_size", uint32_t(s.vocab_size));
  synth_vocab vocab = make_synth_vocab(s.vocab_size);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string_array("tokenizer.ggml.tokens", std::move(vocab.tokens));
  w.set_float32_array("tokenizer.ggml.scores", std::move(vocab.scores));
  w.set_int32_array("tokenizer.ggml.token_type", std::move(vocab.types));
  w.set_uint32("tokenizer.ggml.bos_token_id", 1);
  w.set_uint32("tokenizer.ggml.eos_token_id", 2);
  w.set_uint32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_bool("tokenizer.ggml.add_eos_token", false);

  // Tensors in llama.cpp's order: the model-wide ones, then layer by layer. Uniform(-a, a) has
  // standard deviation a / sqrt(3): 0.02 for most matrices, 0.02 / sqrt(2 n_layers) for the two
  // that add into the residual stream.
  struct plan {
    std::string name;
    llama_shape shape;
    float stddev;  // 0 for the norms (all ones)
  };
  const float sd = 0.02f;
  const float sd_residual = sd / std::sqrt(2.0f * float(s.n_layers));
  std::vector<plan> plans;
  auto add = [&](const llama_tensor& t) {
    const llama_shape sh = shape_of(s, t.role);
    const bool residual = t.role == llama_role::wo || t.role == llama_role::w_down;
    plans.push_back({tensor_name(tensor_naming::gguf, t), sh, sh.is_vector() ? 0 : residual ? sd_residual : sd});
  };
  for (llama_role role : {llama_role::token_embedding, llama_role::final_norm, llama_role::output}) add({role});
  for (int l = 0; l < s.n_layers; ++l) {
    for (llama_role role : llama_layer_roles) add({role, l});
  }

  const int64_t total = static_cast<int64_t>(plans.size()) + 1;
  std::vector<float> vals;
  for (size_t i = 0; i < plans.size(); ++i) {
    const plan& t = plans[i];
    if (progress) progress(t.name, int64_t(i), total);
    const auto [rows, cols] = t.shape;
    if (t.shape.is_vector()) {
      vals.assign(size_t(cols), 1.0f);
      w.add_tensor(t.name, {cols}, gguf::ggml_type::f32, encode(vals, dtype::f32));
      continue;
    }
    vals.resize(size_t(rows * cols));
    fill_uniform(vals.data(), rows * cols, seed, t.name, t.stddev * std::sqrt(3.0f));
    const dtype stored = cols % block_elems(type) == 0 ? type : dtype::f16;
    w.add_tensor(t.name, {cols, rows}, gguf::to_ggml_type(stored), encode(vals, stored));
  }
  vals = {};
  if (progress) progress("writing", total - 1, total);
  if (auto r = w.write(out); !r) return r;
  if (progress) progress("done", total, total);
  return {};
}

}  // namespace troupe::engine
