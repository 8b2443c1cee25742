#pragma once
// Config -> actors, in one process: `troupe serve` (and the integration tests) start all of a
// cluster config's actors here: per replica a chain of PIPELINE STAGEs (each loads only its layers), a
// REPLICA and a SCHEDULER; one ROUTER in front.
#include <chrono>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/scheduler.hpp"
#include "engine/stop_rule.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/model_config.hpp"
#include "engine/tokenizer.hpp"
#include "transport/data_plane.hpp"

namespace troupe::actors {

/// Registers troupe's message types and error category, and sets up CAF's scheduler for the
/// light actors (PIPELINE STAGEs are detached: they bring their own threads).
void configure_actor_system(caf::actor_system_config& cfg);

/// Where each stage of a serve_node runs ([replica][stage]), for status lines.
struct stage_location {
  std::string node;  // empty: this process
  int32_t pid = 0;
  int first_layer = 0;
  int last_layer = 0;
};

/// One replica's actors (the ADMIN starts and stops replicas at run time).
struct replica_parts {
  scheduler_actor scheduler;
  replica_actor replica;
  std::vector<stage_actor> stages;
  std::vector<stage_location> locations;
};

struct serve_node {
  router_actor router;
  supervisor_actor supervisor;  // rebuilds replicas that lost a stage (invalid: [failover] enabled = false)
  std::vector<scheduler_actor> schedulers;
  std::vector<replica_actor> replicas;
  std::vector<std::vector<stage_actor>> stages;  // [replica][stage]
  std::vector<std::vector<stage_location>> locations;  // [replica][stage]
  engine::model_config model;
  std::shared_ptr<const engine::tokenizer> tokenizer;  // the ROUTER's (gateways tokenize with it)
  config::cluster_config cluster;  // with layer ranges resolved
  std::vector<std::shared_ptr<transport::data_plane>> planes;  // stage_link::data_plane: one per stage
  /// Starts replica `index` at run time: replica 0's layer ranges with stage s on nodes[s] (""
  /// or this node: in this process; another node: placed there as at start-up), a REPLICA under
  /// the SUPERVISOR (which rebuilds it like the others) and a SCHEDULER. Blocks while the stages
  /// load (the ADMIN calls it on a thread of its own). The ROUTER is not told: the caller adds it.
  std::function<std::expected<replica_parts, std::string>(int index, const std::vector<std::string>& nodes)>
    start_replica;

  /// Stops every actor (the actor system's destructor waits for them). Idempotent.
  void shutdown();
};

/// How the stages of one replica hand activations to each other in this process.
enum class stage_link {
  message,     // inside the CAF message (moved): the normal in-process path
  data_plane,  // over the UCX data plane on loopback, as between processes (tests, measurements)
};

/// A stage of a multi-host cluster that runs on another node: what the head asks that node's
/// NODE actor to start (stage_placement) and whom it tells where (actors/node.hpp places it).
struct remote_stage {
  int replica = 0;
  int index = 0;
  const config::stage_section* section = nullptr;
  const config::node_section* node = nullptr;       // where it runs
  stage_actor next;                                  // invalid for the last stage
  const config::node_section* next_node = nullptr;  // where the next stage runs; nullptr: none
  uint32_t link_id = 0;
  uint64_t generation = 1;  // the replica's chain (1 at start-up; a rebuild counts up)
  // A rebuild: the placer may put the stage on a spare node when `node` is down, or wait for
  // `node` until this time. At start-up (time_point::min()) a node that is not there fails.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::min();
};
/// A stage placed on another node, and the node it went to (`node`, or a spare in its place).
struct remote_placed {
  placed_stage placed;
  const config::node_section* node = nullptr;
};
using remote_placer = std::function<std::expected<remote_placed, std::string>(const remote_stage&)>;

struct serve_options {
  stage_link links = stage_link::message;
  // The head of a multi-host cluster (cluster.multi_host()): stages placed on `this_node` (or on no
  // node) start here, the others through `place_remote`. `plane` is this node's data plane:
  // local stages receive tagged activations on it and send to stages on other nodes over it.
  std::string this_node;
  std::shared_ptr<transport::data_plane> plane;
  remote_placer place_remote;
  // Called (on the building thread) after replica R's chain of generation G is complete: at
  // start-up and after every rebuild. The head tells its nodes to drop older chains' stages.
  std::function<void(int replica, uint64_t generation)> chain_built;
};


/// The SCHEDULER of a replica of `n_stages` stages under `cluster`'s batching (its `replica` is
/// left to the caller).
scheduler_setup make_scheduler_setup(const config::cluster_config& cluster, const engine::model_config& model,
                                     const engine::stop_rule& stop, int n_stages);

/// Loads the stages' layers and spawns the actors. Errors name the config file and key where
/// they come from a config ("local.toml:30: stages[1].last_layer: ...") or the model file.
std::expected<serve_node, std::string> spawn_serve(caf::actor_system& sys, config::cluster_config cluster,
                                                   std::shared_ptr<const engine::tokenizer> tokenizer,
                                                   serve_options options = {});

}  // namespace troupe::actors
