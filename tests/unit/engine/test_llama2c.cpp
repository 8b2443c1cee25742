// llama2.c checkpoints: the real stories260K file, the 656K model converted from its Hugging Face
// directory (same numbers, q/k rows permuted to the interleaved RoPE order), and corrupt headers.
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/llama2c.hpp"
#include "engine/model_weights.hpp"
#include "engine/safetensors.hpp"
#include "tests/test_support.hpp"
#include "tests/unit/engine/model_sizes.hpp"
#include "tests/test_support.hpp"

using namespace troupe::engine;
namespace fs = std::filesystem;

using troupe::test::temp_dir;

using troupe::test::read_bytes;
using troupe::test::temp_dir;
using troupe::test::write_bytes;

namespace {

template <class T>
std::string message_of(const result<T>& r) {
  return r ? std::string("(loaded)")
           : fmt::format("{}: {}", errc_name(r.error().code), r.error().message);
}

/// Offset of a weight's data from the start of the model's (single) mapped file.
uint64_t offset_in_file(const model_weights& m, const weight& w) {
  return uint64_t(w.data - m.files.at(0)->data());
}

/// A synthetic checkpoint whose float at index i (counting from the end of the header) is i, so
/// every view can be checked against an offset computed independently of the loader.
struct synthetic {
  int32_t dim = 8, hidden = 12, n_layers = 3, n_heads = 4, n_kv_heads = 2, vocab = 10, seq_len = 6;
  bool with_wcls = true;

