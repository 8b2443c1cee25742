// Cluster files: parsing, validation, and errors that name file:line: key.
#include <boost/test/unit_test.hpp>

#include <string>

#include "cluster-config/cluster_config.hpp"

using namespace troupe::config;

namespace {

const char* good = R"(replicas = 2

[model]
path = "models/m.gguf"

[listen]
port = 0

[batching]
block_size = 8
n_blocks = 64

[[stages]]
first_layer = 0
last_layer = 3

[[stages]]
first_layer = 3
)";

std::string error_of(const std::string& text) {
  auto r = parse_cluster_text(text, "local.toml");
  BOOST_REQUIRE(!r);
  return r.error().message;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_config)

BOOST_AUTO_TEST_CASE(parses_a_complete_file_and_resolves_paths_against_its_folder) {
  auto r = parse_cluster_text(good, "local.toml", "/etc/troupe");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->replicas == 2);
  BOOST_TEST(r->model.path == "/etc/troupe/models/m.gguf");
  BOOST_TEST(r->model.tokenizer.empty());
  BOOST_TEST(r->listen.host == "127.0.0.1");
  BOOST_TEST(r->listen.port == 0);
  BOOST_TEST(r->batching.block_size == 8);
  BOOST_TEST(r->batching.n_blocks == 64);
  BOOST_TEST(r->batching.max_step_tokens == 256);  // default
  BOOST_TEST(r->batching.decode_steps == 8);        // default
  BOOST_REQUIRE_EQUAL(r->stages.size(), 2u);
  BOOST_TEST(r->stages[1].first_layer == 3);
  BOOST_TEST(r->stages[1].last_layer == -1);
  BOOST_TEST(check_layers(*r, 5).has_value());
  BOOST_TEST(r->stages[1].last_layer == 5);
}

BOOST_AUTO_TEST_CASE(reports_file_line_and_key_of_a_bad_layer_range) {
  std::string text = good;
  text.replace(text.find("first_layer = 3"), 15, "first_layer = 3\nlast_layer = 2");
  const std::string e = error_of(text);
  BOOST_TEST(e.find("local.toml:19: stages[1].last_layer:") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_a_gap_between_stages) {
  std::string text = good;
  text.replace(text.find("first_layer = 3"), 15, "first_layer = 4");
  const std::string e = error_of(text);
  BOOST_TEST(e.find("local.toml:17: stages[1].first_layer:") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_unknown_keys) {
  std::string text = good;
  text.replace(text.find("n_blocks = 64"), 13, "n_block = 64");
  const std::string e = error_of(text);
  BOOST_TEST(e.find("local.toml:11: batching.n_block: unknown key") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_wrong_types_and_ranges) {
  std::string text = good;
  text.replace(text.find("block_size = 8"), 14, "block_size = \"8\"");
  BOOST_TEST(error_of(text).find("local.toml:10: batching.block_size: must be an integer") == 0, error_of(text));
  text = good;
  text.replace(text.find("port = 0"), 8, "port = 70000");
  BOOST_TEST(error_of(text).find("local.toml:7: listen.port: 70000 is out of range") == 0, error_of(text));
}

BOOST_AUTO_TEST_CASE(rejects_zero_and_negative_limits_with_file_line_and_key) {
  // A server with max_waiting = 0 or max_new_tokens = 0 refuses every request: a config error.
  std::string text = good;
  text.replace(text.find("n_blocks = 64"), 13, "n_blocks = 64\nmax_waiting = 0");
  BOOST_TEST(error_of(text).find("local.toml:12: batching.max_waiting: 0 is out of range [1,") == 0, error_of(text));
  text = good;
  text.insert(text.find("[[stages]]"), "[limits]\nmax_new_tokens = 0\n\n");
  BOOST_TEST(error_of(text).find("local.toml:14: limits.max_new_tokens: 0 is out of range [1,") == 0, error_of(text));
  text = good;
  text.replace(text.find("n_blocks = 64"), 13, "n_blocks = -4");
  BOOST_TEST(error_of(text).find("local.toml:11: batching.n_blocks: -4 is out of range [1,") == 0, error_of(text));
  // Values that bypass the parser (flags, code) are caught by validate().
  auto c = parse_cluster_text(good, "local.toml");
  BOOST_REQUIRE(c);
  c->batching.max_waiting = 0;
  auto v = validate(*c);
  BOOST_REQUIRE(!v);
  BOOST_TEST(v.error().message.find("batching.max_waiting: 0 must be at least 1") != std::string::npos, v.error().message);
  c->batching.max_waiting = 1;
  c->limits.max_new_tokens = -1;
  v = validate(*c);
  BOOST_REQUIRE(!v);
  BOOST_TEST(v.error().message.find("limits.max_new_tokens: -1 must be at least 1") != std::string::npos,
             v.error().message);
}

BOOST_AUTO_TEST_CASE(reports_missing_model_path_and_stages) {
  BOOST_TEST(error_of("[model]\ntokenizer = \"t\"\n[[stages]]\nfirst_layer = 0\n").find("model.path: required key is missing") !=
             std::string::npos);
  BOOST_TEST(error_of("[model]\npath = \"m\"\n").find("stages:") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(reports_syntax_errors_with_their_line) {
  const std::string e = error_of("replicas = 1\n[model\npath = 1\n");
  BOOST_TEST(e.find("local.toml:2:") == 0, e);
}

BOOST_AUTO_TEST_CASE(checks_stages_against_the_model) {
  auto r = parse_cluster_text(good, "local.toml");
  BOOST_REQUIRE(r);
  auto c = *r;
  c.stages[1].last_layer = 7;
  c.stages[1].last_layer_line = 18;
  auto e = check_layers(c, 5);
  BOOST_REQUIRE(!e);
  BOOST_TEST(e.error().message.find("local.toml:18: stages[1].last_layer:") == 0, e.error().message);
  c = *r;
  auto e2 = check_layers(c, 3);  // stage 1 starts at 3: past the end
  BOOST_REQUIRE(!e2);
  BOOST_TEST(e2.error().message.find("stages[1].first_layer") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(splits_layers_evenly_earlier_stages_taking_the_rest) {
  auto s = split_layers_evenly(5, 3);
  BOOST_REQUIRE(s);
  BOOST_REQUIRE_EQUAL(s->size(), 3u);
  BOOST_TEST((*s)[0].first_layer == 0);
  BOOST_TEST((*s)[0].last_layer == 2);
  BOOST_TEST((*s)[1].last_layer == 4);
  BOOST_TEST((*s)[2].last_layer == 5);
  BOOST_TEST(!split_layers_evenly(2, 3));
}

BOOST_AUTO_TEST_CASE(parses_the_example_file) {
  auto r = parse_cluster_file(std::string(TROUPE_SOURCE_DIR) + "/cluster-config/examples/local.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->stages.size() == 2u);
  BOOST_TEST(r->model.path.find("stories260K.bin") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
