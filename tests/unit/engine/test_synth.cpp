// Synthetic models: shapes, the vocabulary, files of every dtype that load back, determinism,
// ggml-exact quantization, and the `troupe model synth` / `model info` commands.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <set>
#include <unistd.h>

#include "engine/fp16.hpp"
#include "engine/gguf.hpp"
#include "engine/kernels.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model_weights.hpp"
#include "engine/synth_model.hpp"
#include "engine/transformer.hpp"
#include "tests/test_support.hpp"
#include "tests/unit/engine/model_sizes.hpp"
#include "tests/test_support.hpp"

namespace eng = troupe::engine;
namespace gg = troupe::engine::gguf;
namespace fs = std::filesystem;

using troupe::test::read_file;
using troupe::test::temp_dir;

namespace {

/// Row r of w as floats, decoded here independently of the kernels.
std::vector<float> decode_row(const eng::weight& w, int64_t r) {
  std::vector<float> out(size_t(w.cols));
  const std::byte* row = w.row(r);
  for (int64_t c = 0; c < w.cols; ++c) {
    uint16_t h = 0;
    switch (w.type) {
      case eng::dtype::f32: std::memcpy(&out[c], row + 4 * c, 4); break;
      case eng::dtype::f16: std::memcpy(&h, row + 2 * c, 2); out[c] = eng::f16_to_f32(h); break;
      case eng::dtype::bf16: std::memcpy(&h, row + 2 * c, 2); out[c] = eng::bf16_to_f32(h); break;
      case eng::dtype::q8_0: {
        eng::block_q8_0 b;
        std::memcpy(&b, row + (c / 32) * 34, 34);
        out[c] = eng::f16_to_f32(b.d) * float(b.qs[c % 32]);
        break;
      }
      case eng::dtype::q4_0: {
        eng::block_q4_0 b;
        std::memcpy(&b, row + (c / 32) * 18, 18);
        const int j = int(c % 32);
        const int q = j < 16 ? (b.qs[j] & 0x0f) : (b.qs[j - 16] >> 4);
        out[c] = eng::f16_to_f32(b.d) * float(q - 8);
        break;
      }
    }
  }
  return out;
}

eng::model_weights write_and_load(const temp_dir& dir, const std::string& shape, eng::dtype t, uint64_t seed = 7) {
  const auto p = dir / (shape + "_" + std::string(eng::dtype_name(t)) + "_" + std::to_string(seed) + ".gguf");
  auto r = eng::write_synth_model(*eng::find_synth_shape(shape), t, seed, p);
  BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
  auto m = eng::load_model(p);
  BOOST_REQUIRE_MESSAGE(m, (m ? "" : m.error().message));
  return std::move(*m);
}

bool is_quantized(eng::dtype t) { return t == eng::dtype::q8_0 || t == eng::dtype::q4_0; }

const std::string space = "\xE2\x96\x81";

}  // namespace

BOOST_AUTO_TEST_SUITE(synth)

BOOST_AUTO_TEST_CASE(knows_the_three_shapes) {
  const std::pair<const char*, std::vector<int>> known[] = {
      {"tiny", {64, 172, 2, 4, 2, 16, 512, 256}},
      {"stories15M", {288, 768, 6, 6, 6, 48, 32000, 256}},
      {"stories110M", {768, 2048, 12, 12, 12, 64, 32000, 1024}},
  };
  for (const auto& [name, want] : known) {
    const auto shape = eng::find_synth_shape(name);
    BOOST_REQUIRE(shape);
    BOOST_TEST(troupe::test::sizes(shape->config) == want);
  }
  BOOST_TEST(!eng::find_synth_shape("huge").has_value());
}

