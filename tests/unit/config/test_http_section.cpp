// The cluster file's [http] table: off when absent, host, port and TLS files when present, errors by key.
#include <boost/test/unit_test.hpp>

#include <string>

#include "cluster-config/cluster_config.hpp"

using namespace troupe::config;

namespace {

const std::string base = R"(
[model]
path = "m.gguf"

[[stages]]
first_layer = 0
)";

}  // namespace

BOOST_AUTO_TEST_SUITE(http_section)

BOOST_AUTO_TEST_CASE(http_is_off_without_the_table_and_on_with_it) {
  auto off = parse_cluster_text(base, "c.toml");
  BOOST_REQUIRE(off);
  BOOST_TEST(!off->http.enabled);
  auto on = parse_cluster_text(base + "\n[http]\nhost = \"0.0.0.0\"\nport = 0\n", "c.toml");
  BOOST_REQUIRE_MESSAGE(on, (on ? "" : on.error().message));
  BOOST_TEST(on->http.enabled);
  BOOST_TEST(on->http.host == "0.0.0.0");
  BOOST_TEST(on->http.port == 0);
  auto defaults = parse_cluster_text(base + "\n[http]\n", "c.toml");
  BOOST_REQUIRE(defaults);
  BOOST_TEST(defaults->http.enabled);
  BOOST_TEST(defaults->http.host.empty());  // the [listen] host
  BOOST_TEST(defaults->http.port == 8080);
}

BOOST_AUTO_TEST_CASE(bad_http_keys_are_errors_naming_the_key) {
  auto bad_port = parse_cluster_text(base + "\n[http]\nport = 70000\n", "c.toml");
  BOOST_REQUIRE(!bad_port);
  BOOST_TEST(bad_port.error().message.find("http.port") != std::string::npos, bad_port.error().message);
  auto unknown = parse_cluster_text(base + "\n[http]\nprot = 1\n", "c.toml");
  BOOST_REQUIRE(!unknown);
  BOOST_TEST(unknown.error().message.find("http.prot: unknown key") != std::string::npos, unknown.error().message);
}

BOOST_AUTO_TEST_CASE(tls_files_are_read_relative_to_the_file_and_come_in_pairs) {
  auto tls = parse_cluster_text(base + "\n[http]\ntls_cert = \"certs/c.pem\"\ntls_key = \"/etc/k.pem\"\n", "c.toml",
                                "/srv/troupe");
  BOOST_REQUIRE_MESSAGE(tls, (tls ? "" : tls.error().message));
  BOOST_TEST(tls->http.tls_cert == "/srv/troupe/certs/c.pem");
  BOOST_TEST(tls->http.tls_key == "/etc/k.pem");
  auto half = parse_cluster_text(base + "\n[http]\ntls_cert = \"c.pem\"\n", "c.toml");
  BOOST_REQUIRE(!half);
  BOOST_TEST(half.error().message.find("http.tls_key") != std::string::npos, half.error().message);
}

BOOST_AUTO_TEST_SUITE_END()
