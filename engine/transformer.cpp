// The forward pass, llama2.c-style: read top to bottom, one comment per step. All tokens of the
// batch go through each weight matrix together (one matmul per projection per layer).
#include "engine/transformer.hpp"

#include <algorithm>

#include "engine/kernels.hpp"
#include "engine/thread_pool.hpp"

namespace troupe::engine {

transformer::transformer(const model_weights& weights, kv_cache& kv, thread_pool* pool)
    : w_(weights), kv_(kv), pool_(pool) {
  TROUPE_ASSERT(kv.n_layers() == weights.n_local_layers());
  TROUPE_ASSERT(kv.kv_dim() == weights.config.kv_dim());
}

result<void> transformer::forward(const forward_batch& batch, output_mode mode, std::vector<float>& out) {
  const model_config& c = w_.config;
  const int dim = c.dim;
  const int hd = c.head_dim;
  const int q_dim = c.n_heads * hd;
  const int kv_dim = c.kv_dim();
  const int group = c.n_heads / c.n_kv_heads;
  const int bs = kv_.block_size();
  const int n = batch.total_tokens();

  // 0. Check the batch against the model and the cache before touching memory.
  if (n <= 0) return fail(errc::invalid_argument, "forward: empty batch");
  if (mode != output_mode::hidden_states && !w_.is_last()) {
    return fail(errc::invalid_argument, "forward: logits requested from a stage without the output head");
  }
  std::vector<int> tok_seq(n), tok_pos(n);  // sequence index and position of every token
  int max_ctx = 0;
  for (int s = 0, t = 0; s < int(batch.seqs.size()); ++s) {
    const seq_slice& q = batch.seqs[s];
    if (q.n_tokens <= 0 || q.start_pos < 0) return fail(errc::invalid_argument, "forward: sequence {} is empty", s);
    const int end = q.start_pos + q.n_tokens;
    if (int(q.block_table.size()) < blocks_for(end, bs)) {
      return fail(errc::invalid_argument, "forward: sequence {} block table covers {} positions, needs {}", s,
                  int(q.block_table.size()) * bs, end);
    }
    for (int32_t b : q.block_table) {
      if (b < 0 || b >= kv_.n_blocks()) return fail(errc::invalid_argument, "forward: block {} out of range", b);
    }
    for (int i = 0; i < q.n_tokens; ++i, ++t) {
      tok_seq[t] = s;
      tok_pos[t] = q.start_pos + i;
    }
    max_ctx = std::max(max_ctx, end);
  }

  // 1. Input: embed the tokens (first stage) or take the previous stage's hidden states.
  x_.resize(size_t(n) * dim);
  if (w_.is_first()) {
    if (int(batch.tokens.size()) != n) return fail(errc::invalid_argument, "forward: {} tokens for {} slots", batch.tokens.size(), n);
    for (int t = 0; t < n; ++t) {
      const int32_t id = batch.tokens[t];
      if (id < 0 || id >= c.vocab_size) return fail(errc::invalid_argument, "forward: token id {} outside vocabulary of {}", id, c.vocab_size);
      kernels::dequantize_row(w_.token_embedding, id, x_.data() + size_t(t) * dim);
    }
  } else {
    if (batch.hidden.size() != size_t(n) * dim) {
      return fail(errc::invalid_argument, "forward: hidden input has {} floats, expected {}", batch.hidden.size(), size_t(n) * dim);
    }
    std::copy(batch.hidden.begin(), batch.hidden.end(), x_.begin());
  }

  xb_.resize(size_t(n) * dim);
  q_.resize(size_t(n) * q_dim);
  k_.resize(size_t(n) * kv_dim);
  v_.resize(size_t(n) * kv_dim);
  att_out_.resize(size_t(n) * q_dim);
  hb_.resize(size_t(n) * c.hidden_dim);
  hb2_.resize(size_t(n) * c.hidden_dim);
  const int n_threads = pool_ ? pool_->size() : 1;
  // Q8_0/Q4_0 weights multiply 8-bit activations (integer dot products, as llama.cpp does);
  // each token is quantized on its own, so batching does not change its numbers.
  const kernels::activations act = kernels::activations::q8;
  // Attention work items: (run of tokens, group of heads). A run is up to attention_run
  // consecutive tokens of one sequence (a prefill chunk): one call reads the cached positions
  // once for all of them. Enough head groups that every thread has work even for one run, as few
  // as that allows (a group reads each cached position once).
  constexpr int attention_run = 8;
  runs_.clear();
  for (int t = 0; t < n; ++t) {
    if (!runs_.empty() && runs_.back().second < attention_run && tok_seq[t] == tok_seq[runs_.back().first] &&
        tok_pos[t] == tok_pos[t - 1] + 1) {
      ++runs_.back().second;
    } else {
      runs_.emplace_back(t, 1);
    }
  }
  const int n_runs = int(runs_.size());
  // Per-token element-wise work (norms, RoPE, cache stores, residuals): each token's numbers are
  // its own, so a batch splits over the threads by token without changing a bit.
  auto per_token = [&](auto&& fn) {
    parallel_for(pool_, n, [&](int64_t b, int64_t e, int) {
      for (int64_t t = b; t < e; ++t) fn(int(t));
    }, 4);
  };
  const int wanted_groups = std::min(c.n_heads, (4 * n_threads + n_runs - 1) / n_runs);
  const int heads_per_group = (c.n_heads + wanted_groups - 1) / wanted_groups;
  const int head_groups = (c.n_heads + heads_per_group - 1) / heads_per_group;  // none of them empty
  const size_t scratch_floats = kernels::attention_scratch_floats(heads_per_group, max_ctx, attention_run);
  scores_.resize(size_t(n_threads) * scratch_floats);

  for (int l = 0; l < w_.n_local_layers(); ++l) {
    const layer_weights& L = w_.layers[l];

    // 2. Attention RMSNorm, then the q, k, v projections for all tokens at once.
    per_token([&](int t) { kernels::rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], L.attn_norm.f32(), dim, c.rms_eps); });
    {
      const kernels::matmul_out qkv[] = {{q_.data(), &L.wq}, {k_.data(), &L.wk}, {v_.data(), &L.wv}};
      kernels::matmul_many(qkv, xb_.data(), n, act, pool_);
    }

