// Pipelines of 2 and 3 stages (several micro-batches in flight): same text as the engine.
#include "tests/integration/serve/serve_harness.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {

void run_mix(serve_harness& h, int max_tokens) {
  std::map<actors::request_id, actors::serve_request> reqs;
  uint64_t seed = 100;
  int i = 0;
  for (const auto& p : story_prompts()) {
    auto r = (i++ % 2 == 0) ? greedy(p, max_tokens) : seeded(p, max_tokens, seed++);
    h.submit_accepted(reqs, r);
  }
  h.wait_all();
  h.check_all_against_engine(reqs);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(pipeline, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(two_stages_match_the_engine) {
  serve_harness h(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 2));
  BOOST_TEST(h.node().cluster.stages[0].last_layer == 3);
  run_mix(h, 96);
}

BOOST_AUTO_TEST_CASE(three_stages_match_the_engine) {
  serve_harness h(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 3));
  BOOST_TEST(h.node().stages[0].size() == 3u);
  run_mix(h, 96);
  const auto st = h.stats();
  BOOST_REQUIRE_EQUAL(st.size(), 1u);
  BOOST_TEST(st[0].n_free_blocks == st[0].n_blocks);  // everything finished gave its blocks back
}

BOOST_AUTO_TEST_CASE(five_single_layer_stages_with_small_chunks_match_the_engine) {
  auto c = make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 5);
  c.batching.prefill_chunk = 5;  // prompts prefilled over several steps
  c.batching.max_step_tokens = 12;
  serve_harness h(c);
  run_mix(h, 48);
}

BOOST_AUTO_TEST_CASE(two_stages_of_the_q8_gguf_model_match_the_engine, *needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  serve_harness h(make_cluster(model_path("TinyStories-656K-Q8_0.gguf"), "", 2, 2));
  run_mix(h, 96);
}

// Activations over the UCX data plane (loopback, one data plane per stage as if each stage were
// its own process; the messages carry only tags): the same text as the engine.
BOOST_AUTO_TEST_CASE(stages_linked_by_the_data_plane_match_the_engine) {
  actors::serve_options o;
  o.links = actors::stage_link::data_plane;
  serve_harness h(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 3), o);
  BOOST_REQUIRE_EQUAL(h.node().planes.size(), 3u);
  run_mix(h, 96);
  // Every activation crossed a data plane: the middle and last stages received them all.
  BOOST_TEST(h.node().planes[1]->stats().n_received > 0u);
  BOOST_TEST(h.node().planes[2]->stats().n_received > 0u);
  BOOST_TEST(h.node().planes[0]->stats().n_sent == h.node().planes[1]->stats().n_received);
  BOOST_TEST(h.node().planes[2]->stats().n_sent == 0u);
}

BOOST_AUTO_TEST_CASE(q8_gguf_stages_linked_by_the_data_plane_match_the_engine,
                     *needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  actors::serve_options o;
  o.links = actors::stage_link::data_plane;
  serve_harness h(make_cluster(model_path("TinyStories-656K-Q8_0.gguf"), "", 2, 2), o);
  run_mix(h, 96);
  BOOST_TEST(h.node().planes[1]->stats().n_received > 0u);
}

BOOST_AUTO_TEST_SUITE_END()
