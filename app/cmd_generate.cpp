// troupe generate: the engine alone, in one process. Prints the prompt and then the generated text
// as it is produced (stdout), statistics on stderr. The reference every serving path must match.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "app/args.hpp"
#include "app/command.hpp"
#include "engine/generator.hpp"
#include "engine/model_weights.hpp"
#include "engine/stop_rule.hpp"
#include "engine/text_stream.hpp"
#include "engine/thread_pool.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::app {
namespace {

int run_generate(int argc, char** argv) {
  arg_parser args("troupe generate --model PATH [--tokenizer PATH] --prompt TEXT [-n N] [options]",
                  "Generates text with the model in this process (no server). Greedy by default;\n"
                  "with --temperature > 0 it samples, reproducibly for a given --seed.");
  add_model_options(args, true)
      .option("prompt", "TEXT", "the prompt", "", true)
      .option("n", "N", "number of tokens to generate", "128")
      .alias("-n", "n");  // llama.cpp's short -n
  add_sampling_options(args, "random seed for sampling", "0")
      .option("threads", "T", "worker threads", std::to_string(std::max(1u, std::thread::hardware_concurrency())))
      .option("ctx", "N", "context size in tokens; default: the model's")
      .flag("ignore-eos", "keep generating after the end-of-sequence token")
      .flag("no-bos", "do not prepend the BOS token")
      .option("trace", "FILE",
              "append one JSON line: prompt, prompt_ids and per step [top1 id, top1 logit, top2 id, top2 logit,\n"
              "top1 piece] (the format of llama.cpp's reference traces in ../shared/models/reference)");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;

  auto n = args.integer("n", 0, 1 << 24);
  auto sampling = read_sampling_options(args);
  auto threads = args.integer("threads", 1, 256);
  std::optional<long long> ctx = 0;
  if (args.given("ctx")) ctx = args.integer("ctx", 1, 1 << 24);
  if (!n || !sampling || !threads || !ctx) return args.usage_error();

  auto model = engine::load_model(args.str("model"));
  if (!model) {
    std::fprintf(stderr, "troupe: %s\n", model.error().message.c_str());
    return 1;
  }
  auto tok = engine::load_tokenizer(args.str("model"), args.str("tokenizer"));
  if (!tok) {
    std::fprintf(stderr, "troupe: %s\n", tok.error().message.c_str());
    return 1;
  }
  if (auto fits = engine::check_tokenizer_fits(**tok, model->config.vocab_size,
                                               args.given("tokenizer") ? args.str("tokenizer") : args.str("model"));
      !fits) {
    std::fprintf(stderr, "troupe: %s\n", fits.error().message.c_str());
    return 1;
  }
  const std::string prompt = args.str("prompt");
  const std::vector<int32_t> ids = (*tok)->encode(prompt, !args.flag_set("no-bos"));

  engine::thread_pool pool{int(*threads)};
  engine::generate_options opts;
  opts.max_new_tokens = int(*n);
  opts.sampling = *sampling;
  opts.stop_at_eos = !args.flag_set("ignore-eos");
  // Default context: the model's, or longer when the request needs it (RoPE models run past their
  // trained context; say so).
  const int needed = int(ids.size()) + opts.max_new_tokens;
  opts.ctx_size = *ctx > 0 ? int(*ctx) : std::max(model->config.max_seq_len, needed);
  if (!args.given("ctx") && needed > model->config.max_seq_len) {
    std::fprintf(stderr, "troupe: note: %d tokens exceed the model's trained context of %d\n", needed,
                 model->config.max_seq_len);
  }
  opts.pool = &pool;
  // --trace: the top two logits of every step, written as one line at the end.
  nlohmann::json trace_steps = nlohmann::json::array();
  if (args.given("trace")) {
    opts.on_logits = [&](std::span<const float> logits, int32_t) {
      const engine::top2_logits t = engine::top2(logits);
      trace_steps.push_back({t.id[0], t.logit[0], t.id[1], t.logit[1], (*tok)->token_text(t.id[0])});
    };
  }

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  // The model's stop rule (the server applies the same one): the end marker is not shown, neither
  // as an end token nor spelled out in text.
  const engine::stop_rule rule = engine::make_stop_rule(model->config, **tok);
  opts.end_ids = rule.end_ids;
  engine::text_stream stream(**tok, ids.back(), opts.stop_at_eos ? rule.end_texts : std::vector<std::string>{});
  bool stopped_by_text = false;
  auto stats = engine::generate(*model, ids, opts, [&](int32_t id) {
    if (opts.stop_at_eos && rule.ends(id)) return true;
    const auto out = stream.push(id);
    std::fwrite(out.text.data(), 1, out.text.size(), stdout);
    std::fflush(stdout);
    stopped_by_text = out.stopped;
    return !out.stopped;
  });
  const std::string tail = stream.finish();
  std::fwrite(tail.data(), 1, tail.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!stats) {
    std::fprintf(stderr, "troupe: %s\n", stats.error().message.c_str());
    return 1;
  }
  if (args.given("trace")) {
    std::ofstream f(args.str("trace"), std::ios::app);
    const nlohmann::json line = {{"prompt", prompt}, {"prompt_ids", ids}, {"steps", trace_steps}};
    f << line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    if (!f) {
      std::fprintf(stderr, "troupe: cannot write the trace to %s\n", args.str("trace").c_str());
      return 1;
    }
  }
  if (stats->finish == engine::finish_reason::context_full) {
    std::fprintf(stderr, "troupe: stopped: the context of %d tokens is full (raise --ctx)\n",
                 opts.ctx_size > 0 ? opts.ctx_size : model->config.max_seq_len);
  }
  std::fprintf(stderr,
               "\nprompt: %d tokens in %.3f s (%.1f tok/s) | generated: %d tokens in %.3f s (%.1f tok/s) | "
               "finish: %s | threads: %d\n",
               stats->prompt_tokens, stats->prefill_seconds,
               stats->prefill_seconds > 0 ? stats->prompt_tokens / stats->prefill_seconds : 0.0,
               stats->completion_tokens, stats->decode_seconds,
               stats->decode_seconds > 0 ? stats->completion_tokens / stats->decode_seconds : 0.0,
               stopped_by_text ? "eos" : engine::finish_reason_name(stats->finish), int(*threads));
  return 0;
}

const command_registrar reg{{"generate", "generate text in this process (the reference path)", run_generate}};

}  // namespace
}  // namespace troupe::app
