// batch_policy: the SCHEDULER's decisions, driven directly (no actors, no threads, no clock).
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <numeric>
#include <ostream>
#include <deque>
#include <random>

#include "actors/batch_policy.hpp"

using namespace troupe::actors;

namespace troupe::actors {
inline std::ostream& operator<<(std::ostream& os, request_id id) { return os << id.value; }
inline std::ostream& operator<<(std::ostream& os, admit_status s) { return os << admit_status_name(s); }
}  // namespace troupe::actors

namespace {

batch_policy_config small_config() {
  batch_policy_config c;
  c.block_size = 4;
  c.n_blocks = 16;
  c.max_step_tokens = 32;
  c.max_running = 8;
  c.max_waiting = 8;
  c.prefill_chunk = 8;
  c.ctx_size = 64;
  c.end_ids = {2};
  return c;
}

sequence_spec spec(uint64_t id, int prompt_len, int max_tokens, priority p = priority::interactive,
                   int64_t deadline_ns = 0) {
  sequence_spec s;
  s.id = request_id{id};
  s.prompt.resize(size_t(prompt_len));
  std::iota(s.prompt.begin(), s.prompt.end(), 10);
  s.max_tokens = max_tokens;
  s.prio = p;
  s.deadline_ns = deadline_ns;
  return s;
}

const planned_seq* find(const step_plan& p, uint64_t id) {
  for (const auto& w : p.seqs) {
    if (w.id == request_id{id}) return &w;
  }
  return nullptr;
}

// Samples `token` for every sequence of the plan that samples.
std::vector<finished_seq> complete(batch_policy& bp, const step_plan& p, int32_t token = 7) {
  std::vector<sampled_token> out;
  for (const auto& w : p.seqs) {
    if (w.sample) out.push_back(sampled_token{w.id, token, w.step});
  }
  return bp.on_result(p.micro_batch, out);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(batch_policy)

BOOST_AUTO_TEST_CASE(prefills_a_prompt_in_chunks_then_decodes_one_token_per_step) {
  ::troupe::actors::batch_policy bp(small_config());
  BOOST_TEST(bp.admit(spec(1, 20, 3), 0) == admit_status::ok);
  auto p1 = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p1.seqs.size(), 1u);
  BOOST_TEST(p1.seqs[0].start_pos == 0);
  BOOST_TEST(p1.seqs[0].tokens.size() == 8u);
  BOOST_TEST(!p1.seqs[0].sample);
  BOOST_TEST(p1.seqs[0].is_new);
  BOOST_TEST(p1.seqs[0].history.size() == 20u);
  BOOST_TEST(p1.seqs[0].new_blocks.size() == 2u);
  // In flight: not planned again until its result arrives.
  BOOST_TEST(bp.plan(0).empty());
  BOOST_TEST(complete(bp, p1).empty());
  auto p2 = bp.plan(0);
  BOOST_TEST(p2.seqs[0].start_pos == 8);
  BOOST_TEST(!p2.seqs[0].is_new);
  complete(bp, p2);
  auto p3 = bp.plan(0);
  BOOST_TEST(p3.seqs[0].start_pos == 16);
  BOOST_TEST(p3.seqs[0].tokens.size() == 4u);
  BOOST_TEST(p3.seqs[0].sample);
  BOOST_TEST(p3.seqs[0].step == 0);
  complete(bp, p3, 42);
  auto p4 = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p4.seqs.size(), 1u);
  BOOST_TEST(p4.seqs[0].start_pos == 20);
  BOOST_TEST(p4.seqs[0].tokens == std::vector<int32_t>{42});
  BOOST_TEST(p4.seqs[0].step == 1);
  BOOST_TEST(p4.seqs[0].new_blocks.size() == 1u);  // position 20 starts block 5
}

