#pragma once
// The SCHEDULER actor: a thin actor over batch_policy. It admits sequences, plans micro-batches
// while the pipeline has room (micro_batches in flight), sends them to its REPLICA, feeds the
// sampled tokens back to the policy, and tells each sequence's sink when it finished.
#include <chrono>

#include <caf/fwd.hpp>

#include "actors/batch_policy.hpp"
#include "actors/messages.hpp"

namespace troupe::actors {

struct scheduler_setup {
  batch_policy_config policy;
  replica_actor replica;
  int max_in_flight = 1;  // micro-batches in the pipeline at once
  std::chrono::milliseconds step_timeout{60'000};
  // Decode steps per step request when only decodes run and nobody waits (batch_policy::plan);
  // 1 for a replica of several stages. As many as fit in decode_steps_budget at the measured
  // time per step, so that a request arriving meanwhile waits at most about that long.
  int max_decode_steps = 1;
  std::chrono::milliseconds decode_steps_budget{20};
};

scheduler_actor spawn_scheduler(caf::actor_system& sys, scheduler_setup setup);

}  // namespace troupe::actors
