// Protocol messages: round trips, field validation, limits, malformed payloads.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <string>

#include <msgpack.hpp>

#include "transport/client_protocol.hpp"

using namespace troupe::transport;

namespace {

/// The payload of an encoded frame (checks the header on the way).
std::string payload_of(const std::string& frame_bytes, frame_kind kind) {
  frame_decoder d;
  d.feed(frame_bytes);
  auto f = d.next();
  BOOST_TEST_REQUIRE(f.has_value());
  BOOST_TEST_REQUIRE(f->has_value());
  BOOST_TEST(static_cast<int>((*f)->kind) == static_cast<int>(kind));
  return (*f)->payload;
}

using packer = msgpack::packer<msgpack::sbuffer>;

/// A payload written by hand: a map of `n` entries filled by `body`.
std::string hand_payload(uint32_t n, const std::function<void(packer&)>& body) {
  msgpack::sbuffer buf;
  packer pk(buf);
  pk.pack_map(n);
  body(pk);
  return std::string(buf.data(), buf.size());
}

/// A valid generate map with one extra or replacing entry written by `extra`.
std::string generate_with(const std::function<void(packer&)>& extra, uint32_t n_extra = 1) {
  return hand_payload(2 + n_extra, [&](packer& pk) {
    pk.pack(std::string("request_id"));
    pk.pack(uint64_t{7});
    pk.pack(std::string("prompt"));
    pk.pack(std::string("Once upon a time"));
    extra(pk);
  });
}

errc code_of(const error& e) { return e.code; }

#define CHECK_CODE(res, want)                                                    \
  do {                                                                           \
    BOOST_TEST_REQUIRE(!(res).has_value());                                      \
    BOOST_TEST(errc_name(code_of((res).error())) == std::string(errc_name(want)), \
               "message: " << (res).error().message);                            \
  } while (0)

generate_request full_request() {
  generate_request r;
  r.request_id = 42;
  r.prompt = "Once upon a time, \xc3\xa9t\xc3\xa9";
  r.max_tokens = 100;
  r.temperature = 0.7f;
  r.top_p = 0.9f;
  r.top_k = 40;
  r.repetition_penalty = 1.1f;
  r.seed = 1234567890123ull;
  r.stop = {"\n\n", "The end"};
  r.priority = request_priority::batch;
  r.deadline_ms = 5000;
  r.stream = false;
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(client_protocol)

BOOST_AUTO_TEST_CASE(every_message_round_trips) {
  const protocol_limits limits;
  {
    const hello m{1, 1, "secret-key", "bench/3", ""};
    auto d = decode_hello(payload_of(encode(m), frame_kind::hello));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
  {
    hello_ok m{1, "troupe", "tinyllama", protocol_limits{}};
    m.limits.max_tokens = 77;
    m.limits.max_stop_string_bytes = 9;
    auto d = decode_hello_ok(payload_of(encode(m), frame_kind::hello_ok));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
  {
    const auto m = full_request();
    auto d = decode_generate(payload_of(encode(m), frame_kind::generate), limits);
    BOOST_TEST_REQUIRE(d.has_value(), (d ? "" : d.error().message));
    BOOST_TEST((*d == m));
  }
  {
    generate_request m;
    m.request_id = 3;
    m.prompt_tokens = {1, 15043, 0, 2147483647};
    auto d = decode_generate(payload_of(encode(m), frame_kind::generate), limits);
    BOOST_TEST_REQUIRE(d.has_value(), (d ? "" : d.error().message));
    BOOST_TEST((*d == m));
    BOOST_TEST(!d->seed.has_value());
  }
  {
    const cancel_request m{99};
    auto d = decode_cancel(payload_of(encode(m), frame_kind::cancel));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
  {
    const token_chunk m{5, "Hello, w\xc3\xb6rld", {15043, 29892, 3186}};
    auto d = decode_token_chunk(payload_of(encode(m), frame_kind::token_chunk));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
  for (auto reason : {finish_reason::stop, finish_reason::length, finish_reason::stop_string,
                      finish_reason::cancelled, finish_reason::deadline}) {
    const final_frame m{5, reason, 12, 34, 56.25, 789.5};
    auto d = decode_final(payload_of(encode(m), frame_kind::final));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
  for (auto code : {errc::bad_frame, errc::frame_too_large, errc::unsupported_version, errc::unauthorized,
                    errc::invalid_request, errc::unknown_field, errc::prompt_too_long, errc::max_tokens_too_large,
                    errc::duplicate_request_id, errc::overloaded, errc::cancelled, errc::deadline_exceeded,
                    errc::internal, errc::shutting_down, errc::timeout}) {
    const error_frame m{8, code, "something went wrong"};
    auto d = decode_error(payload_of(encode(m), frame_kind::error));
    BOOST_TEST_REQUIRE(d.has_value());
    BOOST_TEST((*d == m));
  }
}

BOOST_AUTO_TEST_CASE(floats_are_always_encoded_as_msgpack_floats) {
  // 2^64 once made msgpack-c's integer shortcut convert out of range (found by fuzz_frame).
  const final_frame m{1, finish_reason::stop, 0, 0, 18446744073709551616.0, 2.0};
  const std::string payload = payload_of(encode(m), frame_kind::final);
  BOOST_TEST(payload.find(std::string("\xcb\x40\x00\x00\x00\x00\x00\x00\x00", 9)) != std::string::npos);  // 2.0
  auto d = decode_final(payload);
  BOOST_TEST_REQUIRE(d.has_value());
  BOOST_TEST((*d == m));
  generate_request r;
  r.request_id = 1;
  r.prompt = "x";
  const std::string g = payload_of(encode(r), frame_kind::generate);
  BOOST_TEST(g.find(std::string("\xcb\x3f\x80\x00\x00", 5)) == std::string::npos);
  BOOST_TEST(g.find(std::string("\xca\x3f\x80\x00\x00", 5)) != std::string::npos);  // 1.0f
}

BOOST_AUTO_TEST_CASE(error_code_names_are_stable) {
  BOOST_TEST(std::string(errc_name(errc::bad_frame)) == "bad_frame");
  BOOST_TEST(std::string(errc_name(errc::prompt_too_long)) == "prompt_too_long");
  BOOST_TEST(std::string(errc_name(errc::max_tokens_too_large)) == "max_tokens_too_large");
  BOOST_TEST(std::string(errc_name(errc::unknown_field)) == "unknown_field");
  BOOST_TEST(static_cast<int>(errc::bad_frame) == 1);
  BOOST_TEST(static_cast<int>(errc::invalid_request) == 10);
  BOOST_TEST((errc_from_name("shutting_down") == errc::shutting_down));
  BOOST_TEST(!errc_from_name("no_such_code").has_value());
  BOOST_TEST(closes_connection(errc::bad_frame));
  BOOST_TEST(!closes_connection(errc::invalid_request));
}

BOOST_AUTO_TEST_CASE(unknown_field_is_rejected_by_name) {
  auto r = decode_generate(generate_with([](packer& pk) {
                             pk.pack(std::string("temprature"));
                             pk.pack(0.5);
                           }),
                           protocol_limits{});
  CHECK_CODE(r, errc::unknown_field);
  BOOST_TEST(r.error().message.find("'temprature'") != std::string::npos);
  BOOST_TEST(r.error().request_id == 7u);

  // A hostile name comes back printable and bounded (the message must stay valid UTF-8).
  auto hostile = decode_generate(generate_with([](packer& pk) {
                                   pk.pack(std::string("bad\xff\nname") + std::string(200, 'x'));
                                   pk.pack(1);
                                 }),
                                 protocol_limits{});
  CHECK_CODE(hostile, errc::unknown_field);
  BOOST_TEST(hostile.error().message.find("'bad\\xff\\x0aname") != std::string::npos);
  BOOST_TEST(hostile.error().message.size() < 150u);
  BOOST_TEST(is_valid_utf8(hostile.error().message));

  auto c = decode_cancel(hand_payload(2, [](packer& pk) {
    pk.pack(std::string("request_id"));
    pk.pack(1);
    pk.pack(std::string("why"));
    pk.pack(std::string("bored"));
  }));
  CHECK_CODE(c, errc::unknown_field);
  BOOST_TEST(c.error().message.find("'why'") != std::string::npos);

  auto h = decode_hello(hand_payload(2, [](packer& pk) {
    pk.pack(std::string("version"));
    pk.pack(1);
    pk.pack(std::string("apikey"));
    pk.pack(std::string("x"));
  }));
  CHECK_CODE(h, errc::unknown_field);
}

BOOST_AUTO_TEST_CASE(server_frames_ignore_unknown_fields) {
  auto t = decode_token_chunk(hand_payload(3, [](packer& pk) {
    pk.pack(std::string("request_id"));
    pk.pack(1);
    pk.pack(std::string("text"));
    pk.pack(std::string("hi"));
    pk.pack(std::string("logprobs"));
    pk.pack(std::vector<double>{-0.5});
  }));
  BOOST_TEST_REQUIRE(t.has_value());
  BOOST_TEST(t->text == "hi");
}

BOOST_AUTO_TEST_CASE(wrong_type_names_the_field) {
  auto r = decode_generate(generate_with([](packer& pk) {
                             pk.pack(std::string("temperature"));
                             pk.pack(std::string("hot"));
                           }),
                           protocol_limits{});
  CHECK_CODE(r, errc::invalid_request);
  BOOST_TEST(r.error().message.find("'temperature'") != std::string::npos);
  BOOST_TEST(r.error().request_id == 7u);

  auto s = decode_generate(generate_with([](packer& pk) {
                             pk.pack(std::string("stream"));
                             pk.pack(1);
                           }),
                           protocol_limits{});
  CHECK_CODE(s, errc::invalid_request);
  BOOST_TEST(s.error().message.find("'stream'") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(numbers_accept_integers_and_nil_means_absent) {
  auto r = decode_generate(generate_with(
                               [](packer& pk) {
                                 pk.pack(std::string("temperature"));
                                 pk.pack(0);
                                 pk.pack(std::string("top_p"));
                                 pk.pack(1);
                                 pk.pack(std::string("seed"));
                                 pk.pack_nil();
                               },
                               3),
                           protocol_limits{});
  BOOST_TEST_REQUIRE(r.has_value(), (r ? "" : r.error().message));
  BOOST_TEST(r->temperature == 0.0f);
  BOOST_TEST(r->top_p == 1.0f);
  BOOST_TEST(!r->seed.has_value());
  // Defaults for what was left out.
  BOOST_TEST(r->max_tokens == 16u);
  BOOST_TEST(r->stream);
  BOOST_TEST((r->priority == request_priority::interactive));
}

BOOST_AUTO_TEST_CASE(ranges_are_checked) {
  const protocol_limits limits;
  auto with = [&](const char* field, auto value) {
    return decode_generate(generate_with([&](packer& pk) {
                             pk.pack(std::string(field));
                             pk.pack(value);
                           }),
                           limits);
  };
  CHECK_CODE(with("temperature", -0.1), errc::invalid_request);
  CHECK_CODE(with("temperature", std::numeric_limits<double>::quiet_NaN()), errc::invalid_request);
  CHECK_CODE(with("temperature", std::numeric_limits<double>::infinity()), errc::invalid_request);
  CHECK_CODE(with("temperature", 1e300), errc::invalid_request);  // beyond float
  CHECK_CODE(with("top_p", 0.0), errc::invalid_request);
  CHECK_CODE(with("top_p", 1.5), errc::invalid_request);
  CHECK_CODE(with("top_k", -1), errc::invalid_request);
  CHECK_CODE(with("repetition_penalty", 0.0), errc::invalid_request);
  CHECK_CODE(with("max_tokens", 0), errc::invalid_request);
  CHECK_CODE(with("max_tokens", -5), errc::invalid_request);
  CHECK_CODE(with("request_id", 0), errc::invalid_request);
  CHECK_CODE(with("seed", -1), errc::invalid_request);
  CHECK_CODE(with("deadline_ms", uint64_t{1} << 40), errc::invalid_request);
  CHECK_CODE(with("priority", std::string("urgent")), errc::invalid_request);
  BOOST_TEST(with("top_p", 1.0).has_value());
  BOOST_TEST(with("temperature", 0.0).has_value());
  BOOST_TEST(with("top_k", 0).has_value());
  BOOST_TEST(with("priority", std::string("batch")).has_value());
}

BOOST_AUTO_TEST_CASE(limits_are_enforced) {
  protocol_limits limits;
  limits.max_prompt_bytes = 10;
  limits.max_prompt_tokens = 3;
  limits.max_tokens = 50;
  limits.max_stop_strings = 2;
  limits.max_stop_string_bytes = 4;

  generate_request r;
  r.request_id = 9;
  r.prompt = std::string(11, 'a');
  auto too_long = decode_generate(payload_of(encode(r), frame_kind::generate), limits);
  CHECK_CODE(too_long, errc::prompt_too_long);
  BOOST_TEST(too_long.error().request_id == 9u);
  r.prompt = std::string(10, 'a');
  BOOST_TEST(decode_generate(payload_of(encode(r), frame_kind::generate), limits).has_value());

  r.prompt.clear();
  r.prompt_tokens = {1, 2, 3, 4};
  CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), limits), errc::prompt_too_long);
  r.prompt_tokens = {1, 2, 3};
  BOOST_TEST(decode_generate(payload_of(encode(r), frame_kind::generate), limits).has_value());

  r.max_tokens = 51;
  CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), limits), errc::max_tokens_too_large);
  r.max_tokens = 50;
  BOOST_TEST(decode_generate(payload_of(encode(r), frame_kind::generate), limits).has_value());

  r.stop = {"a", "b", "c"};
  CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), limits), errc::invalid_request);
  r.stop = {"abcde"};
  CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), limits), errc::invalid_request);
  r.stop = {""};
  CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), limits), errc::invalid_request);
  r.stop = {"ab", "cd"};
  BOOST_TEST(decode_generate(payload_of(encode(r), frame_kind::generate), limits).has_value());

  // validate() applies the same rules to requests built in-process.
  r.max_tokens = 51;
  CHECK_CODE(validate(r, limits), errc::max_tokens_too_large);
}

