// `troupe cluster check FILE` and `troupe cluster plan FILE`: validate a multi-host cluster file;
// print what scripts/cluster needs to start it (one shell-friendly line per node).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "app/args.hpp"
#include "app/command.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/model_weights.hpp"

namespace troupe::app {

namespace {

namespace fs = std::filesystem;

/// Prints "troupe: <message>" to stderr and returns 2 (the file is wrong).
int bad_file(const std::string& message) {
  std::fprintf(stderr, "troupe: %s\n", message.c_str());
  return 2;
}

fs::path absolute_config_path(const std::string& file) { return fs::absolute(file).lexically_normal(); }

std::string where(const config::cluster_config& c, int line, const std::string& key) {
  return line > 0 ? fmt::format("{}:{}: {}", c.source, line, key) : fmt::format("{}: {}", c.source, key);
}

/// The values the plan prints must be single shell words: scripts/cluster splits lines on blanks.
config::result<void> check_plan_values(const config::cluster_config& c, const fs::path& config_path) {
  auto has_blank = [](const std::string& s) { return s.find_first_of(" \t\r\n\v\f") != std::string::npos; };
  auto bad = [&](int line, const std::string& key, const std::string& value) {
    return std::unexpected(config::error{
      config::errc::bad_value,
      fmt::format("{}: \"{}\" contains white space, which scripts/cluster cannot pass on (use a path without it)",
                  where(c, line, key), value)});
  };
  if (has_blank(config_path.string())) return bad(0, "the cluster file's own path", config_path.string());
  if (has_blank(c.cluster.binary)) return bad(c.cluster.line, "cluster.binary", c.cluster.binary);
  if (has_blank(c.cluster.run_dir)) return bad(c.cluster.line, "cluster.run_dir", c.cluster.run_dir);
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    const auto& n = c.nodes[i];
    if (has_blank(n.ssh.identity_file)) return bad(n.line, fmt::format("nodes[{}].ssh.identity_file", i), n.ssh.identity_file);
  }
  return {};
}

/// Reads and validates FILE; for a multi-host file also the plan's values. nullopt: printed.
std::optional<config::cluster_config> load_checked(const std::string& file, int& rc) {
  const fs::path path = absolute_config_path(file);
  auto c = config::parse_cluster_file(path);
  if (!c) {
    rc = bad_file(c.error().message);
    return std::nullopt;
  }
  if (c->multi_host()) {
    if (auto ok = check_plan_values(*c, path); !ok) {
      rc = bad_file(ok.error().message);
      return std::nullopt;
    }
  }
  return std::move(*c);
}

int total_stages(const config::cluster_config& c) {
  int n = 0;
  for (int r = 0; r < c.replicas; ++r) n += int(c.stages_of(r).size());
  return n;
}

int run_check(int argc, char** argv) {
  arg_parser args("troupe cluster check FILE",
                  "Checks a cluster file: its syntax and structure (every error as FILE:LINE: KEY: what), and,\n"
                  "where the model is present on this machine, every replica's layer ranges against the\n"
                  "model's layer count (only its header is read). A multi-host file ([[nodes]]) must also\n"
                  "name a readable, non-empty secret_file, and its paths must hold no white space.\n"
                  "Prints `ok: N nodes, R replicas, S stages` and exits 0; on an error prints it and exits 2.");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  if (args.positional().size() != 1) return bad_file("cluster check needs exactly one FILE (see --help)");
  int rc = 0;
  auto c = load_checked(args.positional()[0], rc);
  if (!c) return rc;

  if (c->multi_host()) {
    std::ifstream secret(c->cluster.secret_file, std::ios::binary);
    const std::string key = where(*c, c->cluster.line, "cluster.secret_file");
    if (!secret) return bad_file(fmt::format("{}: cannot read {}", key, c->cluster.secret_file));
    const std::string text{std::istreambuf_iterator<char>(secret), std::istreambuf_iterator<char>()};
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      return bad_file(fmt::format("{}: {} is empty", key, c->cluster.secret_file));
    }
  }

