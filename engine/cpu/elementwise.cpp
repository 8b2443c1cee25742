// Element-wise and row-wise ops: RMSNorm, softmax, SwiGLU, residual add, RoPE.
#include <cmath>
#include <vector>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/fp16.hpp"

namespace troupe::engine::cpu {

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  // Squares summed in double, mean rounded to float, then (x * scale) * w: ggml's rms_norm + mul.
  double ss = 0.0;
  for (int i = 0; i < n; ++i) ss += double(x[i] * x[i]);
  const float mean = float(ss / n);
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (int i = 0; i < n; ++i) out[i] = x[i] * scale * w[i];
}

void softmax(float* x, int n) {
  float max = x[0];
  for (int i = 1; i < n; ++i) max = std::fmax(max, x[i]);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void swiglu(float* gate, const float* up, int n) {
  for (int i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void add(float* x, const float* y, int n) {
  for (int i = 0; i < n; ++i) x[i] += y[i];
}

void rope(float* x, int n_heads, int head_dim, int pos, float theta, rope_style style) {
  const int half = head_dim / 2;
  // cos/sin of every pair's angle at this position. The forward pass rotates q and then k at the
  // same position, so the last table is kept per thread (the values are the same either way).
  struct angles {
    int pos = -1, head_dim = 0;
    float theta = 0;
    std::vector<float> cos, sin;
  };
  thread_local angles cache;
  if (cache.pos != pos || cache.head_dim != head_dim || cache.theta != theta) {
    cache.cos.resize(size_t(half));
    cache.sin.resize(size_t(half));
    // Angle of pair i: pos * theta^(-2i / head_dim), formed as ggml does (the position times the
    // pair's ratio i times over, in float), so that q and k rounded to f16 afterwards round as
    // llama.cpp's do.
    const float ratio = std::pow(theta, -2.0f / float(head_dim));
    float angle = float(pos);
    for (int i = 0; i < half; ++i) {
      cache.cos[size_t(i)] = std::cos(angle);
      cache.sin[size_t(i)] = std::sin(angle);
      angle *= ratio;
    }
    cache.pos = pos;
    cache.head_dim = head_dim;
    cache.theta = theta;
  }
  // The rotation as llama.cpp's native build computes it: one product of each output rounded,
  // the other fused (FMA): v0 c - (v1 s) and v0 s + (v1 c). With the same GGUF this decides
  // whether q and k round to the same f16 as llama.cpp's; plain products left 2 of 1978 Q8_0
  // reference steps on another token, this none.
  const bool interleaved = style == rope_style::interleaved;
  if (has_avx2()) {
    avx2::rope_rotate(x, n_heads, head_dim, cache.cos.data(), cache.sin.data(), interleaved);
    return;
  }
  for (int i = 0; i < half; ++i) {
    const float c = cache.cos[size_t(i)];
    const float s = cache.sin[size_t(i)];
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const int a = interleaved ? 2 * i : i;
      const int b = interleaved ? 2 * i + 1 : i + half;
      const float v0 = v[a];
      const float v1 = v[b];
      v[a] = std::fma(v0, c, -(v1 * s));
      v[b] = std::fma(v0, s, v1 * c);
    }
  }
}

void round_to_f16(float* x, int n) {
  for (int i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
}

void to_f16(const float* x, uint16_t* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

}  // namespace troupe::engine::cpu
