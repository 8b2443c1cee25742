// Element-wise and row-wise ops: RMSNorm, softmax, SwiGLU, residual add, RoPE.
#include <cmath>
#include <vector>

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
    for (int i = 0; i < half; ++i) {
      // Frequency of pair i, as llama2.c / llama.cpp / HF compute it.
      const float freq = 1.0f / std::pow(theta, float(2 * i) / float(head_dim));
      const float angle = float(pos) * freq;
      cache.cos[size_t(i)] = std::cos(angle);
      cache.sin[size_t(i)] = std::sin(angle);
    }
    cache.pos = pos;
    cache.head_dim = head_dim;
    cache.theta = theta;
  }
  for (int i = 0; i < half; ++i) {
    const float c = cache.cos[size_t(i)];
    const float s = cache.sin[size_t(i)];
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
