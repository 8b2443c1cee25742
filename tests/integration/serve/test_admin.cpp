// The ADMIN CONSOLE on a live in-process cluster (2 replicas x 2 stages of stories260K): every
// command through the ADMIN actor's typed interface; drain with 16 streams running; replica add and
// remove under load; a canary that fails every request, rolled back automatically while its
// clients are retried on the stable replica; commands without the admin token refused and logged.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "actors/admin_commands.hpp"
#include "actors/admin_console.hpp"
#include "actors/replica.hpp"
#include "actors/scheduler.hpp"
#include "engine/stop_rule.hpp"
#include "tests/integration/serve/serve_harness.hpp"

using namespace troupe;
using namespace troupe::test;
using namespace troupe::actors;

namespace {

const admin_caller op{"test-admin-token", "test"};

config::cluster_config two_replicas() {
  return make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 2, 2);
}

/// An ADMIN over the harness's node.
admin_actor start_admin(serve_harness& h, replica_factory factory = {}) {
  admin_setup as;
  as.token = op.token;
  as.router = h.node().router;
  as.supervisor = caf::actor_cast<caf::actor>(h.node().supervisor);
  as.replicas = replicas_of(h.node());
  as.cluster = h.node().cluster;
  as.make_replica = factory ? std::move(factory) : serve_replica_factory(h.node());
  as.tick = std::chrono::milliseconds(50);
  as.history_period = std::chrono::milliseconds(100);
  return spawn_admin(h.system(), std::move(as));
}

/// One admin command, waited for.
template <class T, class... Ts>
caf::expected<T> ask(serve_harness& h, const admin_actor& admin, Ts&&... xs) {
  caf::expected<T> out = caf::make_error(caf::sec::request_timeout);
  h.self()->request(admin, 60s, std::forward<Ts>(xs)...)
    .receive([&](T& v) { out = std::move(v); }, [&](caf::error& e) { out = std::move(e); });
  return out;
}

cluster_status status(serve_harness& h, const admin_actor& admin) {
  auto s = ask<cluster_status>(h, admin, status_atom::value, op, status_options{true});
  BOOST_REQUIRE_MESSAGE(s, (s ? "" : describe(s.error())));
  return *s;
}

std::vector<request_info> in_flight(serve_harness& h, const admin_actor& admin) {
  auto r = ask<std::vector<request_info>>(h, admin, requests_atom::value, op);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : describe(r.error())));
  return *r;
}

std::string must(const caf::expected<std::string>& r) {
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : describe(r.error())));
  return *r;
}

/// Receives stream messages until `pred` holds (or fails the test after `timeout`).
template <class Pred>
void serve_until(serve_harness& h, Pred pred, std::chrono::seconds timeout = 30s) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < end, "timed out");
    h.self()->receive(
      [&](stream_chunk& c) {
        auto& s = h.results()[c.id];
        s.ids.insert(s.ids.end(), c.ids.begin(), c.ids.end());
        s.text += c.text;
        ++s.n_chunks;
      },
      [&](stream_end& e) {
        auto& s = h.results()[e.id];
        s.ended = true;
        s.end = e;
      },
      caf::after(std::chrono::milliseconds(50)) >> [] {});
  }
}

int n_failed(serve_harness& h) {
  int n = 0;
  for (const auto& [id, s] : h.results()) n += s.ended && s.end.error != serve_errc::none;
  return n;
}

/// A stage that fails every step: the canary with a broken model file.
stage_actor::behavior_type failing_stage() {
  return {
    [](step_atom, step_request&) -> caf::result<step_result> {
      return make_error(serve_errc::failed, "injected fault: this stage fails every step");
    },
    [](hidden_atom, step_request&, hidden_states&) -> caf::result<step_result> {
      return make_error(serve_errc::failed, "injected fault: this stage fails every step");
    },
  };
}

}  // namespace

