#include "actors/spawn_serve.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include <unistd.h>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/pipeline_stage.hpp"
#include "actors/replica.hpp"
#include "actors/router.hpp"
#include "actors/scheduler.hpp"
#include "actors/supervisor.hpp"
#include "engine/model_weights.hpp"
#include "engine/stop_rule.hpp"

namespace troupe::actors {

void configure_actor_system(caf::actor_system_config& cfg) {
  add_message_types(cfg);  // the control-plane contract (messages.hpp)
  // The forward passes run on the stages' own threads (detached actors); what is left for CAF's
  // workers is light: ROUTER (tokenize, detokenize), SCHEDULERs (plan a step), REPLICAs and a
  // relay per request. One worker does it all: a stage's reply and its tokens then wake one
  // thread, not two (CAF hands messages from outside its workers to them in turn), and nothing
  // has to be stolen. On a 2-core machine every wake-up preempts an engine thread mid-step;
  // measured with one stream on stories15M: 3.4 wake-ups per token with the stages on 3 CAF
  // workers and per-step timeouts, 1-2 now (docs/benchmarks-serve.md).
  cfg.set("scheduler.max-threads", size_t{1});
  // An idle worker polls its queue briefly, then by default sleeps 50 us between 500 more polls
  // (25 ms of timer wake-ups after every message). Go straight from the short spin to the
  // condition variable, which a message from outside the workers signals; with one worker there
  // is nobody to steal from, so the timed wake-up only needs to be rare.
  cfg.set("work-stealing.moderate-poll-attempts", size_t{0});
  cfg.set("work-stealing.relaxed-sleep-duration", caf::timespan{std::chrono::milliseconds(10)});
}

void serve_node::shutdown() {
  auto stop = [](const auto& handle) {
    if (handle) caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
  };
  stop(router);
  stop(supervisor);
  supervisor = nullptr;
  for (auto& s : schedulers) stop(s);
  for (auto& r : replicas) stop(r);
  for (auto& chain : stages) {
    for (auto& s : chain) stop(s);
  }
  router = nullptr;
  schedulers.clear();
  replicas.clear();
  stages.clear();
  locations.clear();
  planes.clear();  // stages still running keep theirs until they are gone
}

namespace {

// Builds the chains of stages of every replica: at start-up, and again when the SUPERVISOR
// rebuilds a replica that lost a stage (the same code, so a rebuilt chain is the chain the config
// describes, with a spare node in place of one that is down).
class serve_chains final : public chain_factory {
 public:
  serve_chains(caf::actor_system& sys, const config::cluster_config& cluster, serve_options options)
      : sys_(sys), cluster_(cluster), options_(std::move(options)) {}

  config::cluster_config& cluster() { return cluster_; }
  const serve_options& options() const { return options_; }
  std::vector<std::vector<std::shared_ptr<const engine::model_weights>>> weights;  // [replica][stage], local ones
  std::vector<std::vector<std::shared_ptr<transport::data_plane>>> planes;  // stage_link::data_plane
  std::vector<std::vector<transport::peer_id>> next_peers;

  bool is_local(const config::stage_section& sc) const {
    return !options_.place_remote || sc.node.empty() || sc.node == options_.this_node;
  }

  std::vector<stage_location> locations(int r) {
    std::lock_guard lock(mu_);
    return locations_.size() > size_t(r) ? locations_[size_t(r)] : std::vector<stage_location>{};
  }

  /// Replica r's stages: the config's, or those of a replica added at run time (the SUPERVISOR's
  /// thread builds chains while the ADMIN's adds plans: a copy, under the lock).
  std::vector<config::stage_section> stages_for(int r) {
    if (r < cluster_.replicas) return cluster_.stages_of(r);
    std::lock_guard lock(mu_);
    auto it = added_.find(r);
    return it == added_.end() ? std::vector<config::stage_section>{} : it->second.stages;
  }