BOOST_AUTO_TEST_CASE(every_end_id_of_the_stop_rule_finishes_with_eos) {
  // The model's stop rule may name several end tokens (EOS, <|end_story|>, <|eot_id|>, ...).
  auto cfg = small_config();
  cfg.end_ids = {2, 5};
  ::troupe::actors::batch_policy bp(cfg);
  auto a = spec(1, 3, 10);
  auto b = spec(2, 3, 10);
  b.stop_at_eos = false;
  bp.admit(a, 0);
  bp.admit(b, 0);
  BOOST_TEST(bp.stop_ids(request_id{1}) == (std::vector<int32_t>{2, 5}));
  BOOST_TEST(bp.stop_ids(request_id{2}).empty());
  auto p = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p.seqs.size(), 2u);
  std::vector<sampled_token> t = {{request_id{1}, 5, 0}, {request_id{2}, 5, 0}};
  auto fin = bp.on_result(p.micro_batch, t);
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);
  BOOST_TEST((fin[0].id == request_id{1} && fin[0].reason == finish_reason::eos && fin[0].n_generated == 1));
}

BOOST_AUTO_TEST_CASE(finishes_on_max_tokens_eos_and_stop_tokens) {
  auto cfg = small_config();
  ::troupe::actors::batch_policy bp(cfg);
  auto a = spec(1, 3, 2);
  auto b = spec(2, 3, 10);
  auto c = spec(3, 3, 10);
  c.stop_tokens = {99};
  bp.admit(a, 0);
  bp.admit(b, 0);
  bp.admit(c, 0);
  auto p = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p.seqs.size(), 3u);
  std::vector<sampled_token> t = {{request_id{1}, 5, 0}, {request_id{2}, 2, 0}, {request_id{3}, 99, 0}};
  auto fin = bp.on_result(p.micro_batch, t);
  BOOST_REQUIRE_EQUAL(fin.size(), 2u);
  BOOST_TEST((fin[0].id == request_id{2} && fin[0].reason == finish_reason::eos));
  BOOST_TEST((fin[1].id == request_id{3} && fin[1].reason == finish_reason::stop));
  auto p2 = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p2.seqs.size(), 1u);
  BOOST_TEST(p2.released.size() == 2u);  // the stages drop the finished sequences
  fin = complete(bp, p2);
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);
  BOOST_TEST((fin[0].reason == finish_reason::length && fin[0].n_generated == 2));
  BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks);
  BOOST_TEST(bp.idle());
}

BOOST_AUTO_TEST_CASE(keeps_generating_past_eos_when_told_to) {
  ::troupe::actors::batch_policy bp(small_config());
  auto s = spec(1, 3, 3);
  s.stop_at_eos = false;
  bp.admit(s, 0);
  int n = 0;
  for (;;) {
    auto p = bp.plan(0);
    if (p.empty()) break;
    auto fin = complete(bp, p, 2);
    ++n;
    if (!fin.empty()) {
      BOOST_TEST((fin[0].reason == finish_reason::length && fin[0].n_generated == 3));
      break;
    }
  }
  BOOST_TEST(n == 3);
}

BOOST_AUTO_TEST_CASE(finishes_with_context_full_like_the_engine) {
  auto cfg = small_config();
  cfg.ctx_size = 8;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 6, 100), 0);
  std::vector<finished_seq> fin;
  int steps = 0;
  while (fin.empty() && steps < 20) {
    auto p = bp.plan(0);
    BOOST_REQUIRE(!p.empty());
    fin = complete(bp, p);
    ++steps;
  }
  // The engine stops once history (prompt + generated) exceeds the context: 6 + 3 > 8.
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);
  BOOST_TEST((fin[0].reason == finish_reason::context_full && fin[0].n_generated == 3));
}

