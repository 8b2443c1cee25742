// A synthetic model written by troupe itself (GGUF, Q8_0): served text equals the engine's.
#include "tests/integration/serve/serve_harness.hpp"

#include <unistd.h>

#include "engine/synth_model.hpp"

using namespace troupe;
using namespace troupe::test;

BOOST_AUTO_TEST_SUITE(synthetic)

BOOST_AUTO_TEST_CASE(synthetic_model_in_two_stages_matches_the_engine) {
  auto shape = engine::find_synth_shape("tiny");
  BOOST_REQUIRE(shape);
  const auto dir = std::filesystem::temp_directory_path() / ("troupe-serve-synth-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto path = dir / "tiny-q8.gguf";
  auto w = engine::write_synth_model(*shape, engine::dtype::q8_0, 1234, path);
  BOOST_REQUIRE_MESSAGE(w, (w ? "" : w.error().message));
  {
    serve_harness h(make_cluster(path, "", shape->config.n_layers, 2));
    std::map<actors::request_id, actors::serve_request> reqs;
    uint64_t seed = 11;
    for (int i = 0; i < 6; ++i) {
      actors::serve_request r;
      r.prompt_tokens = {1, int32_t(10 + i), int32_t(100 + 3 * i), int32_t(200 + i)};
      r.max_tokens = 50;
      if (i % 2 == 1) {
        r.sampling.temperature = 1.0f;
        r.sampling.top_k = 20;
        r.sampling.seed = seed++;
      }
      h.submit_accepted(reqs, r);
    }
    h.wait_all();
    h.check_all_against_engine(reqs);
  }
  std::filesystem::remove_all(dir);
}

BOOST_AUTO_TEST_SUITE_END()
