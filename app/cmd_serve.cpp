// troupe serve: all actors of a cluster config in this process (ROUTER, SCHEDULERs, REPLICAs,
// PIPELINE STAGEs), behind the client protocol's TCP server. From a cluster file (--config) or
// from flags (--model, --stages, --replicas: layers split so that the stages do even work).
#include <algorithm>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "actors/spawn_serve.hpp"
#include "app/args.hpp"
#include "app/command.hpp"
#include "app/front_ends.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/model_weights.hpp"
#include "engine/tokenizer.hpp"
#include "transport/api_keys.hpp"

namespace troupe::app {
namespace {

int run_serve(int argc, char** argv) {
  arg_parser args(
    "troupe serve --config FILE | --model PATH [--tokenizer PATH] [--stages N] [--replicas R] [--threads T] "
    "[--port P] [--http-port P [--tls-cert FILE --tls-key FILE]] [--api-key-file FILE]",
    "Serves a model on this machine: a ROUTER, a SCHEDULER per replica and PIPELINE STAGE actors\n"
    "with continuous batching over the paged KV cache, behind the client protocol (TCP) and,\n"
    "with --http-port, the OpenAI-compatible HTTP API (docs/http-api.md).\n"
    "Flags given with --config override the file's values.");
  args.option("config", "FILE", "cluster file (TOML); see cluster-config/examples/local.toml");
  add_model_options(args, false)
    .option("stages", "N", "pipeline stages per replica (layers split for even work: the last stage also runs the output head)")
    .option("replicas", "R", "replicas of the model")
    .option("threads", "T", "engine threads per stage")
    .option("host", "ADDR", "address to listen on")
    .option("port", "P", "port to listen on (0: ephemeral)")
    .option("http-port", "P", "serve the HTTP API on this port too (0: ephemeral; default: off)")
    .option("http-host", "ADDR", "address of the HTTP API (default: --host)")
    .option("tls-cert", "FILE", "serve the HTTP API over HTTPS with this PEM certificate (chain); needs --tls-key")
    .option("tls-key", "FILE", "the PEM private key of --tls-cert")
    .option("kv-blocks", "N", "KV cache blocks per stage")
    .option("block-size", "N", "positions per KV block")
    .option("max-waiting", "N", "queued requests before refusing with overloaded")
    .option("api-key-file", "FILE", "require one of the API keys in FILE from clients; a line is KEY [name=N] "
            "[rate=R/min] [tokens=T/min] [burst=B] [priority=interactive|batch] (docs/http-api.md)")
    .option("admin-token-file", "FILE", "the ADMIN CONSOLE's token (first line of FILE): `troupe admin`, the status page "
            "at GET / and /admin/* need it; without it admin commands are refused (docs/operations.md)")
    .option("api-key", "KEY", "require this API key (visible to every local user in the process list: prefer --api-key-file)")
    .option("idle-timeout-ms", "MS", "close a connection with no request in flight after MS (0: never; default 300000)")
    .option("max-connections-per-peer", "N", "open connections from one address (0: no limit; default 256)");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  // Logs go to stderr; stdout carries only the "listening on" line (scripts read the port there).
  spdlog::set_default_logger(spdlog::stderr_color_mt("troupe"));
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "troupe: %s\n", msg.c_str());
    return 1;
  };
  auto bad_flag = [&] {
    std::fprintf(stderr, "troupe: %s\n", args.error().c_str());
    return 2;
  };