BOOST_AUTO_TEST_CASE(decodes_and_prefills_share_the_token_budget) {
  auto cfg = small_config();
  cfg.max_step_tokens = 10;
  cfg.prefill_chunk = 8;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 4, 10), 0);
  auto p = bp.plan(0);
  complete(bp, p);  // 1 is now decoding
  bp.admit(spec(2, 20, 10), 0);
  bp.admit(spec(3, 20, 10), 0);
  auto q = bp.plan(0);
  BOOST_REQUIRE_EQUAL(q.seqs.size(), 3u);
  BOOST_TEST(q.seqs[0].id == request_id{1});  // the decode first
  BOOST_TEST(q.seqs[0].tokens.size() == 1u);
  BOOST_TEST(q.seqs[1].tokens.size() == 8u);  // a full chunk
  BOOST_TEST(q.seqs[2].tokens.size() == 1u);  // what is left of the budget
  BOOST_TEST(q.n_tokens == 10);
}

BOOST_AUTO_TEST_CASE(refuses_requests_past_the_waiting_limit_as_overloaded) {
  auto cfg = small_config();
  cfg.max_waiting = 2;
  ::troupe::actors::batch_policy bp(cfg);
  BOOST_TEST(bp.admit(spec(1, 3, 5), 0) == admit_status::ok);
  BOOST_TEST(bp.admit(spec(2, 3, 5), 0) == admit_status::ok);
  BOOST_TEST(bp.admit(spec(3, 3, 5), 0) == admit_status::overloaded);
  BOOST_TEST(!bp.contains(request_id{3}));
  bp.plan(0);  // both start running: the queue has room again
  BOOST_TEST(bp.admit(spec(3, 3, 5), 0) == admit_status::ok);
}

BOOST_AUTO_TEST_CASE(refuses_requests_that_cannot_fit_the_kv_cache) {
  auto cfg = small_config();
  cfg.n_blocks = 4;                                                      // 16 positions
  ::troupe::actors::batch_policy small(cfg);
  BOOST_TEST(small.admit(spec(2, 10, 8), 0) == admit_status::too_long);  // 17 positions
  BOOST_TEST(small.admit(spec(3, 10, 7), 0) == admit_status::ok);        // 16 positions
}

BOOST_AUTO_TEST_CASE(cancel_frees_blocks_at_once_even_in_flight) {
  auto cfg = small_config();
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 20, 10), 0);
  auto p = bp.plan(0);
  BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks - 2);
  BOOST_TEST(bp.cancel(request_id{1}));
  BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks);
  BOOST_TEST(!bp.cancel(request_id{1}));
  BOOST_TEST(complete(bp, p).empty());  // the late result is ignored
  bp.admit(spec(2, 3, 10), 0);
  auto q = bp.plan(0);
  BOOST_REQUIRE_EQUAL(q.seqs.size(), 1u);
  BOOST_TEST((q.released == std::vector<request_id>{request_id{1}}));
}

BOOST_AUTO_TEST_CASE(preempts_newest_sequence_when_blocks_run_out) {
  auto cfg = small_config();
  cfg.block_size = 4;
  cfg.n_blocks = 4;
  cfg.prefill_chunk = 8;
  cfg.max_step_tokens = 32;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 8, 8), 0);  // 2 blocks, grows to 4 (15 positions)
  bp.admit(spec(2, 8, 4), 0);  // 2 blocks
  auto p = bp.plan(0);
  BOOST_REQUIRE_EQUAL(p.seqs.size(), 2u);
  BOOST_TEST(bp.n_free_blocks() == 0);
  complete(bp, p);
  // Both need a third block for position 8: the newest (2) is preempted, the oldest goes on.
  auto q = bp.plan(0);
  BOOST_TEST(q.n_preempted == 1);
  BOOST_REQUIRE_EQUAL(q.seqs.size(), 1u);
  BOOST_TEST(q.seqs[0].id == request_id{1});
  BOOST_TEST(bp.n_preemptions() == 1);
  BOOST_TEST(bp.n_blocks_held(request_id{2}) == 0);
  BOOST_TEST(bp.n_generated(request_id{2}) == 1);
  BOOST_TEST((q.released == std::vector<request_id>{request_id{2}}));
}

