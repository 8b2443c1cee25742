#pragma once
// The nodes of a multi-host cluster (`troupe node`). Every node runs a CAF actor system with the
// OpenSSL module: peers authenticate with certificates made from the cluster secret
// (transport/cluster_secret.hpp). A worker runs a NODE actor that starts, on the head's request,
// the PIPELINE STAGEs placed on it (each loads only its own layers); the head runs the HEAD actor,
// the door workers join through, and places stages with place_on_node().
#include <atomic>
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
/// With `tls`, CAF's OpenSSL module carries the control plane ([cluster] control_tls).
void configure_node_system(caf::actor_system_config& cfg, const transport::tls_identity& tls, bool use_tls);

/// Publishes `handle` for the control plane on 127.0.0.1 (behind this node's gate): over CAF's
/// OpenSSL module when the system was configured with TLS, plain BASP otherwise.
caf::expected<uint16_t> publish_control(caf::actor_system& sys, const caf::actor& handle);

/// Connects to the actor published at 127.0.0.1:port (a gate_client's local end).
caf::expected<caf::actor> connect_control(caf::actor_system& sys, uint16_t port);

struct node_setup {
  std::string name;                               // this node's [[nodes]] name
  std::shared_ptr<transport::data_plane> plane;   // this node's data plane
  std::chrono::milliseconds join_timeout{10'000};  // a join request the head does not answer fails
  std::string secret;  // the cluster secret: to reach other workers' gates directly
  /// When the head's last heartbeat came (steady clock, ms since its epoch): the worker's main
  /// loop treats a silent head as lost (a cut link closes no connection).
  std::shared_ptr<std::atomic<int64_t>> last_heartbeat_ms = std::make_shared<std::atomic<int64_t>>(0);
};

/// Heartbeats between the head and its nodes. CAF 0.17's own (middleman.heartbeat-interval) stay
/// off: with them on, a connection that closes before the BASP handshake (a port scan, a node
/// with the wrong secret failing TLS) makes the broker drop established node connections
/// (measured: the head lost a joined worker at every such attempt; none with them off).
inline constexpr std::chrono::milliseconds heartbeat_interval{300};
inline constexpr std::chrono::milliseconds heartbeat_timeout{1'000};  // no answer: the node is lost

/// Milliseconds of the steady clock (for node_setup::last_heartbeat_ms).
int64_t steady_ms();

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

/// Whether the NODE answers a ping within `timeout` (blocks the calling thread).
bool ping_node(caf::actor_system& sys, const node_actor& node, std::chrono::milliseconds timeout);

/// Places one stage on the NODE of a joined worker (blocks the calling thread until the stage is
/// loaded, or `timeout`).
std::expected<placed_stage, std::string> place_on_node(caf::actor_system& sys, const node_actor& node,
                                                       stage_placement placement, std::chrono::milliseconds timeout);

}  // namespace troupe::actors
