// GGUF reader, writer and llama loader: real files, layer ranges, every metadata type, and
// corrupt inputs that must give errors (never crashes or huge allocations).
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <unistd.h>

#include <fmt/format.h>

#include "engine/gguf.hpp"
#include "engine/model_weights.hpp"
#include "tests/test_support.hpp"
#include "tests/unit/engine/model_sizes.hpp"
#include "tests/test_support.hpp"

namespace eng = troupe::engine;
namespace gg = troupe::engine::gguf;
namespace fs = std::filesystem;

using troupe::test::temp_dir;
using troupe::test::write_bytes;
const auto read_bytes = troupe::test::read_bytes<uint8_t>;

namespace {

/// Builds GGUF bytes by hand, including things the writer never produces.
struct raw_gguf {
  std::vector<uint8_t> b;
  template <class T>
  raw_gguf& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  raw_gguf& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  raw_gguf& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return put<uint32_t>(version).put<uint64_t>(n_tensors).put<uint64_t>(n_kv);
  }
  raw_gguf& key(const std::string& k, gg::value_type t) { return str(k).put<uint32_t>(uint32_t(t)); }
  raw_gguf& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).put<uint32_t>(uint32_t(ne.size()));
    for (auto d : ne) put<uint64_t>(d);
    return put<uint32_t>(type).put<uint64_t>(offset);
  }
  raw_gguf& pad(size_t alignment = 32) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    return *this;
  }
  raw_gguf& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

/// A small, valid llama GGUF (2 layers, dim 32, f32) built with the writer.
gg::writer small_llama_writer(bool tied = false, int vocab = 40) {
  const int dim = 32, hidden = 64, heads = 4, kv_heads = 2, layers = 2;
  const int head_dim = dim / heads, kv_dim = kv_heads * head_dim;
  gg::writer w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "small");
  w.set_uint32("llama.embedding_length", dim);
  w.set_uint32("llama.feed_forward_length", hidden);
  w.set_uint32("llama.block_count", layers);
  w.set_uint32("llama.attention.head_count", heads);
  w.set_uint32("llama.attention.head_count_kv", kv_heads);
  w.set_uint32("llama.context_length", 64);
  w.set_float32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_float32("llama.rope.freq_base", 500000.0f);
  std::vector<std::string> tokens;
  for (int i = 0; i < vocab; ++i) tokens.push_back(fmt::format("t{}", i));
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_uint32("tokenizer.ggml.bos_token_id", 3);
  w.set_uint32("tokenizer.ggml.eos_token_id", 4);
  int counter = 0;
  auto mat = [&](const std::string& name, int64_t rows, int64_t cols) {
    std::vector<float> v(size_t(rows * cols));
    for (auto& x : v) x = float(counter++ % 97) * 0.01f;
    std::vector<std::byte> bytes(v.size() * 4);
    std::memcpy(bytes.data(), v.data(), bytes.size());
    w.add_tensor(name, {cols, rows}, gg::ggml_type::f32, std::move(bytes));
  };
  auto norm_f16 = [&](const std::string& name) {  // norms as f16 (0.5), converted by the loader
    std::vector<std::byte> bytes(size_t(dim) * 2);
    for (int i = 0; i < dim; ++i) {
      const uint16_t h = 0x3800;  // 0.5
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
    w.add_tensor(name, {dim}, gg::ggml_type::f16, std::move(bytes));
  };
  mat("token_embd.weight", vocab, dim);
  norm_f16("output_norm.weight");
  if (!tied) mat("output.weight", vocab, dim);
  for (int l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    norm_f16(p + "attn_norm.weight");
    mat(p + "attn_q.weight", dim, dim);
    mat(p + "attn_k.weight", kv_dim, dim);
    mat(p + "attn_v.weight", kv_dim, dim);
    mat(p + "attn_output.weight", dim, dim);
    norm_f16(p + "ffn_norm.weight");
    mat(p + "ffn_gate.weight", hidden, dim);
    mat(p + "ffn_down.weight", dim, hidden);
    mat(p + "ffn_up.weight", hidden, dim);
  }
  return w;
}

