#include "actors/replica.hpp"

#include <unordered_map>

#include <caf/all.hpp>

#include "actors/logger.hpp"

namespace troupe::actors {
namespace {

struct replica_state {
  std::vector<stage_actor> stages;
  // Micro-batches in the pipeline, answered when the last stage replies, or failed at once when
  // a stage is lost (its process died, its node's connection closed): the requester does not
  // wait for its step timeout. CAF gives a request to a lost remote actor no error of its own.
  std::unordered_map<uint64_t, caf::response_promise> pending;
  std::string lost;  // why the replica cannot run steps any more (empty: it can)
  static inline const char* name = "replica";
};

using replica_pointer = replica_actor::stateful_pointer<replica_state>;

replica_actor::behavior_type replica_behavior(replica_pointer self, std::vector<stage_actor> stages) {
  self->state.stages = std::move(stages);
  for (auto& s : self->state.stages) self->monitor(s);
  self->set_down_handler([self](const caf::down_msg& dm) {
    auto& st = self->state;
    for (size_t i = 0; i < st.stages.size(); ++i) {
      if (dm.source != caf::actor_cast<caf::actor_addr>(st.stages[i])) continue;
      if (st.lost.empty()) {
        st.lost = fmt::format("stage {} lost ({})", i, caf::to_string(dm.reason));
        logger().error("replica lost a stage stage={} reason={} failing_in_flight={}", i, caf::to_string(dm.reason),
                       st.pending.size());
      }
    }
    if (st.lost.empty()) return;
    for (auto& [mb, rp] : st.pending) rp.deliver(make_error(serve_errc::failed, st.lost));
    st.pending.clear();
  });
  return {
    // A micro-batch enters at the first stage; the last stage's reply comes back here and goes on
    // to our requester.
    [self](step_atom, step_request& req) -> caf::result<step_result> {
      auto& st = self->state;
      if (st.stages.empty()) return make_error(serve_errc::internal, "replica without stages");
      if (!st.lost.empty()) return make_error(serve_errc::failed, st.lost);
      const uint64_t mb = req.micro_batch;
      auto rp = self->make_response_promise<step_result>();
      st.pending.emplace(mb, rp);
      self->request(st.stages.front(), caf::infinite, step_atom::value, std::move(req))
        .then(
          [self, mb](step_result& r) {
            auto it = self->state.pending.find(mb);
            if (it == self->state.pending.end()) return;  // failed already (a stage was lost)
            it->second.deliver(std::move(r));
            self->state.pending.erase(it);
          },
          [self, mb](const caf::error& e) {
            auto it = self->state.pending.find(mb);
            if (it == self->state.pending.end()) return;
            it->second.deliver(e);
            self->state.pending.erase(it);
          });
      return rp;
    },
  };
}

}  // namespace

replica_actor spawn_replica(caf::actor_system& sys, std::vector<stage_actor> stages) {
  return sys.spawn(replica_behavior, std::move(stages));
}

}  // namespace troupe::actors
