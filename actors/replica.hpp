#pragma once
// The REPLICA actor: one copy of the model as a chain of PIPELINE STAGEs. A step request goes to
// the first stage, each stage delegates to the next, and the last one answers the requester, so
// several micro-batches can be in the pipeline at once.
#include <vector>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"

namespace troupe::actors {

replica_actor spawn_replica(caf::actor_system& sys, std::vector<stage_actor> stages);

}  // namespace troupe::actors
