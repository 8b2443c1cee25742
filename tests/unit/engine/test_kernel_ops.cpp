// Every kernel against a plain reference written out here.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <numeric>

#include "engine/fp16.hpp"
#include "engine/kernels.hpp"
#include "engine/thread_pool.hpp"
#include "random_model.hpp"

using namespace troupe;
using namespace troupe::engine;

using test::randv;

BOOST_AUTO_TEST_SUITE(kernel_ops)

BOOST_AUTO_TEST_CASE(rmsnorm_matches_definition) {
  auto x = randv(96, 1), w = randv(96, 2);
  std::vector<float> out(96);
  kernels::rmsnorm(out.data(), x.data(), w.data(), 96, 1e-5f);
  double ss = 0;
  for (float v : x) ss += double(v) * v;
  const double scale = 1.0 / std::sqrt(ss / 96 + 1e-5);
  for (int i = 0; i < 96; ++i) BOOST_TEST(out[i] == float(x[i] * scale * w[i]), boost::test_tools::tolerance(1e-5f));
}

BOOST_AUTO_TEST_CASE(softmax_sums_to_one_and_is_stable) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f};
  kernels::softmax(x.data(), 3);
  BOOST_TEST(x[0] + x[1] + x[2] == 1.0f, boost::test_tools::tolerance(1e-6f));
  BOOST_TEST(x[1] > x[0]);
  BOOST_TEST(x[1] == float(std::exp(1.0) / (1 + std::exp(1.0) + std::exp(-1.0))), boost::test_tools::tolerance(1e-5f));
}

BOOST_AUTO_TEST_CASE(swiglu_matches_definition) {
  auto g = randv(50, 3, 4.0f), u = randv(50, 4);
  auto out = g;
  kernels::swiglu(out.data(), u.data(), 50);
  for (int i = 0; i < 50; ++i) {
    BOOST_TEST(out[i] == float(g[i] / (1 + std::exp(-double(g[i]))) * u[i]), boost::test_tools::tolerance(1e-5f));
  }
}

BOOST_AUTO_TEST_CASE(rope_styles_are_the_same_rotation_under_a_row_permutation) {
  const int heads = 3, hd = 8;
  auto x = randv(heads * hd, 5);
  // Interleaved layout: pairs (2i, 2i+1). Half layout: pairs (i, i + hd/2).
  std::vector<float> half(x.size());
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      half[h * hd + i] = x[h * hd + 2 * i];
      half[h * hd + i + hd / 2] = x[h * hd + 2 * i + 1];
    }
  auto inter = x;
  kernels::rope(inter.data(), heads, hd, 37, 10000.0f, rope_style::interleaved);
  kernels::rope(half.data(), heads, hd, 37, 10000.0f, rope_style::half);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      BOOST_TEST(inter[h * hd + 2 * i] == half[h * hd + i], boost::test_tools::tolerance(1e-6f));
      BOOST_TEST(inter[h * hd + 2 * i + 1] == half[h * hd + i + hd / 2], boost::test_tools::tolerance(1e-6f));
    }
  // A rotation keeps the norm; position 0 is the identity.
  double n0 = 0, n1 = 0;
  for (size_t i = 0; i < x.size(); ++i) { n0 += x[i] * x[i]; n1 += inter[i] * inter[i]; }
  BOOST_TEST(n0 == n1, boost::test_tools::tolerance(1e-5));
  auto y = x;
  kernels::rope(y.data(), heads, hd, 0, 10000.0f, rope_style::interleaved);
  BOOST_TEST(y == x);
}

BOOST_AUTO_TEST_CASE(f16_and_bf16_conversions_round_trip) {
  for (float f : {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.1f, 3.14159f}) {
    const float back = f16_to_f32(f32_to_f16(f));
    BOOST_TEST(std::fabs(back - f) <= std::fabs(f) * 1e-3f + 1e-7f, f << " -> " << back);
  }
  BOOST_TEST(std::isinf(f16_to_f32(f32_to_f16(1e6f))));
  BOOST_TEST(bf16_to_f32(0x3f80) == 1.0f);
}

