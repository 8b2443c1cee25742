#pragma once
// Every op declared once. kernels.cpp is the only file that knows which backends exist and picks
// the fast path (cpu/ AVX2 and AVX-512; cuda/ later); kernels::ref holds the plain, readable
// reference versions the tests compare the fast paths against.
#include <cstdint>
#include <span>

#include "engine/kv_cache.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine {

class thread_pool;

namespace kernels {

/// The CPU kernel variant in use: "scalar", "avx2", "avx512" or "avx512-vnni" (picked once by
/// cpuid; TROUPE_CPU=scalar|avx2|avx512 asks for a lower one).
const char* cpu_variant();

/// out[i] = x[i] / rms(x) * w[i]  (out may alias x)
void rmsnorm(float* out, const float* x, const float* w, int n, float eps);

/// out[t][r] = sum_c x[t][c] * W[r][c] for t in [0, n_tokens), r in [0, W.rows).
/// x is [n_tokens][W.cols] f32; W is f32, f16, bf16, q8_0 or q4_0.
void matmul(float* out, const float* x, int n_tokens, const weight& w, thread_pool* pool);

/// How activations meet Q8_0 / Q4_0 weights in matmul_many (float weights ignore it).
enum class activations {
  f32,  // dequantized weights times float activations: the reference numbers
  q8,   // each token's activations quantized to Q8_0 blocks, integer dot products per block
        // (llama.cpp's CPU scheme): about twice as fast, relative error ~1e-3 against f32
};

/// One product of matmul_many: out ([n_tokens][w->rows]) = x . W^T.
struct matmul_out {
  float* out;
  const weight* w;
};

/// Several matmuls that read the same x (q/k/v; gate/up): one pass over the pool, x quantized
/// once. Every output element is computed by the same operations whatever the batch, the other
/// products in the call and the thread count (batch-invariant: a token's numbers are the same
/// served beside others as alone, to the bit), for every dtype and kernel variant.
void matmul_many(std::span<const matmul_out> outs, const float* x, int n_tokens, activations act,
                 thread_pool* pool);

/// Row `row` of W as floats (W.cols values).
void dequantize_row(const weight& w, int64_t row, float* out);

/// Rotates each head of x ([n_heads][head_dim]) for position pos.
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style);

/// x[i] = x[i] rounded to the nearest f16 value (round to nearest even). The forward pass keeps
/// q, k and v this way, as llama.cpp's default f16 KV cache does (its attention multiplies f16 q
/// and k, then f16 softmax weights and v, summing in f32): with the same GGUF file troupe then
/// takes llama.cpp's tokens (tests/integration/engine/test_reference_traces.cpp).
void round_to_f16(float* x, int n);
/// out[i] = x[i] as an f16 (round to nearest even): a row of the KV cache.
void to_f16(const float* x, uint16_t* out, int n);

/// In-place softmax over n values.
void softmax(float* x, int n);

/// gate[i] = silu(gate[i]) * up[i]
void swiglu(float* gate, const float* up, int n);

/// x[i] += y[i]
void add(float* x, const float* y, int n);

/// Floats of scratch that attention needs for n_heads query heads of n_tok tokens whose
/// longest context is n_ctx positions.
size_t attention_scratch_floats(int n_heads, int n_ctx, int n_tok = 1);

/// Causal attention of query heads [head_begin, head_end) of n_tok consecutive tokens of one
/// sequence: token i over positions [0, n_ctx + i) (softmax weights rounded to f16 before they
/// weight v, as llama.cpp's f16 V cache product does) of its sequence in the paged cache (its
/// block table maps logical -> physical blocks); query head h reads kv head h / group. q and out
/// are the first token's whole q / output vectors (head_dim floats per head), the next token's
/// ld_qo floats further; scratch holds attention_scratch_floats(head_end - head_begin,
/// n_ctx + n_tok - 1, n_tok). Several tokens in one call read the cache once (prefill); a head's
/// result does not depend on the range of heads or tokens it is computed in.
void attention(float* out, const float* q, const kv_cache& kv, int layer, const int32_t* block_table, int n_ctx,
               int head_dim, int head_begin, int head_end, int group, float* scratch, int n_tok = 1,
               int64_t ld_qo = 0);

/// One query head reading kv head `kv_head`; q and out hold head_dim floats.
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
