// One replica, one stage: served text equals `troupe generate`'s, greedy and seeded.
#include "tests/integration/serve/serve_harness.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {
serve_harness make_stories260k() {
  return serve_harness(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 1));
}
}  // namespace

BOOST_AUTO_TEST_SUITE(single_stage, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(greedy_requests_match_the_engine_one_at_a_time) {
  auto h = make_stories260k();
  std::map<actors::request_id, actors::serve_request> reqs;
  for (const auto& p : story_prompts()) {
    auto r = greedy(p, 80);
    h.submit_accepted(reqs, r);
    h.wait_all();
  }
  h.check_all_against_engine(reqs);
  // Alone in the replica, each request decoded several steps per step request (decode_steps).
  const auto st = h.stats();
  BOOST_TEST(st[0].n_step_requests * 2 < st[0].n_steps);
}

BOOST_AUTO_TEST_CASE(seeded_sampling_matches_the_engine_concurrently) {
  auto h = make_stories260k();
  std::map<actors::request_id, actors::serve_request> reqs;
  uint64_t seed = 1;
  for (const auto& p : story_prompts()) {
    auto r = seeded(p, 100, seed++);
    auto id = h.submit(r);
    BOOST_REQUIRE(id);
    reqs[*id] = r;
  }
  h.wait_all();
  h.check_all_against_engine(reqs);
}

BOOST_AUTO_TEST_CASE(runs_past_eos_when_asked_and_reports_length) {
  auto h = make_stories260k();
  auto r = greedy("Once upon a time", 300);
  r.stop_at_eos = false;
  auto id = h.submit(r);
  BOOST_REQUIRE(id);
  h.wait_all();
  std::map<actors::request_id, actors::serve_request> reqs{{*id, r}};
  h.check_all_against_engine(reqs);
  BOOST_TEST(h.result(*id).end.completion_tokens == 300);
  BOOST_TEST(h.result(*id).end.reason == actors::finish_reason::length);
}

BOOST_AUTO_TEST_CASE(stop_string_truncates_the_engine_text) {
  auto h = make_stories260k();
  auto r = greedy("Once upon a time", 120);
  const reference ref = h.generate_reference(r);
  // Stop at the second word of the generated text.
  const size_t sp = ref.text.find(' ', 1);
  BOOST_REQUIRE(sp != std::string::npos);
  const size_t sp2 = ref.text.find(' ', sp + 1);
  BOOST_REQUIRE(sp2 != std::string::npos);
  const std::string stop = ref.text.substr(sp, sp2 - sp);
  r.stop = {stop};
  auto id = h.submit(r);
  BOOST_REQUIRE(id);
  h.wait_all();
  const auto& s = h.result(*id);
  BOOST_TEST(s.text == ref.text.substr(0, ref.text.find(stop)));
  BOOST_TEST(s.end.stop_string);
  BOOST_TEST(s.end.reason == actors::finish_reason::stop);
}

BOOST_AUTO_TEST_CASE(refuses_invalid_requests) {
  auto h = make_stories260k();
  auto bad = greedy("", 10);
  auto e = h.submit(bad);
  BOOST_REQUIRE(!e);
  BOOST_TEST(int(actors::serve_errc_of(e.error())) == int(actors::serve_errc::invalid_request));
  auto neg = greedy("hi", 10);
  neg.sampling.temperature = -1;
  BOOST_TEST(!h.submit(neg));
  auto huge = greedy("hi", 10);
  huge.prompt_tokens.assign(600, 5);
  huge.prompt.clear();
  auto t = h.submit(huge);
  BOOST_REQUIRE(!t);
  BOOST_TEST(int(actors::serve_errc_of(t.error())) == int(actors::serve_errc::too_long));
  BOOST_TEST(h.results().empty());
}

BOOST_AUTO_TEST_SUITE_END()
