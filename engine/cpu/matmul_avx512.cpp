// AVX-512 F/BW/VL kernels (this file alone is compiled with -mavx512f -mavx512bw -mavx512vl;
// callers check cpu::has_avx512() first): the Q8_0 and Q4_0 kernels (in matmul_avx512.inc,
// shared with the VNNI file) and the f32 GEMM (below).
#include <immintrin.h>

#include <cstring>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx512 {
#define TROUPE_KERNEL_VNNI 0
#include "engine/cpu/matmul_avx512.inc"
}  // namespace troupe::engine::cpu::avx512

// ---- f32 GEMM, AVX-512: avx2::gemm_f32's arithmetic, two rows per zmm ---------------------------
// A zmm holds eight columns of two weight rows (lanes 0-7 row r, 8-15 row r + 1) against the same
// eight columns of a token broadcast to both halves: each half is exactly the AVX2 kernel's
// accumulator for its (row, token) (same columns in the same order, the last 1..7 as one
// zero-filled group, then the same horizontal sum), so the results are avx2::gemm_f32's bit for
// bit, with half the FMA instructions.
namespace troupe::engine::cpu::avx512 {
namespace {

using avx2::hsum;

// (AVX-512 F only: the f32x8 forms of insert, extract and broadcast are DQ.)
inline __m512 join(__m256 lo, __m256 hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}
inline __m256 high(__m512 v) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)); }
inline __m512 both(__m256 v) { return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(v))); }

// Tile of the batched GEMM: 3 row pairs x 8 tokens (24 accumulators; on 110M prefill 2x8, 4x4,
// 3x6 and 2x12 were slower, and 4x6 spills).
constexpr int tile_pairs = 3, tile_tokens = 8;

inline __m512 pair_at(const float* w, int64_t cols, int64_t c) {
  return join(_mm256_loadu_ps(w + c), _mm256_loadu_ps(w + cols + c));
}
inline __m512 pair_tail(const float* w, int64_t cols, int64_t c, __mmask8 m) {
  return join(_mm256_maskz_loadu_ps(m, w + c), _mm256_maskz_loadu_ps(m, w + cols + c));
}

// Row pairs [0, P) (rows [0, 2P) of w) times tokens [0, T) of x. With Prefetch, also asks for the
// next 2P rows (the next tile's) at the same columns.
template <int P, int T, bool Prefetch = false>
inline void tile_f32(float* out, int64_t ldo, const float* x, int64_t ldx, const float* w, int64_t cols) {
  __m512 acc[P][T];
  for (int i = 0; i < P; ++i)
    for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) {
    if constexpr (Prefetch) {
      if ((c & 15) == 0) {
        for (int i = 0; i < 2 * P; ++i) _mm_prefetch(reinterpret_cast<const char*>(w + (2 * P + i) * cols + c), _MM_HINT_T0);
      }
    }
    __m512 wv[P];
    for (int i = 0; i < P; ++i) wv[i] = pair_at(w + 2 * i * cols, cols, c);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = both(_mm256_loadu_ps(x + t * ldx + c));
      for (int i = 0; i < P; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  if (c < cols) {
    const __mmask8 m = __mmask8((1u << (cols - c)) - 1);
    __m512 wv[P];
    for (int i = 0; i < P; ++i) wv[i] = pair_tail(w + 2 * i * cols, cols, c, m);
    for (int t = 0; t < T; ++t) {
      const __m512 xv = both(_mm256_maskz_loadu_ps(m, x + t * ldx + c));
      for (int i = 0; i < P; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  for (int i = 0; i < P; ++i) {
    for (int t = 0; t < T; ++t) {
      out[t * ldo + 2 * i] = hsum(_mm512_castps512_ps256(acc[i][t]));
      out[t * ldo + 2 * i + 1] = hsum(high(acc[i][t]));
    }
  }
}

// One row (an odd last one) times one token, in ymm: the same lanes and order.
inline float row_times_token(const float* x, const float* w, int64_t cols) {
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= cols; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + c), _mm256_loadu_ps(x + c), acc);
  if (c < cols) {
    const __mmask8 m = __mmask8((1u << (cols - c)) - 1);
    acc = _mm256_fmadd_ps(_mm256_maskz_loadu_ps(m, w + c), _mm256_maskz_loadu_ps(m, x + c), acc);
  }
  return hsum(acc);
}

// Row pairs [0, P) against all tokens, T at a time (the first tile prefetching the next rows),
// then the tokens left over in tiles of 2 and 1 (T <= 4).
template <int P, int T>
inline void pairs_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols) {
  static_assert(T <= 4);
  int t = 0;
  if (t + T <= n_tokens) {
    tile_f32<P, T, true>(out, ldo, x, cols, w, cols);
    t += T;
  }
  for (; t + T <= n_tokens; t += T) tile_f32<P, T>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
  if constexpr (T > 2) {
    if (t + 2 <= n_tokens) {
      tile_f32<P, 2>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
      t += 2;
    }
  }
  if constexpr (T > 1) {
    if (t < n_tokens) tile_f32<P, 1>(out + t * ldo, ldo, x + t * cols, cols, w, cols);
  }
}

}  // namespace