BOOST_AUTO_TEST_CASE(recomputes_a_preempted_sequence_with_its_generated_tokens_and_step_counter) {
  auto cfg = small_config();
  cfg.n_blocks = 4;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 8, 4), 0);
  bp.admit(spec(2, 8, 4), 0);
  complete(bp, bp.plan(0), 30);
  auto q = bp.plan(0);  // 2 preempted
  BOOST_REQUIRE_EQUAL(q.seqs.size(), 1u);
  // Run 1 to the end; then 2 comes back with prompt + its one generated token.
  std::vector<finished_seq> fin = complete(bp, q, 31);
  while (fin.empty()) fin = complete(bp, bp.plan(0), 31);
  BOOST_TEST(fin[0].id == request_id{1});
  auto r = bp.plan(0);
  const planned_seq* w = find(r, 2);
  BOOST_REQUIRE(w != nullptr);
  BOOST_TEST(w->is_new);
  BOOST_TEST(w->start_pos == 0);
  BOOST_TEST(w->history.size() == 9u);
  BOOST_TEST(w->history.back() == 30);
  BOOST_TEST(w->tokens.size() == 8u);  // one chunk; the 9th token follows
  BOOST_TEST(!w->sample);
  complete(bp, r);
  auto s = bp.plan(0);
  BOOST_REQUIRE_EQUAL(s.seqs.size(), 1u);
  BOOST_TEST(s.seqs[0].start_pos == 8);
  BOOST_TEST(s.seqs[0].tokens == std::vector<int32_t>{30});
  BOOST_TEST(s.seqs[0].sample);
  BOOST_TEST(s.seqs[0].step == 1);  // the counter goes on: same text as without preemption
}

BOOST_AUTO_TEST_CASE(schedules_interactive_before_batch_then_earliest_deadline) {
  auto cfg = small_config();
  cfg.max_running = 1;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 3, 1, priority::batch), 0);
  bp.admit(spec(2, 3, 1, priority::interactive, 5000), 0);
  bp.admit(spec(3, 3, 1, priority::interactive, 2000), 0);
  bp.admit(spec(4, 3, 1, priority::interactive), 0);
  std::vector<uint64_t> order;
  for (int i = 0; i < 4; ++i) {
    auto p = bp.plan(0);
    BOOST_REQUIRE_EQUAL(p.seqs.size(), 1u);
    order.push_back(p.seqs[0].id.value);
    complete(bp, p);
  }
  BOOST_TEST(order == (std::vector<uint64_t>{3, 2, 4, 1}));
}

BOOST_AUTO_TEST_CASE(finishes_expired_deadlines_with_a_deadline_reason) {
  auto cfg = small_config();
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 3, 10, priority::interactive, 1000), 0);
  bp.admit(spec(2, 3, 10), 0);
  auto p = bp.plan(500);
  BOOST_TEST(p.seqs.size() == 2u);
  complete(bp, p);
  auto q = bp.plan(1000);
  BOOST_REQUIRE_EQUAL(q.finished.size(), 1u);
  BOOST_TEST((q.finished[0].id == request_id{1} && q.finished[0].reason == finish_reason::deadline));
  BOOST_TEST(q.finished[0].n_generated == 1);
  BOOST_REQUIRE_EQUAL(q.seqs.size(), 1u);
  BOOST_TEST(q.seqs[0].id == request_id{2});
  BOOST_TEST((q.released == std::vector<request_id>{request_id{1}}));
}

BOOST_AUTO_TEST_CASE(keeps_each_sequence_in_at_most_one_micro_batch_in_flight) {
  auto cfg = small_config();
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 3, 5), 0);
  auto a = bp.plan(0);
  bp.admit(spec(2, 3, 5), 0);
  auto b = bp.plan(0);
  BOOST_REQUIRE_EQUAL(a.seqs.size(), 1u);
  BOOST_REQUIRE_EQUAL(b.seqs.size(), 1u);
  BOOST_TEST(b.seqs[0].id == request_id{2});
  BOOST_TEST(a.micro_batch != b.micro_batch);
  BOOST_TEST(bp.n_in_flight() == 2);
  BOOST_TEST(bp.plan(0).empty());
  complete(bp, b);  // results may come back in any order
  auto c = bp.plan(0);
  BOOST_REQUIRE_EQUAL(c.seqs.size(), 1u);
  BOOST_TEST(c.seqs[0].id == request_id{2});
  complete(bp, a);
  BOOST_TEST(bp.n_in_flight() == 1);
}

