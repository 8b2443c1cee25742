// Element-wise and row-wise ops: RMSNorm, softmax, SwiGLU, residual add, RoPE.
#include <cmath>

#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu {

void rmsnorm(float* out, const float* x, const float* w, int n, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / float(n) + eps);
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
  for (int i = 0; i < half; ++i) {
    // Frequency of pair i, as llama2.c / llama.cpp / HF compute it.
    const float freq = 1.0f / std::pow(theta, float(2 * i) / float(head_dim));
    const float angle = float(pos) * freq;
    const float c = std::cos(angle);
    const float s = std::sin(angle);
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + h * head_dim;
      const int a = style == rope_style::interleaved ? 2 * i : i;
      const int b = style == rope_style::interleaved ? 2 * i + 1 : i + half;
      const float v0 = v[a];
      const float v1 = v[b];
      v[a] = v0 * c - v1 * s;
      v[b] = v0 * s + v1 * c;
    }
  }
}

}  // namespace troupe::engine::cpu
