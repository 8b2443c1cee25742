#pragma once
// The server's table of open connections, shared by tcp_server and its sessions: the connection
// cap (a new client takes the slot of the connection idle the longest, and is refused only when
// none is idle), the limit per peer address, the budget for unparsed input across connections,
// and the API key throttle. Internal to tcp_server. Thread-safe.
//
// Lock order: the registry's mutex, then a session's (client_session::idle_since); a session
// never calls in here while holding its own.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "transport/auth_throttle.hpp"
#include "transport/error.hpp"
#include "transport/request_handler.hpp"
#include "transport/tcp_server.hpp"

namespace troupe::transport {

class client_session;

class connection_registry {
 public:
  explicit connection_registry(const server_options& options);

  struct admission {
    std::optional<error> refused;             // set: close the new connection with this error
    std::shared_ptr<client_session> evicted;  // set: close this idle connection to make room
  };
  /// Adds a freshly accepted connection and says whether it may stay.
  admission add(const std::shared_ptr<client_session>& session, const std::string& peer);
  /// The connection is closing: it no longer counts against the caps and holds no input.
  void closing(connection_id id);
  /// The connection is closed.
  void remove(connection_id id);
  /// The connection's unparsed input is now `bytes`. When the total passes
  /// max_buffered_input_bytes, returns the connection holding the most (possibly the caller),
  /// already marked closing: the caller closes it.
  std::shared_ptr<client_session> set_buffered(connection_id id, size_t bytes);

  std::vector<std::shared_ptr<client_session>> sessions() const;
  size_t size() const;
  size_t buffered_bytes() const;
  auth_throttle& throttle() { return throttle_; }

 private:
  struct entry {
    std::weak_ptr<client_session> session;
    std::string peer;
    size_t buffered = 0;
    bool counted = true;  // false once closing
  };
  void uncount(entry& e);  // mu_ held

  const size_t max_connections_;
  const size_t max_per_peer_;
  const size_t max_buffered_;
  auth_throttle throttle_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, entry> entries_;
  std::unordered_map<std::string, size_t> per_peer_;  // counted connections per peer address
  size_t n_counted_ = 0;
  size_t buffered_ = 0;
};

}  // namespace troupe::transport
