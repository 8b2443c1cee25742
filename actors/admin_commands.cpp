#include "actors/admin_commands.hpp"

#include <algorithm>
#include <charconv>
#include <optional>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace troupe::actors {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;

admin_outcome refusal(std::string code, std::string message) { return admin_outcome{false, std::move(code), std::move(message), {}}; }

admin_outcome from_error(const caf::error& e) {
  if (e.category() == caf::atom("admin")) {
    std::string m;
    if (e.context().match_elements<std::string>()) m = e.context().get_as<std::string>(0);
    return refusal(admin_errc_name(static_cast<admin_errc>(e.code())), m);
  }
  return refusal("failed", describe(e));
}

std::optional<int32_t> parse_int(const std::string& s) {
  int32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_number(const std::string& s) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used != s.size() || !std::isfinite(v)) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

// "to=0.5" -> ("to", "0.5")
std::optional<std::pair<std::string, std::string>> key_value(const std::string& w) {
  const auto eq = w.find('=');
  if (eq == std::string::npos || eq == 0) return std::nullopt;
  return std::make_pair(w.substr(0, eq), w.substr(eq + 1));
}

/// Sends `msg...` to the ADMIN and renders the reply.
template <class Reply, class... Ts>
void ask(caf::actor_system& sys, const admin_actor& admin, std::function<void(admin_outcome)> done,
         std::function<admin_outcome(Reply&)> render, Ts... xs) {
  sys.spawn([=](caf::event_based_actor* self) {
    self->request(admin, 180s, xs...).then([=](Reply& r) { done(render(r)); },
                                            [=](caf::error& e) { done(from_error(e)); });
  });
}

admin_outcome text(std::string& m) { return admin_outcome{true, "", m, json{{"message", m}}.dump()}; }

json route_json(const replica_status& r) {
  const auto& x = r.route;
  return json{{"index", x.index},
              {"step_ms", r.step_ms >= 0 ? json(r.step_ms) : json(nullptr)},
              {"name", std::to_string(x.index)},
              {"state", x.state},
              {"health", r.health},
              {"reason", r.reason},
              {"restarts", r.restarts},
              {"weight", x.weight},
              {"draining", x.draining},
              {"in_flight", x.in_flight},
              {"queue", r.n_waiting},
              {"running", r.n_running},
              {"kv_blocks_used", r.kv_blocks_used},
              {"kv_blocks_free", r.kv_blocks_free},
              {"tok_per_s", x.tok_per_s},
              {"ttft_ms", {{"p50", x.ttft_p50_ms}, {"p99", x.ttft_p99_ms}, {"samples", x.n_ttft_samples}}},
              {"itl_ms", {{"p50", x.itl_p50_ms}, {"p99", x.itl_p99_ms}}},
              {"completed", x.n_completed},
              {"failures", x.n_failures},
              {"consecutive_failures", x.consecutive_failures}};
}

json requests_json(const std::vector<request_info>& v) {
  json a = json::array();
  for (const auto& r : v) {
    a.push_back({{"id", r.id.value}, {"replica", r.replica}, {"age_ms", r.age_ms}, {"prompt_tokens", r.prompt_tokens},
                 {"tokens", r.tokens}, {"retries", r.retries}});
  }
  return a;
}

json policy_json(const rollback_policy& p) {
  return {{"failures", p.max_consecutive_failures}, {"ttft_p99_ms", p.ttft_p99_ms}, {"min_samples", p.min_samples}};
}

}  // namespace

