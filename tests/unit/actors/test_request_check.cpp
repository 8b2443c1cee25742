// check_request: the one check of a serve_request, run by the gateways (with the prompt limits
// they know) and by the ROUTER (with the vocabulary and max_tokens), and the one place prompt
// text is tokenized.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "actors/request_check.hpp"
#include "letter_tokenizer.hpp"

using namespace troupe::actors;
using troupe::test::letter_tokenizer;

namespace {

serve_request text(std::string prompt) {
  serve_request r;
  r.prompt = std::move(prompt);
  return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(request_check)

BOOST_AUTO_TEST_CASE(tokenizes_prompt_text_once_with_bos_first) {
  letter_tokenizer tok;
  serve_request r = text("abc");
  BOOST_REQUIRE(check_request(r, request_rules{.tokenizer = &tok}).has_value());
  BOOST_TEST(r.prompt.empty());
  BOOST_TEST(r.prompt_tokens == (std::vector<int32_t>{1, 3, 4, 5}), boost::test_tools::per_element());
  // A second check (the ROUTER's, after a gateway's) sees token ids and leaves them as they are.
  BOOST_REQUIRE(check_request(r, request_rules{.tokenizer = &tok, .vocab_size = 32}).has_value());
  BOOST_TEST(r.prompt_tokens.size() == 4u);
}

BOOST_AUTO_TEST_CASE(refuses_text_longer_than_the_byte_limit_without_tokenizing) {
  letter_tokenizer tok;
  serve_request r = text("abcdef");
  const request_rules rules{.tokenizer = &tok, .max_prompt_tokens = 4, .max_prompt_bytes = max_prompt_bytes(tok, 4)};
  auto ok = check_request(r, rules);
  BOOST_REQUIRE(!ok.has_value());
  BOOST_TEST(int(ok.error().code) == int(serve_errc::too_long));
  BOOST_TEST(ok.error().message.find("6 bytes") != std::string::npos, ok.error().message);
  BOOST_TEST(r.prompt_tokens.empty());  // not tokenized
}

BOOST_AUTO_TEST_CASE(refuses_a_prompt_that_fills_the_context) {
  letter_tokenizer tok;
  serve_request r = text("abcd");  // 5 tokens with BOS
  auto ok = check_request(r, request_rules{.tokenizer = &tok, .max_prompt_tokens = 4});
  BOOST_REQUIRE(!ok.has_value());
  BOOST_TEST(int(ok.error().code) == int(serve_errc::too_long));
  BOOST_TEST(ok.error().message == "a prompt of 5 tokens does not fit the context of 5");
}

BOOST_AUTO_TEST_CASE(checks_vocabulary_and_max_tokens_only_where_known) {
  serve_request r;
  r.prompt_tokens = {1, 40};
  r.max_tokens = 500;
  BOOST_TEST(check_request(r, request_rules{}).has_value());  // a gateway knows neither
  auto vocab = check_request(r, request_rules{.vocab_size = 32});
  BOOST_REQUIRE(!vocab.has_value());
  BOOST_TEST(vocab.error().message == "token id 40 is outside the vocabulary");
  r.prompt_tokens = {1, 5};
  auto max = check_request(r, request_rules{.max_new_tokens = 100});
  BOOST_REQUIRE(!max.has_value());
  BOOST_TEST(int(max.error().code) == int(serve_errc::invalid_request));
  BOOST_TEST(max.error().message == "max_tokens 500 is outside [0, 100]");
}

BOOST_AUTO_TEST_CASE(refuses_bad_sampling_both_prompts_and_empty_stop_strings) {
  serve_request bad_temp;
  bad_temp.prompt_tokens = {1};
  bad_temp.sampling.temperature = -1;
  BOOST_TEST(!check_request(bad_temp, request_rules{}).has_value());
  serve_request both = text("a");
  both.prompt_tokens = {1};
  BOOST_TEST(!check_request(both, request_rules{}).has_value());
  serve_request stop;
  stop.prompt_tokens = {1};
  stop.stop = {""};
  BOOST_TEST(!check_request(stop, request_rules{}).has_value());
  serve_request empty;
  BOOST_TEST(check_request(empty, request_rules{}).error().message == "the prompt is empty");
}

BOOST_AUTO_TEST_SUITE_END()
