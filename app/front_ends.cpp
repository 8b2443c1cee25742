#include "app/front_ends.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <caf/all.hpp>

#include "actors/admin_console.hpp"
#include "actors/http_gateway.hpp"
#include "actors/tcp_gateway.hpp"
#include "engine/gguf.hpp"
#include "transport/http_server.hpp"
#include "transport/tcp_server.hpp"

namespace troupe::app {
namespace {

// The name the HTTP API serves the model under: its file name without the extension
// ("TinyStories-656K-Q8_0"), or the directory's name.
std::string model_id_of(const std::string& path) {
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

}  // namespace

std::expected<std::string, std::string> read_admin_token(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::unexpected(fmt::format("cannot read the admin token file {}", path));
  std::string line;
  std::getline(in, line);
  const auto first = line.find_first_not_of(" \t\r");
  const auto last = line.find_last_not_of(" \t\r");
  if (first == std::string::npos) return std::unexpected(fmt::format("the admin token file {} is empty", path));
  std::error_code ec;
  const auto perms = std::filesystem::status(path, ec).permissions();
  using p = std::filesystem::perms;
  if (!ec && (perms & (p::group_all | p::others_all)) != p::none) {
    spdlog::warn("admin token file {} is readable by other users: chmod 600 it", path);
  }
  return line.substr(first, last - first + 1);
}

struct front_ends::impl {
  actors::serve_node& node;
  actors::admin_actor admin;
  std::string admin_error;  // the token file could not be read: start() fails with this
  transport::server_options so;
  actors::http_gateway_options ho;
  transport::http_server_options hso;
  std::unique_ptr<actors::tcp_gateway> gateway;
  std::unique_ptr<transport::tcp_server> server;
  std::unique_ptr<actors::http_gateway> http_gateway;
  std::unique_ptr<transport::http_server> http;
  bool http_on = false;

