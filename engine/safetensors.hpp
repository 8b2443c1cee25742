#pragma once
// Hugging Face model directories: config.json + *.safetensors (F32/F16/BF16) + tokenizer.json.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model_weights.hpp"

namespace troupe::engine {

namespace safetensors {
struct tensor_desc {
  std::string name;
  dtype type;                  // f32, f16 or bf16
  std::vector<int64_t> shape;  // outermost first
  const std::byte* data = nullptr;
  uint64_t size_bytes = 0;
  uint64_t offset = 0;         // in the file
};
/// Parses and validates one .safetensors file (header JSON, dtypes, data_offsets in range,
/// sizes matching shapes, no overlaps past the end).
result<std::map<std::string, tensor_desc>> read_index(const std::shared_ptr<mapped_file>& file);
}  // namespace safetensors

/// Reads config.json and maps the requested layers from the directory's safetensors files.
/// HF q/k rows stay in their rotate-half order: config.rope = rope_style::half.
result<model_weights> load_hf_model(const std::filesystem::path& dir, const load_options& opts);

}  // namespace troupe::engine