BOOST_AUTO_TEST_CASE(prompt_must_be_exactly_one_of_text_or_tokens) {
  const protocol_limits limits;
  auto none = decode_generate(hand_payload(1, [](packer& pk) {
                                pk.pack(std::string("request_id"));
                                pk.pack(1);
                              }),
                              limits);
  CHECK_CODE(none, errc::invalid_request);
  BOOST_TEST(none.error().message.find("prompt") != std::string::npos);

  auto both = decode_generate(generate_with([](packer& pk) {
                                pk.pack(std::string("prompt_tokens"));
                                pk.pack(std::vector<int>{1, 2});
                              }),
                              limits);
  CHECK_CODE(both, errc::invalid_request);

  auto empty = decode_generate(hand_payload(2, [](packer& pk) {
                                 pk.pack(std::string("request_id"));
                                 pk.pack(1);
                                 pk.pack(std::string("prompt"));
                                 pk.pack(std::string(""));
                               }),
                               limits);
  CHECK_CODE(empty, errc::invalid_request);

  auto negative_id = decode_generate(hand_payload(2, [](packer& pk) {
                                       pk.pack(std::string("request_id"));
                                       pk.pack(1);
                                       pk.pack(std::string("prompt_tokens"));
                                       pk.pack(std::vector<int>{1, -2});
                                     }),
                                     limits);
  CHECK_CODE(negative_id, errc::invalid_request);

  auto no_id = decode_generate(hand_payload(1, [](packer& pk) {
                                 pk.pack(std::string("prompt"));
                                 pk.pack(std::string("hi"));
                               }),
                               limits);
  CHECK_CODE(no_id, errc::invalid_request);
  BOOST_TEST(no_id.error().request_id == 0u);
}

