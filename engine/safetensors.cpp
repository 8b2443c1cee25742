// Hugging Face model directories: config.json + one or more .safetensors files.
// A .safetensors file is an 8-byte little-endian header length N, N bytes of JSON
// ({"name": {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {...}}), then the
// data; offsets are relative to the first byte after the header. Every number read from the
// header or config.json is checked before it is used to form a pointer.
#include "engine/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "engine/llama_tensors.hpp"

namespace troupe::engine {
namespace {

using json = nlohmann::json;

constexpr uint64_t max_header_bytes = 100ull << 20;  // the format's own limit
constexpr size_t max_rank = 8;
constexpr uint64_t max_config_bytes = 16ull << 20;

std::optional<dtype> parse_st_dtype(std::string_view s) {
  if (s == "F32") return dtype::f32;
  if (s == "F16") return dtype::f16;
  if (s == "BF16") return dtype::bf16;
  return std::nullopt;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

/// Reads a non-negative integer that fits in int64 (JSON numbers >= 0 parse as unsigned).
std::optional<uint64_t> as_index(const json& v) {
  if (!v.is_number_unsigned()) return std::nullopt;
  const uint64_t x = v.get<uint64_t>();
  if (x > uint64_t(INT64_MAX)) return std::nullopt;
  return x;
}

result<safetensors::tensor_desc> parse_entry(const std::shared_ptr<mapped_file>& file,
                                             const std::string& name, const json& entry,
                                             uint64_t data_start) {
  const std::string path = file->path().string();
  if (!entry.is_object()) {
    return fail(errc::bad_format, "safetensors: {}: tensor {}: entry is not a JSON object", path,
                name);
  }
  const auto dt = entry.find("dtype");
  const auto sh = entry.find("shape");
  const auto off = entry.find("data_offsets");
  if (dt == entry.end() || !dt->is_string()) {
    return fail(errc::bad_format, "safetensors: {}: tensor {}: missing or non-string dtype", path,
                name);
  }
  if (sh == entry.end() || !sh->is_array() || sh->size() > max_rank) {
    return fail(errc::bad_format,
                "safetensors: {}: tensor {}: shape is not an array of at most {} sizes", path, name,
                max_rank);
  }
  if (off == entry.end() || !off->is_array() || off->size() != 2) {
    return fail(errc::bad_format, "safetensors: {}: tensor {}: data_offsets is not [begin, end]",
                path, name);
  }
  const std::string& dtype_text = dt->get_ref<const std::string&>();
  const auto type = parse_st_dtype(dtype_text);
  if (!type) {
    return fail(errc::unsupported,
                "safetensors: {}: tensor {} has dtype {} (supported: F32, F16, BF16)", path, name,
                dtype_text);
  }

  safetensors::tensor_desc t;
  t.name = name;
  t.type = *type;
  uint64_t n_elems = 1;
  for (const auto& d : *sh) {
    const auto v = as_index(d);
    if (!v) {
      return fail(errc::bad_format,
                  "safetensors: {}: tensor {}: shape holds a value that is not a size", path, name);
    }
    t.shape.push_back(int64_t(*v));
    if (__builtin_mul_overflow(n_elems, *v, &n_elems)) {
      return fail(errc::bad_format, "safetensors: {}: tensor {}: shape {} overflows", path, name,
                  shape_str(t.shape));
    }
  }
  uint64_t n_bytes = 0;
  if (__builtin_mul_overflow(n_elems, uint64_t(block_bytes(*type)), &n_bytes)) {
    return fail(errc::bad_format, "safetensors: {}: tensor {}: shape {} overflows", path, name,
                shape_str(t.shape));
  }
  const auto begin = as_index((*off)[0]);
  const auto end = as_index((*off)[1]);
  if (!begin || !end || *begin > *end) {
    return fail(errc::bad_format,
                "safetensors: {}: tensor {}: data_offsets are not a range [begin, end)", path,
                name);
  }
  const uint64_t data_size = file->size() - data_start;
  if (*end > data_size) {
    return fail(
        errc::truncated,
        "safetensors: {}: tensor {}: data_offsets [{}, {}) run past the end of the data ({} bytes)",
        path, name, *begin, *end, data_size);
  }
  if (*end - *begin != n_bytes) {
    return fail(errc::bad_format,
                "safetensors: {}: tensor {}: data_offsets [{}, {}) hold {} bytes but shape {} of "
                "{} needs {}",
                path, name, *begin, *end, *end - *begin, shape_str(t.shape), dtype_text, n_bytes);
  }
  t.offset = data_start + *begin;
  t.size_bytes = n_bytes;
  t.data = file->data() + t.offset;
  return t;
}

// ---- config.json ---------------------------------------------------------------------------

result<json> read_json_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return fail(errc::io_error, "safetensors: cannot read {}: {}", path.string(), ec.message());
  if (size > max_config_bytes) {
    return fail(errc::bad_format, "safetensors: {} is {} bytes, more than a config file should be",
                path.string(), size);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "safetensors: cannot open {}", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  json j = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(errc::bad_format, "safetensors: {} is not a JSON object", path.string());
  }
  return j;
}

/// Typed access to config.json; every error names the key.
class config_reader {
 public:
  config_reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  const json* find(const char* key) const {
    const auto it = j_.find(key);
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }

