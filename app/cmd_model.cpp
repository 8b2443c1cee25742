// `troupe model info PATH` and `troupe model synth`: look inside a model file; write a synthetic one.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "app/args.hpp"
#include "cluster-config/cluster_config.hpp"
#include "app/command.hpp"
#include "engine/model_weights.hpp"
#include "engine/synth_model.hpp"

namespace troupe::app {

namespace {

const char* type_name(engine::dtype t) { return engine::dtype_name(t).data(); }

const char* format_name(const engine::model_weights& m) { return m.format.empty() ? "?" : m.format.c_str(); }

int run_info(int argc, char** argv) {
  arg_parser args("troupe model info PATH",
                  "Prints a model's format, hyperparameters and tensor directory (GGUF file, Hugging Face\n"
                  "directory or llama2.c checkpoint).");
  args.option("stages", "N",
              "also print `split`: the layer ranges of N pipeline stages that do even work (the last\n"
              "one also runs the output head), as `troupe serve --stages N` places them");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  if (args.positional().size() != 1) return fail_with("model info needs exactly one PATH (see --help)");
  const std::string path = args.positional()[0];

  auto model = engine::load_model(path);
  if (!model) return fail_with(model.error().message);
  const engine::model_weights& m = *model;
  const engine::model_config& c = m.config;

  std::string out;
  auto line = [&](std::string_view key, const auto& val) { out += fmt::format("{:<14} {}\n", key, val); };
  line("path", path);
  line("format", format_name(m));
  line("arch", c.arch);
  line("name", c.name.empty() ? "-" : c.name);
  line("dim", c.dim);
  line("hidden_dim", c.hidden_dim);
  line("n_layers", c.n_layers);
  line("n_heads", c.n_heads);
  line("n_kv_heads", c.n_kv_heads);
  line("head_dim", c.head_dim);
  line("vocab_size", c.vocab_size);
  line("max_seq_len", c.max_seq_len);
  line("rms_eps", fmt::format("{:g}", c.rms_eps));
  line("rope_theta", fmt::format("{:g}", c.rope_theta));
  line("rope", c.rope == engine::rope_style::interleaved ? "interleaved" : "half");
  line("tied_output", c.tied_output ? "yes" : "no");
  line("bos_id", c.bos_id);
  line("eos_id", c.eos_id);
  line("layers", fmt::format("{} (loaded [{}, {}))", c.n_layers, m.first_layer, m.last_layer));
  if (args.given("stages")) {
    auto n = args.integer("stages", 1, 1 << 20);
    if (!n) return fail_with(args.error());
    auto split = config::split_layers_balanced(c.n_layers, int(*n), c.layer_weight_count(), c.head_weight_count());
    if (!split) return fail_with(split.error().message);
    std::string ranges;
    for (const auto& s : *split) ranges += fmt::format("{}{}-{}", ranges.empty() ? "" : " ", s.first_layer, s.last_layer);
    line("split", ranges);
  }

  out += fmt::format("\ntensors ({}):\n", m.tensors.size());
  size_t name_width = 4;
  for (const auto& t : m.tensors) name_width = std::max(name_width, t.name.size());
  out += fmt::format("  {:<{}}  {:<5}  {:<16}  {}\n", "name", name_width, "dtype", "shape", "offset");
  for (const auto& t : m.tensors) {
    out += fmt::format("  {:<{}}  {:<5}  {:<16}  {}\n", t.name, name_width, type_name(t.type),
                       fmt::format("[{}]", fmt::join(t.shape, ", ")), t.offset);
  }
  const uint64_t bytes = m.weight_bytes();
  out += fmt::format("\nweight bytes   {} ({:.2f} MiB)\n", bytes, double(bytes) / (1024.0 * 1024.0));
  std::fputs(out.c_str(), stdout);
  return 0;
}

int run_synth(int argc, char** argv) {
  const std::string shapes = engine::synth_shape_names("|");
  arg_parser args("troupe model synth --shape " + shapes + " --dtype f32|f16|bf16|q8_0|q4_0 --out FILE.gguf",
                  "Writes a GGUF llama model with deterministic random weights (same seed, same file)\n"
                  "and a SentencePiece-style vocabulary, for benchmarks and tests.");
  args.option("shape", "NAME", "model shape: " + shapes, "", true)
      .option("dtype", "TYPE", "weight type: f32, f16, bf16, q8_0 or q4_0", "f32")
      .option("out", "FILE", "output .gguf file", "", true)
      .option("seed", "N", "random seed", "1")
      .flag("quiet", "no progress on stderr");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  if (!args.positional().empty()) return fail_with("model synth takes no positional arguments (see --help)");

  auto shape = engine::find_synth_shape(args.str("shape"));
  if (!shape) return fail_with(fmt::format("unknown shape '{}' (known: {})", args.str("shape"), shapes));
  auto type = engine::parse_dtype(args.str("dtype"));
  if (!type) return fail_with(fmt::format("unknown dtype '{}' (f32, f16, bf16, q8_0, q4_0)", args.str("dtype")));
  auto seed = args.integer("seed", 0, std::numeric_limits<long long>::max());
  if (!seed) return fail_with(args.error());
  const std::string out = args.str("out");

  // Progress: one rewritten line on a terminal, a line per 10% otherwise.
  const bool quiet = args.flag_set("quiet");
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  int64_t last_decile = -1;
  engine::synth_progress progress = [&](std::string_view what, int64_t done, int64_t total) {
    if (quiet) return;
    if (tty) {
      std::fprintf(stderr, "\rsynth: [%3lld/%lld] %-32.*s", static_cast<long long>(done),
                   static_cast<long long>(total), static_cast<int>(what.size()), what.data());
      if (done == total) std::fputc('\n', stderr);
    } else if (const int64_t decile = done * 10 / std::max<int64_t>(total, 1); decile != last_decile) {
      last_decile = decile;
      std::fprintf(stderr, "synth: %3lld%% %.*s\n", static_cast<long long>(decile * 10),
                   static_cast<int>(what.size()), what.data());
    }
  };
  auto r = engine::write_synth_model(*shape, *type, static_cast<uint64_t>(*seed), out, progress);
  if (!r) return fail_with(r.error().message);
  std::error_code ec;
  const auto size = std::filesystem::file_size(out, ec);
  std::printf("wrote %s (shape %s, dtype %s, seed %lld, %llu bytes)\n", out.c_str(), shape->name.c_str(),
              type_name(*type), *seed, static_cast<unsigned long long>(ec ? 0 : size));
  return 0;
}

const command_registrar info_cmd{command{"model info", "print a model's hyperparameters and tensors", run_info}};
const command_registrar synth_cmd{command{"model synth", "write a synthetic GGUF model (random weights)", run_synth}};

}  // namespace

}  // namespace troupe::app