bool admin_token_matches(const std::string& want, std::string_view got) {
  if (want.empty() || got.size() != want.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(want[i] ^ got[i]);
  return diff == 0;
}

const std::vector<std::pair<std::string, std::string>>& admin_help() {
  static const std::vector<std::pair<std::string, std::string>> h = {
    {"status", "nodes, replicas (state, weight, queue, KV blocks, tok/s, TTFT/ITL), stages, recent events"},
    {"watch status", "status, refreshed in place every second (any key stops it)"},
    {"requests", "requests in flight: id, replica, age, tokens so far"},
    {"cancel ID", "cancel request ID"},
    {"drain R", "replica R takes no new requests; those in flight finish; then it is idle"},
    {"undrain R", "replica R takes new requests again"},
    {"weight R W", "replica R gets a share W of new requests (relative to the others; 0: none)"},
    {"rollout R [to=W] [step=S] [every=SEC]", "raise R's weight by S every SEC seconds up to W (default 1, 0.1, 10)"},
    {"rollback R", "weight 0 now (what the automatic rollback does)"},
    {"rollback-policy [failures=N] [ttft-p99-ms=MS] [min-samples=N]", "the automatic rollback's thresholds"},
    {"replica add [weight=W] [nodes=N[,N...]]",
     "start another replica (same model and stages) with weight W (default 1), its stages on the nodes named "
     "(one per stage, or one for all) or on the spare nodes"},
    {"replica remove R", "drain replica R, then stop it"},
    {"restart R.S", "restart stage S of replica R (the SUPERVISOR's path)"},
    {"log-level LEVEL | LOGGER=LEVEL", "trace, debug, info, warn, error, critical, off"},
    {"config", "the effective configuration"},
    {"audit", "the most recent admin commands: who, what, when, outcome"},
    {"help", "this list"},
  };
  return h;
}

json status_json(const cluster_status& s) {
  json j;
  j["model"] = s.model;
  j["unix_ms"] = s.unix_ms;
  j["uptime_ms"] = s.uptime_ms;
  j["nodes"] = json::array();
  for (const auto& n : s.nodes) {
    json o{{"name", n.name}, {"address", n.address}, {"role", n.role}, {"up", n.up}, {"pid", n.pid}};
    o["last_heartbeat_ms"] = n.last_heartbeat_ms >= 0 ? json(n.last_heartbeat_ms) : json(nullptr);
    j["nodes"].push_back(std::move(o));
  }
  j["replicas"] = json::array();
  for (const auto& r : s.replicas) j["replicas"].push_back(route_json(r));
  j["stages"] = json::array();
  for (const auto& st : s.stages) {
    json o{{"name", fmt::format("{}.{}", st.replica, st.index)},
           {"replica", st.replica},
           {"index", st.index},
           {"node", st.node},
           {"pid", st.pid},
           {"layers", json::array({st.first_layer, st.last_layer})},
           {"restarts", st.restarts}};
    o["step_ms"] = st.step_ms >= 0 ? json(st.step_ms) : json(nullptr);
    j["stages"].push_back(std::move(o));
  }
  j["events"] = json::array();
  for (const auto& e : s.events) {
    j["events"].push_back({{"unix_ms", e.unix_ms}, {"kind", e.kind}, {"replica", e.replica}, {"message", e.message}});
  }
  j["rollback"] = policy_json(s.rollback);
  if (!s.history.empty()) {
    j["history"] = json::array();
    for (const auto& h : s.history) {
      j["history"].push_back({{"unix_ms", h.unix_ms}, {"replica", h.replica}, {"tok_per_s", h.tok_per_s},
                              {"ttft_p99_ms", h.ttft_p99_ms}, {"itl_p99_ms", h.itl_p99_ms}, {"in_flight", h.in_flight}});
    }
  }
  return j;
}

void run_admin_command(caf::actor_system& sys, const admin_actor& admin, admin_caller caller,
                       std::vector<std::string> words, std::function<void(admin_outcome)> done) {
  if (words.empty()) return done(refusal("unknown_command", "an empty command"));
  const std::string& verb = words[0];
  const size_t n = words.size();
  auto usage = [&](const std::string& u) { done(refusal("bad_argument", "usage: " + u)); };
  auto replica_arg = [&](size_t i) -> std::optional<int32_t> { return i < n ? parse_int(words[i]) : std::nullopt; };
  std::function<admin_outcome(std::string&)> as_text = text;

  if (verb == "help") {
    std::string m;
    json a = json::array();
    for (const auto& [c, d] : admin_help()) {
      m += fmt::format("  {:<60} {}\n", c, d);
      a.push_back({{"command", c}, {"help", d}});
    }
    return done(admin_outcome{true, "", m, a.dump()});
  }
  if (verb == "status") {
    status_options o;
    for (size_t i = 1; i < n; ++i) {
      if (words[i] == "--history" || words[i] == "history") o.history = true;
    }
    std::function<admin_outcome(cluster_status&)> r = [](cluster_status& s) {
      return admin_outcome{true, "", fmt::format("{} node(s), {} replica(s), {} stage(s)", s.nodes.size(),
                                                 s.replicas.size(), s.stages.size()),
                           status_json(s).dump()};
    };
    return ask(sys, admin, done, r, status_atom::value, caller, o);
  }
  if (verb == "requests") {
    std::function<admin_outcome(std::vector<request_info>&)> r = [](std::vector<request_info>& v) {
      return admin_outcome{true, "", fmt::format("{} request(s) in flight", v.size()), requests_json(v).dump()};
    };
    return ask(sys, admin, done, r, requests_atom::value, caller);
  }
  if (verb == "cancel") {
    uint64_t id = 0;
    if (n != 2 || std::from_chars(words[1].data(), words[1].data() + words[1].size(), id).ec != std::errc()) {
      return usage("cancel ID");
    }
    return ask(sys, admin, done, as_text, cancel_atom::value, caller, request_id{id});
  }
  if (verb == "drain" || verb == "undrain" || verb == "rollback") {
    if (verb == "rollback" && n == 1) return usage("rollback R");
    auto r = replica_arg(1);
    if (n != 2 || !r) return usage(verb + " R");
    if (verb == "drain") return ask(sys, admin, done, as_text, drain_atom::value, caller, *r);
    if (verb == "undrain") return ask(sys, admin, done, as_text, undrain_atom::value, caller, *r);
    return ask(sys, admin, done, as_text, rollback_atom::value, caller, *r);
  }
  if (verb == "weight") {
    auto r = replica_arg(1);
    auto w = n == 3 ? parse_number(words[2]) : std::nullopt;
    if (n != 3 || !r || !w) return usage("weight R W");
    return ask(sys, admin, done, as_text, weight_atom::value, caller, *r, *w);
  }
  if (verb == "rollout") {
    auto r = replica_arg(1);
    if (!r) return usage("rollout R [to=W] [step=S] [every=SEC]");
    rollout_plan p;
    p.replica = *r;
    for (size_t i = 2; i < n; ++i) {
      auto kv = key_value(words[i]);
      auto v = kv ? parse_number(kv->second) : std::nullopt;
      if (!v) return usage("rollout R [to=W] [step=S] [every=SEC]");
      if (kv->first == "to") {
        p.target = *v;
      } else if (kv->first == "step") {
        p.step = *v;
      } else if (kv->first == "every") {
        p.interval_ms = int32_t(*v * 1000);
      } else {
        return usage("rollout R [to=W] [step=S] [every=SEC]");
      }
    }
    return ask(sys, admin, done, as_text, rollout_atom::value, caller, p);
  }
  if (verb == "rollback-policy") {
    rollback_policy p{-1, -1, -1};
    for (size_t i = 1; i < n; ++i) {
      auto kv = key_value(words[i]);
      auto v = kv ? parse_number(kv->second) : std::nullopt;
      if (!v || *v < 0) return usage("rollback-policy [failures=N] [ttft-p99-ms=MS] [min-samples=N]");
      if (kv->first == "failures") {
        p.max_consecutive_failures = int32_t(*v);
      } else if (kv->first == "ttft-p99-ms") {
        p.ttft_p99_ms = *v;
      } else if (kv->first == "min-samples") {
        p.min_samples = int32_t(*v);
      } else {
        return usage("rollback-policy [failures=N] [ttft-p99-ms=MS] [min-samples=N]");
      }
    }
    std::function<admin_outcome(rollback_policy&)> r = [](rollback_policy& q) {
      return admin_outcome{true, "",
                           fmt::format("automatic rollback: {} consecutive failures{}", q.max_consecutive_failures,
                                       q.ttft_p99_ms > 0 ? fmt::format(", TTFT p99 over {} ms (at least {} samples)",
                                                                       q.ttft_p99_ms, q.min_samples)
                                                         : std::string(", TTFT threshold off")),
                           policy_json(q).dump()};
    };
    return ask(sys, admin, done, r, rollback_atom::value, caller, p);
  }
  if (verb == "replica") {
    if (n >= 2 && words[1] == "add") {
      const std::string u = "replica add [weight=W] [nodes=NODE[,NODE...]]";
      replica_add_plan plan;
      for (size_t i = 2; i < n; ++i) {
        auto kv = key_value(words[i]);
        if (kv && kv->first == "nodes") {
          plan.nodes.clear();
          for (size_t from = 0; from <= kv->second.size();) {
            const size_t comma = std::min(kv->second.find(',', from), kv->second.size());
            if (comma == from) return usage(u);  // an empty name
            plan.nodes.push_back(kv->second.substr(from, comma - from));
            from = comma + 1;
          }
          continue;
        }
        auto v = kv && kv->first == "weight" ? parse_number(kv->second) : std::nullopt;
        if (!v) return usage(u);
        plan.weight = *v;
      }
      return ask(sys, admin, done, as_text, add_replica_atom::value, caller, plan);
    }
    if (n == 3 && words[1] == "remove") {
      auto r = replica_arg(2);
      if (!r) return usage("replica remove R");
      return ask(sys, admin, done, as_text, remove_replica_atom::value, caller, *r);
    }
    return usage("replica add [weight=W] [nodes=NODE[,NODE...]] | replica remove R");
  }
  if (verb == "restart") {
    const auto dot = n == 2 ? words[1].find('.') : std::string::npos;
    auto r = dot != std::string::npos ? parse_int(words[1].substr(0, dot)) : std::nullopt;
    auto s = dot != std::string::npos ? parse_int(words[1].substr(dot + 1)) : std::nullopt;
    if (!r || !s) return usage("restart R.S (stage S of replica R, e.g. restart 0.1)");
    return ask(sys, admin, done, as_text, restart_atom::value, caller, *r, *s);
  }
  if (verb == "log-level") {
    if (n != 2) return usage("log-level LEVEL | LOGGER=LEVEL");
    return ask(sys, admin, done, as_text, log_level_atom::value, caller, words[1]);
  }
  if (verb == "config") {
    std::function<admin_outcome(std::string&)> r = [](std::string& c) { return admin_outcome{true, "", c, c}; };
    return ask(sys, admin, done, r, config_atom::value, caller);
  }
  if (verb == "audit") {
    std::function<admin_outcome(std::vector<audit_entry>&)> r = [](std::vector<audit_entry>& v) {
      std::string m;
      json a = json::array();
      for (const auto& e : v) {
        m += fmt::format("{} {} \"{}\" {}\n", e.unix_ms, e.who, e.command, e.outcome);
        a.push_back({{"unix_ms", e.unix_ms}, {"who", e.who}, {"command", e.command}, {"outcome", e.outcome}});
      }
      return admin_outcome{true, "", m, a.dump()};
    };
    return ask(sys, admin, done, r, audit_atom::value, caller);
  }
  done(refusal("unknown_command", fmt::format("unknown command '{}' (try help)", verb.substr(0, 64))));
}

}  // namespace troupe::actors