BOOST_AUTO_TEST_CASE(vocabulary_is_distinct_and_mergeable) {
  for (int n : {512, 32000}) {
    const auto v = eng::make_synth_vocab(n);
    BOOST_REQUIRE(v.tokens.size() == size_t(n));
    BOOST_REQUIRE(v.scores.size() == size_t(n));
    BOOST_REQUIRE(v.types.size() == size_t(n));
    const std::set<std::string> all(v.tokens.begin(), v.tokens.end());
    BOOST_TEST(all.size() == size_t(n));
    BOOST_TEST(v.tokens[0] == "<unk>");
    BOOST_TEST(v.types[0] == 2);
    BOOST_TEST(v.tokens[1] == "<s>");
    BOOST_TEST(v.tokens[2] == "</s>");
    BOOST_TEST(v.types[1] == 3);
    BOOST_TEST(v.types[2] == 3);
    BOOST_TEST(v.tokens[3] == "<0x00>");
    BOOST_TEST(v.tokens[3 + 0x0A] == "<0x0A>");
    BOOST_TEST(v.tokens[3 + 0xFF] == "<0xFF>");
    BOOST_TEST(v.types[3 + 0x41] == 6);
    BOOST_TEST(v.tokens[259] == space);
    for (int i = 259; i < n; ++i) {
      BOOST_TEST_REQUIRE(v.types[i] == 1);
      if (i > 259) BOOST_TEST_REQUIRE(v.scores[i] < v.scores[i - 1]);
      // Every multi-character piece is the concatenation of two pieces (merges can build it).
      const std::string& t = v.tokens[i];
      if (t == space || t.size() == 1 || (t.size() == 4 && t.starts_with(space))) continue;
      bool splits = false;
      for (size_t k = 1; k < t.size() && !splits; ++k) {
        splits = all.contains(t.substr(0, k)) && all.contains(t.substr(k));
      }
      BOOST_TEST_REQUIRE(splits, "piece '" << t << "' cannot be merged from two pieces");
    }
    BOOST_TEST(all.contains(space + "the"));
    if (n == 32000) BOOST_TEST(all.contains(space + "Once"));
  }
  BOOST_TEST(eng::make_synth_vocab(512).tokens == eng::make_synth_vocab(512).tokens);
}

BOOST_AUTO_TEST_CASE(writes_every_dtype_and_loads_it_back) {
  temp_dir dir;
  for (eng::dtype t : {eng::dtype::f32, eng::dtype::f16, eng::dtype::bf16, eng::dtype::q8_0, eng::dtype::q4_0}) {
    BOOST_TEST_CONTEXT("dtype " << eng::dtype_name(t)) {
      const auto m = write_and_load(dir, "tiny", t);
      const auto& c = m.config;
      BOOST_TEST(m.format == "gguf");
      BOOST_TEST(c.arch == "llama");
      BOOST_TEST(c.name == "troupe-synth-tiny");
      BOOST_TEST(troupe::test::sizes(c) == (std::vector<int>{64, 172, 2, 4, 2, 16, 512, 256}));
      BOOST_TEST(c.bos_id == 1);
      BOOST_TEST(c.eos_id == 2);
      BOOST_TEST(!c.tied_output);
      BOOST_TEST(m.output.data != m.token_embedding.data);
      BOOST_TEST(m.tensors.size() == 3u + 9u * 2u);
      BOOST_REQUIRE(m.layers.size() == 2u);
      for (const auto& l : m.layers) {
        BOOST_TEST((l.wq.type == t));
        BOOST_TEST(l.wk.rows == 32);
        BOOST_TEST((l.w_gate.type == t));
        BOOST_TEST((l.w_up.type == t));
        // 172 columns are not whole blocks: like llama.cpp's converter, F16 instead.
        BOOST_TEST((l.w_down.type == (is_quantized(t) ? eng::dtype::f16 : t)));
        BOOST_TEST((l.attn_norm.type == eng::dtype::f32));
        for (int i = 0; i < c.dim; ++i) BOOST_TEST_REQUIRE(l.ffn_norm.f32()[i] == 1.0f);
      }
      BOOST_TEST((m.token_embedding.type == t));
      BOOST_TEST((m.output.type == t));
      BOOST_TEST(m.final_norm.f32()[63] == 1.0f);
      // Weights are small and not all equal.
      const auto row = decode_row(m.layers[1].wv, 5);
      float amax = 0, sum = 0;
      for (float x : row) {
        amax = std::max(amax, std::fabs(x));
        sum += std::fabs(x);
      }
      BOOST_TEST(amax < 0.05f);
      BOOST_TEST(sum / float(row.size()) > 0.005f);

      auto f = gg::file::open(m.files[0]->path());
      BOOST_REQUIRE(f);
      BOOST_TEST(*f->get_uint("general.alignment") == 32u);
      BOOST_TEST(*f->get_string("tokenizer.ggml.model") == "llama");
      BOOST_TEST(f->get_string_array("tokenizer.ggml.tokens")->size() == 512u);
      BOOST_TEST(f->get_float_array("tokenizer.ggml.scores")->size() == 512u);
      BOOST_TEST(f->get_int_array("tokenizer.ggml.token_type")->size() == 512u);
      BOOST_TEST(*f->get_uint("tokenizer.ggml.unknown_token_id") == 0u);
      BOOST_TEST(*f->get_uint("llama.rope.dimension_count") == 16u);
      BOOST_TEST(*f->get_uint("llama.vocab_size") == 512u);
      BOOST_TEST(*f->get_float("llama.rope.freq_base") == 10000.0);
      const uint64_t ftype = *f->get_uint("general.file_type");
      const uint64_t expect_ftype = t == eng::dtype::f32    ? 0
                                    : t == eng::dtype::f16  ? 1
                                    : t == eng::dtype::q4_0 ? 2
                                    : t == eng::dtype::q8_0 ? 7
                                                            : 32;
      BOOST_TEST(ftype == expect_ftype);
    }
  }
}

