#include "transport/connection_registry.hpp"

#include "transport/client_session.hpp"

namespace troupe::transport {

connection_registry::connection_registry(const server_options& o)
    : max_connections_(o.max_connections),
      max_per_peer_(o.max_connections_per_peer),
      max_buffered_(o.max_buffered_input_bytes),
      throttle_(o.max_auth_failures, o.auth_failure_window) {}

void connection_registry::uncount(entry& e) {
  if (!e.counted) return;
  e.counted = false;
  --n_counted_;
  if (auto it = per_peer_.find(e.peer); it != per_peer_.end() && --it->second == 0) per_peer_.erase(it);
  buffered_ -= e.buffered;
  e.buffered = 0;
}

connection_registry::admission connection_registry::add(const std::shared_ptr<client_session>& session,
                                                        const std::string& peer) {
  admission a;
  std::lock_guard lock(mu_);
  auto& e = entries_[static_cast<uint64_t>(session->id())];
  e.session = session;
  e.peer = peer;
  e.counted = false;
  if (max_per_peer_ > 0) {
    auto it = per_peer_.find(peer);
    if (it != per_peer_.end() && it->second >= max_per_peer_) {
      a.refused = error{errc::overloaded,
                        fmt::format("too many connections from this address (limit {} per address)", max_per_peer_),
                        0};
      return a;
    }
  }
  if (n_counted_ >= max_connections_) {
    // Make room: close the connection idle the longest (past its handshake with nothing in
    // flight, or still without a hello), never the newcomer, who may have work.
    entry* victim = nullptr;
    std::shared_ptr<client_session> victim_session;
    std::chrono::steady_clock::time_point oldest = std::chrono::steady_clock::time_point::max();
    for (auto& [id, other] : entries_) {
      if (!other.counted) continue;
      auto s = other.session.lock();
      if (!s) continue;
      if (auto since = s->idle_since(); since && *since < oldest) {
        oldest = *since;
        victim = &other;
        victim_session = std::move(s);
      }
    }
    if (victim == nullptr) {
      a.refused = error{errc::overloaded,
                        fmt::format("too many connections (limit {}), none of them idle", max_connections_), 0};
      return a;
    }
    uncount(*victim);
    a.evicted = std::move(victim_session);
  }
  e.counted = true;
  ++n_counted_;
  ++per_peer_[peer];
  return a;
}

void connection_registry::closing(connection_id id) {
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(static_cast<uint64_t>(id)); it != entries_.end()) uncount(it->second);
}

void connection_registry::remove(connection_id id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(static_cast<uint64_t>(id));
  if (it == entries_.end()) return;
  uncount(it->second);
  entries_.erase(it);
}

std::shared_ptr<client_session> connection_registry::set_buffered(connection_id id, size_t bytes) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(static_cast<uint64_t>(id));
  if (it == entries_.end() || !it->second.counted) return nullptr;
  buffered_ = buffered_ - it->second.buffered + bytes;
  it->second.buffered = bytes;
  if (max_buffered_ == 0 || buffered_ <= max_buffered_) return nullptr;
  entry* most = nullptr;
  for (auto& [other_id, other] : entries_) {
    if (other.counted && (most == nullptr || other.buffered > most->buffered)) most = &other;
  }
  auto victim = most->session.lock();
  uncount(*most);
  return victim;
}

std::vector<std::shared_ptr<client_session>> connection_registry::sessions() const {
  std::vector<std::shared_ptr<client_session>> out;
  std::lock_guard lock(mu_);
  out.reserve(entries_.size());
  for (const auto& [id, e] : entries_) {
    if (auto s = e.session.lock()) out.push_back(std::move(s));
  }
  return out;
}

size_t connection_registry::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

size_t connection_registry::buffered_bytes() const {
  std::lock_guard lock(mu_);
  return buffered_;
}

}  // namespace troupe::transport
