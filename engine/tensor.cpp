#include "engine/tensor.hpp"

#include <cstring>

namespace troupe::engine {

std::string_view dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "f32";
    case dtype::f16: return "f16";
    case dtype::bf16: return "bf16";
    case dtype::q8_0: return "q8_0";
    case dtype::q4_0: return "q4_0";
  }
  return "unknown";
}

std::optional<dtype> parse_dtype(std::string_view s) {
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0}) {
    if (dtype_name(t) == s) return t;
  }
  return std::nullopt;
}

std::vector<std::byte> pack_q4_0x16(const block_q4_0* w, int64_t rows, int64_t nb) {
  const int64_t groups = (rows + q4x16_rows - 1) / q4x16_rows;
  std::vector<std::byte> out(size_t(groups * nb * q4x16_record));  // padding rows: zero nibbles, scale 0
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t g = r / q4x16_rows, i = r % q4x16_rows;
    for (int64_t b = 0; b < nb; ++b) {
      std::byte* rec = out.data() + (g * nb + b) * q4x16_record;
      const block_q4_0& blk = w[r * nb + b];
      for (int k = 0; k < 4; ++k) std::memcpy(rec + 64 * k + 4 * i, blk.qs + 4 * k, 4);
      std::memcpy(rec + 256 + 2 * i, &blk.d, 2);
    }
  }
  return out;
}

}  // namespace troupe::engine
