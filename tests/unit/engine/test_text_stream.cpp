// Streaming text with stop strings: the stop string is never shown, partial matches are held back.
#include <boost/test/unit_test.hpp>

#include <map>

#include "engine/text_stream.hpp"

using namespace troupe::engine;

namespace {
// A toy tokenizer: each id is one piece of text.
class piece_tokenizer : public tokenizer {
 public:
  explicit piece_tokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::vector<int32_t> encode(std::string_view, bool) const override { return {}; }
  std::string decode_piece(int32_t, int32_t id) const override { return id == 2 ? "" : pieces_[id]; }
  std::string token_text(int32_t id) const override { return pieces_[id]; }
  int vocab_size() const override { return int(pieces_.size()); }
  int32_t bos_id() const override { return 1; }
  int32_t eos_id() const override { return 2; }

 private:
  std::vector<std::string> pieces_;
};
}  // namespace

BOOST_AUTO_TEST_SUITE(text_stream)

BOOST_AUTO_TEST_CASE(stop_string_split_over_tokens_is_held_back_and_not_shown) {
  piece_tokenizer tok({"<unk>", "<s>", "<|end|>", "Hello", " world", ".", "<|", "end", "|>", "!"});
  troupe::engine::text_stream s(tok, 1, implicit_stop_strings(tok));
  std::string shown;
  for (int id : {3, 4, 5}) shown += s.push(id).text;
  BOOST_TEST(shown == "Hello world.");
  auto a = s.push(6);  // "<|" might start the marker: held back
  BOOST_TEST(a.text.empty());
  BOOST_TEST(!a.stopped);
  BOOST_TEST(s.push(7).text.empty());
  auto c = s.push(8);
  BOOST_TEST(c.stopped);
  BOOST_TEST(c.text.empty());
  BOOST_TEST(s.finish().empty());
}

BOOST_AUTO_TEST_CASE(a_false_start_is_released_once_it_cannot_match) {
  piece_tokenizer tok({"<unk>", "<s>", "<|end|>", "a", "<|", "x"});
  troupe::engine::text_stream s(tok, 1, {"<|end|>"});
  BOOST_TEST(s.push(3).text == "a");
  BOOST_TEST(s.push(4).text.empty());
  BOOST_TEST(s.push(5).text == "<|x");
}

BOOST_AUTO_TEST_CASE(text_before_a_stop_in_the_same_token_is_shown) {
  piece_tokenizer tok({"<unk>", "<s>", "</s>", "fin. STOP here"});
  troupe::engine::text_stream s(tok, 1, {"STOP"});
  auto o = s.push(3);
  BOOST_TEST(o.text == "fin. ");
  BOOST_TEST(o.stopped);
}

BOOST_AUTO_TEST_CASE(held_text_is_released_at_the_end) {
  piece_tokenizer tok({"<unk>", "<s>", "</s>", "ab", "ST"});
  troupe::engine::text_stream s(tok, 1, {"STOP"});
  BOOST_TEST(s.push(3).text == "ab");
  BOOST_TEST(s.push(4).text.empty());
  BOOST_TEST(s.finish() == "ST");
}

BOOST_AUTO_TEST_CASE(only_marker_like_eos_texts_are_implicit_stops) {
  BOOST_TEST(implicit_stop_strings(piece_tokenizer({"<unk>", "<s>", "</s>"})).size() == 1u);
  BOOST_TEST(implicit_stop_strings(piece_tokenizer({"<unk>", "<s>", "the"})).empty());
}

BOOST_AUTO_TEST_SUITE_END()
