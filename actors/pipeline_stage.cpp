#include "actors/pipeline_stage.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <system_error>
#include <span>
#include <unordered_map>

#include <unistd.h>

#include <caf/all.hpp>

#include "actors/logger.hpp"
#include "engine/kv_cache.hpp"
#include "engine/sampling.hpp"
#include "engine/thread_pool.hpp"
#include "engine/transformer.hpp"

namespace troupe::actors {
namespace {

// What a stage remembers of a sequence between micro-batches.
struct stage_sequence {
  std::vector<int32_t> blocks;   // block table (same physical numbering on every stage)
  std::vector<int32_t> history;  // last stage: prompt + generated (repetition penalty)
  engine::sampling_params sampling;
  token_sink_actor sink;
  std::vector<int32_t> stop_ids;  // last stage: a run of several decode steps ends after one
};

struct stage_state {
  stage_setup setup;
  std::unique_ptr<engine::kv_cache> kv;
  std::unique_ptr<engine::thread_pool> pool;
  std::unique_ptr<engine::transformer> tf;
  std::unordered_map<request_id, stage_sequence> seqs;
  std::vector<float> out;
  static inline const char* name = "pipeline_stage";
};

using stage_pointer = stage_actor::stateful_pointer<stage_state>;

// The seam between stages: in-process the activations move inside the message; to a stage in
// another process they go on the data plane and the message carries their tag (this link's id
// and the micro-batch: unique while the step is in flight).
hidden_states pack_hidden(stage_state& st, std::vector<float>& data, int n_tokens, int dim, uint64_t micro_batch,
                          std::vector<int64_t> stage_ns) {
  hidden_states h;
  h.n_tokens = n_tokens;
  h.dim = dim;
  h.stage_ns = std::move(stage_ns);
  if (st.setup.plane == nullptr || st.setup.next_peer == 0) {
    h.data = std::move(data);  // moved, not copied
    return h;
  }
  h.tag = (uint64_t(st.setup.link_id) << 40) | (micro_batch & ((uint64_t(1) << 40) - 1));
  std::vector<std::byte> bytes(data.size() * sizeof(float));
  std::memcpy(bytes.data(), data.data(), bytes.size());
  st.setup.plane->send(st.setup.next_peer, h.tag, std::move(bytes), [tag = h.tag](transport::result<void> r) {
    // The next stage's receive times out and fails the step; this says why.
    if (!r) logger().error("data plane send failed tag={:#x} error={}", tag, r.error().message);
  });
  return h;
}

// A tagged tensor from the previous stage's process: wait for it (this stage's own thread).
caf::expected<std::vector<float>> take_hidden(stage_state& st, const hidden_states& in) {
  if (st.setup.plane == nullptr) return make_error(serve_errc::internal, "tagged activations but no data plane");
  auto m = st.setup.plane->receive_wait(in.tag, 0, st.setup.data_timeout);
  if (!m) return make_error(serve_errc::failed, fmt::format("activations {:#x}: {}", in.tag, m.error().message));
  const size_t expected = size_t(in.n_tokens) * size_t(in.dim) * sizeof(float);
  if (m->bytes.size() != expected) {
    return make_error(serve_errc::failed, fmt::format("activations {:#x}: {} bytes, expected {}", in.tag,
                                                      m->bytes.size(), expected));
  }
  std::vector<float> data(size_t(in.n_tokens) * size_t(in.dim));
  std::memcpy(data.data(), m->bytes.data(), expected);
  return data;
}

// One micro-batch through this stage: apply deltas, forward, then pass on or sample.
caf::result<step_result> run_step(stage_pointer self, step_request& req, hidden_states* in) {
  stage_state& st = self->state;
  const engine::model_weights& w = *st.setup.weights;

  // 1. Deltas: drop released sequences, add new ones, grow block tables.
  for (request_id id : req.released) st.seqs.erase(id);
  for (new_sequence& ns : req.added) {
    stage_sequence& s = st.seqs[ns.id];
    s = stage_sequence{};
    if (w.is_last()) {
      s.history = std::move(ns.history);
      s.sampling = ns.sampling;
      s.sink = std::move(ns.sink);
      s.stop_ids = std::move(ns.stop_ids);
    }
  }
  if (req.n_steps > 1 && !(w.is_first() && w.is_last())) {
    return make_error(serve_errc::internal, "several decode steps in one request need a replica of one stage");
  }
  engine::forward_batch batch;
  batch.seqs.reserve(req.work.size());
  for (planned_seq& p : req.work) {
    auto it = st.seqs.find(p.id);
    if (it == st.seqs.end()) {
      return make_error(serve_errc::internal, fmt::format("stage [{}, {}): unknown sequence {}", w.first_layer,
                                                          w.last_layer, p.id.value));
    }
    it->second.blocks.insert(it->second.blocks.end(), p.new_blocks.begin(), p.new_blocks.end());
  }
  for (const planned_seq& p : req.work) {
    const stage_sequence& s = st.seqs.at(p.id);
    batch.seqs.push_back(engine::seq_slice{int(p.tokens.size()), p.start_pos, std::span<const int32_t>(s.blocks)});
    if (w.is_first()) batch.tokens.insert(batch.tokens.end(), p.tokens.begin(), p.tokens.end());
  }
  if (!w.is_first()) {
    if (in == nullptr) return make_error(serve_errc::internal, "a later stage got tokens instead of activations");
    if (in->tag != 0) {
      auto data = take_hidden(st, *in);
      if (!data) {
        logger().error("step failed stage=[{},{}) micro_batch={} error={}", w.first_layer, w.last_layer,
                       req.micro_batch, describe(data.error()));
        return std::move(data.error());
      }
      batch.hidden = std::move(*data);
    } else {
      batch.hidden = std::move(in->data);
    }
  }

  // The stages before this one, and then this one: what each step took (status shows it; the
  // data plane's wait above is not this stage's work).
  std::vector<int64_t> stage_ns;
  if (in != nullptr) stage_ns = std::move(in->stage_ns);
  const auto started = std::chrono::steady_clock::now();
  auto elapsed_ns = [&started] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count();
  };

