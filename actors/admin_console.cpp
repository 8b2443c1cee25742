#include "actors/admin_console.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <set>

#include <unistd.h>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "actors/admin_commands.hpp"
#include "actors/logger.hpp"
#include "transport/logger.hpp"

namespace troupe::actors {
namespace {

using namespace std::chrono_literals;

int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// The audit log: one line per admin command (who, what, outcome); the time is spdlog's.
spdlog::logger& audit_log() {
  static const std::shared_ptr<spdlog::logger> log = transport::named_logger("audit");
  return *log;
}

struct admin_state {
  admin_setup setup;
  router_admin_actor router;
  router_actor front;  // the same ROUTER: stats and cancel
  std::vector<replica_parts> parts;  // by index; a removed replica's are empty
  std::shared_ptr<std::vector<replica_parts>> added = std::make_shared<std::vector<replica_parts>>();
  std::set<int32_t> removing;
  struct rollout {
    rollout_plan plan;
    int64_t next_ms = 0;
    double last_set = 0;
  };
  std::map<int32_t, rollout> rollouts;
  std::deque<admin_event> events;  // the ADMIN's own (the ROUTER keeps its rollbacks)
  std::deque<audit_entry> audit;
  std::deque<replica_sample> history;
  int64_t last_sample_ms = 0;
  int64_t started_ms = unix_ms();
  std::vector<replica_health> last_health;  // the SUPERVISOR's last answer (it is silent while it rebuilds)
  bool adding = false;
  static inline const char* name = "admin";
};

using admin_pointer = admin_actor::stateful_pointer<admin_state>;

void add_event(admin_state& st, std::string kind, int32_t replica, std::string message) {
  logger().info("{} replica={} {}", kind, replica, message);
  st.events.push_back(admin_event{unix_ms(), std::move(kind), replica, std::move(message)});
  while (st.events.size() > 64) st.events.pop_front();
}

void audit(admin_state& st, const admin_caller& c, const std::string& command, const std::string& outcome);

// A command refused after its token was accepted: logged with the reason, then returned.
caf::error refuse(admin_state& st, const admin_caller& c, const std::string& command, admin_errc code,
                  std::string why) {
  audit(st, c, command, fmt::format("{}: {}", admin_errc_name(code), why));
  return make_error(code, std::move(why));
}

void audit(admin_state& st, const admin_caller& c, const std::string& command, const std::string& outcome) {
  if (outcome == "ok") {
    audit_log().info("admin command who=\"{}\" command=\"{}\" outcome=ok", c.who, command);
  } else {
    audit_log().warn("admin command who=\"{}\" command=\"{}\" outcome=\"{}\"", c.who, command, outcome);
  }
  st.audit.push_back(audit_entry{unix_ms(), c.who, command, outcome});
  while (st.audit.size() > 256) st.audit.pop_front();
}

// The token check every command starts with (constant time in the token's length); audit-logged
// either way. Returns the refusal, or none.
caf::error authorize(admin_pointer self, const admin_caller& c, const std::string& command) {
  auto& st = self->state;
  const std::string& want = st.setup.token;
  if (admin_token_matches(want, c.token)) {
    audit(st, c, command, "ok");  // accepted (a refusal after this is logged again, with its reason)
    return {};
  }
  const std::string why = want.empty() ? "no admin token is configured on this server (--admin-token-file, "
                                         "or [admin] token_file in the cluster file)"
                          : c.token.empty() ? "an admin token is required"
                                            : "wrong admin token";
  audit(st, c, command, "refused: " + why);
  return make_error(admin_errc::unauthorized, why);
}

bool valid_replica(const admin_state& st, int32_t r) {
  return r >= 0 && size_t(r) < st.parts.size() && st.parts[size_t(r)].scheduler;
}

void stop_parts(const replica_parts& p) {
  auto stop = [](const auto& h) {
    if (h) caf::anon_send_exit(h, caf::exit_reason::user_shutdown);
  };
  stop(p.scheduler);
  stop(p.replica);
  for (const auto& s : p.stages) stop(s);
}

// nodes: this process in `troupe serve`; the head's view of its workers on a multi-host head.
std::vector<node_status> static_nodes(const admin_state& st) {
  std::vector<node_status> out;
  const auto& c = st.setup.cluster;
  if (!c.multi_host()) {
    const std::string address = c.listen.port != 0 ? fmt::format("{}:{}", c.listen.host, c.listen.port) : c.listen.host;
    out.push_back(node_status{"local", address, "local", true,
                              int32_t(::getpid()), 0});
    return out;
  }
  for (const auto& n : c.nodes) {
    node_status s{n.name, fmt::format("{}:{}", n.host, n.control_port), config::node_role_name(n.role), false, 0, -1};
    if (n.role == config::node_role::head) {
      s.up = true;
      s.pid = int32_t(::getpid());
      s.last_heartbeat_ms = 0;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<stage_status> stages_of(const admin_state& st) {
  std::vector<stage_status> out;
  for (size_t r = 0; r < st.parts.size(); ++r) {
    const auto& p = st.parts[r];
    for (size_t s = 0; s < p.locations.size(); ++s) {
      const auto& l = p.locations[s];
      out.push_back(stage_status{int32_t(r), int32_t(s), l.node.empty() ? st.setup.this_node : l.node, l.pid,
                                 l.first_layer, l.last_layer, -1, 0});
    }
  }
  return out;
}

using status_done = std::function<void(caf::expected<cluster_status>)>;
using status_ptr = std::shared_ptr<cluster_status>;

replica_status* replica_in(cluster_status& out, int32_t r) {
  for (auto& rs : out.replicas) {
    if (rs.route.index == r) return &rs;
  }
  return nullptr;
}

// A REPLICA's own report: the state of its chain and what its stages measured.
void apply_report(cluster_status& out, int32_t r, const replica_report& rep) {
  if (auto* rs = replica_in(out, r)) {
    rs->health = rep.state;
    rs->reason = rep.reason;
  }
  for (auto& s : out.stages) {
    if (s.replica != r || s.index < 0) continue;
    if (size_t(s.index) < rep.stage_step_ms.size()) s.step_ms = rep.stage_step_ms[size_t(s.index)];
  }
}

// The SUPERVISOR's view: restart counts, a replica it gave up on and why, where stages run now.
void apply_health(cluster_status& out, const std::vector<replica_health>& health, const std::string& this_node) {
  for (const auto& h : health) {
    if (auto* rs = replica_in(out, h.replica); rs != nullptr && rs->health != "stopped") {
      rs->restarts = h.restarts;
      if (h.state == "failed" || rs->health == "unknown" || (h.state == "recovering" && rs->health == "running")) {
        rs->health = h.state;
        rs->reason = h.last_reason;
      } else if (rs->reason.empty()) {
        rs->reason = h.last_reason;
      }
    }
    for (auto& s : out.stages) {
      if (s.replica != h.replica) continue;
      // Every rebuild starts the whole chain anew: each stage of the replica restarted as often.
      s.restarts = h.restarts;
      if (s.index >= 0 && size_t(s.index) < h.nodes.size()) {
        const std::string node = h.nodes[size_t(s.index)].empty() ? this_node : h.nodes[size_t(s.index)];
        if (node != s.node) {
          s.node = node;
          s.pid = node == this_node ? int32_t(::getpid()) : 0;  // a worker's: from the head's nodes below
        }
      }
    }
  }
}

// Asks every running REPLICA for its report (2 s each; one that does not answer keeps its
// defaults), then `next`.
void add_replica_reports(admin_pointer self, status_ptr out, std::function<void()> next) {
  std::vector<std::pair<int32_t, replica_actor>> asked;
  for (size_t r = 0; r < self->state.parts.size(); ++r) {
    if (self->state.parts[r].replica) asked.emplace_back(int32_t(r), self->state.parts[r].replica);
  }
  if (asked.empty()) return next();
  auto left = std::make_shared<size_t>(asked.size());
  auto one_done = [left, next] {
    if (--*left == 0) next();
  };
  for (const auto& [r, handle] : asked) {
    self->request(handle, 2s, stats_atom::value)
      .then(
        [out, index = r, one_done](replica_report& rep) {
          apply_report(*out, index, rep);
          one_done();
        },
        [one_done](caf::error&) { one_done(); });
  }
}

// The SUPERVISOR's health (1 s: it does not answer while it rebuilds a chain; then the last
// answer it gave stands in), then `next`.
void add_health(admin_pointer self, status_ptr out, std::function<void()> next) {
  if (!self->state.setup.supervisor) return next();
  self->request(caf::actor_cast<supervisor_actor>(self->state.setup.supervisor), 1s, stats_atom::value)
    .then(
      [self, out, next](std::vector<replica_health>& health) {
        self->state.last_health = std::move(health);
        apply_health(*out, self->state.last_health, self->state.setup.this_node);
        next();
      },
      [self, out, next](caf::error&) {
        apply_health(*out, self->state.last_health, self->state.setup.this_node);
        next();
      });
}

// A multi-host head: which workers joined and are still up, and when each last answered the
// head's heartbeat; then `done`.
void add_nodes(admin_pointer self, status_ptr out, status_done done) {
  if (!self->state.setup.head) return done(std::move(*out));
  self->request(self->state.setup.head, 5s, nodes_atom::value)
    .then(
      [out, done](std::vector<node_state>& joined) {
        for (auto& n : out->nodes) {
          for (const auto& j : joined) {
            if (j.name != n.name) continue;
            n.up = j.up;
            n.pid = j.pid;
            n.last_heartbeat_ms = j.last_heartbeat_ms;
          }
        }
        for (auto& s : out->stages) {
          for (const auto& j : joined) {
            if (j.name == s.node) s.pid = j.pid;
          }
        }
        done(std::move(*out));
      },
      [out, done](caf::error&) { done(std::move(*out)); });
}

// Gathers status: the ROUTER's routes, the SCHEDULERs' counters, the events, the REPLICAs' own
// reports (state, stage step times), the SUPERVISOR's restarts, the nodes.
void collect_status(admin_pointer self, status_options o, status_done done) {
  auto& st0 = self->state;
  auto out = std::make_shared<cluster_status>();
  out->model = st0.setup.cluster.model.path;
  out->unix_ms = unix_ms();
  out->uptime_ms = out->unix_ms - st0.started_ms;
  out->nodes = static_nodes(st0);
  out->stages = stages_of(st0);
  const auto timeout = 5s;
  auto fail = [done](caf::error& e) { done(std::move(e)); };
  self->request(st0.router, timeout, status_atom::value).then([self, out, o, done, fail, timeout](std::vector<replica_route>& routes) {
    auto& st = self->state;
    for (auto& r : routes) {
      replica_status rs;
      rs.route = std::move(r);
      if (st.removing.contains(rs.route.index) && rs.route.state != "removed") rs.route.state = "removing";
      rs.health = rs.route.state == "removed" ? "stopped" : "unknown";  // until its REPLICA reports
      out->replicas.push_back(std::move(rs));
    }
    self->request(st.front, timeout, stats_atom::value).then([self, out, o, done, fail, timeout](std::vector<scheduler_stats>& stats) {
      for (size_t i = 0; i < stats.size() && i < out->replicas.size(); ++i) {
        auto& rs = out->replicas[i];
        rs.n_waiting = stats[i].n_waiting;
        rs.n_running = stats[i].n_running;
        rs.kv_blocks_free = stats[i].n_free_blocks;
        rs.kv_blocks_used = stats[i].n_blocks - stats[i].n_free_blocks;
        if (stats[i].step_ns > 0) rs.step_ms = double(stats[i].step_ns) / 1e6;
      }
      self->request(self->state.router, timeout, events_atom::value).then([self, out, o, done, fail, timeout](std::vector<admin_event>& ev) {
        auto& st2 = self->state;
        out->events.assign(st2.events.begin(), st2.events.end());
        out->events.insert(out->events.end(), ev.begin(), ev.end());
        std::stable_sort(out->events.begin(), out->events.end(),
                         [](const admin_event& a, const admin_event& b) { return a.unix_ms < b.unix_ms; });
        if (out->events.size() > 64) out->events.erase(out->events.begin(), out->events.end() - 64);
        if (o.history) out->history.assign(st2.history.begin(), st2.history.end());
        self->request(st2.router, timeout, rollback_atom::value, rollback_policy{-1, -1, -1})
          .then([self, out, done](rollback_policy p) {
            out->rollback = p;
            add_replica_reports(self, out, [self, out, done] {
              add_health(self, out, [self, out, done] { add_nodes(self, out, done); });
            });
          }, fail);
      }, fail);
    }, fail);
  }, fail);
}

std::string config_json(const admin_state& st) {
  const auto& c = st.setup.cluster;
  nlohmann::json j;
  j["source"] = c.source;
  j["model"] = {{"path", c.model.path}, {"tokenizer", c.model.tokenizer}};
  j["replicas"] = c.replicas;
  j["listen"] = {{"host", c.listen.host}, {"port", c.listen.port}, {"api_key_file", c.listen.api_key_file}};
  j["http"] = {{"enabled", c.http.enabled}, {"host", c.http.host}, {"port", c.http.port},
               {"tls", !c.http.tls_cert.empty()}};
  const auto& b = c.batching;
  j["batching"] = {{"block_size", b.block_size},         {"n_blocks", b.n_blocks},
                   {"max_step_tokens", b.max_step_tokens}, {"max_running", b.max_running},
                   {"max_waiting", b.max_waiting},       {"prefill_chunk", b.prefill_chunk},
                   {"micro_batches", b.micro_batches},   {"decode_steps", b.decode_steps},
                   {"decode_steps_ms", b.decode_steps_ms}};
  j["limits"] = {{"max_new_tokens", c.limits.max_new_tokens},
                 {"step_timeout_ms", c.limits.step_timeout_ms},
                 {"ctx_size", c.limits.ctx_size}};
  j["admin"] = {{"token_file", c.admin.token_file},
                {"rollback_failures", c.admin.rollback_failures},
                {"rollback_ttft_p99_ms", c.admin.rollback_ttft_p99_ms}};
  nlohmann::json stages = nlohmann::json::array();
  for (int r = 0; r < c.replicas; ++r) {
    for (const auto& s : c.stages_of(r)) {
      stages.push_back({{"replica", r}, {"first_layer", s.first_layer}, {"last_layer", s.last_layer},
                        {"threads", s.threads}, {"node", s.node}});
    }
  }
  j["stages"] = std::move(stages);
  nlohmann::json nodes = nlohmann::json::array();
  for (const auto& n : c.nodes) {
    nodes.push_back({{"name", n.name}, {"host", n.host}, {"role", config::node_role_name(n.role)},
                     {"control_port", n.control_port}, {"data_port", n.data_port}});
  }
  j["nodes"] = std::move(nodes);
  return j.dump(2);
}

// The periodic work: history samples, rollout steps, removals that are idle now.
void on_tick(admin_pointer self) {
  self->request(self->state.router, 5s, status_atom::value).then([self](std::vector<replica_route>& routes) {
    auto& st = self->state;
    const int64_t now = unix_ms();
    if (now - st.last_sample_ms >= st.setup.history_period.count()) {
      st.last_sample_ms = now;
      for (const auto& r : routes) {
        if (r.state == "removed") continue;
        st.history.push_back(replica_sample{now, r.index, r.tok_per_s, r.ttft_p99_ms, r.itl_p99_ms, r.in_flight});
      }
      const size_t cap = st.setup.history_points * std::max<size_t>(1, routes.size());
      while (st.history.size() > cap) st.history.pop_front();
    }
    for (const auto& r : routes) {
      // A removal: once the replica is idle, the ROUTER forgets it and its actors stop.
      if (st.removing.contains(r.index) && r.state == "idle") {
        const int32_t idx = r.index;
        self->request(st.router, 5s, remove_replica_atom::value, idx).then(
          [self, idx](replica_route&) {
            auto& s = self->state;
            if (!s.removing.erase(idx)) return;
            stop_parts(s.parts[size_t(idx)]);
            s.parts[size_t(idx)] = replica_parts{};
            add_event(s, "replica_removed", idx, "drained and stopped");
          },
          [self, idx](caf::error& e) { logger().warn("removing replica={} not yet: {}", idx, describe(e)); });
      }
      // A rollout: the next step, unless the replica was rolled back meanwhile.
      auto ro = st.rollouts.find(r.index);
      if (ro == st.rollouts.end() || now < ro->second.next_ms) continue;
      auto& plan = ro->second;
      if (r.weight + 1e-9 < plan.last_set || r.state == "removed") {
        add_event(st, "rollout", r.index, fmt::format("rollout stopped at weight {:.3g}: the replica was rolled back",
                                                      plan.last_set));
        st.rollouts.erase(ro);
        continue;
      }
      const double next = std::min(plan.plan.target, plan.last_set + plan.plan.step);
      plan.last_set = next;
      plan.next_ms = now + plan.plan.interval_ms;
      caf::anon_send(st.router, weight_atom::value, r.index, next);  // the reply (its route) is not needed
      add_event(st, "rollout", r.index, fmt::format("weight {:.3g} (target {:.3g})", next, plan.plan.target));
      if (next >= plan.plan.target) {
        add_event(st, "rollout", r.index, "rollout complete");
        st.rollouts.erase(r.index);
      }
    }
  }, [](caf::error&) {});
  self->delayed_send(self, self->state.setup.tick, tick_atom::value);
}

admin_actor::behavior_type admin_behavior(admin_pointer self, admin_setup setup) {
  auto& init = self->state;
  init.setup = std::move(setup);
  init.router = caf::actor_cast<router_admin_actor>(init.setup.router);
  init.front = init.setup.router;
  init.parts = init.setup.replicas;
  // The replicas the ADMIN started stop with it (spawn_serve's stop with the serve_node).
  self->attach_functor([added = init.added] {
    for (const auto& p : *added) stop_parts(p);
  });
  caf::anon_send(init.router, rollback_atom::value, init.setup.rollback);
  self->send(self, tick_atom::value);
  return {
    // Status.
    [self](status_atom, admin_caller& c, status_options o) -> caf::result<cluster_status> {
      if (auto e = authorize(self, c, "status")) return e;
      auto rp = self->make_response_promise<cluster_status>();
      collect_status(self, o, [rp](caf::expected<cluster_status> s) mutable {
        if (s) {
          rp.deliver(std::move(*s));
        } else {
          rp.deliver(s.error());
        }
      });
      return rp;
    },
    // Requests in flight.
    [self](requests_atom, admin_caller& c) -> caf::result<std::vector<request_info>> {
      if (auto e = authorize(self, c, "requests")) return e;
      return self->delegate(self->state.router, requests_atom::value);
    },
    // Cancel one.
    [self](cancel_atom, admin_caller& c, request_id id) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("cancel {}", id.value))) return e;
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.router, 5s, requests_atom::value).then(
        [self, rp, id](std::vector<request_info>& in_flight) mutable {
          const bool known = std::any_of(in_flight.begin(), in_flight.end(), [&](const auto& r) { return r.id == id; });
          if (!known) {
            rp.deliver(make_error(admin_errc::bad_argument, fmt::format("no request {} in flight", id.value)));
            return;
          }
          self->send(self->state.front, cancel_atom::value, id);
          rp.deliver(fmt::format("request {} cancelled", id.value));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Drain.
    [self](drain_atom, admin_caller& c, int32_t r) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("drain {}", r))) return e;
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.router, 5s, drain_atom::value, r, true).then(
        [self, rp, r](replica_route& route) mutable {
          add_event(self->state, "drain", r, fmt::format("draining ({} in flight)", route.in_flight));
          rp.deliver(route.in_flight > 0
                       ? fmt::format("replica {} draining: {} request(s) in flight finish, then it is idle", r,
                                     route.in_flight)
                       : fmt::format("replica {} drained: idle", r));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Undrain.
    [self](undrain_atom, admin_caller& c, int32_t r) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("undrain {}", r))) return e;
      if (self->state.removing.contains(r)) {
        return refuse(self->state, c, "undrain", admin_errc::refused, fmt::format("replica {} is being removed", r));
      }
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.router, 5s, drain_atom::value, r, false).then(
        [self, rp, r](replica_route& route) mutable {
          add_event(self->state, "undrain", r, "takes new requests again");
          rp.deliver(fmt::format("replica {} {} (weight {:.3g})", r, route.state, route.weight));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Weight.
    [self](weight_atom, admin_caller& c, int32_t r, double w) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("weight {} {}", r, w))) return e;
      self->state.rollouts.erase(r);  // an explicit weight ends a rollout
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.router, 5s, weight_atom::value, r, w).then(
        [self, rp, r](replica_route& route) mutable {
          add_event(self->state, "weight", r, fmt::format("weight {:.3g}", route.weight));
          rp.deliver(fmt::format("replica {} weight {:.3g} ({})", r, route.weight, route.state));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Rollout.
    [self](rollout_atom, admin_caller& c, rollout_plan& p) -> caf::result<std::string> {
      if (auto e = authorize(self, c,
                             fmt::format("rollout {} to={} step={} every={}ms", p.replica, p.target, p.step, p.interval_ms))) {
        return e;
      }
      auto& st = self->state;
      if (!valid_replica(st, p.replica)) {
        return refuse(st, c, "rollout", admin_errc::bad_argument, fmt::format("no replica {}", p.replica));
      }
      if (!(p.step > 0) || !(p.target > 0) || p.interval_ms < 10) {
        return refuse(st, c, "rollout", admin_errc::bad_argument, "rollout needs to > 0, step > 0 and every >= 10 ms");
      }
      auto rp = self->make_response_promise<std::string>();
      self->request(st.router, 5s, status_atom::value).then(
        [self, rp, p](std::vector<replica_route>& routes) mutable {
          auto& s = self->state;
          const double from = size_t(p.replica) < routes.size() ? routes[size_t(p.replica)].weight : 0.0;
          s.rollouts[p.replica] = admin_state::rollout{p, unix_ms() + p.interval_ms, from};  // first step after one interval
          add_event(s, "rollout", p.replica,
                    fmt::format("rollout from {:.3g} to {:.3g}, +{:.3g} every {} ms", from, p.target, p.step, p.interval_ms));
          rp.deliver(fmt::format("replica {} rollout: weight {:.3g} -> {:.3g}, +{:.3g} every {} s (a rollback stops it)",
                                 p.replica, from, p.target, p.step, p.interval_ms / 1000.0));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Manual rollback.
    [self](rollback_atom, admin_caller& c, int32_t r) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("rollback {}", r))) return e;
      self->state.rollouts.erase(r);
      auto rp = self->make_response_promise<std::string>();
      self->request(self->state.router, 5s, weight_atom::value, r, 0.0).then(
        [self, rp, r](replica_route&) mutable {
          add_event(self->state, "rollback", r, "rolled back to weight 0 by an operator");
          rp.deliver(fmt::format("replica {} rolled back: weight 0", r));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Replica add.
    [self](add_replica_atom, admin_caller& c, replica_add_plan& plan) -> caf::result<std::string> {
      const double w = plan.weight;
      if (auto e = authorize(self, c,
                             plan.nodes.empty()
                               ? fmt::format("replica add weight={}", w)
                               : fmt::format("replica add weight={} nodes={}", w, fmt::join(plan.nodes, ",")))) {
        return e;
      }
      auto& st = self->state;
      if (!st.setup.make_replica) {
        return refuse(st, c, "replica add", admin_errc::not_supported, "this server starts no replicas at run time");
      }
      if (st.adding) return refuse(st, c, "replica add", admin_errc::refused, "a replica is being added already");
      if (!(w >= 0)) return refuse(st, c, "replica add", admin_errc::bad_argument, "a weight is a number >= 0");
      st.adding = true;
      const int index = int(st.parts.size());
      auto built = std::make_shared<std::expected<replica_parts, std::string>>(std::unexpected(std::string("not built")));
      // Loading weights blocks: a detached actor does it, not the ADMIN's CAF worker.
      auto worker = self->spawn<caf::detached>([make = st.setup.make_replica, index, nodes = plan.nodes,
                                                built](caf::event_based_actor* worker_self) -> caf::behavior {
        return {[=](add_replica_atom) {
          *built = make(index, nodes);
          worker_self->quit();
          return true;
        }};
      });
      auto rp = self->make_response_promise<std::string>();
      auto fail = [self, rp, c](std::string why) mutable {
        self->state.adding = false;
        audit(self->state, c, "replica add", "failed: " + why);
        rp.deliver(make_error(admin_errc::failed, std::move(why)));
      };
      self->request(worker, caf::infinite, add_replica_atom::value).then(
        [self, built, w, fail, rp](bool) mutable {
          if (!*built) {
            fail(built->error());
            return;
          }
          auto parts = std::move(**built);
          self->request(self->state.router, 5s, add_replica_atom::value, parts.scheduler, w).then(
            [self, parts, w, rp](int32_t idx) mutable {
              auto& s = self->state;
              s.adding = false;
              if (s.parts.size() <= size_t(idx)) s.parts.resize(size_t(idx) + 1);
              s.parts[size_t(idx)] = parts;
              s.added->push_back(parts);
              std::vector<std::string> where;
              for (const auto& l : parts.locations) where.push_back(l.node.empty() ? s.setup.this_node : l.node);
              add_event(s, "replica_added", idx,
                        fmt::format("{} stage(s) on {}, weight {:.3g}", parts.stages.size(), fmt::join(where, ","), w));
              rp.deliver(fmt::format("replica {} added ({} stage(s) on {}, weight {:.3g})", idx, parts.stages.size(),
                                     fmt::join(where, ","), w));
            },
            [parts, fail](caf::error& e) mutable {
              stop_parts(parts);
              fail(describe(e));
            });
        },
        [fail](caf::error& e) mutable { fail(describe(e)); });
      return rp;
    },
    // Replica remove.
    [self](remove_replica_atom, admin_caller& c, int32_t r) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("replica remove {}", r))) return e;
      auto& st = self->state;
      const std::string what = fmt::format("replica remove {}", r);
      if (!valid_replica(st, r)) return refuse(st, c, what, admin_errc::bad_argument, fmt::format("no replica {}", r));
      if (st.removing.contains(r)) {
        return refuse(st, c, what, admin_errc::refused, fmt::format("replica {} is being removed already", r));
      }
      const auto alive = std::count_if(st.parts.begin(), st.parts.end(), [](const auto& p) { return bool(p.scheduler); });
      if (alive - int64_t(st.removing.size()) <= 1) {
        return refuse(st, c, what, admin_errc::refused, "cannot remove the last replica");
      }
      st.rollouts.erase(r);
      auto rp = self->make_response_promise<std::string>();
      self->request(st.router, 5s, drain_atom::value, r, true).then(
        [self, rp, r](replica_route& route) mutable {
          self->state.removing.insert(r);
          add_event(self->state, "replica_removing", r, fmt::format("draining ({} in flight), stops once idle", route.in_flight));
          rp.deliver(fmt::format("replica {} removing: draining {} request(s), stopped once idle", r, route.in_flight));
        },
        [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
      return rp;
    },
    // Restart a stage: the SUPERVISOR's path.
    [self](restart_atom, admin_caller& c, int32_t r, int32_t s) -> caf::result<std::string> {
      if (auto e = authorize(self, c, fmt::format("restart {}.{}", r, s))) return e;
      auto& st = self->state;
      const std::string what = fmt::format("restart {}.{}", r, s);
      if (!valid_replica(st, r) || s < 0 || size_t(s) >= st.parts[size_t(r)].stages.size()) {
        return refuse(st, c, what, admin_errc::bad_argument, fmt::format("no stage {}.{}", r, s));
      }
      if (!st.setup.supervisor || !st.parts[size_t(r)].replica) {
        return refuse(st, c, what, admin_errc::not_supported,
                      "this replica has no SUPERVISOR ([failover] enabled = false); "
                      "`replica add` then `replica remove` replaces a whole replica without failing requests");
      }
      // The SUPERVISOR's path, as for a lost stage: the replica rebuilds its chain (stage S again,
      // on its node or a spare) and its SCHEDULER replays its sequences; clients see a pause.
      self->send(st.parts[size_t(r)].replica, lost_atom::value,
                 fmt::format("operator restart of stage {} ({})", s, c.who));
      return fmt::format("replica {} is rebuilding its chain (stage {} restarted); its sequences replay", r, s);
    },
    // Log level: "LEVEL" for every logger, or "LOGGER=LEVEL".
    [self](log_level_atom, admin_caller& c, std::string& spec) -> caf::result<std::string> {
      if (auto e = authorize(self, c, "log-level " + spec)) return e;
      std::string name;
      std::string level = spec;
      if (auto eq = spec.find('='); eq != std::string::npos) {
        name = spec.substr(0, eq);
        level = spec.substr(eq + 1);
      }
      static const std::vector<std::string> levels{"trace", "debug", "info", "warn", "error", "critical", "off"};
      if (std::find(levels.begin(), levels.end(), level) == levels.end()) {
        return refuse(self->state, c, "log-level " + spec, admin_errc::bad_argument, "a level is one of trace, debug, info, warn, error, critical, off");
      }
      const auto lv = spdlog::level::from_str(level == "error" ? "err" : level);
      if (name.empty()) {
        spdlog::set_level(lv);
        spdlog::apply_all([lv](const std::shared_ptr<spdlog::logger>& l) { l->set_level(lv); });
        return fmt::format("log level {} for every logger", level);
      }
      auto l = spdlog::get(name);
      if (!l) return refuse(self->state, c, "log-level " + spec, admin_errc::bad_argument, fmt::format("no logger named '{}'", name));
      l->set_level(lv);
      return fmt::format("log level {} for logger {}", level, name);
    },
    // The effective configuration.
    [self](config_atom, admin_caller& c) -> caf::result<std::string> {
      if (auto e = authorize(self, c, "config")) return e;
      return config_json(self->state);
    },
    // Rollback thresholds.
    [self](rollback_atom, admin_caller& c, rollback_policy p) -> caf::result<rollback_policy> {
      const bool read_only = p.max_consecutive_failures < 0 && p.ttft_p99_ms < 0 && p.min_samples < 0;
      const std::string what = read_only ? "rollback-policy"
                                         : fmt::format("rollback-policy failures={} ttft_p99_ms={} min_samples={}",
                                                       p.max_consecutive_failures, p.ttft_p99_ms, p.min_samples);
      if (auto e = authorize(self, c, what)) return e;
      return self->delegate(self->state.router, rollback_atom::value, p);
    },
    // The audit log.
    [self](audit_atom, admin_caller& c) -> caf::result<std::vector<audit_entry>> {
      if (auto e = authorize(self, c, "audit")) return e;
      return std::vector<audit_entry>(self->state.audit.begin(), self->state.audit.end());
    },
    // Periodic work.
    [self](tick_atom) { on_tick(self); },
  };
}

}  // namespace

admin_actor spawn_admin(caf::actor_system& sys, admin_setup setup) { return sys.spawn(admin_behavior, std::move(setup)); }

std::vector<replica_parts> replicas_of(const serve_node& node) {
  std::vector<replica_parts> out;
  for (size_t r = 0; r < node.schedulers.size(); ++r) {
    replica_parts p;
    p.scheduler = node.schedulers[r];
    p.replica = node.replicas[r];
    p.stages = node.stages[r];
    p.locations = node.locations[r];
    out.push_back(std::move(p));
  }
  return out;
}

replica_factory serve_replica_factory(serve_node& node, std::function<node_load()> nodes_now) {
  return [&node, nodes_now](int index, const std::vector<std::string>& requested)
           -> std::expected<replica_parts, std::string> {
    if (!node.start_replica) return std::unexpected(std::string("this server starts no replicas at run time"));
    const int n_stages = int(node.cluster.stages_of(0).size());
    auto where = choose_replica_nodes(node.cluster, n_stages, requested, nodes_now ? nodes_now() : node_load{});
    if (!where) return std::unexpected(where.error());
    return node.start_replica(index, *where);
  };
}

}  // namespace troupe::actors
