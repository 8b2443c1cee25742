// Two replicas and 32 requests joining while others stream: every one equals the engine's text.
#include "tests/integration/serve/serve_harness.hpp"

using namespace troupe;
using namespace troupe::test;

BOOST_AUTO_TEST_SUITE(replicas, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(thirty_two_requests_joining_at_different_times_match_the_engine) {
  auto c = make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 2, 2);
  c.batching.max_running = 12;  // some wait in the queue, then join running batches
  serve_harness h(c);
  std::map<actors::request_id, actors::serve_request> reqs;
  const auto& prompts = story_prompts();
  uint64_t seed = 7;
  for (int wave = 0; wave < 8; ++wave) {
    for (int k = 0; k < 4; ++k) {
      const int i = wave * 4 + k;
      const std::string& p = prompts[size_t(i) % prompts.size()];
      auto r = (i % 3 == 0) ? greedy(p, 40 + 7 * (i % 5)) : seeded(p, 40 + 9 * (i % 4), seed++);
      if (i % 4 == 1) r.prio = actors::priority::batch;
      h.submit_accepted(reqs, r);
    }
    // Let the running ones stream a little before the next wave joins.
    for (int m = 0; m < 6 && !h.all_ended(); ++m) BOOST_REQUIRE(h.receive_one());
  }
  h.wait_all();
  h.check_all_against_engine(reqs);
  const auto st = h.stats();
  BOOST_REQUIRE_EQUAL(st.size(), 2u);
  BOOST_TEST(st[0].n_steps > 0);  // both replicas served
  BOOST_TEST(st[1].n_steps > 0);
  for (const auto& s : st) BOOST_TEST(s.n_free_blocks == s.n_blocks);
}

BOOST_AUTO_TEST_SUITE_END()