    // 3. RoPE on q and k at each token's position; q rounded to f16, k and v stored in the cache
    //    as f16 (llama.cpp's f16 KV cache numbers: the same GGUF then takes llama.cpp's tokens).
    per_token([&](int t) {
      const int pos = tok_pos[t];
      kernels::rope(&q_[size_t(t) * q_dim], c.n_heads, hd, pos, c.rope_theta, c.rope);
      kernels::rope(&k_[size_t(t) * kv_dim], c.n_kv_heads, hd, pos, c.rope_theta, c.rope);
      kernels::round_to_f16(&q_[size_t(t) * q_dim], q_dim);
      const int32_t block = batch.seqs[tok_seq[t]].block_table[pos / bs];
      kernels::to_f16(&k_[size_t(t) * kv_dim], kv_.k(l, block, pos % bs), kv_dim);
      kernels::to_f16(&v_[size_t(t) * kv_dim], kv_.v(l, block, pos % bs), kv_dim);
    });

    // 4. Causal attention: token at position p sees positions [0, p]; threads over (run, heads).
    parallel_for(pool_, int64_t(n_runs) * head_groups, [&](int64_t begin, int64_t end, int thread) {
      float* scratch = &scores_[size_t(thread) * scratch_floats];
      for (int64_t i = begin; i < end; ++i) {
        // Later runs see longer contexts: hand them out first, so that the threads finish together.
        const auto [t, n_tok] = runs_[size_t(n_runs - 1 - i / head_groups)];
        const int h0 = int(i % head_groups) * heads_per_group;
        const int h1 = std::min(c.n_heads, h0 + heads_per_group);
        kernels::attention(&att_out_[size_t(t) * q_dim], &q_[size_t(t) * q_dim], kv_, l,
                           batch.seqs[tok_seq[t]].block_table.data(), tok_pos[t] + 1, hd, h0, h1, group, scratch,
                           n_tok, q_dim);
      }
    });

    // 5. Output projection (its residual is added in 6).
    {
      const kernels::matmul_out o[] = {{xb_.data(), &L.wo}};
      kernels::matmul_many(o, att_out_.data(), n, act, pool_);
    }

    // 6. Feed-forward: (the residual above and) RMSNorm, SwiGLU(gate, up), down projection, residual.
    per_token([&](int t) {
      kernels::add(&x_[size_t(t) * dim], &xb_[size_t(t) * dim], dim);
      kernels::rmsnorm(&xb_[size_t(t) * dim], &x_[size_t(t) * dim], L.ffn_norm.f32(), dim, c.rms_eps);
    });
    {
      const kernels::matmul_out gate_up[] = {{hb_.data(), &L.w_gate}, {hb2_.data(), &L.w_up}};
      kernels::matmul_many(gate_up, xb_.data(), n, act, pool_);
    }
    per_token([&](int t) { kernels::swiglu(&hb_[size_t(t) * c.hidden_dim], &hb2_[size_t(t) * c.hidden_dim], c.hidden_dim); });
    {
      const kernels::matmul_out down[] = {{xb_.data(), &L.w_down}};
      kernels::matmul_many(down, hb_.data(), n, act, pool_);
    }
    per_token([&](int t) { kernels::add(&x_[size_t(t) * dim], &xb_[size_t(t) * dim], dim); });
  }

  // 7. Output: hidden states for the next stage, or final norm + output head for logits.
  if (mode == output_mode::hidden_states) {
    out.assign(x_.begin(), x_.end());
    return {};
  }
  std::vector<int> rows;  // which tokens need logits
  if (mode == output_mode::all_logits) {
    for (int t = 0; t < n; ++t) rows.push_back(t);
  } else {
    for (int s = 0, t = 0; s < int(batch.seqs.size()); ++s) {
      t += batch.seqs[s].n_tokens;
      rows.push_back(t - 1);
    }
  }
  const int m = int(rows.size());
  for (int i = 0; i < m; ++i) {
    kernels::rmsnorm(&xb_[size_t(i) * dim], &x_[size_t(rows[i]) * dim], w_.final_norm.f32(), dim, c.rms_eps);
  }
  out.resize(size_t(m) * c.vocab_size);
  const kernels::matmul_out head[] = {{out.data(), &w_.output}};
  kernels::matmul_many(head, xb_.data(), m, act, pool_);
  return {};
}

}  // namespace troupe::engine
