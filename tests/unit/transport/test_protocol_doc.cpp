// docs/protocol.md section 9 against the code: every example frame there (a ```json block, then a
// ```hex block) is read at test time; the encoder must write exactly the documented bytes for the
// JSON's values, and the frame decoder and payload decoders must read the bytes back to those values.
// The hex in the doc was built from the MessagePack specification, not by troupe's encoder.
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "transport/client_protocol.hpp"
#include "transport/frame.hpp"

using namespace troupe::transport;
using json = nlohmann::ordered_json;

namespace {

struct doc_example {
  int line = 0;       // of the ```json fence in docs/protocol.md
  std::string json;   // the payload, for reading
  std::string bytes;  // the whole frame
};

const std::string doc_path = std::string(TROUPE_SOURCE_DIR) + "/docs/protocol.md";

/// "54 52 ..." lines to bytes; a token that is not two hex digits fails the test.
std::string parse_hex(const std::string& text, int line) {
  std::istringstream in(text);
  std::string out, tok;
  while (in >> tok) {
    BOOST_REQUIRE_MESSAGE(tok.size() == 2 && std::isxdigit(uint8_t(tok[0])) && std::isxdigit(uint8_t(tok[1])),
                          "protocol.md:" << line << ": '" << tok << "' is not a hex byte");
    out += char(std::stoi(tok, nullptr, 16));
  }
  return out;
}

/// Every ```json block of the doc must be followed by a ```hex block, and every ```hex block must
/// follow a ```json block.
std::vector<doc_example> read_examples() {
  std::ifstream in(doc_path);
  BOOST_REQUIRE_MESSAGE(in, "cannot read " << doc_path);
  std::vector<doc_example> out;
  std::string line, fence, body;
  int n = 0, fence_line = 0;
  bool want_hex = false;
  while (std::getline(in, line)) {
    ++n;
    if (fence.empty()) {
      if (line.rfind("```", 0) != 0) {
        BOOST_REQUIRE_MESSAGE(!want_hex || line.find_first_not_of(" \t") == std::string::npos,
                              "protocol.md:" << n << ": the json block at line " << out.back().line
                                             << " is not followed by a ```hex block");
        continue;
      }
      fence = line.substr(3);
      fence = fence.empty() ? "(plain)" : fence;
      fence_line = n;
      body.clear();
      BOOST_REQUIRE_MESSAGE(!want_hex || fence == "hex", "protocol.md:" << n << ": expected a ```hex block after the json block at line " << out.back().line);
      continue;
    }
    if (line != "```") {
      body += line + "\n";
      continue;
    }
    if (fence == "json") {
      out.push_back({fence_line, body, {}});
      want_hex = true;
    } else if (fence == "hex") {
      BOOST_REQUIRE_MESSAGE(want_hex, "protocol.md:" << fence_line << ": a hex block without a json block before it");
      out.back().bytes = parse_hex(body, fence_line);
      want_hex = false;
    }
    fence.clear();
  }
  BOOST_REQUIRE_MESSAGE(!want_hex, "protocol.md: the last json block has no hex block");
  return out;
}

// ---- the doc's JSON to the C++ messages (independently of the decoders) -----------------------

template <class T>
T get(const json& v, const std::string& key) {
  BOOST_TEST_INFO("field " << key);
  BOOST_REQUIRE(!v.is_null());
  return v.get<T>();
}

hello to_hello(const json& j) {
  hello m;
  for (const auto& [k, v] : j.items()) {
    if (k == "version") m.version = get<uint8_t>(v, k);
    else if (k == "min_version") m.min_version = get<uint8_t>(v, k);
    else if (k == "api_key") m.api_key = get<std::string>(v, k);
    else if (k == "client_name") m.client_name = get<std::string>(v, k);
    else BOOST_FAIL("hello example has a field the test does not know: " << k);
  }
  return m;
}

hello_ok to_hello_ok(const json& j) {
  hello_ok m;
  for (const auto& [k, v] : j.items()) {
    if (k == "version") m.version = get<uint8_t>(v, k);
    else if (k == "server_name") m.server_name = get<std::string>(v, k);
    else if (k == "model") m.model = get<std::string>(v, k);
    else if (k == "limits") {
      for (const auto& [lk, lv] : v.items()) {
        const auto n = get<uint32_t>(lv, lk);
        if (lk == "max_frame_bytes") m.limits.max_frame_bytes = n;
        else if (lk == "max_prompt_bytes") m.limits.max_prompt_bytes = n;
        else if (lk == "max_prompt_tokens") m.limits.max_prompt_tokens = n;
        else if (lk == "max_tokens") m.limits.max_tokens = n;
        else if (lk == "max_stop_strings") m.limits.max_stop_strings = n;
        else if (lk == "max_stop_string_bytes") m.limits.max_stop_string_bytes = n;
        else BOOST_FAIL("hello_ok example has a limit the test does not know: " << lk);
      }
    } else BOOST_FAIL("hello_ok example has a field the test does not know: " << k);
  }
  return m;
}

generate_request to_generate(const json& j) {
  generate_request m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "prompt") m.prompt = get<std::string>(v, k);
    else if (k == "prompt_tokens") m.prompt_tokens = get<std::vector<int32_t>>(v, k);
    else if (k == "max_tokens") m.max_tokens = get<uint32_t>(v, k);
    else if (k == "temperature") m.temperature = get<float>(v, k);
    else if (k == "top_p") m.top_p = get<float>(v, k);
    else if (k == "top_k") m.top_k = get<int32_t>(v, k);
    else if (k == "repetition_penalty") m.repetition_penalty = get<float>(v, k);
    else if (k == "seed") m.seed = get<uint64_t>(v, k);
    else if (k == "stop") m.stop = get<std::vector<std::string>>(v, k);
    else if (k == "priority") {
      const auto p = get<std::string>(v, k);
      BOOST_REQUIRE_MESSAGE(p == "interactive" || p == "batch", "priority " << p);
      m.priority = p == "batch" ? request_priority::batch : request_priority::interactive;
    } else if (k == "deadline_ms") m.deadline_ms = get<uint32_t>(v, k);
    else if (k == "stream") m.stream = get<bool>(v, k);
    else BOOST_FAIL("generate example has a field the test does not know: " << k);
  }
  return m;
}

