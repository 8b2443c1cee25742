// Hugging Face directories: the real TinyStories-656K model, small synthetic models (F16/BF16,
// shards, misaligned data) written here, and corrupt headers / config files.
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <atomic>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "engine/fp16.hpp"
#include "engine/model_weights.hpp"
#include "engine/safetensors.hpp"
#include "tests/test_support.hpp"
#include "tests/unit/engine/model_sizes.hpp"
#include "tests/test_support.hpp"

using namespace troupe::engine;
namespace fs = std::filesystem;
// The suite below is named `safetensors` too: reach the engine namespace through an alias.
namespace st = troupe::engine::safetensors;

using troupe::test::temp_dir;

using troupe::test::temp_dir;

namespace {

template <class T>
std::string message_of(const result<T>& r) {
  return r ? std::string("(loaded)")
           : fmt::format("{}: {}", errc_name(r.error().code), r.error().message);
}

template <class T>
void check_error(const result<T>& r, errc code, const std::string& mentions) {
  BOOST_REQUIRE_MESSAGE(!r, "loaded, expected " << errc_name(code));
  BOOST_TEST(errc_name(r.error().code) == errc_name(code), r.error().message);
  BOOST_TEST(r.error().message.find(mentions) != std::string::npos,
             "'" << r.error().message << "' does not mention '" << mentions << "'");
}

struct st_tensor {
  std::string name;
  std::string dtype;  // "F32", "F16", "BF16", or anything to test rejection
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};

/// Values v(i) = base + i / 4 (exact in f16 and bf16 for the sizes used here), in `dtype`.
std::vector<std::byte> encode(const std::string& dtype, int64_t n, float base) {
  const size_t elem = dtype == "F32" ? 4 : 2;
  std::vector<std::byte> out(size_t(n) * elem);
  for (int64_t i = 0; i < n; ++i) {
    const float v = base + float(i % 64) / 4.0f;
    if (dtype == "F32") {
      std::memcpy(out.data() + i * 4, &v, 4);
    } else {
      const uint16_t h =
          dtype == "F16" ? f32_to_f16(v) : uint16_t(std::bit_cast<uint32_t>(v) >> 16);
      std::memcpy(out.data() + i * 2, &h, 2);
    }
  }
  return out;
}

/// Writes a .safetensors file; `data_align` is the alignment of the first data byte in the file
/// (8 as the format's writers do; 2 to test the loader's copy of misaligned data).
void write_safetensors(const fs::path& p, const std::vector<st_tensor>& ts, size_t data_align = 8) {
  std::string header = R"({"__metadata__":{"format":"pt"})";
  uint64_t at = 0;
  for (const auto& t : ts) {
    header += fmt::format(R"(,"{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", t.name,
                          t.dtype, fmt::join(t.shape, ","), at, at + t.bytes.size());
    at += t.bytes.size();
  }
  header += "}";
  // Pad with spaces until 8 + len == data_align (mod 8), or == 2 (mod 4) for a misaligned start.
  while ((8 + header.size()) % 8 != data_align % 8) header += ' ';
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  file += header;
  for (const auto& t : ts)
    file.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  troupe::test::write_bytes(p, file);
}

/// Writes a raw file: 8-byte length, header text, data bytes.
void write_raw(const fs::path& p, uint64_t header_len, const std::string& header,
               size_t data_bytes) {
  std::string file(8, '\0');
  std::memcpy(file.data(), &header_len, 8);
  file += header;
  file.append(data_bytes, '\0');
  troupe::test::write_bytes(p, file);
}

// A tiny Llama: dim 8, hidden 16, 2 layers, 2 heads (head_dim 4), 1 kv head, vocab 16.
constexpr const char* tiny_config = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
  "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
  "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 32,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": [2, 3]})";

