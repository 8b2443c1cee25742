#pragma once
// GGUF v3 files: a validated reader (metadata + tensor directory over a memory map;
// gguf_reader.cpp), a writer (used by `troupe model synth`; gguf_writer.cpp), the format facts both
// share (gguf_format.cpp) and the llama model loader (gguf_llama_loader.cpp).
// Format: github.com/ggerganov/ggml docs/gguf.md.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/error.hpp"
#include "engine/mapped_file.hpp"
#include "engine/model_weights.hpp"
#include "engine/tensor.hpp"

namespace troupe::engine::gguf {

enum class value_type : uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6,
  boolean = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

/// ggml tensor types troupe reads and writes.
enum class ggml_type : uint32_t { f32 = 0, f16 = 1, q4_0 = 2, q8_0 = 8, bf16 = 30 };

constexpr uint32_t max_dims = 4;  // GGML_MAX_DIMS
constexpr uint64_t default_alignment = 32;
inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

/// Block geometry of the ggml tensor types, so that the directory of any GGUF file can be
/// validated (and listed) even where troupe cannot compute with the type.
struct type_traits {
  uint32_t id;
  const char* name;
  uint64_t block_elems;
  uint64_t block_bytes;
};
/// The traits of ggml type `id`; nullptr when unknown.
const type_traits* find_type(uint32_t id);
/// "Q4_K", or "type 99" for an unknown id.
std::string type_name(uint32_t id);
const char* value_type_name(value_type t);

/// One metadata value. Arrays hold their element type and the decoded elements.
struct value {
  value_type type = value_type::uint32;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<value>> data;
};

struct tensor_desc {
  std::string name;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the innermost (contiguous) dimension
  ggml_type type = ggml_type::f32;
  uint64_t offset = 0;      // relative to the start of the data section
  uint64_t size_bytes = 0;
};

class file {
 public:
  /// Parses and validates the header, metadata and tensor directory; every tensor's data range
  /// must lie inside the file.
  static result<file> open(const std::filesystem::path& path);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::map<std::string, value>& metadata() const { return metadata_; }
  const std::vector<tensor_desc>& tensors() const { return tensors_; }
  const std::shared_ptr<mapped_file>& mapping() const { return mapping_; }

  /// An error naming this file: "gguf: PATH: <message>".
  template <class... Args>
  std::unexpected<error> fail(errc code, fmt::format_string<Args...> f, Args&&... args) const {
    return std::unexpected<error>(error{
        code, fmt::format("gguf: {}: {}", mapping_ ? mapping_->path().string() : std::string("?"),
                          fmt::format(f, std::forward<Args>(args)...))});
  }

  const value* find(const std::string& key) const;
  const tensor_desc* find_tensor(const std::string& name) const;
  /// Typed look-ups: an error names the key when it is missing or has the wrong type.
  result<uint64_t> get_uint(const std::string& key) const;  // any unsigned/signed int >= 0
  result<double> get_float(const std::string& key) const;   // float32/float64
  result<std::string> get_string(const std::string& key) const;
  result<std::vector<std::string>> get_string_array(const std::string& key) const;
  result<std::vector<float>> get_float_array(const std::string& key) const;
  result<std::vector<int64_t>> get_int_array(const std::string& key) const;
  /// Pointer to a tensor's data (already checked against the file).
  const std::byte* tensor_data(const tensor_desc& t) const {
    return mapping_->data() + data_offset_ + t.offset;
  }

 private:
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, value> metadata_;
  std::vector<tensor_desc> tensors_;
  std::shared_ptr<mapped_file> mapping_;
};

/// Builds a GGUF file in memory and writes it: metadata first, then tensors (aligned).
class writer {
 public:
  void set_uint32(const std::string& key, uint32_t v);
  void set_float32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, std::string v);
  void set_string_array(const std::string& key, std::vector<std::string> v);
  void set_float32_array(const std::string& key, std::vector<float> v);
  void set_int32_array(const std::string& key, std::vector<int32_t> v);
  /// ne in ggml order (ne[0] innermost); bytes must match the type's size for ne.
  void add_tensor(const std::string& name, std::vector<int64_t> ne, ggml_type type,
                  std::vector<std::byte> bytes);
  result<void> write(const std::filesystem::path& path) const;

 private:
  struct kv {
    std::string key;
    value val;
  };
  struct tensor {
    std::string name;
    std::vector<int64_t> ne;
    ggml_type type;
    std::vector<std::byte> bytes;
  };
  std::vector<kv> kvs_;
  std::vector<tensor> tensors_;
};

std::optional<dtype> to_dtype(ggml_type t);
ggml_type to_ggml_type(dtype t);

}  // namespace troupe::engine::gguf

namespace troupe::engine {
/// Maps a "llama" GGUF model (tensors F32, F16, Q8_0, Q4_0; BF16 too).
result<model_weights> load_gguf_model(const std::filesystem::path& path, const load_options& opts);
}  // namespace troupe::engine
