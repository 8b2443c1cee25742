// GGUF format facts shared by the reader and the writer: the ggml tensor types' block geometry,
// value type names, and the mapping between ggml types and troupe's dtypes.
#include <fmt/format.h>

#include "engine/gguf.hpp"

namespace troupe::engine::gguf {

namespace {

constexpr type_traits known_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},  {20, "IQ4_NL", 32, 18},  {23, "IQ4_XS", 256, 136},
    {24, "I8", 1, 1},        {25, "I16", 1, 2},       {26, "I32", 1, 4},       {27, "I64", 1, 8},
    {28, "F64", 1, 8},       {30, "BF16", 1, 2},
};

}  // namespace

const type_traits* find_type(uint32_t id) {
  for (const auto& t : known_types) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

std::string type_name(uint32_t id) {
  if (const auto* t = find_type(id)) return t->name;
  return fmt::format("type {}", id);
}

const char* value_type_name(value_type t) {
  switch (t) {
    case value_type::uint8: return "uint8";
    case value_type::int8: return "int8";
    case value_type::uint16: return "uint16";
    case value_type::int16: return "int16";
    case value_type::uint32: return "uint32";
    case value_type::int32: return "int32";
    case value_type::float32: return "float32";
    case value_type::boolean: return "bool";
    case value_type::string: return "string";
    case value_type::array: return "array";
    case value_type::uint64: return "uint64";
    case value_type::int64: return "int64";
    case value_type::float64: return "float64";
  }
  return "unknown";
}

std::optional<dtype> to_dtype(ggml_type t) {
  switch (t) {
    case ggml_type::f32: return dtype::f32;
    case ggml_type::f16: return dtype::f16;
    case ggml_type::bf16: return dtype::bf16;
    case ggml_type::q8_0: return dtype::q8_0;
    case ggml_type::q4_0: return dtype::q4_0;
  }
  return std::nullopt;
}

ggml_type to_ggml_type(dtype t) {
  switch (t) {
    case dtype::f32: return ggml_type::f32;
    case dtype::f16: return ggml_type::f16;
    case dtype::bf16: return ggml_type::bf16;
    case dtype::q8_0: return ggml_type::q8_0;
    case dtype::q4_0: return ggml_type::q4_0;
  }
  return ggml_type::f32;
}

}  // namespace troupe::engine::gguf
