#include "actors/node.hpp"

#include <unistd.h>

#include <map>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "actors/logger.hpp"
#include "actors/pipeline_stage.hpp"
#include "transport/control_gate.hpp"
#include "engine/model_weights.hpp"

namespace troupe::actors {

void configure_node_system(caf::actor_system_config& cfg, const transport::tls_identity& tls, bool use_tls) {
  configure_actor_system(cfg);
  cfg.load<caf::io::middleman>();
  if (use_tls) {
    cfg.load<caf::openssl::manager>();
    cfg.openssl_certificate = tls.certificate;
    cfg.openssl_key = tls.key;
    cfg.openssl_cafile = tls.ca;
  }
  // CAF's heartbeats stay off (see heartbeat_interval in node.hpp): the HEAD sends its own.
}

namespace {
bool has_tls(caf::actor_system& sys) { return sys.has_openssl_manager(); }
}  // namespace

caf::expected<uint16_t> publish_control(caf::actor_system& sys, const caf::actor& handle) {
  if (has_tls(sys)) return caf::openssl::publish(handle, 0, "127.0.0.1", true);
  return sys.middleman().publish(handle, 0, "127.0.0.1", true);
}

caf::expected<caf::actor> connect_control(caf::actor_system& sys, uint16_t port) {
  if (has_tls(sys)) return caf::openssl::remote_actor(sys, "127.0.0.1", port);
  return sys.middleman().remote_actor("127.0.0.1", port);
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

// ---- NODE (worker) ------------------------------------------------------------------------------

namespace {

struct node_actor_state {
  node_setup setup;
  // Shared with the exit functor, which runs after the state is gone.
  std::shared_ptr<std::vector<stage_actor>> stages = std::make_shared<std::vector<stage_actor>>();
  // (replica, index) -> the generation and stage placed last: a newer placement stops the older
  // stage (a chain rebuilt while this node was cut off or stopped).
  struct placed_entry {
    uint64_t generation = 0;
    stage_actor stage;
    transport::peer_id next_peer = 0;  // its data-plane connection to the next stage (0: none)
  };
  std::map<std::pair<int32_t, int32_t>, placed_entry> placed;
  // Direct control connections to other workers ("host:port" of their gates): without them CAF
  // relays every step request between two workers through the head.
  // Keyed by "host:port" and the CAF node of the stage behind it: a node that started again at the
  // same address is another CAF node and gets a connection of its own (the old gate is closed).
  std::map<std::string, std::unique_ptr<transport::gate_client>> gates;
  head_actor head;
  static inline const char* name = "node";
};

using node_pointer = local_node_actor::stateful_pointer<node_actor_state>;

void release_stages(node_pointer self, const char* why) {
  auto& st = self->state;
  if (st.stages->empty()) return;
  logger().info("stopping stages node={} n_stages={} reason={}", st.setup.name, st.stages->size(), why);
  for (auto& s : *st.stages) self->send_exit(s, caf::exit_reason::user_shutdown);
  st.stages->clear();
  // Their connections to the next stages go with them (each holds UCX buffers).
  for (auto& [key, e] : st.placed) {
    if (e.next_peer != 0) st.setup.plane->disconnect(e.next_peer);
  }
  st.placed.clear();
}

// Stops one placed stage and closes its connection to the next stage (neither is kept for the
// node's life); the caller erases the entry.
void stop_placed(node_pointer self, const node_actor_state::placed_entry& e) {
  auto& st = self->state;
  self->send_exit(e.stage, caf::exit_reason::user_shutdown);
  std::erase(*st.stages, e.stage);
  if (e.next_peer != 0) st.setup.plane->disconnect(e.next_peer);
}

// The head's current chains: stages of older generations go (a rebuild placed them elsewhere).
void retire_stages(node_pointer self, const chain_generations& g) {
  auto& st = self->state;
  for (auto it = st.placed.begin(); it != st.placed.end();) {
    const auto [replica, index] = it->first;
    const uint64_t current = replica >= 0 && size_t(replica) < g.current.size() ? g.current[size_t(replica)] : 0;
    if (current == 0 || it->second.generation >= current) {
      ++it;
      continue;
    }
    logger().info("retiring stage node={} replica={} stage={} generation={} current_generation={}", st.setup.name,
                  replica, index, it->second.generation, current);
    stop_placed(self, it->second);
    it = st.placed.erase(it);
  }
}

std::expected<placed_stage, std::string> place(node_pointer self, const stage_placement& p) {
  auto& st = self->state;
  logger().info("placing stage node={} replica={} stage={} layers=[{},{}) threads={}", st.setup.name, p.replica,
                p.index, p.first_layer, p.last_layer, p.threads);
  auto w = engine::load_model(p.model_path, engine::load_options{engine::layer_range{p.first_layer, p.last_layer}});
  if (!w) return std::unexpected(w.error().message);
  stage_setup ss;
  ss.weights = std::make_shared<const engine::model_weights>(std::move(*w));
  ss.block_size = p.block_size;
  ss.n_blocks = p.n_blocks;
  ss.threads = p.threads;
  ss.next = p.next;
  ss.plane = st.setup.plane;
  ss.link_id = p.link_id;
  ss.data_timeout = std::chrono::milliseconds(p.data_timeout_ms);
  if (!p.next_data_host.empty()) {
    // A fresh connection for every placement: the next stage's node may be a process that
    // started again at the same address since this node last connected to it.
    auto peer = st.setup.plane->connect(p.next_data_host, uint16_t(p.next_data_port));
    if (!peer) {
      return std::unexpected(fmt::format("data plane of the next stage at {}:{}: {}", p.next_data_host,
                                         p.next_data_port, peer.error().message));
    }
    ss.next_peer = *peer;
  }
  if (p.next_control_port != 0 && !p.next_data_host.empty()) {
    // Best effort: without it the step requests still arrive, relayed by the head.
    const std::string where = fmt::format("{}:{} ", p.next_data_host, p.next_control_port);
    const std::string key = where + caf::to_string(p.next.node());
    if (!st.gates.contains(key)) {
      // A gate to an older process at that address goes: that process has exited (the address is
      // the new one's now), and each gate holds a listener, a relay thread and buffers.
      std::erase_if(st.gates, [&](const auto& g) { return g.first.starts_with(where); });
      auto g = transport::gate_client::start(p.next_data_host, uint16_t(p.next_control_port),
                                             transport::gate_options{st.setup.secret});
      if (!g) {
        logger().warn("no direct control connection to {} (the head relays): {}", key, g.error().message);
      } else if (auto peer = connect_control(self->system(), (*g)->local_port());
                 !peer) {
        logger().warn("no direct control connection to {} (the head relays): {}", key,
                      self->system().render(peer.error()));
      } else {
        logger().info("direct control connection to the node at {}", key);
        st.gates.emplace(key, std::move(*g));
      }
    }
  }
  const auto key = std::make_pair(p.replica, p.index);
  const transport::peer_id next_peer = ss.next_peer;
  if (auto it = st.placed.find(key); it != st.placed.end()) {
    if (it->second.generation > p.generation) {
      if (next_peer != 0) st.setup.plane->disconnect(next_peer);
      return std::unexpected(fmt::format("stale placement: replica {} stage {} generation {} is older than the "
                                         "generation {} placed here already",
                                         p.replica, p.index, p.generation, it->second.generation));
    }
    logger().info("replacing stage node={} replica={} stage={} old_generation={} generation={}", st.setup.name,
                  p.replica, p.index, it->second.generation, p.generation);
    stop_placed(self, it->second);
    st.placed.erase(it);
  }
  auto stage = spawn_stage(self->system(), std::move(ss));
  if (!stage) {
    if (next_peer != 0) st.setup.plane->disconnect(next_peer);
    return std::unexpected(stage.error());
  }
  st.stages->push_back(*stage);
  st.placed[key] = {p.generation, *stage, next_peer};
  return placed_stage{*stage, int32_t(::getpid())};
}

local_node_actor::behavior_type node_behavior(node_pointer self, node_setup setup) {
  self->state.setup = std::move(setup);
  // The head lost: its stages are of no use any more (a head that comes back places them anew).
  self->set_down_handler([self](const caf::down_msg& dm) {
    if (dm.source == caf::actor_cast<caf::actor_addr>(self->state.head)) {
      logger().warn("head lost node={} reason={}", self->state.setup.name, caf::to_string(dm.reason));
      self->state.head = nullptr;
      release_stages(self, "head lost");
    }
  });
  // The stages go with the NODE (attached functors run after the state is destroyed: they must
  // not touch it).
  self->attach_functor([stages = self->state.stages] {
    for (auto& s : *stages) caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  });
  return {
    [self](place_atom, const stage_placement& p) -> caf::result<placed_stage> {
      auto placed = place(self, p);
      if (!placed) {
        logger().error("cannot place stage node={} replica={} stage={} error={}", self->state.setup.name, p.replica,
                       p.index, placed.error());
        return make_error(serve_errc::failed, placed.error());
      }
      return *placed;
    },
    [self](release_atom) { release_stages(self, "released by the head"); },
    [self](retire_atom, const chain_generations& g) { retire_stages(self, g); },
    [self](ping_atom) {
      self->state.setup.last_heartbeat_ms->store(steady_ms());
      return int32_t(::getpid());
    },
    [self](join_atom, const head_actor& head, const node_hello& hello) -> caf::result<int32_t> {
      auto rp = self->make_response_promise<int32_t>();
      self->request(head, self->state.setup.join_timeout, join_atom::value, hello,
                    caf::actor_cast<node_actor>(self))
        .then(
          [self, head, rp](int32_t head_pid) mutable {
            if (self->state.head != head) {
              if (self->state.head) self->demonitor(caf::actor_cast<caf::actor_addr>(self->state.head));
              self->state.head = head;
              self->monitor(head);
            }
            self->state.setup.last_heartbeat_ms->store(steady_ms());
            rp.deliver(head_pid);
          },
          [rp](const caf::error& e) mutable { rp.deliver(e); });
      return rp;
    },
  };
}

}  // namespace

local_node_actor spawn_node_actor(caf::actor_system& sys, node_setup setup) {
  return sys.spawn<caf::detached>(node_behavior, std::move(setup));
}

std::expected<int32_t, std::string> join_head(caf::actor_system& sys, const local_node_actor& node,
                                              const head_actor& head, const node_hello& hello,
                                              std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  std::expected<int32_t, std::string> out = std::unexpected(std::string("no answer"));
  self->request(node, timeout + std::chrono::seconds(1), join_atom::value, head, hello)
    .receive([&](int32_t head_pid) { out = head_pid; },
             [&](const caf::error& e) { out = std::unexpected(describe(e)); });
  return out;
}

// ---- HEAD ---------------------------------------------------------------------------------------

namespace {

struct head_actor_state {
  std::vector<std::string> workers;         // names allowed to join
  supervisor_actor supervisor;              // told when a node is lost
  std::map<std::string, node_state> nodes;  // joined (up or lost)
  std::map<std::string, int64_t> answered_ms;  // when each last answered a heartbeat (or joined): clock_ms
  chain_generations chains;  // each replica's current generation, as the head last built it
  static inline const char* name = "head";
};

using head_pointer = head_actor::stateful_pointer<head_actor_state>;

// The actor clock in ms (simulated in tests on CAF's deterministic coordinator).
int64_t clock_ms(head_pointer self) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(self->clock().now().time_since_epoch()).count();
}

head_actor::behavior_type head_behavior(head_pointer self, std::vector<std::string> workers) {
  self->state.workers = std::move(workers);
  self->delayed_send(self, heartbeat_interval, watchdog_atom::value);
  self->set_down_handler([self](const caf::down_msg& dm) {
    for (auto& [name, n] : self->state.nodes) {
      if (n.up && dm.source == caf::actor_cast<caf::actor_addr>(n.handle)) {
        n.up = false;
        logger().warn("node lost name={} pid={} reason={}", name, n.pid, caf::to_string(dm.reason));
        if (self->state.supervisor) self->send(self->state.supervisor, node_down_atom::value, name);
      }
    }
  });
  return {
    [self](join_atom, const node_hello& hello, const node_actor& node) -> caf::result<int32_t> {
      auto& st = self->state;
      if (std::find(st.workers.begin(), st.workers.end(), hello.name) == st.workers.end()) {
        logger().warn("refused join name={} pid={}: not a worker or spare node of the cluster file", hello.name,
                      hello.pid);
        return make_error(serve_errc::invalid_request,
                          fmt::format("node {} is not a worker or spare node of the head's cluster file", hello.name));
      }
      node_state& n = st.nodes[hello.name];
      if (n.up && n.handle && n.handle != node) {
        logger().warn("node joined again name={} old_pid={} new_pid={}", hello.name, n.pid, hello.pid);
      }
      n = node_state{hello.name, hello.pid, true, node};
      st.answered_ms[hello.name] = clock_ms(self);
      self->monitor(node);
      logger().info("node joined name={} pid={}", hello.name, hello.pid);
      // A node that joins again may still hold stages the head has replaced since (it was cut off
      // or stopped, and did not notice): it drops them now.
      if (!st.chains.current.empty()) self->send(node, retire_atom::value, st.chains);
      return int32_t(::getpid());
    },
    [self](nodes_atom) {
      std::vector<node_state> out;
      const int64_t now = clock_ms(self);
      for (auto& [name, n] : self->state.nodes) {
        out.push_back(n);
        if (auto it = self->state.answered_ms.find(name); it != self->state.answered_ms.end()) {
          out.back().last_heartbeat_ms = now - it->second;
        }
      }
      return out;
    },
    // Heartbeats: a node that does not answer within heartbeat_timeout is lost (a cut link
    // closes no connection, so no down message would come).
    [self](watchdog_atom) {
      for (auto& [name, n] : self->state.nodes) {
        if (!n.up) continue;
        self->request(n.handle, heartbeat_timeout, ping_atom::value)
          .then([self, name = name, handle = n.handle](int32_t) {
                  auto it = self->state.nodes.find(name);
                  if (it != self->state.nodes.end() && it->second.handle == handle) {
                    self->state.answered_ms[name] = clock_ms(self);
                  }
                },
                [self, name = name, handle = n.handle](const caf::error& e) {
                  auto it = self->state.nodes.find(name);
                  if (it == self->state.nodes.end() || !it->second.up || it->second.handle != handle) return;
                  it->second.up = false;
                  logger().warn("node lost name={} pid={} reason=no heartbeat answer within {} ms ({})", name,
                                it->second.pid, heartbeat_timeout.count(), describe(e));
                  if (self->state.supervisor) self->send(self->state.supervisor, node_down_atom::value, name);
                });
      }
      self->delayed_send(self, heartbeat_interval, watchdog_atom::value);
    },
    [self](subscribe_atom, supervisor_actor& sup) { self->state.supervisor = std::move(sup); },
    [self](retire_atom, int32_t replica, uint64_t generation) {
      auto& cur = self->state.chains.current;
      if (replica < 0) return;
      if (cur.size() <= size_t(replica)) cur.resize(size_t(replica) + 1, 0);
      if (generation <= cur[size_t(replica)]) return;
      cur[size_t(replica)] = generation;
      for (auto& [name, n] : self->state.nodes) {
        if (n.up) self->send(n.handle, retire_atom::value, self->state.chains);
      }
    },
  };
}

}  // namespace

head_actor spawn_head_actor(caf::actor_system& sys, std::vector<std::string> workers) {
  return sys.spawn(head_behavior, std::move(workers));
}

std::vector<node_state> query_nodes(caf::actor_system& sys, const head_actor& head) {
  caf::scoped_actor self{sys};
  std::vector<node_state> out;
  self->request(head, std::chrono::seconds(5), nodes_atom::value)
    .receive([&](std::vector<node_state>& nodes) { out = std::move(nodes); }, [](const caf::error&) {});
  return out;
}

bool ping_node(caf::actor_system& sys, const node_actor& node, std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  bool ok = false;
  self->request(node, timeout, ping_atom::value).receive([&](int32_t) { ok = true; }, [](const caf::error&) {});
  return ok;
}

std::expected<placed_stage, std::string> place_on_node(caf::actor_system& sys, const node_actor& node,
                                                       stage_placement placement, std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  std::expected<placed_stage, std::string> out = std::unexpected(std::string("no answer"));
  self->request(node, timeout, place_atom::value, std::move(placement))
    .receive([&](placed_stage& p) { out = std::move(p); },
             [&](const caf::error& e) { out = std::unexpected(describe(e)); });
  return out;
}

}  // namespace troupe::actors
