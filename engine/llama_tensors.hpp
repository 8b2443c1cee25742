#pragma once
// The llama tensor table, once for every loader and writer: which tensors a llama model has, their
// names in each file format, their shapes from the model_config, and which of them a stage of
// layers [first, last) maps. GGUF, Hugging Face, llama2.c and the synthetic-model writer all read it.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_config.hpp"
#include "engine/model_weights.hpp"

namespace troupe::engine {

/// The part a tensor plays in a llama model.
enum class llama_role : uint8_t {
  token_embedding,  // [vocab][dim]
  attn_norm,        // [dim]              per layer
  wq,               // [n_heads*head_dim][dim]
  wk,               // [kv_dim][dim]
  wv,               // [kv_dim][dim]
  wo,               // [dim][n_heads*head_dim]
  ffn_norm,         // [dim]
  w_gate,           // [hidden_dim][dim]  (w1)
  w_down,           // [dim][hidden_dim]  (w2)
  w_up,             // [hidden_dim][dim]  (w3)
  final_norm,       // [dim]
  output,           // [vocab][dim]       (may be tied to the token embedding)
};

/// A layer's tensors, in the order of layer_weights (and of llama.cpp's and llama2.c's files).
inline constexpr std::array<llama_role, 9> llama_layer_roles = {
    llama_role::attn_norm, llama_role::wq,     llama_role::wk,     llama_role::wv,  llama_role::wo,
    llama_role::ffn_norm,  llama_role::w_gate, llama_role::w_down, llama_role::w_up};

/// File formats, each with its own tensor names.
enum class tensor_naming { gguf, hf, llama2c };

/// One tensor of a model: its role and, for the per-layer roles, its global layer (-1 otherwise).
struct llama_tensor {
  llama_role role;
  int layer = -1;
};

/// Shape [rows][cols]; rows == 0 for a vector of cols (the norms).
struct llama_shape {
  int64_t rows = 0;
  int64_t cols = 0;
  bool is_vector() const { return rows == 0; }
};

bool is_layer_role(llama_role r);
llama_shape shape_of(const model_config& c, llama_role r);

/// The tensor's name in files of `naming`: "blk.3.attn_q.weight" (GGUF),
/// "model.layers.3.self_attn.q_proj.weight" (HF), "wq" (llama2.c: all layers in one array).
std::string tensor_name(tensor_naming naming, const llama_tensor& t);

/// The tensors a stage of layers `r` (resolved: last != -1) maps, in load order: the token
/// embedding when r.first == 0, each layer's tensors, then the final norm and the output head when
/// r.last == n_layers. The output head is listed even when it is tied (the loader aliases it).
std::vector<llama_tensor> stage_tensors(int n_layers, layer_range r);

/// Where a tensor's view lives in a model_weights of that stage (layers[layer - first_layer]).
weight& slot(model_weights& m, const llama_tensor& t);
weight& slot(layer_weights& l, llama_role r);
const weight& slot(const layer_weights& l, llama_role r);

}  // namespace troupe::engine
