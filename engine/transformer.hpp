#pragma once
// The forward pass of a Llama-family model over a range of its layers, batched: one call takes
// several sequences, each with one or more new tokens at its own positions (prefill and decode
// are the same path), reads and writes the paged KV cache through each sequence's block table.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "engine/error.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model_weights.hpp"

namespace troupe::engine {

class thread_pool;

/// One sequence's share of a batch.
struct seq_slice {
  int n_tokens = 0;                     // new tokens this call
  int start_pos = 0;                    // position of the first new token
  std::span<const int32_t> block_table; // must cover positions [0, start_pos + n_tokens)
};

struct forward_batch {
  std::vector<seq_slice> seqs;
  std::vector<int32_t> tokens;  // first stage: the new tokens, sequence after sequence
  std::vector<float> hidden;    // later stages: [total tokens][dim] from the previous stage
  int total_tokens() const {
    int n = 0;
    for (const auto& s : seqs) n += s.n_tokens;
    return n;
  }
};

enum class output_mode {
  hidden_states,  // [total tokens][dim]: the input of the next stage
  last_logits,    // [n seqs][vocab]: logits of each sequence's last new token (last stage)
  all_logits,     // [total tokens][vocab] (last stage; for tests and perplexity)
};

class transformer {
 public:
  /// kv must have weights.n_local_layers() layers and the model's kv_dim.
  transformer(const model_weights& weights, kv_cache& kv, thread_pool* pool = nullptr);

  result<void> forward(const forward_batch& batch, output_mode mode, std::vector<float>& out);

  const model_weights& weights() const { return w_; }

 private:
  const model_weights& w_;
  kv_cache& kv_;
  thread_pool* pool_;
  // scratch, sized per call
  std::vector<float> x_, xb_, q_, k_, v_, att_out_, hb_, hb2_, scores_;
  std::vector<std::pair<int, int>> runs_;  // attention runs: (first token, tokens)
};

}  // namespace troupe::engine
