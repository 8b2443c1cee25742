// AVX2/FMA/F16C matmul kernels (this file alone is compiled with -mavx2 -mfma -mf16c; callers
// check cpu::has_avx2() first). Plain pointers only, helpers in an anonymous namespace: nothing
// here may be shared with baseline code through an inline function or template.
//
// Q8_0 weights meet activations quantized to Q8_0 (ggml's scheme): per block of 32, the
// weights' absolute values times the activations carrying the weights' signs (maddubs), pairs
// summed to int32 (madd), converted to float and scaled by both block scales, blocks in order
// into one accumulator (as ggml does). Q4_0 weights come in the q4_0x16 layout (engine/tensor.hpp).
// Every (row, token) pair runs the same operations in the same order in every kernel variant
// below, so the result does not depend on how many tokens or rows a call covers. (No std::
// templates here either: std::min would be an inline function compiled with -mavx2.)
#include <immintrin.h>

#include <cstring>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx2 {
namespace {

inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// The 32 weights of a Q4_0 block as stored, unsigned in [0, 15]: low nibbles first, then high.
// (The value is q - 8; the kernels subtract 8 * the activations' sum instead, see below.)
inline __m256i unpack_q4(const uint8_t* qs) {
  const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0f));
}

inline __m256i load_q8(const int8_t* qs) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs)); }

// The int32 lanes of block b of a Q8_0 weight row (q: its values, abs_q: their magnitudes) times
// one token's block: |w| * (y with w's signs), pairs summed to int16 (maddubs), then to int32
// lanes of 4 (madd).
inline __m256i lanes_q8(__m256i abs_q, __m256i q, const int8_t* y) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(abs_q, _mm256_sign_epi8(load_q8(y), q)), _mm256_set1_epi16(1));
}
// The same for Q4_0: the stored nibbles u = q + 8 are unsigned, so maddubs takes them as they
// are, and each int32 lane of 4 products loses 8 * (the sum of those 4 activations), which
// quantization precomputed (y8). The lanes equal those of the signed product exactly.

// Rows [0, R) of w (nb blocks each) times tokens [0, T): one accumulator per (row, token) that
// takes the blocks in order, acc = fma(d_w * d_x, float(lanes), acc), then a horizontal sum:
// ggml's vec_dot_q8_0_q8_0 and llamafile's tinyBLAS_Q0 exactly, so a Q8_0 product is
// llama.cpp's to the bit, whatever the tile, batch or row range.
template <int R, int T>
inline void tile_q(float* out, int64_t ldo, const block_q8_0* xq, const float* xd, int64_t nb, const block_q8_0* w,
                   bool fetch) {
  __m256 acc[R][T];
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  // The next tile's rows follow these in memory: fetch them while this one computes (the same
  // share of them per block, a line ahead; `fetch`, the first token tile over these rows):
  // without it the tile stalls on memory at every batch size.
  const char* next = reinterpret_cast<const char*>(w + R * nb);
  constexpr int64_t step = R * int64_t(sizeof(block_q8_0));
  for (int64_t b = 0; b < nb; ++b) {
    if (fetch) {
      for (int64_t o = 0; o < step + 64; o += 64) _mm_prefetch(next + b * step + o, _MM_HINT_T0);
    }
    __m256i u[R], q[R];
    __m256 dw[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; ++i) {
      const block_q8_0& blk = w[i * nb + b];
      q[i] = load_q8(blk.qs);
      u[i] = _mm256_sign_epi8(q[i], q[i]);
      dw[i] = _mm256_set1_ps(f16(blk.d));
    }
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int64_t x = t * nb + b;
      const __m256 dx = _mm256_broadcast_ss(xd + x);
      #pragma GCC unroll 16
      for (int i = 0; i < R; ++i) {
        const __m256i l = lanes_q8(u[i], q[i], xq[x].qs);
        acc[i][t] = _mm256_fmadd_ps(_mm256_mul_ps(dw[i], dx), _mm256_cvtepi32_ps(l), acc[i][t]);
      }
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) out[t * ldo + i] = hsum(acc[i][t]);
}

