#pragma once
// An in-memory Llama model with deterministic random weights, for engine tests that must not
// depend on file loaders.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/kernels.hpp"
#include "engine/model_weights.hpp"

namespace troupe::test {

inline float rand_weight(uint64_t& state, float scale) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return (float((state >> 40) & 0xffffff) / 16777216.0f * 2.0f - 1.0f) * scale;
}

/// n random floats in [-scale, scale), the same for the same seed.
inline std::vector<float> randv(size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  for (auto& x : v) x = rand_weight(seed, scale);
  return v;
}

/// A weight of `rows` x `cols` in dtype t (quantized from random floats), kept alive by m.
inline engine::weight make_weight(engine::model_weights& m, engine::dtype t, int64_t rows, int64_t cols,
                                  uint64_t& state, float scale, bool ones = false) {
  std::vector<float> f(size_t(rows * cols));
  for (auto& v : f) v = ones ? 1.0f + rand_weight(state, 0.1f) : rand_weight(state, scale);
  std::vector<std::byte> bytes(size_t(rows * *engine::row_bytes(t, cols)));
  switch (t) {
    case engine::dtype::f32: std::memcpy(bytes.data(), f.data(), bytes.size()); break;
    case engine::dtype::q8_0:
      engine::quantize_q8_0(f.data(), reinterpret_cast<engine::block_q8_0*>(bytes.data()), rows * cols);
      break;
    case engine::dtype::q4_0:
      engine::quantize_q4_0(f.data(), reinterpret_cast<engine::block_q4_0*>(bytes.data()), rows * cols);
      break;
    default: break;
  }
  engine::weight w{t, rows, cols, m.keep(std::move(bytes))};
  if (t == engine::dtype::q4_0) {
    w.packed = m.keep(engine::pack_q4_0x16(reinterpret_cast<const engine::block_q4_0*>(w.data), rows, cols / 32));
  }
  return w;
}

struct random_model_shape {
  int dim = 64, hidden = 160, layers = 4, heads = 4, kv_heads = 2, vocab = 96, ctx = 128;
  engine::rope_style rope = engine::rope_style::interleaved;
  engine::dtype type = engine::dtype::f32;
};

/// Builds the full model; slice() below narrows it to a layer range (views stay valid while the
/// full model lives).
inline engine::model_weights make_random_model(const random_model_shape& s, uint64_t seed = 42) {
  engine::model_weights m;
  auto& c = m.config;
  c.dim = s.dim; c.hidden_dim = s.hidden; c.n_layers = s.layers; c.n_heads = s.heads; c.n_kv_heads = s.kv_heads;
  c.head_dim = s.dim / s.heads; c.vocab_size = s.vocab; c.max_seq_len = s.ctx; c.rope = s.rope;
  c.rms_eps = 1e-5f;
  m.format = "memory";
  m.first_layer = 0;
  m.last_layer = s.layers;
  uint64_t st = seed;
  const float sc = 1.0f / std::sqrt(float(s.dim));
  const int hd = c.head_dim;
  m.token_embedding = make_weight(m, s.type, s.vocab, s.dim, st, 1.0f);
  for (int l = 0; l < s.layers; ++l) {
    engine::layer_weights L;
    L.attn_norm = make_weight(m, engine::dtype::f32, 1, s.dim, st, 0, true);
    L.wq = make_weight(m, s.type, s.heads * hd, s.dim, st, sc);
    L.wk = make_weight(m, s.type, s.kv_heads * hd, s.dim, st, sc);
    L.wv = make_weight(m, s.type, s.kv_heads * hd, s.dim, st, sc);
    L.wo = make_weight(m, s.type, s.dim, s.heads * hd, st, sc);
    L.ffn_norm = make_weight(m, engine::dtype::f32, 1, s.dim, st, 0, true);
    L.w_gate = make_weight(m, s.type, s.hidden, s.dim, st, sc);
    L.w_down = make_weight(m, s.type, s.dim, s.hidden, st, 1.0f / std::sqrt(float(s.hidden)));
    L.w_up = make_weight(m, s.type, s.hidden, s.dim, st, sc);
    m.layers.push_back(L);
  }
  m.final_norm = make_weight(m, engine::dtype::f32, 1, s.dim, st, 0, true);
  m.output = make_weight(m, s.type, s.vocab, s.dim, st, sc);
  return m;
}

/// A view of layers [first, last) of a full in-memory model (no copies).
inline engine::model_weights slice(const engine::model_weights& full, int first, int last) {
  engine::model_weights m;
  m.config = full.config;
  m.format = full.format;
  m.first_layer = first;
  m.last_layer = last;
  if (first == 0) m.token_embedding = full.token_embedding;
  m.layers.assign(full.layers.begin() + first, full.layers.begin() + last);
  if (last == full.config.n_layers) {
    m.final_norm = full.final_norm;
    m.output = full.output;
  }
  return m;
}

}  // namespace troupe::test
