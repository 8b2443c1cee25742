#pragma once
// The ROUTER behind the client protocol: a transport::request_handler that turns each generate
// frame into a request to the ROUTER, with a small relay actor per request carrying its stream
// back to the transport's stream_sink. A disconnect stops the connection's relays; the ROUTER
// sees them go and cancels their requests (their KV blocks are freed at once).
#include <chrono>
#include <memory>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "actors/stream_relay.hpp"
#include "engine/tokenizer.hpp"
#include "transport/request_handler.hpp"

namespace troupe::actors {

class tcp_gateway final : public transport::request_handler {
 public:
  /// With a tokenizer, prompt text is tokenized here, on the transport's I/O thread, and the
  /// ROUTER gets token ids: a long prompt (a 256 KiB one takes ~150 ms) then does not hold up the
  /// ROUTER, and with it every stream's tokens. Without one, the ROUTER tokenizes.
  /// `max_prompt_tokens` (0: no limit here) is the ROUTER's limit (the context less one): a
  /// prompt longer than that is refused here with prompt_too_long, and one whose byte length
  /// alone shows it cannot fit (more than max_prompt_tokens x the tokenizer's longest piece) is
  /// refused before tokenizing, so a refused prompt costs little.
  tcp_gateway(caf::actor_system& sys, router_actor router,
              std::chrono::milliseconds admit_timeout = std::chrono::milliseconds(30'000),
              std::shared_ptr<const engine::tokenizer> tokenizer = nullptr, size_t max_prompt_tokens = 0);

  /// The most prompt bytes that can fit max_prompt_tokens (0: no limit).
  size_t max_prompt_bytes() const { return max_prompt_bytes_; }
  ~tcp_gateway() override;  // stops the relays still running

  void on_generate(std::shared_ptr<transport::stream_sink> sink, transport::generate_request request) override;
  void on_cancel(transport::connection_id connection, uint64_t request_id) override;
  void on_disconnect(transport::connection_id connection) override;

  /// The ADMIN CONSOLE behind the admin frames, and its token (admin frames are refused until set).
  void set_admin(admin_actor admin, std::string token);
  void on_admin(transport::admin_request request, std::string who,
                std::function<void(transport::admin_reply)> reply) override;
  bool admin_token_valid(std::string_view token) const override;

  /// Relays in progress (tests).
  size_t n_in_progress() const;

 private:
  caf::actor_system& sys_;
  router_actor router_;
  std::chrono::milliseconds admit_timeout_;
  std::shared_ptr<const engine::tokenizer> tokenizer_;
  size_t max_prompt_tokens_ = 0;
  size_t max_prompt_bytes_ = 0;
  std::shared_ptr<relay_registry> registry_;
  admin_actor admin_;
  std::string admin_token_;
};

/// The client protocol's view of a serve_request (seed absent: the server picks one).
serve_request to_serve_request(const transport::generate_request& r);

}  // namespace troupe::actors
