// GGUF v3 (and v2) reader: validates every count, length and offset against the size of the
// mapping before it reads.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include "engine/gguf.hpp"

namespace troupe::engine::gguf {

namespace {

constexpr int max_array_depth = 4;      // arrays of arrays of ... (ggml itself allows none)
constexpr uint64_t max_alignment = 1u << 30;
// Limits far above any real model, so that a corrupt count in a multi-GiB file cannot make the
// reader allocate many times the file's size (a decoded value takes ~48 bytes).
constexpr uint64_t max_tensors = 1u << 20;
constexpr uint64_t max_kv = 1u << 20;
constexpr uint64_t max_array_elems = 1u << 23;  // all arrays of the file together
constexpr uint64_t max_string_bytes = 1u << 26;

/// The fewest bytes one value of type t occupies in a file (bounds array counts).
uint64_t min_value_bytes(value_type t) {
  switch (t) {
    case value_type::uint8:
    case value_type::int8:
    case value_type::boolean: return 1;
    case value_type::uint16:
    case value_type::int16: return 2;
    case value_type::uint32:
    case value_type::int32:
    case value_type::float32: return 4;
    case value_type::uint64:
    case value_type::int64:
    case value_type::float64:
    case value_type::string: return 8;
    case value_type::array: return 12;
  }
  return 1;
}

bool is_unsigned(value_type t) {
  return t == value_type::uint8 || t == value_type::uint16 || t == value_type::uint32 ||
         t == value_type::uint64;
}
bool is_signed(value_type t) {
  return t == value_type::int8 || t == value_type::int16 || t == value_type::int32 ||
         t == value_type::int64;
}
bool is_float(value_type t) { return t == value_type::float32 || t == value_type::float64; }

/// Bounds-checked little-endian reads over [data, data + size). Every error names the file.
class reader {
 public:
  reader(const std::byte* data, uint64_t size, std::string file)
      : data_(data), size_(size), file_(std::move(file)) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  const std::string& file() const { return file_; }

  template <class... Args>
  std::unexpected<error> err(errc code, fmt::format_string<Args...> f, Args&&... args) const {
    return std::unexpected<error>(
        error{code, fmt::format("gguf: {}: {}", file_, fmt::format(f, std::forward<Args>(args)...))});
  }

