// troupe serve: all actors of a cluster config in this process (ROUTER, SCHEDULERs, REPLICAs,
// PIPELINE STAGEs), behind the client protocol's TCP server. From a cluster file (--config) or
// from flags (--model, --stages, --replicas: layers split evenly).
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
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "actors/http_gateway.hpp"
#include "actors/spawn_serve.hpp"
#include "actors/tcp_gateway.hpp"
#include "app/args.hpp"
#include "app/command.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/gguf.hpp"
#include "engine/model_weights.hpp"
#include "engine/tokenizer.hpp"
#include "transport/api_keys.hpp"
#include "transport/http_server.hpp"
#include "transport/tcp_server.hpp"

namespace troupe::app {
namespace {

// The name the HTTP API serves the model under: its file name without the extension
// ("TinyStories-656K-Q8_0"), or the directory's name.
std::string model_id(const std::string& path) {
  std::filesystem::path p = std::filesystem::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return std::filesystem::is_directory(p) ? p.filename().string() : p.stem().string();
}

// The chat template of the model: its family when the model carries one troupe recognises
// (GGUF tokenizer.chat_template, or chat_template in a Hugging Face directory's
// tokenizer_config.json), else the plain template, with a warning naming the model when it
// carries one of no known family.
transport::chat_template model_chat_template(const std::string& path, const std::string& model_name) {
  std::optional<std::string> jinja;
  const std::filesystem::path p(path);
  if (std::filesystem::is_directory(p)) {
    std::ifstream in(p / "tokenizer_config.json");
    if (in) {
      auto j = nlohmann::json::parse(in, nullptr, false);
      if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string()) {
        jinja = j["chat_template"].get<std::string>();
      }
    }
  } else if (p.extension() == ".gguf") {
    if (auto f = engine::gguf::file::open(p); f && f->metadata().contains("tokenizer.chat_template")) {
      if (auto t = f->get_string("tokenizer.chat_template")) jinja = std::move(*t);
    }
  }
  if (!jinja) {
    spdlog::info("model {} carries no chat template: chat prompts use the plain template", model_name);
    return transport::chat_template{};
  }
  if (auto family = transport::detect_chat_format(*jinja)) {
    spdlog::info("model {} chat template: {}", model_name, transport::chat_format_name(*family));
    return transport::chat_template{*family};
  }
  spdlog::warn("model {} carries a chat template of no family troupe recognises (ChatML, Llama 2, Llama 3, Zephyr, "
               "Mistral): chat prompts use the plain template (docs/http-api.md, \"Chat templates\")",
               model_name);
  return transport::chat_template{};
}

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
    .option("stages", "N", "pipeline stages per replica (layers split evenly)")
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
    auto stages = config::split_layers_evenly(probe->config.n_layers, int(n_stages), threads ? int(*threads) : 1);
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
    // The ROUTER's prompt limit: a prompt must leave room in the context for one token.
    const int ctx = node->cluster.limits.ctx_size > 0 ? node->cluster.limits.ctx_size : node->model.max_seq_len;
    const size_t max_prompt_tokens = size_t(std::max(1, ctx - 1));
    // The gateway tokenizes on the I/O threads (the ROUTER gets token ids) and refuses prompts that
    // cannot fit before tokenizing them.
    actors::tcp_gateway gateway(sys, node->router, std::chrono::milliseconds(30'000), node->tokenizer,
                                max_prompt_tokens);
    transport::server_options so;
    so.host = node->cluster.listen.host;
    so.port = uint16_t(node->cluster.listen.port);
    so.model = node->cluster.model.path;
    so.limits.max_tokens = uint32_t(node->cluster.limits.max_new_tokens);
    // Clients learn these in hello_ok; the frame decoder refuses longer prompts without tokenizing.
    so.limits.max_prompt_tokens = uint32_t(std::min<size_t>(so.limits.max_prompt_tokens, max_prompt_tokens));
    if (gateway.max_prompt_bytes() > 0) {
      so.limits.max_prompt_bytes = uint32_t(std::min<size_t>(so.limits.max_prompt_bytes, gateway.max_prompt_bytes()));
    }
    so.api_keys = api_keys;
    const auto& l = node->cluster.listen;
    if (l.idle_timeout_ms >= 0) so.idle_timeout = std::chrono::milliseconds(l.idle_timeout_ms);
    if (l.header_timeout_ms >= 0) so.header_timeout = std::chrono::milliseconds(l.header_timeout_ms);
    if (l.body_timeout_ms >= 0) so.body_timeout = std::chrono::milliseconds(l.body_timeout_ms);
    if (l.max_connections_per_peer >= 0) so.max_connections_per_peer = size_t(l.max_connections_per_peer);
    transport::tcp_server server(so, gateway);
    // The HTTP API on the same ROUTER (docs/http-api.md).
    actors::http_gateway_options ho;
    ho.model_id = model_id(node->cluster.model.path);
    ho.limits = so.limits;
    ho.n_replicas = size_t(node->cluster.replicas);
    ho.api_keys = api_keys;
    if (node->cluster.http.enabled) ho.chat = model_chat_template(node->cluster.model.path, ho.model_id);
    actors::http_gateway http_gateway(sys, node->router, ho, node->tokenizer);
    transport::http_server_options hso;
    hso.host = node->cluster.http.host.empty() ? node->cluster.listen.host : node->cluster.http.host;
    hso.port = uint16_t(node->cluster.http.port);
    hso.tls_cert_file = node->cluster.http.tls_cert;
    hso.tls_key_file = node->cluster.http.tls_key;
    transport::http_server http(hso, http_gateway);
    if (auto s = server.start(); !s) {
      std::fprintf(stderr, "troupe: %s\n", s.error().message.c_str());
      rc = 1;
    } else if (auto h = node->cluster.http.enabled ? http.start() : transport::result<void>{}; !h) {
      std::fprintf(stderr, "troupe: %s\n", h.error().message.c_str());
      rc = 1;
    } else {
      std::printf("troupe serve: listening on %s:%u (model %s, %d replica(s) x %zu stage(s))\n", so.host.c_str(),
                  unsigned(server.port()), node->cluster.model.path.c_str(), node->cluster.replicas,
                  node->cluster.stages.size());
      if (node->cluster.http.enabled && api_keys->empty()) {
        spdlog::warn("NO AUTHENTICATION: the HTTP API on {}:{} serves anyone who can reach it, without API keys or "
                     "rate limits. Give --api-key-file FILE (or listen.api_key_file) to require a key.",
                     hso.host, http.port());
      }
      if (node->cluster.http.enabled) {
        std::printf("troupe serve: HTTP API on %s://%s:%u (model id %s)\n", hso.tls_cert_file.empty() ? "http" : "https",
                    hso.host.c_str(), unsigned(http.port()), ho.model_id.c_str());
      }
      std::fflush(stdout);
      int sig = 0;
      sigwait(&signals, &sig);
      std::fprintf(stderr, "troupe serve: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
      // A second SIGINT/SIGTERM while stopping: the operator wants out now. Exit 128 + signal
      // (130 / 143, as the default action would report it), after saying so.
      std::thread([signals] {
        int again = 0;
        if (sigwait(&signals, &again) != 0) return;
        std::fprintf(stderr, "troupe serve: second %s while stopping, exiting now without a clean shutdown\n",
                     again == SIGINT ? "SIGINT" : "SIGTERM");
        std::fflush(stderr);
        std::_Exit(128 + again);
      }).detach();
    }
    http.stop();
    server.stop();
  }
  node->shutdown();
  return rc;
}

const command_registrar reg{{"serve", "serve a model on this machine (actors + client protocol over TCP)", run_serve, true}};

}  // namespace
}  // namespace troupe::app
