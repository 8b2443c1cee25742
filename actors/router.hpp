#pragma once
// The ROUTER actor: the front door. Validates and tokenizes requests, picks a replica (fewest
// requests in progress), asks its SCHEDULER to admit, then relays the tokens that last stages send
// it: detokenized incrementally (UTF-8 safe), stop strings applied, streamed to the client as
// stream_chunk messages and one stream_end.
#include <chrono>
#include <memory>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "engine/stop_rule.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::actors {

struct router_setup {
  std::vector<scheduler_actor> schedulers;  // one per replica
  std::shared_ptr<const engine::tokenizer> tokenizer;
  engine::stop_rule stop_rule;  // the model's: end tokens hidden, end markers in text cut off (reason eos)
  int32_t vocab_size = 0;
  int ctx_size = 512;
  int max_new_tokens = 4096;
  std::chrono::milliseconds admit_timeout{10'000};
};

router_actor spawn_router(caf::actor_system& sys, router_setup setup);

}  // namespace troupe::actors
