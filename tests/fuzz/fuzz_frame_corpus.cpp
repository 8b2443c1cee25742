// Writes the seed corpus for fuzz_frame: one file per valid frame kind and a few edge cases.
// Each file starts with the split byte fuzz_frame reads first. Usage: fuzz_frame_corpus DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <msgpack.hpp>

#include "transport/client_protocol.hpp"

using namespace troupe::transport;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_frame_corpus DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);

  generate_request text;
  text.request_id = 1;
  text.prompt = "Once upon a time";
  text.stop = {"\n", "end"};
  text.seed = 42;
  generate_request tokens;
  tokens.request_id = 2;
  tokens.prompt_tokens = {1, 15043, 3186};
  tokens.priority = request_priority::batch;
  tokens.stream = false;

  // Regression: total_ms as the integer 2^64-1, which decodes to the double 2^64 (once undefined
  // behaviour when encoded again by msgpack-c's pack_double).
  msgpack::sbuffer big;
  msgpack::packer<msgpack::sbuffer> pk(big);
  pk.pack_map(3);
  pk.pack(std::string("request_id"));
  pk.pack(uint64_t{1});
  pk.pack(std::string("finish_reason"));
  pk.pack(std::string("length"));
  pk.pack(std::string("total_ms"));
  pk.pack(std::numeric_limits<uint64_t>::max());

  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"final_huge_total_ms", encode_frame(frame_kind::final, std::string_view(big.data(), big.size()))},
      {"hello", encode(hello{1, 1, "key", "fuzz", ""})},
      {"hello_ok", encode(hello_ok{1, "troupe", "model", protocol_limits{}})},
      {"generate_text", encode(text)},
      {"generate_tokens", encode(tokens)},
      {"cancel", encode(cancel_request{1})},
      {"token_chunk", encode(token_chunk{1, "Hello", {15043}})},
      {"final", encode(final_frame{1, finish_reason::stop_string, 3, 4, 5.5, 6.5})},
      {"error", encode(error_frame{1, errc::prompt_too_long, "too long"})},
      {"session", encode(hello{}) + encode(text) + encode(cancel_request{1})},
      {"empty_payload", encode_frame(frame_kind::generate, "")},
  };
  for (const auto& [name, bytes] : seeds) {
    for (const char split : {'\x00', '\x07'}) {
      std::ofstream out(dir / (name + "_" + std::to_string(static_cast<int>(split))), std::ios::binary);
      out.put(split);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      if (!out) {
        std::fprintf(stderr, "fuzz_frame_corpus: cannot write %s\n", (dir / name).c_str());
        return 1;
      }
    }
  }
  return 0;
}
