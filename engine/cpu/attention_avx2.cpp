// AVX2 attention of a token's query heads over the paged KV cache (compiled with -mavx2 -mfma):
// reads each position's keys and values in place through the block table, no gathering copy.
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

// o[0, 8W) (+)= sum over the n positions j of (p[j] * inv) * v[rows[j] + 0 .. 8W): W vectors of
// accumulators in registers (a runtime width would put them on the stack), positions in order.
template <int W>
inline void weighted_sum(float* o, const float* v, const int64_t* rows, const float* p, int n, float inv, bool first) {
  __m256 acc[W];
  for (int k = 0; k < W; ++k) acc[k] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(o + 8 * k);
  for (int j = 0; j < n; ++j) {
    // The weight rounded to f16, as llama.cpp's f16 V cache product rounds it.
    const __m256 pv = _mm256_set1_ps(_cvtsh_ss(_cvtss_sh(p[j] * inv, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
    const float* vr = v + rows[j];
    for (int k = 0; k < W; ++k) acc[k] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vr + 8 * k), acc[k]);
  }
  for (int k = 0; k < W; ++k) _mm256_storeu_ps(o + 8 * k, acc[k]);
}

}  // namespace

void attention(float* out, const float* q, const float* k0, const float* v0, int64_t block_stride,
               int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim, int n_q,
               int first_head, int group, float* scratch) {
  const float scale = 1.0f / sqrtf(float(head_dim));
  const int ld = (n_ctx + 7) & ~7;  // scores of query head i: scratch[i * ld, i * ld + n_ctx)
  float* inv_sum = scratch + int64_t(n_q) * ld;
  auto slot = [&](int t) { return block_table[t / block_size] * block_stride + (t % block_size) * slot_stride; };
  auto kv_off = [&](int i) { return int64_t((first_head + i) / group - first_head / group) * head_dim; };

  // 1. scores = q . k_t / sqrt(d): eight positions at a time, every head of the range on them
  //    while their rows are in L1 (a position's keys for all heads are contiguous). The last
  //    group repeats the last position; its extra scores are overwritten below.
  for (int t = 0; t < n_ctx; t += 8) {
    int64_t rows[8];
    for (int j = 0; j < 8; ++j) rows[j] = slot(t + j < n_ctx ? t + j : n_ctx - 1);
    for (int i = 0; i < n_q; ++i) {
      const float* qi = q + int64_t(i) * head_dim;
      const float* kb = k0 + kv_off(i);
      __m256 acc[8];
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_setzero_ps();
      for (int c = 0; c < head_dim; c += 8) {
        const __m256 qv = _mm256_loadu_ps(qi + c);
        for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kb + rows[j] + c), acc[j]);
      }
      // Eight horizontal sums at once: lane j of the result is the sum of acc[j].
      const __m256 s01 = _mm256_hadd_ps(acc[0], acc[1]), s23 = _mm256_hadd_ps(acc[2], acc[3]);
      const __m256 s45 = _mm256_hadd_ps(acc[4], acc[5]), s67 = _mm256_hadd_ps(acc[6], acc[7]);
      const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
      const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20),
                                        _mm256_permute2f128_ps(s0123, s4567, 0x31));
      _mm256_storeu_ps(scratch + int64_t(i) * ld + t, _mm256_mul_ps(sums, _mm256_set1_ps(scale)));
    }
  }

  // 2. softmax numerators per head; padding past n_ctx becomes exp(-inf) = 0.
  for (int i = 0; i < n_q; ++i) {
    float* sc = scratch + int64_t(i) * ld;
    for (int t = n_ctx; t < ld; ++t) sc[t] = -INFINITY;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (int t = 0; t < ld; t += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(sc + t));
    __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mv, 1), _mm256_castps256_ps128(mv));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    const __m256 max = _mm256_set1_ps(_mm_cvtss_f32(m4));
    __m256 sumv = _mm256_setzero_ps();
    for (int t = 0; t < ld; t += 8) {
      const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(sc + t), max));
      _mm256_storeu_ps(sc + t, e);
      sumv = _mm256_add_ps(sumv, e);
    }
    inv_sum[i] = 1.0f / hsum(sumv);
  }

  // 3. out = sum_t p_t v_t, in position order for every output float; eight positions at a time
  //    for all heads, up to 64 output floats of a head in registers, kept in out between groups.
  for (int t = 0; t < n_ctx; t += 8) {
    const int n = n_ctx - t < 8 ? n_ctx - t : 8;
    int64_t rows[8];
    for (int j = 0; j < n; ++j) rows[j] = slot(t + j);
    for (int i = 0; i < n_q; ++i) {
      const float* vb = v0 + kv_off(i);
      const float* p = scratch + int64_t(i) * ld + t;
      float* o = out + int64_t(i) * head_dim;
      for (int c = 0; c < head_dim; c += 64) {
        switch ((head_dim - c < 64 ? head_dim - c : 64) / 8) {
          case 8: weighted_sum<8>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 7: weighted_sum<7>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 6: weighted_sum<6>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 5: weighted_sum<5>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 4: weighted_sum<4>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 3: weighted_sum<3>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          case 2: weighted_sum<2>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
          default: weighted_sum<1>(o + c, vb + c, rows, p, n, inv_sum[i], t == 0); break;
        }
      }
    }
  }
}

}  // namespace troupe::engine::cpu::avx2
