// Fast matmul paths on a range of output rows (the caller's thread pool splits the rows): the
// AVX2 GEMM for float activations, integer dot products for Q8_0/Q4_0 weights against Q8_0
// activations, and portable fallbacks for CPUs without AVX2. Every path computes a (row, token)
// result with the same operations whatever the batch size and the row range, so that a
// sequence served beside others gets `troupe generate`'s numbers to the bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/fp16.hpp"

namespace troupe::engine::cpu {
namespace {

// x . w, portable: eight partial sums (lane j takes columns j, j + 8, ...) in column order, then
// a fixed tree; plain loops the compiler vectorizes with baseline SSE2.
float dot_portable(const float* w, const float* x, int64_t cols) {
  float acc[8] = {};
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += w[c + j] * x[c + j];
  }
  for (int j = 0; c + j < cols; ++j) acc[j] += w[c + j] * x[c + j];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// out[t * ldo + r] = x[t] . w[r] for r in [0, n_rows), t in [0, n_tokens): the AVX2 GEMM (no
// packing, any cols) or, without AVX2, one portable dot product per (row, token). Both are
// batch-invariant; OpenBLAS is not (its sgemm and sgemv sum in orders that depend on the shape
// of the call), so it is not used here.
void f32_rows(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t n_rows, int64_t cols) {
  if (has_avx512()) {
    avx512::gemm_f32(out, ldo, x, n_tokens, w, cols, 0, n_rows);
    return;
  }
  if (has_avx2()) {
    avx2::gemm_f32(out, ldo, x, n_tokens, w, cols, 0, n_rows);
    return;
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int t = 0; t < n_tokens; ++t) out[t * ldo + r] = dot_portable(w + r * cols, x + t * cols, cols);
  }
}

// Dequantizes rows [first, first + n) of w into tile ([n][cols] floats).
void dequantize_rows(const weight& w, int64_t first, int64_t n, float* tile) {
  if (w.type == dtype::f16 && has_avx2()) {
    avx2::f16_to_f32(reinterpret_cast<const uint16_t*>(w.row(first)), tile, n * w.cols);
    return;
  }
  for (int64_t i = 0; i < n; ++i) dequantize_row(w, first + i, tile + i * w.cols);
}

// Per-block integer dot products, portable: the fallback for matmul_q8_rows without AVX2, with
// the SIMD kernels' arithmetic. Q8_0: eight lanes (element j in lane j / 4), each taking
// fma(d_w * d_x, float(lane), acc) per block, then the AVX2 horizontal sum. Q4_0: one accumulator,
// fma(d_w * d_x, float(block dot), acc) per block.
float dot_q8_0_portable(const block_q8_0* w, const int8_t* y, const float* xd, int64_t nb) {
  float acc[8] = {};
  for (int64_t b = 0; b < nb; ++b) {
    const float s = f16_to_f32(w[b].d) * xd[b];
    for (int lane = 0; lane < 8; ++lane) {
      int32_t l = 0;
      for (int j = 4 * lane; j < 4 * lane + 4; ++j) l += int(w[b].qs[j]) * y[32 * b + j];
      acc[lane] = std::fma(s, float(l), acc[lane]);
    }
  }
  // avx2::hsum: (lo + hi halves), then pairs, then the last two.
  float h[4];
  for (int i = 0; i < 4; ++i) h[i] = acc[i] + acc[i + 4];
  const float a0 = h[0] + h[2], a1 = h[1] + h[3];
  return a0 + a1;
}

float dot_q4_0_portable(const block_q4_0* w, const int8_t* y, const float* xd, int64_t nb) {
  float acc = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t l = 0;
    for (int j = 0; j < 16; ++j) {
      l += (int(w[b].qs[j] & 0x0f) - 8) * y[32 * b + j];
      l += (int(w[b].qs[j] >> 4) - 8) * y[32 * b + j + 16];
    }
    acc = std::fma(f16_to_f32(w[b].d) * xd[b], float(l), acc);
  }
  return acc;
}

}  // namespace