BOOST_AUTO_TEST_SUITE(admin, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(every_command_goes_through_the_admin_actor) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  // status: nodes, both replicas, four stages.
  auto s = status(h, admin);
  BOOST_TEST(s.nodes.size() == 1u);
  BOOST_TEST(s.nodes[0].up);
  BOOST_REQUIRE(s.replicas.size() == 2u);
  BOOST_TEST(s.replicas[0].route.state == "active");
  BOOST_TEST(s.replicas[1].kv_blocks_free == 512);
  BOOST_REQUIRE(s.stages.size() == 4u);
  BOOST_TEST(s.stages[1].first_layer == 3);
  BOOST_TEST(s.stages[1].last_layer == 5);

  // requests and cancel: a long request shows up in flight, with its replica, and is cancelled.
  auto id = h.submit(greedy("Once upon a time", 400));
  BOOST_REQUIRE(id);
  auto reqs = in_flight(h, admin);
  BOOST_REQUIRE(reqs.size() == 1u);
  BOOST_TEST(reqs[0].id == *id);
  BOOST_TEST(must(ask<std::string>(h, admin, cancel_atom::value, op, *id)).find("cancelled") != std::string::npos);
  serve_until(h, [&] { return h.result(*id).ended; });
  BOOST_TEST(h.result(*id).end.reason == finish_reason::cancelled);
  BOOST_TEST(!ask<std::string>(h, admin, cancel_atom::value, op, request_id{999}));  // not in flight

  // weight, rollback, rollout (fast steps), undrain.
  BOOST_TEST(must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(1), 0.0)).find("weight 0") != std::string::npos);
  BOOST_TEST(status(h, admin).replicas[1].route.state == "standby");
  BOOST_TEST(!ask<std::string>(h, admin, weight_atom::value, op, int32_t(7), 1.0));  // no replica 7
  must(ask<std::string>(h, admin, rollout_atom::value, op, rollout_plan{1, 1.0, 0.5, 50}));
  serve_until(h, [&] { return status(h, admin).replicas[1].route.weight >= 1.0; }, 10s);
  must(ask<std::string>(h, admin, rollback_atom::value, op, int32_t(1)));
  BOOST_TEST(status(h, admin).replicas[1].route.weight == 0.0);
  must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(1), 1.0));
  must(ask<std::string>(h, admin, drain_atom::value, op, int32_t(1)));
  BOOST_TEST(status(h, admin).replicas[1].route.state == "idle");
  must(ask<std::string>(h, admin, undrain_atom::value, op, int32_t(1)));
  BOOST_TEST(status(h, admin).replicas[1].route.state == "active");

  // restart STAGE: the SUPERVISOR's path (the replica rebuilds its chain and replays).
  const std::string restarted = must(ask<std::string>(h, admin, restart_atom::value, op, int32_t(0), int32_t(1)));
  BOOST_TEST(restarted.find("rebuilding") != std::string::npos, restarted);
  BOOST_TEST(!ask<std::string>(h, admin, restart_atom::value, op, int32_t(0), int32_t(9)));  // no such stage

  // log-level, config, rollback policy, audit.
  BOOST_TEST(must(ask<std::string>(h, admin, log_level_atom::value, op, std::string("actors=warn"))).find("actors") !=
             std::string::npos);
  BOOST_TEST(!ask<std::string>(h, admin, log_level_atom::value, op, std::string("loud")));
  const std::string cfg = must(ask<std::string>(h, admin, config_atom::value, op));
  BOOST_TEST(cfg.find("stories260K.bin") != std::string::npos);
  BOOST_TEST(cfg.find("\"max_running\": 32") != std::string::npos);
  auto pol = ask<rollback_policy>(h, admin, rollback_atom::value, op, rollback_policy{7, -1, -1});
  BOOST_REQUIRE(pol);
  BOOST_TEST(pol->max_consecutive_failures == 7);
  auto audit = ask<std::vector<audit_entry>>(h, admin, audit_atom::value, op);
  BOOST_REQUIRE(audit);
  BOOST_TEST(audit->size() > 15u);
  BOOST_TEST(audit->front().who == "test");
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(drain_with_16_streams_running_finishes_them_and_sends_new_ones_to_the_other_replica) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  std::map<request_id, serve_request> reqs;
  const auto& prompts = story_prompts();
  for (int i = 0; i < 16; ++i) h.submit_accepted(reqs, seeded(prompts[size_t(i) % prompts.size()], 200, uint64_t(100 + i)));
  auto before = in_flight(h, admin);
  const auto on_0 = std::count_if(before.begin(), before.end(), [](const auto& r) { return r.replica == 0; });
  BOOST_TEST_MESSAGE("in flight on replica 0 when it is drained: " << on_0);
  BOOST_TEST(on_0 > 0);
  must(ask<std::string>(h, admin, drain_atom::value, op, int32_t(0)));
  // New requests while replica 0 drains: every one goes to replica 1.
  std::set<request_id> fresh;
  for (int i = 0; i < 8; ++i) {
    auto id = h.submit(seeded(prompts[size_t(i) % prompts.size()], 60, uint64_t(500 + i)));
    BOOST_REQUIRE(id);
    fresh.insert(*id);
    reqs[*id] = seeded(prompts[size_t(i) % prompts.size()], 60, uint64_t(500 + i));
  }
  for (const auto& r : in_flight(h, admin)) {
    if (fresh.contains(r.id)) BOOST_TEST(r.replica == 1);
  }
  h.wait_all();
  BOOST_TEST(n_failed(h) == 0);
  h.check_all_against_engine(reqs);
  auto s = status(h, admin);
  BOOST_TEST(s.replicas[0].route.state == "idle");
  BOOST_TEST(s.replicas[0].route.n_completed == on_0);  // only those it had: nothing new came
  BOOST_TEST(s.replicas[1].route.n_completed == int64_t(24 - on_0));
  const bool drained_event = std::any_of(s.events.begin(), s.events.end(), [](const auto& e) {
    return e.kind == "drained" && e.replica == 0;
  });
  BOOST_TEST(drained_event);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(replica_add_and_remove_under_load_fail_no_request) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  std::map<request_id, serve_request> reqs;
  const auto& prompts = story_prompts();
  uint64_t seed = 1;
  auto wave = [&](int n) {
    for (int i = 0; i < n; ++i) h.submit_accepted(reqs, seeded(prompts[seed % prompts.size()], 80, seed)), ++seed;
  };
  wave(8);
  const std::string added = must(ask<std::string>(h, admin, add_replica_atom::value, op, replica_add_plan{1.0, {}}));
  BOOST_TEST(added.find("replica 2 added") == 0u, added);
  wave(8);
  // Replica 0 goes while requests run on it; more arrive meanwhile.
  must(ask<std::string>(h, admin, remove_replica_atom::value, op, int32_t(0)));
  wave(8);
  serve_until(h, [&] { return status(h, admin).replicas[0].route.state == "removed"; });
  wave(8);
  h.wait_all();
  BOOST_TEST(n_failed(h) == 0);
  h.check_all_against_engine(reqs);
  auto s = status(h, admin);
  BOOST_REQUIRE(s.replicas.size() == 3u);
  BOOST_TEST(s.replicas[2].route.n_completed > 0);  // the new replica served
  BOOST_TEST(s.stages.size() == 4u);                // replica 0's stages are gone, replica 2's are there
  // The last replica standing cannot be removed; replica 1 can, then replica 2 cannot.
  must(ask<std::string>(h, admin, remove_replica_atom::value, op, int32_t(1)));
  BOOST_TEST(!ask<std::string>(h, admin, remove_replica_atom::value, op, int32_t(2)));
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

