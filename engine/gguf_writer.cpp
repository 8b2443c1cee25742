// GGUF v3 writer (used by `troupe model synth`): metadata first, then tensors (aligned); written to a
// sibling file and renamed, so that a failed write leaves no half file behind.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>

#include "engine/gguf.hpp"

namespace troupe::engine::gguf {

// Internally an array kv keeps its ELEMENT type in val.type (the vector alternative marks it as
// an array), so that empty arrays are written with the right element type.

namespace {
template <class V>
void set_kv(V& kvs, const std::string& key, value v) {
  for (auto& entry : kvs) {
    if (entry.key == key) {
      entry.val = std::move(v);
      return;
    }
  }
  kvs.push_back({key, std::move(v)});
}
}  // namespace

void writer::set_uint32(const std::string& key, uint32_t v) { set_kv(kvs_, key, value{value_type::uint32, uint64_t{v}}); }
void writer::set_float32(const std::string& key, float v) {
  set_kv(kvs_, key, value{value_type::float32, static_cast<double>(v)});
}
void writer::set_bool(const std::string& key, bool v) { set_kv(kvs_, key, value{value_type::boolean, v}); }
void writer::set_string(const std::string& key, std::string v) {
  set_kv(kvs_, key, value{value_type::string, std::move(v)});
}
void writer::set_string_array(const std::string& key, std::vector<std::string> v) {
  std::vector<value> items;
  items.reserve(v.size());
  for (auto& s : v) items.push_back(value{value_type::string, std::move(s)});
  set_kv(kvs_, key, value{value_type::string, std::move(items)});
}
void writer::set_float32_array(const std::string& key, std::vector<float> v) {
  std::vector<value> items;
  items.reserve(v.size());
  for (float x : v) items.push_back(value{value_type::float32, static_cast<double>(x)});
  set_kv(kvs_, key, value{value_type::float32, std::move(items)});
}
void writer::set_int32_array(const std::string& key, std::vector<int32_t> v) {
  std::vector<value> items;
  items.reserve(v.size());
  for (int32_t x : v) items.push_back(value{value_type::int32, int64_t{x}});
  set_kv(kvs_, key, value{value_type::int32, std::move(items)});
}

void writer::add_tensor(const std::string& name, std::vector<int64_t> ne, ggml_type type,
                        std::vector<std::byte> bytes) {
  tensors_.push_back(tensor{name, std::move(ne), type, std::move(bytes)});
}

namespace {

class byte_sink {
 public:
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    buf_.insert(buf_.end(), p, p + sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    buf_.insert(buf_.end(), p, p + s.size());
  }
  void pad_to(uint64_t alignment) { buf_.resize(align_up(buf_.size(), alignment), std::byte{0}); }
  const std::vector<std::byte>& bytes() const { return buf_; }

  /// A scalar or string (not an array) of type t.
  void put_scalar(value_type t, const value& v) {
    switch (t) {
      case value_type::uint8: put<uint8_t>(uint8_t(std::get<uint64_t>(v.data))); break;
      case value_type::uint16: put<uint16_t>(uint16_t(std::get<uint64_t>(v.data))); break;
      case value_type::uint32: put<uint32_t>(uint32_t(std::get<uint64_t>(v.data))); break;
      case value_type::uint64: put<uint64_t>(std::get<uint64_t>(v.data)); break;
      case value_type::int8: put<int8_t>(int8_t(std::get<int64_t>(v.data))); break;
      case value_type::int16: put<int16_t>(int16_t(std::get<int64_t>(v.data))); break;
      case value_type::int32: put<int32_t>(int32_t(std::get<int64_t>(v.data))); break;
      case value_type::int64: put<int64_t>(std::get<int64_t>(v.data)); break;
      case value_type::float32: put<float>(float(std::get<double>(v.data))); break;
      case value_type::float64: put<double>(std::get<double>(v.data)); break;
      case value_type::boolean: put<uint8_t>(std::get<bool>(v.data) ? 1 : 0); break;
      case value_type::string: put_string(std::get<std::string>(v.data)); break;
      case value_type::array: TROUPE_ASSERT(!"nested arrays are not written"); break;
    }
  }

