#include "transport/cluster_secret.hpp"

#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace troupe::transport {
namespace {

unexpected_error fail(errc code, std::string message) { return unexpected_error(error{code, std::move(message), 0}); }

struct pkey_free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct x509_free {
  void operator()(X509* p) const { X509_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

std::string openssl_error(const char* what) {
  char buf[256] = "no details";
  if (unsigned long e = ERR_get_error(); e != 0) ERR_error_string_n(e, buf, sizeof buf);
  return fmt::format("{}: {}", what, buf);
}

// The CA key: Ed25519 from HMAC-SHA256(secret, label). The label names the purpose and version,
// so the same secret can seed other keys later without them being related.
pkey_ptr derive_ca_key(std::string_view secret) {
  static constexpr std::string_view label = "troupe cluster CA v1";
  unsigned char seed[32];
  unsigned int n = 0;
  if (HMAC(EVP_sha256(), secret.data(), int(secret.size()), reinterpret_cast<const unsigned char*>(label.data()),
           label.size(), seed, &n) == nullptr ||
      n != sizeof seed) {
    return nullptr;
  }
  pkey_ptr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed, sizeof seed));
  OPENSSL_cleanse(seed, sizeof seed);
  return key;
}

bool add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (ext == nullptr) return false;
  const bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

bool set_name(X509_NAME* name, std::string_view common_name) {
  return X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("troupe"), -1,
                                    -1, 0) == 1 &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(std::string(common_name).c_str()), -1, -1,
                                    0) == 1;
}

// The CA certificate. Every node makes its own copy; they differ in nothing that matters for
// verification (subject, key, extensions and validity are the same; Ed25519 signatures are
// deterministic anyway).
x509_ptr make_ca_cert(EVP_PKEY* ca_key) {
  x509_ptr cert(X509_new());
  if (!cert) return nullptr;
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  if (ASN1_TIME_set_string(X509_getm_notBefore(cert.get()), "20200101000000Z") != 1 ||
      ASN1_TIME_set_string(X509_getm_notAfter(cert.get()), "20991231235959Z") != 1) {
    return nullptr;
  }
  if (!set_name(X509_get_subject_name(cert.get()), "troupe cluster CA")) return nullptr;
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(cert.get())) != 1) return nullptr;
  if (X509_set_pubkey(cert.get(), ca_key) != 1) return nullptr;
  if (!add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE") ||
      !add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign")) {
    return nullptr;
  }
  if (X509_sign(cert.get(), ca_key, nullptr) == 0) return nullptr;  // Ed25519: no separate digest
  return cert;
}

x509_ptr make_node_cert(EVP_PKEY* node_key, X509* ca_cert, EVP_PKEY* ca_key, std::string_view node_name) {
  x509_ptr cert(X509_new());
  if (!cert) return nullptr;
  X509_set_version(cert.get(), 2);
  unsigned char serial[8];
  if (RAND_bytes(serial, sizeof serial) != 1) return nullptr;
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  if (bn == nullptr) return nullptr;
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  // Valid from an hour ago (clocks of the hosts differ a little) until the CA's end.
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  if (ASN1_TIME_set_string(X509_getm_notAfter(cert.get()), "20991231235959Z") != 1) return nullptr;
  if (!set_name(X509_get_subject_name(cert.get()), node_name)) return nullptr;
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert)) != 1) return nullptr;
  if (X509_set_pubkey(cert.get(), node_key) != 1) return nullptr;
  if (!add_extension(cert.get(), ca_cert, NID_basic_constraints, "critical,CA:FALSE") ||
      !add_extension(cert.get(), ca_cert, NID_key_usage, "critical,digitalSignature") ||
      !add_extension(cert.get(), ca_cert, NID_ext_key_usage, "serverAuth,clientAuth")) {
    return nullptr;
  }
  if (X509_sign(cert.get(), ca_key, nullptr) == 0) return nullptr;
  return cert;
}

template <class Write>
result<void> write_pem(const std::filesystem::path& path, Write write) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) return fail(errc::io_error, fmt::format("{}: cannot create: {}", path.string(), std::strerror(errno)));
  ::fchmod(fileno(f), 0600);
  const bool ok = write(f);
  if (std::fclose(f) != 0 || !ok) return fail(errc::io_error, openssl_error(path.c_str()));
  return {};
}

}  // namespace

result<std::string> read_cluster_secret(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return fail(errc::io_error, fmt::format("cluster secret {}: cannot read: {}", file.string(), std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  const auto first = s.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return fail(errc::invalid_request, fmt::format("cluster secret {}: the file is empty", file.string()));
  s = s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
  if (s.size() < 16) {
    return fail(errc::invalid_request,
                fmt::format("cluster secret {}: {} bytes is too short (at least 16; e.g. `openssl rand -hex 32 > {}`)",
                            file.string(), s.size(), file.string()));
  }
  return s;
}

tls_identity::~tls_identity() {
  if (!dir.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
}

tls_identity::tls_identity(tls_identity&& other) noexcept
    : certificate(std::move(other.certificate)), key(std::move(other.key)), ca(std::move(other.ca)),
      dir(std::exchange(other.dir, {})) {}

tls_identity& tls_identity::operator=(tls_identity&& other) noexcept {
  if (this != &other) {
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
    certificate = std::move(other.certificate);
    key = std::move(other.key);
    ca = std::move(other.ca);
    dir = std::exchange(other.dir, {});
  }
  return *this;
}

result<tls_identity> make_tls_identity(std::string_view secret, std::string_view node_name,
                                       const std::filesystem::path& parent) {
  if (secret.empty()) return fail(errc::invalid_request, "empty cluster secret");
  pkey_ptr ca_key = derive_ca_key(secret);
  if (!ca_key) return fail(errc::internal, openssl_error("cannot derive the cluster CA key"));
  x509_ptr ca_cert = make_ca_cert(ca_key.get());
  if (!ca_cert) return fail(errc::internal, openssl_error("cannot make the cluster CA certificate"));
  pkey_ptr node_key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!node_key) return fail(errc::internal, openssl_error("cannot make a node key"));
  x509_ptr node_cert = make_node_cert(node_key.get(), ca_cert.get(), ca_key.get(), node_name);
  if (!node_cert) return fail(errc::internal, openssl_error("cannot make the node certificate"));

  std::string templ = (parent / "troupe-tls-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) {
    return fail(errc::io_error, fmt::format("cannot make a private directory under {}: {}", parent.string(),
                                            std::strerror(errno)));
  }
  tls_identity id;
  id.dir = templ;
  id.certificate = (id.dir / "node.pem").string();
  id.key = (id.dir / "node.key").string();
  id.ca = (id.dir / "ca.pem").string();
  if (auto r = write_pem(id.key, [&](FILE* f) {
        return PEM_write_PrivateKey(f, node_key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
      });
      !r) {
    return unexpected_error(r.error());
  }
  if (auto r = write_pem(id.certificate, [&](FILE* f) { return PEM_write_X509(f, node_cert.get()) == 1; }); !r) {
    return unexpected_error(r.error());
  }
  if (auto r = write_pem(id.ca, [&](FILE* f) { return PEM_write_X509(f, ca_cert.get()) == 1; }); !r) {
    return unexpected_error(r.error());
  }
  return id;
}

}  // namespace troupe::transport
