// llama2.c checkpoints (karpathy/llama2.c run.c, "version 0"): a header of 7 x int32
//   dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
// then f32 arrays, contiguous, in this order:
//   token_embedding [vocab][dim], rms_att [L][dim], wq [L][dim][dim], wk [L][kv_dim][dim],
//   wv [L][kv_dim][dim], wo [L][dim][dim], rms_ffn [L][dim], w1 [L][hidden][dim],
//   w2 [L][dim][hidden], w3 [L][hidden][dim], rms_final [dim],
//   freq_cis_real [seq_len][head_size/2], freq_cis_imag [seq_len][head_size/2] (unused),
//   wcls [vocab][dim] only when vocab_size in the header is negative (not shared).
// q/k rows are in the interleaved RoPE order. Views point straight into the mapping.
#include "engine/llama2c.hpp"

#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "engine/llama_tensors.hpp"

namespace troupe::engine {
namespace {

constexpr uint64_t header_bytes = 7 * sizeof(int32_t);

// Sanity limits: far above any real llama2.c model, low enough that sizes cannot overflow.
constexpr int32_t max_dim = 1 << 16;
constexpr int32_t max_hidden = 1 << 20;
constexpr int32_t max_layers = 1024;
constexpr int32_t max_vocab = 1 << 24;
constexpr int32_t max_seq_len = 1 << 24;

/// Lays the f32 arrays out one after another from the end of the header, overflow-checked.
class layout {
 public:
  explicit layout(model_weights& m) : m_(m) {}

  /// Appends an array of `shape` f32 values; returns its byte offset in the file.
  uint64_t add(std::string name, std::vector<int64_t> shape) {
    uint64_t n = 4;
    for (int64_t d : shape) overflow_ |= __builtin_mul_overflow(n, uint64_t(d), &n);
    const uint64_t at = end_;
    overflow_ |= __builtin_add_overflow(end_, n, &end_);
    m_.tensors.push_back(tensor_info{std::move(name), dtype::f32, std::move(shape), at});
    return at;
  }
  uint64_t end() const { return end_; }
  bool overflowed() const { return overflow_; }

