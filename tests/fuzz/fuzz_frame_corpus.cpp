// Writes the seed corpus for fuzz_frame: one file per valid frame kind and a few edge cases.
// Each file starts with the split byte fuzz_frame reads first. Usage: fuzz_frame_corpus DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

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

  const std::vector<std::pair<std::string, std::string>> seeds = {
      {"hello", encode(hello{1, 1, "key", "fuzz"})},
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
