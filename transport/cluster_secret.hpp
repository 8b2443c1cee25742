#pragma once
// The cluster secret and what is made from it. Every node of a multi-host cluster reads the same
// secret file ([cluster] secret_file). The data plane proves it with an HMAC handshake
// (data_plane.hpp); the control plane (CAF over TLS) proves it with certificates made here:
//
//  - the cluster CA's key is an Ed25519 key derived from the secret (HMAC-SHA256(secret, label)),
//    so every node that holds the secret makes the same CA, and nobody else can;
//  - each node makes a fresh key of its own and a certificate for it signed by that CA.
//
// TLS then requires a certificate signed by the CA on both sides: a process without the secret
// fails the handshake, before any message of it reaches an actor. Nothing but the secret file has
// to be handed to the nodes. Knows no actors (transport/).
#include <filesystem>
#include <string>
#include <string_view>

#include "transport/error.hpp"

namespace troupe::transport {

/// Reads a secret file: its bytes less surrounding whitespace. errc::io_error when it cannot be
/// read, errc::invalid_argument when it is empty or shorter than 16 bytes.
result<std::string> read_cluster_secret(const std::filesystem::path& file);

/// PEM files of this node's TLS identity, in a private directory (mode 0700) that the object
/// removes when it is destroyed. CAF's OpenSSL module reads them whenever it opens a connection,
/// so they must outlive the actor system.
class tls_identity {
 public:
  tls_identity() = default;
  ~tls_identity();
  tls_identity(tls_identity&& other) noexcept;
  tls_identity& operator=(tls_identity&& other) noexcept;
  tls_identity(const tls_identity&) = delete;
  tls_identity& operator=(const tls_identity&) = delete;

  std::string certificate;  // this node's certificate (PEM)
  std::string key;          // its private key (PEM, 0600)
  std::string ca;           // the cluster CA's certificate (PEM): peers must be signed by it
  std::filesystem::path dir;
};

/// Derives the cluster CA from `secret` and makes a certificate for `node_name` signed by it,
/// written into a new directory under `parent` (e.g. /tmp).
result<tls_identity> make_tls_identity(std::string_view secret, std::string_view node_name,
                                       const std::filesystem::path& parent);

}  // namespace troupe::transport
