#pragma once
// The PIPELINE STAGE actor: owns the weights of a layer range [first, last), its own paged KV
// cache (n_blocks blocks, the same block numbering on every stage of a replica) and a thread pool.
// Per micro-batch it applies the deltas (released / added sequences, grown block tables), runs
// its layers, and either hands the activations to the next stage or, as the last stage, samples
// and sends the tokens straight to each sequence's sink (the ROUTER).
#include <chrono>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include <caf/fwd.hpp>

#include "actors/messages.hpp"
#include "engine/model_weights.hpp"
#include "transport/data_plane.hpp"

namespace troupe::actors {

struct stage_setup {
  std::shared_ptr<const engine::model_weights> weights;  // this stage's layers
  int block_size = 16;
  int n_blocks = 256;
  int threads = 1;    // engine threads, the stage's own included
  stage_actor next;   // invalid for the last stage
  /// The data plane, when a neighbour stage is in another process: activations for `next` go to
  /// `next_peer` on it (0: in the message), and activations that arrive tagged are taken from it.
  std::shared_ptr<transport::data_plane> plane;
  transport::peer_id next_peer = 0;
  uint32_t link_id = 0;  // this stage's outgoing link, unique within the cluster (part of each tag)
  std::chrono::milliseconds data_timeout{10'000};  // a tagged tensor that does not come fails the step
};

/// Bytes of the KV cache a stage with this setup allocates (K and V, every local layer); computed
/// without overflow, so an absurd configuration gives an absurd number rather than a wrapped one.
double stage_kv_bytes(const stage_setup& setup);

/// Spawns a stage as a detached actor: its own thread runs its forward passes (plus setup.threads - 1
/// engine pool threads), so a step never holds one of the CAF workers the light actors share.
/// Everything a stage needs before its first step (KV cache, thread pool) is allocated here, in
/// the caller: a stage that cannot start is an error now ("KV cache of ...: cannot allocate"),
/// never an actor that dies at start and fails every step later.
std::expected<stage_actor, std::string> spawn_stage(caf::actor_system& sys, stage_setup setup);

}  // namespace troupe::actors
