#pragma once
// The REPLICA actor: one copy of the model as a chain of PIPELINE STAGEs. A step request goes to
// the first stage, each stage delegates to the next, and the last one answers the requester, so
// several micro-batches can be in the pipeline at once.
//
// It also watches its chain (docs/operations.md, "Failover"): a stage that goes down (its process
// died, its node's connection closed), a node the SUPERVISOR reports lost, or a step held far
// longer than the replica's recent steps took (a hung stage: SIGSTOP, a stuck kernel) makes it
// fail the steps in flight with `interrupted`, stop the old stages, and ask the SUPERVISOR for a
// new chain. Its SCHEDULER then waits (wait_atom) and replays its sequences on the new chain.
// Replies from an older chain are recognised by its generation and dropped.
#include <chrono>
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"

namespace troupe::actors {

struct replica_setup {
  int32_t index = 0;
  std::vector<stage_actor> stages;  // front to back
  supervisor_actor supervisor;      // invalid: no failover (a lost stage fails its steps)
  // A step is hung when it is in flight longer than max(hang_floor, hang_factor x what the
  // replica's recent steps took, scaled to the step's tokens: actors/step_timing.hpp). Until a
  // step was measured there is no such limit.
  double hang_factor = 10.0;
  std::chrono::milliseconds hang_floor{1'000};
};

replica_actor spawn_replica(caf::actor_system& sys, replica_setup setup);

}  // namespace troupe::actors
