// The fast CPU paths (AVX2, AVX-512, portable loops, integer dot products, the thread pool)
// against the plain references in kernels::ref and cpu::, on every side of the run-time CPU
// dispatch.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/cpu/kernels_cpu.hpp"
#include "engine/fp16.hpp"
#include "engine/kernels.hpp"
#include "engine/thread_pool.hpp"
#include "random_model.hpp"

using namespace troupe;
using namespace troupe::engine;

using test::randv;

namespace {

// Runs the body once per kernel variant (scalar, AVX2, AVX-512 with VNNI where the CPU has it),
// restoring the detected one afterwards. A variant the CPU lacks is skipped with a message.
template <class Body>
void on_every_variant(Body body) {
  const cpu::isa detected = cpu::active_isa();
  for (cpu::isa v : {cpu::isa::avx512, cpu::isa::avx2, cpu::isa::scalar}) {
    if (!cpu::set_isa(v)) {
      BOOST_TEST_MESSAGE("SKIP variant " << cpu::isa_name(v) << ": this CPU lacks it");
      continue;
    }
    BOOST_TEST_CONTEXT("variant " << cpu::variant_name()) { body(); }
  }
  cpu::set_isa(detected);
}

// Weight rows dequantized to floats.
std::vector<float> dequantized(const weight& w) {
  std::vector<float> f(size_t(w.rows * w.cols));
  for (int64_t r = 0; r < w.rows; ++r) kernels::dequantize_row(w, r, &f[size_t(r * w.cols)]);
  return f;
}

// |a - b| <= tol * scale, where scale is the sum of |w| |x| of that output element: summation
// order may change the result by a few ulp of the terms, not of the (possibly tiny) result.
void check_close(const std::vector<float>& got, const std::vector<float>& want, const std::vector<float>& wf,
                 const std::vector<float>& x, int n_tokens, int64_t rows, int64_t cols, double tol) {
  BOOST_REQUIRE_EQUAL(got.size(), want.size());
  int bad = 0;
  for (int t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double scale = 0;
      for (int64_t c = 0; c < cols; ++c) scale += std::fabs(double(wf[size_t(r * cols + c)]) * x[size_t(t * cols + c)]);
      const size_t i = size_t(t * rows + r);
      if (std::fabs(double(got[i]) - want[i]) > tol * scale + 1e-30 && bad++ < 5) {
        BOOST_ERROR("token " << t << " row " << r << ": " << got[i] << " vs " << want[i] << " (scale " << scale << ")");
      }
    }
  BOOST_TEST(bad == 0);
}

// The float result of Q8_0 activations times the weights, computed from their dequantized values.
std::vector<float> integer_reference(const std::vector<float>& wf, const std::vector<block_q8_0>& xq, int n_tokens,
                                     int64_t rows, int64_t cols) {
  std::vector<float> out(size_t(n_tokens * rows));
  const int64_t nb = cols / 32;
  for (int t = 0; t < n_tokens; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const block_q8_0& b = xq[size_t(t * nb + c / 32)];
        s += double(wf[size_t(r * cols + c)]) * f16_to_f32(b.d) * b.qs[c % 32];
      }
      out[size_t(t * rows + r)] = float(s);
    }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(fast_kernels)

BOOST_AUTO_TEST_CASE(float_matmul_matches_reference_for_every_dtype_batch_and_thread_count) {
  // cols 100 is not a multiple of 8 (portable GEMV); 67 rows leave remainders everywhere.
  for (int cols : {128, 100, 768}) {
    for (auto t : {dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0}) {
      if (block_elems(t) > 1 && cols % 32 != 0) continue;
      if ((t == dtype::f16 || t == dtype::bf16) && cols != 128) continue;
      model_weights keep;
      uint64_t st = 11;
      weight w;
      if (t == dtype::f16 || t == dtype::bf16) {
        // make_weight has no half types: build them from rounded floats.
        const int64_t rows = 67;
        std::vector<std::byte> bytes(size_t(rows * cols * 2));
        auto* h = reinterpret_cast<uint16_t*>(bytes.data());
        for (int64_t i = 0; i < rows * cols; ++i) {
          const float f = test::rand_weight(st, 0.5f);
          h[i] = t == dtype::f16 ? f32_to_f16(f) : uint16_t(std::bit_cast<uint32_t>(f) >> 16);
        }
        w = weight{t, rows, cols, keep.keep(std::move(bytes))};
      } else {
        w = test::make_weight(keep, t, 67, cols, st, 0.5f);
      }
      const auto wf = dequantized(w);
      for (int n_tokens : {1, 2, 5, 33}) {
        const auto x = randv(size_t(n_tokens * cols), 7);
        std::vector<float> want(size_t(n_tokens * w.rows));
        kernels::ref::matmul(want.data(), x.data(), n_tokens, w);
        on_every_variant([&] {
          for (int threads : {1, 2, 3}) {
            BOOST_TEST_CONTEXT("dtype " << dtype_name(t) << " cols " << cols << " tokens " << n_tokens << " threads " << threads) {
              thread_pool pool(threads);
              std::vector<float> got(want.size(), NAN);
              kernels::matmul(got.data(), x.data(), n_tokens, w, &pool);
              check_close(got, want, wf, x, n_tokens, w.rows, cols, 1e-5);
            }
          }
        });
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(activation_quantization_is_ggml_q8_0_on_both_paths) {
  auto x = randv(32 * 40, 3, 3.0f);
  for (int i = 0; i < 32; ++i) x[i] = 0.0f;            // an all-zero block: scale 0, values 0
  // Block 1 has amax 127, so values are scaled by exactly 1: halves must round to even.
  x[32] = 127.0f;
  x[33] = 2.5f;
  x[34] = 3.5f;
  x[35] = -2.5f;
  std::vector<block_q8_0> avx(40), portable(40);
  std::vector<float> avx_scales(40), portable_scales(40);
  std::vector<int32_t> avx_bias(40), portable_bias(40);
  std::vector<int8_t> avx_qs(40 * 32), portable_qs(40 * 32);
  on_every_variant([&] {
    const bool a = cpu::has_avx2();
    const cpu::q8_activations dst{a ? avx.data() : portable.data(), a ? avx_scales.data() : portable_scales.data(),
                                  a ? avx_bias.data() : portable_bias.data(), a ? avx_qs.data() : portable_qs.data()};
    cpu::quantize_activations_q8_0(x.data(), dst, 0, int64_t(x.size()));
  });
  for (int b = 0; b < 40; ++b) {
    const float* p = &x[size_t(b) * 32];
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(p[j]));
    const float id = amax != 0 ? 127.0f / amax : 0.0f;
    BOOST_TEST(portable[b].d == f32_to_f16(amax / 127.0f));
    BOOST_TEST(portable_scales[b] == f16_to_f32(portable[b].d));
    if (b == 1) BOOST_TEST((portable[b].qs[1] == 2 && portable[b].qs[2] == 4 && portable[b].qs[3] == -2));
    for (int j = 0; j < 32; ++j) BOOST_TEST(portable[b].qs[j] == int8_t(std::nearbyint(p[j] * id)));
    BOOST_TEST(std::equal(portable[b].qs, portable[b].qs + 32, portable_qs.begin() + b * 32), "packed block " << b);
    int sum = 0;
    for (int j = 0; j < 32; ++j) sum += portable[b].qs[j];
    BOOST_TEST(portable_bias[size_t(b)] == -8 * sum);
    if (cpu::has_avx2()) {
      BOOST_TEST(avx[b].d == portable[b].d);
      BOOST_TEST(avx_scales[b] == portable_scales[b]);
      BOOST_TEST(avx_bias[size_t(b)] == portable_bias[size_t(b)]);
      BOOST_TEST(std::equal(avx[b].qs, avx[b].qs + 32, portable[b].qs), "block " << b);
      BOOST_TEST(std::equal(avx_qs.begin() + b * 32, avx_qs.begin() + b * 32 + 32, portable[b].qs), "packed block " << b);
    }
  }
}

BOOST_AUTO_TEST_CASE(integer_matmul_matches_the_dequantized_product_of_quantized_activations) {
  for (auto t : {dtype::q8_0, dtype::q4_0}) {
    for (int cols : {64, 96, 768}) {
      model_weights keep;
      uint64_t st = 5;
      const weight w = test::make_weight(keep, t, 37, cols, st, 0.5f);
      const auto wf = dequantized(w);
      for (int n_tokens : {1, 3, 4, 9}) {
        const auto x = randv(size_t(n_tokens * cols), 17);
        std::vector<block_q8_0> xq(size_t(n_tokens * cols / 32));
        std::vector<float> scales(xq.size());
        std::vector<int32_t> bias(xq.size());
        std::vector<int8_t> qs(xq.size() * 32);
        cpu::quantize_activations_q8_0(x.data(), {xq.data(), scales.data(), bias.data(), qs.data()}, 0,
                                       int64_t(x.size()));
        const auto want = integer_reference(wf, xq, n_tokens, w.rows, cols);
        std::vector<float> exact(want.size());
        kernels::ref::matmul(exact.data(), x.data(), n_tokens, w);
        on_every_variant([&] {
          for (int threads : {1, 2}) {
            BOOST_TEST_CONTEXT(dtype_name(t) << " cols " << cols << " tokens " << n_tokens << " threads " << threads) {
              thread_pool pool(threads);
              std::vector<float> got(want.size(), NAN);
              const kernels::matmul_out o{got.data(), &w};
              kernels::matmul_many({&o, 1}, x.data(), n_tokens, kernels::activations::q8, &pool);
              check_close(got, want, wf, x, n_tokens, w.rows, cols, 1e-5);
              // And close to the float product: 8-bit activations lose about 1/254 per value.
              check_close(got, exact, wf, x, n_tokens, w.rows, cols, 1.0 / 128);
            }
          }
        });
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(avx512_integer_kernels_give_the_avx2_kernels_bits) {
  // Same integer sums, scales and FMA order by design: a difference in one bit is a bug. Odd block
  // counts (cols 96, 800); 37 rows (Q4_0: groups of 16, 16 and 5) and row ranges that cut groups;
  // 1..15 tokens: every tile shape.
  if (cpu::detected_isa() < cpu::isa::avx512) {
    BOOST_TEST_MESSAGE("SKIP: this CPU has no AVX-512; the AVX-512 kernels are not tested here");
    return;
  }
  const bool vnni = [] { cpu::set_isa(cpu::isa::avx512); return cpu::has_avx512_vnni(); }();
  if (!vnni) BOOST_TEST_MESSAGE("SKIP: this CPU has no AVX-512 VNNI; testing the F/BW kernels only");
  for (auto t : {dtype::q8_0, dtype::q4_0}) {
    for (int cols : {64, 96, 800}) {
      model_weights keep;
      uint64_t st = 21;
      const weight w = test::make_weight(keep, t, 37, cols, st, 0.5f);
      BOOST_REQUIRE(t != dtype::q4_0 || w.packed != nullptr);
      const int64_t nb = cols / 32;
      for (int n_tokens : {1, 2, 3, 4, 5, 8, 9, 12, 15}) {
        const auto x = randv(size_t(n_tokens * cols), 23, 2.0f);
        std::vector<block_q8_0> xq(size_t(n_tokens * nb));
        std::vector<float> xd(xq.size());
        std::vector<int32_t> bias(xq.size());
        std::vector<int8_t> qs(xq.size() * 32);
        cpu::avx2::quantize_q8_0(x.data(), xq.data(), xd.data(), bias.data(), qs.data(), int64_t(x.size()));
        for (auto [b, e] : {std::pair<int64_t, int64_t>{0, w.rows}, {3, 29}, {17, 18}}) {
          const size_t n_out = size_t(n_tokens * w.rows);
          std::vector<float> want(n_out, NAN), f_bw(n_out, NAN), with_vnni(n_out, NAN);
          if (t == dtype::q8_0) {
            const auto* wq = reinterpret_cast<const block_q8_0*>(w.data);
            cpu::avx2::matmul_q8_0(want.data(), w.rows, xq.data(), xd.data(), n_tokens, wq, nb, b, e);
            cpu::avx512::matmul_q8_0(f_bw.data(), w.rows, qs.data(), xd.data(), n_tokens, wq, nb, b, e);
            if (vnni) cpu::avx512_vnni::matmul_q8_0(with_vnni.data(), w.rows, qs.data(), xd.data(), n_tokens, wq, nb, b, e);
          } else {
            cpu::avx2::matmul_q4_0(want.data(), w.rows, qs.data(), xd.data(), bias.data(), n_tokens, w.packed, nb, b, e);
            cpu::avx512::matmul_q4_0(f_bw.data(), w.rows, qs.data(), xd.data(), bias.data(), n_tokens, w.packed, nb, b, e);
            if (vnni) {
              cpu::avx512_vnni::matmul_q4_0(with_vnni.data(), w.rows, qs.data(), xd.data(), bias.data(), n_tokens,
                                            w.packed, nb, b, e);
            }
          }
          BOOST_TEST_CONTEXT(dtype_name(t) << " cols " << cols << " tokens " << n_tokens << " rows [" << b << ", " << e << ")") {
            // Rows outside [b, e) stay untouched (NaN); inside, finite and equal.
            int written = 0;
            for (int tok = 0; tok < n_tokens; ++tok)
              for (int64_t r = 0; r < w.rows; ++r) {
                const bool in = r >= b && r < e;
                const float v = want[size_t(tok * w.rows + r)];
                written += in && std::isfinite(v) ? 1 : 0;
                if (!in) BOOST_TEST(std::isnan(v));
              }
            BOOST_TEST(written == n_tokens * (e - b));
            BOOST_TEST(std::memcmp(f_bw.data(), want.data(), n_out * 4) == 0, "avx512 differs from avx2");
            if (vnni) BOOST_TEST(std::memcmp(with_vnni.data(), want.data(), n_out * 4) == 0, "avx512-vnni differs from avx2");
          }
        }
      }
    }
  }
  cpu::set_isa(cpu::detected_isa());
}

BOOST_AUTO_TEST_CASE(every_variant_gives_the_same_integer_matmul_bits) {
  // The portable loops follow the SIMD kernels' arithmetic (Q8_0: eight lanes and the AVX2
  // horizontal sum; Q4_0: one FMA per block), so TROUPE_CPU=scalar gives the same numbers.
  for (auto t : {dtype::q8_0, dtype::q4_0}) {
    model_weights keep;
    uint64_t st = 41;
    const int cols = 160;
    const weight w = test::make_weight(keep, t, 45, cols, st, 0.5f);
    const int n_tokens = 13;
    const auto x = randv(size_t(n_tokens * cols), 43, 2.0f);
    std::vector<std::vector<float>> results;
    on_every_variant([&] {
      thread_pool pool(2);
      std::vector<float> got(size_t(n_tokens * w.rows), NAN);
      const kernels::matmul_out o{got.data(), &w};
      kernels::matmul_many({&o, 1}, x.data(), n_tokens, kernels::activations::q8, &pool);
      BOOST_TEST(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v); }));
      results.push_back(std::move(got));
    });
    BOOST_REQUIRE(results.size() >= 2);
    for (size_t i = 1; i < results.size(); ++i) {
      BOOST_TEST(std::memcmp(results[i].data(), results[0].data(), results[0].size() * 4) == 0,
                 dtype_name(t) << ": variant " << i << " differs from the first");
    }
  }
}

BOOST_AUTO_TEST_CASE(avx512_f32_gemm_gives_the_avx2_gemms_bits) {
  // Two rows per zmm, each half the AVX2 kernel's accumulator: a difference in one bit is a bug.
  // Widths with a masked tail (100, 172) or none; 37 rows (odd: the single-row path) and row
  // ranges that start off the tile grid; 1..17 tokens and 41 (every token tile, the leftovers).
  if (cpu::detected_isa() < cpu::isa::avx512) {
    BOOST_TEST_MESSAGE("SKIP: this CPU has no AVX-512; the AVX-512 f32 GEMM is not tested here");
    return;
  }
  for (int cols : {64, 100, 172, 768}) {
    const int64_t rows = 37;
    const auto w = randv(size_t(rows * cols), 31, 0.5f);
    for (int n_tokens : {1, 2, 3, 5, 8, 9, 12, 16, 17, 41}) {
      const auto x = randv(size_t(n_tokens * cols), 37, 2.0f);
      for (auto [b, e] : {std::pair<int64_t, int64_t>{0, rows}, {3, 29}, {5, 6}}) {
        std::vector<float> want(size_t(n_tokens * rows), NAN), got(want.size(), NAN);
        cpu::avx2::gemm_f32(want.data(), rows, x.data(), n_tokens, w.data(), cols, b, e);
        cpu::avx512::gemm_f32(got.data(), rows, x.data(), n_tokens, w.data(), cols, b, e);
        BOOST_TEST_CONTEXT("cols " << cols << " tokens " << n_tokens << " rows [" << b << ", " << e << ")") {
          BOOST_TEST(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, "avx512 differs from avx2");
          int written = 0;
          for (int t = 0; t < n_tokens; ++t)
            for (int64_t r = b; r < e; ++r) written += std::isfinite(got[size_t(t * rows + r)]) ? 1 : 0;
          BOOST_TEST(written == n_tokens * (e - b));
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(troupe_cpu_names_parse_and_a_missing_variant_is_refused) {
  BOOST_TEST((cpu::parse_isa("scalar") == cpu::isa::scalar));
  BOOST_TEST((cpu::parse_isa("avx2") == cpu::isa::avx2));
  BOOST_TEST((cpu::parse_isa("avx512") == cpu::isa::avx512));
  BOOST_TEST(!cpu::parse_isa("sse9").has_value());
  const cpu::isa before = cpu::active_isa();
  BOOST_TEST(cpu::set_isa(cpu::isa::scalar));
  BOOST_TEST(std::string(cpu::variant_name()) == "scalar");
  if (cpu::detected_isa() < cpu::isa::avx512) {
    BOOST_TEST(!cpu::set_isa(cpu::isa::avx512));
    BOOST_TEST((cpu::active_isa() == cpu::isa::scalar));
  }
  cpu::set_isa(before);
}

BOOST_AUTO_TEST_CASE(integer_matmul_gives_each_token_the_same_bits_in_any_batch_and_thread_count) {
  for (auto t : {dtype::q8_0, dtype::q4_0}) {
    model_weights keep;
    uint64_t st = 8;
    const int cols = 256;
    const weight w = test::make_weight(keep, t, 70, cols, st, 0.5f);
    const int n_tokens = 11;
    const auto x = randv(size_t(n_tokens * cols), 4);
    on_every_variant([&] {
      thread_pool pool(3);
      std::vector<float> batch(size_t(n_tokens * w.rows));
      const kernels::matmul_out o{batch.data(), &w};
      kernels::matmul_many({&o, 1}, x.data(), n_tokens, kernels::activations::q8, &pool);
      for (int tk = 0; tk < n_tokens; ++tk) {
        std::vector<float> alone(size_t(w.rows));
        const kernels::matmul_out a{alone.data(), &w};
        kernels::matmul_many({&a, 1}, &x[size_t(tk * cols)], 1, kernels::activations::q8, nullptr);
        BOOST_TEST(std::equal(alone.begin(), alone.end(), batch.begin() + tk * w.rows), dtype_name(t) << " token " << tk);
      }
    });
  }
}

BOOST_AUTO_TEST_CASE(float_matmul_gives_each_token_the_same_bits_in_any_batch_and_thread_count) {
  // One accumulator (AVX2) or one fixed set of partial sums (portable) per (row, token) whatever
  // the tile, so batching requests (the scheduler's job) cannot change a token's logits. cols
  // 172 (stories260K's FFN width) is not a multiple of 8: the last columns take the same path in
  // every tile. (OpenBLAS, used here before, failed this for 172 and on CPUs without AVX2.)
  on_every_variant([] {
    for (auto t : {dtype::f32, dtype::f16, dtype::bf16}) {
      for (int cols : {64, 172, 768}) {
        model_weights keep;
        uint64_t st = 9;
        const weight w = test::make_weight(keep, t, 71, cols, st, 0.5f);
        for (int n_tokens : {2, 5, 32}) {
          const auto x = randv(size_t(n_tokens * cols), 6);
          for (int threads : {1, 2, 3}) {
            thread_pool pool(threads);
            std::vector<float> batch(size_t(n_tokens * w.rows));
            const kernels::matmul_out o{batch.data(), &w};
            kernels::matmul_many({&o, 1}, x.data(), n_tokens, kernels::activations::f32, &pool);
            for (int tk = 0; tk < n_tokens; ++tk) {
              std::vector<float> alone(size_t(w.rows));
              const kernels::matmul_out a{alone.data(), &w};
              kernels::matmul_many({&a, 1}, &x[size_t(tk * cols)], 1, kernels::activations::f32, nullptr);
              BOOST_TEST(std::equal(alone.begin(), alone.end(), batch.begin() + tk * w.rows),
                         dtype_name(t) << " cols " << cols << " tokens " << n_tokens << " threads " << threads
                                       << " token " << tk);
            }
          }
        }
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(swiglu_gives_a_value_the_same_bits_wherever_it_sits) {
  // The forward pass runs SwiGLU over all tokens of a batch at once, so where a token's values
  // sit (vector body or the last 1..7) depends on the batch.
  const auto g = randv(177, 44, 12.0f), u = randv(177, 45);
  on_every_variant([&] {
    std::vector<float> all = g;
    kernels::swiglu(all.data(), u.data(), int(all.size()));
    int differ = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      float one = g[i];
      kernels::swiglu(&one, &u[i], 1);
      differ += one != all[i];
    }
    BOOST_TEST(differ == 0, differ << " of " << g.size() << " values differ");
  });
}

BOOST_AUTO_TEST_CASE(matmul_many_equals_separate_matmuls) {
  model_weights keep;
  uint64_t st = 9;
  const int cols = 128;
  const weight a = test::make_weight(keep, dtype::q4_0, 40, cols, st, 0.5f);
  const weight b = test::make_weight(keep, dtype::q8_0, 24, cols, st, 0.5f);
  const weight c = test::make_weight(keep, dtype::f32, 50, cols, st, 0.5f);
  for (int n_tokens : {1, 6}) {
    const auto x = randv(size_t(n_tokens * cols), 2);
    thread_pool pool(2);
    for (auto act : {kernels::activations::f32, kernels::activations::q8}) {
      std::vector<float> oa(size_t(n_tokens * 40)), ob(size_t(n_tokens * 24)), oc(size_t(n_tokens * 50));
      const kernels::matmul_out all[] = {{oa.data(), &a}, {ob.data(), &b}, {oc.data(), &c}};
      kernels::matmul_many(all, x.data(), n_tokens, act, &pool);
      for (const auto& one : all) {
        std::vector<float> alone(size_t(n_tokens * one.w->rows));
        const kernels::matmul_out o{alone.data(), one.w};
        kernels::matmul_many({&o, 1}, x.data(), n_tokens, act, nullptr);
        BOOST_TEST(std::equal(alone.begin(), alone.end(), one.out), dtype_name(one.w->type) << " tokens " << n_tokens);
      }
    }
  }
}

namespace {
// Every slot of the cache's layer filled with random keys (seed k_seed) and values (v_seed), as f16.
void fill_cache(kv_cache& kv, int layer, uint64_t k_seed, uint64_t v_seed) {
  const int row = kv.kv_dim();
  const auto k = randv(size_t(kv.n_blocks()) * kv.block_size() * row, k_seed), v = randv(k.size(), v_seed);
  for (int b = 0; b < kv.n_blocks(); ++b)
    for (int s = 0; s < kv.block_size(); ++s) {
      kernels::to_f16(&k[(size_t(b) * kv.block_size() + s) * row], kv.k(layer, b, s), row);
      kernels::to_f16(&v[(size_t(b) * kv.block_size() + s) * row], kv.v(layer, b, s), row);
    }
}
}  // namespace

BOOST_AUTO_TEST_CASE(fast_paged_attention_matches_the_reference_without_copying_blocks) {
  for (int hd : {8, 64, 72}) {
    const int n_kv = 3, bs = 4, n_blocks = 16;
    kv_cache kv(2, n_kv, hd, bs, n_blocks);
    const std::vector<int32_t> table = {9, 2, 14, 0, 5, 11, 3, 7, 1, 12};  // scattered physical blocks
    fill_cache(kv, 1, 31, 32);
    const auto q = randv(size_t(hd), 33, 3.0f);
    for (int n_ctx : {1, 7, 8, 37, 40}) {
      for (int h = 0; h < n_kv; ++h) {
        std::vector<float> want(static_cast<size_t>(hd)), scratch(static_cast<size_t>(n_ctx));
        kernels::ref::attention_head(want.data(), q.data(), kv, 1, h, table.data(), n_ctx, hd, scratch.data());
        on_every_variant([&] {
          std::vector<float> got(static_cast<size_t>(hd), NAN), scratch2(kernels::attention_scratch_floats(1, n_ctx));
          kernels::attention_head(got.data(), q.data(), kv, 1, h, table.data(), n_ctx, hd, scratch2.data());
          for (int i = 0; i < hd; ++i) {
            // Both round the softmax weights to f16; their exps differ by an ulp or two, which
            // can flip one weight's rounding (2^-11 of it, times |v| <= 1).
            BOOST_TEST(std::fabs(got[i] - want[i]) <= 2e-6f + 1e-5f * std::fabs(want[i]) + 5e-4f,
                       "hd " << hd << " n_ctx " << n_ctx << " head " << h << " i " << i << ": " << got[i] << " vs " << want[i]);
          }
        });
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(avx512_attention_gives_the_avx2_bits) {
  // The AVX-512 values' half (16 values per zmm, an 8-value ymm for the rest of a 64-float chunk)
  // against AVX2's, for every chunk shape (head_dim / 8 = 1 .. 8, and past 64), runs of tokens
  // and grouped kv heads: the same FMA per output float per position, so the same bits.
  if (cpu::detected_isa() < cpu::isa::avx512) {
    BOOST_TEST_MESSAGE("SKIP avx512_attention_gives_the_avx2_bits: this CPU lacks AVX-512");
    return;
  }
  const int n_heads = 4, n_kv = 2, group = 2, bs = 16, n_blocks = 6;
  for (int hd : {8, 16, 24, 32, 40, 48, 56, 64, 72, 136}) {
    kv_cache kv(1, n_kv, hd, bs, n_blocks);
    const std::vector<int32_t> table = {5, 1, 3, 0, 4, 2};
    fill_cache(kv, 0, 71, 72);
    const int ld = n_heads * hd;
    for (auto [ctx, n_tok] : {std::pair{1, 1}, std::pair{9, 1}, std::pair{37, 3}, std::pair{80, 8}}) {
      const auto q = randv(size_t(n_tok * ld), 73 + ctx, 3.0f);
      std::vector<float> scratch(kernels::attention_scratch_floats(n_heads, ctx + n_tok - 1, n_tok));
      std::vector<float> got[2];
      for (int v = 0; v < 2; ++v) {
        BOOST_REQUIRE(cpu::set_isa(v == 0 ? cpu::isa::avx2 : cpu::isa::avx512));
        got[v].assign(size_t(n_tok * ld), NAN);
        kernels::attention(got[v].data(), q.data(), kv, 0, table.data(), ctx, hd, 0, n_heads, group, scratch.data(),
                           n_tok, ld);
      }
      cpu::set_isa(cpu::detected_isa());
      for (size_t i = 0; i < got[0].size(); ++i) {
        BOOST_TEST((std::isfinite(got[0][i]) && std::memcmp(&got[0][i], &got[1][i], 4) == 0),
                   "hd " << hd << " ctx " << ctx << " tokens " << n_tok << " i " << i << ": " << got[1][i] << " vs "
                         << got[0][i]);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(attention_over_a_head_range_equals_one_head_at_a_time_with_grouped_kv_heads) {
  // 6 query heads share 3 kv heads (group 2); ranges that start inside a group, the whole range,
  // and single heads must give each head bitwise the same output, close to the reference.
  const int n_heads = 6, n_kv = 3, group = 2, bs = 16, n_blocks = 8;
  for (int hd : {8, 64, 72}) {
    kv_cache kv(1, n_kv, hd, bs, n_blocks);
    const std::vector<int32_t> table = {6, 1, 4, 0, 7};
    fill_cache(kv, 0, 51, 52);
    const auto q = randv(size_t(n_heads * hd), 53, 3.0f);
    for (int n_ctx : {1, 9, 16, 33, 80}) {
      on_every_variant([&] {
        std::vector<float> one(size_t(n_heads * hd), NAN), scratch(kernels::attention_scratch_floats(n_heads, n_ctx));
        for (int h = 0; h < n_heads; ++h) {
          kernels::attention(one.data(), q.data(), kv, 0, table.data(), n_ctx, hd, h, h + 1, group, scratch.data());
        }
        for (auto [b, e] : {std::pair{0, n_heads}, std::pair{1, 4}, std::pair{3, 6}}) {
          std::vector<float> range(size_t(n_heads * hd), NAN);
          kernels::attention(range.data(), q.data(), kv, 0, table.data(), n_ctx, hd, b, e, group, scratch.data());
          for (int i = b * hd; i < e * hd; ++i) {
            BOOST_TEST(range[size_t(i)] == one[size_t(i)], "hd " << hd << " n_ctx " << n_ctx << " range " << b << ".." << e << " i " << i);
          }
        }
        for (int h = 0; h < n_heads; ++h) {
          std::vector<float> want(static_cast<size_t>(hd)), s(static_cast<size_t>(n_ctx));
          kernels::ref::attention_head(want.data(), &q[size_t(h * hd)], kv, 0, h / group, table.data(), n_ctx, hd, s.data());
          for (int i = 0; i < hd; ++i) {
            const float got = one[size_t(h * hd + i)];
            BOOST_TEST(std::fabs(got - want[size_t(i)]) <= 2e-6f + 1e-5f * std::fabs(want[size_t(i)]),
                       "hd " << hd << " n_ctx " << n_ctx << " head " << h << " i " << i << ": " << got << " vs " << want[size_t(i)]);
          }
        }
      });
    }
  }
}

BOOST_AUTO_TEST_CASE(attention_of_a_run_of_tokens_equals_each_token_alone_bit_for_bit) {
  // A prefill chunk's tokens go through attention together (the cache read once for all); each
  // must get exactly what it gets alone (decode), for runs that start at any position, contexts
  // that cross block and 8-position boundaries, and head ranges.
  const int n_heads = 6, n_kv = 3, group = 2, bs = 16, n_blocks = 8;
  for (int hd : {8, 64}) {
    kv_cache kv(1, n_kv, hd, bs, n_blocks);
    const std::vector<int32_t> table = {6, 1, 4, 0, 7, 2};
    fill_cache(kv, 0, 61, 62);
    const int ld = n_heads * hd;
    for (int first_ctx : {1, 5, 8, 15, 41}) {
      for (int n_tok : {1, 2, 7, 8}) {
        const auto q = randv(size_t(n_tok * ld), 63 + first_ctx, 3.0f);
        on_every_variant([&] {
          std::vector<float> scratch(kernels::attention_scratch_floats(n_heads, first_ctx + n_tok - 1, n_tok));
          for (auto [b, e] : {std::pair{0, n_heads}, std::pair{1, 4}}) {
            std::vector<float> run(size_t(n_tok * ld), NAN), alone(run.size(), NAN);
            kernels::attention(run.data(), q.data(), kv, 0, table.data(), first_ctx, hd, b, e, group, scratch.data(),
                               n_tok, ld);
            for (int t = 0; t < n_tok; ++t) {
              kernels::attention(&alone[size_t(t * ld)], &q[size_t(t * ld)], kv, 0, table.data(), first_ctx + t, hd, b,
                                 e, group, scratch.data());
            }
            for (int t = 0; t < n_tok; ++t)
              for (int i = b * hd; i < e * hd; ++i) {
                const size_t k = size_t(t * ld + i);
                BOOST_TEST((std::isfinite(run[k]) && std::memcmp(&run[k], &alone[k], 4) == 0),
                           "hd " << hd << " ctx " << first_ctx << " run " << n_tok << " token " << t << " i " << i
                                 << ": " << run[k] << " vs " << alone[k]);
              }
          }
        });
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(fast_elementwise_ops_match_the_references) {
  for (int n : {1, 7, 8, 64, 771}) {
    auto x = randv(size_t(n), 40, 2.0f), w = randv(size_t(n), 41), g = randv(size_t(n), 42, 30.0f), u = randv(size_t(n), 43);
    g[0] = 100.0f;  // exp overflow and underflow ranges
    if (n > 1) g[1] = -100.0f;
    std::vector<float> norm_ref(static_cast<size_t>(n)), swiglu_ref = g, add_ref = x;
    cpu::rmsnorm(norm_ref.data(), x.data(), w.data(), n, 1e-5f);
    cpu::swiglu(swiglu_ref.data(), u.data(), n);
    cpu::add(add_ref.data(), w.data(), n);
    on_every_variant([&] {
      std::vector<float> norm(static_cast<size_t>(n)), sw = g, sum = x;
      kernels::rmsnorm(norm.data(), x.data(), w.data(), n, 1e-5f);
      kernels::swiglu(sw.data(), u.data(), n);
      kernels::add(sum.data(), w.data(), n);
      for (int i = 0; i < n; ++i) {
        BOOST_TEST(std::fabs(norm[i] - norm_ref[i]) <= 1e-5f * (std::fabs(norm_ref[i]) + 1e-3f), "rmsnorm n " << n << " i " << i);
        BOOST_TEST(std::fabs(sw[i] - swiglu_ref[i]) <= 1e-6f * (std::fabs(swiglu_ref[i]) + 1e-3f), "swiglu n " << n << " i " << i << ": " << sw[i] << " vs " << swiglu_ref[i]);
        BOOST_TEST(sum[i] == add_ref[i]);
      }
    });
  }
}

BOOST_AUTO_TEST_CASE(rope_gives_the_same_rotation_whatever_was_rotated_before) {
  // cpu::rope keeps the last position's table: alternate positions, sizes and thetas.
  const auto x = randv(4 * 16, 50);
  auto direct = [&](int pos, int hd, float theta) {
    std::vector<float> v(x.begin(), x.begin() + 4 * hd);
    // The angle of pair i as ggml forms it: pos times theta^(-2/hd), i times over, in float.
    const float ratio = std::pow(theta, -2.0f / float(hd));
    float angle = float(pos);
    for (int i = 0; i < hd / 2; ++i, angle *= ratio) {
      const float c = std::cos(angle), s = std::sin(angle);
      for (int h = 0; h < 4; ++h) {
        const float a = v[size_t(h * hd + 2 * i)], b = v[size_t(h * hd + 2 * i + 1)];
        // One product of each output rounded, the other fused, as llama.cpp's native build does.
        v[size_t(h * hd + 2 * i)] = std::fma(a, c, -(b * s));
        v[size_t(h * hd + 2 * i + 1)] = std::fma(a, s, b * c);
      }
    }
    return v;
  };
  struct call { int pos, hd; float theta; };
  on_every_variant([&] {  // the AVX2 rotation and the portable one give the same bits
    for (auto [pos, hd, theta] : {call{3, 16, 10000.0f}, call{3, 16, 10000.0f}, call{4, 16, 10000.0f},
                                  call{4, 8, 10000.0f}, call{4, 8, 500000.0f}, call{3, 16, 10000.0f}}) {
      std::vector<float> v(x.begin(), x.begin() + 4 * hd);
      kernels::rope(v.data(), 4, hd, pos, theta, rope_style::interleaved);
      BOOST_TEST(v == direct(pos, hd, theta), "pos " << pos << " hd " << hd << " theta " << theta);
    }
  });
}

BOOST_AUTO_TEST_CASE(thread_pool_runs_every_index_once_across_many_jobs) {
  for (int threads : {1, 2, 3, 5}) {
    thread_pool pool(threads);
    std::vector<std::atomic<int>> hits(5000);
    std::atomic<int> bad_index{0};
    int64_t expected_total = 0;
    for (int job = 0; job < 1000; ++job) {
      const int64_t n = 1 + (job * 7919) % 5000;
      const int64_t grain = 1 + job % 17;
      expected_total += n;
      pool.parallel_for(n, [&](int64_t b, int64_t e, int thread) {
        if (thread < 0 || thread >= threads || b % grain != 0) bad_index.fetch_add(1);
        for (int64_t i = b; i < e; ++i) hits[size_t(i)].fetch_add(1, std::memory_order_relaxed);
      }, grain);
    }
    int64_t total = 0;
    for (auto& h : hits) total += h.load();
    BOOST_TEST(total == expected_total, "threads " << threads);
    BOOST_TEST(bad_index.load() == 0);
  }
}

BOOST_AUTO_TEST_CASE(thread_pool_never_runs_a_chunk_of_one_job_twice) {
  // Back-to-back jobs of different sizes: a worker still looking for work in the previous job
  // must not claim a chunk of the next one (a race once seen after ~10^4 jobs; it shows as a
  // wrong count here, or as a hang that the CTest timeout turns into a failure).
  thread_pool pool(2);
  int bad = 0;
  for (int job = 0; job < 60000 && bad == 0; ++job) {
    const int64_t n = 1 + (int64_t(job) * 7919) % 3000;
    const int64_t grain = 1 + job % 17;
    std::atomic<int64_t> count{0};
    pool.parallel_for(n, [&](int64_t b, int64_t e, int) { count.fetch_add(e - b, std::memory_order_relaxed); }, grain);
    if (count.load() != n) {
      ++bad;
      BOOST_ERROR("job " << job << ": " << count.load() << " indices run for n = " << n);
    }
  }
}

BOOST_AUTO_TEST_CASE(thread_pool_works_right_after_construction_and_destructs_when_idle) {
  for (int i = 0; i < 50; ++i) {
    thread_pool pool(3);  // the first job may be posted before the workers have started
    std::atomic<int> sum{0};
    pool.parallel_for(64, [&](int64_t b, int64_t e, int) { sum.fetch_add(int(e - b)); });
    BOOST_TEST(sum.load() == 64);
  }
  thread_pool unused(4);  // destroyed without ever running a job
}

BOOST_AUTO_TEST_SUITE_END()
