#include "transport/auth_throttle.hpp"

#include <fmt/format.h>

namespace troupe::transport {

namespace {
// Past this many remembered peers, those whose window has ended are dropped at once.
constexpr size_t prune_above_peers = 65'536;
}  // namespace

auth_throttle::auth_throttle(size_t max_failures, std::chrono::milliseconds window)
    : max_failures_(max_failures), window_(window) {}

std::chrono::milliseconds auth_throttle::check(const std::string& peer, clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = peers_.find(peer);
  if (it == peers_.end() || max_failures_ == 0 || it->second.failures < max_failures_) return {};
  const auto end = it->second.window_start + window_;
  if (now >= end) return {};
  ++n_refused_;
  ++attempts_by_peer_[peer];
  return std::chrono::ceil<std::chrono::milliseconds>(end - now);
}

void auth_throttle::failed(const std::string& peer, clock::time_point now) {
  std::lock_guard lock(mu_);
  if (peers_.size() >= prune_above_peers) {
    std::erase_if(peers_, [&](const auto& p) { return now >= p.second.window_start + window_; });
  }
  auto& p = peers_[peer];
  if (p.failures == 0 || now >= p.window_start + window_) {
    p.window_start = now;
    p.failures = 0;
  }
  ++p.failures;
  ++n_failed_;
  if (attempts_by_peer_.size() < prune_above_peers || attempts_by_peer_.contains(peer)) ++attempts_by_peer_[peer];
}

std::optional<std::string> auth_throttle::summary(clock::time_point now) {
  std::lock_guard lock(mu_);
  std::erase_if(peers_, [&](const auto& p) { return now >= p.second.window_start + window_; });
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(now - last_summary_);
  last_summary_ = now;
  if (n_failed_ == 0 && n_refused_ == 0) return std::nullopt;
  std::string top;
  uint64_t top_n = 0;
  for (const auto& [peer, n] : attempts_by_peer_) {
    if (n > top_n) {
      top = peer;
      top_n = n;
    }
  }
  size_t locked = 0;
  for (const auto& [peer, p] : peers_) locked += max_failures_ > 0 && p.failures >= max_failures_ ? 1 : 0;
  auto line = fmt::format(
    "API key failures in the last {} ms: wrong_or_missing={} refused_while_locked_out={} peers={} "
    "locked_out_now={} top_peer={} top_peer_attempts={}",
    period.count(), n_failed_, n_refused_, attempts_by_peer_.size(), locked, top, top_n);
  n_failed_ = 0;
  n_refused_ = 0;
  attempts_by_peer_.clear();
  return line;
}

}  // namespace troupe::transport