 private:
  std::vector<std::byte> buf_;
};

}  // namespace

result<void> writer::write(const std::filesystem::path& path) const {
  auto bad = [&](const std::string& what) {
    return fail(errc::invalid_argument, "gguf: {}: {}", path.string(), what);
  };
  constexpr uint64_t alignment = default_alignment;

  // Validate the tensors and lay out the data section.
  std::vector<uint64_t> offsets;
  std::set<std::string_view> names;
  uint64_t data_size = 0;
  for (const auto& t : tensors_) {
    const type_traits* tt = find_type(static_cast<uint32_t>(t.type));
    if (tt == nullptr) return bad(fmt::format("tensor '{}' has unknown type", t.name));
    if (t.ne.empty() || t.ne.size() > max_dims) return bad(fmt::format("tensor '{}' has {} dims", t.name, t.ne.size()));
    uint64_t n = 1;
    for (int64_t d : t.ne) {
      if (d < 0) return bad(fmt::format("tensor '{}' has a negative dimension", t.name));
      n *= uint64_t(d);
    }
    if (uint64_t(t.ne[0]) % tt->block_elems != 0) {
      return bad(fmt::format("tensor '{}': ne[0] = {} is not a multiple of {}", t.name, t.ne[0], tt->block_elems));
    }
    if (n / tt->block_elems * tt->block_bytes != t.bytes.size()) {
      return bad(fmt::format("tensor '{}' has {} bytes, its shape needs {}", t.name, t.bytes.size(),
                             n / tt->block_elems * tt->block_bytes));
    }
    if (!names.insert(t.name).second) return bad(fmt::format("duplicate tensor '{}'", t.name));
    offsets.push_back(data_size);
    data_size = align_up(data_size + t.bytes.size(), alignment);
  }

  // Header, metadata, tensor directory.
  byte_sink h;
  h.put<uint32_t>(0x46554747u);  // "GGUF" little-endian
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kvs_.size());
  for (const auto& entry : kvs_) {
    h.put_string(entry.key);
    if (const auto* items = std::get_if<std::vector<value>>(&entry.val.data)) {
      h.put<uint32_t>(static_cast<uint32_t>(value_type::array));
      h.put<uint32_t>(static_cast<uint32_t>(entry.val.type));
      h.put<uint64_t>(items->size());
      for (const auto& item : *items) h.put_scalar(entry.val.type, item);
    } else {
      h.put<uint32_t>(static_cast<uint32_t>(entry.val.type));
      h.put_scalar(entry.val.type, entry.val);
    }
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t d : t.ne) h.put<uint64_t>(uint64_t(d));
    h.put<uint32_t>(static_cast<uint32_t>(t.type));
    h.put<uint64_t>(offsets[i]);
  }
  h.pad_to(alignment);

  // Write to a sibling file and rename, so that a failed write leaves no half file behind.
  const std::filesystem::path tmp = path.string() + ".partial";
  std::FILE* out = std::fopen(tmp.c_str(), "wb");
  if (out == nullptr) {
    return fail(errc::io_error, "gguf: cannot create {}: {}", tmp.string(), std::strerror(errno));
  }
  static const std::byte zeros[64] = {};
  bool ok = std::fwrite(h.bytes().data(), 1, h.bytes().size(), out) == h.bytes().size();
  uint64_t written = 0;
  for (size_t i = 0; ok && i < tensors_.size(); ++i) {
    const auto& b = tensors_[i].bytes;
    ok = b.empty() || std::fwrite(b.data(), 1, b.size(), out) == b.size();
    written = offsets[i] + b.size();
    const uint64_t pad = align_up(written, alignment) - written;
    ok = ok && (pad == 0 || std::fwrite(zeros, 1, pad, out) == pad);
  }
  ok = (std::fclose(out) == 0) && ok;
  std::error_code ec;
  if (!ok) {
    const int e = errno;
    std::filesystem::remove(tmp, ec);
    return fail(errc::io_error, "gguf: cannot write {}: {}", tmp.string(), std::strerror(e));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return fail(errc::io_error, "gguf: cannot rename {} to {}: {}", tmp.string(), path.string(), ec.message());
  }
  return {};
}

}  // namespace troupe::engine::gguf
