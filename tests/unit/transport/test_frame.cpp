// Frame header and the incremental frame decoder.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "transport/frame.hpp"

using namespace troupe::transport;

namespace {

std::vector<frame> sample_frames() {
  return {
      frame{1, frame_kind::hello, std::string("\x80", 1)},
      frame{1, frame_kind::generate, std::string(300, 'x')},
      frame{1, frame_kind::cancel, ""},  // empty payload: still a frame
      frame{1, frame_kind::error, std::string("\x00\x01\x02\xff", 4)},
  };
}

std::string concat(const std::vector<frame>& frames) {
  std::string out;
  for (const auto& f : frames) out += encode_frame(f.kind, f.payload, f.version);
  return out;
}

void check_same(const std::vector<frame>& got, const std::vector<frame>& want) {
  BOOST_TEST_REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    BOOST_TEST(got[i].version == want[i].version);
    BOOST_TEST(static_cast<int>(got[i].kind) == static_cast<int>(want[i].kind));
    BOOST_TEST(got[i].payload == want[i].payload);
  }
}

/// Feeds `bytes` in pieces cut at `cuts`, draining frames after each piece.
std::vector<frame> decode_in_pieces(const std::string& bytes, const std::vector<size_t>& cuts) {
  frame_decoder d;
  std::vector<frame> out;
  size_t start = 0;
  auto drain = [&] {
    for (;;) {
      auto f = d.next();
      BOOST_TEST_REQUIRE(f.has_value());
      if (!*f) break;
      out.push_back(std::move(**f));
    }
  };
  for (size_t cut : cuts) {
    d.feed(std::string_view(bytes).substr(start, cut - start));
    drain();
    start = cut;
  }
  d.feed(std::string_view(bytes).substr(start));
  drain();
  BOOST_TEST(d.buffered_bytes() == 0u);
  return out;
}

std::string header(uint8_t version, uint8_t kind, uint32_t length) {
  std::string h = "TRPF";
  h += static_cast<char>(version);
  h += static_cast<char>(kind);
  h += static_cast<char>(length >> 24);
  h += static_cast<char>(length >> 16);
  h += static_cast<char>(length >> 8);
  h += static_cast<char>(length);
  return h;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(frame)

BOOST_AUTO_TEST_CASE(header_is_magic_version_kind_and_big_endian_length) {
  const std::string bytes = encode_frame(frame_kind::token_chunk, std::string(0x010203, 'a'), 1);
  BOOST_TEST(bytes.substr(0, 4) == "TRPF");
  BOOST_TEST(static_cast<int>(bytes[4]) == 1);
  BOOST_TEST(static_cast<int>(bytes[5]) == 5);
  BOOST_TEST(static_cast<int>(bytes[6]) == 0x00);
  BOOST_TEST(static_cast<int>(bytes[7]) == 0x01);
  BOOST_TEST(static_cast<int>(bytes[8]) == 0x02);
  BOOST_TEST(static_cast<int>(bytes[9]) == 0x03);
  BOOST_TEST(bytes.size() == frame_header_bytes + 0x010203);
}

BOOST_AUTO_TEST_CASE(decodes_frames_split_at_every_byte_boundary) {
  const auto want = sample_frames();
  const std::string bytes = concat(want);
  // One cut at every position, then two cuts at every pair of positions in the first frames.
  for (size_t i = 0; i <= bytes.size(); ++i) check_same(decode_in_pieces(bytes, {i}), want);
  for (size_t i = 0; i <= 40; ++i) {
    for (size_t j = i; j <= bytes.size(); j += 7) check_same(decode_in_pieces(bytes, {i, j}), want);
  }
}

BOOST_AUTO_TEST_CASE(decodes_byte_by_byte) {
  const auto want = sample_frames();
  const std::string bytes = concat(want);
  std::vector<size_t> cuts;
  for (size_t i = 1; i < bytes.size(); ++i) cuts.push_back(i);
  check_same(decode_in_pieces(bytes, cuts), want);
}

BOOST_AUTO_TEST_CASE(rejects_bad_magic_at_the_first_wrong_byte) {
  frame_decoder d;
  d.feed("G");
  auto f = d.next();
  BOOST_TEST_REQUIRE(!f.has_value());
  BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::bad_frame));
  BOOST_TEST(f.error().message.find("magic") != std::string::npos);

  frame_decoder d2;
  d2.feed("TRPX");
  BOOST_TEST(!d2.next().has_value());

  frame_decoder d3;  // a correct prefix is not an error yet
  d3.feed("TRP");
  auto partial = d3.next();
  BOOST_TEST_REQUIRE(partial.has_value());
  BOOST_TEST(!partial->has_value());
}

