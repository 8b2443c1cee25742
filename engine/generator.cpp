#include "engine/generator.hpp"

#include <algorithm>
#include <chrono>
#include <vector>

#include "engine/kv_cache.hpp"
#include "engine/transformer.hpp"

namespace troupe::engine {
namespace {

bool forcing_out_of_range(std::span<const int32_t> ids, int vocab_size) {
  return std::any_of(ids.begin(), ids.end(), [&](int32_t id) { return id < 0 || id >= vocab_size; });
}

}  // namespace

result<generate_stats> generate(const model_weights& model, std::span<const int32_t> prompt,
                                const generate_options& opts,
                                const std::function<bool(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  const model_config& c = model.config;
  if (!model.is_first() || !model.is_last()) return fail(errc::invalid_argument, "generate needs the whole model");
  if (prompt.empty()) return fail(errc::invalid_argument, "the prompt has no tokens");
  if (auto bad = validate(opts.sampling); !bad.empty()) return fail(errc::invalid_argument, "{}", bad);
  const int ctx = opts.ctx_size > 0 ? opts.ctx_size : c.max_seq_len;
  if (forcing_out_of_range(opts.forced_tokens, c.vocab_size)) {
    return fail(errc::invalid_argument, "a forced token id is outside the vocabulary of {}", c.vocab_size);
  }
  if (int(prompt.size()) >= ctx) {
    return fail(errc::invalid_argument, "prompt of {} tokens does not fit the context of {}", prompt.size(), ctx);
  }

  // One sequence: a cache just big enough for the context, all blocks in its table.
  const int n_blocks = blocks_for(ctx, opts.block_size);
  kv_cache kv(model.n_local_layers(), c.n_kv_heads, c.head_dim, opts.block_size, n_blocks);
  std::vector<int32_t> table(n_blocks);
  for (int i = 0; i < n_blocks; ++i) table[i] = i;
  transformer tf(model, kv, opts.pool);

  generate_stats stats;
  stats.prompt_tokens = int(prompt.size());
  std::vector<int32_t> history(prompt.begin(), prompt.end());
  std::vector<float> logits;

  // Prefill in chunks; logits of the last prompt token come out of the last chunk.
  const auto t0 = clock::now();
  for (int pos = 0; pos < int(prompt.size());) {
    const int len = std::min<int>(opts.prefill_chunk, int(prompt.size()) - pos);
    forward_batch b;
    b.seqs.push_back(seq_slice{len, pos, table});
    b.tokens.assign(prompt.begin() + pos, prompt.begin() + pos + len);
    if (auto r = tf.forward(b, output_mode::last_logits, logits); !r) return std::unexpected(r.error());
    pos += len;
  }
  const auto t1 = clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  stats.finish = finish_reason::length;
  const bool forcing = !opts.forced_tokens.empty();
  const int max_new = forcing ? int(opts.forced_tokens.size()) : opts.max_new_tokens;
  std::vector<float> step_logits;
  for (int i = 0; i < max_new; ++i) {
    if (opts.on_logits) step_logits = logits;  // sample() may modify logits
    const int32_t sampled = sample(logits, opts.sampling, uint64_t(i), history);
    if (opts.on_logits) opts.on_logits(step_logits, sampled);
    const int32_t next = forcing ? opts.forced_tokens[size_t(i)] : sampled;
    ++stats.completion_tokens;
    history.push_back(next);
    const bool go_on = on_token(sampled);
    if (opts.stop_at_eos && (opts.end_ids.empty() ? next == c.eos_id
                                                  : std::find(opts.end_ids.begin(), opts.end_ids.end(), next) !=
                                                      opts.end_ids.end())) {
      stats.finish = finish_reason::eos;
      break;
    }
    if (!go_on) {
      stats.finish = finish_reason::stop;
      break;
    }
    if (i + 1 == max_new) break;
    const int pos = int(history.size()) - 1;
    if (pos >= ctx) {
      stats.finish = finish_reason::context_full;
      break;
    }
    forward_batch b;
    b.seqs.push_back(seq_slice{1, pos, table});
    b.tokens.push_back(next);
    if (auto r = tf.forward(b, output_mode::last_logits, logits); !r) return std::unexpected(r.error());
  }
  stats.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return stats;
}

}  // namespace troupe::engine