template <int R>
inline void rows_times_tokens(float* out, int64_t ldo, const block_q8_0* xq, const float* xd, int n_tokens, int64_t nb,
                              const block_q8_0* w) {
  int t = 0;
  for (; t + 4 <= n_tokens; t += 4) tile_q<R, 4>(out + t * ldo, ldo, xq + t * nb, xd + t * nb, nb, w, t == 0);
  const int64_t o = t * nb;
  switch (n_tokens - t) {
    case 3: tile_q<R, 3>(out + t * ldo, ldo, xq + o, xd + o, nb, w, t == 0); break;
    case 2: tile_q<R, 2>(out + t * ldo, ldo, xq + o, xd + o, nb, w, t == 0); break;
    case 1: tile_q<R, 1>(out + t * ldo, ldo, xq + o, xd + o, nb, w, t == 0); break;
    default: break;
  }
}

// ---- Q4_0, q4_0x16 layout: a lane is a row, a ymm 8 rows (half of a group) ---------------------

inline __m256i group4(const int8_t* y, int k) {
  int32_t v;
  std::memcpy(&v, y + 4 * k, 4);
  return _mm256_set1_epi32(v);
}

// One half (h = 0: rows 0-7, 1: rows 8-15) of a 16-row group (its nb records at rec) times tokens
// [0, T): per block the exact int32 dot product of each row with the token's block (maddubs
// pairs added as int16: each pair is at most 2 * 15 * 127 in magnitude, the eight at most 30480,
// so nothing saturates; then to int32, plus the bias -8 * sum(y)), then acc = fma(d_w * d_x,
// float(dot), acc). Rows in `keep` (bit i: row i of the half) are written to out[t * ldo + i].
template <int T>
inline void q4_half(float* out, int64_t ldo, const int8_t* qs, const float* xd, const int32_t* bias, int64_t nb,
                    const std::byte* rec, int h, unsigned keep, bool fetch) {
  __m256 acc[T];
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; ++b) {
    const std::byte* r = rec + b * q4x16_record;
    if (fetch) {  // the records are one stream: fetch 8 KiB ahead (1, 2, 4 KiB were slower)
      for (int o = 0; o < q4x16_record + 64; o += 64) _mm_prefetch(reinterpret_cast<const char*>(r + 8192 + o), _MM_HINT_T0);
    }
    __m256i lo[4], hi[4];
    #pragma GCC unroll 16
    for (int k = 0; k < 4; ++k) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + 64 * k + 32 * h));
      lo[k] = _mm256_and_si256(v, low4);
      hi[k] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
    }
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 256 + 16 * h)));
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const int64_t x = t * nb + b;
      const int8_t* y = qs + 32 * x;
      __m256i s = _mm256_maddubs_epi16(lo[0], group4(y, 0));
      #pragma GCC unroll 16
      for (int k = 1; k < 4; ++k) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[k], group4(y, k)));
      #pragma GCC unroll 16
      for (int k = 0; k < 4; ++k) s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[k], group4(y, 4 + k)));
      const __m256i l = _mm256_add_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)), _mm256_set1_epi32(bias[x]));
      acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xd[x])), _mm256_cvtepi32_ps(l), acc[t]);
    }
  }
  #pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    if (keep == 0xff) {
      _mm256_storeu_ps(out + t * ldo, acc[t]);
    } else {
      alignas(32) float v[8];
      _mm256_store_ps(v, acc[t]);
      for (int i = 0; i < 8; ++i)
        if (keep >> i & 1) out[t * ldo + i] = v[i];
    }
  }
}

}  // namespace

void matmul_q8_0(float* out, int64_t ldo, const block_q8_0* xq, const float* xd, int n_tokens, const block_q8_0* w,
                 int64_t nb, int64_t row_begin, int64_t row_end) {
  int64_t r = row_begin;
  // One token: four rows give four independent FMA chains; more: 2 rows x 4 tokens per tile.
  if (n_tokens == 1) {
    for (; r + 4 <= row_end; r += 4) tile_q<4, 1>(out + r, ldo, xq, xd, nb, w + r * nb, true);
  } else {
    for (; r + 2 <= row_end; r += 2) rows_times_tokens<2>(out + r, ldo, xq, xd, n_tokens, nb, w + r * nb);
  }
  for (; r < row_end; ++r) rows_times_tokens<1>(out + r, ldo, xq, xd, n_tokens, nb, w + r * nb);
}