  /// An integer in [lo, hi]; `def` when the key is absent (an error when there is no default).
  result<int> get_int(const char* key, std::optional<int> def, int64_t lo, int64_t hi) const {
    const json* v = find(key);
    if (v == nullptr) {
      if (!def) return fail(errc::bad_format, "safetensors: {}: missing {}", path_, key);
      if (*def < lo || *def > hi) return out_of_range(key, hi, lo);
      return *def;
    }
    return int_value(key, *v, lo, hi);
  }

  result<int> int_value(const char* key, const json& v, int64_t lo, int64_t hi) const {
    int64_t x = 0;
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(hi)) return out_of_range(key, hi, lo);
      x = int64_t(u);
    } else if (v.is_number_integer()) {
      x = v.get<int64_t>();
    } else {
      return fail(errc::bad_format, "safetensors: {}: {} is not an integer", path_, key);
    }
    if (x < lo || x > hi) return out_of_range(key, hi, lo);
    return int(x);
  }

  /// A positive finite number; `def` when absent.
  result<float> get_positive_float(const char* key, float def) const {
    const json* v = find(key);
    if (v == nullptr) return def;
    if (!v->is_number())
      return fail(errc::bad_format, "safetensors: {}: {} is not a number", path_, key);
    const double x = v->get<double>();
    if (!std::isfinite(x) || x <= 0 || x > 1e30) {
      return fail(errc::bad_format, "safetensors: {}: {} = {} is not a positive number", path_, key,
                  x);
    }
    return float(x);
  }

  result<bool> get_bool(const char* key, bool def) const {
    const json* v = find(key);
    if (v == nullptr) return def;
    if (!v->is_boolean())
      return fail(errc::bad_format, "safetensors: {}: {} is not a boolean", path_, key);
    return v->get<bool>();
  }

  const std::string* get_string(const char* key) const {
    const json* v = find(key);
    return (v != nullptr && v->is_string()) ? &v->get_ref<const std::string&>() : nullptr;
  }

 private:
  std::unexpected<error> out_of_range(const char* key, int64_t hi, int64_t lo) const {
    return fail(errc::bad_format, "safetensors: {}: {} is outside [{}, {}]", path_, key, lo, hi);
  }
  const json& j_;
  std::string path_;
};

