// Attention of one query head over a sequence's positions in the paged KV cache. Reads K/V rows
// in place through the block table (no gathering copy).
#include <cmath>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/fp16.hpp"

namespace troupe::engine::cpu {

void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch) {
  const int bs = kv.block_size();
  const int off = kv_head * head_dim;
  const float scale = 1.0f / std::sqrt(float(head_dim));
  // 1. scores = q . k_t / sqrt(d) for every visible position t
  float max = -INFINITY;
  for (int t = 0; t < n_ctx; ++t) {
    const uint16_t* k = kv.k(layer, block_table[t / bs], t % bs) + off;
    float s = 0.0f;
    for (int i = 0; i < head_dim; ++i) s += q[i] * f16_to_f32(k[i]);
    s *= scale;
    scratch[t] = s;
    max = std::fmax(max, s);
  }
  // 2. softmax
  float sum = 0.0f;
  for (int t = 0; t < n_ctx; ++t) {
    scratch[t] = std::exp(scratch[t] - max);
    sum += scratch[t];
  }
  const float inv = 1.0f / sum;
  // 3. out = sum_t p_t v_t
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int t = 0; t < n_ctx; ++t) {
    const uint16_t* v = kv.v(layer, block_table[t / bs], t % bs) + off;
    const float p = f16_to_f32(f32_to_f16(scratch[t] * inv));
    for (int i = 0; i < head_dim; ++i) out[i] += p * f16_to_f32(v[i]);
  }
}

void attention_heads_fast(float* out, const float* q, int64_t ld_qo, int n_tok, const kv_cache& kv, int layer,
                          const int32_t* block_table, int n_ctx, int head_dim, int n_q, int first_head, int group,
                          float* scratch) {
  if (!has_avx2() || head_dim % 8 != 0) {
    for (int t = 0; t < n_tok; ++t) {
      for (int i = 0; i < n_q; ++i) {
        attention_head(out + t * ld_qo + int64_t(i) * head_dim, q + t * ld_qo + int64_t(i) * head_dim, kv, layer,
                       (first_head + i) / group, block_table, n_ctx + t, head_dim, scratch);
      }
    }
    return;
  }
  const int off = first_head / group * head_dim;
  const uint16_t* k0 = kv.k(layer, 0, 0) + off;
  const uint16_t* v0 = kv.v(layer, 0, 0) + off;
  // Within a layer the cache is affine in (block, slot); take the strides from the accessors.
  const int64_t slot_stride = kv.block_size() > 1 ? kv.k(layer, 0, 1) - kv.k(layer, 0, 0) : 0;
  const int64_t block_stride = kv.n_blocks() > 1 ? kv.k(layer, 1, 0) - kv.k(layer, 0, 0) : 0;
  TROUPE_ASSERT(kv.n_blocks() <= 1 || kv.v(layer, 1, 0) - kv.v(layer, 0, 0) == block_stride);
  avx2::attention_weights(q, ld_qo, n_tok, k0, block_stride, slot_stride, kv.block_size(), block_table, n_ctx,
                          head_dim, n_q, first_head, group, scratch);
  // The values' half reads 16 f16 values per conversion with AVX-512 (a position's values are
  // contiguous); the keys' half stays AVX2 (its 8-lane sums per position fix the bits).
  (has_avx512() ? avx512::attention_values : avx2::attention_values)(out, ld_qo, n_tok, v0, block_stride, slot_stride,
                                                                     kv.block_size(), block_table, n_ctx, head_dim, n_q,
                                                                     first_head, group, scratch);
}

}  // namespace troupe::engine::cpu
