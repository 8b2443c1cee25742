// Admission and resource control: cancellation frees blocks, overload is refused at once,
// preemption under a tiny KV cache keeps the text identical, deadlines end requests.
#include "tests/integration/serve/serve_harness.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {
config::cluster_config stories(int n_stages) {
  return make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, n_stages);
}
actors::serve_request long_request() {
  auto r = greedy("Once upon a time", 400);
  r.stop_at_eos = false;
  return r;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(admission, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(cancellation_frees_blocks_at_once) {
  serve_harness h(stories(2));
  auto id = h.submit(long_request());
  BOOST_REQUIRE(id);
  while (h.result(*id).n_chunks == 0) BOOST_REQUIRE(h.receive_one());
  BOOST_TEST(h.stats()[0].n_free_blocks < h.stats()[0].n_blocks);
  caf::anon_send(h.node().router, actors::cancel_atom::value, *id);
  h.wait_all();
  BOOST_TEST(h.result(*id).end.reason == actors::finish_reason::cancelled);
  BOOST_TEST(h.result(*id).end.completion_tokens < 400);
  const auto st = h.stats();  // the router told the scheduler before it answered us
  BOOST_TEST(st[0].n_free_blocks == st[0].n_blocks);
  BOOST_TEST(st[0].n_running == 0);
}

BOOST_AUTO_TEST_CASE(client_disconnect_cancels_its_requests) {
  serve_harness h(stories(1));
  {
    caf::scoped_actor client{h.system()};
    auto id = h.submit_from(client, long_request());
    BOOST_REQUIRE(id);
    // Wait for its first chunk so it holds blocks, then go away.
    client->receive([&](actors::stream_chunk&) {}, caf::after(60s) >> [&] { BOOST_FAIL("no chunk"); });
  }
  // The router sees the client's exit and cancels; poll its counters (each poll a round trip).
  bool freed = false;
  for (int i = 0; i < 100000 && !freed; ++i) {
    const auto st = h.stats();
    freed = st[0].n_free_blocks == st[0].n_blocks && st[0].n_running == 0 && st[0].n_waiting == 0;
  }
  BOOST_TEST(freed);
}

BOOST_AUTO_TEST_CASE(refuses_past_the_waiting_limit_as_overloaded) {
  auto c = stories(1);
  c.batching.max_running = 1;
  c.batching.max_waiting = 2;
  serve_harness h(c);
  auto a = h.submit(long_request());
  BOOST_REQUIRE(a);
  while (h.result(*a).n_chunks == 0) BOOST_REQUIRE(h.receive_one());  // a runs
  BOOST_REQUIRE(h.submit(greedy("The little dog", 10)));  // waits
  BOOST_REQUIRE(h.submit(greedy("Lily wanted to", 10)));  // waits
  auto d = h.submit(greedy("Mom said", 10));
  BOOST_REQUIRE(!d);
  BOOST_TEST(int(actors::serve_errc_of(d.error())) == int(actors::serve_errc::overloaded), actors::describe(d.error()));
  caf::anon_send(h.node().router, actors::cancel_atom::value, *a);
  h.wait_all();  // the two queued ones run once a is gone
  for (const auto& [id, s] : h.results()) {
    if (id != *a) BOOST_TEST(int(s.end.error) == int(actors::serve_errc::none));
  }
}

BOOST_AUTO_TEST_CASE(preemption_under_a_tiny_kv_cache_gives_identical_text) {
  for (int n_stages : {1, 2}) {
    auto c = stories(n_stages);
    c.batching.block_size = 4;
    c.batching.n_blocks = 40;  // 160 positions for 8 sequences of up to ~130
    c.batching.prefill_chunk = 16;
    serve_harness h(c);
    std::map<actors::request_id, actors::serve_request> reqs;
    uint64_t seed = 3;
    int i = 0;
    for (const auto& p : story_prompts()) {
      auto r = (i++ % 2 == 0) ? greedy(p, 110) : seeded(p, 110, seed++);
      r.stop_at_eos = false;
      h.submit_accepted(reqs, r);
    }
    h.wait_all();
    h.check_all_against_engine(reqs);
    const auto st = h.stats();
    BOOST_TEST(st[0].n_preemptions > 0);
    BOOST_TEST(st[0].n_free_blocks == st[0].n_blocks);
  }
}

BOOST_AUTO_TEST_CASE(an_expired_deadline_ends_the_request) {
  serve_harness h(stories(1));
  auto r = long_request();
  r.deadline_ms = 1;
  auto id = h.submit(r);
  BOOST_REQUIRE(id);
  h.wait_all();
  BOOST_TEST(h.result(*id).end.reason == actors::finish_reason::deadline);
  BOOST_TEST(h.result(*id).end.completion_tokens < 400);
  const auto st = h.stats();
  BOOST_TEST(st[0].n_free_blocks == st[0].n_blocks);
}

BOOST_AUTO_TEST_CASE(interactive_requests_overtake_queued_batch_requests) {
  auto c = stories(1);
  c.batching.max_running = 1;
  serve_harness h(c);
  auto a = h.submit(long_request());
  BOOST_REQUIRE(a);
  while (h.result(*a).n_chunks == 0) BOOST_REQUIRE(h.receive_one());
  auto b = greedy("The little dog", 5);
  b.prio = actors::priority::batch;
  auto idb = h.submit(b);
  auto idi = h.submit(greedy("Mom said", 5));
  BOOST_REQUIRE(idb);
  BOOST_REQUIRE(idi);
  caf::anon_send(h.node().router, actors::cancel_atom::value, *a);
  // The interactive request, queued later, finishes first.
  std::vector<actors::request_id> order;
  while (!h.all_ended()) {
    const bool bi = h.result(*idi).ended, bb = h.result(*idb).ended;
    BOOST_REQUIRE(h.receive_one());
    if (!bi && h.result(*idi).ended) order.push_back(*idi);
    if (!bb && h.result(*idb).ended) order.push_back(*idb);
  }
  BOOST_REQUIRE_EQUAL(order.size(), 2u);
  BOOST_TEST(order[0] == *idi);
}

BOOST_AUTO_TEST_SUITE_END()
