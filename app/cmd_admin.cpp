// troupe admin: the ADMIN CONSOLE of a running `troupe serve` or head node, over the client
// protocol's admin frames (docs/protocol.md, docs/operations.md "The console"). With command words
// it runs that one command and exits (status --json prints one JSON object); without, it is an
// interactive console: line editing, history, Tab completion, `watch status`.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/args.hpp"
#include "app/command.hpp"
#include "app/front_ends.hpp"
#include "app/line_editor.hpp"
#include "transport/admin_client.hpp"

namespace troupe::app {
namespace {

using json = nlohmann::json;

const std::vector<std::string> verbs = {"status",  "watch",    "requests", "cancel",   "drain",  "undrain",
                                        "weight",  "rollout",  "rollback", "rollback-policy", "replica",
                                        "restart", "log-level", "config",  "audit",    "help",   "quit"};

std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  std::string s;
  while (in >> s) w.push_back(s);
  return w;
}

std::string num(const json& v, int digits) {
  if (!v.is_number()) return "-";
  return fmt::format("{:.{}f}", v.get<double>(), digits);
}

std::string clock_time(int64_t unix_ms) {
  const time_t t = time_t(unix_ms / 1000);
  tm lt{};
  localtime_r(&t, &lt);
  char b[16];
  std::strftime(b, sizeof b, "%H:%M:%S", &lt);
  return b;
}

/// status as tables.
std::string render_status(const json& s) {
  std::string o = fmt::format("model {}  up {} s\n\n", s.value("model", ""), s.value("uptime_ms", int64_t(0)) / 1000);
  o += fmt::format("{:<8}{:<10}{:<11}{:>9}{:>7}{:>10}{:>7}{:>9}{:>14}{:>9}{:>18}{:>18}{:>9}{:>7}{:>8}\n", "REPLICA",
                   "STATE", "HEALTH", "RESTARTS", "WEIGHT", "IN-FLIGHT", "QUEUE", "RUNNING", "KV USED/FREE", "TOK/S",
                   "TTFT p50/p99 ms", "ITL p50/p99 ms", "STEP MS", "DONE", "FAILED");
  std::string reasons;  // why a replica is not running, or was rebuilt
  for (const auto& r : s["replicas"]) {
    const std::string health = r.value("health", "running");
    const int restarts = r.value("restarts", 0);
    const std::string reason = r.value("reason", "");
    if (!reason.empty() && (health != "running" || restarts > 0)) {
      reasons += fmt::format("  replica {} {}: {}\n", r["index"].get<int>(),
                             health == "running" ? "last rebuilt" : health, reason);
    }
    o += fmt::format("{:<8}{:<10}{:<11}{:>9}{:>7}{:>10}{:>7}{:>9}{:>14}{:>9}{:>18}{:>18}{:>9}{:>7}{:>8}\n",
                     r["index"].get<int>(), r["state"].get<std::string>(), health, restarts, num(r["weight"], 2),
                     r["in_flight"].get<int>(),
                     r["queue"].get<int>(), r["running"].get<int>(),
                     fmt::format("{}/{}", r["kv_blocks_used"].get<int>(), r["kv_blocks_free"].get<int>()),
                     num(r["tok_per_s"], 1),
                     fmt::format("{}/{}", num(r["ttft_ms"]["p50"], 1), num(r["ttft_ms"]["p99"], 1)),
                     fmt::format("{}/{}", num(r["itl_ms"]["p50"], 1), num(r["itl_ms"]["p99"], 1)),
                     num(r["step_ms"], 2), r["completed"].get<int64_t>(), r["failures"].get<int64_t>());
  }
  o += reasons;
  o += fmt::format("\n{:<8}{:<12}{:<12}{:>9}{:>10}{:>10}\n", "STAGE", "NODE", "LAYERS", "PID", "STEP MS", "RESTARTS");
  for (const auto& t : s["stages"]) {
    o += fmt::format("{:<8}{:<12}{:<12}{:>9}{:>10}{:>10}\n", t["name"].get<std::string>(), t["node"].get<std::string>(),
                     fmt::format("[{}, {})", t["layers"][0].get<int>(), t["layers"][1].get<int>()), t["pid"].get<int>(),
                     num(t["step_ms"], 2), t["restarts"].get<int>());
  }
  o += fmt::format("\n{:<12}{:<8}{:<24}{:<7}{:>9}{:>16}\n", "NODE", "ROLE", "ADDRESS", "STATE", "PID", "HEARTBEAT");
  for (const auto& n : s["nodes"]) {
    const auto& hb = n["last_heartbeat_ms"];
    o += fmt::format("{:<12}{:<8}{:<24}{:<7}{:>9}{:>16}\n", n["name"].get<std::string>(), n["role"].get<std::string>(),
                     n["address"].get<std::string>(), n["up"].get<bool>() ? "up" : "down", n["pid"].get<int>(),
                     hb.is_number() ? fmt::format("{} ms ago", hb.get<int64_t>()) : std::string("-"));
  }
  const auto& ev = s["events"];
  if (!ev.empty()) {
    o += "\nevents:\n";
    const size_t first = ev.size() > 8 ? ev.size() - 8 : 0;
    for (size_t i = first; i < ev.size(); ++i) {
      o += fmt::format("  {} {:<16} replica {:<3} {}\n", clock_time(ev[i]["unix_ms"].get<int64_t>()),
                       ev[i]["kind"].get<std::string>(), ev[i]["replica"].get<int>(), ev[i]["message"].get<std::string>());
    }
  }
  return o;
}

std::string render_requests(const json& a) {
  std::string o = fmt::format("{:<10}{:>8}{:>10}{:>9}{:>8}{:>8}\n", "ID", "REPLICA", "AGE MS", "PROMPT", "TOKENS", "RETRIES");
  for (const auto& r : a) {
    o += fmt::format("{:<10}{:>8}{:>10}{:>9}{:>8}{:>8}\n", r["id"].get<uint64_t>(), r["replica"].get<int>(),
                     r["age_ms"].get<int64_t>(), r["prompt_tokens"].get<int>(), r["tokens"].get<int>(),
                     r["retries"].get<int>());
  }
  return o + fmt::format("{} request(s) in flight\n", a.size());
}

class console {
 public:
  explicit console(transport::admin_client_options o) : options_(std::move(o)) {}

