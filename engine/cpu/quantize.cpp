// Q8_0 and Q4_0 quantization: ggml's reference algorithms (quantize_row_q8_0_ref,
// quantize_row_q4_0_ref), so that troupe's files and llama.cpp's agree bit for bit.
#include <algorithm>
#include <cmath>

#include "engine/error.hpp"
#include "engine/fp16.hpp"
#include "engine/kernels.hpp"

namespace troupe::engine {

namespace {

constexpr int qk = 32;  // elements per block (QK8_0 == QK4_0)

/// Calls quantize_block(block's 32 floats, its output block) for each of the n / 32 blocks.
template <class Block, class F>
void for_each_block(const float* x, Block* out, int64_t n, F quantize_block) {
  TROUPE_ASSERT(n % qk == 0);
  for (int64_t i = 0; i < n / qk; ++i) quantize_block(x + i * qk, out[i]);
}

}  // namespace

void quantize_q8_0(const float* x, block_q8_0* out, int64_t n) {
  for_each_block(x, out, n, [](const float* b, block_q8_0& q) {
    float amax = 0.0f;  // absolute max
    for (int j = 0; j < qk; ++j) amax = std::max(amax, std::fabs(b[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    q.d = f32_to_f16(d);
    for (int j = 0; j < qk; ++j) q.qs[j] = static_cast<int8_t>(std::round(b[j] * id));
  });
}

void quantize_q4_0(const float* x, block_q4_0* out, int64_t n) {
  for_each_block(x, out, n, [](const float* b, block_q4_0& q) {
    float amax = 0.0f;  // absolute max
    float max = 0.0f;   // the value with that magnitude, sign kept
    for (int j = 0; j < qk; ++j) {
      if (amax < std::fabs(b[j])) {
        amax = std::fabs(b[j]);
        max = b[j];
      }
    }
    const float d = max / -8;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    q.d = f32_to_f16(d);
    for (int j = 0; j < qk / 2; ++j) {
      const float x0 = b[j] * id;
      const float x1 = b[qk / 2 + j] * id;
      const uint8_t xi0 = std::min<int8_t>(15, static_cast<int8_t>(x0 + 8.5f));
      const uint8_t xi1 = std::min<int8_t>(15, static_cast<int8_t>(x1 + 8.5f));
      q.qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  });
}

}  // namespace troupe::engine