  // 2. Forward through this stage's layers.
  const auto mode = w.is_last() ? engine::output_mode::last_logits : engine::output_mode::hidden_states;
  if (auto r = st.tf->forward(batch, mode, st.out); !r) {
    logger().error("forward failed stage=[{},{}) micro_batch={} error={}", w.first_layer, w.last_layer,
                   req.micro_batch, r.error().message);
    return make_error(serve_errc::failed, r.error().message);
  }

  // 3a. Not last: hand the activations to the next stage, which answers the requester.
  if (!w.is_last()) {
    const int n = batch.total_tokens();
    const uint64_t micro_batch = req.micro_batch;
    stage_ns.push_back(elapsed_ns());
    return self->delegate(st.setup.next, hidden_atom::value, std::move(req),
                          pack_hidden(st, st.out, n, w.config.dim, micro_batch, std::move(stage_ns)));
  }

  // 3b. Last: sample where the plan says so, with the engine's counter-based sampler. With
  //     n_steps > 1 (a single-stage replica, decodes only) the samples go straight back in as
  //     the next step's tokens, n_steps times, each step's tokens streamed as they come; a
  //     sequence drops out after one of its stop ids.
  step_result result;
  result.micro_batch = req.micro_batch;
  const int vocab = w.config.vocab_size;
  std::vector<size_t> rows;  // req.work index of each row of logits in st.out
  for (size_t i = 0; i < req.work.size(); ++i) rows.push_back(i);
  for (int k = 0;; ++k) {
    std::unordered_map<token_sink_actor, token_batch> by_sink;
    std::vector<size_t> next_rows;
    engine::forward_batch next;
    for (size_t r = 0; r < rows.size(); ++r) {
      const planned_seq& p = req.work[rows[r]];
      if (!p.sample) continue;
      stage_sequence& s = st.seqs.at(p.id);
      std::span<float> logits(st.out.data() + r * size_t(vocab), size_t(vocab));
      const int32_t token = engine::sample(logits, s.sampling, uint64_t(p.step + k), s.history);
      s.history.push_back(token);
      const sampled_token t{p.id, token, p.step + k};
      result.tokens.push_back(t);
      if (s.sink) by_sink[s.sink].tokens.push_back(t);
      if (k + 1 < req.n_steps && std::find(s.stop_ids.begin(), s.stop_ids.end(), token) == s.stop_ids.end()) {
        next_rows.push_back(rows[r]);
        next.seqs.push_back(engine::seq_slice{1, p.start_pos + k + 1, std::span<const int32_t>(s.blocks)});
        next.tokens.push_back(token);
      }
    }
    if (next_rows.empty()) {
      // The tokens first, to the ROUTER directly (not through the SCHEDULER), then the reply.
      // Both travel the same way (one mailbox, or one connection to the head), in order, so a
      // reply that arrives always comes after its tokens: the SCHEDULER never holds a token the
      // ROUTER has not had. The other order lost streams in the chaos soak: a partition cut a
      // node after its reply but before its tokens; the replay went on from the SCHEDULER's
      // tokens, and the ROUTER, which takes each request's tokens in order, dropped every later
      // one waiting for the lost ones (the client saw its stream stop, with no error).
      stage_ns.push_back(elapsed_ns() / (k + 1));  // per forward pass
      result.stage_ns = std::move(stage_ns);
      for (auto& [sink, tb] : by_sink) self->send(sink, tokens_atom::value, std::move(tb));
      auto rp = self->make_response_promise<step_result>();
      rp.deliver(std::move(result));
      return rp;
    }
    for (auto& [sink, tb] : by_sink) self->send(sink, tokens_atom::value, std::move(tb));
    if (auto r = st.tf->forward(next, engine::output_mode::last_logits, st.out); !r) {
      logger().error("forward failed stage=[{},{}) micro_batch={} decode step {} error={}", w.first_layer,
                     w.last_layer, req.micro_batch, k + 1, r.error().message);
      return make_error(serve_errc::failed, r.error().message);
    }
    rows = std::move(next_rows);
  }
}

// What spawn_stage allocates for a stage before the actor exists.
struct stage_engine {
  std::unique_ptr<engine::kv_cache> kv;
  std::unique_ptr<engine::thread_pool> pool;
  std::unique_ptr<engine::transformer> tf;
};

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

stage_actor::behavior_type stage_behavior(stage_pointer self, stage_setup setup, std::shared_ptr<stage_engine> eng) {
  stage_state& st = self->state;
  st.setup = std::move(setup);
  const engine::model_weights& w = *st.setup.weights;
  st.kv = std::move(eng->kv);
  st.pool = std::move(eng->pool);
  st.tf = std::move(eng->tf);
  logger().info("stage started layers=[{},{}) kv_blocks={} block_size={} kv_bytes={} threads={}", w.first_layer,
                w.last_layer, st.setup.n_blocks, st.setup.block_size, st.kv->size_bytes(), st.setup.threads);
  return {
    // First stage: tokens in.
    [self](step_atom, step_request& req) -> caf::result<step_result> { return run_step(self, req, nullptr); },
    // Later stages: the previous stage's activations in.
    [self](hidden_atom, step_request& req, hidden_states& in) -> caf::result<step_result> {
      return run_step(self, req, &in);
    },
  };
}

}  // namespace

