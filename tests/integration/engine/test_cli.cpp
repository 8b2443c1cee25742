// The troupe command line: bad input gives a non-zero exit and one line naming the problem.
#include <boost/test/unit_test.hpp>

#include <filesystem>

#include "../../test_support.hpp"

using namespace troupe::test;

namespace {
// Runs troupe with stderr captured into stdout.
command_result run_troupe(const std::string& args) {
  return run_command(troupe_binary().string() + " " + args + " 2>&1");
}
}  // namespace

BOOST_AUTO_TEST_SUITE(cli)

BOOST_AUTO_TEST_CASE(help_lists_the_commands) {
  auto r = run_troupe("--help");
  BOOST_TEST(r.exit_code == 0);
  for (const char* c : {"generate", "model info", "model synth"}) BOOST_TEST(r.out.find(c) != std::string::npos, c);
  auto g = run_troupe("generate --help");
  BOOST_TEST(g.exit_code == 0);
  BOOST_TEST(g.out.find("--temperature") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(missing_model_file_is_named) {
  auto r = run_troupe("generate --model /nonexistent/model.gguf --prompt hi");
  BOOST_TEST(r.exit_code != 0);
  BOOST_TEST(r.out.find("/nonexistent/model.gguf") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(corrupt_model_files_give_one_clear_line) {
  const temp_dir dir("cli");
  const auto gguf = dir / "bad.gguf";
  write_bytes(gguf, std::string("GGUF\x03\0\0\0", 8) + std::string(10, '\xff'));
  auto r = run_troupe("generate --model " + gguf.string() + " --prompt hi");
  BOOST_TEST(r.exit_code != 0);
  BOOST_TEST(r.out.find("troupe: ") == 0u, r.out);
  BOOST_TEST(r.out.find("gguf") != std::string::npos, r.out);
  const auto bin = dir / "bad.bin";
  write_bytes(bin, std::string(20, '\x01'));
  auto r2 = run_troupe("generate --model " + bin.string() + " --prompt hi");
  BOOST_TEST(r2.exit_code != 0);
  BOOST_TEST(r2.out.find("troupe: ") == 0u, r2.out);
}

BOOST_AUTO_TEST_CASE(bad_options_are_named) {
  auto r = run_troupe("generate --model x --prompt hi --temperature -3");
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find("--temperature") != std::string::npos, r.out);
  auto u = run_troupe("generate --model x --prompt hi --frobnicate 1");
  BOOST_TEST(u.exit_code == 2);
  BOOST_TEST(u.out.find("--frobnicate") != std::string::npos, u.out);
  auto m = run_troupe("generate --prompt hi");
  BOOST_TEST(m.exit_code == 2);
  BOOST_TEST(m.out.find("--model") != std::string::npos, m.out);
  BOOST_TEST(run_troupe("frobnicate").exit_code == 2);
}

BOOST_AUTO_TEST_CASE(llama2c_checkpoint_without_tokenizer_says_so, *needs_models({"stories260K.bin"})) {
  auto r = run_troupe("generate --model " + model_path("stories260K.bin").string() + " --prompt hi");
  BOOST_TEST(r.exit_code != 0);
  BOOST_TEST(r.out.find("tokenizer") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(seeded_sampling_is_reproducible_and_seed_dependent, *needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  const std::string base = "generate --model " + model_path("TinyStories-656K-Q8_0.gguf").string() +
                           " --prompt 'Once upon a time' -n 60 --temperature 0.9 --top-p 0.95 --top-k 40 ";
  auto q = [&](const std::string& extra) {
    auto r = run_command(troupe_binary().string() + " " + base + extra + " 2>/dev/null");
    BOOST_REQUIRE_EQUAL(r.exit_code, 0);
    return r.out;
  };
  const auto a = q("--seed 1"), b = q("--seed 1 --threads 1"), c = q("--seed 2");
  BOOST_TEST(a == b);
  BOOST_TEST(a != c);
  BOOST_TEST(a.rfind("Once upon a time", 0) == 0u);
}

BOOST_AUTO_TEST_CASE(synth_writes_a_model_that_generates) {
  const temp_dir dir("cli");
  const auto out = dir / "tiny.gguf";
  auto s = run_troupe("model synth --shape tiny --dtype q4_0 --out " + out.string());
  BOOST_REQUIRE_MESSAGE(s.exit_code == 0, s.out);
  auto info = run_troupe("model info " + out.string());
  BOOST_TEST(info.exit_code == 0);
  BOOST_TEST(info.out.find("q4_0") != std::string::npos);
  auto g = run_troupe("generate --model " + out.string() + " --prompt 'hello there' -n 8");
  BOOST_TEST(g.exit_code == 0, g.out);
  BOOST_TEST(g.out.find("generated: 8 tokens") != std::string::npos, g.out);
  BOOST_TEST(run_troupe("model synth --shape huge --dtype f32 --out /tmp/x.gguf").exit_code != 0);
}

BOOST_AUTO_TEST_SUITE_END()