result<model_config> read_hf_config(const std::filesystem::path& dir) {
  const auto path = dir / "config.json";
  auto j = read_json_file(path);
  if (!j) return std::unexpected(j.error());
  const config_reader r(*j, path.string());
  const std::string p = path.string();

  // Architecture: Llama only.
  bool is_llama = false;
  if (const std::string* mt = r.get_string("model_type")) {
    if (*mt != "llama") {
      return fail(errc::unsupported, "safetensors: {}: model_type {} is not supported (llama only)",
                  p, *mt);
    }
    is_llama = true;
  }
  if (const json* arch = r.find("architectures"); arch != nullptr && arch->is_array()) {
    for (const auto& a : *arch)
      is_llama =
          is_llama || (a.is_string() && a.get_ref<const std::string&>() == "LlamaForCausalLM");
  }
  if (!is_llama) {
    return fail(errc::unsupported, "safetensors: {}: neither model_type llama nor LlamaForCausalLM",
                p);
  }
  // Variants whose extra tensors or maths the transformer does not implement.
  if (const std::string* act = r.get_string("hidden_act"); act != nullptr && *act != "silu") {
    return fail(errc::unsupported, "safetensors: {}: hidden_act {} is not supported (silu only)", p,
                *act);
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    auto b = r.get_bool(key, false);
    if (!b) return std::unexpected(b.error());
    if (*b) return fail(errc::unsupported, "safetensors: {}: {} = true is not supported", p, key);
  }
  if (r.find("rope_scaling") != nullptr) {
    return fail(errc::unsupported, "safetensors: {}: rope_scaling is not supported", p);
  }

  model_config c;
  c.arch = "llama";
  c.rope = rope_style::half;  // HF q/k rows are in rotate-half order; the kernels handle it
  // Sizes in file order; a bound may depend on a value read before it. The first error sticks.
  std::optional<error> err;
  const auto set_int = [&](int& field, const char* key, std::optional<int> def, int64_t lo,
                           int64_t hi) {
    if (err) return;
    auto v = r.get_int(key, def, lo, hi);
    if (v)
      field = *v;
    else
      err = v.error();
  };
  set_int(c.dim, "hidden_size", std::nullopt, 1, 1 << 17);
  set_int(c.hidden_dim, "intermediate_size", std::nullopt, 1, 1 << 20);
  set_int(c.n_layers, "num_hidden_layers", std::nullopt, 1, 1024);
  set_int(c.n_heads, "num_attention_heads", std::nullopt, 1, c.dim);
  set_int(c.n_kv_heads, "num_key_value_heads", c.n_heads, 1, c.n_heads);
  set_int(c.vocab_size, "vocab_size", std::nullopt, 1, 1 << 24);
  set_int(c.max_seq_len, "max_position_embeddings", 2048, 1, 1 << 24);
  set_int(c.bos_id, "bos_token_id", 1, 0, c.vocab_size - 1);
  if (err) return std::unexpected(std::move(*err));
  // eos_token_id may be one id or a list of them (the first is the one we stop on).
  if (const json* eos = r.find("eos_token_id")) {
    const json* first = eos;
    if (eos->is_array()) {
      if (eos->empty())
        return fail(errc::bad_format, "safetensors: {}: eos_token_id is an empty list", p);
      first = &(*eos)[0];
    }
    auto v = r.int_value("eos_token_id", *first, 0, c.vocab_size - 1);
    if (!v) return std::unexpected(v.error());
    c.eos_id = *v;
  } else if (c.vocab_size > 2) {
    c.eos_id = 2;
  } else {
    return fail(errc::bad_format,
                "safetensors: {}: no eos_token_id and the default 2 is not below vocab_size {}", p,
                c.vocab_size);
  }
  if (c.dim % c.n_heads != 0) {
    return fail(errc::bad_format,
                "safetensors: {}: hidden_size {} is not a multiple of num_attention_heads {}", p,
                c.dim, c.n_heads);
  }
  if (c.n_heads % c.n_kv_heads != 0) {
    return fail(
        errc::bad_format,
        "safetensors: {}: num_attention_heads {} is not a multiple of num_key_value_heads {}", p,
        c.n_heads, c.n_kv_heads);
  }
  c.head_dim = c.dim / c.n_heads;
  if (const json* hd = r.find("head_dim")) {
    auto v = r.int_value("head_dim", *hd, 1, 1 << 17);
    if (!v) return std::unexpected(v.error());
    if (*v != c.head_dim) {
      return fail(errc::unsupported,
                  "safetensors: {}: head_dim {} differs from hidden_size / heads = {}", p, *v,
                  c.head_dim);
    }
  }
  if (c.head_dim % 2 != 0) {
    return fail(errc::bad_format, "safetensors: {}: head_dim {} is odd (RoPE rotates pairs)", p,
                c.head_dim);
  }
  auto eps = r.get_positive_float("rms_norm_eps", 1e-6f);
  if (!eps) return std::unexpected(eps.error());
  c.rms_eps = *eps;
  auto theta = r.get_positive_float("rope_theta", 10000.0f);
  if (!theta) return std::unexpected(theta.error());
  c.rope_theta = *theta;
  auto tied = r.get_bool("tie_word_embeddings", false);
  if (!tied) return std::unexpected(tied.error());
  c.tied_output = *tied;  // also set below when the file has no lm_head.weight
  std::filesystem::path name_path = dir;
  if (name_path.filename().empty()) name_path = name_path.parent_path();
  c.name = name_path.filename().string();
  return c;
}

