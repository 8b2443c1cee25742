// troupe client: one completion from a running `troupe serve` over the client protocol
// (docs/protocol.md). Streams only the generated text to stdout as chunks arrive (then a newline,
// like `troupe generate`), statistics on stderr. Errors: "troupe: <code>: <message>", exit 1.
#include <chrono>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "app/args.hpp"
#include "app/command.hpp"
#include "transport/client.hpp"

namespace troupe::app {
namespace {

int fail(const transport::error& e) {
  std::fprintf(stderr, "troupe: %s: %s\n", transport::errc_name(e.code), e.message.c_str());
  return 1;
}

int run_client(int argc, char** argv) {
  arg_parser args(
    "troupe client [--host H] --port P --prompt TEXT [-n N] [options]",
    "Sends one completion request to a troupe server and streams the generated text to stdout.\n"
    "Greedy by default (like troupe generate); with --temperature > 0 it samples.");
  add_server_options(args)
    .option("prompt", "TEXT", "the prompt", "", true)
    .option("max-tokens", "N", "tokens to generate at most (also -n)", "128")
    .alias("-n", "max-tokens");  // as troupe generate
  add_sampling_options(args, "random seed for sampling (default: the server picks one)", "")
    .option("stop", "STR", "stop string (not included in the output)")
    .option("priority", "P", "interactive or batch", "interactive")
    .option("deadline-ms", "MS", "give up this long after the server receives the request; 0 = none", "0")
    .option("connect-timeout-ms", "MS", "TCP connect plus handshake timeout", "5000");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;

  auto co = read_server_options(args, "troupe client");
  auto n = args.integer("max-tokens", 1, std::numeric_limits<uint32_t>::max());
  auto sampling = read_sampling_options(args);
  auto deadline = args.integer("deadline-ms", 0, std::numeric_limits<uint32_t>::max());
  auto connect_ms = args.integer("connect-timeout-ms", 1, 3'600'000);
  if (!co || !n || !sampling || !deadline || !connect_ms) return args.usage_error();
  const std::string priority = args.str("priority");
  if (priority != "interactive" && priority != "batch") {
    std::fprintf(stderr, "troupe: --priority: expected interactive or batch, got '%s'\n", priority.c_str());
    return 2;
  }

  co->connect_timeout = std::chrono::milliseconds(*connect_ms);
  auto c = transport::client::connect(*co);
  if (!c) return fail(c.error());

  transport::generate_request req;
  req.prompt = args.str("prompt");
  req.max_tokens = uint32_t(*n);
  req.temperature = sampling->temperature;
  req.top_p = sampling->top_p;
  req.top_k = int32_t(sampling->top_k);
  req.repetition_penalty = sampling->repetition_penalty;
  if (args.has("seed")) req.seed = sampling->seed;
  if (args.given("stop")) req.stop.push_back(args.str("stop"));
  req.priority = priority == "batch" ? transport::request_priority::batch : transport::request_priority::interactive;
  req.deadline_ms = uint32_t(*deadline);
  req.stream = true;

  const auto t0 = std::chrono::steady_clock::now();
  double first_ms = -1;
  bool printed = false;
  const auto fin = c->generate(req, [&](const transport::token_chunk& ch) {
    if (first_ms < 0 && !ch.ids.empty()) {
      first_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    if (ch.text.empty()) return;
    std::fwrite(ch.text.data(), 1, ch.text.size(), stdout);
    std::fflush(stdout);
    printed = true;
  });
  const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (fin || printed) {  // end the text's line, as troupe generate does
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }
  c->close();
  if (!fin) return fail(fin.error());
  const double decode_s = (wall_ms - std::max(0.0, first_ms)) / 1000.0;
  std::fprintf(stderr,
               "\nprompt: %u tokens | generated: %u tokens | finish: %s | ttft: %.1f ms (server %.1f ms) | "
               "total: %.1f ms (server %.1f ms) | decode: %.1f tok/s\n",
               fin->prompt_tokens, fin->completion_tokens, transport::finish_reason_name(fin->reason),
               std::max(0.0, first_ms), fin->ttft_ms, wall_ms, fin->total_ms,
               fin->completion_tokens > 1 && decode_s > 0 ? (fin->completion_tokens - 1) / decode_s : 0.0);
  return 0;
}

const command_registrar reg{{"client", "send one request to a troupe server and stream the text", run_client}};

}  // namespace
}  // namespace troupe::app
