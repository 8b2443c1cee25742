// `troupe generate` on the real models must print exactly the reference stories, and the
// formats of one model must agree with each other.
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include "../../test_support.hpp"
#include "golden.hpp"

using namespace troupe::test;

namespace {

/// stdout of `troupe generate` on a real model. A run that exits non-zero fails the test case with
/// its stderr (two failed runs must never compare "" == "").
std::string generate(const std::string& model, const std::string& extra = "",
                     const std::string& prompt = "Once upon a time", int n = 200) {
  const temp_dir dir("golden");
  const auto err = dir / "stderr";
  const std::string cmd = troupe_binary().string() + " generate --model '" + model_path(model).string() +
                          "' --prompt '" + prompt + "' -n " + std::to_string(n) + " --threads 2 " + extra +
                          " 2>'" + err.string() + "'";
  auto r = run_command(cmd);
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0,
                        "troupe generate exited " << r.exit_code << ": " << cmd << "\n" << read_file(err));
  return r.out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(golden)

BOOST_AUTO_TEST_CASE(stories260k_llama2c_matches_reference, *needs_models({"stories260K.bin", "tok512.bin"})) {
  const std::string tok = "--tokenizer '" + model_path("tok512.bin").string() + "'";
  BOOST_TEST(generate("stories260K.bin", tok) == std::string(reference::stories260k) + "\n");
}

BOOST_AUTO_TEST_CASE(stories260k_gguf_matches_reference, *needs_models({"derived/stories260K.gguf"})) {
  BOOST_TEST(generate("derived/stories260K.gguf") == std::string(reference::stories260k) + "\n");
}

BOOST_AUTO_TEST_CASE(tinystories656k_q8_0_gguf_matches_reference, *needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  BOOST_TEST(generate("TinyStories-656K-Q8_0.gguf") == std::string(reference::tinystories656k_q8_0) + "\n");
}

BOOST_AUTO_TEST_CASE(tinystories656k_hf_directory_matches_reference, *needs_models({"TinyStories-656K"})) {
  BOOST_TEST(generate("TinyStories-656K") == std::string(reference::tinystories656k) + "\n");
}

BOOST_AUTO_TEST_CASE(tinystories656k_llama2c_matches_reference,
                     *needs_models({"derived/TinyStories-656K.llama2c.bin", "derived/tok2048-656K.bin"})) {
  const std::string tok = "--tokenizer '" + model_path("derived/tok2048-656K.bin").string() + "'";
  BOOST_TEST(generate("derived/TinyStories-656K.llama2c.bin", tok) == std::string(reference::tinystories656k) + "\n");
}

BOOST_AUTO_TEST_CASE(tinystories656k_f32_gguf_matches_reference, *needs_models({"derived/TinyStories-656K-F32.gguf"})) {
  // Its metadata says context 128; the story is longer, so give it the model's real context.
  BOOST_TEST(generate("derived/TinyStories-656K-F32.gguf", "--ctx 512") == std::string(reference::tinystories656k) + "\n");
}

BOOST_AUTO_TEST_CASE(formats_of_one_model_agree_on_other_prompts,
                     *needs_models({"stories260K.bin", "tok512.bin", "derived/stories260K.gguf", "TinyStories-656K",
                                    "derived/TinyStories-656K.llama2c.bin", "derived/tok2048-656K.bin"})) {
  // Same weights, two formats, a prompt that both tokenize identically: same text.
  const std::string prompt = "The little dog";
  const auto a = generate("stories260K.bin", "--tokenizer '" + model_path("tok512.bin").string() + "'", prompt, 60);
  BOOST_TEST(a.rfind(prompt, 0) == 0u, a);
  BOOST_TEST(a == generate("derived/stories260K.gguf", "", prompt, 60));
  const auto b = generate("TinyStories-656K", "", prompt, 60);
  BOOST_TEST(b.rfind(prompt, 0) == 0u, b);
  BOOST_TEST(b == generate("derived/TinyStories-656K.llama2c.bin",
                           "--tokenizer '" + model_path("derived/tok2048-656K.bin").string() + "'", prompt, 60));
}

BOOST_AUTO_TEST_SUITE_END()
