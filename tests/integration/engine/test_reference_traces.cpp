// llama.cpp's greedy traces (../shared/models/reference) replayed teacher-forced: troupe is fed
// the prompt and llama.cpp's tokens, and at every step where llama.cpp's top-1 / top-2 logit gap
// is above float noise (1e-3) troupe's argmax must be llama.cpp's token, for the F32 and the Q8_0
// files. (Q8_0 turns a one-ulp difference upstream into an 8-bit rounding flip now and then, so it
// needs llama.cpp's arithmetic to the bit: f16 q/k/v and softmax weights, ggml's activation
// quantization and block order, RMSNorm, the RoPE angles and the RoPE rotation's fused products.)
#include <boost/test/unit_test.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "../../test_support.hpp"
#include "engine/generator.hpp"
#include "engine/model_weights.hpp"
#include "engine/thread_pool.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {

constexpr float noise_gap = 1e-3f;  // below this, llama.cpp's own top two are a near-tie

struct replay_result {
  int n_steps = 0;      // steps compared (gap above noise)
  int n_differ = 0;     // of those, steps where troupe's argmax is another token
  float worst_gap = 0;  // largest llama.cpp gap among the differing steps
  float max_logit_diff = 0;  // largest |troupe's - llama.cpp's logit| of llama.cpp's top-1 token
  std::string first_difference;
};

/// Replays every trace line of `reference` (relative to models_dir()) on `model`.
replay_result replay(const std::string& model, const std::string& reference) {
  auto weights = engine::load_model(model_path(model));
  BOOST_REQUIRE_MESSAGE(weights, "loading " << model << ": " << (weights ? "" : weights.error().message));
  std::ifstream in(model_path(reference));
  BOOST_REQUIRE_MESSAGE(in, "cannot read " << model_path(reference));
  engine::thread_pool pool{2};
  replay_result r;
  std::string line;
  int n_lines = 0;
  while (std::getline(in, line)) {
    const auto trace = nlohmann::json::parse(line);
    const std::vector<int32_t> prompt = trace.at("prompt_ids").get<std::vector<int32_t>>();
    const auto& steps = trace.at("steps");
    std::vector<int32_t> forced;
    for (const auto& s : steps) forced.push_back(s.at(0).get<int32_t>());
    ++n_lines;

    engine::generate_options opts;
    opts.forced_tokens = forced;
    opts.stop_at_eos = false;
    opts.ctx_size = 512;  // the F32 656K file's metadata says 128; llama.cpp ran these with more
    opts.pool = &pool;
    int step = 0;
    opts.on_logits = [&](std::span<const float> logits, int32_t sampled) {
      const auto& s = steps.at(size_t(step));
      const int32_t want = s.at(0).get<int32_t>();
      const float gap = s.at(1).get<float>() - s.at(3).get<float>();
      r.max_logit_diff = std::max(r.max_logit_diff, std::fabs(logits[size_t(want)] - s.at(1).get<float>()));
      if (gap > noise_gap) {
        ++r.n_steps;
        if (sampled != want) {
          ++r.n_differ;
          r.worst_gap = std::max(r.worst_gap, gap);
          if (r.first_difference.empty()) {
            r.first_difference = "prompt \"" + trace.at("prompt").get<std::string>() + "\" step " +
                                 std::to_string(step) + ": llama.cpp " + std::to_string(want) + " (gap " +
                                 std::to_string(gap) + "), troupe " + std::to_string(sampled);
          }
        }
      }
      ++step;
    };
    auto stats = engine::generate(*weights, prompt, opts, [](int32_t) { return true; });
    BOOST_REQUIRE_MESSAGE(stats, "generate: " << (stats ? "" : stats.error().message));
    BOOST_REQUIRE_EQUAL(step, int(forced.size()));
  }
  BOOST_REQUIRE_MESSAGE(n_lines > 0, reference << " has no traces");
  BOOST_TEST_MESSAGE(model << ": " << r.n_steps << " steps compared over " << n_lines << " prompts, "
                           << r.n_differ << " differ (largest llama.cpp gap among them " << r.worst_gap
                           << "), largest top-1 logit difference " << r.max_logit_diff);
  return r;
}

void check(const replay_result& r) {
  BOOST_TEST(r.n_steps > 100);
  BOOST_TEST(r.n_differ == 0, r.n_differ << " of " << r.n_steps << " steps differ; first: " << r.first_difference);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reference_traces)

BOOST_AUTO_TEST_CASE(q8_0_gguf_takes_llama_cpp_argmax_at_all_but_one_in_500_steps_above_noise,
                     *needs_models({"TinyStories-656K-Q8_0.gguf",
                                    "reference/llamacpp-trace.TinyStories-656K-Q8_0.gguf.jsonl"})) {
  check(replay("TinyStories-656K-Q8_0.gguf", "reference/llamacpp-trace.TinyStories-656K-Q8_0.gguf.jsonl"));
}

BOOST_AUTO_TEST_CASE(f32_656k_gguf_takes_llama_cpp_argmax_at_every_step_above_noise,
                     *needs_models({"derived/TinyStories-656K-F32.gguf",
                                    "reference/llamacpp-trace.TinyStories-656K-F32.gguf.jsonl"})) {
  check(replay("derived/TinyStories-656K-F32.gguf", "reference/llamacpp-trace.TinyStories-656K-F32.gguf.jsonl"));
}

BOOST_AUTO_TEST_CASE(f32_260k_gguf_takes_llama_cpp_argmax_at_every_step_above_noise,
                     *needs_models({"derived/stories260K.gguf", "reference/llamacpp-trace.stories260K.gguf.jsonl"})) {
  check(replay("derived/stories260K.gguf", "reference/llamacpp-trace.stories260K.gguf.jsonl"));
}



BOOST_AUTO_TEST_CASE(generate_trace_writes_llama_cpp_trace_lines_with_the_same_steps,
                     *needs_models({"TinyStories-656K-Q8_0.gguf",
                                    "reference/llamacpp-trace.TinyStories-656K-Q8_0.gguf.jsonl"})) {
  // The reference's first prompt: 4 of its 8 greedy steps in the trace troupe writes.
  std::ifstream in(model_path("reference/llamacpp-trace.TinyStories-656K-Q8_0.gguf.jsonl"));
  std::string line;
  std::getline(in, line);
  const auto ref = nlohmann::json::parse(line);
  const temp_dir dir("trace");
  const auto trace = dir / "trace.jsonl";
  const std::string cmd = troupe_binary().string() + " generate --model '" +
                          model_path("TinyStories-656K-Q8_0.gguf").string() + "' --prompt '" +
                          ref.at("prompt").get<std::string>() + "' -n 8 --threads 2 --trace '" + trace.string() +
                          "' >/dev/null 2>&1";
  BOOST_REQUIRE_EQUAL(run_command(cmd).exit_code, 0);
  std::ifstream got_in(trace);
  std::getline(got_in, line);
  const auto got = nlohmann::json::parse(line);
  BOOST_TEST(got.at("prompt_ids") == ref.at("prompt_ids"));
  BOOST_REQUIRE_EQUAL(got.at("steps").size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const auto& g = got.at("steps")[i];
    const auto& r = ref.at("steps")[i];
    BOOST_TEST(g.at(0).get<int>() == r.at(0).get<int>(), "step " << i);
    BOOST_TEST(std::fabs(g.at(1).get<double>() - r.at(1).get<double>()) < 1e-3, "step " << i);
    BOOST_TEST(g.at(2).get<int>() == r.at(2).get<int>(), "step " << i);
  }
}

BOOST_AUTO_TEST_SUITE_END()
