// AVX-512 half of the attention (compiled with -mavx512f -mavx512bw -mavx512vl; callers check
// cpu::has_avx512() first): out = sum_t p_t v_t as avx2::attention_values computes it, every
// output float one FMA per position in position order, so the bits are the same; a zmm holds 16
// of a head's values (one conversion of 16 f16 values from the cache where AVX2 converts 8).
#include <immintrin.h>

#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx512 {
namespace {

// o[0, 16W + 8H) (+)= sum over the n positions j of p[j] * v[rows[j] + 0 ..): W zmm and H (0 or 1)
// ymm of accumulators in registers, positions in order.
template <int W, int H>
inline void weighted_sum(float* o, const uint16_t* v, const int64_t* rows, const float* p, int n, bool first) {
  __m512 acc[W > 0 ? W : 1];
  __m256 tail = _mm256_setzero_ps();
  for (int k = 0; k < W; ++k) acc[k] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(o + 16 * k);
  if (H && !first) tail = _mm256_loadu_ps(o + 16 * W);
  for (int j = 0; j < n; ++j) {
    const __m512 pv = _mm512_set1_ps(p[j]);
    const uint16_t* vr = v + rows[j];
    for (int k = 0; k < W; ++k) {
      const __m512 x = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(vr + 16 * k)));
      acc[k] = _mm512_fmadd_ps(pv, x, acc[k]);
    }
    if (H) {
      const __m256 x = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vr + 16 * W)));
      tail = _mm256_fmadd_ps(_mm512_castps512_ps256(pv), x, tail);
    }
  }
  for (int k = 0; k < W; ++k) _mm512_storeu_ps(o + 16 * k, acc[k]);
  if (H) _mm256_storeu_ps(o + 16 * W, tail);
}

// attention_values.inc's chunk: width / 16 zmm, and a ymm for the last 8 where width / 8 is odd.
inline void weighted_chunk(float* o, const uint16_t* v, const int64_t* rows, const float* p, int n, bool first,
                           int width) {
  switch (width / 8) {
    case 8: weighted_sum<4, 0>(o, v, rows, p, n, first); break;
    case 7: weighted_sum<3, 1>(o, v, rows, p, n, first); break;
    case 6: weighted_sum<3, 0>(o, v, rows, p, n, first); break;
    case 5: weighted_sum<2, 1>(o, v, rows, p, n, first); break;
    case 4: weighted_sum<2, 0>(o, v, rows, p, n, first); break;
    case 3: weighted_sum<1, 1>(o, v, rows, p, n, first); break;
    case 2: weighted_sum<1, 0>(o, v, rows, p, n, first); break;
    default: weighted_sum<0, 1>(o, v, rows, p, n, first); break;
  }
}

}  // namespace

#include "engine/cpu/attention_values.inc"

}  // namespace troupe::engine::cpu::avx512