BOOST_AUTO_TEST_CASE(rejects_unsupported_version) {
  for (uint8_t v : {uint8_t{0}, uint8_t{2}, uint8_t{255}}) {
    frame_decoder d;
    d.feed(header(v, 3, 0).substr(0, 5));  // known as soon as the version byte arrives
    auto f = d.next();
    BOOST_TEST_REQUIRE(!f.has_value());
    BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::unsupported_version));
  }
}

BOOST_AUTO_TEST_CASE(set_versions_restricts_accepted_versions) {
  frame_decoder d(frame_decoder_options{1024, 1, 3});
  d.feed(header(3, 3, 0));
  BOOST_TEST_REQUIRE(d.next().has_value());
  d.set_versions(2, 2);
  d.feed(header(3, 3, 0));
  auto f = d.next();
  BOOST_TEST_REQUIRE(!f.has_value());
  BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::unsupported_version));
}

BOOST_AUTO_TEST_CASE(rejects_unknown_kind) {
  for (uint8_t k : {uint8_t{0}, uint8_t{10}, uint8_t{200}}) {
    frame_decoder d;
    d.feed(header(1, k, 0));
    auto f = d.next();
    BOOST_TEST_REQUIRE(!f.has_value());
    BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::bad_frame));
  }
}

BOOST_AUTO_TEST_CASE(rejects_oversize_frame_from_its_header_alone) {
  frame_decoder d(frame_decoder_options{1000, 1, 1});
  d.feed(header(1, 3, 1001));  // no payload bytes sent at all
  auto f = d.next();
  BOOST_TEST_REQUIRE(!f.has_value());
  BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::frame_too_large));
  BOOST_TEST(d.buffered_bytes() == 0u);

  frame_decoder at_limit(frame_decoder_options{1000, 1, 1});
  at_limit.feed(header(1, 3, 1000) + std::string(1000, 'p'));
  auto ok = at_limit.next();
  BOOST_TEST_REQUIRE(ok.has_value());
  BOOST_TEST_REQUIRE(ok->has_value());
  BOOST_TEST((*ok)->payload.size() == 1000u);
}

BOOST_AUTO_TEST_CASE(default_limit_is_one_mebibyte) {
  frame_decoder d;
  d.feed(header(1, 3, (1u << 20) + 1));
  auto f = d.next();
  BOOST_TEST_REQUIRE(!f.has_value());
  BOOST_TEST(static_cast<int>(f.error().code) == static_cast<int>(errc::frame_too_large));
}

BOOST_AUTO_TEST_CASE(errors_are_sticky) {
  frame_decoder d;
  d.feed("XXXX");
  BOOST_TEST(!d.next().has_value());
  d.feed(encode_frame(frame_kind::hello, ""));
  BOOST_TEST(!d.next().has_value());
  BOOST_TEST(d.failed());
}

BOOST_AUTO_TEST_CASE(frames_after_an_error_in_the_same_read_are_not_returned) {
  frame_decoder d;
  d.feed(encode_frame(frame_kind::hello, "a") + "junk" + encode_frame(frame_kind::hello, "b"));
  auto first = d.next();
  BOOST_TEST_REQUIRE(first.has_value());
  BOOST_TEST_REQUIRE(first->has_value());
  BOOST_TEST((*first)->payload == "a");
  BOOST_TEST(!d.next().has_value());
}

BOOST_AUTO_TEST_SUITE_END()
