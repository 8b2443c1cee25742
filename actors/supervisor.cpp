#include "actors/supervisor.hpp"

#include <algorithm>
#include <deque>

#include <caf/all.hpp>

#include "actors/logger.hpp"

namespace troupe::actors {
namespace {

using clock_type = std::chrono::steady_clock;

struct supervisor_state {
  failover_setup setup;
  std::shared_ptr<chain_factory> factory;
  std::vector<replica_health> health;               // [replica]
  std::vector<replica_actor> replicas;              // [replica] (told after they are spawned)
  std::vector<std::deque<clock_type::time_point>> restart_times;  // [replica], within the window
  static inline const char* name = "supervisor";
};

using supervisor_pointer = supervisor_actor::stateful_pointer<supervisor_state>;

supervisor_actor::behavior_type supervisor_behavior(supervisor_pointer self, failover_setup setup,
                                                    std::shared_ptr<chain_factory> factory,
                                                    std::vector<built_chain> initial) {
  auto& init = self->state;
  init.setup = setup;
  init.factory = std::move(factory);
  for (size_t r = 0; r < initial.size(); ++r) {
    replica_health h;
    h.replica = int32_t(r);
    h.state = "running";
    h.generation = 1;
    h.nodes = std::move(initial[r].nodes);
    init.health.push_back(std::move(h));
  }
  init.replicas.resize(initial.size());
  init.restart_times.resize(initial.size());
  return {
    [self](restart_atom, int32_t replica, std::string& reason) -> caf::result<std::vector<stage_actor>> {
      auto& st = self->state;
      if (replica < 0 || size_t(replica) >= st.health.size()) {
        return make_error(serve_errc::internal, fmt::format("no replica {}", replica));
      }
      replica_health& h = st.health[size_t(replica)];
      auto& times = st.restart_times[size_t(replica)];
      const auto now = clock_type::now();
      while (!times.empty() && now - times.front() > st.setup.restart_window) times.pop_front();
      if (int(times.size()) >= st.setup.max_restarts) {
        h.state = "failed";
        h.last_reason = fmt::format("{} restarts within {} s, the last after: {}; not restarted again ([failover] "
                                    "max_restarts, restart_window_ms)",
                                    times.size(), st.setup.restart_window.count() / 1000, reason);
        logger().error("replica failed replica={} reason={}", replica, h.last_reason);
        return make_error(serve_errc::failed, h.last_reason);
      }
      times.push_back(now);
      h.state = "recovering";
      h.last_reason = reason;
      ++h.restarts;
      const uint64_t generation = h.generation + 1;
      logger().warn("rebuilding replica={} generation={} reason={}", replica, generation, reason);
      const auto started = clock_type::now();
      auto built = st.factory->build(replica, generation, started + st.setup.recovery_timeout);
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - started).count();
      if (!built) {
        h.state = "failed";
        h.last_reason = fmt::format("cannot rebuild after: {}: {}", reason, built.error());
        logger().error("replica failed replica={} after_ms={} reason={}", replica, ms, h.last_reason);
        return make_error(serve_errc::failed, h.last_reason);
      }
      h.state = "running";
      h.generation = generation;
      h.nodes = built->nodes;
      logger().info("rebuilt replica={} generation={} in_ms={} nodes={}", replica, generation, ms,
                    fmt::join(h.nodes, ","));
      return std::move(built->stages);
    },
    [self](node_down_atom, const std::string& node) {
      auto& st = self->state;
      for (size_t r = 0; r < st.health.size(); ++r) {
        const auto& h = st.health[r];
        if (h.state != "running" || !st.replicas[r]) continue;
        if (std::find(h.nodes.begin(), h.nodes.end(), node) == h.nodes.end()) continue;
        logger().warn("node down, replica affected node={} replica={}", node, r);
        self->send(st.replicas[r], lost_atom::value, fmt::format("node {} is down (no heartbeat answer)", node));
      }
    },
    [self](join_atom, int32_t replica, replica_actor& handle, std::vector<std::string>& nodes) {
      auto& st = self->state;
      if (replica < 0) return;
      if (size_t(replica) >= st.health.size()) {
        // Added at run time (`replica add`): its first chain is built already.
        const size_t n = size_t(replica) + 1;
        for (size_t r = st.health.size(); r < n; ++r) {
          replica_health h;
          h.replica = int32_t(r);
          h.state = r == size_t(replica) ? "running" : "unsupervised";  // an index never joined
          h.generation = 1;
          st.health.push_back(std::move(h));
        }
        st.replicas.resize(n);
        st.restart_times.resize(n);
        st.health[size_t(replica)].nodes = std::move(nodes);
        logger().info("supervising replica={} nodes={}", replica, fmt::join(st.health[size_t(replica)].nodes, ","));
      }
      st.replicas[size_t(replica)] = std::move(handle);
    },
    [self](stats_atom) { return self->state.health; },
  };
}

}  // namespace

supervisor_actor spawn_supervisor(caf::actor_system& sys, failover_setup setup, std::shared_ptr<chain_factory> factory,
                                  std::vector<built_chain> initial) {
  return sys.spawn<caf::detached>(supervisor_behavior, setup, std::move(factory), std::move(initial));
}

}  // namespace troupe::actors
