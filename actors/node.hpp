#pragma once
// The nodes of a multi-host cluster (`troupe node`). Every node runs a CAF actor system with the
// OpenSSL module: peers authenticate with certificates made from the cluster secret
// (transport/cluster_secret.hpp). A worker runs a NODE actor that starts, on the head's request,
// the PIPELINE STAGEs placed on it (each loads only its own layers); the head runs the HEAD actor,
// the door workers join through, and places stages with place_on_node().
#include <chrono>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/spawn_serve.hpp"
#include "transport/cluster_secret.hpp"
#include "transport/data_plane.hpp"

namespace troupe::actors {

/// CAF settings of a node process: the message types, TLS with this node's identity, and
/// heartbeats so that a cut link is noticed in about a second (CAF 0.17 notices none otherwise).
void configure_node_system(caf::actor_system_config& cfg, const transport::tls_identity& tls);

struct node_setup {
  std::string name;                               // this node's [[nodes]] name
  std::shared_ptr<transport::data_plane> plane;   // this node's data plane
  std::chrono::milliseconds join_timeout{10'000};  // a join request the head does not answer fails
};

/// A worker's NODE actor (detached: loading a stage's layers blocks it, not a CAF worker).
local_node_actor spawn_node_actor(caf::actor_system& sys, node_setup setup);

/// Asks the NODE to join the head at `head` (it monitors the head from then on and stops its
/// stages when the head is lost). Blocks the calling thread; returns the head's pid.
std::expected<int32_t, std::string> join_head(caf::actor_system& sys, const local_node_actor& node,
                                              const head_actor& head, const node_hello& hello,
                                              std::chrono::milliseconds timeout);

/// The HEAD actor: takes joins from the workers named in `workers` (others are refused), monitors
/// them and keeps their state.
head_actor spawn_head_actor(caf::actor_system& sys, std::vector<std::string> workers);

/// The head's view of the nodes (blocks the calling thread for the answer).
std::vector<node_state> query_nodes(caf::actor_system& sys, const head_actor& head);

/// Places one stage on the NODE of a joined worker (blocks the calling thread until the stage is
/// loaded, or `timeout`).
std::expected<placed_stage, std::string> place_on_node(caf::actor_system& sys, const node_actor& node,
                                                       stage_placement placement, std::chrono::milliseconds timeout);

}  // namespace troupe::actors
