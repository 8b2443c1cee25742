// The HTTP API's JSON: request parsing (types, ranges, defaults, unknown fields), the chat
// template, and the shapes of responses, stream chunks and errors.
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include "transport/openai_api.hpp"

using namespace troupe::transport;
using json = nlohmann::json;

BOOST_AUTO_TEST_SUITE(openai_api)

BOOST_AUTO_TEST_CASE(completion_request_fields_and_defaults) {
  protocol_limits limits;
  auto r = parse_completion_request(R"({"model":"m","prompt":"hi","future_field":{"x":1}})", limits);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->model == "m");
  BOOST_TEST(r->gen.prompt == "hi");
  BOOST_TEST(r->gen.max_tokens == 16u);  // OpenAI's default
  BOOST_TEST(r->gen.temperature == 1.0f);
  BOOST_TEST(!r->gen.seed.has_value());
  BOOST_TEST(!r->stream);

  auto s = parse_completion_request(
    R"({"model":"m","prompt":["hi"],"max_tokens":7,"temperature":0,"top_p":0.5,"seed":-1,"stop":["a","b"],
        "stream":true,"stream_options":{"include_usage":true},"n":1,"logprobs":null,"temperature_unit":null})",
    limits);
  BOOST_REQUIRE(s);
  BOOST_TEST(s->gen.prompt == "hi");
  BOOST_TEST(s->gen.max_tokens == 7u);
  BOOST_TEST(s->gen.temperature == 0.0f);
  BOOST_TEST(s->gen.top_p == 0.5f);
  BOOST_TEST(*s->gen.seed == UINT64_MAX);
  BOOST_TEST(s->gen.stop == (std::vector<std::string>{"a", "b"}));
  BOOST_TEST(s->stream);
  BOOST_TEST(s->include_usage);

  auto t = parse_completion_request(R"({"model":"m","prompt":[1,5,9],"stop":"x","temperature":null})", limits);
  BOOST_REQUIRE(t);
  BOOST_TEST(t->gen.prompt.empty());
  BOOST_TEST(t->gen.prompt_tokens == (std::vector<int32_t>{1, 5, 9}));
  BOOST_TEST(t->gen.stop == (std::vector<std::string>{"x"}));
  BOOST_TEST(t->gen.temperature == 1.0f);  // null: the default
}

BOOST_AUTO_TEST_CASE(wrong_types_and_ranges_name_the_field) {
  protocol_limits limits;
  limits.max_tokens = 100;
  const std::vector<std::pair<std::string, std::string>> cases = {
    {R"({"model":"m","prompt":"hi","max_tokens":"5"})", "max_tokens"},
    {R"({"model":"m","prompt":"hi","max_tokens":101})", "max_tokens"},
    {R"({"model":"m","prompt":"hi","max_tokens":0})", "max_tokens"},
    {R"({"model":"m","prompt":"hi","temperature":-0.1})", "temperature"},
    {R"({"model":"m","prompt":"hi","top_p":0})", "top_p"},
    {R"({"model":"m","prompt":"hi","top_p":1.5})", "top_p"},
    {R"({"model":"m","prompt":"hi","seed":1.5})", "seed"},
    {R"({"model":"m","prompt":"hi","stop":[1]})", "stop"},
    {R"({"model":"m","prompt":"hi","stop":[""]})", "stop"},
    {R"({"model":"m","prompt":"hi","n":3})", "n"},
    {R"({"model":"m","prompt":"hi","stream":1})", "stream"},
    {R"({"model":"m","prompt":"hi","stream_options":true})", "stream_options"},
    {R"({"model":5,"prompt":"hi"})", "model"},
    {R"({"model":"m","prompt":5})", "prompt"},
    {R"({"model":"m","prompt":[-1]})", "prompt"},
    {R"({"model":"m","prompt":"\ud800"})", ""},  // a lone surrogate: not UTF-8 after decoding
  };
  for (const auto& [body, param] : cases) {
    BOOST_TEST_CONTEXT(body) {
      auto r = parse_completion_request(body, limits);
      BOOST_REQUIRE(!r);
      BOOST_TEST(r.error().status == 400);
      if (!param.empty()) BOOST_TEST(r.error().param == param);
      BOOST_TEST(!r.error().message.empty());
    }
  }
  auto big = parse_completion_request(json{{"model", "m"}, {"prompt", std::string(300 * 1024, 'a')}}.dump(), limits);
  BOOST_REQUIRE(!big);
  BOOST_TEST(big.error().code == "context_length_exceeded");
  BOOST_TEST(big.error().param == "prompt");
  auto invalid = parse_completion_request("{\"model\":", limits);
  BOOST_REQUIRE(!invalid);
  BOOST_TEST(invalid.error().message.find("not valid JSON") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(chat_renders_the_plain_template_and_stops_at_the_next_turn) {
  protocol_limits limits;
  auto r = parse_chat_request(
    R"({"model":"m","messages":[{"role":"developer","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"!"}]},
        {"role":"assistant","content":"Hello."},{"role":"user","content":"Story?"}],"max_completion_tokens":9})",
    limits);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->gen.prompt == "System: Be brief.\nUser: Hi!\nAssistant: Hello.\nUser: Story?\nAssistant:");
  BOOST_TEST(r->gen.max_tokens == 9u);
  BOOST_TEST(r->gen.stop == (std::vector<std::string>{"\nUser:"}));
  auto d = parse_chat_request(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END"})", limits);
  BOOST_REQUIRE(d);
  BOOST_TEST(d->gen.max_tokens == limits.max_tokens);  // chat's default: as many as allowed
  BOOST_TEST(d->gen.stop == (std::vector<std::string>{"END", "\nUser:"}));
  for (const char* body : {R"({"model":"m","messages":[]})", R"({"model":"m","messages":[{"content":"x"}]})",
                           R"({"model":"m","messages":[{"role":"user","content":5}]})",
                           R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]})"}) {
    BOOST_TEST_CONTEXT(body) { BOOST_TEST(!parse_chat_request(body, limits)); }
  }
}

