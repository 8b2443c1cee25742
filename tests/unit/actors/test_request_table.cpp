// request_table: the ROUTER's requests in progress, driven directly (the actor system only makes
// client handles; no message is sent).
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "actors/request_table.hpp"
#include "deterministic_system.hpp"
#include "letter_tokenizer.hpp"

using namespace troupe::actors;
using troupe::test::letter_tokenizer;

namespace {

stream_client_actor::behavior_type idle_client(stream_client_actor::pointer) {
  return {[](stream_chunk&) {}, [](stream_end&) {}};
}

int32_t tok(char c) { return letter_tokenizer::of(c); }

struct table_fixture : troupe::test::deterministic_system {
  letter_tokenizer tokenizer;
  troupe::engine::stop_rule rule{{2}, {"zz"}};  // EOS, and the model's end marker "zz" in text
  request_table table{tokenizer, rule};
  stream_client_actor alice = spawn(idle_client);
  stream_client_actor bob = spawn(idle_client);

  request_entry& add(uint64_t id, stream_client_actor client, std::vector<std::string> stop = {},
                     int64_t deadline_ns = 0) {
    table.add({.id = request_id{id}, .client = client, .replica = 1, .prompt = {1, tok('h')}, .stop = std::move(stop),
               .stop_at_eos = true, .deadline_ns = deadline_ns});
    return *table.find(request_id{id});
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(request_table, table_fixture)

BOOST_AUTO_TEST_CASE(add_keeps_prompt_and_counts_a_clients_first_request) {
  BOOST_TEST(table.add({.id = request_id{1}, .client = alice, .replica = 2, .prompt = {1, 5}}));
  BOOST_TEST(!table.add({.id = request_id{2}, .client = alice, .replica = 0, .prompt = {1, 6}}));
  BOOST_TEST(table.add({.id = request_id{3}, .client = bob, .replica = 0, .prompt = {1, 7}}));
  BOOST_REQUIRE(table.find(request_id{1}) != nullptr);
  BOOST_TEST(table.find(request_id{1})->replica == 2u);
  BOOST_TEST(table.find(request_id{1})->prompt == (std::vector<int32_t>{1, 5}), boost::test_tools::per_element());
  BOOST_TEST(table.find(request_id{4}) == nullptr);
  BOOST_TEST(table.size() == 3u);
}

BOOST_AUTO_TEST_CASE(tokens_are_appended_in_order_and_strays_dropped) {
  request_entry& e = add(1, alice);
  BOOST_TEST(table.append(e, 0, tok('a')));
  BOOST_TEST(!table.append(e, 0, tok('a')));  // duplicate
  BOOST_TEST(!table.append(e, 2, tok('c')));  // ahead of its turn
  BOOST_TEST(table.append(e, 1, tok('b')));
  BOOST_TEST(e.generated == (std::vector<int32_t>{tok('a'), tok('b')}), boost::test_tools::per_element());
  BOOST_TEST(e.ids.size() == 2u);
  table.flush(e);
  BOOST_TEST(e.ready == "ab");
}

BOOST_AUTO_TEST_CASE(a_stop_string_finishes_with_the_text_before_it) {
  request_entry& e = add(1, alice, {"cd"});
  for (char c : std::string("abcd")) table.append(e, int32_t(e.generated.size()), tok(c));
  BOOST_TEST(e.ready == "ab");
  BOOST_TEST(e.finish_total == 4);
  BOOST_TEST(e.reason == finish_reason::stop);
  BOOST_TEST(e.stop_string);
  BOOST_TEST(e.all_arrived());
  BOOST_TEST(!table.append(e, 4, tok('e')));  // finished: takes no more
  BOOST_TEST(!table.finish(e, 9, finish_reason::length));  // already finishing
}

BOOST_AUTO_TEST_CASE(the_models_end_marker_in_text_finishes_as_eos_and_the_end_token_adds_no_text) {
  request_entry& e = add(1, alice, {"q"});
  table.append(e, 0, tok('a'));
  table.append(e, 1, 2);  // EOS: no text
  BOOST_TEST(e.ready == "a");
  table.append(e, 2, tok('z'));
  table.append(e, 3, tok('z'));
  BOOST_TEST(e.ready == "a");
  BOOST_TEST(e.reason == finish_reason::eos);
  BOOST_TEST(!e.stop_string);
}

BOOST_AUTO_TEST_CASE(finish_waits_for_every_token_the_scheduler_produced) {
  request_entry& e = add(1, alice);
  table.append(e, 0, tok('a'));
  BOOST_TEST(table.finish(e, 2, finish_reason::length));
  BOOST_TEST(!e.all_arrived());
  table.append(e, 1, tok('b'));
  BOOST_TEST(e.all_arrived());
  BOOST_TEST(e.reason == finish_reason::length);
}

BOOST_AUTO_TEST_CASE(cancel_finishes_with_the_tokens_so_far) {
  request_entry& e = add(1, alice);
  table.append(e, 0, tok('a'));
  table.cancel(e);
  BOOST_TEST(e.all_arrived());
  BOOST_TEST(e.reason == finish_reason::cancelled);
  BOOST_TEST(e.finish_total == 1);
}

BOOST_AUTO_TEST_CASE(erase_says_when_a_client_has_no_request_left) {
  add(1, alice);
  add(2, alice);
  add(3, bob);
  BOOST_TEST(!table.erase(request_id{1}));
  BOOST_TEST(table.erase(request_id{2}));
  BOOST_TEST(!table.erase(request_id{2}));  // unknown
  auto gone = table.erase_client(bob.address());
  BOOST_REQUIRE(gone.size() == 1u);
  BOOST_TEST(gone[0].first.value == 3u);
  BOOST_TEST(gone[0].second == 1u);
  BOOST_TEST(table.size() == 0u);
}

BOOST_AUTO_TEST_CASE(expired_lists_requests_past_their_deadline) {
  add(1, alice, {}, 100);
  add(2, alice, {}, 0);  // no deadline
  add(3, bob, {}, 300);
  BOOST_TEST(table.expired(50).empty());
  auto late = table.expired(200);
  BOOST_REQUIRE(late.size() == 1u);
  BOOST_TEST(late[0].value == 1u);
  BOOST_TEST(table.expired(1000).size() == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