BOOST_AUTO_TEST_CASE(same_seed_same_file) {
  temp_dir dir;
  const auto tiny = *eng::find_synth_shape("tiny");
  BOOST_REQUIRE(eng::write_synth_model(tiny, eng::dtype::q4_0, 42, dir / "a.gguf"));
  BOOST_REQUIRE(eng::write_synth_model(tiny, eng::dtype::q4_0, 42, dir / "b.gguf"));
  BOOST_REQUIRE(eng::write_synth_model(tiny, eng::dtype::q4_0, 43, dir / "c.gguf"));
  const auto a = read_file(dir / "a.gguf"), b = read_file(dir / "b.gguf"), c = read_file(dir / "c.gguf");
  BOOST_TEST(a.size() > 10000u);
  BOOST_TEST((a == b));
  BOOST_TEST((a != c));
  BOOST_TEST(a.size() == c.size());
}

BOOST_AUTO_TEST_CASE(quantized_files_hold_the_f32_weights_within_bounds) {
  temp_dir dir;
  const auto ref = write_and_load(dir, "tiny", eng::dtype::f32);
  for (eng::dtype t : {eng::dtype::f16, eng::dtype::bf16, eng::dtype::q8_0, eng::dtype::q4_0}) {
    const auto m = write_and_load(dir, "tiny", t);
    for (auto pick : {+[](const eng::model_weights& w) { return w.layers[0].wq; },
                      +[](const eng::model_weights& w) { return w.layers[1].w_gate; },
                      +[](const eng::model_weights& w) { return w.output; }}) {
      const eng::weight a = pick(ref), b = pick(m);
      for (int64_t r = 0; r < a.rows; r += 7) {
        const auto x = decode_row(a, r), y = decode_row(b, r);
        for (int64_t blk = 0; blk < a.cols / 32; ++blk) {
          float amax = 0;
          for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[blk * 32 + j]));
          const float bound = t == eng::dtype::q8_0   ? amax / 127 * 0.6f
                              : t == eng::dtype::q4_0 ? amax / 8 * 1.01f
                              : t == eng::dtype::f16  ? amax * 1e-3f
                                                      : amax * 4e-3f;
          for (int j = 0; j < 32; ++j) {
            BOOST_TEST_REQUIRE(std::fabs(x[blk * 32 + j] - y[blk * 32 + j]) <= bound);
          }
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(quantize_q8_0_follows_ggml) {
  // amax 127 -> d = 1, q = round(x)
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j) * 4.0f - 60.3f;
  x[7] = 127.0f;
  eng::block_q8_0 b[1];
  eng::quantize_q8_0(x.data(), b, 32);
  BOOST_TEST(eng::f16_to_f32(b[0].d) == 1.0f);
  for (int j = 0; j < 32; ++j) BOOST_TEST(int(b[0].qs[j]) == int(std::round(x[j])));
  // a zero block
  std::vector<float> z(32, 0.0f);
  eng::quantize_q8_0(z.data(), b, 32);
  BOOST_TEST(b[0].d == 0);
  for (int j = 0; j < 32; ++j) BOOST_TEST(b[0].qs[j] == 0);
  // random data: error within half a step (plus the f16 rounding of the scale)
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> r(32 * 64);
  for (auto& v : r) v = nd(rng);
  std::vector<eng::block_q8_0> q(64);
  eng::quantize_q8_0(r.data(), q.data(), int64_t(r.size()));
  for (int i = 0; i < 64; ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(r[i * 32 + j]));
    const float d = eng::f16_to_f32(q[i].d);
    BOOST_TEST(std::fabs(d - amax / 127) <= amax / 127 * 1e-3f);
    for (int j = 0; j < 32; ++j) BOOST_TEST_REQUIRE(std::fabs(d * q[i].qs[j] - r[i * 32 + j]) <= amax / 127 * 0.6f);
  }
}

BOOST_AUTO_TEST_CASE(quantize_q4_0_follows_ggml) {
  // x = j - 16: the value of largest magnitude is -16, so d = -16 / -8 = 2 and q = x / 2 + 8.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j - 16);
  eng::block_q4_0 b[1];
  eng::quantize_q4_0(x.data(), b, 32);
  BOOST_TEST(eng::f16_to_f32(b[0].d) == 2.0f);
  for (int j = 0; j < 16; ++j) {
    const int lo = b[0].qs[j] & 0x0f, hi = b[0].qs[j] >> 4;
    BOOST_TEST(lo == std::min(15, int(x[j] / 2 + 8.5f)));        // element j
    BOOST_TEST(hi == std::min(15, int(x[j + 16] / 2 + 8.5f)));   // element j + 16
  }
  BOOST_TEST((b[0].qs[0] & 0x0f) == 0);  // -16 -> 0
  BOOST_TEST((b[0].qs[15] >> 4) == 15);  // 15 -> 7.5 + 8.5 = 16, clamped to 15
  // Sign of the scale follows the extreme value: max +16 gives d = -2.
  for (auto& v : x) v = -v;
  eng::quantize_q4_0(x.data(), b, 32);
  BOOST_TEST(eng::f16_to_f32(b[0].d) == -2.0f);
  // zero block: every nibble is 8
  std::vector<float> z(32, 0.0f);
  eng::quantize_q4_0(z.data(), b, 32);
  BOOST_TEST(eng::f16_to_f32(b[0].d) == 0.0f);  // -0: ggml computes 0 / -8 too
  for (int j = 0; j < 16; ++j) BOOST_TEST(b[0].qs[j] == 0x88);
  // random data: error within one step |d| (the clamp at 15 costs up to a whole step)
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> ud(-3.0f, 3.0f);
  std::vector<float> r(32 * 64);
  for (auto& v : r) v = ud(rng);
  std::vector<eng::block_q4_0> q(64);
  eng::quantize_q4_0(r.data(), q.data(), int64_t(r.size()));
  double sum_err = 0;
  for (int i = 0; i < 64; ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(r[i * 32 + j]));
    const float d = eng::f16_to_f32(q[i].d);
    BOOST_TEST(std::fabs(std::fabs(d) - amax / 8) <= amax / 8 * 1e-3f);
    for (int j = 0; j < 32; ++j) {
      const int nib = j < 16 ? (q[i].qs[j] & 0x0f) : (q[i].qs[j - 16] >> 4);
      const float err = std::fabs(d * float(nib - 8) - r[i * 32 + j]);
      BOOST_TEST_REQUIRE(err <= amax / 8 * 1.01f);
      sum_err += err;
    }
  }
  BOOST_TEST(sum_err / double(r.size()) < 3.0 / 8 * 0.35);  // mostly within half a step
}

