#pragma once
// Length-prefixed frames: a 10-byte header {magic "TRPF", version u8, kind u8, length u32 BE}
// followed by `length` payload bytes (one msgpack map, see client_protocol.hpp and
// docs/protocol.md). frame_decoder takes bytes in any split and yields whole frames or an error.
#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/error.hpp"

namespace troupe::transport {

inline constexpr std::array<char, 4> frame_magic{'T', 'R', 'P', 'F'};
inline constexpr size_t frame_header_bytes = 10;
/// Protocol versions this build speaks: [min_protocol_version, protocol_version].
inline constexpr uint8_t protocol_version = 1;
inline constexpr uint8_t min_protocol_version = 1;
/// Default limit on a frame's payload length.
inline constexpr uint32_t default_max_frame_bytes = 1u << 20;

enum class frame_kind : uint8_t {
  hello = 1,        // client -> server, first frame
  hello_ok = 2,     // server -> client, answer to hello
  generate = 3,     // client -> server
  cancel = 4,       // client -> server
  token_chunk = 5,  // server -> client
  final = 6,        // server -> client, last frame of a request
  error = 7,        // server -> client
  admin = 8,        // client -> server: an ADMIN CONSOLE command (with the admin token)
  admin_reply = 9,  // server -> client: its answer
};

const char* frame_kind_name(frame_kind kind);
bool is_known_frame_kind(uint8_t kind);
/// True for the kinds a client sends (hello, generate, cancel, admin).
bool is_client_frame_kind(frame_kind kind);

struct frame_header {
  uint8_t version = protocol_version;
  frame_kind kind = frame_kind::hello;
  uint32_t length = 0;
};

struct frame {
  uint8_t version = protocol_version;
  frame_kind kind = frame_kind::hello;
  std::string payload;
};

/// Writes the 10 header bytes to `out`.
void write_frame_header(char* out, const frame_header& h);
/// A whole frame: header + payload (payload must be shorter than 4 GiB).
std::string encode_frame(frame_kind kind, std::string_view payload, uint8_t version = protocol_version);

struct frame_decoder_options {
  uint32_t max_frame_bytes = default_max_frame_bytes;  // payload bytes
  uint8_t min_version = min_protocol_version;
  uint8_t max_version = protocol_version;
};

namespace detail {
/// Allocates blocks of 64 KiB and more straight from the kernel (mmap) and gives them back on
/// release, so that partial frames held by many connections do not leave the process's heap
/// fragmented and resident after they are gone; smaller blocks come from operator new.
template <class T>
struct input_allocator {
  using value_type = T;
  input_allocator() = default;
  template <class U>
  input_allocator(const input_allocator<U>&) noexcept {}
  T* allocate(size_t n);
  void deallocate(T* p, size_t n) noexcept;
  friend bool operator==(const input_allocator&, const input_allocator&) = default;
};
template <>
char* input_allocator<char>::allocate(size_t n);
template <>
void input_allocator<char>::deallocate(char* p, size_t n) noexcept;
}  // namespace detail

/// Incremental decoder. feed() bytes as they arrive, then call next() until it returns nullopt.
/// Errors are detected as early as the bytes allow (a wrong magic byte, an oversize length as
/// soon as the header is complete, before any payload is buffered) and are sticky: after one,
/// next() keeps returning it. Memory follows the bytes that arrived, never a frame's declared
/// length, and a buffer grown past 64 KiB is released once it is empty.
class frame_decoder {
 public:
  explicit frame_decoder(frame_decoder_options options = {});

  void feed(std::string_view bytes);
  /// A frame, nullopt when more bytes are needed, or an error (bad_frame: bad magic or unknown
  /// kind; unsupported_version; frame_too_large).
  result<std::optional<frame>> next();

  /// Accept only these header versions from now on (after the handshake: the negotiated one).
  void set_versions(uint8_t min_version, uint8_t max_version);
  size_t buffered_bytes() const { return buf_.size() - pos_; }
  bool failed() const { return error_.has_value(); }
  const frame_decoder_options& options() const { return options_; }

 private:
  result<std::optional<frame>> fail_with(error e);

  frame_decoder_options options_;
  std::vector<char, detail::input_allocator<char>> buf_;
  size_t pos_ = 0;  // start of the unconsumed bytes in buf_
  std::optional<error> error_;
};

}  // namespace troupe::transport
