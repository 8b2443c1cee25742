// AVX2 attention of one query head over the paged KV cache (compiled with -mavx2 -mfma): reads
// each position's key and value in place through the block table, no gathering copy.
#include <immintrin.h>
#include <math.h>

#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx2 {
namespace {

inline float hsum(__m256 v) {
  __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  a = _mm_add_ps(a, _mm_movehl_ps(a, a));
  a = _mm_add_ss(a, _mm_movehdup_ps(a));
  return _mm_cvtss_f32(a);
}

// exp(x) for x <= 0 (softmax after subtracting the max): Cephes-style range reduction
// x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r, 2^n through the exponent bits.
// Relative error ~2 ulp; inputs below -87 give 0.
inline __m256 exp_nonpositive(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.0f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

}  // namespace

void attention(float* out, const float* q, const float* k0, const float* v0, int64_t block_stride,
               int64_t slot_stride, int block_size, const int32_t* block_table, int n_ctx, int head_dim,
               float* scratch) {
  const float scale = 1.0f / sqrtf(float(head_dim));
  auto row = [&](const float* base, int t) {
    return base + block_table[t / block_size] * block_stride + (t % block_size) * slot_stride;
  };
  // 1. scores = q . k_t / sqrt(d)
  float max = -INFINITY;
  for (int t = 0; t < n_ctx; ++t) {
    const float s = dot(q, row(k0, t), head_dim) * scale;
    scratch[t] = s;
    max = s > max ? s : max;
  }
  // 2. softmax numerators, eight at a time
  const __m256 mv = _mm256_set1_ps(max);
  __m256 sumv = _mm256_setzero_ps();
  int t = 0;
  for (; t + 8 <= n_ctx; t += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scratch + t), mv));
    _mm256_storeu_ps(scratch + t, e);
    sumv = _mm256_add_ps(sumv, e);
  }
  float sum = hsum(sumv);
  if (t < n_ctx) {
    alignas(32) float tail[8] = {};
    for (int i = 0; i < 8; ++i) tail[i] = t + i < n_ctx ? scratch[t + i] - max : -INFINITY;
    const __m256 e = exp_nonpositive(_mm256_load_ps(tail));
    _mm256_store_ps(tail, e);
    for (int i = 0; t + i < n_ctx; ++i) {
      scratch[t + i] = tail[i];
      sum += tail[i];
    }
  }
  const float inv = 1.0f / sum;
  // 3. out = sum_t p_t v_t, 64 output floats at a time held in registers
  for (int c = 0; c < head_dim; c += 64) {
    const int w = head_dim - c < 64 ? head_dim - c : 64;  // a multiple of 8
    __m256 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    for (int p = 0; p < n_ctx; ++p) {
      const float* v = row(v0, p) + c;
      const __m256 pv = _mm256_set1_ps(scratch[p] * inv);
      for (int i = 0; i < w / 8; ++i) acc[i] = _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + 8 * i), acc[i]);
    }
    for (int i = 0; i < w / 8; ++i) _mm256_storeu_ps(out + c + 8 * i, acc[i]);
  }
}

}  // namespace troupe::engine::cpu::avx2
