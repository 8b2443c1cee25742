#pragma once
// A model_config's sizes as one vector, so that a test states a model's shape in one line:
// BOOST_TEST(sizes(c) == (std::vector<int>{dim, hidden, layers, heads, kv_heads, head_dim, vocab, ctx})).
#include <vector>

#include "engine/model_config.hpp"

namespace troupe::test {

/// {dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len}
inline std::vector<int> sizes(const engine::model_config& c) {
  return {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.max_seq_len};
}

}  // namespace troupe::test