std::vector<st_tensor> tiny_tensors(const std::string& mat, const std::string& norm,
                                    bool with_head = true) {
  std::vector<st_tensor> ts;
  float base = 0;
  const auto add = [&](const std::string& name, const std::string& dt, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    ts.push_back({name, dt, shape, encode(dt, n, base)});
    base += 1;
  };
  add("model.embed_tokens.weight", mat, {16, 8});
  for (int l = 0; l < 2; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    add(p + "input_layernorm.weight", norm, {8});
    add(p + "self_attn.q_proj.weight", mat, {8, 8});
    add(p + "self_attn.k_proj.weight", mat, {4, 8});
    add(p + "self_attn.v_proj.weight", mat, {4, 8});
    add(p + "self_attn.o_proj.weight", mat, {8, 8});
    add(p + "post_attention_layernorm.weight", norm, {8});
    add(p + "mlp.gate_proj.weight", mat, {16, 8});
    add(p + "mlp.up_proj.weight", mat, {16, 8});
    add(p + "mlp.down_proj.weight", mat, {8, 16});
  }
  add("model.norm.weight", norm, {8});
  if (with_head) add("lm_head.weight", mat, {16, 8});
  return ts;
}

bool inside(const model_weights& m, const weight& w) {
  const auto end = w.data + w.rows * w.row_stride();
  for (const auto& f : m.files) {
    if (w.data >= f->data() && end <= f->data() + f->size()) return true;
  }
  for (const auto& b : m.owned) {
    if (w.data >= b.data() && end <= b.data() + b.size()) return true;
  }
  return false;
}

