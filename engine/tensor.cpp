#include "engine/tensor.hpp"

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

}  // namespace troupe::engine
