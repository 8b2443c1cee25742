#pragma once
// The weights of a model, or of a contiguous range of its layers (a pipeline stage's share).
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine {

/// Half-open range of global layer indices [first, last). last == -1 means "to the end".
struct layer_range {
  int first = 0;
  int last = -1;
};

struct layer_weights {
  weight attn_norm;  // f32 [1][dim]
  weight wq;         // [n_heads*head_dim][dim]
  weight wk;         // [n_kv_heads*head_dim][dim]
  weight wv;         // [n_kv_heads*head_dim][dim]
  weight wo;         // [dim][n_heads*head_dim]
  weight ffn_norm;   // f32 [1][dim]
  weight w_gate;     // [hidden_dim][dim]  (w1)
  weight w_down;     // [dim][hidden_dim]  (w2)
  weight w_up;       // [hidden_dim][dim]  (w3)
};

/// One tensor as the file describes it (for `troupe model info`).
struct tensor_info {
  std::string name;
  dtype type;
  std::vector<int64_t> shape;  // outermost first, e.g. {rows, cols}
  uint64_t offset = 0;         // byte offset in its file
};

struct model_weights {
  model_config config;
  std::string format;  // "gguf", "safetensors", "llama2c"
  int first_layer = 0;
  int last_layer = 0;  // exclusive

  weight token_embedding;              // [vocab][dim]; present when first_layer == 0
  std::vector<layer_weights> layers;   // layers[i] is global layer first_layer + i
  weight final_norm;                   // f32 [1][dim]; present when last_layer == n_layers
  weight output;                       // [vocab][dim]; present when last_layer == n_layers (may alias the embedding)

  std::vector<tensor_info> tensors;    // every tensor in the file (not only the mapped range)

  bool is_first() const { return first_layer == 0; }
  bool is_last() const { return last_layer == config.n_layers; }
  int n_local_layers() const { return last_layer - first_layer; }

  // Storage the views point into: mapped files and buffers the loader converted.
  std::vector<std::shared_ptr<mapped_file>> files;
  std::deque<std::vector<std::byte>> owned;

  /// Keeps `bytes` alive with the model and returns a pointer to the kept copy.
  const std::byte* keep(std::vector<std::byte> bytes) {
    owned.push_back(std::move(bytes));
    return owned.back().data();
  }
  /// A vector of n F32, F16 or BF16 values at `src` as an f32 [1][n] weight: a view when it is f32
  /// and 4-byte aligned, else converted into a buffer kept with the model.
  weight f32_vector(dtype type, const std::byte* src, int64_t n);
  /// Gives every Q4_0 matrix (the layers' and the output's) its copy in the integer kernels'
  /// layout (weight::packed), kept in `owned`. load_model does this; idempotent.
  void pack_for_kernels();
  /// Total bytes of tensor data this object references (mapped or owned).
  uint64_t weight_bytes() const;
};

enum class model_format { gguf, safetensors_dir, llama2c };

struct load_options {
  layer_range layers;
};

/// Detects the format: a directory is Hugging Face (config.json + *.safetensors), a file
/// starting with "GGUF" is GGUF, anything else is tried as a llama2.c checkpoint.
result<model_format> detect_format(const std::filesystem::path& path);

/// Loads (maps) the requested layer range of a model in any supported format.
result<model_weights> load_model(const std::filesystem::path& path, const load_options& opts = {});

/// Validates a requested range against n_layers and resolves last == -1.
result<layer_range> resolve_range(layer_range r, int n_layers);

}  // namespace troupe::engine