BOOST_AUTO_TEST_CASE(prompt_must_be_utf8) {
  for (const char* bad : {"\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"}) {
    generate_request r;
    r.request_id = 1;
    r.prompt = std::string("ok ") + bad;
    CHECK_CODE(decode_generate(payload_of(encode(r), frame_kind::generate), protocol_limits{}),
               errc::invalid_request);
  }
  BOOST_TEST(is_valid_utf8("plain \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
}

BOOST_AUTO_TEST_CASE(duplicate_field_is_rejected) {
  auto r = decode_generate(generate_with([](packer& pk) {
                             pk.pack(std::string("prompt"));
                             pk.pack(std::string("again"));
                           }),
                           protocol_limits{});
  CHECK_CODE(r, errc::invalid_request);
  BOOST_TEST(r.error().message.find("twice") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(malformed_payloads_are_bad_frames) {
  const protocol_limits limits;
  CHECK_CODE(decode_generate("", limits), errc::bad_frame);                          // nothing
  CHECK_CODE(decode_generate("\xc1", limits), errc::bad_frame);                      // never-used byte
  CHECK_CODE(decode_generate(std::string("\x92\x01\x02", 3), limits), errc::bad_frame);  // an array
  CHECK_CODE(decode_generate(std::string("\x81\xa1", 2), limits), errc::bad_frame);      // truncated
  // A map header claiming 4 billion entries, and an array claiming as many, in a few bytes.
  CHECK_CODE(decode_generate(std::string("\xdf\xff\xff\xff\xff", 5), limits), errc::bad_frame);
  CHECK_CODE(decode_generate(std::string("\x81\xa1x\xdd\xff\xff\xff\xff", 8), limits), errc::bad_frame);
  // A valid map followed by extra bytes.
  std::string trailing = payload_of(encode(cancel_request{1}), frame_kind::cancel) + std::string(1, '\0');
  CHECK_CODE(decode_cancel(trailing), errc::bad_frame);
  // Non-string keys are a request error, not a framing error.
  CHECK_CODE(decode_cancel(hand_payload(1, [](packer& pk) {
               pk.pack(1);
               pk.pack(1);
             })),
             errc::invalid_request);
}

BOOST_AUTO_TEST_CASE(hello_version_range_is_checked) {
  auto h = decode_hello(hand_payload(1, [](packer& pk) {
    pk.pack(std::string("version"));
    pk.pack(3);
  }));
  BOOST_TEST_REQUIRE(h.has_value());
  BOOST_TEST(h->min_version == 3);  // absent min_version: only `version`
  CHECK_CODE(decode_hello(hand_payload(2,
                                       [](packer& pk) {
                                         pk.pack(std::string("version"));
                                         pk.pack(1);
                                         pk.pack(std::string("min_version"));
                                         pk.pack(2);
                                       })),
             errc::invalid_request);
  CHECK_CODE(decode_hello(hand_payload(0, [](packer&) {})), errc::invalid_request);
}

BOOST_AUTO_TEST_CASE(unknown_error_code_from_a_newer_server_is_kept_in_the_message) {
  auto e = decode_error(hand_payload(2, [](packer& pk) {
    pk.pack(std::string("code"));
    pk.pack(std::string("quota_exceeded"));
    pk.pack(std::string("message"));
    pk.pack(std::string("try tomorrow"));
  }));
  BOOST_TEST_REQUIRE(e.has_value());
  BOOST_TEST((e->code == errc::internal));
  BOOST_TEST(e->message == "[quota_exceeded] try tomorrow");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- admin frames (the ADMIN CONSOLE) ---------------------------------------------------------
BOOST_AUTO_TEST_SUITE(client_protocol)  // reopened: the admin frames

BOOST_AUTO_TEST_CASE(admin_request_and_reply_round_trip) {
  const admin_request r{7, "tok", {"weight", "2", "0.05"}};
  const std::string f = encode(r);
  BOOST_TEST(int(uint8_t(f[5])) == int(frame_kind::admin));
  auto d = decode_admin(std::string_view(f).substr(frame_header_bytes));
  BOOST_REQUIRE(d.has_value());
  BOOST_TEST((*d == r));
  const admin_reply a{7, false, "unauthorized", "wrong admin token", ""};
  const std::string g = encode(a);
  BOOST_TEST(int(uint8_t(g[5])) == int(frame_kind::admin_reply));
  auto e = decode_admin_reply(std::string_view(g).substr(frame_header_bytes));
  BOOST_REQUIRE(e.has_value());
  BOOST_TEST((*e == a));
}

BOOST_AUTO_TEST_CASE(admin_request_without_words_or_id_is_refused) {
  auto no_words = decode_admin(std::string_view(encode(admin_request{1, "t", {}})).substr(frame_header_bytes));
  BOOST_TEST(!no_words.has_value());
  auto no_id = decode_admin(std::string_view(encode(admin_request{0, "t", {"status"}})).substr(frame_header_bytes));
  BOOST_TEST(!no_id.has_value());
}

BOOST_AUTO_TEST_CASE(hello_carries_the_admin_token_only_when_given) {
  hello h;
  h.admin_token = "secret";
  auto d = decode_hello(std::string_view(encode(h)).substr(frame_header_bytes));
  BOOST_REQUIRE(d.has_value());
  BOOST_TEST(d->admin_token == "secret");
  BOOST_TEST(encode(hello{}).find("admin_token") == std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
