// `troupe bench engine`: prefill and decode speed of the engine alone (no server), per batch size
// and thread count, on a model file or on a synthetic model of a named shape (written once to a
// cache file, then memory-mapped like any other). `troupe bench memory`: the machine's read
// bandwidth, the ceiling for single-stream decode.
#include <sys/resource.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "app/args.hpp"
#include "app/command.hpp"
#include "engine/device.hpp"
#include "engine/kernels.hpp"
#include "engine/kv_cache.hpp"
#include "engine/model_weights.hpp"
#include "engine/synth_model.hpp"
#include "engine/thread_pool.hpp"
#include "engine/transformer.hpp"

namespace troupe::app {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// ---- resident memory ----------------------------------------------------------------------------

/// A field of /proc/self/status in MiB ("VmHWM", "VmRSS", "RssFile"); 0 when unavailable.
double proc_status_mb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::strtod(line.c_str() + field.size() + 1, nullptr) / 1024.0;
  }
  return 0;
}

/// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
void reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
}

double peak_rss_mb() {
  if (const double hwm = proc_status_mb("VmHWM"); hwm > 0) return hwm;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

// ---- models -------------------------------------------------------------------------------------

/// The model file for --model: the path itself, or for a shape name the cached synthetic model of
/// that shape and dtype (written on first use).
engine::result<std::filesystem::path> model_file(const std::string& model, const std::string& dtype_text,
                                                 const std::filesystem::path& cache_dir, uint64_t seed) {
  std::error_code ec;
  if (std::filesystem::exists(model, ec)) return std::filesystem::path(model);
  const auto shape = engine::find_synth_shape(model);
  if (!shape) {
    return engine::fail(engine::errc::invalid_argument, "--model {}: no such file, nor a synthetic shape ({})",
                        model, engine::synth_shape_names(", "));
  }
  const auto type = engine::parse_dtype(dtype_text);
  if (!type) return engine::fail(engine::errc::invalid_argument, "--dtype {}: not f32, f16, bf16, q8_0 or q4_0", dtype_text);
  const auto path = cache_dir / fmt::format("troupe-synth-{}-{}-seed{}.gguf", shape->name, dtype_text, seed);
  if (std::filesystem::exists(path, ec)) return path;
  std::filesystem::create_directories(cache_dir, ec);
  const auto tmp = path.string() + fmt::format(".tmp{}", ::getpid());
  std::fprintf(stderr, "bench: writing synthetic %s %s to %s\n", shape->name.c_str(), dtype_text.c_str(),
               path.c_str());
  int last_decile = -1;
  auto progress = [&](std::string_view, int64_t done, int64_t total) {
    const int decile = total > 0 ? int(done * 10 / total) : 10;
    if (decile != last_decile) {
      last_decile = decile;
      std::fprintf(stderr, "bench: synth %d%%\n", decile * 10);
    }
  };
  if (auto r = engine::write_synth_model(*shape, *type, seed, tmp, progress); !r) {
    std::filesystem::remove(tmp, ec);
    return std::unexpected(r.error());
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) return engine::fail(engine::errc::io_error, "cannot rename {} to {}: {}", tmp, path.string(), ec.message());
  return path;
}

/// The dtype the model's matrices are stored in (that of the first layer's wq).
std::string model_dtype(const engine::model_weights& m) {
  return m.layers.empty() ? "?" : std::string(engine::dtype_name(m.layers[0].wq.type));
}

// ---- one setting --------------------------------------------------------------------------------

struct bench_config {
  int batch = 1;
  int threads = 1;
  int prompt_len = 128;
  int gen_len = 128;
  int runs = 3;
  int block_size = 16;
};

struct bench_result {
  double prefill_tok_s = 0;
  double decode_tok_s = 0;
  double step_ms = 0;
  double peak_rss_mb = 0;
};

int32_t argmax(const float* x, int n) { return int32_t(std::max_element(x, x + n) - x); }

/// Runs `runs` times: every sequence's prompt prefilled (one forward call per sequence, as a
/// 128-token prompt is), then gen_len decode steps of the whole batch, greedy. Reports medians.
engine::result<bench_result> run_setting(const engine::model_weights& m, const bench_config& cfg) {
  const engine::model_config& c = m.config;
  const int positions = cfg.prompt_len + cfg.gen_len;
  const int per_seq = engine::blocks_for(positions, cfg.block_size);
  reset_peak_rss();
  engine::thread_pool pool(cfg.threads);
  engine::kv_cache kv(m.n_local_layers(), c.n_kv_heads, c.head_dim, cfg.block_size, per_seq * cfg.batch);
  engine::transformer tf(m, kv, &pool);
  std::vector<std::vector<int32_t>> tables(size_t(cfg.batch));
  for (int s = 0; s < cfg.batch; ++s) {
    tables[size_t(s)].resize(size_t(per_seq));
    std::iota(tables[size_t(s)].begin(), tables[size_t(s)].end(), s * per_seq);
  }
  // Deterministic prompt tokens, away from the special ids at the start of the vocabulary.
  auto prompt_token = [&](int seq, int i) { return int32_t(3 + (uint64_t(seq) * 7919 + uint64_t(i) * 104729) % uint64_t(c.vocab_size - 3)); };

  std::vector<float> logits;
  std::vector<int32_t> next(size_t(cfg.batch));
  auto prefill = [&](int seq, int len) -> engine::result<void> {
    engine::forward_batch b;
    b.seqs.push_back({len, 0, tables[size_t(seq)]});
    for (int i = 0; i < len; ++i) b.tokens.push_back(prompt_token(seq, i));
    if (auto r = tf.forward(b, engine::output_mode::last_logits, logits); !r) return std::unexpected(r.error());
    next[size_t(seq)] = argmax(logits.data(), c.vocab_size);
    return {};
  };
  auto decode_step = [&](int pos) -> engine::result<void> {
    engine::forward_batch b;
    for (int s = 0; s < cfg.batch; ++s) {
      b.seqs.push_back({1, pos, tables[size_t(s)]});
      b.tokens.push_back(next[size_t(s)]);
    }
    if (auto r = tf.forward(b, engine::output_mode::last_logits, logits); !r) return std::unexpected(r.error());
    for (int s = 0; s < cfg.batch; ++s) next[size_t(s)] = argmax(&logits[size_t(s) * c.vocab_size], c.vocab_size);
    return {};
  };

  // Warm-up: touch every weight page and grow the scratch buffers before timing.
  for (int s = 0; s < cfg.batch; ++s) {
    if (auto r = prefill(s, std::min(cfg.prompt_len, 8)); !r) return std::unexpected(r.error());
  }
  if (auto r = decode_step(std::min(cfg.prompt_len, 8)); !r) return std::unexpected(r.error());

  std::vector<double> prefill_rates, decode_rates, step_ms;
  for (int run = 0; run < cfg.runs; ++run) {
    const auto t0 = clock_type::now();
    for (int s = 0; s < cfg.batch; ++s) {
      if (auto r = prefill(s, cfg.prompt_len); !r) return std::unexpected(r.error());
    }
    const double prefill_s = seconds_since(t0);
    const auto t1 = clock_type::now();
    for (int g = 0; g < cfg.gen_len; ++g) {
      if (auto r = decode_step(cfg.prompt_len + g); !r) return std::unexpected(r.error());
    }
    const double decode_s = seconds_since(t1);
    prefill_rates.push_back(double(cfg.batch) * cfg.prompt_len / prefill_s);
    decode_rates.push_back(double(cfg.batch) * cfg.gen_len / decode_s);
    step_ms.push_back(decode_s * 1e3 / cfg.gen_len);
  }
  return bench_result{median(prefill_rates), median(decode_rates), median(step_ms), peak_rss_mb()};
}

int run_bench_engine(int argc, char** argv) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string default_cache = (std::filesystem::path(tmp && *tmp ? tmp : "/tmp") / "troupe-synth").string();
  const std::string shapes = engine::synth_shape_names("|");
  arg_parser args("troupe bench engine --model FILE|" + shapes + " [--dtype f32,q8_0,q4_0] [--batch 1,8,32] [--threads 1,2]",
                  "Measures the engine alone: per (dtype, threads, batch), prefill tok/s (each sequence's prompt\n"
                  "in one forward call), decode tok/s summed over the batch, time per decode step and peak RSS;\n"
                  "each figure the median of --runs runs. Given a shape name instead of a file, it writes a\n"
                  "synthetic model of that shape (once, into --cache-dir) and loads it like any GGUF file.");
  args.option("model", "FILE|SHAPE", "a model file, or a synthetic shape: " + shapes, "", true)
      .option("dtype", "LIST", "for a shape: weight types to test, comma-separated (f32, f16, bf16, q8_0, q4_0)", "f32")
      .option("batch", "LIST", "sequences decoded together, comma-separated", "1,8,32")
      .option("threads", "LIST", "thread counts, comma-separated", "1,2");
  add_length_options(args, "sequence", "decode steps")
      .option("runs", "N", "runs per setting (figures are medians)", "3")
      .option("block-size", "N", "KV cache block size (positions)", "16")
      .option("seed", "S", "seed of the synthetic weights", "0")
      .option("cache-dir", "DIR", "where synthetic models are kept", default_cache)
      .flag("json", "one JSON object per setting per line instead of a table");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  auto batches = args.integer_list("batch", 1, 4096);
  auto threads = args.integer_list("threads", 1, 1024);
  auto lengths = read_length_options(args);
  auto runs = args.integer("runs", 1, 1000);
  auto block_size = args.integer("block-size", 1, 4096);
  auto seed = args.integer("seed", 0, std::numeric_limits<long long>::max());
  if (!batches || !threads || !lengths || !runs || !block_size || !seed) return args.usage_error();
  std::vector<std::string> dtypes = args.string_list("dtype");
  const std::string model_arg = args.str("model");
  std::error_code ec;
  const bool is_file = std::filesystem::exists(model_arg, ec);
  if (is_file && args.given("dtype")) return fail_with("--dtype applies to synthetic shapes, not to a model file");
  if (is_file) dtypes = {""};
  const bool json = args.flag_set("json");
  // The engine computes on the CPU: where GPUs are present, say so, so that no one reads these
  // figures as GPU ones.
  if (const engine::device_info dev = engine::probe_devices(); dev.n_gpus > 0) {
    std::fprintf(stderr, "bench: note: %d GPU(s) found (%s); the engine runs on the CPU\n", dev.n_gpus,
                 dev.gpu_name.c_str());
  }

  if (!json) {
    std::printf("CPU kernels: %s\n", engine::kernels::cpu_variant());
    std::printf("%-14s %-5s %7s %6s %13s %13s %9s %10s\n", "model", "dtype", "threads", "batch", "prefill tok/s",
                "decode tok/s", "step ms", "peak RSS MB");
  }
  for (const auto& dt : dtypes) {
    auto path = model_file(model_arg, dt, args.str("cache-dir"), uint64_t(*seed));
    if (!path) return fail_with(path.error().message);
    auto model = engine::load_model(*path);
    if (!model) return fail_with(model.error().message);
    if (!model->is_first() || !model->is_last()) return fail_with("bench engine needs the whole model");
    const int ctx = lengths->prompt_len + lengths->gen_len;
    const std::string type = model_dtype(*model);
    if (ctx > model->config.max_seq_len && !json) {
      std::fprintf(stderr, "bench: note: %d positions exceed the model's context of %d\n", ctx, model->config.max_seq_len);
    }
    for (long long th : *threads) {
      for (long long b : *batches) {
        bench_config cfg;
        cfg.batch = int(b);
        cfg.threads = int(th);
        cfg.prompt_len = lengths->prompt_len;
        cfg.gen_len = lengths->gen_len;
        cfg.runs = int(*runs);
        cfg.block_size = int(*block_size);
        auto r = run_setting(*model, cfg);
        if (!r) return fail_with(r.error().message);
        if (json) {
          auto round_to = [](double v, double per_unit) { return std::round(v * per_unit) / per_unit; };
          nlohmann::ordered_json j;
          j["model"] = model_arg;
          j["dtype"] = type;
          j["kernels"] = engine::kernels::cpu_variant();
          j["batch"] = cfg.batch;
          j["threads"] = cfg.threads;
          j["prefill_tok_s"] = round_to(r->prefill_tok_s, 10);
          j["decode_tok_s"] = round_to(r->decode_tok_s, 10);
          j["step_ms"] = round_to(r->step_ms, 100);
          j["peak_rss_mb"] = round_to(r->peak_rss_mb, 10);
          std::printf("%s\n", j.dump().c_str());
        } else {
          std::printf("%-14s %-5s %7d %6d %13.1f %13.1f %9.2f %10.1f\n", model_arg.c_str(), type.c_str(), cfg.threads,
                      cfg.batch, r->prefill_tok_s, r->decode_tok_s, r->step_ms, r->peak_rss_mb);
        }
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

// ---- memory bandwidth ---------------------------------------------------------------------------

/// Sums [p, p + n) as 64-bit words: a pure streaming read the compiler vectorizes.
uint64_t read_words(const uint64_t* p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  for (; i < n; ++i) a += p[i];
  return a + b + c + d;
}

int run_bench_memory(int argc, char** argv) {
  arg_parser args("troupe bench memory [--threads 1,2] [--size-mb 1024]",
                  "Measures read bandwidth: each thread streams through its share of a buffer much larger\n"
                  "than the caches, on the engine's thread pool. Prints the median of --runs passes in GB/s.");
  args.option("threads", "LIST", "thread counts, comma-separated", "1,2")
      .option("size-mb", "N", "buffer size in MiB", "1024")
      .option("runs", "N", "passes per thread count", "10")
      .flag("json", "one JSON object per thread count per line");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  auto threads = args.integer_list("threads", 1, 1024);
  auto size_mb = args.integer("size-mb", 1, 1 << 20);
  auto runs = args.integer("runs", 1, 1000);
  if (!threads || !size_mb || !runs) return args.usage_error();
  const size_t n_words = size_t(*size_mb) << 17;  // MiB / 8 bytes
  std::unique_ptr<uint64_t[]> buf(new uint64_t[n_words]);
  for (size_t i = 0; i < n_words; ++i) buf[i] = i;  // touch every page
  for (long long th : *threads) {
    engine::thread_pool pool(static_cast<int>(th));
    std::vector<uint64_t> sinks(static_cast<size_t>(th));
    std::vector<double> gbs;
    for (int r = 0; r < *runs; ++r) {
      const auto t0 = clock_type::now();
      // One chunk per thread: with grain n/threads the pool hands each thread one share.
      const int64_t per = int64_t((n_words + size_t(th) - 1) / size_t(th));
      pool.parallel_for(int64_t(n_words), [&](int64_t b, int64_t e, int t) {
        sinks[size_t(t)] += read_words(buf.get() + b, size_t(e - b));
      }, per);
      gbs.push_back(double(n_words) * 8 / seconds_since(t0) / 1e9);
    }
    volatile uint64_t keep = std::accumulate(sinks.begin(), sinks.end(), uint64_t(0));  // the reads must happen
    (void)keep;
    if (args.flag_set("json")) {
      std::printf("{\"threads\": %lld, \"read_gb_s\": %.1f, \"best_gb_s\": %.1f}\n", th, median(gbs),
                  *std::max_element(gbs.begin(), gbs.end()));
    } else {
      std::printf("threads %lld: read %.1f GB/s (median of %lld), best %.1f GB/s\n", th, median(gbs), *runs,
                  *std::max_element(gbs.begin(), gbs.end()));
    }
  }
  return 0;
}

const command_registrar engine_cmd{{"bench engine", "prefill/decode speed of the engine alone (per batch, threads)", run_bench_engine}};
const command_registrar memory_cmd{{"bench memory", "memory read bandwidth of this machine (per thread count)", run_bench_memory}};

}  // namespace
}  // namespace troupe::app