/// The error of opening `bytes` as GGUF (BOOST_REQUIREs that it fails).
eng::error open_error(const temp_dir& dir, const std::vector<uint8_t>& bytes) {
  const auto p = dir / "bad.gguf";
  write_bytes(p, bytes);
  auto f = gg::file::open(p);
  BOOST_REQUIRE_MESSAGE(!f.has_value(), "corrupt file was accepted");
  return f.error();
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_SUITE(gguf)

BOOST_AUTO_TEST_CASE(reads_tinystories_656k_q8_0, *troupe::test::needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  const auto path = troupe::test::model_path("TinyStories-656K-Q8_0.gguf");
  auto f = gg::file::open(path);
  BOOST_REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
  BOOST_TEST(f->version() == 3u);
  BOOST_TEST(f->alignment() == 32u);
  BOOST_TEST(f->data_offset() == 50848u);
  BOOST_TEST(f->tensors().size() == 20u);
  BOOST_TEST(*f->get_string("general.architecture") == "llama");
  BOOST_TEST(*f->get_uint("general.file_type") == 7u);
  auto tokens = f->get_string_array("tokenizer.ggml.tokens");
  BOOST_REQUIRE(tokens);
  BOOST_TEST(tokens->size() == 2048u);
  BOOST_TEST((*tokens)[1] == "<|start_story|>");
  BOOST_TEST(f->get_float_array("tokenizer.ggml.scores")->size() == 2048u);
  auto types = f->get_int_array("tokenizer.ggml.token_type");
  BOOST_REQUIRE(types);
  BOOST_TEST((*types)[0] == 3);
  BOOST_TEST(*f->get_string_array("general.languages") == std::vector<std::string>{"en"});
  const auto* embd = f->find_tensor("token_embd.weight");
  BOOST_REQUIRE(embd != nullptr);
  BOOST_TEST((embd->type == gg::ggml_type::q8_0));
  BOOST_TEST(embd->ne == (std::vector<int64_t>{128, 2048}));
  BOOST_TEST(embd->size_bytes == 2048u * 4 * 34);
  // Wrong-type and missing look-ups name the key.
  BOOST_TEST(contains(f->get_string("llama.block_count").error().message, "llama.block_count"));
  BOOST_TEST(contains(f->get_uint("no.such.key").error().message, "no.such.key"));

  auto m = eng::load_model(path);
  BOOST_REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
  const auto& c = m->config;
  BOOST_TEST(m->format == "gguf");
  BOOST_TEST(c.arch == "llama");
  BOOST_TEST(troupe::test::sizes(c) == (std::vector<int>{128, 384, 2, 8, 4, 16, 2048, 512}));
  BOOST_TEST(std::abs(c.rms_eps - 1e-6f) < 1e-12f);
  BOOST_TEST(c.rope_theta == 10000.0f);
  BOOST_TEST((c.rope == eng::rope_style::interleaved));
  BOOST_TEST(c.bos_id == 1);
  BOOST_TEST(c.eos_id == 2);
  BOOST_TEST(c.tied_output);  // the file has no output.weight
  BOOST_TEST(m->first_layer == 0);
  BOOST_TEST(m->last_layer == 2);
  BOOST_REQUIRE(m->layers.size() == 2u);
  BOOST_TEST((m->token_embedding.type == eng::dtype::q8_0));
  BOOST_TEST(m->token_embedding.rows == 2048);
  BOOST_TEST(m->token_embedding.cols == 128);
  BOOST_TEST(m->output.data == m->token_embedding.data);
  BOOST_TEST((m->final_norm.type == eng::dtype::f32));
  BOOST_TEST(m->final_norm.cols == 128);
  const auto& l1 = m->layers[1];
  BOOST_TEST(l1.wq.rows == 128);
  BOOST_TEST(l1.wk.rows == 64);
  BOOST_TEST(l1.wk.cols == 128);
  BOOST_TEST(l1.wo.cols == 128);
  BOOST_TEST(l1.w_down.rows == 128);
  BOOST_TEST(l1.w_down.cols == 384);
  BOOST_TEST(l1.w_gate.rows == 384);
  BOOST_TEST((l1.w_up.type == eng::dtype::q8_0));
  // Views point into the mapping at the tensor's absolute offset.
  BOOST_REQUIRE(m->tensors.size() == 20u);
  const auto& files = m->files;
  BOOST_REQUIRE(files.size() == 1u);
  for (const auto& t : m->tensors) {
    if (t.name == "blk.1.ffn_up.weight") {
      BOOST_TEST(t.offset == 50848u + 646656u);
      BOOST_TEST(t.shape == (std::vector<int64_t>{384, 128}));
      BOOST_TEST(l1.w_up.data == files[0]->data() + t.offset);
    }
  }
  // Weight bytes: everything in the file's data section except the tied head counted once.
  uint64_t expect = 0;
  for (const auto& t : f->tensors()) expect += t.size_bytes;
  BOOST_TEST(m->weight_bytes() == expect);
}

BOOST_AUTO_TEST_CASE(reads_stories260k_f32_with_defaults, *troupe::test::needs_models({"derived/stories260K.gguf", "stories260K.bin"})) {
  const auto path = troupe::test::model_path("derived/stories260K.gguf");
  auto m = eng::load_model(path);
  BOOST_REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
  const auto& c = m->config;
  BOOST_TEST(c.dim == 64);
  BOOST_TEST(c.hidden_dim == 172);
  BOOST_TEST(c.n_layers == 5);
  BOOST_TEST(c.n_heads == 8);
  BOOST_TEST(c.n_kv_heads == 4);
  BOOST_TEST(c.vocab_size == 512);  // from the token list (no llama.vocab_size key)
  BOOST_TEST(c.max_seq_len == 128);
  BOOST_TEST(c.rope_theta == 10000.0f);  // default (no llama.rope.freq_base key)
  BOOST_TEST(!c.tied_output);
  BOOST_TEST(m->output.data != m->token_embedding.data);
  BOOST_TEST((m->layers[4].w_down.type == eng::dtype::f32));
  BOOST_TEST(m->tensors.size() == 48u);
  // The converter copies the llama2.c embedding unchanged: compare with stories260K.bin.
  auto bin = read_bytes(troupe::test::model_path("stories260K.bin"));
  BOOST_REQUIRE(bin.size() > 28 + 64 * 4);
  const float* embd = m->token_embedding.f32();
  for (int i = 0; i < 64 * 3; ++i) {
    float x;
    std::memcpy(&x, bin.data() + 28 + 4 * i, 4);
    BOOST_TEST(embd[i] == x);
  }
}

BOOST_AUTO_TEST_CASE(maps_only_the_requested_layers, *troupe::test::needs_models({"derived/stories260K.gguf", "TinyStories-656K-Q8_0.gguf"})) {
  const auto path = troupe::test::model_path("derived/stories260K.gguf");
  auto mid = eng::load_model(path, {eng::layer_range{1, 3}});
  BOOST_REQUIRE_MESSAGE(mid, (mid ? "" : mid.error().message));
  BOOST_TEST(mid->first_layer == 1);
  BOOST_TEST(mid->last_layer == 3);
  BOOST_TEST(mid->layers.size() == 2u);
  BOOST_TEST(mid->token_embedding.empty());
  BOOST_TEST(mid->output.empty());
  BOOST_TEST(mid->final_norm.empty());
  BOOST_TEST(mid->tensors.size() == 48u);  // the directory lists every tensor

  auto full = eng::load_model(path);
  BOOST_REQUIRE(full);
  // Same tensors (each load maps the file anew: compare offsets into the mapping).
  auto offset_in = [](const eng::model_weights& m, const eng::weight& w) { return w.data - m.files[0]->data(); };
  BOOST_TEST(offset_in(*mid, mid->layers[0].wq) == offset_in(*full, full->layers[1].wq));
  BOOST_TEST(offset_in(*mid, mid->layers[1].w_up) == offset_in(*full, full->layers[2].w_up));
  BOOST_TEST(mid->weight_bytes() < full->weight_bytes());

  auto first = eng::load_model(path, {eng::layer_range{0, 1}});
  BOOST_REQUIRE(first);
  BOOST_TEST(!first->token_embedding.empty());
  BOOST_TEST(first->output.empty());
  BOOST_TEST(first->layers.size() == 1u);

  auto last = eng::load_model(path, {eng::layer_range{4, -1}});
  BOOST_REQUIRE(last);
  BOOST_TEST(last->token_embedding.empty());
  BOOST_TEST(!last->output.empty());
  BOOST_TEST(!last->final_norm.empty());
  BOOST_TEST(last->layers.size() == 1u);
  BOOST_TEST(last->is_last());

  // A tied model's last stage gets the head as a view of token_embd.
  auto tied = eng::load_model(troupe::test::model_path("TinyStories-656K-Q8_0.gguf"), {eng::layer_range{1, 2}});
  BOOST_REQUIRE(tied);
  BOOST_TEST(tied->token_embedding.empty());
  BOOST_TEST(!tied->output.empty());
  BOOST_TEST(tied->output.rows == 2048);

  auto bad = eng::load_model(path, {eng::layer_range{2, 9}});
  BOOST_REQUIRE(!bad);
  BOOST_TEST((bad.error().code == eng::errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(writer_round_trips_metadata_and_tensors) {
  temp_dir dir;
  gg::writer w;
  w.set_uint32("a.u32", 4000000000u);
  w.set_float32("a.f32", 0.1f);
  w.set_bool("a.yes", true);
  w.set_bool("a.no", false);
  w.set_string("a.str", "h\xC3\xA9llo \xE2\x96\x81 world");
  w.set_string("a.empty", "");
  w.set_string_array("a.strs", {"x", "", "\xE2\x96\x81the"});
  w.set_string_array("a.no_strs", {});
  w.set_float32_array("a.floats", {1.5f, -2.25f, 1e-30f});
  w.set_int32_array("a.ints", {-7, 0, 2147483647});
  w.set_uint32("a.replaced", 1);
  w.set_uint32("a.replaced", 2);
  std::vector<std::byte> t1(3 * 5 * 4, std::byte{0x11});
  std::vector<std::byte> t2(2 * 34, std::byte{0x22});
  w.add_tensor("one", {5, 3}, gg::ggml_type::f32, t1);
  w.add_tensor("two", {64}, gg::ggml_type::q8_0, t2);
  const auto p = dir / "rt.gguf";
  auto r = w.write(p);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  BOOST_TEST(!fs::exists(p.string() + ".partial"));

  auto f = gg::file::open(p);
  BOOST_REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
  BOOST_TEST(f->metadata().size() == 11u);
  BOOST_TEST(*f->get_uint("a.u32") == 4000000000u);
  BOOST_TEST((f->find("a.u32")->type == gg::value_type::uint32));
  BOOST_TEST(float(*f->get_float("a.f32")) == 0.1f);
  BOOST_TEST((f->find("a.f32")->type == gg::value_type::float32));
  BOOST_TEST(std::get<bool>(f->find("a.yes")->data) == true);
  BOOST_TEST(std::get<bool>(f->find("a.no")->data) == false);
  BOOST_TEST(*f->get_string("a.str") == "h\xC3\xA9llo \xE2\x96\x81 world");
  BOOST_TEST(*f->get_string("a.empty") == "");
  BOOST_TEST(*f->get_string_array("a.strs") == (std::vector<std::string>{"x", "", "\xE2\x96\x81the"}));
  BOOST_TEST(f->get_string_array("a.no_strs")->empty());
  BOOST_TEST(*f->get_float_array("a.floats") == (std::vector<float>{1.5f, -2.25f, 1e-30f}));
  BOOST_TEST(*f->get_int_array("a.ints") == (std::vector<int64_t>{-7, 0, 2147483647}));
  BOOST_TEST((std::get<std::vector<gg::value>>(f->find("a.ints")->data)[0].type == gg::value_type::int32));
  BOOST_TEST(*f->get_uint("a.replaced") == 2u);
  BOOST_TEST(!f->get_int_array("a.floats"));  // wrong element type

  BOOST_REQUIRE(f->tensors().size() == 2u);
  const auto* one = f->find_tensor("one");
  const auto* two = f->find_tensor("two");
  BOOST_REQUIRE(one != nullptr);
  BOOST_REQUIRE(two != nullptr);
  BOOST_TEST(one->ne == (std::vector<int64_t>{5, 3}));
  BOOST_TEST(one->size_bytes == 60u);
  BOOST_TEST(two->size_bytes == 68u);
  BOOST_TEST(f->data_offset() % 32 == 0u);
  BOOST_TEST(one->offset == 0u);
  BOOST_TEST(two->offset == 64u);  // padded to the alignment
  BOOST_TEST(std::memcmp(f->tensor_data(*one), t1.data(), t1.size()) == 0);
  BOOST_TEST(std::memcmp(f->tensor_data(*two), t2.data(), t2.size()) == 0);
  BOOST_TEST(fs::file_size(p) == f->data_offset() + 64 + 96);  // data section padded too

  // A tensor whose bytes do not match its shape is refused.
  gg::writer bad;
  bad.add_tensor("x", {33}, gg::ggml_type::q8_0, std::vector<std::byte>(34));
  BOOST_TEST(!bad.write(dir / "bad.gguf"));
}

BOOST_AUTO_TEST_CASE(reads_every_metadata_type_and_nested_arrays) {
  temp_dir dir;
  using vt = gg::value_type;
  raw_gguf g;
  g.header(0, 14, 2);  // version 2 is read too
  g.key("u8", vt::uint8).put<uint8_t>(200);
  g.key("i8", vt::int8).put<int8_t>(-100);
  g.key("u16", vt::uint16).put<uint16_t>(60000);
  g.key("i16", vt::int16).put<int16_t>(-30000);
  g.key("u32", vt::uint32).put<uint32_t>(4000000000u);
  g.key("i32", vt::int32).put<int32_t>(-2000000000);
  g.key("f32", vt::float32).put<float>(2.5f);
  g.key("bool", vt::boolean).put<uint8_t>(1);
  g.key("str", vt::string).str("text");
  g.key("u64", vt::uint64).put<uint64_t>(1ull << 60);
  g.key("i64", vt::int64).put<int64_t>(-(1ll << 60));
  g.key("f64", vt::float64).put<double>(0.1);
  g.key("nested", vt::array).put<uint32_t>(uint32_t(vt::array)).put<uint64_t>(2);
  g.put<uint32_t>(uint32_t(vt::uint16)).put<uint64_t>(2).put<uint16_t>(1).put<uint16_t>(2);
  g.put<uint32_t>(uint32_t(vt::string)).put<uint64_t>(1).str("in");
  g.key("i8s", vt::array).put<uint32_t>(uint32_t(vt::int8)).put<uint64_t>(3);
  g.put<int8_t>(-1).put<int8_t>(0).put<int8_t>(1);
  const auto p = dir / "types.gguf";
  write_bytes(p, g.b);
  auto f = gg::file::open(p);
  BOOST_REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
  BOOST_TEST(f->version() == 2u);
  BOOST_TEST(*f->get_uint("u8") == 200u);
  BOOST_TEST(std::get<int64_t>(f->find("i8")->data) == -100);
  BOOST_TEST(*f->get_uint("u16") == 60000u);
  BOOST_TEST(std::get<int64_t>(f->find("i16")->data) == -30000);
  BOOST_TEST(*f->get_uint("u32") == 4000000000u);
  BOOST_TEST(std::get<int64_t>(f->find("i32")->data) == -2000000000);
  BOOST_TEST(*f->get_float("f32") == 2.5);
  BOOST_TEST(std::get<bool>(f->find("bool")->data));
  BOOST_TEST(*f->get_string("str") == "text");
  BOOST_TEST(*f->get_uint("u64") == (1ull << 60));
  BOOST_TEST(std::get<int64_t>(f->find("i64")->data) == -(1ll << 60));
  BOOST_TEST(*f->get_float("f64") == 0.1);
  BOOST_TEST(!f->get_uint("i8"));  // negative
  const auto& nested = std::get<std::vector<gg::value>>(f->find("nested")->data);
  BOOST_REQUIRE(nested.size() == 2u);
  BOOST_TEST(std::get<std::vector<gg::value>>(nested[0].data).size() == 2u);
  BOOST_TEST(std::get<std::string>(std::get<std::vector<gg::value>>(nested[1].data)[0].data) == "in");
  BOOST_TEST(*f->get_int_array("i8s") == (std::vector<int64_t>{-1, 0, 1}));
  BOOST_TEST(f->tensors().empty());
}

BOOST_AUTO_TEST_CASE(loads_written_llama_and_converts_f16_norms) {
  temp_dir dir;
  auto w = small_llama_writer();
  const auto p = dir / "small.gguf";
  BOOST_REQUIRE(w.write(p));
  auto m = eng::load_model(p);
  BOOST_REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
  BOOST_TEST(m->config.dim == 32);
  BOOST_TEST(m->config.vocab_size == 40);
  BOOST_TEST(m->config.bos_id == 3);
  BOOST_TEST(m->config.eos_id == 4);
  BOOST_TEST(m->config.rope_theta == 500000.0f);
  BOOST_TEST(m->config.rms_eps == 1e-6f);
  BOOST_TEST(m->config.name == "small");
  BOOST_TEST((m->layers[0].attn_norm.type == eng::dtype::f32));
  BOOST_TEST(m->layers[1].ffn_norm.f32()[31] == 0.5f);
  BOOST_TEST(m->final_norm.f32()[0] == 0.5f);
  BOOST_TEST(m->owned.size() == 5u);  // 2 x 2 layer norms + output norm converted

  auto tied_w = small_llama_writer(true);
  BOOST_REQUIRE(tied_w.write(dir / "tied.gguf"));
  auto tied = eng::load_model(dir / "tied.gguf");
  BOOST_REQUIRE(tied);
  BOOST_TEST(tied->config.tied_output);
  BOOST_TEST(tied->output.data == tied->token_embedding.data);
}

BOOST_AUTO_TEST_CASE(loader_errors_name_the_problem) {
  temp_dir dir;
  auto load_error = [&](gg::writer w) {
    const auto p = dir / "x.gguf";
    BOOST_REQUIRE(w.write(p));
    auto m = eng::load_model(p);
    BOOST_REQUIRE(!m);
    return m.error();
  };
  {
    auto w = small_llama_writer();
    w.set_string("general.architecture", "gpt2");
    auto e = load_error(std::move(w));
    BOOST_TEST((e.code == eng::errc::unsupported));
    BOOST_TEST(contains(e.message, "architecture 'gpt2'"));
  }
  {
    auto w = small_llama_writer();
    w.set_uint32("llama.embedding_length", 48);  // tensors no longer match
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "expected"));
    BOOST_TEST(contains(e.message, "tensor '"));
  }
  {
    auto w = small_llama_writer();
    w.set_uint32("llama.feed_forward_length", 65);
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "blk.0.ffn_gate.weight"));
    BOOST_TEST(contains(e.message, "expected [65, 32]"));
  }
  {
    auto w = small_llama_writer();
    w.set_uint32("llama.block_count", 3);
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "blk.2.attn_norm.weight"));
    BOOST_TEST(contains(e.message, "missing"));
  }
  {
    auto w = small_llama_writer();
    w.set_uint32("llama.attention.head_count_kv", 3);
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "head_count_kv"));
  }
  {
    auto w = small_llama_writer();
    w.set_uint32("tokenizer.ggml.bos_token_id", 40);
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "bos_token_id"));
  }
  {
    auto w = small_llama_writer();
    w.set_string("llama.block_count", "two");
    auto e = load_error(std::move(w));
    BOOST_TEST(contains(e.message, "llama.block_count"));
  }
  {  // K-quant tensors are listed by type name
    temp_dir d2;
    raw_gguf g;
    g.header(1, 0).tensor("blk.0.attn_q.weight", {256, 1}, 12, 0).pad().zeros(144);
    write_bytes(d2 / "k.gguf", g.b);
    auto f = gg::file::open(d2 / "k.gguf");
    BOOST_REQUIRE_MESSAGE(f, (f ? "" : f.error().message));
    BOOST_TEST(f->tensors()[0].size_bytes == 144u);
    BOOST_TEST(!gg::to_dtype(f->tensors()[0].type).has_value());
  }
}

