#pragma once
// The SUPERVISOR actor (one per serving process: `troupe serve`, or the head of a multi-host
// cluster). A REPLICA that lost a stage (down, hung, its node lost) asks it for a new chain; the
// SUPERVISOR builds one (chain_factory: the same code that built the first chain at start-up,
// placing a stage whose node is down on a spare node, or waiting for its node to come back) within
// a restart budget, and tells replicas when one of their nodes is reported down by the head's
// heartbeats. See docs/operations.md, "Failover".
#include <chrono>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"

namespace troupe::actors {

/// A replica's chain as built: its stages (front to back) and the node each runs on ("" : this
/// process).
struct built_chain {
  std::vector<stage_actor> stages;
  std::vector<std::string> nodes;
};

/// Builds chains of stages (spawn_serve's, for start-up and rebuilds alike).
class chain_factory {
 public:
  virtual ~chain_factory() = default;
  /// Replica `replica`'s chain anew, as chain `generation`; a stage whose node is down goes to a
  /// spare node, or waits for its node until `deadline`. Blocks the calling thread.
  virtual std::expected<built_chain, std::string> build(int replica, uint64_t generation,
                                                        std::chrono::steady_clock::time_point deadline) = 0;
};

struct failover_setup {
  bool enabled = true;
  std::chrono::milliseconds recovery_timeout{30'000};  // a rebuild that takes longer fails the replica
  int max_restarts = 5;                                 // rebuilds of one replica within restart_window ...
  std::chrono::milliseconds restart_window{60'000};     // ... past which the replica is marked failed
};

/// Spawns the SUPERVISOR (detached: a rebuild blocks it, not a CAF worker). `initial` holds the
/// chains built at start-up (their nodes), one per replica.
supervisor_actor spawn_supervisor(caf::actor_system& sys, failover_setup setup, std::shared_ptr<chain_factory> factory,
                                  std::vector<built_chain> initial);

}  // namespace troupe::actors