  /// Runs a command, connecting (again) when needed.
  transport::result<transport::admin_reply> run(const std::vector<std::string>& words) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      if (!client_) {
        auto c = transport::admin_client::connect(options_);
        if (!c) return std::unexpected(c.error());
        client_.emplace(std::move(*c));
      }
      auto r = client_->run(words);
      if (r || (r.error().code != transport::errc::connection_closed && r.error().code != transport::errc::timeout)) {
        return r;
      }
      client_.reset();  // closed (idle timeout, server restart): once more on a new connection
      if (attempt == 1) return r;
    }
    return std::unexpected(transport::error{transport::errc::connection_closed, "connection lost", 0});
  }

  /// Prints a reply for people (or its JSON); false when the command failed.
  bool print(const std::vector<std::string>& words, const transport::result<transport::admin_reply>& r, bool as_json) {
    if (!r) {
      std::fprintf(stderr, "troupe: %s: %s\n", transport::errc_name(r.error().code), r.error().message.c_str());
      return false;
    }
    if (!r->ok) {
      std::fprintf(stderr, "troupe: %s: %s\n", r->code.c_str(), r->message.c_str());
      return false;
    }
    if (as_json) {
      std::printf("%s\n", r->json.empty() ? json{{"message", r->message}}.dump().c_str() : r->json.c_str());
    } else if (words[0] == "status") {
      auto j = json::parse(r->json, nullptr, false);
      std::fputs(j.is_object() ? render_status(j).c_str() : r->message.c_str(), stdout);
    } else if (words[0] == "requests") {
      auto j = json::parse(r->json, nullptr, false);
      std::fputs(j.is_array() ? render_requests(j).c_str() : r->message.c_str(), stdout);
    } else {
      std::printf("%s%s", r->message.c_str(), !r->message.empty() && r->message.back() == '\n' ? "" : "\n");
    }
    std::fflush(stdout);
    return true;
  }

  /// Replica and stage names (Tab completion), from a fresh status.
  void names(std::vector<std::string>& replicas, std::vector<std::string>& stages) {
    auto r = run({"status"});
    if (!r || !r->ok) return;
    auto j = json::parse(r->json, nullptr, false);
    if (!j.is_object()) return;
    for (const auto& x : j["replicas"]) {
      if (x["state"] != "removed") replicas.push_back(x["name"].get<std::string>());
    }
    for (const auto& x : j["stages"]) stages.push_back(x["name"].get<std::string>());
  }

  std::vector<std::string> complete(const std::string& before) {
    auto w = split_words(before);
    const bool new_word = before.empty() || before.back() == ' ';
    const size_t index = new_word ? w.size() : w.size() - 1;  // which word is being completed
    if (index == 0) return verbs;
    const std::string& v = w[0];
    std::vector<std::string> replicas, stages;
    if (index == 1) {
      if (v == "watch") return {"status"};
      if (v == "replica") return {"add", "remove"};
      if (v == "log-level") return {"trace", "debug", "info", "warn", "error", "critical", "off"};
      if (v == "drain" || v == "undrain" || v == "weight" || v == "rollout" || v == "rollback" || v == "restart") {
        names(replicas, stages);
        return v == "restart" ? stages : replicas;
      }
      if (v == "rollback-policy") return {"failures=", "ttft-p99-ms=", "min-samples="};
    }
    if (index == 2 && v == "replica" && w.size() > 1 && w[1] == "remove") {
      names(replicas, stages);
      return replicas;
    }
    if (index >= 2 && v == "rollout") return {"to=", "step=", "every="};
    return {};
  }

  /// `watch status`: redraws in place every second until a key is pressed.
  void watch(const std::vector<std::string>& words) {
    const std::vector<std::string> cmd(words.begin() + 1, words.end());
    raw_terminal raw;
    (void)!::write(STDOUT_FILENO, "\x1b[2J", 4);
    for (;;) {
      auto r = run(cmd);
      // Home, each line over the last frame's (erasing its rest), then erase below: in place.
      std::string screen;
      if (r && r->ok && cmd[0] == "status") {
        auto j = json::parse(r->json, nullptr, false);
        screen += j.is_object() ? render_status(j) : r->message;
      } else if (r && r->ok) {
        screen += r->message;
      } else {
        screen += r ? r->code + ": " + r->message : std::string(r.error().message);
      }
      screen += "\n(watch: every 1 s; press any key to stop)\n";
      // Raw mode: newlines need a carriage return.
      std::string crlf = "\x1b[H";
      for (char c : screen) {
        if (c == '\n') crlf += "\x1b[K\r";
        crlf += c;
      }
      crlf += "\x1b[J";
      (void)!::write(STDOUT_FILENO, crlf.data(), crlf.size());
      if (read_key(1000) >= 0) break;
    }
  }

  int interactive() {
    const char* home = std::getenv("HOME");
    line_editor ed(home ? std::string(home) + "/.troupe_admin_history" : std::string());
    ed.set_completer([this](const std::string& before) { return complete(before); });
    std::printf("troupe admin: %s:%u (help for the commands, Tab completes, quit or Ctrl-D leaves)\n",
                options_.host.c_str(), unsigned(options_.port));
    std::fflush(stdout);
    for (;;) {
      auto line = ed.read_line("troupe> ");
      if (!line) break;
      auto words = split_words(*line);
      if (words.empty()) continue;
      ed.add_history(*line);
      if (words[0] == "quit" || words[0] == "exit") break;
      if (words[0] == "watch") {
        if (words.size() < 2) {
          std::printf("usage: watch COMMAND (e.g. watch status)\n");
          continue;
        }
        if (!ed.interactive()) {
          print({words.begin() + 1, words.end()}, run({words.begin() + 1, words.end()}), false);
          continue;
        }
        watch(words);
        continue;
      }
      if (words[0] == "help") std::printf("  %-60s %s\n", "watch status", "status, refreshed in place every second");
      print(words, run(words), false);
    }
    return 0;
  }

 private:
  transport::admin_client_options options_;
  std::optional<transport::admin_client> client_;
};

