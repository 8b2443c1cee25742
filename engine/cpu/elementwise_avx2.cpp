// AVX2/FMA element-wise ops (compiled with -mavx2 -mfma): RMSNorm, SwiGLU, residual add. The
// same formulas as elementwise.cpp, eight lanes at a time; exp is a polynomial good to ~2 ulp.
#include <immintrin.h>
#include <math.h>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx2 {
namespace {

// exp(x), x clamped to [-87, 88].
inline __m256 exp8(__m256 x) {
  return exp_in_range(_mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f)));
}

}  // namespace

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  // As cpu::rmsnorm (ggml's): float squares summed in double (exact here whatever the order).
  __m256d s0 = _mm256_setzero_pd(), s1 = s0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 sq = _mm256_mul_ps(a, a);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; i < n; ++i) ss += double(x[i] * x[i]);
  const float mean = float(ss / n);
  const float scale = 1.0f / sqrtf(mean + eps);
  const __m256 sv = _mm256_set1_ps(scale);
  i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sv), _mm256_loadu_ps(w + i)));
  }
  for (; i < n; ++i) out[i] = x[i] * scale * w[i];
}

// Every element goes through the same vector formula, the last 1..7 too (masked): a value's
// result must not depend on where it sits (the forward pass runs SwiGLU over all tokens of a
// batch at once, so an element's position depends on the batch).
void swiglu(float* gate, const float* up, int n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  auto silu_times = [&](__m256 g, __m256 u) {
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), g)))), u);
  };
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(gate + i, silu_times(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(n - i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(gate + i, m, silu_times(_mm256_maskload_ps(gate + i, m), _mm256_maskload_ps(up + i, m)));
  }
}

void add(float* x, const float* y, int n) {
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) x[i] += y[i];
}

void round_to_f16(float* x, int n) {
  constexpr int nearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), nearest)));
  }
  for (; i < n; ++i) x[i] = _cvtsh_ss(_cvtss_sh(x[i], nearest));
}

void rope_rotate(float* x, int n_heads, int head_dim, const float* cos, const float* sin, bool interleaved) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + h * head_dim;
    for (int i = 0; i < half; ++i) {
      const int a = interleaved ? 2 * i : i;
      const int b = interleaved ? 2 * i + 1 : i + half;
      const __m128 v0 = _mm_set_ss(v[a]), v1 = _mm_set_ss(v[b]);
      const __m128 c = _mm_set_ss(cos[i]), s = _mm_set_ss(sin[i]);
      v[a] = _mm_cvtss_f32(_mm_fmsub_ss(v0, c, _mm_mul_ss(v1, s)));
      v[b] = _mm_cvtss_f32(_mm_fmadd_ss(v0, s, _mm_mul_ss(v1, c)));
    }
  }
}

void to_f16(const float* x, uint16_t* out, int n) {
  constexpr int nearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), nearest));
  }
  for (; i < n; ++i) out[i] = _cvtss_sh(x[i], nearest);
}

}  // namespace troupe::engine::cpu::avx2