void matmul_q4_0(float* out, int64_t ldo, const int8_t* qs, const float* xd, const int32_t* q4_bias, int n_tokens,
                 const std::byte* packed, int64_t nb, int64_t row_begin, int64_t row_end) {
  for (int64_t g = row_begin / q4x16_rows; g * q4x16_rows < row_end; ++g) {
    const int64_t r0 = g * q4x16_rows;
    const int lo = int(row_begin > r0 ? row_begin - r0 : 0);
    const int hi = int(row_end < r0 + q4x16_rows ? row_end - r0 : q4x16_rows);
    const unsigned keep = ((1u << hi) - 1) & ~((1u << lo) - 1);
    const std::byte* rec = packed + g * nb * q4x16_record;
    for (int h = 0; h < 2; ++h) {
      const unsigned k = keep >> (8 * h) & 0xff;
      if (k == 0) continue;
      float* o = out + r0 + 8 * h;
      int t = 0;
      for (; t + 4 <= n_tokens; t += 4) q4_half<4>(o + t * ldo, ldo, qs + 32 * t * nb, xd + t * nb, q4_bias + t * nb, nb, rec, h, k, h == 0 && t == 0);
      const int64_t x = t * nb;
      switch (n_tokens - t) {
        case 3: q4_half<3>(o + t * ldo, ldo, qs + 32 * x, xd + x, q4_bias + x, nb, rec, h, k, h == 0 && t == 0); break;
        case 2: q4_half<2>(o + t * ldo, ldo, qs + 32 * x, xd + x, q4_bias + x, nb, rec, h, k, h == 0 && t == 0); break;
        case 1: q4_half<1>(o + t * ldo, ldo, qs + 32 * x, xd + x, q4_bias + x, nb, rec, h, k, h == 0 && t == 0); break;
        default: break;
      }
    }
  }
}

void quantize_q8_0(const float* x, block_q8_0* out, float* scales, int32_t* q4_bias, int8_t* qs, int64_t n) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < n / 32; ++i) {
    const float* p = x + i * 32;
    __m256 v0 = _mm256_loadu_ps(p), v1 = _mm256_loadu_ps(p + 8), v2 = _mm256_loadu_ps(p + 16),
           v3 = _mm256_loadu_ps(p + 24);
    __m256 m = _mm256_andnot_ps(sign_bit, v0);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v1));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v2));
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign_bit, v3));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const float amax = _mm_cvtss_f32(m4);
    const float d = amax / 127.0f;
    out[i].d = _cvtss_sh(d, 0);  // round to nearest even
    scales[i] = _cvtsh_ss(out[i].d);
    const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    constexpr int nearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, id), nearest));
    const __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, id), nearest));
    const __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, id), nearest));
    const __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, id), nearest));
    // packs work per 128-bit lane; the permute puts the 32 bytes back in order.
    const __m256i p16 = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    const __m256i q = _mm256_permutevar8x32_epi32(p16, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[i].qs), q);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs + 32 * i), q);
    // -8 * the sum of the block's values (the Q4_0 kernels add it: they multiply q + 8).
    const __m256i sums = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), q), _mm256_set1_epi16(1));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    q4_bias[i] = -_mm_cvtsi128_si32(s4);
  }
}

// ---- f32 GEMM: out[t * ldo + r] = x[t] . w[r] ------------------------------------------------
// Dot-product form on W as stored (no packing: each weight is read from memory once per call):
// a register tile of R rows x T tokens, one accumulator per (row, token) that runs over the
// columns eight at a time in order (the last 1..7 columns, if any, as one masked group of
// eight), then a horizontal sum. Every (row, token) pair therefore sees the same operations in
// the same order whatever the tile, the batch size or the row range, so f32 results do not
// depend on what else is in the batch (a GEMV is the T = 1 case).
namespace {

// Lanes [0, n) of eight set, for the last group of a row (n in [1, 7]); masked loads read
// nothing past the row and give 0 in the other lanes.
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// With Prefetch, also asks for the next R rows (the next tile's) at the same columns: the first
// token tile of a row group is otherwise stalled on memory.
template <int R, int T, bool Prefetch = false>
inline void tile_f32(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, int64_t cols) {
  __m256 acc[R][T];
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) acc[i][t] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    if constexpr (Prefetch) {
      if ((c & 15) == 0) {
        #pragma GCC unroll 16
        for (int i = 0; i < R; ++i) _mm_prefetch(reinterpret_cast<const char*>(w + (R + i) * cols + c), _MM_HINT_T0);
      }
    }
    __m256 wv[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = _mm256_loadu_ps(w + i * cols + c);
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x + t * ldx + c);
      #pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  if (c < cols) {
    const __m256i m = tail_mask(cols - c);
    __m256 wv[R];
    #pragma GCC unroll 16
    for (int i = 0; i < R; ++i) wv[i] = _mm256_maskload_ps(w + i * cols + c, m);
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_maskload_ps(x + t * ldx + c, m);
      #pragma GCC unroll 16
      for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  #pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
    #pragma GCC unroll 16
    for (int t = 0; t < T; ++t) out[t * ldo + i] = hsum(acc[i][t]);
}