BOOST_AUTO_TEST_CASE(synth_models_give_finite_logits) {
  temp_dir dir;
  for (eng::dtype t : {eng::dtype::f32, eng::dtype::q4_0}) {
    const auto m = write_and_load(dir, "tiny", t);
    eng::kv_cache kv(m.n_local_layers(), m.config.n_kv_heads, m.config.head_dim, 16, 8);
    eng::transformer tf(m, kv);
    std::vector<int32_t> table(8);
    std::iota(table.begin(), table.end(), 0);
    eng::forward_batch b;
    b.tokens = {1, 300, 301, 302, 400, 511, 3, 260};
    b.seqs.push_back({int(b.tokens.size()), 0, table});
    std::vector<float> out;
    auto r = tf.forward(b, eng::output_mode::all_logits, out);
    BOOST_REQUIRE_MESSAGE(r, (r ? "" : r.error().message));
    BOOST_REQUIRE(out.size() == b.tokens.size() * 512u);
    float amax = 0;
    for (float x : out) {
      BOOST_TEST_REQUIRE(std::isfinite(x));
      amax = std::max(amax, std::fabs(x));
    }
    BOOST_TEST(amax > 0.01f);  // not degenerate
    BOOST_TEST(amax < 100.0f);
  }
}

BOOST_AUTO_TEST_CASE(stories15m_q4_0_has_the_llama_shape) {
  temp_dir dir;
  const auto m = write_and_load(dir, "stories15M", eng::dtype::q4_0);
  BOOST_TEST(m.config.dim == 288);
  BOOST_TEST(m.config.n_layers == 6);
  BOOST_TEST(m.config.vocab_size == 32000);
  BOOST_TEST(m.config.head_dim == 48);
  BOOST_TEST(m.token_embedding.rows == 32000);
  BOOST_TEST((m.layers[5].w_down.type == eng::dtype::q4_0));
  BOOST_TEST(m.layers[5].w_down.cols == 768);
  BOOST_TEST(m.output.rows == 32000);
}