cancel_request to_cancel(const json& j) {
  cancel_request m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else BOOST_FAIL("cancel example has a field the test does not know: " << k);
  }
  return m;
}

token_chunk to_token_chunk(const json& j) {
  token_chunk m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "text") m.text = get<std::string>(v, k);
    else if (k == "ids") m.ids = get<std::vector<int32_t>>(v, k);
    else BOOST_FAIL("token_chunk example has a field the test does not know: " << k);
  }
  return m;
}

final_frame to_final(const json& j) {
  final_frame m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "finish_reason") {
      const auto name = get<std::string>(v, k);
      bool found = false;
      for (auto r : {finish_reason::stop, finish_reason::length, finish_reason::stop_string, finish_reason::cancelled,
                     finish_reason::deadline}) {
        if (name == finish_reason_name(r)) m.reason = r, found = true;
      }
      BOOST_REQUIRE_MESSAGE(found, "finish_reason " << name);
    } else if (k == "prompt_tokens") m.prompt_tokens = get<uint32_t>(v, k);
    else if (k == "completion_tokens") m.completion_tokens = get<uint32_t>(v, k);
    else if (k == "ttft_ms") m.ttft_ms = get<double>(v, k);
    else if (k == "total_ms") m.total_ms = get<double>(v, k);
    else BOOST_FAIL("final example has a field the test does not know: " << k);
  }
  return m;
}

admin_request to_admin(const json& j) {
  admin_request m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "token") m.token = get<std::string>(v, k);
    else if (k == "command") m.command = get<std::vector<std::string>>(v, k);
    else BOOST_FAIL("admin example has a field the test does not know: " << k);
  }
  return m;
}

admin_reply to_admin_reply(const json& j) {
  admin_reply m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "ok") m.ok = get<bool>(v, k);
    else if (k == "code") m.code = get<std::string>(v, k);
    else if (k == "message") m.message = get<std::string>(v, k);
    else if (k == "json") m.json = get<std::string>(v, k);
    else BOOST_FAIL("admin_reply example has a field the test does not know: " << k);
  }
  return m;
}

error_frame to_error(const json& j) {
  error_frame m;
  for (const auto& [k, v] : j.items()) {
    if (k == "request_id") m.request_id = get<uint64_t>(v, k);
    else if (k == "code") {
      const auto code = errc_from_name(get<std::string>(v, k));
      BOOST_REQUIRE_MESSAGE(code, "unknown error code " << v);
      m.code = *code;
    } else if (k == "message") m.message = get<std::string>(v, k);
    else BOOST_FAIL("error example has a field the test does not know: " << k);
  }
  return m;
}