// With two micro-batches in flight (a 2-stage pipeline) each takes half the sequences, whatever
// the token budget would let the first one take: both stages then run equal batches.
BOOST_AUTO_TEST_CASE(each_micro_batch_in_flight_takes_its_share_of_the_sequences) {
  auto cfg = small_config();
  cfg.n_blocks = 64;
  cfg.max_running = 16;
  cfg.max_waiting = 16;
  cfg.max_step_tokens = 256;
  cfg.micro_batches = 2;
  ::troupe::actors::batch_policy bp(cfg);
  for (uint64_t id = 1; id <= 10; ++id) BOOST_REQUIRE(bp.admit(spec(id, 4, 20), 0) == admit_status::ok);
  auto a = bp.plan(0);
  auto b = bp.plan(0);
  BOOST_TEST(a.seqs.size() == 5u);  // the budget would have let `a` take all ten
  BOOST_TEST(b.seqs.size() == 5u);
  BOOST_TEST(bp.plan(0).empty());
  for (int round = 0; round < 4; ++round) {
    complete(bp, a);
    a = bp.plan(0);
    BOOST_TEST(a.seqs.size() == 5u);
    BOOST_TEST(a.n_decodes == 5);
    complete(bp, b);
    b = bp.plan(0);
    BOOST_TEST(b.seqs.size() == 5u);
  }
  // Three in flight: 4, 4 and 2 of ten.
  cfg.micro_batches = 3;
  ::troupe::actors::batch_policy three(cfg);
  for (uint64_t id = 1; id <= 10; ++id) BOOST_REQUIRE(three.admit(spec(id, 4, 20), 0) == admit_status::ok);
  BOOST_TEST(three.plan(0).seqs.size() == 4u);
  BOOST_TEST(three.plan(0).seqs.size() == 4u);
  BOOST_TEST(three.plan(0).seqs.size() == 2u);
}

BOOST_AUTO_TEST_CASE(failed_micro_batch_finishes_its_sequences) {
  auto cfg = small_config();
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 3, 5), 0);
  auto p = bp.plan(0);
  auto fin = bp.on_failure(p.micro_batch);
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);
  BOOST_TEST((fin[0].reason == finish_reason::failed));
  BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks);
}

BOOST_AUTO_TEST_CASE(zero_max_tokens_finishes_without_running) {
  ::troupe::actors::batch_policy bp(small_config());
  BOOST_TEST(bp.admit(spec(1, 3, 0), 0) == admit_status::ok);
  auto p = bp.plan(0);
  BOOST_TEST(p.empty());
  BOOST_REQUIRE_EQUAL(p.finished.size(), 1u);
  BOOST_TEST((p.finished[0].reason == finish_reason::length && p.finished[0].n_generated == 0));
}

BOOST_AUTO_TEST_CASE(respects_max_running) {
  auto cfg = small_config();
  cfg.max_running = 2;
  ::troupe::actors::batch_policy bp(cfg);
  for (uint64_t i = 1; i <= 4; ++i) bp.admit(spec(i, 3, 5), 0);
  auto p = bp.plan(0);
  BOOST_TEST(p.seqs.size() == 2u);
  BOOST_TEST(bp.n_running() == 2);
  BOOST_TEST(bp.n_waiting() == 2);
}