BOOST_AUTO_TEST_CASE(corrupt_headers_give_errors) {
  temp_dir dir;
  using vt = gg::value_type;
  auto code_of = [&](const raw_gguf& g) { return open_error(dir, g.b).code; };

  BOOST_TEST((open_error(dir, {}).code == eng::errc::truncated));
  BOOST_TEST((open_error(dir, {'G', 'G', 'U'}).code == eng::errc::truncated));
  {
    raw_gguf g;
    g.header(0, 0);
    g.b[0] = 'X';
    auto e = open_error(dir, g.b);
    BOOST_TEST((e.code == eng::errc::bad_format));
    BOOST_TEST(contains(e.message, "magic"));
  }
  BOOST_TEST((code_of(raw_gguf{}.header(0, 0, 1)) == eng::errc::unsupported));
  BOOST_TEST((code_of(raw_gguf{}.header(0, 0, 0x03000000)) == eng::errc::unsupported));
  // Huge counts are refused before anything is allocated.
  BOOST_TEST((code_of(raw_gguf{}.header(~0ull, 0)) == eng::errc::truncated));
  BOOST_TEST((code_of(raw_gguf{}.header(0, ~0ull)) == eng::errc::truncated));
  BOOST_TEST((code_of(raw_gguf{}.header(0, 1ull << 40)) == eng::errc::truncated));
  {
    raw_gguf g;
    g.header(0, 1).put<uint64_t>(~0ull).zeros(16);  // key length
    auto e = open_error(dir, g.b);
    BOOST_TEST((e.code == eng::errc::truncated));
    BOOST_TEST(contains(e.message, "string length"));
  }
  {
    raw_gguf g;
    g.header(0, 1).key("k", vt::string).put<uint64_t>(1ull << 62);
    auto e = open_error(dir, g.b);
    BOOST_TEST(contains(e.message, "key 'k'"));
  }
  {
    raw_gguf g;
    g.header(0, 1).key("big.array", vt::array).put<uint32_t>(uint32_t(vt::uint64)).put<uint64_t>(1ull << 61);
    g.zeros(64);
    auto e = open_error(dir, g.b);
    BOOST_TEST((e.code == eng::errc::truncated));
    BOOST_TEST(contains(e.message, "big.array"));
  }
  {  // more array elements than any real vocabulary: refused before decoding
    raw_gguf g;
    g.header(0, 1).key("many", vt::array).put<uint32_t>(uint32_t(vt::uint8)).put<uint64_t>((1ull << 23) + 1);
    g.zeros((1u << 23) + 1);
    auto e = open_error(dir, g.b);
    BOOST_TEST((e.code == eng::errc::bad_format));
    BOOST_TEST(contains(e.message, "key 'many'"));
  }
  {  // deeply nested arrays
    raw_gguf g;
    g.header(0, 1).key("deep", vt::array);
    for (int i = 0; i < 10; ++i) g.put<uint32_t>(uint32_t(vt::array)).put<uint64_t>(1);
    g.put<uint32_t>(uint32_t(vt::uint8)).put<uint64_t>(0);
    BOOST_TEST((code_of(g) == eng::errc::unsupported));
  }
  BOOST_TEST((code_of(raw_gguf{}.header(0, 1).key("t", gg::value_type(13)).zeros(8)) == eng::errc::bad_format));
  BOOST_TEST((code_of(raw_gguf{}.header(0, 1).key("b", vt::boolean).put<uint8_t>(7)) == eng::errc::bad_format));
  {
    raw_gguf g;
    g.header(0, 2).key("k", vt::uint8).put<uint8_t>(1).key("k", vt::uint8).put<uint8_t>(2);
    auto e = open_error(dir, g.b);
    BOOST_TEST(contains(e.message, "duplicate key 'k'"));
  }
  for (uint32_t a : {0u, 3u, 48u}) {
    raw_gguf g;
    g.header(0, 1).key("general.alignment", vt::uint32).put<uint32_t>(a);
    auto e = open_error(dir, g.b);
    BOOST_TEST(contains(e.message, "general.alignment"));
  }
}