  std::error_code ec;
  if (fs::exists(c->model.path, ec)) {
    auto model = engine::load_model(c->model.path, engine::load_options{engine::layer_range{0, 1}});
    if (!model) return bad_file(fmt::format("{}: {}", where(*c, 0, "model.path"), model.error().message));
    if (auto ok = config::check_layers(*c, model->config.n_layers); !ok) return bad_file(ok.error().message);
  } else {
    std::fprintf(stderr, "troupe: note: model %s is not on this machine: layer ranges not checked against it\n",
                 c->model.path.c_str());
  }
  std::printf("ok: %zu nodes, %d replicas, %d stages\n", c->nodes.size(), c->replicas, total_stages(*c));
  return 0;
}

int run_plan(int argc, char** argv) {
  arg_parser args("troupe cluster plan FILE",
                  "Prints what scripts/cluster needs to start a multi-host cluster file: one `cluster` line,\n"
                  "then one `node` line per [[nodes]] entry in file order, as KEY=VALUE words (values never\n"
                  "hold white space; `-` stands for an empty value):\n"
                  "  cluster name=NAME binary=PATH run_dir=DIR config=ABSOLUTE_FILE join_timeout_ms=MS\n"
                  "  node name=NAME host=HOST role=head|worker|spare ssh_user=USER ssh_port=PORT\n"
                  "       ssh_identity=PATH|- control_port=PORT data_port=PORT stages=R.I,...|- line=LINE\n"
                  "`stages` lists the stages placed on the node as replica.stage (R.I, from 0; a stage without\n"
                  "`node` runs on the head); `line` is the node's [[nodes]] line in FILE. Paths are absolute,\n"
                  "except a bare binary name (looked up on PATH on each host). The file is checked first\n"
                  "(as `troupe cluster check`, without the model): an error is printed and the exit code is 2.");
  if (int rc = args.handle(argc, argv); rc >= 0) return rc;
  if (args.positional().size() != 1) return bad_file("cluster plan needs exactly one FILE (see --help)");
  int rc = 0;
  auto c = load_checked(args.positional()[0], rc);
  if (!c) return rc;
  if (!c->multi_host()) {
    return bad_file(fmt::format("{}: no [[nodes]]: this file runs in one process (troupe serve --config {})",
                                c->source, args.positional()[0]));
  }
  auto dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  std::string out = fmt::format("cluster name={} binary={} run_dir={} config={} join_timeout_ms={}\n", c->cluster.name,
                                c->cluster.binary, c->cluster.run_dir,
                                absolute_config_path(args.positional()[0]).string(), c->cluster.join_timeout_ms);
  const std::string head = c->head()->name;
  for (const auto& n : c->nodes) {
    std::string stages;
    for (int r = 0; r < c->replicas; ++r) {
      const auto& pipeline = c->stages_of(r);
      for (size_t i = 0; i < pipeline.size(); ++i) {
        const std::string& on = pipeline[i].node.empty() ? head : pipeline[i].node;
        if (on == n.name) stages += fmt::format("{}{}.{}", stages.empty() ? "" : ",", r, i);
      }
    }
    out += fmt::format(
      "node name={} host={} role={} ssh_user={} ssh_port={} ssh_identity={} control_port={} data_port={} stages={} "
      "line={}\n",
      n.name, n.host, config::node_role_name(n.role), n.ssh.user, n.ssh.port, dash(n.ssh.identity_file), n.control_port,
      n.data_port, dash(stages), n.line);
  }
  std::fputs(out.c_str(), stdout);
  return 0;
}

const command_registrar check_cmd{command{"cluster check", "check a cluster file (and its layers against the model)", run_check}};
const command_registrar plan_cmd{command{"cluster plan", "print a multi-host cluster's nodes for scripts/cluster", run_plan}};

}  // namespace

}  // namespace troupe::app
