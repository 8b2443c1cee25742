// troupe node --config FILE --name NODE: one member of a multi-host cluster (docs/operations.md).
// The head (role = head) runs the ROUTER, the SCHEDULERs and the gateways, waits for the workers
// its stages need, places each stage on its node (back to front: each learns the next's handle
// and data-plane address), then serves. A worker (or spare) runs a NODE actor and joins the head,
// retrying with backoff until the head is there, and again whenever the head is lost.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/node.hpp"
#include "actors/spawn_serve.hpp"
#include "app/args.hpp"
#include "app/command.hpp"
#include "app/front_ends.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/model_weights.hpp"
#include "engine/tokenizer.hpp"
#include "transport/api_keys.hpp"
#include "transport/cluster_secret.hpp"
#include "transport/control_gate.hpp"
#include "transport/data_plane.hpp"

namespace troupe::app {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// RUN_DIR/status on the head's host, for scripts/cluster (format in docs/operations.md): rewritten
// whole (temporary file + rename) whenever a line changes, so a reader never sees half of it.
class status_file {
 public:
  explicit status_file(std::filesystem::path path) : path_(std::move(path)) {
    std::error_code ec;
    std::filesystem::create_directories(path_.parent_path(), ec);
  }
  void write(const std::string& text) {
    if (text == last_) return;
    const auto tmp = path_.string() + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << text;
      if (!out) {
        spdlog::warn("cannot write the status file {}", path_.string());
        return;
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path_, ec);
    if (ec) spdlog::warn("cannot write the status file {}: {}", path_.string(), ec.message());
    last_ = text;
  }

 private:
  std::filesystem::path path_;
  std::string last_;
};

// What the head shows about the cluster: node lines, stage lines, addresses.
struct head_view {
  const config::cluster_config& cluster;
  const config::node_section& self;
  std::string state = "starting";
  std::map<std::string, std::string> stage_state;  // "R.I" -> loading|loaded|failed|down
  std::map<std::string, int32_t> stage_pid;
  std::map<std::string, std::string> stage_node;  // "R.I" -> where it runs now (a spare after failover)
  std::string client, http, error;