  impl(caf::actor_system& sys, actors::serve_node& n, std::shared_ptr<transport::api_key_set> api_keys,
       admin_front_options ao)
      : node(n) {
    // The ADMIN CONSOLE: without a token it refuses every command (and says how to give one).
    actors::admin_setup as;
    if (!node.cluster.admin.token_file.empty()) {
      auto t = read_admin_token(node.cluster.admin.token_file);
      if (t) {
        as.token = std::move(*t);
      } else {
        admin_error = t.error();
      }
    }
    as.router = node.router;
    if (node.supervisor) as.supervisor = caf::actor_cast<caf::actor>(node.supervisor);
    as.replicas = actors::replicas_of(node);
    as.cluster = node.cluster;
    as.this_node = ao.this_node;
    as.head = ao.head;
    as.make_replica = actors::serve_replica_factory(node, ao.nodes_now);
    as.rollback.max_consecutive_failures = node.cluster.admin.rollback_failures;
    as.rollback.ttft_p99_ms = node.cluster.admin.rollback_ttft_p99_ms;
    const std::string token = as.token;
    admin = actors::spawn_admin(sys, std::move(as));
    // The ROUTER's prompt limit: a prompt must leave room in the context for one token.
    const int ctx = node.cluster.limits.ctx_size > 0 ? node.cluster.limits.ctx_size : node.model.max_seq_len;
    const size_t max_prompt_tokens = size_t(std::max(1, ctx - 1));
    // The gateway tokenizes on the I/O threads (the ROUTER gets token ids) and refuses prompts that
    // cannot fit before tokenizing them.
    gateway = std::make_unique<actors::tcp_gateway>(sys, node.router, std::chrono::milliseconds(30'000),
                                                    node.tokenizer, max_prompt_tokens);
    so.host = node.cluster.listen.host;
    so.port = uint16_t(node.cluster.listen.port);
    so.model = node.cluster.model.path;
    so.limits.max_tokens = uint32_t(node.cluster.limits.max_new_tokens);
    // Clients learn these in hello_ok; the frame decoder refuses longer prompts without tokenizing.
    so.limits.max_prompt_tokens = uint32_t(std::min<size_t>(so.limits.max_prompt_tokens, max_prompt_tokens));
    if (gateway->max_prompt_bytes() > 0) {
      so.limits.max_prompt_bytes = uint32_t(std::min<size_t>(so.limits.max_prompt_bytes, gateway->max_prompt_bytes()));
    }
    so.api_keys = api_keys;
    const auto& l = node.cluster.listen;
    if (l.idle_timeout_ms >= 0) so.idle_timeout = std::chrono::milliseconds(l.idle_timeout_ms);
    if (l.header_timeout_ms >= 0) so.header_timeout = std::chrono::milliseconds(l.header_timeout_ms);
    if (l.body_timeout_ms >= 0) so.body_timeout = std::chrono::milliseconds(l.body_timeout_ms);
    if (l.max_connections_per_peer >= 0) so.max_connections_per_peer = size_t(l.max_connections_per_peer);
    gateway->set_admin(admin, token);
    server = std::make_unique<transport::tcp_server>(so, *gateway);
    // The HTTP API on the same ROUTER (docs/http-api.md).
    ho.model_id = model_id_of(node.cluster.model.path);
    ho.limits = so.limits;
    ho.n_replicas = size_t(node.cluster.replicas);
    ho.api_keys = api_keys;
    if (node.cluster.http.enabled) ho.chat = model_chat_template(node.cluster.model.path, ho.model_id);
    ho.admin = admin;
    ho.admin_token = token;
    http_gateway = std::make_unique<actors::http_gateway>(sys, node.router, ho, node.tokenizer);
    hso.host = node.cluster.http.host.empty() ? node.cluster.listen.host : node.cluster.http.host;
    hso.port = uint16_t(node.cluster.http.port);
    hso.tls_cert_file = node.cluster.http.tls_cert;
    hso.tls_key_file = node.cluster.http.tls_key;
    http = std::make_unique<transport::http_server>(hso, *http_gateway);
    http_on = node.cluster.http.enabled;
  }
};

front_ends::front_ends(caf::actor_system& sys, actors::serve_node& node,
                       std::shared_ptr<transport::api_key_set> api_keys, admin_front_options admin)
    : impl_(std::make_unique<impl>(sys, node, std::move(api_keys), std::move(admin))) {}

front_ends::~front_ends() { stop(); }

transport::result<void> front_ends::start() {
  if (!impl_->admin_error.empty()) return std::unexpected(transport::error{transport::errc::io_error, impl_->admin_error, 0});
  if (auto s = impl_->server->start(); !s) return s;
  if (impl_->http_on) {
    if (auto h = impl_->http->start(); !h) return h;
    if (!impl_->ho.api_keys || impl_->ho.api_keys->empty()) {
      spdlog::warn("NO AUTHENTICATION: the HTTP API on {} serves anyone who can reach it, without API keys or "
                   "rate limits. Give --api-key-file FILE (or listen.api_key_file) to require a key.",
                   http_address());
    }
  }
  return {};
}

void front_ends::stop() {
  if (!impl_) return;
  impl_->http->stop();
  impl_->server->stop();
  // The ADMIN stops the replicas it added.
  if (impl_->admin) caf::anon_send_exit(impl_->admin, caf::exit_reason::user_shutdown);
}

actors::admin_actor front_ends::admin() const { return impl_->admin; }

std::string front_ends::client_address() const {
  return fmt::format("{}:{}", impl_->so.host, impl_->server->port());
}

std::string front_ends::http_address() const {
  return impl_->http_on ? fmt::format("{}:{}", impl_->hso.host, impl_->http->port()) : std::string();
}

std::string front_ends::http_url() const {
  if (!impl_->http_on) return {};
  return fmt::format("{}://{}", impl_->hso.tls_cert_file.empty() ? "http" : "https", http_address());
}

const std::string& front_ends::model_id() const { return impl_->ho.model_id; }

int stop_signal_within(const sigset_t& signals, std::chrono::milliseconds period) {
  timespec ts{};
  ts.tv_sec = time_t(period.count() / 1000);
  ts.tv_nsec = long(period.count() % 1000) * 1'000'000L;
  const int sig = sigtimedwait(&signals, nullptr, &ts);
  return sig > 0 ? sig : 0;
}

void wait_for_stop_signal(const sigset_t& signals, const std::string& who, std::chrono::milliseconds period,
                          const std::function<void()>& tick) {
  int sig = 0;
  for (;;) {
    if (!tick) {
      if (sigwait(&signals, &sig) == 0) break;
      continue;
    }
    sig = stop_signal_within(signals, period);
    if (sig != 0) break;
    tick();
  }
  std::fprintf(stderr, "%s: %s, stopping\n", who.c_str(), sig == SIGINT ? "SIGINT" : "SIGTERM");
  // A second SIGINT/SIGTERM while stopping: the operator wants out now. Exit 128 + signal
  // (130 / 143, as the default action would report it), after saying so.
  std::thread([signals, who] {
    int again = 0;
    if (sigwait(&signals, &again) != 0) return;
    std::fprintf(stderr, "%s: second %s while stopping, exiting now without a clean shutdown\n", who.c_str(),
                 again == SIGINT ? "SIGINT" : "SIGTERM");
    std::fflush(stderr);
    std::_Exit(128 + again);
  }).detach();
}

}  // namespace troupe::app
