// The one place that knows which backends exist: every op in kernels.hpp dispatches here, and
// the CPU fast paths are picked here (AVX2 / AVX-512 when the CPU has them, portable loops else).
#include "engine/kernels.hpp"

#include <cstdlib>
#include <vector>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/thread_pool.hpp"

namespace troupe::engine::kernels {

const char* cpu_variant() { return cpu::variant_name(); }

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  if (cpu::has_avx2()) return cpu::avx2::rmsnorm(out, x, w, n, eps);
  cpu::rmsnorm(out, x, w, n, eps);
}
void softmax(float* x, int n) { cpu::softmax(x, n); }
void swiglu(float* gate, const float* up, int n) {
  if (cpu::has_avx2()) return cpu::avx2::swiglu(gate, up, n);
  cpu::swiglu(gate, up, n);
}
void add(float* x, const float* y, int n) {
  if (cpu::has_avx2()) return cpu::avx2::add(x, y, n);
  cpu::add(x, y, n);
}
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style) {
  cpu::rope(x, n_heads, head_dim, pos, theta, style);
}
void dequantize_row(const weight& w, int64_t row, float* out) { cpu::dequantize_row(w, row, out); }
void round_to_f16(float* x, int n) {
  if (cpu::has_avx2()) return cpu::avx2::round_to_f16(x, n);
  cpu::round_to_f16(x, n);
}
void to_f16(const float* x, uint16_t* out, int n) {
  if (cpu::has_avx2()) return cpu::avx2::to_f16(x, out, n);
  cpu::to_f16(x, out, n);
}

namespace {

bool integer_path(const weight& w, activations act) {
  return act == activations::q8 && (w.type == dtype::q8_0 || w.type == dtype::q4_0);
}

}  // namespace

void matmul_many(std::span<const matmul_out> outs, const float* x, int n_tokens, activations act, thread_pool* pool) {
  if (outs.empty() || n_tokens <= 0) return;
  const int64_t cols = outs[0].w->cols;
  int64_t total_rows = 0;
  bool any_integer = false, any_float_batch = false;
  for (const auto& o : outs) {
    TROUPE_ASSERT(o.w->cols == cols);
    total_rows += o.w->rows;
    any_integer |= integer_path(*o.w, act);
    any_float_batch |= !integer_path(*o.w, act) && n_tokens > 1;
  }

  // 1. Quantize the activations once for every integer-path weight (per token, so each token's
  //    blocks are the same whatever else is in the batch).
  thread_local std::vector<block_q8_0> xq_buffer;
  thread_local std::vector<float> xd_buffer;
  thread_local std::vector<int32_t> bias_buffer;
  thread_local std::vector<int8_t> qs_buffer;
  cpu::q8_activations xq{};
  if (any_integer) {
    const int64_t nb = cols / 32;
    xq_buffer.resize(size_t(n_tokens * nb));
    xd_buffer.resize(size_t(n_tokens * nb));
    bias_buffer.resize(size_t(n_tokens * nb));
    qs_buffer.resize(size_t(n_tokens * nb * 32));
    xq = {xq_buffer.data(), xd_buffer.data(), bias_buffer.data(), qs_buffer.data()};
    parallel_for(pool, n_tokens, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) cpu::quantize_activations_q8_0(x + t * cols, xq, t * nb, cols);
    }, 16);
  }

  // 2. One parallel pass over the rows of all products; a chunk may span two of them.
  //    Float batches go in multiples of the GEMM's 3-row tile. (The chunks change with the batch;
  //    the numbers do not: every kernel gives a row the same result whatever range holds it.)
  const int64_t grain = any_float_batch ? 48 : 16;
  parallel_for(pool, total_rows, [&](int64_t begin, int64_t end, int) {
    int64_t first = 0;
    for (const auto& o : outs) {
      const int64_t b = std::max(begin, first) - first;
      const int64_t e = std::min(end, first + o.w->rows) - first;
      if (b < e) {
        if (integer_path(*o.w, act)) {
          cpu::matmul_q8_rows(o.out, xq, n_tokens, *o.w, b, e);
        } else {
          cpu::matmul_f32_rows(o.out, x, n_tokens, *o.w, b, e);
        }
      }
      first += o.w->rows;
    }
  }, grain);
}

void matmul(float* out, const float* x, int n_tokens, const weight& w, thread_pool* pool) {
  const matmul_out o{out, &w};
  matmul_many({&o, 1}, x, n_tokens, activations::f32, pool);
}

size_t attention_scratch_floats(int n_heads, int n_ctx, int n_tok) {
  return size_t(n_tok) * size_t(n_heads) * size_t((n_ctx + 7) / 8 * 8);
}

void attention(float* out, const float* q, const kv_cache& kv, int layer, const int32_t* block_table, int n_ctx,
               int head_dim, int head_begin, int head_end, int group, float* scratch, int n_tok, int64_t ld_qo) {
  const int64_t off = int64_t(head_begin) * head_dim;
  cpu::attention_heads_fast(out + off, q + off, ld_qo, n_tok, kv, layer, block_table, n_ctx, head_dim,
                            head_end - head_begin, head_begin, group, scratch);
}

void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch) {
  cpu::attention_heads_fast(out, q, 0, 1, kv, layer, block_table, n_ctx, head_dim, 1, kv_head, 1, scratch);
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