fs::path copy_of_656k(const temp_dir& dir) {
  const auto dst = dir.path / "656K";
  fs::copy(troupe::test::model_path("TinyStories-656K"), dst, fs::copy_options::recursive);
  fs::permissions(dst, fs::perms::owner_all,
                  fs::perm_options::add);  // the shared copy is read-only
  for (const auto& e : fs::directory_iterator(dst)) {
    fs::permissions(e.path(), fs::perms::owner_write, fs::perm_options::add);
  }
  return dst;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(safetensors)

BOOST_AUTO_TEST_CASE(reads_the_index_of_the_656k_model, *troupe::test::needs_models({"TinyStories-656K/model.safetensors"})) {
  auto file = mapped_file::open(troupe::test::model_path("TinyStories-656K/model.safetensors"));
  BOOST_REQUIRE_MESSAGE(file, message_of(file));
  auto index = st::read_index(*file);
  BOOST_REQUIRE_MESSAGE(index, message_of(index));
  BOOST_TEST(index->size() ==
             20u);  // 9 per layer, model.norm, lm_head; the embedding is tied to it
  BOOST_TEST(!index->contains("__metadata__"));
  const auto& head = index->at("lm_head.weight");
  BOOST_TEST((head.type == dtype::f32));
  BOOST_TEST(head.shape == (std::vector<int64_t>{2048, 128}));
  BOOST_TEST(head.offset == 8u + 2160u);  // first in the data section
  BOOST_TEST(head.data == (*file)->data() + head.offset);
  BOOST_TEST(head.size_bytes == 2048u * 128u * 4u);
  const auto& norm = index->at("model.norm.weight");
  BOOST_TEST(norm.offset + norm.size_bytes == (*file)->size());
}

BOOST_AUTO_TEST_CASE(loads_the_656k_directory, *troupe::test::needs_models({"TinyStories-656K"})) {
  auto m = load_model(troupe::test::model_path("TinyStories-656K"));
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  const model_config& c = m->config;
  BOOST_TEST(m->format == "safetensors");
  BOOST_TEST(troupe::test::sizes(c) == (std::vector<int>{128, 384, 2, 8, 4, 16, 2048, 512}));
  BOOST_TEST(c.rms_eps == 1e-6f);
  BOOST_TEST(c.rope_theta == 10000.0f);
  BOOST_TEST((c.rope == rope_style::half));
  BOOST_TEST(c.tied_output);
  BOOST_TEST(c.bos_id == 1);
  BOOST_TEST(c.eos_id == 2);
  BOOST_TEST(c.name == "TinyStories-656K");
  BOOST_TEST(m->tensors.size() == 20u);
  BOOST_REQUIRE_EQUAL(m->layers.size(), 2u);
  BOOST_REQUIRE_EQUAL(m->files.size(), 1u);
  BOOST_TEST(m->owned.empty());  // all f32 and aligned: nothing copied
  // The tied head is the embedding, stored under the name lm_head.weight.
  const std::byte* base = m->files[0]->data();
  BOOST_TEST(m->token_embedding.data == base + 8 + 2160);
  BOOST_TEST(m->output.data == m->token_embedding.data);
  BOOST_TEST(m->layers[0].wq.rows == 128);
  BOOST_TEST(m->layers[0].wk.rows == 64);
  BOOST_TEST(m->layers[0].wv.rows == 64);
  BOOST_TEST(m->layers[1].w_down.rows == 128);
  BOOST_TEST(m->layers[1].w_down.cols == 384);
  BOOST_TEST(m->layers[1].attn_norm.rows == 1);
  BOOST_TEST(m->final_norm.data == base + 8 + 2160 + 2623488);
}

BOOST_AUTO_TEST_CASE(maps_only_the_requested_layer_range, *troupe::test::needs_models({"TinyStories-656K"})) {
  const auto dir = troupe::test::model_path("TinyStories-656K");
  auto full = load_hf_model(dir, {});
  BOOST_REQUIRE_MESSAGE(full, message_of(full));
  const auto off = [](const model_weights& m, const weight& w) {
    return w.data - m.files.at(0)->data();
  };

  auto first = load_hf_model(dir, load_options{layer_range{0, 1}});
  BOOST_REQUIRE_MESSAGE(first, message_of(first));
  BOOST_TEST(first->is_first());
  BOOST_TEST(!first->is_last());
  BOOST_REQUIRE_EQUAL(first->layers.size(), 1u);
  BOOST_TEST(!first->token_embedding.empty());
  BOOST_TEST(first->final_norm.empty());
  BOOST_TEST(first->output.empty());
  BOOST_TEST(off(*first, first->layers[0].wo) == off(*full, full->layers[0].wo));

  auto last = load_hf_model(dir, load_options{layer_range{1, -1}});
  BOOST_REQUIRE_MESSAGE(last, message_of(last));
  BOOST_TEST(last->first_layer == 1);
  BOOST_TEST(last->last_layer == 2);
  BOOST_REQUIRE_EQUAL(last->layers.size(), 1u);
  BOOST_TEST(last->token_embedding.empty());
  BOOST_TEST(off(*last, last->layers[0].wq) == off(*full, full->layers[1].wq));
  BOOST_TEST(off(*last, last->layers[0].w_up) == off(*full, full->layers[1].w_up));
  BOOST_TEST(off(*last, last->output) == off(*full, full->output));  // the tied head
  BOOST_TEST(off(*last, last->final_norm) == off(*full, full->final_norm));
  BOOST_TEST(last->weight_bytes() < full->weight_bytes());

  for (layer_range bad :
       {layer_range{2, -1}, layer_range{1, 1}, layer_range{0, 3}, layer_range{-2, 1}}) {
    check_error(load_hf_model(dir, load_options{bad}), errc::invalid_argument, "layer range");
  }
}

BOOST_AUTO_TEST_CASE(loads_f16_matrices_and_converts_bf16_norms) {
  temp_dir dir;
  troupe::test::write_bytes(dir.path / "config.json", tiny_config);
  write_safetensors(dir.path / "model.safetensors", tiny_tensors("F16", "BF16"));
  auto m = load_hf_model(dir.path, {});
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  BOOST_TEST(m->config.n_kv_heads == 1);
  BOOST_TEST(m->config.head_dim == 4);
  BOOST_TEST(m->config.rope_theta == 500000.0f);
  BOOST_TEST(m->config.eos_id == 2);
  BOOST_TEST(!m->config.tied_output);
  BOOST_TEST((m->token_embedding.type == dtype::f16));
  BOOST_TEST((m->layers[1].wk.type == dtype::f16));
  BOOST_TEST(m->layers[1].wk.rows == 4);
  BOOST_TEST(m->output.data != m->token_embedding.data);
  // Matrices are views into the file; norms became f32 copies with the same values.
  BOOST_TEST(m->layers[0].wq.data >= m->files.at(0)->data());
  BOOST_TEST(m->owned.size() == 5u);  // 2 norms x 2 layers + the final norm
  BOOST_TEST((m->layers[0].attn_norm.type == dtype::f32));
  // Tensor k (in tiny_tensors order) holds k + i/4: input_layernorm of layer 0 is tensor 1.
  for (int i = 0; i < 8; ++i) {
    BOOST_TEST(m->layers[0].attn_norm.f32()[i] == 1.0f + float(i) / 4.0f);
    BOOST_TEST(m->layers[1].ffn_norm.f32()[i] == 15.0f + float(i) / 4.0f);
    BOOST_TEST(m->final_norm.f32()[i] == 19.0f + float(i) / 4.0f);
  }
  uint16_t h = 0;
  std::memcpy(&h, m->layers[0].wq.row(1), 2);  // tensor 2, element 8
  BOOST_TEST(f16_to_f32(h) == 2.0f + 8.0f / 4.0f);
  for (const auto& l : m->layers) {
    for (const weight* w :
         {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm, &l.w_gate, &l.w_down, &l.w_up}) {
      BOOST_TEST(inside(*m, *w));
    }
  }
}

BOOST_AUTO_TEST_CASE(copies_misaligned_data_instead_of_viewing_it) {
  temp_dir dir;
  troupe::test::write_bytes(dir.path / "config.json", tiny_config);
  write_safetensors(dir.path / "model.safetensors", tiny_tensors("F32", "F32"), /*data_align=*/2);
  auto m = load_hf_model(dir.path, {});
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  BOOST_TEST(reinterpret_cast<uintptr_t>(m->layers[0].wq.data) % 4 == 0u);
  BOOST_TEST(reinterpret_cast<uintptr_t>(m->final_norm.data) % 4 == 0u);
  BOOST_TEST(m->layers[0].wq.f32()[9] == 2.0f + 9.0f / 4.0f);
  BOOST_TEST(inside(*m, m->output));
}

BOOST_AUTO_TEST_CASE(loads_sharded_directories_and_rejects_duplicates) {
  temp_dir dir;
  troupe::test::write_bytes(dir.path / "config.json", tiny_config);
  auto ts = tiny_tensors("BF16", "F32");
  const std::vector<st_tensor> a(ts.begin(), ts.begin() + 10), b(ts.begin() + 10, ts.end());
  write_safetensors(dir.path / "model-00001-of-00002.safetensors", a);
  write_safetensors(dir.path / "model-00002-of-00002.safetensors", b);
  troupe::test::write_bytes(dir.path / "model.safetensors.index.json", "{}");  // not a shard, ignored
  auto m = load_hf_model(dir.path, {});
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  BOOST_TEST(m->tensors.size() == ts.size());
  BOOST_TEST(m->files.size() == 2u);
  BOOST_TEST((m->layers[1].w_up.type == dtype::bf16));

  // A stage whose tensors all live in the second shard keeps only that mapping.
  auto last = load_hf_model(dir.path, load_options{layer_range{1, -1}});
  BOOST_REQUIRE_MESSAGE(last, message_of(last));
  BOOST_TEST(last->files.size() == 1u);

  write_safetensors(dir.path / "model-extra.safetensors", {ts[3]});
  check_error(load_hf_model(dir.path, {}), errc::bad_format, ts[3].name);
}

BOOST_AUTO_TEST_CASE(shape_mismatches_and_missing_tensors_name_the_tensor) {
  temp_dir dir;
  troupe::test::write_bytes(dir.path / "config.json", tiny_config);
  auto ts = tiny_tensors("F32", "F32");
  // k_proj of layer 1 with 8 rows: the config (1 kv head x head_dim 4) says 4.
  ts[12] = {"model.layers.1.self_attn.k_proj.weight", "F32", {8, 8}, encode("F32", 64, 0)};
  write_safetensors(dir.path / "model.safetensors", ts);
  check_error(load_hf_model(dir.path, {}), errc::bad_format,
              "model.layers.1.self_attn.k_proj.weight");
  // The first stage does not look at layer 1.
  BOOST_TEST(load_hf_model(dir.path, load_options{layer_range{0, 1}}).has_value());

  ts = tiny_tensors("F32", "F32");
  ts.erase(ts.begin() + 8);  // model.layers.0.mlp.up_proj.weight
  write_safetensors(dir.path / "model.safetensors", ts);
  check_error(load_hf_model(dir.path, {}), errc::bad_format,
              "missing tensor model.layers.0.mlp.up_proj.weight");

  ts = tiny_tensors("F32", "F32",
                    /*with_head=*/false);  // tie_word_embeddings false, no lm_head: tied
  write_safetensors(dir.path / "model.safetensors", ts);
  auto tied = load_hf_model(dir.path, {});
  BOOST_REQUIRE_MESSAGE(tied, message_of(tied));
  BOOST_TEST(tied->config.tied_output);
  BOOST_TEST(tied->output.data == tied->token_embedding.data);

  ts = tiny_tensors("F32", "F32");
  ts[6].dtype = "I64";  // post_attention_layernorm of layer 0
  write_safetensors(dir.path / "model.safetensors", ts);
  check_error(load_hf_model(dir.path, {}), errc::unsupported, ts[6].name);
}

BOOST_AUTO_TEST_CASE(corrupt_headers_are_errors) {
  temp_dir dir;
  const auto p = dir.path / "x.safetensors";
  const auto index_of = [&]() -> result<std::map<std::string, st::tensor_desc>> {
    auto f = mapped_file::open(p);
    if (!f) return std::unexpected(f.error());
    return st::read_index(*f);
  };
  const std::string one = R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})";
  write_raw(p, one.size(), one, 16);
  BOOST_REQUIRE_MESSAGE(index_of(), message_of(index_of()));  // the well-formed baseline

  troupe::test::write_bytes(p, "abc");
  check_error(index_of(), errc::truncated, "header length");
  write_raw(p, 1000, one, 16);
  check_error(index_of(), errc::truncated, "past the end");
  write_raw(p, ~uint64_t(0), one, 16);
  check_error(index_of(), errc::bad_format, "header length");
  write_raw(p, 0, "", 16);
  check_error(index_of(), errc::bad_format, "header length");
  const std::string not_json = R"({"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  write_raw(p, not_json.size(), not_json, 16);
  check_error(index_of(), errc::bad_format, "not a JSON object");
  write_raw(p, 7, "[1,2,3]", 16);
  check_error(index_of(), errc::bad_format, "not a JSON object");

  struct bad_entry {
    const char* entry;
    errc code;
    const char* mentions;
  };
  const bad_entry cases[] = {
      {R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,32]})", errc::truncated, "past the end"},
      {R"({"dtype":"F32","shape":[2,2],"data_offsets":[16,0]})", errc::bad_format, "data_offsets"},
      {R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,16]})", errc::bad_format, "needs 24"},
      {R"({"dtype":"F16","shape":[2,2],"data_offsets":[0,16]})", errc::bad_format, "needs 8"},
      {R"({"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]})", errc::bad_format, "shape"},
      {R"({"dtype":"F32","shape":[2.5,2],"data_offsets":[0,16]})", errc::bad_format, "shape"},
      {R"({"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]})",
       errc::bad_format, "overflow"},
      {R"({"dtype":"F32","shape":[2,2],"data_offsets":[0]})", errc::bad_format, "data_offsets"},
      {R"({"dtype":"F32","shape":[2,2],"data_offsets":["0","16"]})", errc::bad_format,
       "data_offsets"},
      {R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,18446744073709551615]})", errc::bad_format,
       "data_offsets"},
      {R"({"dtype":"F32","shape":"2x2","data_offsets":[0,16]})", errc::bad_format, "shape"},
      {R"({"dtype":7,"shape":[2,2],"data_offsets":[0,16]})", errc::bad_format, "dtype"},
      {R"({"dtype":"Q8","shape":[2,2],"data_offsets":[0,16]})", errc::unsupported,
       "tensor t has dtype Q8"},
      {R"({"shape":[2,2],"data_offsets":[0,16]})", errc::bad_format, "dtype"},
      {R"([1,2])", errc::bad_format, "not a JSON object"},
  };
  for (const auto& bc : cases) {
    const std::string header = fmt::format(R"({{"t":{}}})", bc.entry);
    write_raw(p, header.size(), header, 16);
    BOOST_TEST_CONTEXT(bc.entry) { check_error(index_of(), bc.code, bc.mentions); }
  }
}