  template <class T>
  result<T> read(std::string_view what) {
    if (remaining() < sizeof(T)) {
      return err(errc::truncated, "{}: needs {} bytes at offset {}, file has {}", what, sizeof(T), pos_,
                 size_);
    }
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  result<std::string> read_string(std::string_view what) {
    auto n = read<uint64_t>(what);
    if (!n) return std::unexpected(n.error());
    if (*n > remaining()) {
      return err(errc::truncated, "{}: string length {} exceeds the {} bytes left at offset {}", what, *n,
                 remaining(), pos_);
    }
    if (*n > max_string_bytes) {
      return err(errc::bad_format, "{}: string length {} is over the limit of {}", what, *n, max_string_bytes);
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(*n));
    pos_ += *n;
    return s;
  }

  result<value_type> read_value_type(std::string_view what) {
    auto t = read<uint32_t>(what);
    if (!t) return std::unexpected(t.error());
    if (*t > static_cast<uint32_t>(value_type::float64)) {
      return err(errc::bad_format, "{}: unknown value type {}", what, *t);
    }
    return static_cast<value_type>(*t);
  }

  result<value> read_value(value_type t, const std::string& key, int depth) {
    const std::string what = fmt::format("key '{}'", key);
    auto num = [&]<class T>(T) -> result<value> {
      auto v = read<T>(what);
      if (!v) return std::unexpected(v.error());
      if constexpr (std::is_floating_point_v<T>) {
        return value{t, static_cast<double>(*v)};
      } else if constexpr (std::is_signed_v<T>) {
        return value{t, static_cast<int64_t>(*v)};
      } else {
        return value{t, static_cast<uint64_t>(*v)};
      }
    };
    switch (t) {
      case value_type::uint8: return num(uint8_t{});
      case value_type::int8: return num(int8_t{});
      case value_type::uint16: return num(uint16_t{});
      case value_type::int16: return num(int16_t{});
      case value_type::uint32: return num(uint32_t{});
      case value_type::int32: return num(int32_t{});
      case value_type::uint64: return num(uint64_t{});
      case value_type::int64: return num(int64_t{});
      case value_type::float32: return num(float{});
      case value_type::float64: return num(double{});
      case value_type::boolean: {
        auto v = read<uint8_t>(what);
        if (!v) return std::unexpected(v.error());
        if (*v > 1) return err(errc::bad_format, "{}: bool value {} is neither 0 nor 1", what, *v);
        return value{t, *v != 0};
      }
      case value_type::string: {
        auto s = read_string(what);
        if (!s) return std::unexpected(s.error());
        return value{t, std::move(*s)};
      }
      case value_type::array: {
        auto elem = read_value_type(what + " array element type");
        if (!elem) return std::unexpected(elem.error());
        auto count = read<uint64_t>(what + " array count");
        if (!count) return std::unexpected(count.error());
        if (*elem == value_type::array && depth + 1 >= max_array_depth) {
          return err(errc::unsupported, "{}: arrays nested deeper than {} levels", what, max_array_depth);
        }
        // Each element takes at least min_value_bytes: a count beyond that cannot be real.
        if (*count > remaining() / min_value_bytes(*elem)) {
          return err(errc::truncated, "{}: array of {} {} values does not fit in the {} bytes left", what,
                     *count, value_type_name(*elem), remaining());
        }
        if (*count > max_array_elems - array_elems_) {
          return err(errc::bad_format, "{}: array of {} values: more than {} array elements in the file", what,
                     *count, max_array_elems);
        }
        array_elems_ += *count;
        std::vector<value> items;
        items.reserve(static_cast<size_t>(*count));
        for (uint64_t i = 0; i < *count; ++i) {
          auto v = read_value(*elem, key, depth + 1);
          if (!v) return std::unexpected(v.error());
          items.push_back(std::move(*v));
        }
        return value{t, std::move(items)};
      }
    }
    return err(errc::bad_format, "{}: unknown value type", what);
  }

 private:
  const std::byte* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  uint64_t array_elems_ = 0;
  std::string file_;
};

}  // namespace

result<file> file::open(const std::filesystem::path& path) {
  auto mapping = mapped_file::open(path);
  if (!mapping) return std::unexpected(mapping.error());
  file f;
  f.mapping_ = std::move(*mapping);
  reader r(f.mapping_->data(), f.mapping_->size(), path.string());

  // Header: magic, version, counts.
  if (r.remaining() < 4) return r.err(errc::truncated, "file of {} bytes has no GGUF header", r.remaining());
  if (std::memcmp(f.mapping_->data(), "GGUF", 4) != 0) {
    const auto* b = reinterpret_cast<const unsigned char*>(f.mapping_->data());
    return r.err(errc::bad_format, "bad magic {:02x} {:02x} {:02x} {:02x} (expected \"GGUF\")", b[0], b[1],
                 b[2], b[3]);
  }
  (void)r.read<uint32_t>("magic");
  auto version = r.read<uint32_t>("version");
  if (!version) return std::unexpected(version.error());
  if (*version != 2 && *version != 3) {
    if (std::byteswap(*version) == 2 || std::byteswap(*version) == 3) {
      return r.err(errc::unsupported, "big-endian GGUF files are not supported");
    }
    return r.err(errc::unsupported, "version {} is not supported (only 2 and 3)", *version);
  }
  f.version_ = *version;
  auto n_tensors = r.read<uint64_t>("tensor count");
  if (!n_tensors) return std::unexpected(n_tensors.error());
  auto n_kv = r.read<uint64_t>("metadata count");
  if (!n_kv) return std::unexpected(n_kv.error());
  // Smallest possible entries: a tensor info is 8 (name) + 4 + 8 + 4 + 8 bytes, a key/value
  // 8 (key) + 4 + 1 bytes.
  if (*n_tensors > r.remaining() / 32) {
    return r.err(errc::truncated, "tensor count {} cannot fit in the {} bytes left", *n_tensors, r.remaining());
  }
  if (*n_kv > r.remaining() / 13) {
    return r.err(errc::truncated, "metadata count {} cannot fit in the {} bytes left", *n_kv, r.remaining());
  }
  if (*n_tensors > max_tensors || *n_kv > max_kv) {
    return r.err(errc::bad_format, "{} tensors and {} metadata keys: over the limits of {} and {}", *n_tensors,
                 *n_kv, max_tensors, max_kv);
  }

  // Metadata.
  for (uint64_t i = 0; i < *n_kv; ++i) {
    auto key = r.read_string(fmt::format("metadata key #{}", i));
    if (!key) return std::unexpected(key.error());
    auto type = r.read_value_type(fmt::format("key '{}' type", *key));
    if (!type) return std::unexpected(type.error());
    auto v = r.read_value(*type, *key, 0);
    if (!v) return std::unexpected(v.error());
    if (f.metadata_.contains(*key)) return r.err(errc::bad_format, "duplicate key '{}'", *key);
    f.metadata_.emplace(std::move(*key), std::move(*v));
  }
  if (f.metadata_.contains("general.alignment")) {
    auto a = f.get_uint("general.alignment");
    if (!a) return std::unexpected(a.error());
    if (*a == 0 || *a > max_alignment || !std::has_single_bit(*a)) {
      return r.err(errc::bad_format, "key 'general.alignment' = {} is not a power of two in [1, {}]", *a,
                   max_alignment);
    }
    f.alignment_ = *a;
  } else {
    f.alignment_ = default_alignment;
  }

  // Tensor directory.
  std::set<std::string_view> names;
  f.tensors_.reserve(static_cast<size_t>(*n_tensors));
  for (uint64_t i = 0; i < *n_tensors; ++i) {
    tensor_desc t;
    auto name = r.read_string(fmt::format("tensor #{} name", i));
    if (!name) return std::unexpected(name.error());
    t.name = std::move(*name);
    const std::string what = fmt::format("tensor '{}'", t.name);
    auto n_dims = r.read<uint32_t>(what + " n_dims");
    if (!n_dims) return std::unexpected(n_dims.error());
    if (*n_dims == 0 || *n_dims > max_dims) {
      return r.err(errc::bad_format, "{}: n_dims {} is not in [1, {}]", what, *n_dims, max_dims);
    }
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      auto ne = r.read<uint64_t>(what + " ne");
      if (!ne) return std::unexpected(ne.error());
      if (*ne > uint64_t(std::numeric_limits<int64_t>::max())) {
        return r.err(errc::bad_format, "{}: ne[{}] = {} is too large", what, d, *ne);
      }
      if (*ne != 0 && n_elems > uint64_t(std::numeric_limits<int64_t>::max()) / *ne) {
        return r.err(errc::bad_format, "{}: element count overflows", what);
      }
      n_elems *= *ne;
      t.ne.push_back(static_cast<int64_t>(*ne));
    }
    auto type = r.read<uint32_t>(what + " type");
    if (!type) return std::unexpected(type.error());
    const type_traits* tt = find_type(*type);
    if (tt == nullptr) return r.err(errc::unsupported, "{}: unknown ggml type {}", what, *type);
    t.type = static_cast<ggml_type>(*type);
    auto offset = r.read<uint64_t>(what + " offset");
    if (!offset) return std::unexpected(offset.error());
    t.offset = *offset;
    if (uint64_t(t.ne[0]) % tt->block_elems != 0) {
      return r.err(errc::bad_format, "{}: ne[0] = {} is not a multiple of the {} block size {}", what, t.ne[0],
                   tt->name, tt->block_elems);
    }
    const uint64_t n_blocks = n_elems / tt->block_elems;
    if (n_blocks > std::numeric_limits<uint64_t>::max() / tt->block_bytes) {
      return r.err(errc::bad_format, "{}: byte size overflows", what);
    }
    t.size_bytes = n_blocks * tt->block_bytes;
    if (t.offset % f.alignment_ != 0) {
      return r.err(errc::bad_format, "{}: data offset {} is not a multiple of the alignment {}", what, t.offset,
                   f.alignment_);
    }
    f.tensors_.push_back(std::move(t));
  }
  for (const auto& t : f.tensors_) {
    if (!names.insert(t.name).second) return r.err(errc::bad_format, "duplicate tensor '{}'", t.name);
  }