BOOST_AUTO_TEST_CASE(waits_for_an_in_flight_newest_sequence_instead_of_preempting_an_older_one) {
  auto cfg = small_config();
  cfg.n_blocks = 4;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 8, 8), 0);
  auto p1 = bp.plan(0);  // 1 prefills (2 blocks)
  bp.admit(spec(2, 8, 4), 0);
  auto p2 = bp.plan(0);  // 2 prefills (2 blocks): no block left
  BOOST_REQUIRE_EQUAL(p2.seqs.size(), 1u);
  complete(bp, p1);
  // 1 needs a block; the newest (2) is in flight: 1 waits, nobody is preempted.
  auto q = bp.plan(0);
  BOOST_TEST(q.empty());
  BOOST_TEST(bp.n_preemptions() == 0);
  complete(bp, p2);
  auto r = bp.plan(0);  // now 2 can be preempted
  BOOST_TEST(bp.n_preemptions() == 1);
  BOOST_REQUIRE_EQUAL(r.seqs.size(), 1u);
  BOOST_TEST(r.seqs[0].id == request_id{1});
}

BOOST_AUTO_TEST_CASE(finishes_every_sequence_under_random_arrivals_and_a_tiny_cache) {
  for (int trial = 0; trial < 300; ++trial) {
    std::mt19937 rng{uint32_t(trial)};
    auto cfg = small_config();
    cfg.block_size = 4;
    cfg.n_blocks = 40;
    cfg.prefill_chunk = 16;
    cfg.max_step_tokens = 64;
    cfg.ctx_size = 512;
    const size_t max_in_flight = size_t(1 + trial % 3);
    // The share cap too (micro_batches = micro-batches in flight), or a smaller one, or none.
    cfg.micro_batches = std::max(1, int(max_in_flight) - (trial % 6 >= 3 ? 1 : 0));
    ::troupe::actors::batch_policy bp(cfg);
    std::deque<step_plan> in_flight;
    int admitted = 0, finished = 0;
    for (int step = 0; step < 100000 && finished < 8; ++step) {
      if (admitted < 8 && rng() % 3 == 0) {
        auto s = spec(uint64_t(admitted + 1), 3 + int(rng() % 13), 110);
        s.stop_at_eos = false;
        BOOST_REQUIRE(bp.admit(s, 0) == admit_status::ok);
        ++admitted;
      }
      while (in_flight.size() < max_in_flight) {
        auto p = bp.plan(0);
        if (p.empty()) break;
        in_flight.push_back(std::move(p));
      }
      if (in_flight.empty()) {
        BOOST_REQUIRE_MESSAGE(admitted < 8 || bp.idle(), "stalled in trial " << trial);
        continue;
      }
      auto p = std::move(in_flight.front());
      in_flight.pop_front();
      finished += int(complete(bp, p).size());
    }
    BOOST_REQUIRE_MESSAGE(finished == 8, "trial " << trial << " finished " << finished);
    BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks);
  }
}

// Runs n_steps decode steps of plan p as a single-stage replica would: token `first + k` for
// step k of every sequence, stopping a sequence after `stop_at` (if given).
std::vector<sampled_token> run_steps(const step_plan& p, int32_t first, int32_t stop_at = -1) {
  std::vector<sampled_token> out;
  for (const auto& w : p.seqs) {
    for (int k = 0; k < p.n_steps; ++k) {
      out.push_back(sampled_token{w.id, first + k, w.step + k});
      if (first + k == stop_at) break;
    }
  }
  return out;
}