BOOST_AUTO_TEST_CASE(corrupt_tensor_directories_give_errors) {
  temp_dir dir;
  auto message = [&](const raw_gguf& g) { return open_error(dir, g.b).message; };
  // n_dims out of range
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {}, 0, 0).pad().zeros(32)), "n_dims"));
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {1, 1, 1, 1, 1}, 0, 0).pad().zeros(32)), "n_dims"));
  // element count overflow
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {1ull << 32, 1ull << 32}, 0, 0).pad()), "overflow"));
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {~0ull}, 0, 0).pad()), "too large"));
  // byte size overflow (a fine element count, too many bytes), and a size far past the end
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {1ull << 31, 1ull << 31}, 0, 0).pad()),
                      "byte size overflows"));
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {1ull << 30, 1ull << 30}, 0, 0).pad()),
                      "lies past the end"));
  // ne[0] not a whole number of blocks
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {33, 1}, 8, 0).pad().zeros(64)), "block size"));
  // unknown type
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {4}, 4, 0).pad().zeros(32)), "ggml type 4"));
  // unaligned offset
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {4}, 0, 4).pad().zeros(64)), "alignment"));
  // data past the end of the file, and an offset far past it
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {16}, 0, 0).pad().zeros(32)), "'t'"));
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).tensor("t", {8}, 0, ~0ull & ~31ull).pad().zeros(32)),
                      "past the end"));
  // duplicate tensor names
  BOOST_TEST(contains(message(raw_gguf{}.header(2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad().zeros(64)),
                      "duplicate tensor 't'"));
  // tensor directory promised but the file ends
  BOOST_TEST(contains(message(raw_gguf{}.header(1, 0).str("t")), "tensor count"));
  {
    raw_gguf g;
    g.header(1, 0).tensor("t", {8, 8}, 0, 0);
    g.b.resize(g.b.size() - 4);  // cut inside the offset
    BOOST_TEST(contains(message(g), "tensor 't' offset"));
  }
  // data section start beyond the end of the file
  BOOST_TEST((open_error(dir, raw_gguf{}.header(1, 0).tensor("t", {0}, 0, 0).b).code == eng::errc::truncated));
  // a valid minimal file for contrast
  const auto p = dir / "ok.gguf";
  write_bytes(p, raw_gguf{}.header(1, 0).tensor("t", {8}, 0, 0).pad().zeros(32).b);
  BOOST_TEST(gg::file::open(p).has_value());
}

