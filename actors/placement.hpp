#pragma once
// Where the stages of a replica added at run time go (`replica add [nodes=...]`, docs/operations.md
// "The console"): a plain function, so tests call it directly.
#include <expected>
#include <map>
#include <string>
#include <vector>

#include "cluster-config/cluster_config.hpp"

namespace troupe::actors {

/// The nodes that can take stages now (a multi-host head's view).
struct node_load {
  std::vector<std::string> up;        // nodes that answer the head (the head itself included)
  std::map<std::string, int> stages;  // stages each node holds now
};

/// One node name per stage of a new replica of `n_stages` stages. `requested`: the operator's
/// names, one per stage or one for every stage, each a [[nodes]] entry that is up. Empty: the
/// spare nodes that are up, each stage to the one holding the fewest stages (ties: file order).
/// A cluster without [[nodes]] (`troupe serve`) runs every stage in this process (""), and has no
/// nodes to name.
std::expected<std::vector<std::string>, std::string> choose_replica_nodes(const config::cluster_config& cluster,
                                                                          int n_stages,
                                                                          const std::vector<std::string>& requested,
                                                                          const node_load& nodes);

}  // namespace troupe::actors
