#pragma once
// CPU kernels (reference and fast paths). Only engine/kernels.cpp and tests include this.
//
// Four families: the plain references (matmul_ref_rows, attention_head), portable fast paths
// (dot products per (row, token) the compiler vectorizes, scalar integer dot products), the
// AVX2/FMA/F16C ones in cpu::avx2 (*_avx2.cpp, compiled with -mavx2 -mfma -mf16c, called only
// when has_avx2()) and the AVX-512 integer kernels in cpu::avx512 and cpu::avx512_vnni
// (*_avx512.cpp, *_avx512vnni.cpp, called only when has_avx512() / has_avx512_vnni()). The
// variant is chosen once at run time (cpu_features.cpp). Every fast path is batch-invariant: a
// token's result does not depend on the batch, the row range or the thread count.
#include <cstdint>
#include <optional>
#include <string_view>

#include "engine/error.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model_config.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine::cpu {

// ---- CPU features -------------------------------------------------------------------------------

/// Kernel variants, each needing everything the one before it needs: scalar (portable C++), avx2
/// (AVX2 + FMA + F16C), avx512 (also AVX-512 F/BW/VL; its integer kernels use VNNI where present).
enum class isa { scalar, avx2, avx512 };
const char* isa_name(isa v);
std::optional<isa> parse_isa(std::string_view name);
/// The best variant this CPU has (cpuid, checked once).
isa detected_isa();
/// The variant the kernels use: detected_isa(), or a lower one asked for with TROUPE_CPU.
isa active_isa();
/// Switches variant (tests, benchmarks). Refuses one the CPU lacks: returns false, changes nothing.
bool set_isa(isa v);
bool has_avx2();         // active_isa() >= avx2
bool has_avx512();       // active_isa() >= avx512
bool has_avx512_vnni();  // has_avx512() and the CPU has AVX-512 VNNI
/// The active variant as benchmarks report it: scalar, avx2, avx512 or avx512-vnni.
const char* variant_name();

// ---- element-wise (references; small next to the matmuls) ---------------------------------------

void rmsnorm(float* out, const float* x, const float* w, int n, float eps);
void softmax(float* x, int n);
void swiglu(float* gate, const float* up, int n);
void add(float* x, const float* y, int n);
void round_to_f16(float* x, int n);
void to_f16(const float* x, uint16_t* out, int n);
void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style);

// ---- matmul -------------------------------------------------------------------------------------

void dequantize_row(const weight& w, int64_t row, float* out);
/// Rows [row_begin, row_end) of out = x . W^T, reference algorithm (dequantize row, dot).
void matmul_ref_rows(float* out, const float* x, int n_tokens, const weight& w, int64_t row_begin,
                     int64_t row_end);

/// Rows [row_begin, row_end) of out = x . W^T with float activations, fastest path for the dtype:
/// f32 weights: avx512::gemm_f32 or avx2::gemm_f32 (the same bits; a portable dot product per
/// (row, token) without AVX2); other dtypes: dequantize a tile of rows, then the same. `out` is
/// [n_tokens][w.rows]. Batch-invariant: a (row, token) result does not depend on n_tokens or the
/// row range.
void matmul_f32_rows(float* out, const float* x, int n_tokens, const weight& w, int64_t row_begin,
                     int64_t row_end);

/// Activations quantized for the integer kernels: per block of 32, ggml's Q8_0 block, its scale
/// as a float, -8 * the sum of its values (Q4_0 kernels: they multiply the stored nibbles q + 8)
/// and its values again, packed. Plain pointers into buffers of n_tokens * cols / 32 blocks
/// (q4_bias: one int32 per block, qs: 32 int8 per block).
struct q8_activations {
  block_q8_0* blocks;
  float* scales;
  int32_t* q4_bias;
  int8_t* qs;  // the blocks' values alone, 32 bytes per block, packed
};

/// Quantizes n floats (a multiple of 32) of activations exactly as ggml's quantize_row_q8_0
/// does (scale = amax / 127 stored as f16, values rounded to nearest even), into block `first`
/// onwards of a.
void quantize_activations_q8_0(const float* x, const q8_activations& a, int64_t first, int64_t n);

/// Rows [row_begin, row_end) of out = xq . W^T for Q8_0 or Q4_0 weights and activations already
/// quantized ([n_tokens][w.cols / 32] blocks): integer dot products per block, scaled by both
/// block scales (llama.cpp's CPU scheme). Every output element is computed by the same sequence
/// of operations whatever n_tokens and the row range are.
void matmul_q8_rows(float* out, const q8_activations& a, int n_tokens, const weight& w, int64_t row_begin,
                    int64_t row_end);

// ---- attention ----------------------------------------------------------------------------------

/// Reference: scores, softmax, weighted sum (weights rounded to f16 first, as llama.cpp's f16 V
/// cache product does), in plain loops over the paged cache.
void attention_head(float* out, const float* q, const kv_cache& kv, int layer, int kv_head,
                    const int32_t* block_table, int n_ctx, int head_dim, float* scratch);
/// Query heads first_head .. first_head + n_q - 1 of n_tok consecutive tokens of a sequence
/// (token i at positions [0, n_ctx + i); q and out point at the first token's first head, a
/// token's vectors ld_qo floats apart; query head h reads kv head h / group), AVX2 when available
/// (head_dim a multiple of 8), reading blocks in place. scratch:
/// attention_scratch_floats(n_q, n_ctx + n_tok - 1, n_tok).
void attention_heads_fast(float* out, const float* q, int64_t ld_qo, int n_tok, const kv_cache& kv, int layer,
                          const int32_t* block_table, int n_ctx, int head_dim, int n_q, int first_head, int group,
                          float* scratch);