// A replica added at run time is built by the SUPERVISOR's chain factory and supervised like the
// others: `restart 2.0` rebuilds it, status counts the restart, and it serves the engine's text.
BOOST_AUTO_TEST_CASE(a_replica_added_at_run_time_is_supervised_like_the_others) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  // `troupe serve` has no nodes to name.
  auto named = ask<std::string>(h, admin, add_replica_atom::value, op, replica_add_plan{1.0, {"h2"}});
  BOOST_REQUIRE(!named);
  BOOST_TEST(describe(named.error()).find("no nodes to name") != std::string::npos, describe(named.error()));
  const std::string added = must(ask<std::string>(h, admin, add_replica_atom::value, op, replica_add_plan{1.0, {}}));
  BOOST_TEST(added.find("replica 2 added (2 stage(s) on local,local") == 0u, added);
  auto s = status(h, admin);
  BOOST_REQUIRE(s.replicas.size() == 3u);
  BOOST_REQUIRE(s.stages.size() == 6u);
  BOOST_TEST(s.stages[5].first_layer == 3);
  BOOST_TEST(s.replicas[2].health == "running");
  const std::string restarted = must(ask<std::string>(h, admin, restart_atom::value, op, int32_t(2), int32_t(0)));
  BOOST_TEST(restarted.find("rebuilding") != std::string::npos, restarted);
  serve_until(h, [&] {
    s = status(h, admin);
    return s.replicas[2].restarts == 1 && s.replicas[2].health == "running";
  });
  BOOST_TEST(s.replicas[2].reason.find("operator restart of stage 0") != std::string::npos, s.replicas[2].reason);
  BOOST_TEST(s.stages[4].restarts == 1);
  BOOST_TEST(s.replicas[0].restarts == 0);
  // Only replica 2 takes requests now: the engine's text from the rebuilt chain.
  must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(0), 0.0));
  must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(1), 0.0));
  std::map<request_id, serve_request> reqs;
  uint64_t seed = 40;
  for (const auto& p : story_prompts()) h.submit_accepted(reqs, seeded(p, 48, seed++));
  h.wait_all();
  h.check_all_against_engine(reqs);
  s = status(h, admin);
  BOOST_TEST(s.replicas[2].route.n_completed == 8);
  BOOST_TEST(s.stages[4].step_ms > 0.0);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(a_canary_failing_every_request_is_rolled_back_and_its_clients_retried_on_the_stable_replica) {
  auto c = two_replicas();
  c.replicas = 1;
  serve_harness h(c);
  // The canary: one stage that fails every step, behind a SCHEDULER like any replica's.
  const auto& node = h.node();
  replica_factory canary = [&](int, const std::vector<std::string>&) -> std::expected<replica_parts, std::string> {
    replica_parts p;
    p.stages.push_back(h.system().spawn(failing_stage));
    p.locations.push_back(stage_location{"", 0, 0, 5});
    replica_setup rset;  // no supervisor: its failing steps fail its requests
    rset.stages = p.stages;
    p.replica = spawn_replica(h.system(), std::move(rset));
    auto sched = make_scheduler_setup(node.cluster, node.model, engine::make_stop_rule(node.model, *node.tokenizer), 1);
    sched.replica = p.replica;
    p.scheduler = spawn_scheduler(h.system(), std::move(sched));
    return p;
  };
  auto admin = start_admin(h, canary);
  BOOST_TEST(must(ask<std::string>(h, admin, add_replica_atom::value, op, replica_add_plan{0.0, {}})).find("replica 1 added") == 0u);
  // Rolled out at once to an equal share (a canary would start lower; the test wants it hit often).
  must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(1), 1.0));
  std::map<request_id, serve_request> reqs;
  const auto& prompts = story_prompts();
  for (int i = 0; i < 24; ++i) {
    h.submit_accepted(reqs, seeded(prompts[size_t(i) % prompts.size()], 40, uint64_t(900 + i)));
    if (i % 4 == 3) h.receive_one();
  }
  h.wait_all();
  // Every client got its whole text: those that hit the canary were retried on replica 0.
  BOOST_TEST(n_failed(h) == 0);
  h.check_all_against_engine(reqs);
  auto s = status(h, admin);
  BOOST_TEST(s.replicas[1].route.weight == 0.0);
  BOOST_TEST(s.replicas[1].route.state == "standby");
  BOOST_TEST(s.replicas[1].route.n_failures >= 5);
  BOOST_TEST(s.replicas[1].route.n_completed == 0);
  BOOST_TEST(s.replicas[0].route.n_completed == 24);
  const auto rb = std::find_if(s.events.begin(), s.events.end(), [](const auto& e) { return e.kind == "rollback"; });
  BOOST_REQUIRE(rb != s.events.end());
  BOOST_TEST(rb->replica == 1);
  BOOST_TEST(rb->message.find("5 consecutive failed requests") != std::string::npos, rb->message);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_CASE(without_the_admin_token_every_command_is_refused_and_logged) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  const admin_caller none{"", "intruder-1"};
  const admin_caller wrong{"guess", "intruder-2"};
  auto s = ask<cluster_status>(h, admin, status_atom::value, none, status_options{});
  BOOST_REQUIRE(!s);
  BOOST_TEST(describe(s.error()).find("unauthorized") == 0u);
  auto d = ask<std::string>(h, admin, drain_atom::value, wrong, int32_t(0));
  BOOST_REQUIRE(!d);
  BOOST_TEST(describe(d.error()) == "unauthorized: wrong admin token");
  BOOST_TEST(!ask<std::string>(h, admin, add_replica_atom::value, wrong, replica_add_plan{}));
  BOOST_TEST(!ask<std::string>(h, admin, config_atom::value, wrong));
  BOOST_TEST(!ask<std::vector<audit_entry>>(h, admin, audit_atom::value, wrong));
  // Nothing changed: replica 0 still takes requests, no third replica.
  auto st = status(h, admin);
  BOOST_TEST(st.replicas.size() == 2u);
  BOOST_TEST(st.replicas[0].route.state == "active");
  // Each refusal is in the audit log: who, what, why.
  auto audit = ask<std::vector<audit_entry>>(h, admin, audit_atom::value, op);
  BOOST_REQUIRE(audit);
  int refused = 0;
  for (const auto& e : *audit) {
    if (e.outcome.rfind("refused", 0) != 0) continue;
    ++refused;
    BOOST_TEST((e.who == "intruder-1" || e.who == "intruder-2"));
    BOOST_TEST(e.unix_ms > 0);
  }
  BOOST_TEST(refused == 5);
  BOOST_TEST(audit->front().command == "status");
  BOOST_TEST(audit->front().outcome == "refused: an admin token is required");
  // A server with no admin token configured refuses everyone, saying how to configure one.
  admin_setup as;
  as.router = h.node().router;
  as.replicas = replicas_of(h.node());
  as.cluster = h.node().cluster;
  auto closed = spawn_admin(h.system(), std::move(as));
  auto r = ask<std::string>(h, closed, config_atom::value, admin_caller{"", "x"});
  BOOST_REQUIRE(!r);
  BOOST_TEST(describe(r.error()).find("--admin-token-file") != std::string::npos);
  caf::anon_send_exit(closed, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

// Each stage reports what its steps take with the step itself (in the activations it hands on and
// in the last stage's reply), so status shows it for stages in this process and on other nodes
// alike: here in messages, and over the data plane as between processes.
BOOST_AUTO_TEST_CASE(status_shows_each_stages_step_time_after_traffic) {
  for (const auto links : {stage_link::message, stage_link::data_plane}) {
    BOOST_TEST_CONTEXT("links " << (links == stage_link::message ? "message" : "data_plane")) {
      serve_options o;
      o.links = links;
      serve_harness h(two_replicas(), o);
      auto admin = start_admin(h);
      for (const auto& st : status(h, admin).stages) BOOST_TEST(st.step_ms == -1.0);  // nothing ran yet
      std::map<request_id, serve_request> reqs;
      for (const auto& p : story_prompts()) h.submit_accepted(reqs, greedy(p, 48));
      h.wait_all();
      h.check_all_against_engine(reqs);
      const auto s = status(h, admin);
      BOOST_REQUIRE(s.stages.size() == 4u);
      const auto j = status_json(s);
      for (size_t i = 0; i < s.stages.size(); ++i) {
        const auto& st = s.stages[i];
        const auto& r = s.replicas[size_t(st.replica)];
        if (r.route.n_completed == 0) continue;  // a replica that served nothing measured nothing
        BOOST_TEST_MESSAGE("stage " << st.replica << "." << st.index << " step_ms=" << st.step_ms
                                    << " replica step_ms=" << r.step_ms);
        // A step of stories260K's few layers: well under a millisecond to a few on a busy machine.
        BOOST_TEST(st.step_ms > 0.0);
        BOOST_TEST(st.step_ms < 500.0);
        BOOST_TEST(j["stages"][i]["step_ms"].is_number());
      }
      BOOST_TEST(s.replicas[0].route.n_completed + s.replicas[1].route.n_completed == 8);
      caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
    }
  }
}

// A killed stage: the SUPERVISOR rebuilds replica 0's chain, and status counts the restart for the
// replica and each of its stages (a rebuild starts every stage of the chain anew), says why, and
// measures the new chain's step times afresh.
BOOST_AUTO_TEST_CASE(status_counts_restarts_per_replica_and_stage_after_a_stage_is_killed) {
  serve_harness h(two_replicas());
  auto admin = start_admin(h);
  std::map<request_id, serve_request> reqs;
  for (const auto& p : story_prompts()) h.submit_accepted(reqs, greedy(p, 32));
  h.wait_all();
  auto s = status(h, admin);
  BOOST_TEST(s.replicas[0].restarts == 0);
  BOOST_TEST(s.replicas[0].health == "running");
  BOOST_TEST(s.stages[1].restarts == 0);
  caf::anon_send_exit(h.node().stages[0][1], caf::exit_reason::kill);
  serve_until(h, [&] {
    s = status(h, admin);
    return s.replicas[0].restarts == 1 && s.replicas[0].health == "running";
  });
  BOOST_TEST(s.replicas[0].reason.find("stage 1 lost") != std::string::npos, s.replicas[0].reason);
  BOOST_TEST(s.replicas[1].restarts == 0);
  BOOST_TEST(s.replicas[1].reason.empty());
  BOOST_REQUIRE(s.stages.size() == 4u);
  for (const auto& st : s.stages) {
    BOOST_TEST_CONTEXT("stage " << st.replica << "." << st.index) {
      BOOST_TEST(st.restarts == (st.replica == 0 ? 1 : 0));
      if (st.replica == 0) BOOST_TEST(st.step_ms == -1.0);  // the new chain has not stepped yet
    }
  }
  const auto j = status_json(s);
  BOOST_TEST(j["replicas"][0]["restarts"] == 1);
  BOOST_TEST(j["stages"][0]["restarts"] == 1);
  // Traffic on the rebuilt replica alone: its stages measure again.
  must(ask<std::string>(h, admin, weight_atom::value, op, int32_t(1), 0.0));
  h.results().clear();
  reqs.clear();
  for (const auto& p : story_prompts()) h.submit_accepted(reqs, greedy(p, 32));
  h.wait_all();
  h.check_all_against_engine(reqs);
  s = status(h, admin);
  BOOST_TEST(s.stages[0].step_ms > 0.0);
  BOOST_TEST(s.stages[1].step_ms > 0.0);
  BOOST_TEST(s.replicas[0].restarts == 1);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

// Past its restart budget (here 0 rebuilds) a replica is marked failed: status shows that and why
// (the console's replica table and the status page print the reason).
BOOST_AUTO_TEST_CASE(a_replica_past_its_restart_budget_shows_failed_and_why) {
  auto c = two_replicas();
  c.failover.max_restarts = 0;
  serve_harness h(c);
  auto admin = start_admin(h);
  caf::anon_send_exit(h.node().stages[0][1], caf::exit_reason::kill);
  cluster_status s;
  serve_until(h, [&] {
    s = status(h, admin);
    return s.replicas[0].health == "failed";
  });
  BOOST_TEST(s.replicas[0].reason.find("stage 1 lost") != std::string::npos, s.replicas[0].reason);
  BOOST_TEST(s.replicas[0].reason.find("max_restarts") != std::string::npos, s.replicas[0].reason);
  BOOST_TEST(s.replicas[0].restarts == 0);
  BOOST_TEST(s.replicas[1].health == "running");
  const auto j = status_json(s);
  BOOST_TEST(j["replicas"][0]["health"] == "failed");
  BOOST_TEST(j["replicas"][0]["reason"].get<std::string>().find("max_restarts") != std::string::npos);
  caf::anon_send_exit(admin, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
