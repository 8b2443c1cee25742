#pragma once
// Every op declared once. kernels.cpp is the only file that knows which backends exist and picks
// the fast path (cpu/ AVX2, OpenBLAS; cuda/ later); kernels::ref holds the plain, readable
// reference versions the tests compare the fast paths against.
#include <cstdint>

#include "engine/kv_cache.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine {

class thread_pool;

namespace kernels {

/// out[i] = x[i] / rms(x) * w[i]  (out may alias x)
void rmsnorm(float* out, const float* x, const float* w, int n, float eps);

/// out[t][r] = sum_c x[t][c] * W[r][c] for t in [0, n_tokens), r in [0, W.rows).
/// x is [n_tokens][W.cols] f32; W is f32, f16, bf16, q8_0 or q4_0.
void matmul(float* out, const float* x, int n_tokens, const weight& w, thread_pool* pool);

/// Row `row` of W as floats (W.cols values).
void dequantize_row(const weight& w, int64_t row, float* out);

/// Rotates each head of x ([n_heads][head_dim]) for position pos.
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style);

/// In-place softmax over n values.
void softmax(float* x, int n);

/// gate[i] = silu(gate[i]) * up[i]
void swiglu(float* gate, const float* up, int n);

/// x[i] += y[i]
void add(float* x, const float* y, int n);

/// Causal attention of one query head over positions [0, n_ctx) of one sequence in the paged
/// cache (its block table maps logical -> physical blocks), reading kv head `kv_head`.
/// q and out hold head_dim floats; scratch holds n_ctx floats.
void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch);

}  // namespace kernels

namespace kernels::ref {
/// Scalar references: dequantize each row and dot in plain loops, one thread.
void matmul(float* out, const float* x, int n_tokens, const weight& w);
void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch);
}  // namespace kernels::ref

/// Quantizes `n` floats (a multiple of 32) into Q8_0 / Q4_0 blocks the way ggml does.
void quantize_q8_0(const float* x, block_q8_0* out, int64_t n);
void quantize_q4_0(const float* x, block_q4_0* out, int64_t n);

}  // namespace troupe::engine