// ---- AVX2 kernels (call only when has_avx2()) ---------------------------------------------------
// Plain pointers and integers only: these files are compiled with -mavx2, so they must not
// instantiate inline functions or templates that other (baseline) files also use.
namespace avx2 {

/// out[t * ldo + r] = dot(x[t], w row r) for t in [0, n_tokens), r in [row_begin, row_end); w is
/// [rows][cols] f32 and x [n_tokens][cols], any cols. No packing; each (row, token) result
/// is bitwise the same whatever n_tokens and the row range (batch-invariant).
void gemm_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols, int64_t row_begin,
              int64_t row_end);
/// The same for one token and f16 weights (F16C conversion on the fly), cols % 8 == 0.
void gemv_f16(float* out, const float* x, const uint16_t* w, int64_t cols, int64_t row_begin, int64_t row_end);
/// out[i] = f16 h[i] as float.
void f16_to_f32(const uint16_t* h, float* out, int64_t n);

/// Also writes q4_bias (per block, -8 * the sum of its values) and qs (the 32 values of each
/// block, packed).
void quantize_q8_0(const float* x, block_q8_0* out, float* scales, int32_t* q4_bias, int8_t* qs, int64_t n);

/// out[t * ldo + r] for t in [0, n_tokens), r in [row_begin, row_end): integer dot products of
/// Q8_0 weight rows (nb blocks each) with Q8_0 activations (nb blocks per token, scales as
/// floats in xd).
void matmul_q8_0(float* out, int64_t ldo, const block_q8_0* xq, const float* xd, int n_tokens,
                 const block_q8_0* w, int64_t nb, int64_t row_begin, int64_t row_end);
/// The same for Q4_0 weights in the q4_0x16 layout (packed: pack_q4_0x16's bytes) against the
/// activations' packed values qs and q4_bias.
void matmul_q4_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, const int32_t* q4_bias, int n_tokens,
                 const std::byte* packed, int64_t nb, int64_t row_begin, int64_t row_end);

/// sum_i a[i] * b[i], n % 8 == 0.
float dot(const float* a, const float* b, int n);

/// The element-wise ops above, eight lanes at a time (any n).
void rmsnorm(float* out, const float* x, const float* w, int n, float eps);
void swiglu(float* gate, const float* up, int n);
void add(float* x, const float* y, int n);
void round_to_f16(float* x, int n);
void to_f16(const float* x, uint16_t* out, int n);
/// cpu::rope's rotation of every head's pairs by the angles' cos/sin (FMA, as cpu::rope).
void rope_rotate(float* x, int n_heads, int head_dim, const float* cos, const float* sin, bool interleaved);

/// attention_heads_fast on raw cache pointers, in two halves: attention_weights writes the
/// softmax weights of every token and head into scratch, attention_values sums the values with
/// them into out. Position t's key for first_head's kv head is k0 + block_table[t / block_size] *
/// block_stride + (t % block_size) * slot_stride (values likewise from v0); head_dim % 8 == 0.
/// Tokens i in [0, n_tok) (q and out at i * ld_qo) see positions [0, n_ctx + i). Every output
/// float sums its positions in order, and a head's result does not depend on which other heads
/// or tokens share the call.
void attention_weights(const float* q, int64_t ld_qo, int n_tok, const uint16_t* k0, int64_t block_stride,
                       int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim,
                       int n_q, int first_head, int group, float* scratch);
void attention_values(float* out, int64_t ld_qo, int n_tok, const uint16_t* v0, int64_t block_stride,
                      int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim,
                      int n_q, int first_head, int group, const float* scratch);

}  // namespace avx2

// ---- AVX-512 kernels (call only when has_avx512(); avx512_vnni: has_avx512_vnni()) -------------
// As avx2::matmul_q8_0 / matmul_q4_0, bit for bit (matmul_q8_0 reading the packed activation
// values q8_activations::qs). Two files, one kernel source (matmul_avx512.inc).
namespace avx512 {
void matmul_q8_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, int n_tokens, const block_q8_0* w,
                 int64_t nb, int64_t row_begin, int64_t row_end);
void matmul_q4_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, const int32_t* q4_bias, int n_tokens,
                 const std::byte* packed, int64_t nb, int64_t row_begin, int64_t row_end);
/// avx2::gemm_f32, bit for bit (two rows per zmm).
void gemm_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols, int64_t row_begin,
              int64_t row_end);
/// avx2::attention_values, bit for bit (16 values of a head per zmm).
void attention_values(float* out, int64_t ld_qo, int n_tok, const uint16_t* v0, int64_t block_stride,
                      int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim,
                      int n_q, int first_head, int group, const float* scratch);
}  // namespace avx512
namespace avx512_vnni {
void matmul_q8_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, int n_tokens, const block_q8_0* w,
                 int64_t nb, int64_t row_begin, int64_t row_end);
void matmul_q4_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, const int32_t* q4_bias, int n_tokens,
                 const std::byte* packed, int64_t nb, int64_t row_begin, int64_t row_end);
}  // namespace avx512_vnni

}  // namespace troupe::engine::cpu