double stage_kv_bytes(const stage_setup& setup) {
  const engine::model_weights& w = *setup.weights;
  return 2.0 * double(w.n_local_layers()) * double(setup.n_blocks) * double(setup.block_size) *
         double(w.config.n_kv_heads) * double(w.config.head_dim) * double(sizeof(uint16_t));  // f16 cache
}

std::expected<stage_actor, std::string> spawn_stage(caf::actor_system& sys, stage_setup setup) {
  const engine::model_weights& w = *setup.weights;
  const auto& c = w.config;
  auto eng = std::make_shared<stage_engine>();
  // An obviously impossible size (its pages are only touched as blocks fill, so a mapping far
  // larger than the machine may still succeed, and fail much later).
  const double kv_bytes = stage_kv_bytes(setup);
  const double ram_bytes = double(::sysconf(_SC_PHYS_PAGES)) * double(::sysconf(_SC_PAGESIZE));
  if (ram_bytes > 0 && kv_bytes > ram_bytes) {
    return std::unexpected(fmt::format("KV cache of {} blocks x {} positions x {} layers needs {}, more than this "
                                       "machine's memory ({}): lower the KV blocks or the block size",
                                       setup.n_blocks, setup.block_size, w.n_local_layers(), human_bytes(kv_bytes),
                                       human_bytes(ram_bytes)));
  }
  try {
    eng->kv = std::make_unique<engine::kv_cache>(w.n_local_layers(), c.n_kv_heads, c.head_dim, setup.block_size,
                                                 setup.n_blocks);
  } catch (const std::bad_alloc&) {
    return std::unexpected(fmt::format("KV cache of {} blocks x {} positions x {} layers ({}): cannot allocate",
                                       setup.n_blocks, setup.block_size, w.n_local_layers(),
                                       human_bytes(stage_kv_bytes(setup))));
  }
  try {
    eng->pool = std::make_unique<engine::thread_pool>(std::max(1, setup.threads));
  } catch (const std::system_error& e) {
    return std::unexpected(fmt::format("cannot start {} engine threads: {}", setup.threads, e.what()));
  }
  eng->tf = std::make_unique<engine::transformer>(w, *eng->kv, eng->pool.get());
  // Detached: a stage's thread runs the forward passes and sleeps between steps; the light
  // actors (ROUTER, SCHEDULERs, REPLICAs, relays) share the CAF workers. A stage's next message
  // wakes its thread directly, so stages of one pipeline run in parallel without waiting for an
  // idle CAF worker to steal them.
  return sys.spawn<caf::detached>(stage_behavior, std::move(setup), std::move(eng));
}

}  // namespace troupe::actors
