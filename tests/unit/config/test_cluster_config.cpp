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

// Three nodes, two replicas (line numbers matter: the tests below assert them).
const char* three_hosts = R"([cluster]
name = "demo"
secret_file = "secret"
binary = "bin/troupe"
run_dir = "/tmp/troupe-demo"

[model]
path = "m.gguf"

[[nodes]]
name = "a"
host = "10.0.0.1"
role = "head"
ssh = { user = "ops", port = 2222, identity_file = "id" }

[[nodes]]
name = "b"
host = "10.0.0.2"
control_port = 9000
data_port = 9001

[[nodes]]
name = "c"
host = "10.0.0.3"
role = "worker"
net_devices = "eth0"
[nodes.ssh]
user = "root"

[[replicas]]
  [[replicas.stages]]
  node = "b"
  first_layer = 0
  last_layer = 3
  [[replicas.stages]]
  node = "c"
  first_layer = 3
  threads = 2

[[replicas]]
  [[replicas.stages]]
  node = "c"
  first_layer = 0
)";

/// `text` with the first occurrence of `from` replaced by `to`.
std::string with(std::string text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  BOOST_REQUIRE_MESSAGE(at != std::string::npos, "no '" + from + "' in the text");
  text.replace(at, from.size(), to);
  return text;
}

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

