#include "transport/frame.hpp"

#include <algorithm>
#include <cstring>
#include <new>

#include <sys/mman.h>

namespace troupe::transport {

namespace {
constexpr size_t release_above_bytes = 64 * 1024;
constexpr size_t mmap_from_bytes = 64 * 1024;
}  // namespace

namespace detail {
template <>
char* input_allocator<char>::allocate(size_t n) {
  if (n < mmap_from_bytes) return static_cast<char*>(::operator new(n));
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  return static_cast<char*>(p);
}

template <>
void input_allocator<char>::deallocate(char* p, size_t n) noexcept {
  if (n < mmap_from_bytes) {
    ::operator delete(p);
  } else {
    ::munmap(p, n);
  }
}
}  // namespace detail

const char* frame_kind_name(frame_kind kind) {
  switch (kind) {
    case frame_kind::hello: return "hello";
    case frame_kind::hello_ok: return "hello_ok";
    case frame_kind::generate: return "generate";
    case frame_kind::cancel: return "cancel";
    case frame_kind::token_chunk: return "token_chunk";
    case frame_kind::final: return "final";
    case frame_kind::error: return "error";
    case frame_kind::admin: return "admin";
    case frame_kind::admin_reply: return "admin_reply";
  }
  return "unknown";
}

bool is_known_frame_kind(uint8_t kind) {
  return kind >= static_cast<uint8_t>(frame_kind::hello) && kind <= static_cast<uint8_t>(frame_kind::admin_reply);
}

bool is_client_frame_kind(frame_kind kind) {
  return kind == frame_kind::hello || kind == frame_kind::generate || kind == frame_kind::cancel ||
         kind == frame_kind::admin;
}

void write_frame_header(char* out, const frame_header& h) {
  std::memcpy(out, frame_magic.data(), frame_magic.size());
  out[4] = static_cast<char>(h.version);
  out[5] = static_cast<char>(h.kind);
  out[6] = static_cast<char>((h.length >> 24) & 0xff);
  out[7] = static_cast<char>((h.length >> 16) & 0xff);
  out[8] = static_cast<char>((h.length >> 8) & 0xff);
  out[9] = static_cast<char>(h.length & 0xff);
}

std::string encode_frame(frame_kind kind, std::string_view payload, uint8_t version) {
  std::string out(frame_header_bytes + payload.size(), '\0');
  write_frame_header(out.data(), frame_header{version, kind, static_cast<uint32_t>(payload.size())});
  std::memcpy(out.data() + frame_header_bytes, payload.data(), payload.size());
  return out;
}

frame_decoder::frame_decoder(frame_decoder_options options) : options_(options) {}

void frame_decoder::set_versions(uint8_t min_version, uint8_t max_version) {
  options_.min_version = min_version;
  options_.max_version = max_version;
}

void frame_decoder::feed(std::string_view bytes) {
  if (error_) return;
  // Drop consumed bytes before growing, so the buffer holds at most one frame plus one read.
  if (pos_ > 0 && (pos_ == buf_.size() || pos_ >= 64 * 1024)) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  // Grow geometrically, but never past the end of the frame being received (its header, once
  // complete, says where): a 1 MiB frame takes 1 MiB, not the 2 MiB a doubling would reserve.
  const size_t needed = buf_.size() + bytes.size();
  if (needed > buf_.capacity()) {
    size_t cap = std::max(needed, 2 * buf_.capacity());
    if (buf_.size() - pos_ >= frame_header_bytes) {
      const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);
      const uint32_t length = (uint32_t{p[6]} << 24) | (uint32_t{p[7]} << 16) | (uint32_t{p[8]} << 8) | uint32_t{p[9]};
      cap = std::min(cap, std::max(needed, pos_ + frame_header_bytes + size_t{length}));
    }
    buf_.reserve(cap);
  }
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

result<std::optional<frame>> frame_decoder::fail_with(error e) {
  error_ = e;
  buf_.clear();
  pos_ = 0;
  return unexpected_error(std::move(e));
}

result<std::optional<frame>> frame_decoder::next() {
  if (error_) return unexpected_error(*error_);
  const size_t avail = buf_.size() - pos_;
  const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + pos_);

  // Magic: checked byte by byte, so a stray HTTP request or garbage fails on its first byte.
  const size_t n_magic = std::min(avail, frame_magic.size());
  for (size_t i = 0; i < n_magic; ++i) {
    if (p[i] != static_cast<unsigned char>(frame_magic[i])) {
      return fail_with(error{errc::bad_frame,
                             fmt::format("bad frame magic: byte {} is 0x{:02x}, expected 0x{:02x}", i, p[i],
                                         static_cast<unsigned char>(frame_magic[i])),
                             0});
    }
  }
  if (avail >= 5) {
    const uint8_t version = p[4];
    if (version < options_.min_version || version > options_.max_version) {
      return fail_with(error{errc::unsupported_version,
                             fmt::format("unsupported protocol version {} (supported: {}..{})", version,
                                         options_.min_version, options_.max_version),
                             0});
    }
  }
  if (avail >= 6 && !is_known_frame_kind(p[5])) {
    return fail_with(error{errc::bad_frame, fmt::format("unknown frame kind {}", p[5]), 0});
  }
  if (avail < frame_header_bytes) return std::optional<frame>{};

  const uint32_t length = (uint32_t{p[6]} << 24) | (uint32_t{p[7]} << 16) | (uint32_t{p[8]} << 8) | uint32_t{p[9]};
  if (length > options_.max_frame_bytes) {
    return fail_with(error{errc::frame_too_large,
                           fmt::format("frame of {} bytes exceeds the limit of {} bytes", length,
                                       options_.max_frame_bytes),
                           0});
  }
  if (avail - frame_header_bytes < length) return std::optional<frame>{};

  frame f;
  f.version = p[4];
  f.kind = static_cast<frame_kind>(p[5]);
  f.payload.assign(buf_.data() + pos_ + frame_header_bytes, length);
  pos_ += frame_header_bytes + length;
  if (pos_ == buf_.size()) {
    // Nothing left: give back a large buffer (one big frame must not pin its memory to an idle
    // connection for the rest of its life).
    if (buf_.capacity() > release_above_bytes) {
      decltype(buf_)().swap(buf_);
    } else {
      buf_.clear();
    }
    pos_ = 0;
  }
  return std::optional<frame>{std::move(f)};
}

}  // namespace troupe::transport