// ---- tensors -> weight views ---------------------------------------------------------------

class tensor_mapper {
 public:
  tensor_mapper(const std::map<std::string, safetensors::tensor_desc>& index, model_weights& m,
                std::string dir)
      : index_(index), m_(m), dir_(std::move(dir)) {}

  const safetensors::tensor_desc* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &it->second;
  }

  /// A [rows][cols] matrix, viewed in place (copied only when the file leaves it misaligned).
  result<weight> matrix(const std::string& name, int64_t rows, int64_t cols) {
    auto t = require(name, {rows, cols});
    if (!t) return std::unexpected(t.error());
    const auto* d = *t;
    const std::byte* data = d->data;
    if (reinterpret_cast<uintptr_t>(data) % uintptr_t(block_bytes(d->type)) != 0) {
      data = m_.keep(std::vector<std::byte>(d->data, d->data + d->size_bytes));
    }
    return weight{d->type, rows, cols, data};
  }

  /// A [dim] norm vector as f32 [1][dim] (converted into an owned buffer unless it is f32 already).
  result<weight> vector_f32(const std::string& name, int64_t dim) {
    auto t = require(name, {dim});
    if (!t) return std::unexpected(t.error());
    return m_.f32_vector((*t)->type, (*t)->data, dim);
  }

 private:
  result<const safetensors::tensor_desc*> require(const std::string& name,
                                                  const std::vector<int64_t>& shape) {
    const auto* d = find(name);
    if (d == nullptr)
      return fail(errc::bad_format, "safetensors: {}: missing tensor {}", dir_, name);
    if (d->shape != shape) {
      return fail(errc::bad_format,
                  "safetensors: {}: tensor {} has shape {}, config.json implies {}", dir_, name,
                  shape_str(d->shape), shape_str(shape));
    }
    return d;
  }

  const std::map<std::string, safetensors::tensor_desc>& index_;
  model_weights& m_;
  std::string dir_;
};

bool points_into(const mapped_file& f, const weight& w) {
  const std::byte* lo = f.data();
  return !w.empty() && lo != nullptr && w.data >= lo && w.data < lo + f.size();
}

}  // namespace

namespace safetensors {

result<std::map<std::string, tensor_desc>> read_index(const std::shared_ptr<mapped_file>& file) {
  const std::string path = file->path().string();
  if (file->size() < 8) {
    return fail(errc::truncated, "safetensors: {}: {} bytes, too short for the header length", path,
                file->size());
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i)
    header_len = (header_len << 8) | uint64_t(std::to_integer<uint8_t>(file->data()[i]));
  if (header_len < 2 || header_len > max_header_bytes) {
    return fail(errc::bad_format, "safetensors: {}: header length {} is not in [2, {}]", path,
                header_len, max_header_bytes);
  }
  if (!file->contains(8, header_len)) {
    return fail(errc::truncated,
                "safetensors: {}: header of {} bytes runs past the end of the file ({} bytes)",
                path, header_len, file->size());
  }
  const uint64_t data_start = 8 + header_len;
  std::map<std::string, tensor_desc> out;
  try {  // parsing does not throw (allow_exceptions = false); this guards the accessors
    const char* text = reinterpret_cast<const char*>(file->data() + 8);
    const json header = json::parse(text, text + header_len, nullptr, /*allow_exceptions=*/false);
    if (header.is_discarded() || !header.is_object()) {
      return fail(errc::bad_format, "safetensors: {}: header is not a JSON object", path);
    }
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") continue;
      auto t = parse_entry(file, name, entry, data_start);
      if (!t) return std::unexpected(t.error());
      out.emplace(name, std::move(*t));
    }
  } catch (const json::exception& e) {
    return fail(errc::bad_format, "safetensors: {}: bad header: {}", path, e.what());
  }
  return out;
}

}  // namespace safetensors