BOOST_AUTO_TEST_CASE(reads_the_failover_table_and_reports_its_bad_keys) {
  auto r = parse_cluster_text(std::string(good) + "\n[failover]\nhang_floor_ms = 2500\nmax_restarts = 2\nenabled = false\n", "local.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->failover.hang_floor_ms == 2500);
  BOOST_TEST(r->failover.max_restarts == 2);
  BOOST_TEST(!r->failover.enabled);
  BOOST_TEST(r->failover.hang_factor == 10);  // the default
  auto d = parse_cluster_text(good, "local.toml");
  BOOST_REQUIRE(d);
  BOOST_TEST(d->failover.enabled);
  BOOST_TEST(error_of(std::string(good) + "\n[failover]\nhang_floor_ms = 10\n").find("failover.hang_floor_ms: 10 is out of range") !=
               std::string::npos,
             error_of(std::string(good) + "\n[failover]\nhang_floor_ms = 10\n"));
  BOOST_TEST(error_of(std::string(good) + "\n[failover]\nenabled = 1\n").find("failover.enabled: must be true or false") !=
             std::string::npos);
  BOOST_TEST(error_of(std::string(good) + "\n[failover]\nretries = 1\n").find("failover.retries: unknown key") != std::string::npos);
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

BOOST_AUTO_TEST_CASE(a_balanced_split_gives_the_last_stage_fewer_layers_for_the_output_head) {
  // The 110M shape: a layer reads 7.08M weights, the output head 24.6M (3.5 layers' worth).
  const double layer = 4.0 * 768 * 768 + 3.0 * 768 * 2048, head = 32000.0 * 768;
  auto two = split_layers_balanced(12, 2, layer, head, 3);
  BOOST_REQUIRE(two);
  BOOST_REQUIRE_EQUAL(two->size(), 2u);
  BOOST_TEST((*two)[0].first_layer == 0);
  BOOST_TEST((*two)[0].last_layer == 8);  // 8 layers (56.6M) against 4 + the head (52.9M)
  BOOST_TEST((*two)[1].first_layer == 8);
  BOOST_TEST((*two)[1].last_layer == 12);
  BOOST_TEST((*two)[1].threads == 3);
  auto three = split_layers_balanced(12, 3, layer, head);
  BOOST_REQUIRE(three);
  BOOST_REQUIRE_EQUAL(three->size(), 3u);
  BOOST_TEST((*three)[0].last_layer == 5);  // 5, 5 and 2 + the head (5.5 layers worth)
  BOOST_TEST((*three)[1].last_layer == 10);
  BOOST_TEST((*three)[2].last_layer == 12);
  // No head cost: the even split. Every stage keeps at least one layer, however large the head.
  auto even = split_layers_balanced(5, 3, 1.0, 0.0);
  BOOST_REQUIRE(even);
  BOOST_TEST((*even)[0].last_layer == 2);
  BOOST_TEST((*even)[1].last_layer == 4);
  auto heavy = split_layers_balanced(4, 2, 1.0, 100.0);
  BOOST_REQUIRE(heavy);
  BOOST_TEST((*heavy)[0].last_layer == 3);
  BOOST_TEST((*heavy)[1].last_layer == 4);
  BOOST_TEST(!split_layers_balanced(2, 3, 1.0, 1.0));
  auto one = split_layers_balanced(7, 1, 1.0, 5.0);
  BOOST_REQUIRE(one);
  BOOST_TEST((*one)[0].last_layer == 7);
}

BOOST_AUTO_TEST_CASE(parses_the_example_file) {
  auto r = parse_cluster_file(std::string(TROUPE_SOURCE_DIR) + "/cluster-config/examples/local.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->stages.size() == 2u);
  BOOST_TEST(r->model.path.find("stories260K.bin") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(parses_a_three_node_two_replica_file) {
  auto r = parse_cluster_text(three_hosts, "c.toml", "/etc/troupe");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  const troupe::config::cluster_config& c = *r;
  BOOST_TEST(c.multi_host());
  BOOST_TEST(c.cluster.name == "demo");
  BOOST_TEST(c.cluster.secret_file == "/etc/troupe/secret");
  BOOST_TEST(c.cluster.binary == "/etc/troupe/bin/troupe");  // has a '/': relative to the file
  BOOST_TEST(c.cluster.run_dir == "/tmp/troupe-demo");
  BOOST_TEST(c.cluster.join_timeout_ms == 120000);
  BOOST_TEST(c.cluster.line == 1);
  BOOST_REQUIRE_EQUAL(c.nodes.size(), 3u);
  BOOST_TEST(node_role_name(c.nodes[0].role) == std::string("head"));
  BOOST_TEST(c.nodes[0].line == 10);
  BOOST_TEST(c.nodes[0].ssh.user == "ops");
  BOOST_TEST(c.nodes[0].ssh.port == 2222);
  BOOST_TEST(c.nodes[0].ssh.identity_file == "/etc/troupe/id");
  BOOST_TEST(c.nodes[0].control_port == 7434);
  BOOST_TEST(c.nodes[0].data_port == 7435);
  BOOST_TEST(node_role_name(c.nodes[1].role) == std::string("worker"));  // default
  BOOST_TEST(c.nodes[1].control_port == 9000);
  BOOST_TEST(c.nodes[1].data_port == 9001);
  BOOST_TEST(c.nodes[1].ssh.user == "root");
  BOOST_TEST(c.nodes[1].ssh.identity_file.empty());
  BOOST_TEST(c.nodes[2].net_devices == "eth0");
  BOOST_TEST(c.nodes[2].ssh.port == 22);
  BOOST_TEST(c.head() == &c.nodes[0]);
  BOOST_TEST(c.find_node("c") == &c.nodes[2]);
  BOOST_TEST(c.stages.empty());
  BOOST_TEST(c.replicas == 2);
  BOOST_REQUIRE_EQUAL(c.replica_plans.size(), 2u);
  BOOST_REQUIRE_EQUAL(c.stages_of(0).size(), 2u);
  BOOST_TEST(c.stages_of(0)[0].node == "b");
  BOOST_TEST(c.stages_of(0)[1].node == "c");
  BOOST_TEST(c.stages_of(0)[1].threads == 2);
  BOOST_TEST(c.stages_of(0)[1].last_layer == -1);
  BOOST_REQUIRE_EQUAL(c.stages_of(1).size(), 1u);
  BOOST_TEST(c.stages_of(1)[0].node == "c");
  BOOST_TEST(stage_key(c, 1, 0) == "replicas[1].stages[0]");

  auto checked = c;
  BOOST_REQUIRE(check_layers(checked, 5));
  BOOST_TEST(checked.stages_of(0)[1].last_layer == 5);
  BOOST_TEST(checked.stages_of(1)[0].last_layer == 5);
}

BOOST_AUTO_TEST_CASE(a_bare_binary_name_is_left_for_path_lookup) {
  auto r = parse_cluster_text(with(three_hosts, "bin/troupe", "troupe"), "c.toml", "/etc/troupe");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->cluster.binary == "troupe");
}

BOOST_AUTO_TEST_CASE(the_stages_form_still_parses_as_before) {
  auto r = parse_cluster_text(good, "local.toml");
  BOOST_REQUIRE(r);
  BOOST_TEST(!r->multi_host());
  BOOST_TEST(r->replicas == 2);
  BOOST_TEST(r->replicas_line == 1);
  BOOST_TEST(r->replica_plans.empty());
  BOOST_TEST(&r->stages_of(1) == &r->stages);
  BOOST_TEST(r->stages[0].line == 13);
  BOOST_TEST(r->stages[0].last_layer_line == 15);
  BOOST_TEST(r->stages[0].node.empty());
  BOOST_TEST(stage_key(*r, 1, 0) == "stages[0]");
}

BOOST_AUTO_TEST_CASE(the_replicas_form_without_nodes_is_one_process) {
  const std::string text = "[model]\npath = \"m\"\n[[replicas]]\n[[replicas.stages]]\nfirst_layer = 0\n"
                           "[[replicas]]\n[[replicas.stages]]\nfirst_layer = 0\nlast_layer = 2\n"
                           "[[replicas.stages]]\nfirst_layer = 2\n";
  auto r = parse_cluster_text(text, "one.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(!r->multi_host());
  BOOST_TEST(r->replicas == 2);
  BOOST_TEST(r->stages_of(1).size() == 2u);
  // ... where a stage cannot name a node.
  const std::string e = error_of(with(text, "last_layer = 2", "last_layer = 2\nnode = \"b\""));
  BOOST_TEST(e.find("local.toml:10: replicas[1].stages[0].node: \"b\": no [[nodes]] defined") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_both_pipeline_forms_at_once_and_neither) {
  std::string e = error_of(std::string(three_hosts) + "\n[[stages]]\nfirst_layer = 0\n");
  BOOST_TEST(e.find("local.toml:45: stages: top-level [[stages]] cannot be combined with [[replicas]] (line 30)") == 0, e);
  e = error_of("replicas = 2\n[model]\npath = \"m\"\n");
  BOOST_TEST(e.find("stages: at least one [[stages]] table (or [[replicas]]") != std::string::npos, e);
  e = error_of(with(three_hosts, "[[replicas]]\n  [[replicas.stages]]\n  node = \"c\"", "[[replicas]]\n  [[replicas.stage]]\n  node = \"c\""));
  BOOST_TEST(e.find("local.toml:40: replicas[1].stages: at least one stage table is required") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_a_stage_on_an_unknown_node) {
  const std::string e = error_of(with(three_hosts, "  node = \"c\"\n  first_layer = 0", "  node = \"x\"\n  first_layer = 0"));
  BOOST_TEST(e.find("local.toml:42: replicas[1].stages[0].node: unknown node \"x\" (nodes: a, b, c)") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_a_stage_on_a_spare) {
  const std::string e = error_of(with(three_hosts, "role = \"worker\"", "role = \"spare\""));
  BOOST_TEST(e.find("local.toml:36: replicas[0].stages[1].node: node \"c\" is a spare") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_overlapping_and_missing_layers_per_replica) {
  std::string e = error_of(with(three_hosts, "first_layer = 3", "first_layer = 2"));
  BOOST_TEST(e.find("local.toml:35: replicas[0].stages[1].first_layer: 2 leaves an overlap: the previous stage ends at layer 3") == 0, e);
  e = error_of(with(three_hosts, "first_layer = 3", "first_layer = 4"));
  BOOST_TEST(e.find("local.toml:35: replicas[0].stages[1].first_layer: 4 leaves a gap: the previous stage ends at layer 3") == 0, e);
  // Replica 1 not starting at layer 0: layers [0, 1) are missing.
  e = error_of(with(three_hosts, "  node = \"c\"\n  first_layer = 0", "  node = \"c\"\n  first_layer = 1"));
  BOOST_TEST(e.find("local.toml:41: replicas[1].stages[0].first_layer: 1 leaves a gap") == 0, e);
  // A pipeline that stops short of the model's end.
  auto r = parse_cluster_text(with(three_hosts, "first_layer = 3\n", "first_layer = 3\n  last_layer = 4\n"), "c.toml");
  BOOST_REQUIRE(r);
  auto short_end = check_layers(*r, 5);
  BOOST_REQUIRE(!short_end);
  BOOST_TEST(short_end.error().message.find("c.toml:38: replicas[0].stages[1].last_layer: the last stage must end") == 0,
             short_end.error().message);
}

BOOST_AUTO_TEST_CASE(reports_duplicate_node_names_at_the_second) {
  const std::string e = error_of(with(three_hosts, "name = \"c\"", "name = \"a\""));
  BOOST_TEST(e.find("local.toml:23: nodes[2].name: duplicate node name \"a\" (nodes[0], line 11)") == 0, e);
}

BOOST_AUTO_TEST_CASE(requires_exactly_one_head) {
  std::string e = error_of(with(three_hosts, "role = \"worker\"", "role = \"head\""));
  BOOST_TEST(e.find("local.toml:25: nodes[2].role: a second head (\"c\"): node \"a\" (line 10) is the head already") == 0, e);
  e = error_of(with(three_hosts, "role = \"head\"", "role = \"worker\""));
  BOOST_TEST(e.find("local.toml:10: nodes: no node has role = \"head\"") == 0, e);
  e = error_of(with(three_hosts, "role = \"head\"", "role = \"boss\""));
  BOOST_TEST(e.find("local.toml:13: nodes[0].role: \"boss\" is not a role (head, worker, spare)") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_bad_names_hosts_and_ports) {
  std::string e = error_of(with(three_hosts, "name = \"b\"", "name = \"b b\""));
  BOOST_TEST(e.find("local.toml:17: nodes[1].name: \"b b\" must be made of letters") == 0, e);
  e = error_of(with(three_hosts, "host = \"10.0.0.2\"", "host = \"\""));
  BOOST_TEST(e.find("local.toml:18: nodes[1].host: must not be empty") == 0, e);
  e = error_of(with(three_hosts, "host = \"10.0.0.2\"", "host = \"10.0.0.2 x\""));
  BOOST_TEST(e.find("local.toml:18: nodes[1].host: \"10.0.0.2 x\" is not an address or host name") == 0, e);
  e = error_of(with(three_hosts, "data_port = 9001", "data_port = 0"));
  BOOST_TEST(e.find("local.toml:20: nodes[1].data_port: 0 is out of range [1, 65535]") == 0, e);
  e = error_of(with(three_hosts, "data_port = 9001", "data_port = 9000"));
  BOOST_TEST(e.find("local.toml:20: nodes[1].data_port: 9000 is this node's control_port too") == 0, e);
  // Two nodes on one host need distinct ports.
  e = error_of(with(three_hosts, "host = \"10.0.0.3\"", "host = \"10.0.0.1\""));
  BOOST_TEST(e.find("local.toml:22: nodes[2].control_port: port 7434 on host 10.0.0.1 is taken by node \"a\" (line 10)") == 0, e);
  e = error_of(with(three_hosts, "host = \"10.0.0.2\"\ncontrol_port = 9000", "host = \"10.0.0.1\"\ncontrol_port = 7435"));
  BOOST_TEST(e.find("local.toml:19: nodes[1].control_port: port 7435 on host 10.0.0.1 is taken by node \"a\"") == 0, e);
  e = error_of(with(three_hosts, "user = \"root\"", "usr = \"root\""));
  BOOST_TEST(e.find("local.toml:28: nodes[2].ssh.usr: unknown key") == 0, e);
  e = error_of(with(three_hosts, "host = \"10.0.0.2\"\n", ""));
  BOOST_TEST(e.find("local.toml:16: nodes[1].host: required key is missing") == 0, e);
}

BOOST_AUTO_TEST_CASE(reports_cluster_section_errors) {
  std::string e = error_of(with(three_hosts, "secret_file = \"secret\"\n", ""));
  BOOST_TEST(e.find("local.toml:1: cluster.secret_file: required when [[nodes]] are defined") == 0, e);
  e = error_of(with(three_hosts, "run_dir = \"/tmp/troupe-demo\"", "run_dir = \"tmp\""));
  BOOST_TEST(e.find("local.toml:1: cluster.run_dir: \"tmp\" must be an absolute path") == 0, e);
  e = error_of(with(three_hosts, "name = \"demo\"", "name = \"my demo\""));
  BOOST_TEST(e.find("local.toml:1: cluster.name: \"my demo\" must be made of letters") == 0, e);
  e = error_of(with(three_hosts, "binary = ", "binaries = "));
  BOOST_TEST(e.find("local.toml:4: cluster.binaries: unknown key") == 0, e);
}

BOOST_AUTO_TEST_CASE(the_stages_form_places_every_replicas_stage_on_the_same_node) {
  // Nodes with `replicas = N` and top-level [[stages]]: stage i of every replica on one node.
  std::string nodes = three_hosts;
  nodes = nodes.substr(0, nodes.find("[[replicas]]"));
  const std::string text = "replicas = 2\n" + nodes + "[[stages]]\nnode = \"b\"\nfirst_layer = 0\nlast_layer = 2\n" +
                           "[[stages]]\nfirst_layer = 2\n";
  auto r = parse_cluster_text(text, "local.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->replicas == 2);
  BOOST_TEST(r->replica_plans.empty());
  BOOST_TEST(r->stages_of(1)[0].node == "b");
  BOOST_TEST(r->stages_of(1)[1].node.empty());  // the head
  const std::string e = error_of(with(text, "node = \"b\"\nfirst", "node = \"z\"\nfirst"));
  BOOST_TEST(e.find("local.toml:32: stages[0].node: unknown node \"z\" (nodes: a, b, c)") == 0, e);
}

BOOST_AUTO_TEST_CASE(parses_the_three_hosts_example) {
  auto r = parse_cluster_file(std::string(TROUPE_SOURCE_DIR) + "/cluster-config/examples/three-hosts.toml");
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(r->nodes.size() == 4u);
  BOOST_TEST(node_role_name(r->nodes[3].role) == std::string("spare"));
  BOOST_TEST(r->nodes[1].ssh.identity_file == "/run/troupe-netns/id_ed25519");
  BOOST_TEST(r->replicas == 2);
  BOOST_TEST(r->stages_of(0)[1].node == "c");
  BOOST_TEST(r->stages_of(1)[0].node.empty());
}

BOOST_AUTO_TEST_SUITE_END()