int run_admin(int argc, char** argv) {
  arg_parser args(
    "troupe admin [--host H] [--port P] --token-file F [COMMAND WORDS...] [--json]",
    "The ADMIN CONSOLE of a running troupe serve (or head node), over its client-protocol port.\n"
    "Without command words: an interactive console (help lists the commands; Tab completes commands,\n"
    "replica and stage names; Up/Down browse the history; `watch status` refreshes in place).\n"
    "With them: runs that one command and exits (0: done; 1: refused or failed, the reason on stderr),\n"
    "e.g. `troupe admin --port 7433 --token-file admin.token status --json` or `... drain 0`.");
  args.option("host", "H", "the server's address", "127.0.0.1")
    .option("port", "P", "its client-protocol port", "7433")
    .option("token-file", "FILE", "the admin token (first line of FILE); or TROUPE_ADMIN_TOKEN in the environment")
    .option("timeout-ms", "MS", "connect, and wait for each reply, at most this long", "30000")
    .flag("json", "print the reply as JSON (one object for status)")
    .flag("history", "status: include the samples of the last minutes (the status page's charts)");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  auto port = args.integer("port", 1, 65535);
  auto timeout = args.integer("timeout-ms", 1, 3'600'000);
  if (!port || !timeout) return args.usage_error();
  transport::admin_client_options o;
  o.host = args.str("host");
  o.port = uint16_t(*port);
  o.timeout = std::chrono::milliseconds(*timeout);
  if (args.given("token-file")) {
    auto t = read_admin_token(args.str("token-file"));
    if (!t) return fail_with(t.error());
    o.token = std::move(*t);
  } else if (const char* env = std::getenv("TROUPE_ADMIN_TOKEN")) {
    o.token = env;
  } else {
    std::fprintf(stderr, "troupe: give --token-file FILE (or TROUPE_ADMIN_TOKEN): admin commands need the admin token\n");
    return 2;
  }
  console con(o);
  std::vector<std::string> words = args.positional();
  if (words.empty()) return con.interactive();
  if (words[0] == "status" && args.flag_set("history")) words.push_back("--history");
  return con.print(words, con.run(words), args.flag_set("json")) ? 0 : 1;
}

const command_registrar reg{{"admin", "the admin console of a running server (status, drain, weights, replicas)", run_admin}};

}  // namespace
}  // namespace troupe::app
