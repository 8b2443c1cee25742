// libFuzzer target: the frame decoder fed in arbitrary splits, and every protocol decoder run on
// every payload it yields. Anything decoded must encode and decode back to the same value.
// Built by clang++ with -fsanitize=fuzzer,address (tests/fuzz/frame.cmake).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "transport/client_protocol.hpp"
#include "transport/frame.hpp"

using namespace troupe::transport;

namespace {

// Small limits, so the fuzzer reaches the limit checks with short inputs.
constexpr protocol_limits limits{4096, 256, 32, 128, 4, 16};

std::string payload_of(const std::string& bytes) {
  frame_decoder d(frame_decoder_options{1u << 20, 1, 255});
  d.feed(bytes);
  auto f = d.next();
  if (!f || !*f) std::abort();  // our own encoder produced something the decoder refuses
  return std::move((*f)->payload);
}

template <class T, class Decode>
void round_trip(const result<T>& first, Decode&& decode) {
  if (!first) return;
  auto again = decode(payload_of(encode(*first)));
  if (!again || !(*again == *first)) std::abort();
}

void decode_everything(const frame& f) {
  const std::string_view p = f.payload;
  round_trip(decode_hello(p), [](std::string_view q) { return decode_hello(q); });
  round_trip(decode_generate(p, limits), [](std::string_view q) { return decode_generate(q, limits); });
  round_trip(decode_cancel(p), [](std::string_view q) { return decode_cancel(q); });
  round_trip(decode_hello_ok(p), [](std::string_view q) { return decode_hello_ok(q); });
  round_trip(decode_token_chunk(p), [](std::string_view q) { return decode_token_chunk(q); });
  round_trip(decode_final(p), [](std::string_view q) { return decode_final(q); });
  round_trip(decode_error(p), [](std::string_view q) { return decode_error(q); });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks how the rest is split into reads (1..64 bytes each).
  const size_t step = 1 + data[0] % 64;
  const std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  frame_decoder decoder(frame_decoder_options{limits.max_frame_bytes, 1, 1});
  for (size_t pos = 0; pos < input.size(); pos += step) {
    decoder.feed(input.substr(pos, step));
    for (;;) {
      auto f = decoder.next();
      if (!f) {
        if (decoder.next().has_value()) std::abort();  // errors must be sticky
        return 0;
      }
      if (!*f) break;
      if ((*f)->payload.size() > limits.max_frame_bytes) std::abort();
      decode_everything(**f);
    }
  }
  if (decoder.buffered_bytes() > input.size()) std::abort();
  return 0;
}