/// Both directions for one message: encode(value) == bytes, decode(payload) == value.
template <class T, class Decoded>
void check_both_ways(const T& value, const std::string& bytes, const std::string& payload, const Decoded& decoded) {
  const std::string encoded = encode(value);
  BOOST_TEST(encoded == bytes, "encoder wrote " << printable(encoded, 4096));
  BOOST_REQUIRE_MESSAGE(decoded.has_value(), "decoder refused the doc's bytes: " << decoded.error().message);
  BOOST_TEST((*decoded == value), "decoded value differs from the doc's JSON");
}

}  // namespace

BOOST_AUTO_TEST_SUITE(protocol_doc)

BOOST_AUTO_TEST_CASE(doc_examples_cover_every_frame_kind) {
  const auto examples = read_examples();
  BOOST_REQUIRE_MESSAGE(!examples.empty(), doc_path << " has no ```json + ```hex frame examples");
  std::set<int> kinds;
  for (const auto& e : examples) {
    if (e.bytes.size() > 5) kinds.insert(uint8_t(e.bytes[5]));
  }
  for (int k = 1; k <= 9; ++k) {
    BOOST_TEST(kinds.count(k) == 1u, "no example of frame kind " << k << " (" << frame_kind_name(frame_kind(k)) << ")");
  }
}

BOOST_AUTO_TEST_CASE(encoder_writes_and_decoders_read_the_documented_bytes) {
  const auto examples = read_examples();
  BOOST_REQUIRE(!examples.empty());
  for (const auto& e : examples) {
    BOOST_TEST_CONTEXT("protocol.md:" << e.line << " " << e.json) {
      // The header, by hand: magic, version, kind, big-endian payload length.
      BOOST_REQUIRE(e.bytes.size() >= frame_header_bytes);
      BOOST_TEST(e.bytes.substr(0, 4) == "TRPF");
      BOOST_TEST(int(uint8_t(e.bytes[4])) == int(protocol_version));
      const uint32_t length = uint32_t(uint8_t(e.bytes[6])) << 24 | uint32_t(uint8_t(e.bytes[7])) << 16 |
                              uint32_t(uint8_t(e.bytes[8])) << 8 | uint32_t(uint8_t(e.bytes[9]));
      BOOST_TEST(length == e.bytes.size() - frame_header_bytes);

      // The frame decoder takes the bytes as one whole frame.
      frame_decoder d;
      d.feed(e.bytes);
      auto f = d.next();
      BOOST_REQUIRE_MESSAGE(f.has_value(), "frame decoder: " << f.error().message);
      BOOST_REQUIRE_MESSAGE(f->has_value(), "frame decoder wants more bytes");
      BOOST_TEST(d.buffered_bytes() == 0u);
      const frame& fr = **f;
      BOOST_TEST(int(fr.kind) == int(uint8_t(e.bytes[5])));

      const json j = json::parse(e.json);
      BOOST_REQUIRE(j.is_object());
      switch (fr.kind) {
        case frame_kind::hello: check_both_ways(to_hello(j), e.bytes, fr.payload, decode_hello(fr.payload)); break;
        case frame_kind::hello_ok:
          check_both_ways(to_hello_ok(j), e.bytes, fr.payload, decode_hello_ok(fr.payload));
          break;
        case frame_kind::generate:
          check_both_ways(to_generate(j), e.bytes, fr.payload, decode_generate(fr.payload, protocol_limits{}));
          break;
        case frame_kind::cancel: check_both_ways(to_cancel(j), e.bytes, fr.payload, decode_cancel(fr.payload)); break;
        case frame_kind::token_chunk:
          check_both_ways(to_token_chunk(j), e.bytes, fr.payload, decode_token_chunk(fr.payload));
          break;
        case frame_kind::final: check_both_ways(to_final(j), e.bytes, fr.payload, decode_final(fr.payload)); break;
        case frame_kind::error: check_both_ways(to_error(j), e.bytes, fr.payload, decode_error(fr.payload)); break;
        case frame_kind::admin: check_both_ways(to_admin(j), e.bytes, fr.payload, decode_admin(fr.payload)); break;
        case frame_kind::admin_reply:
          check_both_ways(to_admin_reply(j), e.bytes, fr.payload, decode_admin_reply(fr.payload));
          break;
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