BOOST_AUTO_TEST_CASE(matmul_matches_plain_loops_for_every_dtype_and_thread_count) {
  const int rows = 67, cols = 128, n_tokens = 5;
  auto x = randv(size_t(n_tokens) * cols, 7);
  for (auto t : {dtype::f32, dtype::q8_0, dtype::q4_0}) {
    model_weights keep;
    uint64_t st = 11;
    weight w = test::make_weight(keep, t, rows, cols, st, 0.5f);
    // Reference: dequantize and multiply in double.
    std::vector<float> wf(size_t(rows) * cols);
    for (int r = 0; r < rows; ++r) kernels::dequantize_row(w, r, &wf[size_t(r) * cols]);
    for (int threads : {1, 2, 3}) {
      thread_pool pool(threads);
      std::vector<float> out(size_t(n_tokens) * rows);
      kernels::matmul(out.data(), x.data(), n_tokens, w, &pool);
      for (int tk = 0; tk < n_tokens; ++tk)
        for (int r = 0; r < rows; ++r) {
          // Float sums in any order are within a few ulps of the sum of |terms| (a relative
          // tolerance on the result itself fails where terms cancel).
          double s = 0, mag = 0;
          for (int c = 0; c < cols; ++c) {
            const double term = double(wf[size_t(r) * cols + c]) * x[size_t(tk) * cols + c];
            s += term;
            mag += std::fabs(term);
          }
          BOOST_TEST(std::fabs(out[size_t(tk) * rows + r] - s) <= 1e-6 * mag + 1e-30,
                     dtype_name(t) << " threads " << threads << " token " << tk << " row " << r << ": "
                                   << out[size_t(tk) * rows + r] << " vs " << s);
        }
    }
  }
}

BOOST_AUTO_TEST_CASE(quantized_weights_stay_close_to_the_floats) {
  auto f = randv(256, 9);
  std::vector<block_q8_0> q8(8);
  std::vector<block_q4_0> q4(8);
  quantize_q8_0(f.data(), q8.data(), 256);
  quantize_q4_0(f.data(), q4.data(), 256);
  std::vector<float> d8(256), d4(256);
  kernels::dequantize_row(weight{dtype::q8_0, 1, 256, reinterpret_cast<const std::byte*>(q8.data())}, 0, d8.data());
  kernels::dequantize_row(weight{dtype::q4_0, 1, 256, reinterpret_cast<const std::byte*>(q4.data())}, 0, d4.data());
  for (int i = 0; i < 256; ++i) {
    BOOST_TEST(std::fabs(d8[i] - f[i]) <= 1.0f / 127 * 0.51f + 1e-3f);
    // q4_0 step is amax/8; values rounding past +7 steps clamp, so the error bound is one step.
    BOOST_TEST(std::fabs(d4[i] - f[i]) <= 1.0f / 8 + 1e-3f);
  }
}

BOOST_AUTO_TEST_CASE(paged_attention_matches_contiguous_attention) {
  const int hd = 16, n_kv = 2, bs = 4, n_ctx = 11;
  kv_cache kv(1, n_kv, hd, bs, 8);
  const std::vector<int32_t> table = {5, 1, 7};  // scattered physical blocks
  auto keys = randv(size_t(n_ctx) * n_kv * hd, 21), vals = randv(size_t(n_ctx) * n_kv * hd, 22);
  // The cache holds f16: the reference below takes the same rounded values.
  kernels::round_to_f16(keys.data(), int(keys.size()));
  kernels::round_to_f16(vals.data(), int(vals.size()));
  for (int t = 0; t < n_ctx; ++t) {
    kernels::to_f16(&keys[size_t(t) * n_kv * hd], kv.k(0, table[t / bs], t % bs), n_kv * hd);
    kernels::to_f16(&vals[size_t(t) * n_kv * hd], kv.v(0, table[t / bs], t % bs), n_kv * hd);
  }
  auto q = randv(hd, 23);
  for (int kvh = 0; kvh < n_kv; ++kvh) {
    std::vector<float> out(hd), scratch(kernels::attention_scratch_floats(1, n_ctx));
    kernels::attention_head(out.data(), q.data(), kv, 0, kvh, table.data(), n_ctx, hd, scratch.data());
    std::vector<double> p(n_ctx);
    double mx = -1e30, sum = 0;
    for (int t = 0; t < n_ctx; ++t) {
      double s = 0;
      for (int i = 0; i < hd; ++i) s += double(q[i]) * keys[(size_t(t) * n_kv + kvh) * hd + i];
      p[t] = s / std::sqrt(double(hd));
      mx = std::max(mx, p[t]);
    }
    for (auto& v : p) { v = std::exp(v - mx); sum += v; }
    for (int i = 0; i < hd; ++i) {
      double o = 0;
      // The weights rounded to f16 as the kernels round them (llama.cpp's f16 V cache product).
      for (int t = 0; t < n_ctx; ++t) {
        o += double(f16_to_f32(f32_to_f16(float(p[t] / sum)))) * vals[(size_t(t) * n_kv + kvh) * hd + i];
      }
      BOOST_TEST(out[i] == float(o), boost::test_tools::tolerance(1e-4f));
    }
  }
}

BOOST_AUTO_TEST_CASE(thread_pool_covers_every_index_once) {
  thread_pool pool(3);
  for (int64_t n : {1, 2, 7, 100, 1001}) {
    std::vector<int> hits(size_t(n), 0);
    pool.parallel_for(n, [&](int64_t b, int64_t e, int) { for (int64_t i = b; i < e; ++i) hits[size_t(i)]++; }, 4);
    BOOST_TEST(std::count(hits.begin(), hits.end(), 1) == n);
  }
}

BOOST_AUTO_TEST_SUITE_END()
