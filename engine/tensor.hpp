#pragma once
// Weight tensors: a dtype, a 2-D row-major shape [rows][cols] and a pointer into a mapped
// file or an owned buffer. Matrices are stored as [out_features][in_features] (GGUF ne0 = cols).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace troupe::engine {

enum class dtype : uint8_t { f32, f16, bf16, q8_0, q4_0 };

/// Elements per quantization block (1 for plain floats).
constexpr int64_t block_elems(dtype t) { return (t == dtype::q8_0 || t == dtype::q4_0) ? 32 : 1; }
/// Bytes per block: q8_0 = f16 scale + 32 x int8; q4_0 = f16 scale + 16 bytes of nibbles.
constexpr int64_t block_bytes(dtype t) {
  switch (t) {
    case dtype::f32: return 4;
    case dtype::f16: return 2;
    case dtype::bf16: return 2;
    case dtype::q8_0: return 34;
    case dtype::q4_0: return 18;
  }
  return 0;
}
/// Bytes of one row of `cols` elements; nullopt when cols is not a whole number of blocks.
constexpr std::optional<int64_t> row_bytes(dtype t, int64_t cols) {
  if (cols < 0 || cols % block_elems(t) != 0) return std::nullopt;
  return cols / block_elems(t) * block_bytes(t);
}

std::string_view dtype_name(dtype t);               // "f32", "f16", "bf16", "q8_0", "q4_0"
std::optional<dtype> parse_dtype(std::string_view);  // inverse of dtype_name

/// A read-only view of a weight matrix (or a vector: rows == 1).
struct weight {
  dtype type = dtype::f32;
  int64_t rows = 0;
  int64_t cols = 0;
  const std::byte* data = nullptr;
  /// Q4_0: the same rows in the integer kernels' q4_0x16 layout (below),
  /// owned by the model like `data`; null elsewhere (the kernels then use a portable path).
  const std::byte* packed = nullptr;

  int64_t row_stride() const { return *row_bytes(type, cols); }
  const std::byte* row(int64_t r) const { return data + r * row_stride(); }
  const float* f32() const { return reinterpret_cast<const float*>(data); }
  bool empty() const { return data == nullptr; }
};

/// Q8_0 / Q4_0 block layouts as they appear in GGUF files.
struct block_q8_0 {
  uint16_t d;     // f16 scale
  int8_t qs[32];  // value = d * q
};
struct block_q4_0 {
  uint16_t d;        // f16 scale
  uint8_t qs[16];    // low nibbles = elements 0..15, high nibbles = 16..31; value = d * (q - 8)
};
static_assert(sizeof(block_q8_0) == 34);
static_assert(sizeof(block_q4_0) == 18);

/// Q4_0 weights rearranged for the CPU integer kernels ("q4_0x16"): rows in groups of 16 (the last
/// group padded with zero rows); per group, per block, a record of q4x16_record bytes: four
/// chunks of 64 bytes, chunk k holding bytes qs[4k, 4k + 4) of each row's block (row i of the
/// group at 4i: their low nibbles are elements 4k..4k+3, their high nibbles 16+4k..16+4k+3), then
/// the 16 rows' f16 scales. A SIMD lane is a row: 16 rows x 4 values per 64 bytes.
///
/// The Q4_0 numerics follow from it: per (row, token), per block in order, l = the exact integer
/// dot product of the block, then acc = fma(d_w * d_x, float(l), acc) with one float
/// accumulator (no lanes to sum at the end); every variant (AVX-512, AVX2, portable) gives
/// those bits, in any batch and row range.
constexpr int64_t q4x16_rows = 16;
constexpr int64_t q4x16_record = 4 * 64 + 2 * q4x16_rows;
std::vector<std::byte> pack_q4_0x16(const block_q4_0* w, int64_t rows, int64_t nb);

}  // namespace troupe::engine
