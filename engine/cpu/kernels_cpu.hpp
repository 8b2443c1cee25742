#pragma once
// CPU kernels (reference and fast paths). Only engine/kernels.cpp and tests include this.
#include <cstdint>

#include "engine/kv_cache.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine::cpu {

void rmsnorm(float* out, const float* x, const float* w, int n, float eps);
void softmax(float* x, int n);
void swiglu(float* gate, const float* up, int n);
void add(float* x, const float* y, int n);
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style);

void dequantize_row(const weight& w, int64_t row, float* out);
/// Rows [row_begin, row_end) of out = x . W^T, reference algorithm (dequantize row, dot).
void matmul_ref_rows(float* out, const float* x, int n_tokens, const weight& w, int64_t row_begin,
                     int64_t row_end);

void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch);

}  // namespace troupe::engine::cpu
