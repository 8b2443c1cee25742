#include "actors/replica.hpp"

#include <caf/all.hpp>

namespace troupe::actors {
namespace {

struct replica_state {
  std::vector<stage_actor> stages;
  static inline const char* name = "replica";
};

replica_actor::behavior_type replica_behavior(replica_actor::stateful_pointer<replica_state> self,
                                              std::vector<stage_actor> stages) {
  self->state.stages = std::move(stages);
  return {
    // A micro-batch enters at the first stage; the last stage's reply goes to our requester.
    [self](step_atom, step_request& req) -> caf::result<step_result> {
      if (self->state.stages.empty()) return make_error(serve_errc::internal, "replica without stages");
      return self->delegate(self->state.stages.front(), step_atom::value, std::move(req));
    },
  };
}

}  // namespace

replica_actor spawn_replica(caf::actor_system& sys, std::vector<stage_actor> stages) {
  return sys.spawn(replica_behavior, std::move(stages));
}

}  // namespace troupe::actors