  // Data section: aligned after the directory; every tensor's range inside the file.
  const uint64_t size = f.mapping_->size();
  f.data_offset_ = align_up(r.pos(), f.alignment_);
  if (!f.tensors_.empty() && f.data_offset_ > size) {
    return r.err(errc::truncated, "data section starts at {} but the file has {} bytes", f.data_offset_, size);
  }
  const uint64_t data_size = f.data_offset_ <= size ? size - f.data_offset_ : 0;
  for (const auto& t : f.tensors_) {
    if (t.offset > data_size || t.size_bytes > data_size - t.offset) {
      return r.err(errc::truncated,
                   "tensor '{}': data at offset {} + {} bytes lies past the end of the data section ({} bytes)",
                   t.name, t.offset, t.size_bytes, data_size);
    }
  }
  return f;
}

const value* file::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const tensor_desc* file::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

result<uint64_t> file::get_uint(const std::string& key) const {
  const value* v = find(key);
  if (v == nullptr) return fail(errc::bad_format, "key '{}' is missing", key);
  if (is_unsigned(v->type)) return std::get<uint64_t>(v->data);
  if (is_signed(v->type)) {
    const int64_t s = std::get<int64_t>(v->data);
    if (s < 0) return fail(errc::bad_format, "key '{}' = {} is negative", key, s);
    return static_cast<uint64_t>(s);
  }
  return fail(errc::bad_format, "key '{}' has type {}, expected an integer", key,
                    value_type_name(v->type));
}

result<double> file::get_float(const std::string& key) const {
  const value* v = find(key);
  if (v == nullptr) return fail(errc::bad_format, "key '{}' is missing", key);
  if (is_float(v->type)) return std::get<double>(v->data);
  if (is_unsigned(v->type)) return static_cast<double>(std::get<uint64_t>(v->data));
  if (is_signed(v->type)) return static_cast<double>(std::get<int64_t>(v->data));
  return fail(errc::bad_format, "key '{}' has type {}, expected a float", key,
                    value_type_name(v->type));
}

result<std::string> file::get_string(const std::string& key) const {
  const value* v = find(key);
  if (v == nullptr) return fail(errc::bad_format, "key '{}' is missing", key);
  if (v->type != value_type::string) {
    return fail(errc::bad_format, "key '{}' has type {}, expected a string", key,
                      value_type_name(v->type));
  }
  return std::get<std::string>(v->data);
}

namespace {
/// The elements of an array-valued key, each checked with `ok`; an empty array of any
/// element type is accepted.
template <class Ok>
result<const std::vector<value>*> array_of(const file& f, const std::string& key, const char* expected, Ok ok) {
  const value* v = f.find(key);
  if (v == nullptr) return f.fail(errc::bad_format, "key '{}' is missing", key);
  if (v->type != value_type::array) {
    return f.fail(errc::bad_format, "key '{}' has type {}, expected an array of {}", key,
                      value_type_name(v->type), expected);
  }
  const auto& items = std::get<std::vector<value>>(v->data);
  if (!items.empty() && !ok(items.front().type)) {
    return f.fail(errc::bad_format, "key '{}' is an array of {}, expected {}", key,
                      value_type_name(items.front().type), expected);
  }
  return &items;
}
}  // namespace

result<std::vector<std::string>> file::get_string_array(const std::string& key) const {
  auto items = array_of(*this, key, "string", [](value_type t) { return t == value_type::string; });
  if (!items) return std::unexpected(items.error());
  std::vector<std::string> out;
  out.reserve((*items)->size());
  for (const auto& v : **items) out.push_back(std::get<std::string>(v.data));
  return out;
}

result<std::vector<float>> file::get_float_array(const std::string& key) const {
  auto items = array_of(*this, key, "float", is_float);
  if (!items) return std::unexpected(items.error());
  std::vector<float> out;
  out.reserve((*items)->size());
  for (const auto& v : **items) out.push_back(static_cast<float>(std::get<double>(v.data)));
  return out;
}

result<std::vector<int64_t>> file::get_int_array(const std::string& key) const {
  auto items = array_of(*this, key, "integer", [](value_type t) { return is_signed(t) || is_unsigned(t); });
  if (!items) return std::unexpected(items.error());
  std::vector<int64_t> out;
  out.reserve((*items)->size());
  for (const auto& v : **items) {
    if (is_signed(v.type)) {
      out.push_back(std::get<int64_t>(v.data));
    } else {
      const uint64_t u = std::get<uint64_t>(v.data);
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) {
        return fail(errc::bad_format, "key '{}': element {} does not fit in int64", key, u);
      }
      out.push_back(static_cast<int64_t>(u));
    }
  }
  return out;
}

}  // namespace troupe::engine::gguf
