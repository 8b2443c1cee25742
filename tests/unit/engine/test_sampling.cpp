#include <boost/test/unit_test.hpp>

#include <cmath>
#include <map>
#include <vector>

#include "engine/sampling.hpp"

using namespace troupe::engine;

BOOST_AUTO_TEST_SUITE(sampling)

BOOST_AUTO_TEST_CASE(greedy_picks_the_first_maximum) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 2.0f};
  BOOST_TEST(sample(l, {}, 0, {}) == 1);
}

BOOST_AUTO_TEST_CASE(draw_depends_only_on_seed_and_counter) {
  BOOST_TEST(counter_uniform(7, 3) == counter_uniform(7, 3));
  BOOST_TEST(counter_uniform(7, 3) != counter_uniform(7, 4));
  BOOST_TEST(counter_uniform(7, 3) != counter_uniform(8, 3));
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    const float u = counter_uniform(1, i);
    BOOST_REQUIRE(u >= 0.0f && u < 1.0f);
    sum += u;
  }
  BOOST_TEST(sum / 10000 > 0.48);
  BOOST_TEST(sum / 10000 < 0.52);
}

BOOST_AUTO_TEST_CASE(same_seed_and_step_give_the_same_token_whatever_came_before) {
  sampling_params p;
  p.temperature = 1.0f;
  p.seed = 1234;
  std::vector<float> base = {1.0f, 1.1f, 0.9f, 1.2f, 0.8f, 1.05f};
  auto a = base, b = base;
  const int32_t ta = sample(a, p, 17, {});
  // Other draws in between do not matter.
  for (int i = 0; i < 5; ++i) {
    auto c = base;
    sample(c, p, i, {});
  }
  BOOST_TEST(ta == sample(b, p, 17, {}));
}

BOOST_AUTO_TEST_CASE(temperature_sampling_follows_the_distribution) {
  sampling_params p;
  p.temperature = 1.0f;
  std::map<int, int> counts;
  for (int i = 0; i < 20000; ++i) {
    std::vector<float> l = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
    counts[sample(l, p, i, {})]++;
  }
  BOOST_TEST(counts[1] / 20000.0 > 0.73);
  BOOST_TEST(counts[1] / 20000.0 < 0.77);
}

BOOST_AUTO_TEST_CASE(top_k_and_top_p_cut_the_tail) {
  sampling_params p;
  p.temperature = 1.0f;
  p.top_k = 2;
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = {3.0f, 2.9f, 2.8f, 0.0f};
    const int32_t t = sample(l, p, i, {});
    BOOST_REQUIRE(t == 0 || t == 1);
  }
  p.top_k = 0;
  p.top_p = 0.5f;
  for (int i = 0; i < 2000; ++i) {
    std::vector<float> l = {5.0f, 0.0f, 0.0f, 0.0f};  // first token has > 0.5 of the mass
    BOOST_REQUIRE(sample(l, p, i, {}) == 0);
  }
}

BOOST_AUTO_TEST_CASE(repetition_penalty_discourages_seen_tokens) {
  sampling_params p;
  p.repetition_penalty = 2.0f;
  std::vector<float> l = {1.0f, 1.5f, -1.0f};
  const std::vector<int32_t> hist = {1, 1, 2};
  BOOST_TEST(sample(l, p, 0, hist) == 0);  // 1.5 / 2 = 0.75 < 1.0
  BOOST_TEST(l[2] == -2.0f);              // negative logits are multiplied
}

BOOST_AUTO_TEST_CASE(invalid_parameters_are_named) {
  sampling_params p;
  p.top_p = 0.0f;
  BOOST_TEST(validate(p).find("top_p") != std::string::npos);
  p = {};
  p.temperature = -1.0f;
  BOOST_TEST(validate(p).find("temperature") != std::string::npos);
  BOOST_TEST(validate(sampling_params{}).empty());
}

BOOST_AUTO_TEST_SUITE_END()
