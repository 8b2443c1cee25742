#pragma once
// The ADMIN CONSOLE actor: operator commands on a running cluster (docs/operations.md, "The
// console"). It checks the admin token of every command and writes each to the audit log (who,
// what, when, outcome); status joins the ROUTER's routing state and measurements, the
// SCHEDULERs' counters, the stages' placement and the nodes; drain / weight / rollout go to the
// ROUTER; replica add starts a replica (replica_factory: in this process, or on a head's nodes),
// replica remove drains one and stops its actors once idle. The automatic rollback itself is the
// ROUTER's (it sees every failure as it happens); the ADMIN sets its thresholds and shows its events.
#include <chrono>
#include <expected>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/placement.hpp"
#include "actors/spawn_serve.hpp"

namespace troupe::actors {

/// Starts replica `index` with the cluster's model and stage layout, its stages on the nodes
/// `replica add` named (empty: where placement puts them; actors/placement.hpp). Blocking: loads
/// weights; the ADMIN calls it on a thread of its own.
using replica_factory =
  std::function<std::expected<replica_parts, std::string>(int index, const std::vector<std::string>& nodes)>;

struct admin_setup {
  std::string token;  // the admin token; empty: every command is refused
  router_actor router;
  std::vector<replica_parts> replicas;  // the running ones, by index
  config::cluster_config cluster;       // the effective configuration (`config`)
  std::string this_node = "local";      // where stages without a node run (the head's name)
  replica_factory make_replica;         // empty: `replica add` is not supported here
  head_actor head;                      // a multi-host head: the nodes (invalid in `troupe serve`)
  caf::actor supervisor;                // restart STAGE goes here, once the SUPERVISOR exists
  rollback_policy rollback;
  std::chrono::milliseconds tick{1'000};  // sampling, rollout steps, removals
  std::chrono::milliseconds history_period{2'000};
  size_t history_points = 300;          // per replica (10 minutes at 2 s)
};

/// Spawns the ADMIN; stops the replicas it added when it exits.
admin_actor spawn_admin(caf::actor_system& sys, admin_setup setup);

/// The parts of every replica of a node started by spawn_serve.
std::vector<replica_parts> replicas_of(const serve_node& node);

/// A replica_factory over spawn_serve's start_replica (the model file and stage layout of replica
/// 0, under the SUPERVISOR): in `troupe serve` its stages run in this process; on a multi-host head
/// they go to the nodes named, or to the spare nodes `nodes_now` says are up. `node` must outlive it.
replica_factory serve_replica_factory(serve_node& node, std::function<node_load()> nodes_now = {});

}  // namespace troupe::actors
