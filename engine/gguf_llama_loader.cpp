// Maps a "llama" model from a GGUF file: hyperparameters from the metadata, tensors (named and
// shaped by the llama tensor table) as views into the mapping.
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>

#include <fmt/ranges.h>

#include "engine/fp16.hpp"
#include "engine/gguf.hpp"
#include "engine/llama_tensors.hpp"

namespace troupe::engine {

namespace {

/// Reads hyperparameters and maps tensors of one open GGUF file into a model_weights.
class llama_loader {
 public:
  llama_loader(const gguf::file& f, model_weights& mw) : f_(f), mw_(mw) {}

  template <class... Args>
  std::unexpected<error> err(errc code, fmt::format_string<Args...> fm, Args&&... args) const {
    return f_.fail(code, fm, std::forward<Args>(args)...);
  }

  /// An integer hyperparameter in [lo, hi]; `fallback` when the key is absent (nullopt: required).
  result<int> hparam(const std::string& key, std::optional<int> fallback, int64_t lo, int64_t hi) const {
    if (f_.find(key) == nullptr) {
      if (fallback) return *fallback;
      return err(errc::bad_format, "required key '{}' is missing", key);
    }
    auto v = f_.get_uint(key);
    if (!v) return std::unexpected(v.error());
    if (int64_t(*v) < lo || *v > uint64_t(hi)) {
      return err(errc::bad_format, "key '{}' = {} is not in [{}, {}]", key, *v, lo, hi);
    }
    return static_cast<int>(*v);
  }

  result<float> fparam(const std::string& key, float fallback) const {
    if (f_.find(key) == nullptr) return fallback;
    auto v = f_.get_float(key);
    if (!v) return std::unexpected(v.error());
    if (!(*v > 0.0) || !std::isfinite(*v)) return err(errc::bad_format, "key '{}' = {} is not positive", key, *v);
    return static_cast<float>(*v);
  }

  /// The tensor `name`, checked to be present, of a type troupe computes with, with shape
  /// [rows][cols] (rows == 0: a vector of cols). Trailing ggml dimensions of 1 are accepted.
  result<const gguf::tensor_desc*> require(const std::string& name, int64_t rows, int64_t cols) const {
    const gguf::tensor_desc* t = f_.find_tensor(name);
    if (t == nullptr) return err(errc::bad_format, "tensor '{}' is missing", name);
    auto type = gguf::to_dtype(t->type);
    if (!type) {
      return err(errc::unsupported, "tensor '{}' has type {}; troupe reads F32, F16, BF16, Q8_0, Q4_0", name,
                 gguf::type_name(static_cast<uint32_t>(t->type)));
    }
    std::vector<int64_t> want = rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    std::vector<int64_t> have = t->ne;
    while (have.size() > want.size() && have.back() == 1) have.pop_back();
    if (have != want) {
      std::vector<int64_t> shape(t->ne.rbegin(), t->ne.rend());
      if (rows == 0) {
        return err(errc::bad_format, "tensor '{}' has shape [{}], expected [{}]", name, fmt::join(shape, ", "), cols);
      }
      return err(errc::bad_format, "tensor '{}' has shape [{}], expected [{}, {}] (rows, cols)", name,
                 fmt::join(shape, ", "), rows, cols);
    }
    // Kernels read floats and f16 scales in place: the data must be aligned for them.
    const uint64_t abs = f_.data_offset() + t->offset;
    const uint64_t need = *type == dtype::f32 ? 4 : 2;
    if (abs % need != 0) return err(errc::unsupported, "tensor '{}' data at {} is not {}-byte aligned", name, abs, need);
    return t;
  }

  result<weight> matrix(const std::string& name, int64_t rows, int64_t cols) const {
    auto t = require(name, rows, cols);
    if (!t) return std::unexpected(t.error());
    return weight{*gguf::to_dtype((*t)->type), rows, cols, f_.tensor_data(**t)};
  }