  std::shared_ptr<const engine::model_weights> weights_of(int r, size_t s) {
    if (size_t(r) < weights.size()) return weights[size_t(r)][s];
    std::lock_guard lock(mu_);
    auto it = added_.find(r);
    return it == added_.end() || s >= it->second.weights.size() ? nullptr : it->second.weights[s];
  }

  /// Plans replica r (added at run time): replica 0's layer ranges, stage s on nodes[s] ("": the
  /// head, or this process); loads the layers of the stages that run here.
  std::expected<void, std::string> plan_replica(int r, const std::vector<std::string>& nodes) {
    if (options_.links == stage_link::data_plane) {
      return std::unexpected(std::string("replica add: not with stages linked over the data plane in one process"));
    }
    added_plan plan;
    plan.stages = cluster_.stages_of(0);
    if (nodes.size() != plan.stages.size()) {
      return std::unexpected(fmt::format("replica {}: {} node(s) for {} stage(s)", r, nodes.size(), plan.stages.size()));
    }
    plan.weights.resize(plan.stages.size());
    for (size_t s = 0; s < plan.stages.size(); ++s) {
      auto& sc = plan.stages[s];
      sc.node = nodes[s];
      sc.line = 0;  // not from the file: errors name "stages[s]"
      if (!is_local(sc)) continue;
      auto w = engine::load_model(cluster_.model.path,
                                  engine::load_options{engine::layer_range{sc.first_layer, sc.last_layer}});
      if (!w) return std::unexpected(fmt::format("replica {} stage {}: {}", r, s, w.error().message));
      plan.weights[s] = std::make_shared<const engine::model_weights>(std::move(*w));
    }
    std::lock_guard lock(mu_);
    added_[r] = std::move(plan);
    return {};
  }
  void forget_replica(int r) {
    std::lock_guard lock(mu_);
    added_.erase(r);
  }

  std::expected<built_chain, std::string> build(int r, uint64_t generation,
                                                std::chrono::steady_clock::time_point deadline) override {
    const auto& b = cluster_.batching;
    const auto stages = stages_for(r);
    const int n_stages = int(stages.size());
    if (n_stages == 0) return std::unexpected(fmt::format("no replica {}", r));
    auto node_of = [&](const config::stage_section& sc) -> const config::node_section* {
      return sc.node.empty() ? cluster_.head() : cluster_.find_node(sc.node);
    };
    built_chain out;
    out.stages.resize(size_t(n_stages));
    out.nodes.resize(size_t(n_stages));
    std::vector<stage_location> where(static_cast<size_t>(n_stages));
    auto stop_started = [&] {
      for (auto& started : out.stages) {
        if (started) caf::anon_send_exit(started, caf::exit_reason::user_shutdown);
      }
    };
    auto stage_failed = [&](int s, const std::string& why) {
      stop_started();
      const auto& sc = stages[size_t(s)];
      const std::string at =
        sc.line > 0 ? fmt::format("{}:{}: stages[{}]", cluster_.source, sc.line, s) : fmt::format("stages[{}]", s);
      const std::string on = sc.node.empty() ? std::string() : fmt::format(" on node {}", sc.node);
      return std::unexpected(fmt::format("{}: replica {} stage {} (layers [{}, {})){} cannot start: {}", at, r, s,
                                         sc.first_layer, sc.last_layer, on, why));
    };
    // Spawn the chain back to front: each stage knows the next.
    stage_actor next;
    const config::node_section* next_node = nullptr;  // where the next stage went
    for (int s = n_stages - 1; s >= 0; --s) {
      const auto& sc = stages[size_t(s)];
      // A link id unique in the cluster: part of every data-plane tag of this stage's output.
      const uint32_t link_id = uint32_t(r * 1024 + s + 1);
      if (!is_local(sc)) {
        remote_stage rs;
        rs.replica = r;
        rs.index = s;
        rs.section = &sc;
        rs.node = node_of(sc);
        rs.next = next;
        rs.next_node = next_node;
        rs.link_id = link_id;
        rs.generation = generation;
        rs.deadline = deadline;
        auto placed = options_.place_remote(rs);
        if (!placed) return stage_failed(s, placed.error());
        out.stages[size_t(s)] = placed->placed.stage;
        out.nodes[size_t(s)] = placed->node->name;
        where[size_t(s)] = stage_location{placed->node->name, placed->placed.pid, sc.first_layer, sc.last_layer};
        next = out.stages[size_t(s)];
        next_node = placed->node;
        continue;
      }
      stage_setup ss;
      ss.weights = weights_of(r, size_t(s));
      ss.block_size = b.block_size;
      ss.n_blocks = b.n_blocks;
      ss.threads = sc.threads;
      ss.next = next;
      if (options_.links == stage_link::data_plane) {
        ss.plane = planes[size_t(r)][size_t(s)];
        ss.next_peer = next_peers[size_t(r)][size_t(s)];
        ss.link_id = link_id;
      } else if (options_.place_remote) {
        ss.plane = options_.plane;  // tagged activations from a stage on another node arrive here
        ss.link_id = link_id;
        if (next_node != nullptr && next_node->name != options_.this_node) {
          // A fresh connection each build: the next node may be a process that started again.
          if (!options_.plane) return stage_failed(s, "no data plane on this node");
          auto peer = options_.plane->connect(next_node->host, uint16_t(next_node->data_port));
          if (!peer) {
            return stage_failed(s, fmt::format("data plane of node {} at {}:{}: {}", next_node->name, next_node->host,
                                               next_node->data_port, peer.error().message));
          }
          ss.next_peer = *peer;
        }
      }
      auto stage = spawn_stage(sys_, std::move(ss));
      if (!stage) return stage_failed(s, stage.error());
      out.stages[size_t(s)] = *stage;
      out.nodes[size_t(s)] = options_.place_remote ? options_.this_node : std::string();
      where[size_t(s)] = stage_location{std::string(), int32_t(::getpid()), sc.first_layer, sc.last_layer};
      next = out.stages[size_t(s)];
      next_node = options_.place_remote ? node_of(sc) : nullptr;
    }
    {
      std::lock_guard lock(mu_);
      if (locations_.size() <= size_t(r)) locations_.resize(size_t(r) + 1);
      locations_[size_t(r)] = where;
    }
    if (options_.chain_built) options_.chain_built(r, generation);
    return out;
  }

