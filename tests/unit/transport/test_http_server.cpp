// The HTTP server alone (no actors): its start-up checks. The routes and limits are tested end to
// end in tests/integration/serve/test_http.cpp.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <memory>
#include <string>

#include "tests/test_support.hpp"
#include "transport/http_server.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {

// Answers every request with 200.
struct ok_handler final : transport::http_handler {
  void on_request(std::shared_ptr<transport::http_responder> out, transport::http_request) override {
    out->respond(transport::http_response{200, "application/json", R"({"status":"ok"})", {}});
  }
  void on_disconnect(transport::connection_id) override {}
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_server)

BOOST_AUTO_TEST_CASE(tls_start_up_errors_name_the_bad_file) {
  self_signed_certificate tls;
  self_signed_certificate other;
  temp_dir dir("tls-bad");
  const std::string garbage = (dir.path / "garbage.pem").string();
  std::ofstream(garbage) << "not a certificate\n";
  ok_handler handler;
  // The error message of start(), empty when it started.
  auto start = [&](std::string cert, std::string key) {
    transport::http_server_options so;
    so.tls_cert_file = std::move(cert);
    so.tls_key_file = std::move(key);
    transport::http_server server(so, handler);
    auto r = server.start();
    return r ? std::string() : r.error().message;
  };
  BOOST_TEST(start(tls.cert, tls.key).empty());
  const std::string missing = (dir.path / "missing.pem").string();
  std::string e = start(missing, tls.key);
  BOOST_TEST(e.find("cannot read TLS certificate file " + missing) != std::string::npos, e);
  e = start(tls.cert, missing);
  BOOST_TEST(e.find("cannot read TLS key file " + missing) != std::string::npos, e);
  e = start(garbage, tls.key);
  BOOST_TEST(e.find("TLS certificate file " + garbage) != std::string::npos, e);
  e = start(tls.cert, garbage);
  BOOST_TEST(e.find("TLS key file " + garbage) != std::string::npos, e);
  e = start(tls.cert, other.key);  // the key of another certificate
  BOOST_TEST(e.find("TLS key file " + other.key) != std::string::npos, e);
  BOOST_TEST(e.find(tls.cert) != std::string::npos, e);
  e = start(tls.cert, "");
  BOOST_TEST(e.find("--tls-key") != std::string::npos, e);
}

BOOST_AUTO_TEST_SUITE_END()