  int64_t kv_dim() const { return int64_t(dim) / n_heads * n_kv_heads; }
  int64_t floats_without_wcls() const {
    const int64_t d = dim, h = hidden, l = n_layers, v = vocab < 0 ? -vocab : vocab;
    const int64_t head = d / n_heads;
    return v * d + l * d + l * d * d + 2 * l * kv_dim() * d + l * d * d + l * d + 3 * l * h * d +
           d + 2 * seq_len * head / 2;
  }
  void write(const fs::path& p) const {
    const int32_t header[7] = {dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len};
    int64_t n = floats_without_wcls();
    if (vocab < 0 && with_wcls) n += int64_t(-vocab) * dim;
    std::vector<char> bytes(sizeof(header) + size_t(n) * 4);
    std::memcpy(bytes.data(), header, sizeof(header));
    for (int64_t i = 0; i < n; ++i) {
      const float f = float(i);
      std::memcpy(bytes.data() + sizeof(header) + i * 4, &f, 4);
    }
    write_bytes(p, bytes.data(), bytes.size());
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(llama2c)

BOOST_AUTO_TEST_CASE(loads_stories260k_header_and_maps_all_layers, *troupe::test::needs_models({"stories260K.bin"})) {
  auto m = load_llama2c_model(troupe::test::model_path("stories260K.bin"), {});
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  const model_config& c = m->config;
  BOOST_TEST(m->format == "llama2c");
  BOOST_TEST(troupe::test::sizes(c) == (std::vector<int>{64, 172, 5, 8, 4, 8, 512, 512}));
  BOOST_TEST(c.kv_dim() == 32);
  BOOST_TEST(c.rms_eps == 1e-5f);
  BOOST_TEST((c.rope == rope_style::interleaved));
  BOOST_TEST(c.tied_output);
  BOOST_TEST(c.bos_id == 1);
  BOOST_TEST(c.eos_id == 2);

  BOOST_TEST(m->first_layer == 0);
  BOOST_TEST(m->last_layer == 5);
  BOOST_REQUIRE_EQUAL(m->layers.size(), 5u);
  BOOST_REQUIRE_EQUAL(m->files.size(), 1u);
  // Zero-copy: views point into the mapping at the llama2.c layout's offsets.
  BOOST_TEST(offset_in_file(*m, m->token_embedding) == 28u);
  BOOST_TEST(m->output.data == m->token_embedding.data);
  BOOST_TEST(m->output.rows == 512);
  const uint64_t after_embed = 28 + 512 * 64 * 4;
  BOOST_TEST(offset_in_file(*m, m->layers[0].attn_norm) == after_embed);
  BOOST_TEST(offset_in_file(*m, m->layers[2].attn_norm) == after_embed + 2 * 64 * 4);
  const uint64_t wq0 = after_embed + 5 * 64 * 4;
  BOOST_TEST(offset_in_file(*m, m->layers[0].wq) == wq0);
  BOOST_TEST(offset_in_file(*m, m->layers[4].wq) == wq0 + 4 * 64 * 64 * 4);
  BOOST_TEST(offset_in_file(*m, m->layers[0].wk) == wq0 + 5 * 64 * 64 * 4);
  BOOST_TEST(m->layers[0].wk.rows == 32);
  BOOST_TEST(m->layers[0].wk.cols == 64);
  BOOST_TEST(m->layers[0].w_gate.rows == 172);
  BOOST_TEST(m->layers[0].w_down.rows == 64);
  BOOST_TEST(m->layers[0].w_down.cols == 172);
  // The final norm sits just before the two freq_cis tables at the end of the file.
  const uint64_t file_size = fs::file_size(troupe::test::model_path("stories260K.bin"));
  BOOST_TEST(offset_in_file(*m, m->final_norm) + 64 * 4 + 2 * 512 * 4 * 4 == file_size);
  // Every array of the file is listed; no wcls when the classifier is shared.
  BOOST_TEST(m->tensors.size() == 13u);
  BOOST_TEST(m->tensors.front().name == "token_embedding_table");
  // RMSNorm weights of a trained model are positive numbers of order 1, not garbage.
  for (int i = 0; i < 64; ++i) BOOST_TEST(std::abs(m->final_norm.f32()[i]) < 100.0f);
}

BOOST_AUTO_TEST_CASE(maps_only_the_requested_layer_range, *troupe::test::needs_models({"stories260K.bin"})) {
  const auto path = troupe::test::model_path("stories260K.bin");
  auto full = load_llama2c_model(path, {});
  BOOST_REQUIRE_MESSAGE(full, message_of(full));

  auto mid = load_llama2c_model(path, load_options{layer_range{1, 3}});
  BOOST_REQUIRE_MESSAGE(mid, message_of(mid));
  BOOST_TEST(mid->first_layer == 1);
  BOOST_TEST(mid->last_layer == 3);
  BOOST_TEST(!mid->is_first());
  BOOST_TEST(!mid->is_last());
  BOOST_REQUIRE_EQUAL(mid->layers.size(), 2u);
  BOOST_TEST(mid->token_embedding.empty());
  BOOST_TEST(mid->final_norm.empty());
  BOOST_TEST(mid->output.empty());
  BOOST_TEST(offset_in_file(*mid, mid->layers[0].wq) == offset_in_file(*full, full->layers[1].wq));
  BOOST_TEST(offset_in_file(*mid, mid->layers[1].w_up) ==
             offset_in_file(*full, full->layers[2].w_up));
  BOOST_TEST(mid->tensors.size() == full->tensors.size());

  auto last = load_llama2c_model(path, load_options{layer_range{3, -1}});
  BOOST_REQUIRE_MESSAGE(last, message_of(last));
  BOOST_TEST(last->is_last());
  BOOST_REQUIRE_EQUAL(last->layers.size(), 2u);
  BOOST_TEST(last->token_embedding.empty());
  // The shared classifier is the embedding table even on a stage that does not embed.
  BOOST_TEST(offset_in_file(*last, last->output) == 28u);
  BOOST_TEST(offset_in_file(*last, last->final_norm) == offset_in_file(*full, full->final_norm));
  BOOST_TEST(last->weight_bytes() < full->weight_bytes());

  for (layer_range bad :
       {layer_range{5, -1}, layer_range{2, 2}, layer_range{-1, 3}, layer_range{0, 6}}) {
    auto r = load_llama2c_model(path, load_options{bad});
    BOOST_REQUIRE(!r);
    BOOST_TEST((r.error().code == errc::invalid_argument));
  }
}

BOOST_AUTO_TEST_CASE(load_model_detects_llama2c_files, *troupe::test::needs_models({"derived/TinyStories-656K.llama2c.bin"})) {
  auto m = load_model(troupe::test::model_path("derived/TinyStories-656K.llama2c.bin"));
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  BOOST_TEST(m->format == "llama2c");
  BOOST_TEST(m->config.dim == 128);
  BOOST_TEST(m->config.hidden_dim == 384);
  BOOST_TEST(m->config.n_layers == 2);
  BOOST_TEST(m->config.n_kv_heads == 4);
  BOOST_TEST(m->config.vocab_size == 2048);
  BOOST_TEST(m->config.tied_output);
}

// The llama2c file was converted from the HF directory: the same numbers, with q/k rows moved from
// the rotate-half order (pairs i, i + head_dim/2) to the interleaved order (pairs 2i, 2i + 1).
BOOST_AUTO_TEST_CASE(derived_656k_holds_the_hf_weights_with_qk_rows_interleaved, *troupe::test::needs_models({"TinyStories-656K", "derived/TinyStories-656K.llama2c.bin"})) {
  auto hf = load_hf_model(troupe::test::model_path("TinyStories-656K"), {});
  BOOST_REQUIRE_MESSAGE(hf, message_of(hf));
  auto l2c =
      load_llama2c_model(troupe::test::model_path("derived/TinyStories-656K.llama2c.bin"), {});
  BOOST_REQUIRE_MESSAGE(l2c, message_of(l2c));
  const model_config& a = hf->config;
  const model_config& b = l2c->config;
  BOOST_TEST(a.dim == b.dim);
  BOOST_TEST(a.hidden_dim == b.hidden_dim);
  BOOST_TEST(a.n_layers == b.n_layers);
  BOOST_TEST(a.n_heads == b.n_heads);
  BOOST_TEST(a.n_kv_heads == b.n_kv_heads);
  BOOST_TEST(a.vocab_size == b.vocab_size);
  BOOST_TEST((a.rope == rope_style::half));
  BOOST_TEST((b.rope == rope_style::interleaved));

  const auto same = [](const weight& x, const weight& y) {
    return x.type == dtype::f32 && y.type == dtype::f32 && x.rows == y.rows && x.cols == y.cols &&
           std::memcmp(x.data, y.data, size_t(x.rows * x.cols) * 4) == 0;
  };
  BOOST_TEST(same(hf->token_embedding, l2c->token_embedding));
  BOOST_TEST(same(hf->final_norm, l2c->final_norm));
  BOOST_TEST(same(hf->output, l2c->output));

  const int hd = a.head_dim;
  // For each head: interleaved row 2i <-> half row i, interleaved row 2i+1 <-> half row i + hd/2.
  const auto permuted = [hd](const weight& half, const weight& inter, int n_heads) {
    if (half.rows != inter.rows || half.cols != inter.cols || half.rows != int64_t(n_heads) * hd)
      return false;
    const size_t row_bytes = size_t(half.cols) * 4;
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < hd / 2; ++i) {
        const int64_t base = int64_t(h) * hd;
        if (std::memcmp(inter.row(base + 2 * i), half.row(base + i), row_bytes) != 0) return false;
        if (std::memcmp(inter.row(base + 2 * i + 1), half.row(base + i + hd / 2), row_bytes) != 0)
          return false;
      }
    }
    return true;
  };
  for (int l = 0; l < a.n_layers; ++l) {
    const layer_weights& x = hf->layers[size_t(l)];
    const layer_weights& y = l2c->layers[size_t(l)];
    BOOST_TEST_CONTEXT("layer " << l) {
      BOOST_TEST(same(x.attn_norm, y.attn_norm));
      BOOST_TEST(same(x.ffn_norm, y.ffn_norm));
      BOOST_TEST(same(x.wv, y.wv));
      BOOST_TEST(same(x.wo, y.wo));
      BOOST_TEST(same(x.w_gate, y.w_gate));
      BOOST_TEST(same(x.w_down, y.w_down));
      BOOST_TEST(same(x.w_up, y.w_up));
      BOOST_TEST(permuted(x.wq, y.wq, a.n_heads));
      BOOST_TEST(permuted(x.wk, y.wk, a.n_kv_heads));
      // ...and the orders really differ (so the checks above are not vacuous).
      BOOST_TEST(!same(x.wq, y.wq));
      BOOST_TEST(!same(x.wk, y.wk));
    }
  }
}

BOOST_AUTO_TEST_CASE(separate_classifier_follows_the_freq_cis_tables) {
  temp_dir dir;
  synthetic s;
  s.vocab = -10;
  s.write(dir.path / "wcls.bin");
  auto m = load_llama2c_model(dir.path / "wcls.bin", {});
  BOOST_REQUIRE_MESSAGE(m, message_of(m));
  BOOST_TEST(!m->config.tied_output);
  BOOST_TEST(m->config.vocab_size == 10);
  BOOST_TEST(m->tensors.size() == 14u);
  BOOST_TEST(m->output.data != m->token_embedding.data);
  // Float i of the body holds the value i: each view's first element is its own float offset.
  const int64_t D = 8, H = 12, L = 3, KV = 4, V = 10;
  const auto first = [](const weight& w) { return int64_t(w.f32()[0]); };
  int64_t at = 0;
  BOOST_TEST(first(m->token_embedding) == at);
  at += V * D;
  BOOST_TEST(first(m->layers[1].attn_norm) == at + D);
  at += L * D;
  BOOST_TEST(first(m->layers[2].wq) == at + 2 * D * D);
  at += L * D * D;
  BOOST_TEST(first(m->layers[1].wk) == at + KV * D);
  at += L * KV * D;
  BOOST_TEST(first(m->layers[2].wv) == at + 2 * KV * D);
  at += L * KV * D;
  BOOST_TEST(first(m->layers[0].wo) == at);
  at += L * D * D;
  BOOST_TEST(first(m->layers[2].ffn_norm) == at + 2 * D);
  at += L * D;
  BOOST_TEST(first(m->layers[1].w_gate) == at + H * D);
  at += L * H * D;
  BOOST_TEST(first(m->layers[1].w_down) == at + D * H);
  at += L * D * H;
  BOOST_TEST(first(m->layers[2].w_up) == at + 2 * H * D);
  at += L * H * D;
  BOOST_TEST(first(m->final_norm) == at);
  at += D + 2 * 6 * 1;  // rms_final, freq_cis_real and freq_cis_imag [seq_len 6][head_size/2 = 1]
  BOOST_TEST(first(m->output) == at);
  BOOST_TEST(m->output.rows == V);
  BOOST_TEST(m->layers[0].wk.rows == KV);

  // Without the classifier the same header asks for more bytes than the file has.
  s.with_wcls = false;
  s.write(dir.path / "no_wcls.bin");
  auto r = load_llama2c_model(dir.path / "no_wcls.bin", {});
  BOOST_REQUIRE(!r);
  BOOST_TEST((r.error().code == errc::truncated));
}

BOOST_AUTO_TEST_CASE(truncated_files_are_errors, *troupe::test::needs_models({"stories260K.bin"})) {
  temp_dir dir;
  const auto bytes = read_bytes(troupe::test::model_path("stories260K.bin"));
  BOOST_REQUIRE_EQUAL(bytes.size(), 1056540u);
  for (size_t n : {size_t(0), size_t(4), size_t(27), size_t(28), size_t(1000), bytes.size() / 2,
                   bytes.size() - 4 * 512 * 4, bytes.size() - 1}) {
    const auto p = dir.path / "cut.bin";
    write_bytes(p, bytes.data(), n);
    auto r = load_llama2c_model(p, {});
    BOOST_TEST_CONTEXT("truncated to " << n << " bytes") {
      BOOST_REQUIRE(!r);
      BOOST_TEST((r.error().code == errc::truncated));
    }
  }
  auto missing = load_llama2c_model(dir.path / "does-not-exist.bin", {});
  BOOST_REQUIRE(!missing);
  BOOST_TEST((missing.error().code == errc::io_error));
}

BOOST_AUTO_TEST_CASE(rejects_impossible_headers) {
  temp_dir dir;
  struct bad_case {
    const char* what;
    int32_t h[7];
    errc code;
  };
  const bad_case cases[] = {
      {"zero dim", {0, 12, 3, 4, 2, 10, 6}, errc::bad_format},
      {"negative hidden", {8, -12, 3, 4, 2, 10, 6}, errc::bad_format},
      {"zero layers", {8, 12, 0, 4, 2, 10, 6}, errc::bad_format},
      {"more heads than dim", {8, 12, 3, 16, 2, 10, 6}, errc::bad_format},
      {"dim not a multiple of heads", {8, 12, 3, 3, 1, 10, 6}, errc::bad_format},
      {"heads not a multiple of kv heads", {8, 12, 3, 4, 3, 10, 6}, errc::bad_format},
      {"more kv heads than heads", {8, 12, 3, 4, 8, 10, 6}, errc::bad_format},
      {"odd head size", {12, 12, 3, 4, 2, 10, 6}, errc::bad_format},
      {"zero vocab", {8, 12, 3, 4, 2, 0, 6}, errc::bad_format},
      {"vocab INT32_MIN", {8, 12, 3, 4, 2, INT32_MIN, 6}, errc::bad_format},
      {"vocab without BOS/EOS", {8, 12, 3, 4, 2, 2, 6}, errc::bad_format},
      {"zero seq_len", {8, 12, 3, 4, 2, 10, 0}, errc::bad_format},
      {"huge dim", {INT32_MAX, 12, 3, 1, 1, 10, 6}, errc::bad_format},
      // Every field at its limit: sizes near 2^50 bytes, far past the file, without overflow.
      {"sizes past the file", {1 << 16, 1 << 20, 1024, 2, 1, 1 << 24, 1 << 24}, errc::truncated},
      {"big vocab, tiny file", {8, 12, 3, 4, 2, -(1 << 24), 6}, errc::truncated},
  };
  for (const bad_case& bc : cases) {
    const auto p = dir.path / "bad.bin";
    std::vector<char> bytes(28 + 4096, 0);
    std::memcpy(bytes.data(), bc.h, 28);
    write_bytes(p, bytes.data(), bytes.size());
    auto r = load_llama2c_model(p, {});
    BOOST_TEST_CONTEXT(bc.what) {
      BOOST_REQUIRE(!r);
      BOOST_TEST(errc_name(r.error().code) == errc_name(bc.code));
      BOOST_TEST(r.error().message.find("llama2c") != std::string::npos);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
