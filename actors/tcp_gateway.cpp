#include "actors/tcp_gateway.hpp"

#include <random>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/admin_commands.hpp"
#include "actors/logger.hpp"

namespace troupe::actors {

serve_request to_serve_request(const transport::generate_request& r) {
  serve_request s;
  s.prompt = r.prompt;
  s.prompt_tokens = r.prompt_tokens;
  s.max_tokens = int32_t(r.max_tokens);
  s.sampling.temperature = r.temperature;
  s.sampling.top_p = r.top_p;
  s.sampling.top_k = r.top_k;
  s.sampling.repetition_penalty = r.repetition_penalty;
  if (r.seed) {
    s.sampling.seed = *r.seed;
  } else {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    s.sampling.seed = rng();
  }
  s.stop = r.stop;
  s.prio = r.priority == transport::request_priority::batch ? priority::batch : priority::interactive;
  s.deadline_ms = r.deadline_ms;
  return s;
}

tcp_gateway::tcp_gateway(caf::actor_system& sys, router_actor router, std::chrono::milliseconds admit_timeout,
                         std::shared_ptr<const engine::tokenizer> tokenizer, size_t max_prompt_tokens)
    : sys_(sys),
      router_(std::move(router)),
      admit_timeout_(admit_timeout),
      tokenizer_(std::move(tokenizer)),
      max_prompt_tokens_(max_prompt_tokens),
      registry_(std::make_shared<relay_registry>()) {
  if (tokenizer_) max_prompt_bytes_ = actors::max_prompt_bytes(*tokenizer_, max_prompt_tokens_);
}

tcp_gateway::~tcp_gateway() { registry_->stop_all(); }

void tcp_gateway::on_generate(std::shared_ptr<transport::stream_sink> sink, transport::generate_request request) {
  relay_registry::start(registry_, sys_, router_, admit_timeout_,
                        request_rules{.tokenizer = tokenizer_.get(),
                                      .max_prompt_tokens = max_prompt_tokens_,
                                      .max_prompt_bytes = max_prompt_bytes_},
                        std::move(sink), to_serve_request(request));
}

void tcp_gateway::on_cancel(transport::connection_id connection, uint64_t request_id) {
  registry_->cancel({uint64_t(connection), request_id});
}

void tcp_gateway::on_disconnect(transport::connection_id connection) {
  registry_->stop_connection(uint64_t(connection));
}

void tcp_gateway::set_admin(admin_actor admin, std::string token) {
  admin_ = std::move(admin);
  admin_token_ = std::move(token);
}

bool tcp_gateway::admin_token_valid(std::string_view token) const { return admin_token_matches(admin_token_, token); }

void tcp_gateway::on_admin(transport::admin_request request, std::string who,
                           std::function<void(transport::admin_reply)> reply) {
  const uint64_t id = request.request_id;
  if (!admin_) {
    reply(transport::admin_reply{id, false, "not_supported", "this server has no admin console", ""});
    return;
  }
  run_admin_command(sys_, admin_, admin_caller{std::move(request.token), std::move(who)}, std::move(request.command),
                    [id, reply = std::move(reply)](admin_outcome o) {
                      reply(transport::admin_reply{id, o.ok, std::move(o.code), std::move(o.message), std::move(o.json)});
                    });
}

size_t tcp_gateway::n_in_progress() const { return registry_->size(); }

}  // namespace troupe::actors