 private:
  model_weights& m_;
  uint64_t end_ = header_bytes;
  bool overflow_ = false;
};

}  // namespace

result<model_weights> load_llama2c_model(const std::filesystem::path& path,
                                         const load_options& opts) {
  const std::string name = path.string();
  auto opened = mapped_file::open(path);
  if (!opened) return std::unexpected(opened.error());
  const std::shared_ptr<mapped_file> file = std::move(*opened);
  if (!file->contains(0, header_bytes)) {
    return fail(errc::truncated, "llama2c: {}: {} bytes, shorter than the 28-byte header", name,
                file->size());
  }

  // ---- header ----
  int32_t h[7];
  std::memcpy(h, file->data(), sizeof(h));
  const int32_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv_heads = h[4],
                vocab_raw = h[5], seq_len = h[6];
  struct field {
    const char* key;
    int32_t value;
    int32_t max;
  };
  for (const field& f :
       {field{"dim", dim, max_dim}, field{"hidden_dim", hidden, max_hidden},
        field{"n_layers", n_layers, max_layers}, field{"n_heads", n_heads, dim},
        field{"n_kv_heads", n_kv_heads, n_heads}, field{"seq_len", seq_len, max_seq_len}}) {
    if (f.value <= 0 || f.value > f.max) {
      return fail(errc::bad_format,
                  "llama2c: {}: header {} = {} is not in [1, {}] (not a llama2.c checkpoint?)",
                  name, f.key, f.value, f.max);
    }
  }
  // BOS = 1 and EOS = 2 must be tokens; INT32_MIN has no positive counterpart.
  if (vocab_raw == 0 || vocab_raw < -max_vocab || vocab_raw > max_vocab ||
      (vocab_raw > -3 && vocab_raw < 3)) {
    return fail(
        errc::bad_format,
        "llama2c: {}: header vocab_size = {} is not in [3, {}] (negated: separate classifier)",
        name, vocab_raw, max_vocab);
  }
  if (dim % n_heads != 0) {
    return fail(errc::bad_format, "llama2c: {}: dim {} is not a multiple of n_heads {}", name, dim,
                n_heads);
  }
  if (n_heads % n_kv_heads != 0) {
    return fail(errc::bad_format, "llama2c: {}: n_heads {} is not a multiple of n_kv_heads {}",
                name, n_heads, n_kv_heads);
  }
  const int32_t head_size = dim / n_heads;
  if (head_size % 2 != 0) {
    return fail(errc::bad_format, "llama2c: {}: head size {} is odd (RoPE rotates pairs)", name,
                head_size);
  }
  const bool shared = vocab_raw > 0;
  const int32_t vocab = shared ? vocab_raw : -vocab_raw;

  model_weights m;
  m.format = "llama2c";
  model_config& c = m.config;
  c.arch = "llama";
  c.name = path.stem().string();
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = head_size;
  c.vocab_size = vocab;
  c.max_seq_len = seq_len;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope = rope_style::interleaved;
  c.tied_output = shared;
  c.bos_id = 1;
  c.eos_id = 2;

  // ---- layout, checked against the file size ----
  // The llama tensor table's order, each per-layer tensor stacked over all layers [L][rows][cols].
  const int64_t L = n_layers;
  layout lay(m);
  auto add = [&](llama_role role, std::vector<int64_t> shape) {
    return lay.add(tensor_name(tensor_naming::llama2c, {role}), std::move(shape));
  };
  auto dims = [&](llama_role role) {
    const llama_shape s = shape_of(c, role);
    return s.is_vector() ? std::vector<int64_t>{s.cols} : std::vector<int64_t>{s.rows, s.cols};
  };
  std::map<llama_role, uint64_t> offset;
  offset[llama_role::token_embedding] = add(llama_role::token_embedding, dims(llama_role::token_embedding));
  for (llama_role role : llama_layer_roles) {
    std::vector<int64_t> shape = dims(role);
    shape.insert(shape.begin(), L);
    offset[role] = add(role, std::move(shape));
  }
  offset[llama_role::final_norm] = add(llama_role::final_norm, dims(llama_role::final_norm));
  lay.add("freq_cis_real", {seq_len, head_size / 2});
  lay.add("freq_cis_imag", {seq_len, head_size / 2});
  offset[llama_role::output] =
      shared ? offset[llama_role::token_embedding] : add(llama_role::output, dims(llama_role::output));
  if (lay.overflowed()) {
    return fail(errc::bad_format, "llama2c: {}: header sizes overflow a 64-bit file size", name);
  }
  if (file->size() < lay.end()) {
    return fail(
        errc::truncated,
        "llama2c: {}: file is {} bytes but its header (dim={} hidden_dim={} n_layers={} n_heads={} "
        "n_kv_heads={} vocab_size={} seq_len={}) needs {}",
        name, file->size(), dim, hidden, n_layers, n_heads, n_kv_heads, vocab_raw, seq_len,
        lay.end());
  }

  // ---- views for the requested layers ----
  auto range = resolve_range(opts.layers, n_layers);
  if (!range) return std::unexpected(range.error());
  m.first_layer = range->first;
  m.last_layer = range->last;

  const std::byte* base = file->data();
  m.layers.resize(size_t(m.last_layer - m.first_layer));
  for (const llama_tensor& t : stage_tensors(n_layers, {m.first_layer, m.last_layer})) {
    const llama_shape s = shape_of(c, t.role);
    const int64_t rows = s.is_vector() ? 1 : s.rows;
    const uint64_t at = offset[t.role] + (is_layer_role(t.role) ? uint64_t(t.layer * rows * s.cols) * 4 : 0);
    slot(m, t) = weight{dtype::f32, rows, s.cols, base + at};
  }
  m.files.push_back(file);
  return m;
}

}  // namespace troupe::engine
