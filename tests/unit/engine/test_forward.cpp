// The forward pass: batching, layer splits and chunked prefill must not change the numbers.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <numeric>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/thread_pool.hpp"
#include "engine/transformer.hpp"
#include "random_model.hpp"

using namespace troupe;
using namespace troupe::engine;

namespace {

std::vector<int32_t> iota_table(int n, int first = 0) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// Logits of every position of `tokens` for one sequence run alone, one prefill call.
std::vector<float> single_run(const model_weights& m, const std::vector<int32_t>& tokens, thread_pool* pool = nullptr) {
  kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 8, 32);
  transformer tf(m, kv, pool);
  auto table = iota_table(32);
  forward_batch b;
  b.seqs.push_back({int(tokens.size()), 0, table});
  b.tokens = tokens;
  std::vector<float> out;
  BOOST_REQUIRE(tf.forward(b, output_mode::all_logits, out));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(forward)

BOOST_AUTO_TEST_CASE(decode_one_token_at_a_time_equals_prefill) {
  auto m = test::make_random_model({});
  const std::vector<int32_t> tokens = {1, 17, 42, 5, 88, 3, 60, 61, 9, 12, 30};
  const auto full = single_run(m, tokens);
  kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 4, 16);
  // Non-contiguous physical blocks: the block table must be honoured.
  std::vector<int32_t> table = {7, 2, 11, 0};
  transformer tf(m, kv);
  std::vector<float> out;
  const int V = m.config.vocab_size;
  for (int p = 0; p < int(tokens.size()); ++p) {
    forward_batch b;
    b.seqs.push_back({1, p, table});
    b.tokens = {tokens[p]};
    BOOST_REQUIRE(tf.forward(b, output_mode::last_logits, out));
    std::vector<float> expect(full.begin() + p * V, full.begin() + (p + 1) * V);
    BOOST_TEST(max_abs_diff(out, expect) < 1e-4f);
  }
}

BOOST_AUTO_TEST_CASE(batch_of_sequences_equals_separate_runs) {
  for (auto rope : {rope_style::interleaved, rope_style::half}) {
    test::random_model_shape shape;
    shape.rope = rope;
    auto m = test::make_random_model(shape);
    const std::vector<std::vector<int32_t>> seqs = {{1, 2, 3, 4, 5}, {9, 8}, {40, 41, 42, 43, 44, 45, 46, 47, 48}, {77}};
    const int V = m.config.vocab_size;
    // Reference: each sequence alone.
    std::vector<std::vector<float>> ref;
    for (const auto& s : seqs) ref.push_back(single_run(m, s));
    // Batched: each sequence gets its own blocks; sequences 0 and 2 are prefilled in two chunks,
    // so the second call mixes continuing prefills with fresh ones.
    kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 4, 64);
    std::vector<std::vector<int32_t>> tables = {iota_table(4, 0), iota_table(4, 10), iota_table(4, 20), iota_table(4, 30)};
    thread_pool pool(2);
    transformer tf(m, kv, &pool);
    std::vector<float> out;
    forward_batch b1;
    b1.seqs = {{2, 0, tables[0]}, {4, 0, tables[2]}};
    b1.tokens = {1, 2, 40, 41, 42, 43};
    BOOST_REQUIRE(tf.forward(b1, output_mode::all_logits, out));
    forward_batch b2;
    b2.seqs = {{3, 2, tables[0]}, {2, 0, tables[1]}, {5, 4, tables[2]}, {1, 0, tables[3]}};
    b2.tokens = {3, 4, 5, 9, 8, 44, 45, 46, 47, 48, 77};
    BOOST_REQUIRE(tf.forward(b2, output_mode::all_logits, out));
    // Rows of b2's output in order: seq0 pos 2..4, seq1 pos 0..1, seq2 pos 4..8, seq3 pos 0.
    struct span_ref { int seq, first_pos, n; };
    int row = 0;
    for (auto [s, p0, cnt] : {span_ref{0, 2, 3}, span_ref{1, 0, 2}, span_ref{2, 4, 5}, span_ref{3, 0, 1}}) {
      for (int i = 0; i < cnt; ++i, ++row) {
        std::vector<float> got(out.begin() + row * V, out.begin() + (row + 1) * V);
        std::vector<float> exp(ref[s].begin() + (p0 + i) * V, ref[s].begin() + (p0 + i + 1) * V);
        BOOST_TEST(max_abs_diff(got, exp) < 1e-4f, "seq " << s << " pos " << p0 + i);
      }
    }
  }
}

