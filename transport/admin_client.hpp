#pragma once
// A small blocking client for the admin frames of the client protocol (docs/protocol.md,
// "admin"): `troupe admin` and tests. One connection; one command at a time.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "transport/client_protocol.hpp"
#include "transport/error.hpp"

namespace troupe::transport {

struct admin_client_options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string token;    // the admin token (also in hello: no API key needed)
  std::string api_key;  // optional
  std::string client_name = "troupe-admin";
  std::chrono::milliseconds timeout{10'000};  // connect + hello, and each command
};

class admin_client {
 public:
  /// Connects and completes the hello exchange; the server's error frame comes back as the error.
  static result<admin_client> connect(admin_client_options options);
  admin_client(admin_client&&) noexcept;
  admin_client& operator=(admin_client&&) noexcept;
  ~admin_client();

  /// Sends one command (its words) and waits for the reply. errc::connection_closed (or the
  /// server's connection-level error) when the connection is gone: connect again.
  result<admin_reply> run(const std::vector<std::string>& command);
  const hello_ok& server_info() const;

 private:
  struct impl;
  explicit admin_client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace troupe::transport
