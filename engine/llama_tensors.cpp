#include "engine/llama_tensors.hpp"

#include <fmt/format.h>

#include "engine/error.hpp"

namespace troupe::engine {

namespace {

/// A role's names: GGUF (after "blk.N."), Hugging Face (after "model.layers.N."), llama2.c.
struct role_names {
  llama_role role;
  const char* gguf;
  const char* hf;
  const char* llama2c;
};

constexpr role_names names[] = {
    {llama_role::token_embedding, "token_embd.weight", "model.embed_tokens.weight", "token_embedding_table"},
    {llama_role::attn_norm, "attn_norm.weight", "input_layernorm.weight", "rms_att_weight"},
    {llama_role::wq, "attn_q.weight", "self_attn.q_proj.weight", "wq"},
    {llama_role::wk, "attn_k.weight", "self_attn.k_proj.weight", "wk"},
    {llama_role::wv, "attn_v.weight", "self_attn.v_proj.weight", "wv"},
    {llama_role::wo, "attn_output.weight", "self_attn.o_proj.weight", "wo"},
    {llama_role::ffn_norm, "ffn_norm.weight", "post_attention_layernorm.weight", "rms_ffn_weight"},
    {llama_role::w_gate, "ffn_gate.weight", "mlp.gate_proj.weight", "w1"},
    {llama_role::w_down, "ffn_down.weight", "mlp.down_proj.weight", "w2"},
    {llama_role::w_up, "ffn_up.weight", "mlp.up_proj.weight", "w3"},
    {llama_role::final_norm, "output_norm.weight", "model.norm.weight", "rms_final_weight"},
    {llama_role::output, "output.weight", "lm_head.weight", "wcls"},
};

const role_names& names_of(llama_role r) {
  const auto& n = names[size_t(r)];
  TROUPE_ASSERT(n.role == r);
  return n;
}

}  // namespace

bool is_layer_role(llama_role r) {
  return r != llama_role::token_embedding && r != llama_role::final_norm && r != llama_role::output;
}

llama_shape shape_of(const model_config& c, llama_role r) {
  const int64_t q_dim = int64_t(c.n_heads) * c.head_dim;
  switch (r) {
    case llama_role::token_embedding:
    case llama_role::output: return {c.vocab_size, c.dim};
    case llama_role::attn_norm:
    case llama_role::ffn_norm:
    case llama_role::final_norm: return {0, c.dim};
    case llama_role::wq: return {q_dim, c.dim};
    case llama_role::wk:
    case llama_role::wv: return {c.kv_dim(), c.dim};
    case llama_role::wo: return {c.dim, q_dim};
    case llama_role::w_gate:
    case llama_role::w_up: return {c.hidden_dim, c.dim};
    case llama_role::w_down: return {c.dim, c.hidden_dim};
  }
  TROUPE_ASSERT(!"unknown llama_role");
  return {};
}

std::string tensor_name(tensor_naming naming, const llama_tensor& t) {
  const role_names& n = names_of(t.role);
  const bool per_layer = is_layer_role(t.role);
  switch (naming) {
    case tensor_naming::gguf: return per_layer ? fmt::format("blk.{}.{}", t.layer, n.gguf) : n.gguf;
    case tensor_naming::hf: return per_layer ? fmt::format("model.layers.{}.{}", t.layer, n.hf) : n.hf;
    case tensor_naming::llama2c: return n.llama2c;
  }
  TROUPE_ASSERT(!"unknown tensor_naming");
  return {};
}

std::vector<llama_tensor> stage_tensors(int n_layers, layer_range r) {
  TROUPE_ASSERT(r.first >= 0 && r.first <= r.last && r.last <= n_layers);
  std::vector<llama_tensor> out;
  if (r.first == 0) out.push_back({llama_role::token_embedding});
  for (int l = r.first; l < r.last; ++l) {
    for (llama_role role : llama_layer_roles) out.push_back({role, l});
  }
  if (r.last == n_layers) {
    out.push_back({llama_role::final_norm});
    out.push_back({llama_role::output});
  }
  return out;
}

weight& slot(layer_weights& l, llama_role r) {
  switch (r) {
    case llama_role::attn_norm: return l.attn_norm;
    case llama_role::wq: return l.wq;
    case llama_role::wk: return l.wk;
    case llama_role::wv: return l.wv;
    case llama_role::wo: return l.wo;
    case llama_role::ffn_norm: return l.ffn_norm;
    case llama_role::w_gate: return l.w_gate;
    case llama_role::w_down: return l.w_down;
    case llama_role::w_up: return l.w_up;
    default: break;
  }
  TROUPE_ASSERT(!"not a per-layer llama_role");
  return l.attn_norm;
}

const weight& slot(const layer_weights& l, llama_role r) { return slot(const_cast<layer_weights&>(l), r); }

weight& slot(model_weights& m, const llama_tensor& t) {
  switch (t.role) {
    case llama_role::token_embedding: return m.token_embedding;
    case llama_role::final_norm: return m.final_norm;
    case llama_role::output: return m.output;
    default: break;
  }
  TROUPE_ASSERT(t.layer >= m.first_layer && t.layer < m.last_layer &&
                size_t(t.layer - m.first_layer) < m.layers.size());
  return slot(m.layers[size_t(t.layer - m.first_layer)], t.role);
}

}  // namespace troupe::engine