BOOST_AUTO_TEST_CASE(every_truncation_of_a_small_model_is_an_error, *troupe::test::needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  temp_dir dir;
  auto w = small_llama_writer();
  const auto p = dir / "full.gguf";
  BOOST_REQUIRE(w.write(p));
  const auto bytes = read_bytes(p);
  auto full = gg::file::open(p);
  BOOST_REQUIRE(full);
  const size_t data_end = full->data_offset() + full->tensors().back().offset + full->tensors().back().size_bytes;
  // Every cut in the first 128 bytes, then strides through the metadata, directory and data.
  for (size_t n = 0; n < bytes.size(); n += (n < 128 ? 1 : n < full->data_offset() ? 11 : 499)) {
    if (n >= data_end) break;
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + std::ptrdiff_t(n));
    const auto q = dir / "cut.gguf";
    write_bytes(q, cut);
    auto f = gg::file::open(q);
    if (f) {  // a cut in the padding before the data section can leave a readable directory
      BOOST_TEST_REQUIRE(n >= full->data_offset());
    } else {
      BOOST_TEST_REQUIRE(contains(f.error().message, "gguf: "));
    }
    auto m = eng::load_gguf_model(q, {});
    BOOST_TEST_REQUIRE(!m.has_value());
  }
  // Real file cut at a few points.
  const auto real = read_bytes(troupe::test::model_path("TinyStories-656K-Q8_0.gguf"));
  for (size_t n : {size_t(3), size_t(24), size_t(1000), size_t(30000), size_t(50848), real.size() - 1}) {
    const auto q = dir / "cut_real.gguf";
    write_bytes(q, std::vector<uint8_t>(real.begin(), real.begin() + std::ptrdiff_t(n)));
    auto m = eng::load_gguf_model(q, {});
    BOOST_TEST(!m.has_value());
    if (!m) BOOST_TEST((m.error().code == eng::errc::truncated));
  }
}

