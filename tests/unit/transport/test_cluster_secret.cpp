// The cluster secret and the TLS identity made from it: nodes with the same secret trust each
// other's certificates, a node with another secret is not trusted; bad secret files are refused
// with the reason.
#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <filesystem>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "tests/test_support.hpp"
#include "transport/cluster_secret.hpp"

using namespace troupe::transport;
namespace fs = std::filesystem;

namespace {

X509* read_cert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  BOOST_REQUIRE(f != nullptr);
  X509* x = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  BOOST_REQUIRE(x != nullptr);
  return x;
}

// Does `cert_path` verify against the CA certificate in `ca_path`, as TLS would check a peer?
bool verifies(const std::string& cert_path, const std::string& ca_path) {
  X509* cert = read_cert(cert_path);
  X509_STORE* store = X509_STORE_new();
  BOOST_REQUIRE(X509_STORE_load_file(store, ca_path.c_str()) == 1);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, nullptr);
  const bool ok = X509_verify_cert(ctx) == 1;
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  return ok;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cluster_secret)

BOOST_AUTO_TEST_CASE(nodes_with_the_same_secret_trust_each_other_and_no_one_else) {
  troupe::test::temp_dir dir;
  auto a = make_tls_identity("0123456789abcdef-the-secret", "a", dir.path);
  auto b = make_tls_identity("0123456789abcdef-the-secret", "b", dir.path);
  auto x = make_tls_identity("0123456789abcdef-other-one", "x", dir.path);
  BOOST_REQUIRE_MESSAGE(a, a.error().message);
  BOOST_REQUIRE(b);
  BOOST_REQUIRE(x);
  BOOST_TEST(verifies(a->certificate, b->ca));
  BOOST_TEST(verifies(b->certificate, a->ca));
  BOOST_TEST(!verifies(x->certificate, a->ca));
  BOOST_TEST(!verifies(a->certificate, x->ca));
  // The key is private to the node.
  BOOST_TEST(((fs::status(a->key).permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none));
}

BOOST_AUTO_TEST_CASE(the_private_directory_goes_with_the_identity) {
  troupe::test::temp_dir dir;
  fs::path where;
  {
    auto a = make_tls_identity("0123456789abcdef-the-secret", "a", dir.path);
    BOOST_REQUIRE(a);
    where = a->dir;
    BOOST_TEST(fs::exists(where));
    tls_identity moved = std::move(*a);
    BOOST_TEST(fs::exists(moved.certificate));
  }
  BOOST_TEST(!fs::exists(where));
}

BOOST_AUTO_TEST_CASE(bad_secret_files_are_refused_with_the_reason) {
  troupe::test::temp_dir dir;
  const fs::path empty = dir.path / "empty";
  const fs::path short_one = dir.path / "short";
  const fs::path good = dir.path / "good";
  troupe::test::write_bytes(empty, " \n");
  troupe::test::write_bytes(short_one, "abc\n");
  troupe::test::write_bytes(good, "  0123456789abcdef0123  \n");
  auto e = read_cluster_secret(empty);
  BOOST_REQUIRE(!e);
  BOOST_TEST(e.error().message.find("empty") != std::string::npos);
  auto s = read_cluster_secret(short_one);
  BOOST_REQUIRE(!s);
  BOOST_TEST(s.error().message.find("too short") != std::string::npos);
  auto m = read_cluster_secret(dir.path / "missing");
  BOOST_REQUIRE(!m);
  BOOST_TEST(m.error().message.find("cannot read") != std::string::npos);
  auto g = read_cluster_secret(good);
  BOOST_REQUIRE(g);
  BOOST_TEST(*g == "0123456789abcdef0123");
}

BOOST_AUTO_TEST_SUITE_END()