result<model_weights> load_hf_model(const std::filesystem::path& dir, const load_options& opts) {
  const std::string dir_name = dir.string();
  auto cfg = read_hf_config(dir);
  if (!cfg) return std::unexpected(cfg.error());

  // Every *.safetensors file in the directory: model.safetensors or model-0000k-of-0000n shards.
  std::vector<std::filesystem::path> shard_paths;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".safetensors" && it->is_regular_file(ec))
      shard_paths.push_back(it->path());
  }
  if (ec) return fail(errc::io_error, "safetensors: cannot list {}: {}", dir_name, ec.message());
  if (shard_paths.empty())
    return fail(errc::io_error, "safetensors: {}: no *.safetensors files", dir_name);
  std::sort(shard_paths.begin(), shard_paths.end());

  model_weights m;
  m.config = *cfg;
  m.format = "safetensors";
  std::vector<std::shared_ptr<mapped_file>> shards;
  std::map<std::string, safetensors::tensor_desc> index;
  for (const auto& p : shard_paths) {
    auto file = mapped_file::open(p);
    if (!file) return std::unexpected(file.error());
    auto part = safetensors::read_index(*file);
    if (!part) return std::unexpected(part.error());
    for (auto& [name, desc] : *part) {
      m.tensors.push_back(tensor_info{name, desc.type, desc.shape, desc.offset});
      if (!index.emplace(name, std::move(desc)).second) {
        return fail(errc::bad_format, "safetensors: {}: tensor {} appears in more than one file",
                    dir_name, name);
      }
    }
    shards.push_back(std::move(*file));
  }

  auto range = resolve_range(opts.layers, m.config.n_layers);
  if (!range) return std::unexpected(range.error());
  m.first_layer = range->first;
  m.last_layer = range->last;

  tensor_mapper map(index, m, dir_name);

  // The output head is tied when config.json says so or the file has no lm_head.weight. A tied
  // checkpoint may store only one of the two names (this repository's 656K model keeps lm_head).
  const std::string head_name = tensor_name(tensor_naming::hf, {llama_role::output});
  const std::string embed_name = tensor_name(tensor_naming::hf, {llama_role::token_embedding});
  const bool has_head = map.find(head_name) != nullptr;
  const bool has_embed = map.find(embed_name) != nullptr;
  m.config.tied_output = m.config.tied_output || !has_head;
  const std::string stored_embed_name = (!has_embed && has_head && m.config.tied_output) ? head_name : embed_name;

  m.layers.resize(size_t(m.last_layer - m.first_layer));
  for (const llama_tensor& t : stage_tensors(m.config.n_layers, {m.first_layer, m.last_layer})) {
    const llama_shape shape = shape_of(m.config, t.role);
    const bool embedding = t.role == llama_role::token_embedding;
    const bool tied_head = t.role == llama_role::output && m.config.tied_output;
    if (tied_head && m.is_first()) {  // the same view as the embedding
      m.output = m.token_embedding;
      continue;
    }
    const std::string name = (embedding || tied_head) ? stored_embed_name : tensor_name(tensor_naming::hf, t);
    auto w = shape.is_vector() ? map.vector_f32(name, shape.cols) : map.matrix(name, shape.rows, shape.cols);
    if (!w) return std::unexpected(w.error());
    slot(m, t) = *w;
  }

  // Keep only the shards this stage's views point into.
  for (auto& f : shards) {
    bool used = points_into(*f, m.token_embedding) || points_into(*f, m.final_norm) ||
                points_into(*f, m.output);
    for (const auto& l : m.layers) {
      for (llama_role role : llama_layer_roles) used = used || points_into(*f, slot(l, role));
    }
    if (used) m.files.push_back(std::move(f));
  }
  return m;
}

}  // namespace troupe::engine