BOOST_AUTO_TEST_CASE(random_corruption_never_crashes) {
  temp_dir dir;
  auto w = small_llama_writer(false, 8);
  const auto p = dir / "base.gguf";
  BOOST_REQUIRE(w.write(p));
  const auto base = read_bytes(p);
  auto full = gg::file::open(p);
  BOOST_REQUIRE(full);
  const size_t header = full->data_offset();
  std::mt19937_64 rng(1234);
  int rejected = 0;
  for (int iter = 0; iter < 400; ++iter) {
    auto b = base;
    const int n_changes = 1 + int(rng() % 4);
    for (int c = 0; c < n_changes; ++c) {
      const size_t at = rng() % header;
      switch (rng() % 3) {
        case 0: b[at] ^= uint8_t(1u << (rng() % 8)); break;
        case 1: b[at] = uint8_t(rng()); break;
        default:  // a plausible-looking large little-endian number
          for (size_t k = 0; k < 8 && at + k < header; ++k) b[at + k] = k < 4 ? 0xff : 0x7f;
      }
    }
    const auto q = dir / "fuzz.gguf";
    write_bytes(q, b);
    auto m = eng::load_gguf_model(q, {});  // must return, with or without an error
    if (!m) {
      ++rejected;
      BOOST_TEST_REQUIRE(!m.error().message.empty());
    }
  }
  BOOST_TEST(rejected > 100);
}

BOOST_AUTO_TEST_SUITE_END()
