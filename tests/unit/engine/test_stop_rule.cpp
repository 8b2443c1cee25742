// The stop rule (engine/stop_rule.hpp): which tokens end a sequence and which marker texts are cut
// off, from the model and its tokenizer; the same rule `troupe generate` and the server apply.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "engine/generator.hpp"
#include "engine/model_weights.hpp"
#include "engine/stop_rule.hpp"
#include "engine/tokenizer.hpp"
#include "tests/test_support.hpp"

using namespace troupe::engine;

namespace {
class piece_tokenizer : public tokenizer {
 public:
  piece_tokenizer(std::vector<std::string> pieces, int32_t eos) : pieces_(std::move(pieces)), eos_(eos) {}
  std::vector<int32_t> encode(std::string_view, bool) const override { return {}; }
  std::string decode_piece(int32_t, int32_t id) const override { return pieces_[size_t(id)]; }
  std::string token_text(int32_t id) const override { return pieces_[size_t(id)]; }
  int vocab_size() const override { return int(pieces_.size()); }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return eos_; }

 private:
  std::vector<std::string> pieces_;
  int32_t eos_;
};

bool has(const std::vector<int32_t>& v, int32_t x) { return std::find(v.begin(), v.end(), x) != v.end(); }
}  // namespace

BOOST_AUTO_TEST_SUITE(stop_rule)

BOOST_AUTO_TEST_CASE(ends_at_model_and_tokenizer_eos_and_end_of_generation_tokens) {
  piece_tokenizer tok({"<unk>", "<s>", "</s>", "a", "<|endoftext|>", "<|eot_id|>", "<b>", "<|end_story|>"}, 2);
  model_config c;
  c.vocab_size = 8;
  c.eos_id = 7;
  const auto r = make_stop_rule(c, tok);
  BOOST_TEST(r.ends(7));  // the model's EOS
  BOOST_TEST(r.ends(2));  // the tokenizer's EOS
  BOOST_TEST(r.ends(4));
  BOOST_TEST(r.ends(5));
  BOOST_TEST(!r.ends(3));
  BOOST_TEST(!r.ends(6));  // a marker-like text that is not an end token
  BOOST_TEST(!r.ends(1));
  for (const char* t : {"</s>", "<|end_story|>", "<|endoftext|>", "<|eot_id|>"}) {
    BOOST_TEST_CONTEXT(t) { BOOST_TEST((std::find(r.end_texts.begin(), r.end_texts.end(), t) != r.end_texts.end())); }
  }
  BOOST_TEST((std::find(r.end_texts.begin(), r.end_texts.end(), "<b>") == r.end_texts.end()));
}

BOOST_AUTO_TEST_CASE(plain_word_eos_is_not_a_marker_text) {
  piece_tokenizer tok({"<unk>", "<s>", "end"}, 2);
  model_config c;
  c.vocab_size = 3;
  c.eos_id = 2;
  const auto r = make_stop_rule(c, tok);
  BOOST_TEST(r.ends(2));
  BOOST_TEST(r.end_texts.empty());
  BOOST_TEST(implicit_stop_strings(tok).empty());
}

BOOST_AUTO_TEST_CASE(the_real_656k_model_ends_at_end_story,
                     *troupe::test::needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  const auto path = troupe::test::model_path("TinyStories-656K-Q8_0.gguf");
  auto m = load_model(path, load_options{layer_range{0, 1}});
  BOOST_REQUIRE_MESSAGE(m, "cannot load " << path << ": " << (m ? "" : m.error().message));
  auto tok = load_tokenizer(path);
  BOOST_REQUIRE(tok);
  const auto r = make_stop_rule(m->config, **tok);
  BOOST_TEST(has(r.end_ids, 2));
  BOOST_TEST(r.end_texts == std::vector<std::string>{"<|end_story|>"});
}

BOOST_AUTO_TEST_CASE(generate_stops_at_any_end_id, *troupe::test::needs_models({"stories260K.bin", "tok512.bin"})) {
  // A synthetic-free check of generate's loop: with end_ids naming a token, generation ends there
  // (reason eos) whatever the model's own eos_id says.
  const auto path = troupe::test::model_path("stories260K.bin");
  auto m = load_model(path);
  BOOST_REQUIRE_MESSAGE(m, "cannot load " << path);
  const std::vector<int32_t> prompt{1, 403, 407};
  std::vector<int32_t> free_run;
  generate_options o;
  o.max_new_tokens = 16;
  o.stop_at_eos = false;
  BOOST_REQUIRE(generate(*m, prompt, o, [&](int32_t id) {
    free_run.push_back(id);
    return true;
  }));
  BOOST_REQUIRE_EQUAL(free_run.size(), 16u);
  o.stop_at_eos = true;
  o.end_ids = {free_run[5]};
  std::vector<int32_t> stopped;
  auto st = generate(*m, prompt, o, [&](int32_t id) {
    stopped.push_back(id);
    return true;
  });
  BOOST_REQUIRE(st);
  const auto first = size_t(std::find(free_run.begin(), free_run.end(), free_run[5]) - free_run.begin());
  BOOST_TEST(stopped.size() == first + 1);
  BOOST_TEST((st->finish == finish_reason::eos));
}

BOOST_AUTO_TEST_CASE(a_tokenizer_fits_only_a_model_of_its_vocabulary_size) {
  piece_tokenizer tok({"<unk>", "<s>", "</s>"}, 2);
  BOOST_TEST(check_tokenizer_fits(tok, 3, "t.bin").has_value());
  auto bad = check_tokenizer_fits(tok, 512, "dir/t.bin");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(bad.error().message == "tokenizer: dir/t.bin: 3 tokens, but the model's vocabulary has 512: not this "
                                    "model's tokenizer (or a truncated file)");
}

BOOST_AUTO_TEST_SUITE_END()
