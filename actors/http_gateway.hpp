#pragma once
// The ROUTER behind the HTTP API (docs/http-api.md): a transport::http_handler that routes
// requests, turns the generating ones (/v1/completions, /v1/chat/completions, /v1/inference,
// /v1/tasks) into serve_requests on the request path the client protocol uses (stream_relay), and
// answers /health, /ready, /v1/models and /metrics. Each generating request gets a stream_sink
// that writes OpenAI's JSON or Server-Sent Events to its http_responder.
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/stream_relay.hpp"
#include "engine/tokenizer.hpp"
#include "transport/api_keys.hpp"
#include "transport/client_protocol.hpp"
#include "transport/http_server.hpp"
#include "transport/openai_api.hpp"
#include "transport/serve_metrics.hpp"

namespace troupe::actors {

struct http_gateway_options {
  std::string model_id = "model";  // the name /v1/models lists and requests must give
  transport::protocol_limits limits;
  size_t n_replicas = 1;  // /ready waits for this many SCHEDULERs
  std::chrono::milliseconds admit_timeout{30'000};
  std::chrono::milliseconds stats_timeout{5'000};  // /ready and /metrics ask the ROUTER
  std::chrono::milliseconds task_ttl{600'000};     // finished tasks are kept this long
  size_t max_finished_tasks = 1024;                // ... and at most this many
  size_t max_active_tasks = 1024;                  // queued + running; more get 503
  /// Non-empty: every route but /health, /ready and /metrics needs `Authorization: Bearer KEY`
  /// with one of these, else 401; generating requests are held to the key's rate limits (429
  /// with Retry-After) and run at its priority class. Shared with the client protocol's server.
  std::shared_ptr<transport::api_key_set> api_keys;
  /// How /v1/chat/completions renders messages (the model's chat template family, else plain).
  transport::chat_template chat;
  /// The ADMIN CONSOLE: GET / (the status page), GET /admin/status and POST /admin/command; the
  /// last two need `Authorization: Bearer ADMIN_TOKEN` (API keys do not apply to them).
  admin_actor admin;
  std::string admin_token;
};

class http_gateway final : public transport::http_handler {
 public:
  /// With a tokenizer, prompts are tokenized on the HTTP I/O thread (as the TCP gateway does).
  http_gateway(caf::actor_system& sys, router_actor router, http_gateway_options options,
               std::shared_ptr<const engine::tokenizer> tokenizer = nullptr);
  ~http_gateway() override;  // stops the relays still running

  void on_request(std::shared_ptr<transport::http_responder> out, transport::http_request request) override;
  void on_disconnect(transport::connection_id connection) override;

  /// Relays in progress (tests).
  size_t n_in_progress() const;

  struct shared;  // what sinks share with the gateway: metrics, tasks

 private:
  void generate(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
                transport::api_kind kind, const transport::api_key* key);
  void create_task(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
                   const transport::api_key* key);
  void task(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
            const std::string& id);
  void ready(std::shared_ptr<transport::http_responder> out);
  /// The request's key (Authorization: Bearer KEY); nullptr when absent or unknown.
  const transport::api_key* authenticate(const transport::http_request& request) const;
  /// Admits a generating request of `key` (nullptr: no keys in use). False: answered with 429.
  bool admit(transport::http_responder& out, const transport::api_key* key);
  void metrics(std::shared_ptr<transport::http_responder> out);
  void admin(std::shared_ptr<transport::http_responder> out, const transport::http_request& request);

  caf::actor_system& sys_;
  router_actor router_;
  http_gateway_options options_;
  /// What the gateway checks before the ROUTER (check_request; the prompt limits of options_.limits).
  request_rules rules() const {
    return {.tokenizer = tokenizer_.get(),
            .max_prompt_tokens = options_.limits.max_prompt_tokens,
            .max_prompt_bytes = options_.limits.max_prompt_bytes};
  }
  std::shared_ptr<const engine::tokenizer> tokenizer_;
  std::shared_ptr<relay_registry> registry_;
  std::shared_ptr<shared> shared_;
};

}  // namespace troupe::actors
