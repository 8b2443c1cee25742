// The one place that knows which backends exist: every op in kernels.hpp dispatches here.
#include "engine/kernels.hpp"

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/thread_pool.hpp"

namespace troupe::engine::kernels {

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) { cpu::rmsnorm(out, x, w, n, eps); }
void softmax(float* x, int n) { cpu::softmax(x, n); }
void swiglu(float* gate, const float* up, int n) { cpu::swiglu(gate, up, n); }
void add(float* x, const float* y, int n) { cpu::add(x, y, n); }
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style) {
  cpu::rope(x, n_heads, head_dim, pos, theta, style);
}
void dequantize_row(const weight& w, int64_t row, float* out) { cpu::dequantize_row(w, row, out); }

void matmul(float* out, const float* x, int n_tokens, const weight& w, thread_pool* pool) {
  // Work split by output rows; each thread handles whole rows for every token.
  parallel_for(pool, w.rows, [&](int64_t begin, int64_t end, int) {
    cpu::matmul_ref_rows(out, x, n_tokens, w, begin, end);
  }, 16);
}

void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch) {
  cpu::attention_head(out, q, kv, layer, kv_head, block_table, n_ctx, head_dim, scratch);
}

}  // namespace troupe::engine::kernels

namespace troupe::engine::kernels::ref {

void matmul(float* out, const float* x, int n_tokens, const weight& w) {
  cpu::matmul_ref_rows(out, x, n_tokens, w, 0, w.rows);
}
void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch) {
  cpu::attention_head(out, q, kv, layer, kv_head, block_table, n_ctx, head_dim, scratch);
}

}  // namespace troupe::engine::kernels::ref