  // 1. The cluster config: from the file, then flags on top.
  config::cluster_config cluster;
  if (args.given("config")) {
    auto c = config::parse_cluster_file(args.str("config"));
    if (!c) return fail(c.error().message);
    cluster = std::move(*c);
  } else if (!args.given("model")) {
    std::fprintf(stderr, "troupe: give --config FILE or --model PATH (see troupe serve --help)\n");
    return 2;
  }
  if (args.given("model")) cluster.model.path = args.str("model");
  if (args.given("tokenizer")) cluster.model.tokenizer = args.str("tokenizer");
  if (args.given("host")) cluster.listen.host = args.str("host");
  if (args.given("port")) {
    auto p = args.integer("port", 0, 65535);
    if (!p) return bad_flag();
    cluster.listen.port = int(*p);
  }
  if (args.given("http-port")) {
    auto p = args.integer("http-port", 0, 65535);
    if (!p) return bad_flag();
    cluster.http.enabled = true;
    cluster.http.port = int(*p);
  }
  if (args.given("http-host")) {
    cluster.http.enabled = true;
    cluster.http.host = args.str("http-host");
  }
  if (args.given("tls-cert")) cluster.http.tls_cert = args.str("tls-cert");
  if (args.given("tls-key")) cluster.http.tls_key = args.str("tls-key");
  if (cluster.http.tls_cert.empty() != cluster.http.tls_key.empty()) {
    std::fprintf(stderr, "troupe: TLS needs both --tls-cert FILE and --tls-key FILE (or http.tls_cert and http.tls_key)\n");
    return 2;
  }
  if (!cluster.http.tls_cert.empty() && !cluster.http.enabled) {
    std::fprintf(stderr, "troupe: --tls-cert/--tls-key secure the HTTP API: give --http-port too\n");
    return 2;
  }
  if (args.given("replicas")) {
    auto r = args.integer("replicas", 1, 1024);
    if (!r) return bad_flag();
    cluster.replicas = int(*r);
  }
  if (args.given("kv-blocks")) {
    auto n = args.integer("kv-blocks", 1, 1 << 24);
    if (!n) return bad_flag();
    cluster.batching.n_blocks = int(*n);
  }
  if (args.given("block-size")) {
    auto n = args.integer("block-size", 1, 4096);
    if (!n) return bad_flag();
    cluster.batching.block_size = int(*n);
  }
  if (args.given("api-key-file")) cluster.listen.api_key_file = args.str("api-key-file");
  if (args.given("admin-token-file")) cluster.admin.token_file = args.str("admin-token-file");
  if (args.given("idle-timeout-ms")) {
    auto n = args.integer("idle-timeout-ms", 0, 86'400'000);
    if (!n) return bad_flag();
    cluster.listen.idle_timeout_ms = int(*n);
  }
  if (args.given("max-connections-per-peer")) {
    auto n = args.integer("max-connections-per-peer", 0, 1 << 20);
    if (!n) return bad_flag();
    cluster.listen.max_connections_per_peer = int(*n);
  }
  if (args.given("max-waiting")) {
    auto n = args.integer("max-waiting", 1, 1 << 24);
    if (!n) return bad_flag();
    cluster.batching.max_waiting = int(*n);
  }
  std::optional<long long> threads;
  if (args.given("threads")) {
    threads = args.integer("threads", 1, 256);
    if (!threads) return bad_flag();
  }
  if (!args.given("config") || args.given("stages")) {
    long long n_stages = 1;
    if (args.given("stages")) {
      auto s = args.integer("stages", 1, 1024);
      if (!s) return bad_flag();
      n_stages = *s;
    }
    auto probe = engine::load_model(cluster.model.path, engine::load_options{engine::layer_range{0, 1}});
    if (!probe) return fail(probe.error().message);
    // Stages of even work (the last one also runs the output head), not of even layer counts.
    const auto& mc = probe->config;
    auto stages = config::split_layers_balanced(mc.n_layers, int(n_stages), mc.layer_weight_count(),
                                                mc.head_weight_count(), threads ? int(*threads) : 1);
    if (!stages) return fail(stages.error().message);
    cluster.stages = std::move(*stages);
  }
  if (threads) {
    for (auto& s : cluster.stages) s.threads = int(*threads);
  }

  // API keys, with their rate limits and priority classes; one set for both listeners.
  std::vector<transport::api_key> keys;
  if (!cluster.listen.api_key_file.empty()) {
    auto read = transport::read_api_key_file(cluster.listen.api_key_file);
    if (!read) return fail(read.error().message);
    keys = std::move(*read);
    struct stat st{};
    if (::stat(cluster.listen.api_key_file.c_str(), &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      spdlog::warn("API key file {} is readable by other users (mode {:o}): chmod 600 it",
                   cluster.listen.api_key_file, st.st_mode & 0777);
    }
  }
  if (args.given("api-key")) {
    transport::api_key k;
    k.key = args.str("api-key");
    k.name = "command-line";
    keys.push_back(std::move(k));
    spdlog::warn("--api-key puts the key in the process list, where every local user can read it "
                 "(/proc/PID/cmdline): use --api-key-file FILE instead");
  }
  auto api_keys = std::make_shared<transport::api_key_set>(std::move(keys));

  auto tok = engine::load_tokenizer(cluster.model.path, cluster.model.tokenizer);
  if (!tok) return fail(tok.error().message);
  std::shared_ptr<const engine::tokenizer> tokenizer(std::move(*tok));

  // 2. Signals are taken by sigwait below. main() blocked them before any thread started (this
  //    command takes_stop_signals); blocking again here costs nothing and keeps this true if
  //    run_serve is ever called from elsewhere.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // 3. Actors, then the TCP server in front of the ROUTER.
  caf::actor_system_config cfg;
  actors::configure_actor_system(cfg);
  caf::actor_system sys{cfg};
  auto node = actors::spawn_serve(sys, cluster, tokenizer);
  if (!node) return fail(node.error());
  int rc = 0;
  {
    front_ends fronts(sys, *node, api_keys);
    if (auto s = fronts.start(); !s) {
      std::fprintf(stderr, "troupe: %s\n", s.error().message.c_str());
      rc = 1;
    } else {
      std::printf("troupe serve: listening on %s (model %s, %d replica(s) x %zu stage(s))\n",
                  fronts.client_address().c_str(), node->cluster.model.path.c_str(), node->cluster.replicas,
                  node->cluster.stages_of(0).size());
      if (node->cluster.http.enabled) {
        std::printf("troupe serve: HTTP API on %s (model id %s)\n", fronts.http_url().c_str(),
                    fronts.model_id().c_str());
      }
      std::fflush(stdout);
      wait_for_stop_signal(signals, "troupe serve");
    }
    fronts.stop();
  }
  node->shutdown();
  return rc;
}

const command_registrar reg{{"serve", "serve a model on this machine (actors + client protocol over TCP)", run_serve, true}};

}  // namespace
}  // namespace troupe::app