 private:
  caf::actor_system& sys_;
  config::cluster_config cluster_;
  serve_options options_;
  std::mutex mu_;
  std::vector<std::vector<stage_location>> locations_;
  struct added_plan {
    std::vector<config::stage_section> stages;
    std::vector<std::shared_ptr<const engine::model_weights>> weights;  // [stage], local ones
  };
  std::map<int, added_plan> added_;  // replicas added at run time
};

}  // namespace

scheduler_setup make_scheduler_setup(const config::cluster_config& cluster, const engine::model_config& model,
                                     const engine::stop_rule& stop, int n_stages) {
  const auto& b = cluster.batching;
  scheduler_setup sched;
  sched.policy.block_size = b.block_size;
  sched.policy.n_blocks = b.n_blocks;
  sched.policy.max_step_tokens = b.max_step_tokens;
  sched.policy.max_running = b.max_running;
  sched.policy.max_waiting = b.max_waiting;
  sched.policy.prefill_chunk = b.prefill_chunk;
  sched.policy.ctx_size = cluster.limits.ctx_size > 0 ? cluster.limits.ctx_size : model.max_seq_len;
  sched.policy.end_ids = stop.end_ids;
  sched.max_in_flight = b.micro_batches > 0 ? b.micro_batches : n_stages;
  sched.policy.micro_batches = sched.max_in_flight;
  sched.step_timeout = std::chrono::milliseconds(cluster.limits.step_timeout_ms);
  // Only a stage that is first and last can feed its samples back by itself.
  sched.max_decode_steps = n_stages == 1 ? b.decode_steps : 1;
  sched.decode_steps_budget = std::chrono::milliseconds(b.decode_steps_ms);
  return sched;
}

std::expected<serve_node, std::string> spawn_serve(caf::actor_system& sys, config::cluster_config cluster,
                                                   std::shared_ptr<const engine::tokenizer> tokenizer,
                                                   serve_options options) {
  if (!tokenizer) return std::unexpected(std::string("no tokenizer"));
  if (auto v = config::validate(cluster); !v) return std::unexpected(v.error().message);
  // The model's header: layer count for the stage ranges (maps layer 0 only).
  auto probe = engine::load_model(cluster.model.path, engine::load_options{engine::layer_range{0, 1}});
  if (!probe) return std::unexpected(probe.error().message);
  const engine::model_config model = probe->config;
  const std::string tokenizer_source = cluster.model.tokenizer.empty() ? cluster.model.path : cluster.model.tokenizer;
  if (auto fits = engine::check_tokenizer_fits(*tokenizer, model.vocab_size, tokenizer_source); !fits) {
    return std::unexpected(fits.error().message);
  }
  const engine::stop_rule stop = engine::make_stop_rule(model, *tokenizer);
  if (auto c = config::check_layers(cluster, model.n_layers); !c) return std::unexpected(c.error().message);
  for (int r = 0; r < cluster.replicas; ++r) {
    for (auto& sc : cluster.stages_of(r)) {
      if (sc.last_layer < 0) sc.last_layer = model.n_layers;
    }
  }

  const auto& b = cluster.batching;
  const int ctx = cluster.limits.ctx_size > 0 ? cluster.limits.ctx_size : model.max_seq_len;
  auto chains = std::make_shared<serve_chains>(sys, cluster, options);

  // Each local stage of each replica loads its own layers (the mapping of the file is shared); a
  // rebuilt chain uses them again.
  chains->weights.resize(size_t(cluster.replicas));
  for (int r = 0; r < cluster.replicas; ++r) {
    const auto& stages = cluster.stages_of(r);
    chains->weights[size_t(r)].resize(stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
      const auto& sc = stages[s];
      if (!chains->is_local(sc)) continue;
      auto w = engine::load_model(cluster.model.path,
                                  engine::load_options{engine::layer_range{sc.first_layer, sc.last_layer}});
      if (!w) {
        return std::unexpected(fmt::format("{}:{}: stages[{}]: {}", cluster.source, sc.line, s, w.error().message));
      }
      chains->weights[size_t(r)][s] = std::make_shared<const engine::model_weights>(std::move(*w));
    }
  }

  // Start-up is all or nothing: every stage of every replica gets its KV cache and threads here,
  // before anything is spawned that could take a request; the first that cannot fails the whole
  // node, naming itself (and what was started so far is stopped again).
  serve_node node;
  node.model = model;
  // stage_link::data_plane: a data plane per stage, as if each were its own process, each
  // connected to the next stage's (loopback, a secret made up here).
  if (options.links == stage_link::data_plane) {
    transport::data_plane_options po;
    po.host = "127.0.0.1";
    po.net_devices = "lo";
    po.secret = fmt::format("in-process {}", reinterpret_cast<uintptr_t>(chains.get()));
    chains->planes.resize(size_t(cluster.replicas));
    chains->next_peers.resize(size_t(cluster.replicas));
    for (int r = 0; r < cluster.replicas; ++r) {
      auto& planes = chains->planes[size_t(r)];
      const int n_stages = int(cluster.stages_of(r).size());
      for (int s = 0; s < n_stages; ++s) {
        auto p = transport::data_plane::start(po);
        if (!p) return std::unexpected(p.error().message);
        planes.push_back(std::shared_ptr<transport::data_plane>(std::move(*p)));
        node.planes.push_back(planes.back());
      }
      chains->next_peers[size_t(r)].assign(size_t(n_stages), 0);
      for (int s = 0; s + 1 < n_stages; ++s) {
        auto peer = planes[size_t(s)]->connect("127.0.0.1", planes[size_t(s) + 1]->port());
        if (!peer) return std::unexpected(peer.error().message);
        chains->next_peers[size_t(r)][size_t(s)] = *peer;
      }
    }
  }
  std::vector<built_chain> built;
  for (int r = 0; r < cluster.replicas; ++r) {
    auto chain = chains->build(r, 1, std::chrono::steady_clock::time_point::min());
    if (!chain) {
      for (auto& c : built) {
        for (auto& s : c.stages) caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
      }
      node.shutdown();
      return std::unexpected(chain.error());
    }
    built.push_back(*chain);
  }
  const auto& fo = cluster.failover;
  if (fo.enabled) {
    failover_setup fs;
    fs.recovery_timeout = std::chrono::milliseconds(fo.recovery_timeout_ms);
    fs.max_restarts = fo.max_restarts;
    fs.restart_window = std::chrono::milliseconds(fo.restart_window_ms);
    node.supervisor = spawn_supervisor(sys, fs, chains, built);
  }
  for (int r = 0; r < cluster.replicas; ++r) {
    const int n_stages = int(built[size_t(r)].stages.size());
    replica_setup rset;
    rset.index = r;
    rset.stages = built[size_t(r)].stages;
    rset.supervisor = node.supervisor;
    rset.hang_factor = double(fo.hang_factor);
    rset.hang_floor = std::chrono::milliseconds(fo.hang_floor_ms);
    replica_actor replica = spawn_replica(sys, std::move(rset));
    if (node.supervisor) caf::anon_send(node.supervisor, join_atom::value, int32_t(r), replica, built[size_t(r)].nodes);
    scheduler_setup sched = make_scheduler_setup(cluster, model, stop, n_stages);
    sched.replica = replica;
    node.schedulers.push_back(spawn_scheduler(sys, std::move(sched)));
    node.replicas.push_back(replica);
    node.stages.push_back(built[size_t(r)].stages);
    node.locations.push_back(chains->locations(r));
  }
  router_setup rs;
  rs.schedulers = node.schedulers;
  node.tokenizer = tokenizer;
  rs.tokenizer = std::move(tokenizer);
  rs.stop_rule = stop;
  rs.vocab_size = model.vocab_size;
  rs.ctx_size = ctx;
  rs.max_new_tokens = cluster.limits.max_new_tokens;
  node.router = spawn_router(sys, std::move(rs));
  node.start_replica = [&sys, chains, cluster, model, stop, supervisor = node.supervisor](
                         int index, const std::vector<std::string>& nodes) -> std::expected<replica_parts, std::string> {
    if (auto planned = chains->plan_replica(index, nodes); !planned) return std::unexpected(planned.error());
    auto chain = chains->build(index, 1, std::chrono::steady_clock::time_point::min());
    if (!chain) {
      chains->forget_replica(index);
      return std::unexpected(chain.error());
    }
    const auto& failover = cluster.failover;
    replica_parts parts;
    parts.stages = chain->stages;
    parts.locations = chains->locations(index);
    replica_setup rset;
    rset.index = index;
    rset.stages = chain->stages;
    rset.supervisor = supervisor;
    rset.hang_factor = double(failover.hang_factor);
    rset.hang_floor = std::chrono::milliseconds(failover.hang_floor_ms);
    parts.replica = spawn_replica(sys, std::move(rset));
    if (supervisor) caf::anon_send(supervisor, join_atom::value, int32_t(index), parts.replica, chain->nodes);
    scheduler_setup sched = make_scheduler_setup(cluster, model, stop, int(chain->stages.size()));
    sched.replica = parts.replica;
    parts.scheduler = spawn_scheduler(sys, std::move(sched));
    logger().info("replica started replica={} stages={} nodes={}", index, chain->stages.size(),
                  fmt::join(chain->nodes, ","));
    return parts;
  };
  logger().info("serving model={} layers={} replicas={} stages={} kv_blocks={} block_size={} ctx={} failover={}",
                cluster.model.path, model.n_layers, cluster.replicas, cluster.stages_of(0).size(), b.n_blocks,
                b.block_size, ctx, fo.enabled ? "on" : "off");
  node.cluster = std::move(cluster);
  return node;
}

}  // namespace troupe::actors