void matmul_f32_rows(float* out, const float* x, int n_tokens, const weight& w, int64_t row_begin, int64_t row_end) {
  const int64_t cols = w.cols;
  const int64_t n_rows = row_end - row_begin;
  if (n_rows <= 0) return;
  if (w.type == dtype::f32) {
    f32_rows(out + row_begin, w.rows, x, n_tokens, w.f32() + row_begin * cols, n_rows, cols);
    return;
  }
  if (w.type == dtype::f16 && n_tokens == 1 && has_avx2() && cols % 8 == 0) {
    avx2::gemv_f16(out, x, reinterpret_cast<const uint16_t*>(w.data), cols, row_begin, row_end);
    return;
  }
  // Other dtypes: dequantize a tile of rows (small enough to stay in cache), then as for f32.
  thread_local std::vector<float> tile;
  const int64_t tile_rows = std::max<int64_t>(4, (n_tokens == 1 ? (32 << 10) : (512 << 10)) / (cols * 4));
  tile.resize(size_t(std::min(tile_rows, n_rows) * cols));
  for (int64_t r = row_begin; r < row_end; r += tile_rows) {
    const int64_t n = std::min(tile_rows, row_end - r);
    dequantize_rows(w, r, n, tile.data());
    f32_rows(out + r, w.rows, x, n_tokens, tile.data(), n, cols);
  }
}

void quantize_activations_q8_0(const float* x, const q8_activations& a, int64_t first, int64_t n) {
  block_q8_0* out = a.blocks + first;
  float* scales = a.scales + first;
  if (has_avx2()) {
    avx2::quantize_q8_0(x, out, scales, a.q4_bias + first, a.qs + 32 * first, n);
    return;
  }
  // The same arithmetic as the AVX2 version (and ggml): id = 127 / amax, round half to even.
  for (int64_t i = 0; i < n / 32; ++i) {
    const float* p = x + i * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(p[j]));
    out[i].d = f32_to_f16(amax / 127.0f);
    scales[i] = f16_to_f32(out[i].d);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    for (int j = 0; j < 32; ++j) out[i].qs[j] = int8_t(std::nearbyint(p[j] * id));
    std::copy_n(out[i].qs, 32, a.qs + 32 * (first + i));
    int32_t sum = 0;
    for (int j = 0; j < 32; ++j) sum += out[i].qs[j];
    a.q4_bias[first + i] = -8 * sum;
  }
}

void matmul_q8_rows(float* out, const q8_activations& a, int n_tokens, const weight& w, int64_t row_begin,
                    int64_t row_end) {
  const float* xd = a.scales;
  TROUPE_ASSERT(w.type == dtype::q8_0 || w.type == dtype::q4_0);
  const int64_t nb = w.cols / 32;
  if (w.type == dtype::q4_0 && has_avx2() && w.packed != nullptr) {
    const auto kernel = has_avx512_vnni() ? avx512_vnni::matmul_q4_0 : has_avx512() ? avx512::matmul_q4_0 : avx2::matmul_q4_0;
    kernel(out, w.rows, a.qs, xd, a.q4_bias, n_tokens, w.packed, nb, row_begin, row_end);
    return;
  }
  if (w.type == dtype::q8_0 && has_avx512()) {
    const auto* wq = reinterpret_cast<const block_q8_0*>(w.data);
    (has_avx512_vnni() ? avx512_vnni::matmul_q8_0 : avx512::matmul_q8_0)(out, w.rows, a.qs, xd, n_tokens, wq, nb,
                                                                         row_begin, row_end);
    return;
  }
  if (w.type == dtype::q8_0 && has_avx2()) {
    avx2::matmul_q8_0(out, w.rows, a.blocks, xd, n_tokens, reinterpret_cast<const block_q8_0*>(w.data), nb, row_begin,
                      row_end);
    return;
  }
  // Portable (no AVX2, or a Q4_0 weight without its q4_0x16 copy): the same numbers.
  for (int64_t r = row_begin; r < row_end; ++r) {
    for (int t = 0; t < n_tokens; ++t) {
      const int8_t* y = a.qs + 32 * t * nb;
      out[t * w.rows + r] = w.type == dtype::q8_0
                                ? dot_q8_0_portable(reinterpret_cast<const block_q8_0*>(w.row(r)), y, xd + t * nb, nb)
                                : dot_q4_0_portable(reinterpret_cast<const block_q4_0*>(w.row(r)), y, xd + t * nb, nb);
    }
  }
}


}  // namespace troupe::engine::cpu