// Serving batches a sequence with whatever else is running and splits its prompt into chunks;
// `troupe generate` runs it alone, prompt in one call, then one token per call. The logits must
// be the same to the bit, or a near tie (made worse by q/k/v rounded to f16) picks another token:
// every kernel computes a token's numbers the same way whatever the batch size, the row range a
// thread gets and the thread count. Shapes: stories260K's (hidden 172: rows not a multiple of 8
// floats, SwiGLU over n * 172 values) in f32, and Q8_0 / Q4_0; every kernel variant the CPU has.
BOOST_AUTO_TEST_CASE(a_sequences_logits_do_not_depend_on_the_batch_or_the_threads_bit_for_bit) {
  struct shape_case { dtype type; int hidden; };
  const cpu::isa detected = cpu::active_isa();
  for (cpu::isa v : {cpu::isa::avx512, cpu::isa::avx2, cpu::isa::scalar}) {
    if (!cpu::set_isa(v)) {
      BOOST_TEST_MESSAGE("SKIP variant " << cpu::isa_name(v) << ": this CPU lacks it");
      continue;
    }
    for (auto [type, hidden] :
         {shape_case{dtype::f32, 172}, shape_case{dtype::q8_0, 160}, shape_case{dtype::q4_0, 96}}) {
      BOOST_TEST_CONTEXT("variant " << cpu::variant_name() << " dtype " << dtype_name(type)) {
        test::random_model_shape shape;
        shape.type = type;
        shape.hidden = hidden;
        shape.heads = 8;
        shape.kv_heads = 4;
        auto m = test::make_random_model(shape);
        const int V = m.config.vocab_size;
        const std::vector<int32_t> a = {1, 17, 42, 5, 88, 3, 60, 61, 9, 12, 30, 7, 19};
        const std::vector<int32_t> others = {4, 8, 15, 16, 23, 42, 50, 51, 52, 53,
                                             54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
        // Alone, as generate runs it: the prompt (8 tokens) in one call, then one token per call.
        std::vector<float> alone;
        {
          thread_pool pool(1);
          kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 4, 8);
          transformer tf(m, kv, &pool);
          const auto table = iota_table(8);
          std::vector<float> out;
          forward_batch b;
          b.seqs.push_back({8, 0, table});
          b.tokens.assign(a.begin(), a.begin() + 8);
          BOOST_REQUIRE(tf.forward(b, output_mode::all_logits, out));
          alone = out;
          for (int p = 8; p < int(a.size()); ++p) {
            forward_batch d;
            d.seqs.push_back({1, p, table});
            d.tokens = {a[size_t(p)]};
            BOOST_REQUIRE(tf.forward(d, output_mode::all_logits, out));
            alone.insert(alone.end(), out.begin(), out.end());
          }
        }
        // Served: the prompt in chunks of 3 + 5 beside another sequence's prefill, then decodes
        // beside 1 to 3 tokens of the other sequence, on 2 and 3 threads.
        for (int threads : {2, 3}) {
          thread_pool pool(threads);
          kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 4, 32);
          transformer tf(m, kv, &pool);
          const auto ta = iota_table(8, 0), tb = iota_table(8, 8);
          std::vector<float> served, out;
          int used = 0;  // tokens of `others` fed so far (sequence b)
          auto step = [&](int a_first, int a_n, int b_n) {
            forward_batch b;
            if (b_n > 0) b.seqs.push_back({b_n, used, tb});
            b.seqs.push_back({a_n, a_first, ta});
            b.tokens.assign(others.begin() + used, others.begin() + used + b_n);
            b.tokens.insert(b.tokens.end(), a.begin() + a_first, a.begin() + a_first + a_n);
            used += b_n;
            BOOST_REQUIRE(tf.forward(b, output_mode::all_logits, out));
            served.insert(served.end(), out.begin() + size_t(b_n) * V, out.end());
          };
          step(0, 3, 4);
          step(3, 5, 1);
          for (int p = 8; p < int(a.size()); ++p) step(p, 1, p % 3 + 1);
          BOOST_REQUIRE_EQUAL(served.size(), alone.size());
          int differ = 0;
          for (size_t i = 0; i < alone.size(); ++i) differ += served[i] != alone[i];
          BOOST_TEST(differ == 0,
                     "threads " << threads << ": " << differ << " of " << alone.size() << " logits differ");
        }
      }
    }
  }
  cpu::set_isa(detected);
}