// Rows [r, r + R) against all tokens, T at a time, then the 1..T-1 left over.
template <int R, int T>
inline void rows_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols) {
  int t = 0;
  if (t + T <= n_tokens) {
    tile_f32<R, T, true>(out, ldo, x, cols, w, cols);
    t += T;
  }
  for (; t + T <= n_tokens; t += T) tile_f32<R, T>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
  if constexpr (T > 1) {
    const int left = n_tokens - t;
    if (left > 0) {
      if constexpr (T > 2) {
        if (left >= 2) {
          tile_f32<R, 2>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
          t += 2;
        }
      }
      if (t < n_tokens) tile_f32<R, 1>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
    }
  }
}

}  // namespace

void gemm_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols, int64_t row_begin,
              int64_t row_end) {
  int64_t r = row_begin;
  if (n_tokens == 1) {
    // One token: memory-bound; 8 rows give 8 independent FMA chains.
    for (; r + 8 <= row_end; r += 8) tile_f32<8, 1, true>(out + r, ldo, x, cols, w + r * cols, cols);
    for (; r < row_end; ++r) tile_f32<1, 1>(out + r, ldo, x, cols, w + r * cols, cols);
    return;
  }
  for (; r + 3 <= row_end; r += 3) rows_f32<3, 4>(out + r, ldo, x, n_tokens, w + r * cols, cols);
  for (; r < row_end; ++r) rows_f32<1, 4>(out + r, ldo, x, n_tokens, w + r * cols, cols);
}

void gemv_f16(float* out, const float* x, const uint16_t* w, int64_t cols, int64_t row_begin, int64_t row_end) {
  // As tile_f32<R, 1> on the weights converted to f32: one accumulator per row, columns in order,
  // so that this equals gemm_f32 on a dequantized tile bit for bit.
  auto load = [&](int64_t r, int64_t c) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + r * cols + c)));
  };
  int64_t r = row_begin;
  for (; r + 4 <= row_end; r += 4) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t c = 0; c < cols; c += 8) {
      const __m256 xv = _mm256_loadu_ps(x + c);
      a0 = _mm256_fmadd_ps(load(r, c), xv, a0);
      a1 = _mm256_fmadd_ps(load(r + 1, c), xv, a1);
      a2 = _mm256_fmadd_ps(load(r + 2, c), xv, a2);
      a3 = _mm256_fmadd_ps(load(r + 3, c), xv, a3);
    }
    out[r] = hsum(a0);
    out[r + 1] = hsum(a1);
    out[r + 2] = hsum(a2);
    out[r + 3] = hsum(a3);
  }
  for (; r < row_end; ++r) {
    __m256 a0 = _mm256_setzero_ps();
    for (int64_t c = 0; c < cols; c += 8) a0 = _mm256_fmadd_ps(load(r, c), _mm256_loadu_ps(x + c), a0);
    out[r] = hsum(a0);
  }
}

void f16_to_f32(const uint16_t* h, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  }
  for (; i < n; ++i) out[i] = _cvtsh_ss(h[i]);
}

float dot(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i < n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  return hsum(_mm256_add_ps(s0, s1));
}

void axpy(float* y, float a, const float* x, int n) {
  const __m256 av = _mm256_set1_ps(a);
  for (int i = 0; i < n; i += 8) {
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  }
}

}  // namespace troupe::engine::cpu::avx2
