#include "actors/spawn_serve.hpp"

#include <algorithm>
#include <map>

#include <unistd.h>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "actors/pipeline_stage.hpp"
#include "actors/replica.hpp"
#include "actors/router.hpp"
#include "actors/scheduler.hpp"
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
  // A stage runs here unless it is placed on another node of a multi-host cluster.
  auto is_local = [&](const config::stage_section& sc) {
    return !options.place_remote || sc.node.empty() || sc.node == options.this_node;
  };
  auto node_of = [&](const config::stage_section& sc) -> const config::node_section* {
    return sc.node.empty() ? cluster.head() : cluster.find_node(sc.node);
  };

  // Each local stage of each replica loads its own layers (the mapping of the file is shared).
  std::vector<std::vector<std::shared_ptr<const engine::model_weights>>> weights(size_t(cluster.replicas));
  for (int r = 0; r < cluster.replicas; ++r) {
    const auto& stages = cluster.stages_of(r);
    weights[size_t(r)].resize(stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
      const auto& sc = stages[s];
      if (!is_local(sc)) continue;
      auto w = engine::load_model(cluster.model.path,
                                  engine::load_options{engine::layer_range{sc.first_layer, sc.last_layer}});
      if (!w) {
        return std::unexpected(fmt::format("{}:{}: stages[{}]: {}", cluster.source, sc.line, s, w.error().message));
      }
      weights[size_t(r)][s] = std::make_shared<const engine::model_weights>(std::move(*w));
    }
  }

  // Start-up is all or nothing: every stage of every replica gets its KV cache and threads here,
  // before anything is spawned that could take a request; the first that cannot fails the whole
  // node, naming itself (and what was started so far is stopped again).
  serve_node node;
  node.model = model;
  auto stage_failed = [&](int r, int s, const std::string& why) {
    node.shutdown();
    const auto& sc = cluster.stages_of(r)[size_t(s)];
    const std::string where =
      sc.line > 0 ? fmt::format("{}:{}: stages[{}]", cluster.source, sc.line, s) : fmt::format("stages[{}]", s);
    const std::string on = sc.node.empty() ? std::string() : fmt::format(" on node {}", sc.node);
    return std::unexpected(fmt::format("{}: replica {} stage {} (layers [{}, {})){} cannot start: {}", where, r, s,
                                       sc.first_layer, sc.last_layer, on, why));
  };
  // stage_link::data_plane: a data plane per stage, as if each were its own process, each
  // connected to the next stage's (loopback, a secret made up here).
  std::vector<std::vector<std::shared_ptr<transport::data_plane>>> planes(size_t(cluster.replicas));
  std::vector<std::vector<transport::peer_id>> next_peers(size_t(cluster.replicas));
  if (options.links == stage_link::data_plane) {
    transport::data_plane_options po;
    po.host = "127.0.0.1";
    po.net_devices = "lo";
    po.secret = fmt::format("in-process {}", reinterpret_cast<uintptr_t>(&node));
    for (int r = 0; r < cluster.replicas; ++r) {
      const int n_stages = int(cluster.stages_of(r).size());
      for (int s = 0; s < n_stages; ++s) {
        auto p = transport::data_plane::start(po);
        if (!p) return std::unexpected(p.error().message);
        planes[size_t(r)].push_back(std::shared_ptr<transport::data_plane>(std::move(*p)));
        node.planes.push_back(planes[size_t(r)].back());
      }
      next_peers[size_t(r)].assign(size_t(n_stages), 0);
      for (int s = 0; s + 1 < n_stages; ++s) {
        auto peer = planes[size_t(r)][size_t(s)]->connect("127.0.0.1", planes[size_t(r)][size_t(s) + 1]->port());
        if (!peer) return std::unexpected(peer.error().message);
        next_peers[size_t(r)][size_t(s)] = *peer;
      }
    }
  }
  // Multi-host: this node's data plane, one connection per node that runs a next stage.
  std::map<std::string, transport::peer_id> peers_by_node;
  auto peer_of = [&](const config::node_section& n) -> std::expected<transport::peer_id, std::string> {
    if (auto it = peers_by_node.find(n.name); it != peers_by_node.end()) return it->second;
    if (!options.plane) return std::unexpected(std::string("no data plane on this node"));
    auto peer = options.plane->connect(n.host, uint16_t(n.data_port));
    if (!peer) {
      return std::unexpected(fmt::format("data plane of node {} at {}:{}: {}", n.name, n.host, n.data_port,
                                         peer.error().message));
    }
    peers_by_node[n.name] = *peer;
    return *peer;
  };
  for (int r = 0; r < cluster.replicas; ++r) {
    const auto& stages = cluster.stages_of(r);
    const int n_stages = int(stages.size());
    // Spawn the chain back to front: each stage knows the next.
    std::vector<stage_actor> chain(static_cast<size_t>(n_stages));
    std::vector<stage_location> where(static_cast<size_t>(n_stages));
    stage_actor next;
    for (int s = n_stages - 1; s >= 0; --s) {
      const auto& sc = stages[size_t(s)];
      const config::stage_section* next_sc = s + 1 < n_stages ? &stages[size_t(s) + 1] : nullptr;
      // A link id unique in the cluster: part of every data-plane tag of this stage's output.
      const uint32_t link_id = uint32_t(r * 1024 + s + 1);
      where[size_t(s)] = stage_location{is_local(sc) ? std::string() : sc.node, 0, sc.first_layer, sc.last_layer};
      if (!is_local(sc)) {
        remote_stage rs;
        rs.replica = r;
        rs.index = s;
        rs.section = &sc;
        rs.node = node_of(sc);
        rs.next = next;
        rs.next_node = next_sc != nullptr ? node_of(*next_sc) : nullptr;
        rs.link_id = link_id;
        auto placed = options.place_remote(rs);
        if (!placed) return stage_failed(r, s, placed.error());
        chain[size_t(s)] = placed->stage;
        where[size_t(s)].pid = placed->pid;
        next = chain[size_t(s)];
        continue;
      }
      stage_setup ss;
      ss.weights = weights[size_t(r)][size_t(s)];
      ss.block_size = b.block_size;
      ss.n_blocks = b.n_blocks;
      ss.threads = sc.threads;
      ss.next = next;
      if (options.links == stage_link::data_plane) {
        ss.plane = planes[size_t(r)][size_t(s)];
        ss.next_peer = next_peers[size_t(r)][size_t(s)];
        ss.link_id = link_id;
      } else if (options.place_remote) {
        ss.plane = options.plane;  // tagged activations from a stage on another node arrive here
        ss.link_id = link_id;
        if (next_sc != nullptr && !is_local(*next_sc)) {
          auto peer = peer_of(*node_of(*next_sc));
          if (!peer) return stage_failed(r, s, peer.error());
          ss.next_peer = *peer;
        }
      }
      auto stage = spawn_stage(sys, std::move(ss));
      if (!stage) {
        for (auto& started : chain) {
          if (started) caf::anon_send_exit(started, caf::exit_reason::user_shutdown);
        }
        return stage_failed(r, s, stage.error());
      }
      chain[size_t(s)] = *stage;
      where[size_t(s)].pid = int32_t(::getpid());
      next = chain[size_t(s)];
    }
    replica_actor replica = spawn_replica(sys, chain);
    scheduler_setup sched = make_scheduler_setup(cluster, model, stop, n_stages);
    sched.replica = replica;
    node.schedulers.push_back(spawn_scheduler(sys, std::move(sched)));
    node.replicas.push_back(replica);
    node.stages.push_back(std::move(chain));
    node.locations.push_back(std::move(where));
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
  logger().info("serving model={} layers={} replicas={} stages={} kv_blocks={} block_size={} ctx={}",
                cluster.model.path, model.n_layers, cluster.replicas, cluster.stages_of(0).size(), b.n_blocks,
                b.block_size, ctx);
  node.cluster = std::move(cluster);
  return node;
}

}  // namespace troupe::actors
