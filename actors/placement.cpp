#include "actors/placement.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace troupe::actors {

std::expected<std::vector<std::string>, std::string> choose_replica_nodes(const config::cluster_config& cluster,
                                                                          int n_stages,
                                                                          const std::vector<std::string>& requested,
                                                                          const node_load& nodes) {
  if (n_stages <= 0) return std::unexpected(std::string("a replica needs at least one stage"));
  if (!cluster.multi_host()) {
    if (!requested.empty()) {
      return std::unexpected(std::string("this server runs every stage in its own process: it has no nodes to name"));
    }
    return std::vector<std::string>(size_t(n_stages));
  }
  auto is_up = [&](const std::string& name) {
    return std::find(nodes.up.begin(), nodes.up.end(), name) != nodes.up.end();
  };
  if (!requested.empty()) {
    if (requested.size() != 1 && requested.size() != size_t(n_stages)) {
      return std::unexpected(fmt::format("name one node for every stage or one per stage ({} stages), not {}",
                                         n_stages, requested.size()));
    }
    for (const auto& name : requested) {
      if (cluster.find_node(name) == nullptr) {
        std::vector<std::string> known;
        for (const auto& n : cluster.nodes) known.push_back(n.name);
        return std::unexpected(fmt::format("no node named '{}' in the cluster file (nodes: {})", name,
                                           fmt::join(known, ", ")));
      }
      if (!is_up(name)) return std::unexpected(fmt::format("node {} is not up", name));
    }
    if (requested.size() == 1) return std::vector<std::string>(size_t(n_stages), requested[0]);
    return requested;
  }
  std::map<std::string, int> load = nodes.stages;
  std::vector<const config::node_section*> spares;
  for (const auto& n : cluster.nodes) {
    if (n.role == config::node_role::spare && is_up(n.name)) spares.push_back(&n);
  }
  if (spares.empty()) {
    return std::unexpected(std::string("no spare node is up: name the nodes (replica add nodes=NODE[,NODE...])"));
  }
  std::vector<std::string> out;
  for (int s = 0; s < n_stages; ++s) {
    const config::node_section* best = spares[0];
    for (const auto* n : spares) {
      if (load[n->name] < load[best->name]) best = n;
    }
    out.push_back(best->name);
    ++load[best->name];
  }
  return out;
}

}  // namespace troupe::actors
