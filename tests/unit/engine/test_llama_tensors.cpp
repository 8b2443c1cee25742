// The llama tensor table every loader and the synthetic-model writer use.
#include <boost/test/unit_test.hpp>

#include <string>
#include <tuple>
#include <vector>

#include "engine/llama_tensors.hpp"

using namespace troupe::engine;

namespace {

model_config gqa_config() {
  model_config c;
  std::tie(c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) =
      std::tuple(64, 172, 4, 8, 2, 8, 512);
  return c;
}

std::vector<std::string> names(tensor_naming naming, const std::vector<llama_tensor>& ts) {
  std::vector<std::string> out;
  for (const auto& t : ts) out.push_back(tensor_name(naming, t));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(llama_tensors)

BOOST_AUTO_TEST_CASE(shapes_follow_the_config_with_grouped_query_attention) {
  const model_config c = gqa_config();
  auto rc = [&](llama_role r) { return std::vector<int64_t>{shape_of(c, r).rows, shape_of(c, r).cols}; };
  BOOST_TEST(rc(llama_role::token_embedding) == (std::vector<int64_t>{512, 64}));
  BOOST_TEST(rc(llama_role::wq) == (std::vector<int64_t>{64, 64}));
  BOOST_TEST(rc(llama_role::wk) == (std::vector<int64_t>{16, 64}));  // 2 kv heads x 8
  BOOST_TEST(rc(llama_role::wv) == (std::vector<int64_t>{16, 64}));
  BOOST_TEST(rc(llama_role::wo) == (std::vector<int64_t>{64, 64}));
  BOOST_TEST(rc(llama_role::w_gate) == (std::vector<int64_t>{172, 64}));
  BOOST_TEST(rc(llama_role::w_down) == (std::vector<int64_t>{64, 172}));
  BOOST_TEST(rc(llama_role::w_up) == (std::vector<int64_t>{172, 64}));
  BOOST_TEST(rc(llama_role::output) == (std::vector<int64_t>{512, 64}));
  for (llama_role r : {llama_role::attn_norm, llama_role::ffn_norm, llama_role::final_norm}) {
    BOOST_TEST(shape_of(c, r).is_vector());
    BOOST_TEST(shape_of(c, r).cols == 64);
  }
}

BOOST_AUTO_TEST_CASE(names_in_each_format) {
  const llama_tensor q{llama_role::wq, 3};
  BOOST_TEST(tensor_name(tensor_naming::gguf, q) == "blk.3.attn_q.weight");
  BOOST_TEST(tensor_name(tensor_naming::hf, q) == "model.layers.3.self_attn.q_proj.weight");
  BOOST_TEST(tensor_name(tensor_naming::llama2c, q) == "wq");
  const llama_tensor head{llama_role::output};
  BOOST_TEST(tensor_name(tensor_naming::gguf, head) == "output.weight");
  BOOST_TEST(tensor_name(tensor_naming::hf, head) == "lm_head.weight");
  BOOST_TEST(tensor_name(tensor_naming::llama2c, head) == "wcls");
  BOOST_TEST(tensor_name(tensor_naming::hf, {llama_role::ffn_norm, 0}) ==
             "model.layers.0.post_attention_layernorm.weight");
}

BOOST_AUTO_TEST_CASE(a_middle_stage_maps_only_its_layers) {
  const auto ts = stage_tensors(4, {1, 3});
  BOOST_TEST(ts.size() == 2 * llama_layer_roles.size());
  for (const auto& t : ts) {
    BOOST_TEST(is_layer_role(t.role));
    BOOST_TEST((t.layer == 1 || t.layer == 2));
  }
  BOOST_TEST(tensor_name(tensor_naming::gguf, ts.front()) == "blk.1.attn_norm.weight");
  BOOST_TEST(tensor_name(tensor_naming::gguf, ts.back()) == "blk.2.ffn_up.weight");
}

BOOST_AUTO_TEST_CASE(first_and_last_stages_add_embedding_and_head) {
  const auto first = names(tensor_naming::gguf, stage_tensors(4, {0, 1}));
  BOOST_TEST(first.front() == "token_embd.weight");
  BOOST_TEST(first.size() == 1 + llama_layer_roles.size());
  const auto last = names(tensor_naming::gguf, stage_tensors(4, {3, 4}));
  BOOST_TEST(last.size() == llama_layer_roles.size() + 2);
  BOOST_TEST(last[last.size() - 2] == "output_norm.weight");
  BOOST_TEST(last.back() == "output.weight");
  BOOST_TEST(stage_tensors(4, {0, 4}).size() == 4 * llama_layer_roles.size() + 3);
}

BOOST_AUTO_TEST_CASE(slots_put_each_view_where_the_transformer_reads_it) {
  model_weights m;
  m.config = gqa_config();
  m.first_layer = 2;
  m.last_layer = 4;
  m.layers.resize(2);
  const std::byte* p = reinterpret_cast<const std::byte*>(&m);
  slot(m, {llama_role::w_down, 3}) = weight{dtype::f32, 64, 172, p};
  slot(m, {llama_role::output}) = weight{dtype::f32, 512, 64, p};
  BOOST_TEST(m.layers[1].w_down.data == p);
  BOOST_TEST(m.layers[1].w_up.empty());
  BOOST_TEST(m.layers[0].w_down.empty());
  BOOST_TEST(m.output.data == p);
  BOOST_TEST(&slot(m.layers[0], llama_role::attn_norm) == &m.layers[0].attn_norm);
}

BOOST_AUTO_TEST_SUITE_END()
