// Matrix multiply reference: dequantize one weight row, dot it with every token of the batch.
#include <vector>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/fp16.hpp"

namespace troupe::engine::cpu {

void dequantize_row(const weight& w, int64_t row, float* out) {
  const std::byte* p = w.row(row);
  const int64_t n = w.cols;
  switch (w.type) {
    case dtype::f32: {
      const float* f = reinterpret_cast<const float*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = f[i];
      break;
    }
    case dtype::f16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(h[i]);
      break;
    }
    case dtype::bf16: {
      const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(h[i]);
      break;
    }
    case dtype::q8_0: {
      const block_q8_0* b = reinterpret_cast<const block_q8_0*>(p);
      for (int64_t k = 0; k < n / 32; ++k) {
        const float d = f16_to_f32(b[k].d);
        for (int j = 0; j < 32; ++j) out[k * 32 + j] = d * float(b[k].qs[j]);
      }
      break;
    }
    case dtype::q4_0: {
      const block_q4_0* b = reinterpret_cast<const block_q4_0*>(p);
      for (int64_t k = 0; k < n / 32; ++k) {
        const float d = f16_to_f32(b[k].d);
        for (int j = 0; j < 16; ++j) {
          out[k * 32 + j] = d * float(int(b[k].qs[j] & 0x0f) - 8);
          out[k * 32 + j + 16] = d * float(int(b[k].qs[j] >> 4) - 8);
        }
      }
      break;
    }
  }
}

void matmul_ref_rows(float* out, const float* x, int n_tokens, const weight& w, int64_t row_begin,
                     int64_t row_end) {
  const int64_t n = w.cols;
  thread_local std::vector<float> row;
  row.resize(size_t(n));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* wr;
    if (w.type == dtype::f32) {
      wr = reinterpret_cast<const float*>(w.row(r));
    } else {
      dequantize_row(w, r, row.data());
      wr = row.data();
    }
    for (int t = 0; t < n_tokens; ++t) {
      const float* xt = x + int64_t(t) * n;
      float sum = 0.0f;
      for (int64_t i = 0; i < n; ++i) sum += wr[i] * xt[i];
      out[int64_t(t) * w.rows + r] = sum;
    }
  }
}

}  // namespace troupe::engine::cpu
