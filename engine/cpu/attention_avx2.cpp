// AVX2 attention of the query heads of one or more consecutive tokens of a sequence over the
// paged KV cache (compiled with -mavx2 -mfma), in two halves (the softmax weights, then the sum
// of the values; attention_avx512.cpp has the second half too): reads each position's keys and
// values in place through the block table, no gathering copy, once per call. A token's result
// is the same bits whichever call (alone, or with its neighbours) computes it.
#include <immintrin.h>
#include <math.h>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx2 {
namespace {

// exp(x) for x <= 0 (softmax after subtracting the max); inputs below -87, -inf included, give 0.
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  return _mm256_andnot_ps(underflow, exp_in_range(_mm256_max_ps(x, lo)));
}

// Eight f16 values of the cache as floats.
inline __m256 load_f16(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// o[0, 8W) (+)= sum over the n positions j of p[j] * v[rows[j] + 0 .. 8W): W vectors of
// accumulators in registers (a runtime width would put them on the stack), positions in order.
template <int W>
inline void weighted_sum(float* o, const uint16_t* v, const int64_t* rows, const float* p, int n, bool first) {
  __m256 acc[W];
  for (int k = 0; k < W; ++k) acc[k] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + 8 * k);
  for (int j = 0; j < n; ++j) {
    const __m256 pv = _mm256_broadcast_ss(p + j);
    const uint16_t* vr = v + rows[j];
    for (int k = 0; k < W; ++k) acc[k] = _mm256_fmadd_ps(pv, load_f16(vr + 8 * k), acc[k]);
  }
  for (int k = 0; k < W; ++k) _mm256_storeu_ps(o + 8 * k, acc[k]);
}

// attention_values.inc's chunk: width / 8 ymm.
inline void weighted_chunk(float* o, const uint16_t* v, const int64_t* rows, const float* p, int n, bool first,
                           int width) {
  switch (width / 8) {
    case 8: weighted_sum<8>(o, v, rows, p, n, first); break;
    case 7: weighted_sum<7>(o, v, rows, p, n, first); break;
    case 6: weighted_sum<6>(o, v, rows, p, n, first); break;
    case 5: weighted_sum<5>(o, v, rows, p, n, first); break;
    case 4: weighted_sum<4>(o, v, rows, p, n, first); break;
    case 3: weighted_sum<3>(o, v, rows, p, n, first); break;
    case 2: weighted_sum<2>(o, v, rows, p, n, first); break;
    default: weighted_sum<1>(o, v, rows, p, n, first); break;
  }
}

}  // namespace

void attention_weights(const float* q, int64_t ld_qo, int n_tok, const uint16_t* k0, int64_t block_stride,
                       int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim,
                       int n_q, int first_head, int group, float* scratch) {
  const float scale = 1.0f / sqrtf(float(head_dim));
  const int last_ctx = n_ctx + n_tok - 1;  // token i sees positions [0, n_ctx + i)
  const int ld = (last_ctx + 7) & ~7;      // scores of token i, query head h: scratch[(i * n_q + h) * ld + t]
  auto scores = [&](int i, int h) { return scratch + (int64_t(i) * n_q + h) * ld; };
  auto slot = [&](int t) { return block_table[t / block_size] * block_stride + (t % block_size) * slot_stride; };
  auto kv_off = [&](int h) { return int64_t((first_head + h) / group - first_head / group) * head_dim; };

  // 1. scores = q . k_t / sqrt(d): eight positions at a time, every token and head of the call on
  //    them while their rows are in L1 (a position's keys for all heads are contiguous): the
  //    cache is read once per call, not once per token. The last group repeats the last
  //    position; scores past a token's context are overwritten below.
  for (int t = 0; t < last_ctx; t += 8) {
    int64_t rows[8];
    for (int j = 0; j < 8; ++j) rows[j] = slot(t + j < last_ctx ? t + j : last_ctx - 1);
    for (int i = 0; i < n_tok; ++i) {
      if (n_ctx + i <= t) continue;
      for (int h = 0; h < n_q; ++h) {
        const float* qi = q + i * ld_qo + int64_t(h) * head_dim;
        const uint16_t* kb = k0 + kv_off(h);
        __m256 acc[8];
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
        for (int c = 0; c < head_dim; c += 8) {
          const __m256 qv = _mm256_loadu_ps(qi + c);
          for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load_f16(kb + rows[j] + c), acc[j]);
        }
        // Eight horizontal sums at once: lane j of the result is the sum of acc[j].
        const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
        const __m256 s45 = _mm256_hadd_ps(acc[4], acc[5]), s67 = _mm256_hadd_ps(acc[6], acc[7]);
        const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
        const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                                          _mm256_permute2f128_ps(s0123, s4567, 0x31));
        _mm256_storeu_ps(scores(i, h) + t, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
      }
    }
  }

  // 2. softmax weights per token and head over the token's own context (its scores padded to a
  //    multiple of 8 with exp(-inf) = 0).
  for (int i = 0; i < n_tok; ++i) {
    const int ctx = n_ctx + i, ld_i = (ctx + 7) & ~7;
    for (int h = 0; h < n_q; ++h) {
      float* sc = scores(i, h);
      for (int t = ctx; t < ld_i; ++t) sc[t] = -INFINITY;
      __m256 mv = _mm256_set1_ps(-INFINITY);
      for (int t = 0; t < ld_i; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sc + t));
      __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const __m256 max = _mm256_set1_ps(_mm_cvtss_f32(m4));
      __m256 sumv = _mm256_setzero_ps();
      for (int t = 0; t < ld_i; t += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sc + t), max));
        _mm256_storeu_ps(sc + t, e);
        sumv = _mm256_add_ps(sumv, e);
      }
      // The weights, e * (1 / sum) rounded to f16 as llama.cpp's f16 V cache product rounds them.
      const __m256 inv = _mm256_set1_ps(1.0f / hsum(sumv));
      for (int t = 0; t < ld_i; t += 8) {
        const __m128i h16 = _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(sc + t), inv), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(sc + t, _mm256_cvtph_ps(h16));
      }
    }
  }
}

#include "engine/cpu/attention_values.inc"

}  // namespace troupe::engine::cpu::avx2