BOOST_AUTO_TEST_CASE(runs_several_decode_steps_when_only_decodes_run_and_nobody_waits) {
  auto cfg = small_config();  // block_size 4, ctx 64
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 6, 20), 0);
  bp.admit(spec(2, 3, 5), 0);
  // Prefill steps never run several steps.
  auto p1 = bp.plan(0, 8);
  BOOST_TEST(p1.n_steps == 1);
  complete(bp, p1, 40);  // both prompts fit the first step: token 0 sampled for each
  // Decodes only, nobody waiting: as many steps as the shortest max_tokens allows (2 has 4 left).
  auto p2 = bp.plan(0, 8);
  BOOST_REQUIRE_EQUAL(p2.seqs.size(), 2u);
  BOOST_TEST(p2.n_steps == 4);
  const planned_seq* a = find(p2, 1);
  BOOST_REQUIRE(a != nullptr);
  BOOST_TEST(a->start_pos == 6);
  BOOST_TEST(a->tokens == std::vector<int32_t>{40});
  BOOST_TEST(a->step == 1);
  // Blocks cover every position of the run: 6..9 for sequence 1 (blocks 0-2 of 4 positions).
  BOOST_TEST(bp.n_blocks_held(request_id{1}) == 3);
  BOOST_TEST(bp.n_blocks_held(request_id{2}) == 2);  // positions 3..6
  auto fin = bp.on_result(p2.micro_batch, run_steps(p2, 50));
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);  // 2 reached max_tokens on the last step
  BOOST_TEST((fin[0].id == request_id{2} && fin[0].reason == finish_reason::length && fin[0].n_generated == 5));
  BOOST_TEST(bp.n_generated(request_id{1}) == 5);
  // The next step starts after the run: the last sampled token, at position 6 + 4.
  auto p3 = bp.plan(0, 2);
  BOOST_REQUIRE_EQUAL(p3.seqs.size(), 1u);
  BOOST_TEST(p3.seqs[0].start_pos == 10);
  BOOST_TEST(p3.seqs[0].tokens == std::vector<int32_t>{53});
  BOOST_TEST(p3.seqs[0].step == 5);
  BOOST_TEST(p3.n_steps == 2);
  BOOST_TEST(p3.released.size() == 1u);
}

BOOST_AUTO_TEST_CASE(runs_one_step_at_a_time_while_a_request_waits_or_a_prefill_runs) {
  auto cfg = small_config();
  cfg.max_running = 1;
  ::troupe::actors::batch_policy bp(cfg);
  bp.admit(spec(1, 3, 20), 0);
  complete(bp, bp.plan(0, 8));
  bp.admit(spec(2, 3, 20), 0);  // waits: max_running is 1
  auto p = bp.plan(0, 8);
  BOOST_TEST(p.n_steps == 1);
  BOOST_TEST(bp.n_waiting() == 1);

  ::troupe::actors::batch_policy bp2(small_config());
  bp2.admit(spec(1, 3, 20), 0);
  complete(bp2, bp2.plan(0, 8));
  bp2.admit(spec(2, 20, 20), 0);  // starts in this step with a prefill chunk
  auto q = bp2.plan(0, 8);
  BOOST_TEST(q.seqs.size() == 2u);
  BOOST_TEST(q.n_steps == 1);
}

BOOST_AUTO_TEST_CASE(a_run_of_decode_steps_stops_at_eos_and_respects_the_context) {
  auto cfg = small_config();  // ctx 64, eos 2
  ::troupe::actors::batch_policy bp(cfg);
  auto s = spec(1, 60, 100);
  s.stop_tokens = {77};
  bp.admit(s, 0);
  BOOST_TEST((bp.stop_ids(request_id{1}) == std::vector<int32_t>{2, 77}));
  for (int i = 0; i < 16 && bp.n_generated(request_id{1}) == 0; ++i) complete(bp, bp.plan(0, 8), 40);  // prefill
  // Position 60 now; the context (64 positions) allows 4 more steps, not 8.
  auto p = bp.plan(0, 8);
  BOOST_TEST(p.seqs[0].start_pos == 60);
  BOOST_TEST(p.n_steps == 4);
  // The stage stopped after EOS on the second step: two tokens, finished with eos.
  auto fin = bp.on_result(p.micro_batch, run_steps(p, 1, 2));
  BOOST_REQUIRE_EQUAL(fin.size(), 1u);
  BOOST_TEST((fin[0].reason == finish_reason::eos && fin[0].n_generated == 3));
  BOOST_TEST(bp.plan(0, 8).empty());
  BOOST_TEST(bp.n_free_blocks() == cfg.n_blocks);
}

BOOST_AUTO_TEST_SUITE_END()
