#pragma once
// The SCHEDULER's decisions as a plain class (no actors, no threads, no clock: time is passed in),
// so tests drive it directly. Iteration-level (continuous) batching over a paged KV cache:
//   admit()     queue a request (or refuse it: overloaded, too long)
//   plan()      one step: decodes of running sequences + chunked prefills, within the token budget
//               and the free KV blocks; interactive before batch, earliest deadline first;
//               preempts the newest sequence (by recompute) when blocks run out
//   on_result() the sampled tokens of a micro-batch: append, finish on EOS / length / stop / context
//   cancel()    drop a sequence and free its blocks at once
// Several micro-batches may be in flight; a sequence is in at most one of them.
#include <cstdint>
#include <compare>
#include <deque>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/messages.hpp"
#include "engine/kv_cache.hpp"

namespace troupe::actors {

enum class admit_status { ok, overloaded, too_long };
const char* admit_status_name(admit_status s);

/// One micro-batch.
struct step_plan {
  uint64_t micro_batch = 0;
  std::vector<planned_seq> seqs;
  std::vector<request_id> released;  // stages drop these sequences (finished, cancelled, preempted)
  std::vector<finished_seq> finished;  // finished without running (deadline, max_tokens 0)
  int n_tokens = 0;
  int n_decodes = 0;
  int n_preempted = 0;  // sequences preempted while planning this step
  // Decode steps the stage runs for this micro-batch, feeding each sampled token back in
  // (> 1 only when every planned sequence decodes and nothing waits; see plan()). Sequence i
  // then samples tokens step .. step + n_steps - 1, or fewer if it produces one of its stop ids.
  int n_steps = 1;
  bool empty() const { return seqs.empty(); }
};

struct batch_policy_config {
  int block_size = 16;
  int n_blocks = 256;        // KV blocks per stage
  int max_step_tokens = 256; // token budget per step
  int max_running = 32;
  int max_waiting = 256;
  int prefill_chunk = 128;
  int ctx_size = 512;        // positions per sequence (the engine's context)
  // Micro-batches the SCHEDULER keeps in flight at once (one per stage of a pipeline): each takes
  // at most its share of the sequences, so every stage works on an equal part of the batch
  // (otherwise the first plan's prefill budget decides the groups, and a stage idles while the
  // other runs the larger one).
  int micro_batches = 1;
  std::vector<int32_t> end_ids{2};  // tokens that end a sequence (engine::stop_rule::end_ids; reason eos)
};

class batch_policy {
 public:
  explicit batch_policy(const batch_policy_config& cfg);

  const batch_policy_config& config() const { return cfg_; }

  /// Queues a request. overloaded: the waiting queue is full; too_long: the request could never
  /// fit the KV cache on its own. The request was checked at the edge (check_request): a
  /// duplicate id, an empty prompt or one that fills the context is a bug (TROUPE_ASSERT).
  admit_status admit(sequence_spec spec, int64_t now_ns);

  /// Drops a sequence wherever it is and frees its blocks now (a result still in flight for it
  /// is ignored). False when unknown.
  bool cancel(request_id id);

  /// The next micro-batch (empty when nothing can run now). The plan's sequences are in flight
  /// until on_result / on_failure for its micro_batch. With max_steps > 1, a micro-batch of
  /// decodes only, planned while no request waits, runs up to max_steps decode steps in one go
  /// (fewer where a sequence would reach max_tokens or the context, or blocks are short): one
  /// round trip between SCHEDULER and stage per max_steps tokens instead of per token. Only for a
  /// replica of one stage, which can feed its own samples back.
  step_plan plan(int64_t now_ns, int max_steps = 1);

  /// The ids after which a sequence stops (EOS when it stops there, then its stop tokens): a
  /// stage running several decode steps ends the sequence's run at one of them.
  std::vector<int32_t> stop_ids(request_id id) const;

  /// Tokens sampled by micro-batch `micro_batch`; returns the sequences that finished.
  std::vector<finished_seq> on_result(uint64_t micro_batch, std::span<const sampled_token> tokens);

  /// The micro-batch failed: its sequences finish with reason failed.
  std::vector<finished_seq> on_failure(uint64_t micro_batch);

  /// The stages lost every sequence (the replica's chain was rebuilt): every micro-batch in
  /// flight is forgotten and every sequence is recomputed (prompt + generated, as after a
  /// preemption: the sampling counter continues, so the text does not change). Returns how many
  /// sequences will be replayed.
  int reset_all();

  /// Every sequence finishes with `reason` (the replica gave up).
  std::vector<finished_seq> finish_all(finish_reason reason);

  // Observers (metrics, tests).
  int n_free_blocks() const { return blocks_.n_free(); }
  int n_waiting() const { return int(waiting_.size()); }
  int n_running() const { return int(running_.size()); }
  int n_in_flight() const { return int(in_flight_.size()); }
  int64_t n_preemptions() const { return n_preemptions_; }
  bool contains(request_id id) const { return seqs_.contains(id); }
  bool idle() const { return seqs_.empty(); }
  /// Tokens generated so far by a known sequence (-1 when unknown).
  int n_generated(request_id id) const;
  /// Blocks a known sequence holds (-1 when unknown).
  int n_blocks_held(request_id id) const;

 private:
  enum class state { waiting, running };
  struct sequence {
    sequence_spec spec;
    uint64_t arrival = 0;          // admission order; larger = newer
    std::vector<int32_t> tokens;   // prompt + generated
    int n_generated = 0;
    int n_computed = 0;            // positions whose K/V are (planned to be) in the cache
    engine::block_table table;     // its KV blocks
    int n_blocks_sent = 0;         // table entries the stages know
    bool registered = false;       // stages hold its state
    bool in_flight = false;
    int first_step = 0;            // n_generated when its micro-batch was planned
    state st = state::waiting;
  };

  bool before(const sequence& a, const sequence& b) const;  // scheduling order
  void free_blocks(sequence& s);
  void preempt(sequence& s);
  void finish(sequence& s, finish_reason r, std::vector<finished_seq>& out);
  void remove(request_id id);
  bool grow(sequence& s, int n_positions);  // reserve blocks to cover n_positions
  planned_seq make_work(sequence& s, int n_tokens);

  batch_policy_config cfg_;
  std::unordered_map<request_id, sequence> seqs_;
  std::vector<request_id> waiting_;  // unordered; sorted when planning
  std::vector<request_id> running_;
  engine::block_allocator blocks_;
  std::map<uint64_t, std::vector<request_id>> in_flight_;  // micro-batch -> its sequences
  std::vector<request_id> pending_released_;
  std::vector<finished_seq> pending_finished_;
  uint64_t next_arrival_ = 0;
  uint64_t next_micro_batch_ = 1;
  int64_t n_preemptions_ = 0;
};

}  // namespace troupe::actors