  /// A norm vector as f32: mapped when the file stores f32, converted otherwise.
  result<weight> norm(const std::string& name, int64_t n) const {
    auto t = require(name, 0, n);
    if (!t) return std::unexpected(t.error());
    const dtype type = *gguf::to_dtype((*t)->type);
    if (type != dtype::f32 && type != dtype::f16 && type != dtype::bf16) {
      return err(errc::unsupported, "norm tensor '{}' is {}; expected F32, F16 or BF16", name,
                 gguf::type_name(static_cast<uint32_t>((*t)->type)));
    }
    return mw_.f32_vector(type, f_.tensor_data(**t), n);
  }

  result<void> read_config() {
    model_config& c = mw_.config;
    auto arch = f_.get_string("general.architecture");
    if (!arch) return std::unexpected(arch.error());
    if (*arch != "llama") {
      return err(errc::unsupported, "architecture '{}' is not supported (troupe runs 'llama' models)", *arch);
    }
    c.arch = *arch;
    if (f_.find("general.name") != nullptr) {
      auto name = f_.get_string("general.name");
      if (!name) return std::unexpected(name.error());
      c.name = *name;
    }
    constexpr int64_t big = 1 << 24;
    struct int_key {
      int* field;
      const char* key;
      std::optional<int> fallback;
      int64_t hi;
    };
    for (const auto& k : {int_key{&c.dim, "llama.embedding_length", std::nullopt, 1 << 20},
                          int_key{&c.n_layers, "llama.block_count", std::nullopt, 1 << 16},
                          int_key{&c.hidden_dim, "llama.feed_forward_length", std::nullopt, big},
                          int_key{&c.n_heads, "llama.attention.head_count", std::nullopt, 1 << 16},
                          int_key{&c.max_seq_len, "llama.context_length", 2048, 1 << 30}}) {
      auto v = hparam(k.key, k.fallback, 1, k.hi);
      if (!v) return std::unexpected(v.error());
      *k.field = *v;
    }
    auto kv = hparam("llama.attention.head_count_kv", c.n_heads, 1, c.n_heads);
    if (!kv) return std::unexpected(kv.error());
    c.n_kv_heads = *kv;
    if (c.dim % c.n_heads != 0) {
      return err(errc::bad_format, "embedding_length {} is not a multiple of head_count {}", c.dim, c.n_heads);
    }
    if (c.n_heads % c.n_kv_heads != 0) {
      return err(errc::bad_format, "head_count {} is not a multiple of head_count_kv {}", c.n_heads, c.n_kv_heads);
    }
    c.head_dim = c.dim / c.n_heads;
    for (const char* key : {"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"}) {
      auto v = hparam(key, c.head_dim, 1, 1 << 20);
      if (!v) return std::unexpected(v.error());
      if (*v != c.head_dim) {
        return err(errc::unsupported, "key '{}' = {} differs from the head size {} (not supported)", key, *v,
                   c.head_dim);
      }
    }
    auto eps = fparam("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (!eps) return std::unexpected(eps.error());
    c.rms_eps = *eps;
    auto theta = fparam("llama.rope.freq_base", 10000.0f);
    if (!theta) return std::unexpected(theta.error());
    c.rope_theta = *theta;
    c.rope = rope_style::interleaved;  // convert_hf_to_gguf permutes q/k rows for "llama"

    // Vocabulary: the token list, else llama.vocab_size, else the embedding's rows.
    if (const gguf::value* tokens = f_.find("tokenizer.ggml.tokens"); tokens != nullptr) {
      const auto* items = std::get_if<std::vector<gguf::value>>(&tokens->data);
      if (items == nullptr) return err(errc::bad_format, "key 'tokenizer.ggml.tokens' is not an array");
      if (items->empty() || items->size() > size_t(big)) {
        return err(errc::bad_format, "key 'tokenizer.ggml.tokens' has {} tokens", items->size());
      }
      c.vocab_size = static_cast<int>(items->size());
    } else if (f_.find("llama.vocab_size") != nullptr) {
      auto v = hparam("llama.vocab_size", std::nullopt, 1, big);
      if (!v) return std::unexpected(v.error());
      c.vocab_size = *v;
    } else if (const auto* e = f_.find_tensor(tensor_name(tensor_naming::gguf, {llama_role::token_embedding}));
               e != nullptr && e->ne.size() >= 2 && e->ne[1] >= 1 && e->ne[1] <= big) {
      c.vocab_size = static_cast<int>(e->ne[1]);
    } else {
      return err(errc::bad_format, "cannot tell the vocabulary size (no tokenizer.ggml.tokens, llama.vocab_size)");
    }
    auto bos = hparam("tokenizer.ggml.bos_token_id", 1, 0, c.vocab_size - 1);
    if (!bos) return std::unexpected(bos.error());
    auto eos = hparam("tokenizer.ggml.eos_token_id", 2, 0, c.vocab_size - 1);
    if (!eos) return std::unexpected(eos.error());
    c.bos_id = *bos;
    c.eos_id = *eos;
    c.tied_output = f_.find_tensor(tensor_name(tensor_naming::gguf, {llama_role::output})) == nullptr;
    return {};
  }

  /// Checks every tensor the model needs (all layers, so that each stage fails the same way).
  result<void> check_all() const {
    const model_config& c = mw_.config;
    auto check = [&](const llama_tensor& t) -> result<void> {
      const llama_shape s = shape_of(c, t.role);
      auto r = require(tensor_name(tensor_naming::gguf, t), s.rows, s.cols);
      if (!r) return std::unexpected(r.error());
      return {};
    };
    for (int l = 0; l < c.n_layers; ++l) {
      for (llama_role role : llama_layer_roles) {
        if (auto r = check({role, l}); !r) return r;
      }
    }
    for (llama_role role : {llama_role::token_embedding, llama_role::final_norm, llama_role::output}) {
      if (role == llama_role::output && c.tied_output) continue;
      if (auto r = check({role}); !r) return r;
    }
    return {};
  }

  /// Maps the tensors of a stage of layers `range` (checked by check_all).
  result<void> map_range(layer_range range) {
    const model_config& c = mw_.config;
    mw_.first_layer = range.first;
    mw_.last_layer = range.last;
    mw_.layers.resize(size_t(range.last - range.first));
    for (const llama_tensor& t : stage_tensors(c.n_layers, range)) {
      const bool tied = t.role == llama_role::output && c.tied_output;
      const std::string name = tensor_name(tensor_naming::gguf, tied ? llama_tensor{llama_role::token_embedding} : t);
      const llama_shape s = shape_of(c, t.role);
      auto w = s.is_vector() ? norm(name, s.cols) : matrix(name, s.rows, s.cols);
      if (!w) return std::unexpected(w.error());
      slot(mw_, t) = *w;
    }
    return {};
  }

  void list_tensors() {
    for (const auto& t : f_.tensors()) {
      auto type = gguf::to_dtype(t.type);
      if (!type) continue;  // a type troupe cannot represent, in a tensor it does not use
      mw_.tensors.push_back(tensor_info{t.name, *type, std::vector<int64_t>(t.ne.rbegin(), t.ne.rend()),
                                        f_.data_offset() + t.offset});
    }
  }

 private:
  const gguf::file& f_;
  model_weights& mw_;
};

}  // namespace

result<model_weights> load_gguf_model(const std::filesystem::path& path, const load_options& opts) {
  auto f = gguf::file::open(path);
  if (!f) return std::unexpected(f.error());
  model_weights mw;
  mw.format = "gguf";
  mw.files = {f->mapping()};
  llama_loader loader(*f, mw);
  if (auto r = loader.read_config(); !r) return std::unexpected(r.error());
  if (auto r = loader.check_all(); !r) return std::unexpected(r.error());
  auto range = resolve_range(opts.layers, mw.config.n_layers);
  if (!range) return std::unexpected(range.error());
  if (auto r = loader.map_range(*range); !r) return std::unexpected(r.error());
  loader.list_tensors();
  return mw;
}

}  // namespace troupe::engine