BOOST_AUTO_TEST_CASE(truncated_656k_model_is_an_error, *troupe::test::needs_models({"TinyStories-656K"})) {
  temp_dir dir;
  const auto model = copy_of_656k(dir);
  const std::string bytes = troupe::test::read_file(model / "model.safetensors");
  for (size_t n : {size_t(0), size_t(7), size_t(8), size_t(100), size_t(2167), size_t(2168),
                   size_t(500000), bytes.size() - 1}) {
    troupe::test::write_bytes(model / "model.safetensors", bytes.substr(0, n));
    auto r = load_hf_model(model, {});
    BOOST_TEST_CONTEXT("truncated to " << n << " bytes") {
      BOOST_REQUIRE(!r);
      BOOST_TEST((r.error().code == errc::truncated || r.error().code == errc::bad_format),
                 r.error().message);
    }
  }
  fs::remove(model / "model.safetensors");
  check_error(load_hf_model(model, {}), errc::io_error, "no *.safetensors");
}

BOOST_AUTO_TEST_CASE(bad_config_files_are_errors, *troupe::test::needs_models({"TinyStories-656K"})) {
  temp_dir dir;
  const auto model = copy_of_656k(dir);
  const std::string good = troupe::test::read_file(model / "config.json");
  BOOST_REQUIRE(load_hf_model(model, {}).has_value());
  const auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto at = s.find(from);
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, from);
    s.replace(at, from.size(), to);
    troupe::test::write_bytes(model / "config.json", s);
    return load_hf_model(model, {});
  };
  check_error(with("\"hidden_size\": 128", "\"hidden_size\": 64"), errc::bad_format,
              "lm_head.weight has shape");
  check_error(with("\"hidden_size\": 128", "\"hidden_size\": 100"), errc::bad_format,
              "num_attention_heads");
  check_error(with("\"hidden_size\": 128", "\"hidden_size\": -128"), errc::bad_format,
              "hidden_size");
  check_error(with("\"hidden_size\": 128", "\"hidden_size\": \"128\""), errc::bad_format,
              "hidden_size");
  check_error(with("\"hidden_size\": 128,", ""), errc::bad_format, "missing hidden_size");
  check_error(with("\"vocab_size\": 2048", "\"vocab_size\": 4096"), errc::bad_format,
              "lm_head.weight");
  check_error(with("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 3"), errc::bad_format,
              "num_key_value_heads");
  check_error(with("\"num_key_value_heads\": 4", "\"num_key_value_heads\": 8"), errc::bad_format,
              "self_attn.k_proj.weight");
  check_error(with("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"), errc::bad_format,
              "missing tensor model.layers.2.");
  check_error(with("\"model_type\": \"llama\"", "\"model_type\": \"mistral\""), errc::unsupported,
              "mistral");
  check_error(with("\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"linear\"}"),
              errc::unsupported, "rope_scaling");
  check_error(with("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": -1"), errc::bad_format,
              "rms_norm_eps");
  check_error(with("\"eos_token_id\": 2", "\"eos_token_id\": 5000"), errc::bad_format,
              "eos_token_id");
  check_error(with("{", "["), errc::bad_format, "not a JSON object");
  check_error(with("\"vocab_size\": 2048\n}", "\"vocab_size\": 2048"), errc::bad_format,
              "not a JSON object");
  // num_key_value_heads defaults to num_attention_heads: 8 kv heads, which k_proj's 64 rows
  // contradict.
  check_error(with("\"num_key_value_heads\": 4,", ""), errc::bad_format, "self_attn.k_proj.weight");
  fs::remove(model / "config.json");
  check_error(load_hf_model(model, {}), errc::io_error, "config.json");
}

BOOST_AUTO_TEST_SUITE_END()
