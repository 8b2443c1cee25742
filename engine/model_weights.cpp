// model_weights: storage helpers, layer ranges, format detection and the one load_model entry.
#include "engine/model_weights.hpp"

#include <cstring>
#include <fstream>

#include "engine/fp16.hpp"
#include "engine/gguf.hpp"
#include "engine/llama2c.hpp"
#include "engine/llama_tensors.hpp"
#include "engine/safetensors.hpp"

namespace troupe::engine {

uint64_t model_weights::weight_bytes() const {
  auto bytes = [](const weight& w) -> uint64_t {
    return w.empty() ? 0 : uint64_t(w.rows) * uint64_t(w.row_stride());
  };
  uint64_t total = bytes(token_embedding) + bytes(final_norm);
  if (output.data != token_embedding.data) total += bytes(output);
  for (const auto& l : layers) {
    for (llama_role role : llama_layer_roles) total += bytes(slot(l, role));
  }
  return total;
}

void model_weights::pack_for_kernels() {
  auto pack = [&](weight& w) {
    if (w.type != dtype::q4_0 || w.empty() || w.packed != nullptr) return;
    w.packed = keep(pack_q4_0x16(reinterpret_cast<const block_q4_0*>(w.data), w.rows, w.cols / 32));
  };
  for (auto& l : layers) {
    for (llama_role role : llama_layer_roles) pack(slot(l, role));
  }
  pack(output);
}

weight model_weights::f32_vector(dtype type, const std::byte* src, int64_t n) {
  TROUPE_ASSERT(type == dtype::f32 || type == dtype::f16 || type == dtype::bf16);
  if (type == dtype::f32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
    return weight{dtype::f32, 1, n, src};
  }
  std::vector<std::byte> out(size_t(n) * sizeof(float));
  for (int64_t i = 0; i < n; ++i) {
    float x = 0;
    if (type == dtype::f32) {
      std::memcpy(&x, src + i * 4, 4);
    } else {
      uint16_t h = 0;
      std::memcpy(&h, src + i * 2, 2);
      x = type == dtype::f16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
    std::memcpy(out.data() + i * 4, &x, 4);
  }
  return weight{dtype::f32, 1, n, keep(std::move(out))};
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
  result<model_weights> m = fail(errc::unsupported, "unknown model format");
  switch (*fmt) {
    case model_format::gguf: m = load_gguf_model(path, opts); break;
    case model_format::safetensors_dir: m = load_hf_model(path, opts); break;
    case model_format::llama2c: m = load_llama2c_model(path, opts); break;
  }
  if (m) m->pack_for_kernels();
  return m;
}

}  // namespace troupe::engine
