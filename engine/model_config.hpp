#pragma once
// Hyperparameters of a Llama-family model, as read from any of the three file formats.
#include <string>

namespace troupe::engine {

/// Which pairs of a head's dimensions RoPE rotates together.
enum class rope_style {
  interleaved,  // (2i, 2i+1): llama2.c checkpoints and GGUF "llama" files (q/k rows permuted)
  half,         // (i, i + head_dim/2): Hugging Face checkpoints (rotate_half)
};

struct model_config {
  std::string arch = "llama";
  std::string name;          // free text from the file's metadata, may be empty
  int dim = 0;               // embedding width
  int hidden_dim = 0;        // feed-forward width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;          // dim / n_heads
  int vocab_size = 0;
  int max_seq_len = 0;       // context the model was trained for (a default, not a hard limit)
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  rope_style rope = rope_style::interleaved;
  bool tied_output = false;  // output head shares the token embedding
  int bos_id = 1;
  int eos_id = 2;

  int kv_dim() const { return n_kv_heads * head_dim; }
  /// Weights one token reads in a transformer layer (q, k, v, output, gate, up, down) and in the
  /// output head: the work of each, to even out pipeline stages.
  double layer_weight_count() const {
    const double q = double(n_heads) * head_dim;
    return double(dim) * (q + 2.0 * kv_dim()) + q * dim + 3.0 * double(dim) * hidden_dim;
  }
  double head_weight_count() const { return double(vocab_size) * dim; }
};

}  // namespace troupe::engine
