// GGUF v3 (and v2): a reader that validates every count, length and offset against the size of
// the mapping before it reads, a writer, and the loader that maps a "llama" model from a file.
#include "engine/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include <fmt/ranges.h>

#include "engine/fp16.hpp"

namespace troupe::engine::gguf {

namespace {

constexpr uint32_t max_dims = 4;        // GGML_MAX_DIMS
constexpr int max_array_depth = 4;      // arrays of arrays of ... (ggml itself allows none)
constexpr uint64_t max_alignment = 1u << 30;
constexpr uint64_t default_alignment = 32;
// Limits far above any real model, so that a corrupt count in a multi-GiB file cannot make the
// reader allocate many times the file's size (a decoded value takes ~48 bytes).
constexpr uint64_t max_tensors = 1u << 20;
constexpr uint64_t max_kv = 1u << 20;
constexpr uint64_t max_array_elems = 1u << 23;  // all arrays of the file together
constexpr uint64_t max_string_bytes = 1u << 26;

/// Block geometry of the ggml tensor types, so that the directory of any GGUF file can be
/// validated (and listed) even where troupe cannot compute with the type.
struct type_traits {
  uint32_t id;
  const char* name;
  uint64_t block_elems;
  uint64_t block_bytes;
};
constexpr type_traits known_types[] = {
    {0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 18},     {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},     {7, "Q5_1", 32, 24},     {8, "Q8_0", 32, 34},     {9, "Q8_1", 32, 36},
    {10, "Q2_K", 256, 84},   {11, "Q3_K", 256, 110},  {12, "Q4_K", 256, 144},  {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},  {15, "Q8_K", 256, 292},  {20, "IQ4_NL", 32, 18},  {23, "IQ4_XS", 256, 136},
    {24, "I8", 1, 1},        {25, "I16", 1, 2},       {26, "I32", 1, 4},       {27, "I64", 1, 8},
    {28, "F64", 1, 8},       {30, "BF16", 1, 2},
};

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

template <class... Args>
std::unexpected<error> file_error(const std::shared_ptr<mapped_file>& m, errc code,
                                  fmt::format_string<Args...> f, Args&&... args) {
  return std::unexpected<error>(error{
      code, fmt::format("gguf: {}: {}", m ? m->path().string() : std::string("?"),
                        fmt::format(f, std::forward<Args>(args)...))});
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

// ---- reader ----------------------------------------------------------------------------------

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
  if (v == nullptr) return file_error(mapping_, errc::bad_format, "key '{}' is missing", key);
  if (is_unsigned(v->type)) return std::get<uint64_t>(v->data);
  if (is_signed(v->type)) {
    const int64_t s = std::get<int64_t>(v->data);
    if (s < 0) return file_error(mapping_, errc::bad_format, "key '{}' = {} is negative", key, s);
    return static_cast<uint64_t>(s);
  }
  return file_error(mapping_, errc::bad_format, "key '{}' has type {}, expected an integer", key,
                    value_type_name(v->type));
}

result<double> file::get_float(const std::string& key) const {
  const value* v = find(key);
  if (v == nullptr) return file_error(mapping_, errc::bad_format, "key '{}' is missing", key);
  if (is_float(v->type)) return std::get<double>(v->data);
  if (is_unsigned(v->type)) return static_cast<double>(std::get<uint64_t>(v->data));
  if (is_signed(v->type)) return static_cast<double>(std::get<int64_t>(v->data));
  return file_error(mapping_, errc::bad_format, "key '{}' has type {}, expected a float", key,
                    value_type_name(v->type));
}

result<std::string> file::get_string(const std::string& key) const {
  const value* v = find(key);
  if (v == nullptr) return file_error(mapping_, errc::bad_format, "key '{}' is missing", key);
  if (v->type != value_type::string) {
    return file_error(mapping_, errc::bad_format, "key '{}' has type {}, expected a string", key,
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
  if (v == nullptr) return file_error(f.mapping(), errc::bad_format, "key '{}' is missing", key);
  if (v->type != value_type::array) {
    return file_error(f.mapping(), errc::bad_format, "key '{}' has type {}, expected an array of {}", key,
                      value_type_name(v->type), expected);
  }
  const auto& items = std::get<std::vector<value>>(v->data);
  if (!items.empty() && !ok(items.front().type)) {
    return file_error(f.mapping(), errc::bad_format, "key '{}' is an array of {}, expected {}", key,
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
        return file_error(mapping_, errc::bad_format, "key '{}': element {} does not fit in int64", key, u);
      }
      out.push_back(static_cast<int64_t>(u));
    }
  }
  return out;
}

// ---- writer ----------------------------------------------------------------------------------
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

// ---- llama model loader ------------------------------------------------------------------------

namespace troupe::engine {

namespace {

/// Reads hyperparameters and maps tensors of one open GGUF file into a model_weights.
class llama_loader {
 public:
  llama_loader(const gguf::file& f, model_weights& mw) : f_(f), mw_(mw) {}

  template <class... Args>
  std::unexpected<error> err(errc code, fmt::format_string<Args...> fm, Args&&... args) const {
    return gguf::file_error(f_.mapping(), code, fm, std::forward<Args>(args)...);
  }

  /// An integer hyperparameter in [lo, hi]; `fallback` when the key is absent (nullopt: required).
  result<int> hparam(const std::string& key, std::optional<int> fallback, int64_t lo, int64_t hi) const {
    if (f_.find(key) == nullptr) {
      if (fallback) return *fallback;
      return err(errc::bad_format, "required key '{}' is missing", key);
    }
    auto v = f_.get_uint(key);
    if (!v) return std::unexpected(v.error());
    if (int64_t(*v) < lo || *v > uint64_t(hi)) {
      return err(errc::bad_format, "key '{}' = {} is not in [{}, {}]", key, *v, lo, hi);
    }
    return static_cast<int>(*v);
  }

  result<float> fparam(const std::string& key, float fallback) const {
    if (f_.find(key) == nullptr) return fallback;
    auto v = f_.get_float(key);
    if (!v) return std::unexpected(v.error());
    if (!(*v > 0.0) || !std::isfinite(*v)) return err(errc::bad_format, "key '{}' = {} is not positive", key, *v);
    return static_cast<float>(*v);
  }

  /// The tensor `name`, checked to be present, of a type troupe computes with, with shape
  /// [rows][cols] (rows == 0: a vector of cols). Trailing ggml dimensions of 1 are accepted.
  result<const gguf::tensor_desc*> require(const std::string& name, int64_t rows, int64_t cols) const {
    const gguf::tensor_desc* t = f_.find_tensor(name);
    if (t == nullptr) return err(errc::bad_format, "tensor '{}' is missing", name);
    auto type = gguf::to_dtype(t->type);
    if (!type) {
      return err(errc::unsupported, "tensor '{}' has type {}; troupe reads F32, F16, BF16, Q8_0, Q4_0", name,
                 gguf::type_name(static_cast<uint32_t>(t->type)));
    }
    std::vector<int64_t> want = rows == 0 ? std::vector<int64_t>{cols} : std::vector<int64_t>{cols, rows};
    std::vector<int64_t> have = t->ne;
    while (have.size() > want.size() && have.back() == 1) have.pop_back();
    if (have != want) {
      std::vector<int64_t> shape(t->ne.rbegin(), t->ne.rend());
      if (rows == 0) {
        return err(errc::bad_format, "tensor '{}' has shape [{}], expected [{}]", name, fmt::join(shape, ", "), cols);
      }
      return err(errc::bad_format, "tensor '{}' has shape [{}], expected [{}, {}] (rows, cols)", name,
                 fmt::join(shape, ", "), rows, cols);
    }
    // Kernels read floats and f16 scales in place: the data must be aligned for them.
    const uint64_t abs = f_.data_offset() + t->offset;
    const uint64_t need = *type == dtype::f32 ? 4 : 2;
    if (abs % need != 0) return err(errc::unsupported, "tensor '{}' data at {} is not {}-byte aligned", name, abs, need);
    return t;
  }

  result<weight> matrix(const std::string& name, int64_t rows, int64_t cols) const {
    auto t = require(name, rows, cols);
    if (!t) return std::unexpected(t.error());
    return weight{*gguf::to_dtype((*t)->type), rows, cols, f_.tensor_data(**t)};
  }

  /// A norm vector as f32: mapped when the file stores f32, converted otherwise.
  result<weight> norm(const std::string& name, int64_t n) const {
    auto t = require(name, 0, n);
    if (!t) return std::unexpected(t.error());
    const dtype type = *gguf::to_dtype((*t)->type);
    const std::byte* src = f_.tensor_data(**t);
    if (type == dtype::f32) return weight{dtype::f32, 1, n, src};
    if (type != dtype::f16 && type != dtype::bf16) {
      return err(errc::unsupported, "norm tensor '{}' is {}; expected F32, F16 or BF16", name,
                 gguf::type_name(static_cast<uint32_t>((*t)->type)));
    }
    std::vector<std::byte> bytes(size_t(n) * sizeof(float));
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      const float x = type == dtype::f16 ? f16_to_f32(h) : bf16_to_f32(h);
      std::memcpy(bytes.data() + i * sizeof(float), &x, sizeof(float));
    }
    return weight{dtype::f32, 1, n, mw_.keep(std::move(bytes))};
  }

  result<void> read_config() {
    model_config& c = mw_.config;
    auto arch = f_.get_string("general.architecture");
    if (!arch) return std::unexpected(arch.error());
    if (*arch != "llama") {
      return err(errc::unsupported, "architecture '{}' is not supported (troupe runs 'llama' models)", *arch);
    }
    c.arch = *arch;
    if (f_.find("general.name") != nullptr) {
      auto name = f_.get_string("general.name");
      if (!name) return std::unexpected(name.error());
      c.name = *name;
    }
    constexpr int64_t big = 1 << 24;
    struct int_key {
      int* field;
      const char* key;
      std::optional<int> fallback;
      int64_t hi;
    };
    for (const auto& k : {int_key{&c.dim, "llama.embedding_length", std::nullopt, 1 << 20},
                          int_key{&c.n_layers, "llama.block_count", std::nullopt, 1 << 16},
                          int_key{&c.hidden_dim, "llama.feed_forward_length", std::nullopt, big},
                          int_key{&c.n_heads, "llama.attention.head_count", std::nullopt, 1 << 16},
                          int_key{&c.max_seq_len, "llama.context_length", 2048, 1 << 30}}) {
      auto v = hparam(k.key, k.fallback, 1, k.hi);
      if (!v) return std::unexpected(v.error());
      *k.field = *v;
    }
    auto kv = hparam("llama.attention.head_count_kv", c.n_heads, 1, c.n_heads);
    if (!kv) return std::unexpected(kv.error());
    c.n_kv_heads = *kv;
    if (c.dim % c.n_heads != 0) {
      return err(errc::bad_format, "embedding_length {} is not a multiple of head_count {}", c.dim, c.n_heads);
    }
    if (c.n_heads % c.n_kv_heads != 0) {
      return err(errc::bad_format, "head_count {} is not a multiple of head_count_kv {}", c.n_heads, c.n_kv_heads);
    }
    c.head_dim = c.dim / c.n_heads;
    for (const char* key : {"llama.attention.key_length", "llama.attention.value_length", "llama.rope.dimension_count"}) {
      auto v = hparam(key, c.head_dim, 1, 1 << 20);
      if (!v) return std::unexpected(v.error());
      if (*v != c.head_dim) {
        return err(errc::unsupported, "key '{}' = {} differs from the head size {} (not supported)", key, *v,
                   c.head_dim);
      }
    }
    auto eps = fparam("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (!eps) return std::unexpected(eps.error());
    c.rms_eps = *eps;
    auto theta = fparam("llama.rope.freq_base", 10000.0f);
    if (!theta) return std::unexpected(theta.error());
    c.rope_theta = *theta;
    c.rope = rope_style::interleaved;  // convert_hf_to_gguf permutes q/k rows for "llama"

    // Vocabulary: the token list, else llama.vocab_size, else the embedding's rows.
    if (const gguf::value* tokens = f_.find("tokenizer.ggml.tokens"); tokens != nullptr) {
      const auto* items = std::get_if<std::vector<gguf::value>>(&tokens->data);
      if (items == nullptr) return err(errc::bad_format, "key 'tokenizer.ggml.tokens' is not an array");
      if (items->empty() || items->size() > size_t(big)) {
        return err(errc::bad_format, "key 'tokenizer.ggml.tokens' has {} tokens", items->size());
      }
      c.vocab_size = static_cast<int>(items->size());
    } else if (f_.find("llama.vocab_size") != nullptr) {
      auto v = hparam("llama.vocab_size", std::nullopt, 1, big);
      if (!v) return std::unexpected(v.error());
      c.vocab_size = *v;
    } else if (const auto* e = f_.find_tensor("token_embd.weight"); e != nullptr && e->ne.size() >= 2 &&
                                                                      e->ne[1] >= 1 && e->ne[1] <= big) {
      c.vocab_size = static_cast<int>(e->ne[1]);
    } else {
      return err(errc::bad_format, "cannot tell the vocabulary size (no tokenizer.ggml.tokens, llama.vocab_size)");
    }
    auto bos = hparam("tokenizer.ggml.bos_token_id", 1, 0, c.vocab_size - 1);
    if (!bos) return std::unexpected(bos.error());
    auto eos = hparam("tokenizer.ggml.eos_token_id", 2, 0, c.vocab_size - 1);
    if (!eos) return std::unexpected(eos.error());
    c.bos_id = *bos;
    c.eos_id = *eos;
    c.tied_output = f_.find_tensor("output.weight") == nullptr;
    return {};
  }

  /// Checks every tensor the model needs (all layers, so that each stage fails the same way).
  result<void> check_all() const {
    const model_config& c = mw_.config;
    const int64_t q_dim = int64_t(c.n_heads) * c.head_dim;
    for (int l = 0; l < c.n_layers; ++l) {
      const std::string p = fmt::format("blk.{}.", l);
      for (const auto& [name, rows, cols] :
           {std::tuple<std::string, int64_t, int64_t>{p + "attn_norm.weight", 0, c.dim},
            {p + "attn_q.weight", q_dim, c.dim},
            {p + "attn_k.weight", c.kv_dim(), c.dim},
            {p + "attn_v.weight", c.kv_dim(), c.dim},
            {p + "attn_output.weight", c.dim, q_dim},
            {p + "ffn_norm.weight", 0, c.dim},
            {p + "ffn_gate.weight", c.hidden_dim, c.dim},
            {p + "ffn_down.weight", c.dim, c.hidden_dim},
            {p + "ffn_up.weight", c.hidden_dim, c.dim}}) {
        auto t = require(name, rows, cols);
        if (!t) return std::unexpected(t.error());
      }
    }
    for (const auto& [name, rows] : {std::pair<std::string, int64_t>{"token_embd.weight", c.vocab_size},
                                     {"output_norm.weight", 0}}) {
      auto t = require(name, rows, c.dim);
      if (!t) return std::unexpected(t.error());
    }
    if (!c.tied_output) {
      auto t = require("output.weight", c.vocab_size, c.dim);
      if (!t) return std::unexpected(t.error());
    }
    return {};
  }

  result<void> map_range(layer_range range) {
    const model_config& c = mw_.config;
    const int64_t q_dim = int64_t(c.n_heads) * c.head_dim;
    mw_.first_layer = range.first;
    mw_.last_layer = range.last;
    if (mw_.is_first()) {
      auto e = matrix("token_embd.weight", c.vocab_size, c.dim);
      if (!e) return std::unexpected(e.error());
      mw_.token_embedding = *e;
    }
    for (int l = range.first; l < range.last; ++l) {
      const std::string p = fmt::format("blk.{}.", l);
      layer_weights lw;
      struct part {
        weight* w;
        const char* name;
        int64_t rows, cols;
      };
      for (const auto& [w, name, rows, cols] : {part{&lw.wq, "attn_q.weight", q_dim, c.dim},
                                                part{&lw.wk, "attn_k.weight", c.kv_dim(), c.dim},
                                                part{&lw.wv, "attn_v.weight", c.kv_dim(), c.dim},
                                                part{&lw.wo, "attn_output.weight", c.dim, q_dim},
                                                part{&lw.w_gate, "ffn_gate.weight", c.hidden_dim, c.dim},
                                                part{&lw.w_down, "ffn_down.weight", c.dim, c.hidden_dim},
                                                part{&lw.w_up, "ffn_up.weight", c.hidden_dim, c.dim}}) {
        auto m = matrix(p + name, rows, cols);
        if (!m) return std::unexpected(m.error());
        *w = *m;
      }
      auto an = norm(p + "attn_norm.weight", c.dim);
      if (!an) return std::unexpected(an.error());
      lw.attn_norm = *an;
      auto fn = norm(p + "ffn_norm.weight", c.dim);
      if (!fn) return std::unexpected(fn.error());
      lw.ffn_norm = *fn;
      mw_.layers.push_back(lw);
    }
    if (mw_.is_last()) {
      auto n = norm("output_norm.weight", c.dim);
      if (!n) return std::unexpected(n.error());
      mw_.final_norm = *n;
      auto o = matrix(c.tied_output ? "token_embd.weight" : "output.weight", c.vocab_size, c.dim);
      if (!o) return std::unexpected(o.error());
      mw_.output = *o;
    }
    return {};
  }

  void list_tensors() {
    for (const auto& t : f_.tensors()) {
      auto type = gguf::to_dtype(t.type);
      if (!type) continue;  // a type troupe cannot represent, in a tensor it does not use
      mw_.tensors.push_back(tensor_info{t.name, *type, std::vector<int64_t>(t.ne.rbegin(), t.ne.rend()),
                                        f_.data_offset() + t.offset});
    }
  }

 private:
  const gguf::file& f_;
  model_weights& mw_;
};

}  // namespace

result<model_weights> load_gguf_model(const std::filesystem::path& path, const load_options& opts) {
  auto f = gguf::file::open(path);
  if (!f) return std::unexpected(f.error());
  model_weights mw;
  mw.format = "gguf";
  mw.files = {f->mapping()};
  llama_loader loader(*f, mw);
  if (auto r = loader.read_config(); !r) return std::unexpected(r.error());
  if (auto r = loader.check_all(); !r) return std::unexpected(r.error());
  auto range = resolve_range(opts.layers, mw.config.n_layers);
  if (!range) return std::unexpected(range.error());
  if (auto r = loader.map_range(*range); !r) return std::unexpected(r.error());
  loader.list_tensors();
  return mw;
}

}  // namespace troupe::engine