BOOST_AUTO_TEST_CASE(inference_request) {
  protocol_limits limits;
  auto r = parse_inference_request(R"({"input_text":"Once","max_length":30,"temperature":0.5})", limits);
  BOOST_REQUIRE(r);
  BOOST_TEST(r->gen.prompt == "Once");
  BOOST_TEST(r->gen.max_tokens == 30u);
  BOOST_TEST(r->gen.temperature == 0.5f);
  auto m = parse_inference_request(R"({"max_length":30})", limits);
  BOOST_REQUIRE(!m);
  BOOST_TEST(m.error().param == "input_text");
}

BOOST_AUTO_TEST_CASE(responses_chunks_and_errors_have_openai_shapes) {
  api_completion c{"cmpl-1", 1700000000, "m", "Hello", "length", 3, 2};
  json b = json::parse(completion_body(c));
  BOOST_TEST(b["object"] == "text_completion");
  BOOST_TEST(b["choices"][0]["text"] == "Hello");
  BOOST_TEST(b["choices"][0]["finish_reason"] == "length");
  BOOST_TEST(b["usage"]["total_tokens"] == 5);
  json ch = json::parse(chat_body(c));
  BOOST_TEST(ch["object"] == "chat.completion");
  BOOST_TEST(ch["choices"][0]["message"]["content"] == "Hello");
  BOOST_TEST(ch["choices"][0]["message"]["role"] == "assistant");

  const std::string ev = chat_chunk_event(c, true, "Hi", "");
  BOOST_TEST(ev.rfind("data: ", 0) == 0u);
  BOOST_TEST(ev.substr(ev.size() - 2) == "\n\n");
  json e = json::parse(ev.substr(6));
  BOOST_TEST(e["object"] == "chat.completion.chunk");
  BOOST_TEST(e["choices"][0]["delta"]["role"] == "assistant");
  BOOST_TEST(e["choices"][0]["finish_reason"].is_null());
  json last = json::parse(chat_chunk_event(c, false, "", "stop").substr(6));
  BOOST_TEST(last["choices"][0]["delta"].empty());
  BOOST_TEST(last["choices"][0]["finish_reason"] == "stop");
  json u = json::parse(usage_chunk_event(c, false).substr(6));
  BOOST_TEST(u["choices"].empty());
  BOOST_TEST(u["usage"]["completion_tokens"] == 2);

  // The per-request template gives the same events as the builders.
  for (bool chat : {false, true}) {
    const chunk_template t = make_chunk_template(c, chat);
    for (std::string_view text : {"", "a \"quoted\"\nline", "\x01", "caf\xC3\xA9"}) {
      if (chat && text.empty()) continue;  // the sink sends no empty chat deltas
      const std::string want = chat ? chat_chunk_event(c, false, text, "") : completion_chunk_event(c, text, "");
      const std::string got = t.event(text);
      BOOST_TEST(json::parse(got.substr(6)) == json::parse(want.substr(6)));
      BOOST_TEST(got.rfind("data: ", 0) == 0u);
      BOOST_TEST(got.substr(got.size() - 2) == "\n\n");
    }
  }

  json err = json::parse(error_body(api_error{400, "bad", "", "temperature", ""}));
  BOOST_TEST(err["error"]["message"] == "bad");
  BOOST_TEST(err["error"]["type"] == "invalid_request_error");
  BOOST_TEST(err["error"]["param"] == "temperature");
  BOOST_TEST(err["error"]["code"].is_null());
  BOOST_TEST(json::parse(error_body(api_error{503, "busy", "", "", "overloaded"}))["error"]["type"] == "server_error");
  // Invalid UTF-8 in generated text is replaced, never thrown.
  api_completion bad_utf8 = c;
  bad_utf8.text = "a\xff";
  BOOST_TEST(json::parse(completion_body(bad_utf8))["choices"][0]["text"] == "a\xEF\xBF\xBD");
  BOOST_TEST(api_finish_reason(finish_reason::stop_string) == std::string("stop"));
  BOOST_TEST(api_finish_reason(finish_reason::length) == std::string("length"));
}

BOOST_AUTO_TEST_SUITE_END()
