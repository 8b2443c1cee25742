#include <cstring>
#include <fstream>

#include "engine/gguf.hpp"
#include "engine/llama2c.hpp"
#include "engine/model_weights.hpp"
#include "engine/safetensors.hpp"

namespace troupe::engine {

uint64_t model_weights::weight_bytes() const {
  auto bytes = [](const weight& w) -> uint64_t {
    return w.empty() ? 0 : uint64_t(w.rows) * uint64_t(w.row_stride());
  };
  uint64_t total = bytes(token_embedding) + bytes(final_norm);
  if (output.data != token_embedding.data) total += bytes(output);
  for (const auto& l : layers) {
    for (const weight* w : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate,
                            &l.w_down, &l.w_up}) {
      total += bytes(*w);
    }
  }
  return total;
}

result<layer_range> resolve_range(layer_range r, int n_layers) {
  const int last = r.last < 0 ? n_layers : r.last;
  if (r.first < 0 || r.first >= last || last > n_layers) {
    return fail(errc::invalid_argument, "layer range [{}, {}) is not inside [0, {})", r.first, last,
                n_layers);
  }
  return layer_range{r.first, last};
}

result<model_format> detect_format(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return model_format::safetensors_dir;
  if (!std::filesystem::exists(path, ec)) {
    return fail(errc::io_error, "model path {} does not exist", path.string());
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(errc::io_error, "cannot open {}", path.string());
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) return model_format::gguf;
  return model_format::llama2c;
}

result<model_weights> load_model(const std::filesystem::path& path, const load_options& opts) {
  auto fmt = detect_format(path);
  if (!fmt) return std::unexpected(fmt.error());
  switch (*fmt) {
    case model_format::gguf: return load_gguf_model(path, opts);
    case model_format::safetensors_dir: return load_hf_model(path, opts);
    case model_format::llama2c: return load_llama2c_model(path, opts);
  }
  return fail(errc::unsupported, "unknown model format");
}

}  // namespace troupe::engine