  std::string render(const std::vector<actors::node_state>& joined) const {
    std::map<std::string, const actors::node_state*> by_name;
    for (const auto& n : joined) by_name[n.name] = &n;
    std::string out = fmt::format("cluster name={} state={}\n", cluster.cluster.name, state);
    for (const auto& n : cluster.nodes) {
      if (n.name == self.name) {
        out += fmt::format("node name={} host={} role=head state=up pid={}\n", n.name, n.host, ::getpid());
        continue;
      }
      auto it = by_name.find(n.name);
      const char* st = it == by_name.end() ? "waiting" : (it->second->up ? "joined" : "down");
      out += fmt::format("node name={} host={} role={} state={} pid={}\n", n.name, n.host,
                         config::node_role_name(n.role), st, it == by_name.end() ? 0 : it->second->pid);
    }
    for (int r = 0; r < cluster.replicas; ++r) {
      const auto& stages = cluster.stages_of(r);
      for (size_t s = 0; s < stages.size(); ++s) {
        const auto& sc = stages[s];
        const std::string key = fmt::format("{}.{}", r, s);
        const std::string node =
          stage_node.contains(key) ? stage_node.at(key) : (sc.node.empty() ? self.name : sc.node);
        std::string st = stage_state.contains(key) ? stage_state.at(key) : "waiting";
        if (st == "loaded" && node != self.name) {
          auto it = by_name.find(node);
          if (it == by_name.end() || !it->second->up) st = "down";
        }
        const int32_t pid = stage_pid.contains(key) ? stage_pid.at(key) : 0;
        out += fmt::format("stage {} node={} pid={} layers={}-{} state={}\n", key, node, pid, sc.first_layer,
                           sc.last_layer, st);
      }
    }
    if (!client.empty()) out += "client: " + client + "\n";
    if (!http.empty()) out += "http: " + http + "\n";
    if (!error.empty()) {
      std::string one_line = error;
      std::replace(one_line.begin(), one_line.end(), '\n', ' ');
      out += "error: " + one_line + "\n";
    }
    return out;
  }
};

int run_head(caf::actor_system& sys, config::cluster_config cluster, const config::node_section& self,
             const std::string& secret, std::shared_ptr<transport::data_plane> plane, const sigset_t& signals) {
  status_file early_status(std::filesystem::path(cluster.cluster.run_dir) / "status");
  // The model's header first: a wrong path or layer range fails now, not after the workers joined.
  if (auto probe = engine::load_model(cluster.model.path, engine::load_options{engine::layer_range{0, 1}}); !probe) {
    std::fprintf(stderr, "troupe node: %s\n", probe.error().message.c_str());
    early_status.write(fmt::format("cluster name={} state=failed\nerror: {}\n", cluster.cluster.name, probe.error().message));
    return 1;
  } else if (auto c = config::check_layers(cluster, probe->config.n_layers); !c) {
    std::fprintf(stderr, "troupe node: %s\n", c.error().message.c_str());
    early_status.write(fmt::format("cluster name={} state=failed\nerror: {}\n", cluster.cluster.name, c.error().message));
    return 1;
  }
  // The view and the status file are written from this thread and from the SUPERVISOR's (a
  // rebuild places stages): shared, under a lock, and alive as long as the SUPERVISOR may use them.
  struct head_shared {
    config::cluster_config cluster;
    config::node_section self;
    head_view view;
    status_file status;
    std::mutex mu;
    // Set before the head stops: a rebuild waiting for a node gives up at once (the SUPERVISOR's
    // thread must finish for the actor system, and so the process, to exit).
    std::atomic<bool> stopping{false};
    head_shared(config::cluster_config c, config::node_section n, std::filesystem::path status_path)
        : cluster(std::move(c)), self(std::move(n)), view{cluster, self, "starting", {}, {}, {}, {}, {}, {}},
          status(std::move(status_path)) {}
  };
  auto shared = std::make_shared<head_shared>(cluster, self, std::filesystem::path(cluster.cluster.run_dir) / "status");
  // Changes the view (under the lock) and writes the status file.
  auto publish = [shared](const std::vector<actors::node_state>& nodes, const std::function<void(head_view&)>& change) {
    std::lock_guard lock(shared->mu);
    if (change) change(shared->view);
    shared->status.write(shared->view.render(nodes));
  };
  std::vector<std::string> workers;
  for (const auto& n : cluster.nodes) {
    if (n.role != config::node_role::head) workers.push_back(n.name);
  }
  auto head = actors::spawn_head_actor(sys, workers);
  auto stop_head = [&] { caf::anon_send_exit(head, caf::exit_reason::user_shutdown); };
  // The last status, then every joined node drops its stages.
  auto write_status_and_release = [&](const std::function<void(head_view&)>& change) {
    const auto nodes = actors::query_nodes(sys, head);
    publish(nodes, change);
    for (const auto& n : nodes) {
      if (n.up) caf::anon_send(n.handle, actors::release_atom::value);
    }
  };
  auto fail = [&](const std::string& why) {
    spdlog::error("cluster start-up failed: {}", why);
    write_status_and_release([&](head_view& v) {
      v.state = "failed";
      v.error = why;
    });
    std::fprintf(stderr, "troupe node: %s\n", why.c_str());
    stop_head();
    return 1;
  };
  // CAF listens on loopback only; the gate on the node's port lets through only peers that
  // prove the cluster secret (transport/control_gate.hpp).
  auto caf_port = actors::publish_control(sys, caf::actor_cast<caf::actor>(head));
  if (!caf_port) return fail(fmt::format("cannot publish the head on 127.0.0.1: {}", sys.render(caf_port.error())));
  auto gate = transport::gate_server::start("0.0.0.0", uint16_t(self.control_port), *caf_port, transport::gate_options{secret});
  if (!gate) {
    return fail(fmt::format("{}:{}: nodes[{}].control_port: {}", cluster.source, self.line, self.name,
                            gate.error().message));
  }
  spdlog::info("head listening for nodes control_port={} data_port={}", self.control_port, self.data_port);

  // 1. Wait for the workers that run stages (spares may come later).
  std::set<std::string> needed;
  for (int r = 0; r < cluster.replicas; ++r) {
    for (const auto& sc : cluster.stages_of(r)) {
      if (!sc.node.empty() && sc.node != self.name) needed.insert(sc.node);
    }
  }
  const auto deadline = clock_type::now() + std::chrono::milliseconds(cluster.cluster.join_timeout_ms);
  for (;;) {
    const auto joined = actors::query_nodes(sys, head);
    publish(joined, {});
    std::vector<std::string> missing;
    for (const auto& name : needed) {
      auto it = std::find_if(joined.begin(), joined.end(), [&](const auto& n) { return n.name == name && n.up; });
      if (it == joined.end()) missing.push_back(name);
    }
    if (missing.empty()) break;
    if (clock_type::now() > deadline) {
      return fail(fmt::format("node(s) {} did not join within {} ms ([cluster] join_timeout_ms)",
                              fmt::join(missing, ", "), cluster.cluster.join_timeout_ms));
    }
    if (stop_signal_within(signals, 200ms)) {
      stop_head();
      return 0;
    }
  }
  spdlog::info("every node with stages joined n_nodes={}", needed.size());

  // 2. The tokenizer and the clients' keys, as `troupe serve` reads them.
  auto tok = engine::load_tokenizer(cluster.model.path, cluster.model.tokenizer);
  if (!tok) return fail(tok.error().message);
  std::shared_ptr<const engine::tokenizer> tokenizer(std::move(*tok));
  std::vector<transport::api_key> keys;
  if (!cluster.listen.api_key_file.empty()) {
    auto read = transport::read_api_key_file(cluster.listen.api_key_file);
    if (!read) return fail(read.error().message);
    keys = std::move(*read);
  }
  auto api_keys = std::make_shared<transport::api_key_set>(std::move(keys));

  // 3. Place the stages (spawn_serve goes back to front) and start the SCHEDULERs and the ROUTER.
  //    The same placer rebuilds a replica's chain for the SUPERVISOR (from its thread): a stage
  //    whose node is down (or does not answer a ping) goes to the spare node holding the fewest
  //    stages; without one, the placer waits for the node to join again, until rs.deadline.
  actors::serve_options options;
  options.this_node = self.name;
  options.plane = plane;
  const auto place_timeout = std::chrono::milliseconds(std::max(cluster.cluster.join_timeout_ms, 30'000));
  options.place_remote = [shared, publish, &sys, head, place_timeout](
                           const actors::remote_stage& rs) -> std::expected<actors::remote_placed, std::string> {
    const config::cluster_config& cl = shared->cluster;
    const std::string key = fmt::format("{}.{}", rs.replica, rs.index);
    const bool rebuild = rs.deadline != clock_type::time_point::min();
    actors::stage_placement p;
    p.replica = rs.replica;
    p.index = rs.index;
    p.model_path = cl.model.path;
    p.first_layer = rs.section->first_layer;
    p.last_layer = rs.section->last_layer;
    p.threads = rs.section->threads;
    p.block_size = cl.batching.block_size;
    p.n_blocks = cl.batching.n_blocks;
    p.link_id = rs.link_id;
    p.next = rs.next;
    p.generation = rs.generation;
    p.data_timeout_ms = std::min(cl.limits.step_timeout_ms, 30'000);
    std::string last_error;
    for (int attempt = 0;; ++attempt) {
      if (shared->stopping) return std::unexpected(std::string("the head is stopping"));
      const auto nodes = actors::query_nodes(sys, head);
      auto up = [&](const std::string& name) -> const actors::node_state* {
        auto it = std::find_if(nodes.begin(), nodes.end(), [&](const auto& n) { return n.name == name && n.up; });
        if (it == nodes.end()) return nullptr;
        // In a rebuild the heartbeats may not have noticed yet: ask the node itself.
        if (rebuild && !actors::ping_node(sys, it->handle, 300ms)) return nullptr;
        return &*it;
      };
      const config::node_section* target = rs.node;
      const actors::node_state* ns = up(target->name);
      if (ns == nullptr && rebuild) {
        // A spare instead: the one holding the fewest stages now.
        std::map<std::string, int> load;
        {
          std::lock_guard lock(shared->mu);
          for (const auto& [k, n] : shared->view.stage_node) ++load[n];
        }
        const config::node_section* best = nullptr;
        const actors::node_state* best_state = nullptr;
        for (const auto& n : cl.nodes) {
          if (n.role != config::node_role::spare) continue;
          const actors::node_state* st = up(n.name);
          if (st == nullptr) continue;
          if (best == nullptr || load[n.name] < load[best->name]) {
            best = &n;
            best_state = st;
          }
        }
        if (best != nullptr) {
          spdlog::warn("placing stage {} on spare node {} (node {} is down)", key, best->name, target->name);
          target = best;
          ns = best_state;
        }
      }
      if (ns != nullptr) {
        p.next_data_host.clear();
        p.next_data_port = 0;
        p.next_control_port = 0;
        if (rs.next_node != nullptr && rs.next_node->name != target->name) {
          p.next_data_host = rs.next_node->host;
          p.next_data_port = rs.next_node->data_port;
          if (rs.next_node->role != config::node_role::head) p.next_control_port = rs.next_node->control_port;
        }
        publish(nodes, [&](head_view& v) {
          v.stage_state[key] = "loading";
          v.stage_node[key] = target->name;
        });
        auto timeout = place_timeout;
        if (rebuild) {
          timeout = std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(rs.deadline - clock_type::now()),
                               std::chrono::milliseconds(500), std::chrono::milliseconds(5'000));
        }
        auto placed = actors::place_on_node(sys, ns->handle, p, timeout);
        publish(nodes, [&](head_view& v) {
          v.stage_state[key] = placed ? "loaded" : "failed";
          if (placed) v.stage_pid[key] = placed->pid;
        });
        if (placed) return actors::remote_placed{*placed, target};
        last_error = fmt::format("node {}: {}", target->name, placed.error());
        if (!rebuild) return std::unexpected(last_error);
      } else {
        if (!rebuild) return std::unexpected(fmt::format("node {} is not joined", rs.node->name));
        last_error = fmt::format("node {} is down and no spare node is up", rs.node->name);
        if (attempt == 0) spdlog::warn("stage {}: {}; waiting for it to join again", key, last_error);
      }
      if (clock_type::now() >= rs.deadline) {
        return std::unexpected(fmt::format("{} ([failover] recovery_timeout_ms)", last_error));
      }
      for (int i = 0; i < 10 && !shared->stopping; ++i) std::this_thread::sleep_for(20ms);
    }
  };
  options.chain_built = [head](int replica, uint64_t generation) {
    caf::anon_send(head, actors::retire_atom::value, int32_t(replica), generation);
  };
  auto node = actors::spawn_serve(sys, cluster, tokenizer, options);
  if (!node) return fail(node.error());
  if (node->supervisor) caf::anon_send(head, actors::subscribe_atom::value, node->supervisor);
  publish(actors::query_nodes(sys, head), [&](head_view& v) {
    for (size_t r = 0; r < node->locations.size(); ++r) {
      for (size_t s = 0; s < node->locations[r].size(); ++s) {
        const std::string key = fmt::format("{}.{}", r, s);
        v.stage_state[key] = "loaded";
        v.stage_pid[key] = node->locations[r][s].pid;
        if (node->locations[r][s].node.empty()) v.stage_node[key] = self.name;
      }
    }
  });

  // 4. The gateways, then serve until SIGINT/SIGTERM.
  int rc = 0;
  {
    // The ADMIN CONSOLE sees the nodes through the head; `replica add` places a new replica's
    // stages on the nodes named or on the spare nodes that are up (the placer above, as at start-up).
    admin_front_options ao{head, self.name, {}};
    ao.nodes_now = [shared, &sys, head] {
      actors::node_load out;
      out.up.push_back(shared->self.name);
      for (const auto& n : actors::query_nodes(sys, head)) {
        if (n.up) out.up.push_back(n.name);
      }
      std::lock_guard lock(shared->mu);
      for (const auto& [key, where] : shared->view.stage_node) ++out.stages[where];
      return out;
    };
    front_ends fronts(sys, *node, api_keys, std::move(ao));
    if (auto s = fronts.start(); !s) {
      publish(actors::query_nodes(sys, head), [&](head_view& v) {
        v.state = "failed";
        v.error = s.error().message;
      });
      std::fprintf(stderr, "troupe node: %s\n", s.error().message.c_str());
      rc = 1;
    } else {
      publish(actors::query_nodes(sys, head), [&](head_view& v) {
        v.state = "ready";
        v.client = fronts.client_address();
        v.http = fronts.http_url();
      });
      std::printf("troupe node %s: head ready, listening on %s (model %s, %d replica(s))\n", self.name.c_str(),
                  fronts.client_address().c_str(), cluster.model.path.c_str(), cluster.replicas);
      std::fflush(stdout);
      wait_for_stop_signal(signals, "troupe node " + self.name, 500ms,
                           [&] { publish(actors::query_nodes(sys, head), {}); });
    }
    fronts.stop();
  }
  shared->stopping = true;
  node->shutdown();
  write_status_and_release([](head_view& v) { v.state = "stopped"; });
  stop_head();
  return rc;
}

int run_worker(caf::actor_system& sys, const config::cluster_config& cluster, const config::node_section& self,
               const std::string& secret, std::shared_ptr<transport::data_plane> plane, const sigset_t& signals) {
  const config::node_section* head_node = cluster.head();
  actors::node_setup setup;
  setup.name = self.name;
  setup.plane = plane;
  setup.secret = secret;
  auto node = actors::spawn_node_actor(sys, setup);
  // Reachable by the other workers (a stage's next stage may be here): CAF on loopback, behind
  // the gate, as on the head.
  auto caf_port = actors::publish_control(sys, caf::actor_cast<caf::actor>(node));
  if (!caf_port) {
    std::fprintf(stderr, "troupe node: cannot publish the node on 127.0.0.1: %s\n", sys.render(caf_port.error()).c_str());
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    return 1;
  }
  auto own_gate = transport::gate_server::start("0.0.0.0", uint16_t(self.control_port), *caf_port,
                                                transport::gate_options{secret});
  if (!own_gate) {
    std::fprintf(stderr, "troupe node: %s:%d: nodes[%s].control_port: %s\n", cluster.source.c_str(), self.line,
                 self.name.c_str(), own_gate.error().message.c_str());
    caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
    return 1;
  }
  const actors::node_hello hello{self.name, int32_t(::getpid())};
  caf::scoped_actor watcher{sys};
  actors::head_actor head;
  std::unique_ptr<transport::gate_client> gate;  // the authenticated way to the head
  auto backoff = 250ms;
  std::string last_error;
  for (;;) {
    if (!head) {
      // Join the head: prove the secret at its gate, connect CAF (TLS) through it, then introduce
      // this node.
      std::string why;
      gate.reset();
      auto g = transport::gate_client::start(head_node->host, uint16_t(head_node->control_port),
                                             transport::gate_options{secret});
      caf::expected<actors::head_actor> h{caf::sec::cannot_connect_to_node};
      if (!g) {
        why = g.error().message;
      } else {
        gate = std::move(*g);
        auto a = actors::connect_control(sys, gate->local_port());
        if (!a) {
          why = sys.render(a.error());
        } else {
          h = caf::actor_cast<actors::head_actor>(*a);
        }
      }
      if (!why.empty()) {
        // logged below
      } else if (auto j = actors::join_head(sys, node, *h, hello, 10s); !j) {
        why = j.error();
      } else {
        head = *h;
        watcher->monitor(head);
        spdlog::info("joined the head {}:{} head_pid={}", head_node->host, head_node->control_port, *j);
        backoff = 250ms;
        last_error.clear();
      }
      if (!head) {
        if (why != last_error) {
          spdlog::warn("cannot join the head at {}:{}: {}; retrying every {} ms at most", head_node->host,
                       head_node->control_port, why, 5000);
          last_error = why;
        }
        if (stop_signal_within(signals, backoff)) break;
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, 5000ms);
        continue;
      }
    }
    // Joined: watch the head (its connection, and its heartbeats: a cut link closes nothing);
    // when it is lost, stop the stages and join again.
    bool lost = false;
    watcher->receive([&](const caf::down_msg&) { lost = true; }, caf::after(std::chrono::milliseconds(0)) >> [] {});
    const int64_t silent_ms = actors::steady_ms() - setup.last_heartbeat_ms->load();
    if (!lost && silent_ms > 3 * actors::heartbeat_timeout.count()) {
      spdlog::warn("no heartbeat from the head for {} ms", silent_ms);
      caf::anon_send(node, actors::release_atom::value);
      lost = true;
    }
    if (lost) {
      spdlog::warn("lost the head {}:{}; joining again", head_node->host, head_node->control_port);
      watcher->demonitor(caf::actor_cast<caf::actor_addr>(head));
      head = nullptr;
      continue;
    }
    if (stop_signal_within(signals, 500ms)) break;
  }
  std::fprintf(stderr, "troupe node %s: stopping\n", self.name.c_str());
  caf::anon_send_exit(node, caf::exit_reason::user_shutdown);
  return 0;
}

int run_node(int argc, char** argv) {
  arg_parser args("troupe node --config FILE --name NODE",
                  "Runs one node of a multi-host cluster (one per host; scripts/cluster starts them over SSH).\n"
                  "The node named with role = \"head\" in the cluster file serves clients: it waits for the\n"
                  "workers its stages need, places each PIPELINE STAGE on its node, and starts the ROUTER,\n"
                  "the SCHEDULERs and the gateways; it keeps RUN_DIR/status up to date. A worker joins the\n"
                  "head (retrying until the head is up) and runs the stages the head places on it; each\n"
                  "stage loads only its own layers. Nodes prove the cluster secret (TLS certificates made\n"
                  "from [cluster] secret_file; the data plane's HMAC handshake) before anything is accepted.");
  args.option("config", "FILE", "cluster file (TOML) with [cluster], [[nodes]] and [[replicas]]", "", true)
    .option("name", "NODE", "this node's name in the file's [[nodes]]", "", true);
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  spdlog::set_default_logger(spdlog::stderr_color_mt("troupe"));

  auto parsed = config::parse_cluster_file(args.str("config"));
  if (!parsed) {
    std::fprintf(stderr, "troupe: %s\n", parsed.error().message.c_str());
    return 2;
  }
  config::cluster_config cluster = std::move(*parsed);
  if (!cluster.multi_host()) {
    std::fprintf(stderr, "troupe: %s has no [[nodes]]: run it with `troupe serve --config %s`\n",
                 cluster.source.c_str(), args.str("config").c_str());
    return 2;
  }
  const std::string name = args.str("name");
  const config::node_section* self = cluster.find_node(name);
  if (self == nullptr) {
    std::vector<std::string> names;
    for (const auto& n : cluster.nodes) names.push_back(n.name);
    std::fprintf(stderr, "troupe: %s: no node named \"%s\" in [[nodes]] (nodes: %s)\n", cluster.source.c_str(),
                 name.c_str(), fmt::format("{}", fmt::join(names, ", ")).c_str());
    return 2;
  }
  if (cluster.head() == nullptr) {
    std::fprintf(stderr, "troupe: %s: no node has role = \"head\"\n", cluster.source.c_str());
    return 2;
  }
  const config::node_section me = *self;

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto secret = transport::read_cluster_secret(cluster.cluster.secret_file);
  if (!secret) return fail_with(fmt::format("{}: [cluster] secret_file: {}", cluster.source, secret.error().message));
  auto tls = transport::make_tls_identity(*secret, me.name, std::filesystem::temp_directory_path());
  if (!tls) return fail_with(tls.error().message);

  // The data plane: hidden states to and from stages on other nodes.
  transport::data_plane_options po;
  po.host = "0.0.0.0";
  po.port = uint16_t(me.data_port);
  po.secret = *secret;
  po.net_devices = me.net_devices;
  auto plane = transport::data_plane::start(po);
  if (!plane) {
    return fail_with(fmt::format("{}:{}: nodes[{}].data_port: cannot start the data plane on port {}: {}",
                                 cluster.source, me.line, me.name, me.data_port, plane.error().message));
  }
  std::shared_ptr<transport::data_plane> shared_plane(std::move(*plane));

  int rc = 0;
  {
    caf::actor_system_config cfg;
    actors::configure_node_system(cfg, *tls, cluster.cluster.control_tls);
    caf::actor_system sys{cfg};
    spdlog::info("node starting name={} role={} host={} control_port={} data_port={} pid={}", me.name,
                 config::node_role_name(me.role), me.host, me.control_port, me.data_port, ::getpid());
    rc = me.role == config::node_role::head ? run_head(sys, cluster, me, *secret, shared_plane, signals)
                                            : run_worker(sys, cluster, me, *secret, shared_plane, signals);
  }
  return rc;
}

const command_registrar reg{{"node", "run one node of a multi-host cluster (see docs/operations.md)", run_node, true}};

}  // namespace
}  // namespace troupe::app