void gemm_f32(float* out, int64_t ldo, const float* x, int n_tokens, const float* w, int64_t cols, int64_t row_begin,
              int64_t row_end) {
  int64_t r = row_begin;
  if (n_tokens == 1) {
    // One token: memory-bound; 4 row pairs give 4 independent FMA chains, prefetching the next 8 rows.
    for (; r + 8 <= row_end; r += 8) tile_f32<4, 1, true>(out + r, ldo, x, cols, w + r * cols, cols);
    for (; r + 2 <= row_end; r += 2) pairs_f32<1, 1>(out + r, ldo, x, 1, w + r * cols, cols);
    if (r < row_end) out[r] = row_times_token(x, w + r * cols, cols);
    return;
  }
  // Rows in blocks of ~128 KiB of weights (they stay in L2), and for each block: tokens 8 at a
  // time (that tile of activations stays in L1), every row group of the block over it. Weights
  // come from memory once (the first token tile prefetches the next row group's), activations
  // from L2/L3 once per block.
  constexpr int R = 2 * tile_pairs;
  const int64_t full_end = row_begin + (row_end - row_begin) / R * R;
  const int64_t fit = (int64_t(128) << 10) / (cols * 4) / R * R;
  const int64_t block = fit > R ? fit : R;
  for (int64_t r0 = row_begin; r0 < full_end; r0 += block) {
    const int64_t r1 = r0 + block < full_end ? r0 + block : full_end;
    int t = 0;
    for (; t + tile_tokens <= n_tokens; t += tile_tokens) {
      for (r = r0; r < r1; r += R) {
        if (t == 0) {
          tile_f32<tile_pairs, tile_tokens, true>(out + r, ldo, x, cols, w + r * cols, cols);
        } else {
          tile_f32<tile_pairs, tile_tokens>(out + t * ldo + r, ldo, x + t * cols, cols, w + r * cols, cols);
        }
      }
    }
    if (t < n_tokens) {
      for (r = r0; r < r1; r += R) {
        pairs_f32<tile_pairs, 4>(out + t * ldo + r, ldo, x + t * cols, n_tokens - t, w + r * cols, cols);
      }
    }
  }
  r = full_end;
  for (; r + 2 <= row_end; r += 2) pairs_f32<1, 4>(out + r, ldo, x, n_tokens, w + r * cols, cols);
  if (r < row_end) {
    for (int t = 0; t < n_tokens; ++t) out[t * ldo + r] = row_times_token(x + t * cols, w + r * cols, cols);
  }
}

}  // namespace troupe::engine::cpu::avx512