BOOST_AUTO_TEST_CASE(model_synth_and_info_commands) {
  const auto bin = troupe::test::troupe_binary();
  BOOST_REQUIRE_MESSAGE(fs::exists(bin), bin << " is not built");
  temp_dir dir;
  const auto out = dir / "cli.gguf";
  auto synth = troupe::test::run_command(bin.string() + " model synth --shape tiny --dtype q8_0 --seed 9 --out " +
                                         out.string() + " 2>/dev/null");
  BOOST_TEST(synth.exit_code == 0);
  BOOST_TEST(synth.out.find("wrote") != std::string::npos);
  // Same bytes as the library call with that seed.
  BOOST_REQUIRE(eng::write_synth_model(*eng::find_synth_shape("tiny"), eng::dtype::q8_0, 9, dir / "lib.gguf"));
  BOOST_TEST((read_file(out) == read_file(dir / "lib.gguf")));

  auto info = troupe::test::run_command(bin.string() + " model info " + out.string());
  BOOST_TEST(info.exit_code == 0);
  for (const char* part : {"format         gguf", "dim            64", "n_kv_heads     2", "vocab_size     512",
                           "blk.1.ffn_up.weight", "q8_0", "[172, 64]", "weight bytes"}) {
    BOOST_TEST(info.out.find(part) != std::string::npos, "missing '" << part << "' in:\n" << info.out);
  }

  auto bad_shape = troupe::test::run_command(bin.string() + " model synth --shape nope --out " +
                                             (dir / "x.gguf").string() + " 2>&1");
  BOOST_TEST(bad_shape.exit_code == 1);
  BOOST_TEST(bad_shape.out.starts_with("troupe: unknown shape 'nope'"));
  auto missing = troupe::test::run_command(bin.string() + " model info " + (dir / "none.gguf").string() + " 2>&1");
  BOOST_TEST(missing.exit_code == 1);
  BOOST_TEST(missing.out.starts_with("troupe: "));
  const auto junk = dir / "junk.gguf";
  {
    std::ofstream j(junk, std::ios::binary);
    j << "GGUF\x03";
  }
  auto corrupt = troupe::test::run_command(bin.string() + " model info " + junk.string() + " 2>&1");
  BOOST_TEST(corrupt.exit_code == 1);
  BOOST_TEST(corrupt.out.starts_with("troupe: gguf: "));
}

BOOST_AUTO_TEST_CASE(model_info_reports_a_real_models_tied_output, *troupe::test::needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  auto real = troupe::test::run_command(troupe::test::troupe_binary().string() + " model info " +
                                        troupe::test::model_path("TinyStories-656K-Q8_0.gguf").string());
  BOOST_TEST(real.exit_code == 0);
  BOOST_TEST(real.out.find("tied_output    yes") != std::string::npos, real.out);
}

BOOST_AUTO_TEST_SUITE_END()