BOOST_AUTO_TEST_CASE(layers_split_in_two_ranges_equal_the_whole_model) {
  auto full = test::make_random_model({});
  const std::vector<int32_t> tokens = {3, 14, 15, 92, 65, 35, 89, 79};
  const auto ref = single_run(full, tokens);
  for (int k = 1; k < full.config.n_layers; ++k) {
    auto a = test::slice(full, 0, k);
    auto b = test::slice(full, k, full.config.n_layers);
    kv_cache kva(a.n_local_layers(), a.config.n_kv_heads, a.config.head_dim, 8, 4);
    kv_cache kvb(b.n_local_layers(), b.config.n_kv_heads, b.config.head_dim, 8, 4);
    transformer ta(a, kva), tb(b, kvb);
    auto table = iota_table(4);
    forward_batch b1;
    b1.seqs.push_back({int(tokens.size()), 0, table});
    b1.tokens = tokens;
    std::vector<float> hidden, logits;
    BOOST_REQUIRE(ta.forward(b1, output_mode::hidden_states, hidden));
    forward_batch b2;
    b2.seqs = b1.seqs;
    b2.hidden = hidden;
    BOOST_REQUIRE(tb.forward(b2, output_mode::all_logits, logits));
    BOOST_TEST(max_abs_diff(logits, ref) == 0.0f, "split at " << k);  // same ops, same order
  }
}

BOOST_AUTO_TEST_CASE(threads_do_not_change_the_result) {
  for (auto t : {dtype::f32, dtype::q8_0, dtype::q4_0}) {
    test::random_model_shape shape;
    shape.type = t;
    auto m = test::make_random_model(shape);
    const std::vector<int32_t> tokens = {5, 6, 7, 8, 9, 10};
    thread_pool pool(3);
    BOOST_TEST(max_abs_diff(single_run(m, tokens), single_run(m, tokens, &pool)) < 1e-5f);
  }
}

BOOST_AUTO_TEST_CASE(rejects_bad_batches_with_errors) {
  auto m = test::make_random_model({});
  kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 4, 4);
  transformer tf(m, kv);
  std::vector<float> out;
  auto table = iota_table(2);
  forward_batch too_long;  // 9 positions need 3 blocks, table has 2
  too_long.seqs.push_back({9, 0, table});
  too_long.tokens.assign(9, 1);
  auto r = tf.forward(too_long, output_mode::last_logits, out);
  BOOST_REQUIRE(!r);
  BOOST_TEST(r.error().message.find("block table") != std::string::npos);
  forward_batch bad_token;
  bad_token.seqs.push_back({1, 0, table});
  bad_token.tokens = {m.config.vocab_size};
  BOOST_TEST(!tf.forward(bad_token, output_mode::last_logits, out));
  forward_batch bad_block;
  std::vector<int32_t> oob = {99};
  bad_block.seqs.push_back({1, 0, oob});
  bad_block.tokens = {1};
  BOOST_TEST(!tf.forward(bad_block, output_mode::last_logits, out));
  auto first = test::slice(m, 0, 2);
  kv_cache kv2(2, m.config.n_kv_heads, m.config.head_dim, 4, 4);
  transformer t2(first, kv2);
  forward_batch ok;
  ok.seqs.push_back({1, 0, table});
  ok.tokens = {1};
  BOOST_TEST(!t2.forward(ok, output_mode::last_logits, out));  // no head on a first-half stage
}

BOOST_AUTO_TEST_SUITE_END()
