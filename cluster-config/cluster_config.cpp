// Cluster file parsing (toml11 v3) and validation. toml11 throws; every exception is caught here
// and turned into "file:line: key: what".
#include "cluster-config/cluster_config.hpp"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <toml.hpp>

namespace troupe::config {

const char* errc_name(errc c) {
  switch (c) {
    case errc::io_error: return "io_error";
    case errc::syntax: return "syntax";
    case errc::missing_key: return "missing_key";
    case errc::bad_type: return "bad_type";
    case errc::bad_value: return "bad_value";
    case errc::unknown_key: return "unknown_key";
  }
  return "unknown";
}

namespace {

std::unexpected<error> fail_at(errc code, const std::string& file, int line, const std::string& key,
                               const std::string& what) {
  std::string msg = line > 0 ? fmt::format("{}:{}: ", file, line) : fmt::format("{}: ", file);
  if (!key.empty()) msg += key + ": ";
  msg += what;
  return std::unexpected(error{code, std::move(msg)});
}

int line_of(const toml::value& v) { return int(v.location().line()); }

// Reads the keys of one table; remembers which were used so the rest can be reported as unknown.
class table_reader {
 public:
  table_reader(const toml::value& table, std::string prefix, const std::string& file)
      : table_(table), prefix_(std::move(prefix)), file_(file) {}

  std::string key_name(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  int line() const { return line_of(table_); }
  const toml::value* find(const std::string& key) {
    used_.insert(key);
    const auto& t = table_.as_table();
    auto it = t.find(key);
    return it == t.end() ? nullptr : &it->second;
  }

  /// An integer in [min, max]; absent: keeps `out` unless required.
  result<void> integer(const std::string& key, int& out, long long min, long long max, bool required = false,
                       int* line_out = nullptr) {
    const toml::value* v = find(key);
    if (v == nullptr) {
      if (required) return fail_at(errc::missing_key, file_, line(), key_name(key), "required key is missing");
      return {};
    }
    if (line_out != nullptr) *line_out = line_of(*v);
    if (!v->is_integer()) return fail_at(errc::bad_type, file_, line_of(*v), key_name(key), "must be an integer");
    const long long x = v->as_integer();
    if (x < min || x > max) {
      return fail_at(errc::bad_value, file_, line_of(*v), key_name(key),
                     fmt::format("{} is out of range [{}, {}]", x, min, max));
    }
    out = int(x);
    return {};
  }

  result<void> string(const std::string& key, std::string& out, bool required = false) {
    const toml::value* v = find(key);
    if (v == nullptr) {
      if (required) return fail_at(errc::missing_key, file_, line(), key_name(key), "required key is missing");
      return {};
    }
    if (!v->is_string()) return fail_at(errc::bad_type, file_, line_of(*v), key_name(key), "must be a string");
    out = v->as_string().str;
    return {};
  }

  result<void> boolean(const std::string& key, bool& out) {
    const toml::value* v = find(key);
    if (v == nullptr) return {};
    if (!v->is_boolean()) return fail_at(errc::bad_type, file_, line_of(*v), key_name(key), "must be true or false");
    out = v->as_boolean();
    return {};
  }

  /// Every key of the table must have been asked for.
  result<void> no_unknown_keys() const {
    // Report the first unknown key in file order, so the message does not depend on hashing.
    const toml::value* first = nullptr;
    std::string first_key;
    for (const auto& [k, v] : table_.as_table()) {
      if (used_.contains(k)) continue;
      if (first == nullptr || line_of(v) < line_of(*first)) {
        first = &v;
        first_key = k;
      }
    }
    if (first == nullptr) return {};
    return fail_at(errc::unknown_key, file_, line_of(*first), key_name(first_key), "unknown key");
  }

 private:
  const toml::value& table_;
  std::string prefix_;
  const std::string& file_;
  std::set<std::string> used_;
};

#define TROUPE_TRY(expr)                               \
  do {                                                 \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (0)

result<const toml::value*> sub_table(table_reader& parent, const std::string& key, const std::string& file) {
  const toml::value* v = parent.find(key);
  if (v == nullptr) return nullptr;
  if (!v->is_table()) return fail_at(errc::bad_type, file, line_of(*v), parent.key_name(key), "must be a table");
  return v;
}

/// A relative path made relative to the cluster file's folder (when known).
void resolve_path(std::string& p, const std::filesystem::path& base_dir) {
  if (!p.empty() && !base_dir.empty() && std::filesystem::path(p).is_relative()) {
    p = (base_dir / p).lexically_normal().string();
  }
}

/// The array of tables `key` of `parent` ([[stages]] or [[replicas.stages]]): at least one.
result<std::vector<stage_section>> parse_stages(table_reader& parent, const std::string& prefix,
                                                const std::string& file, int parent_line) {
  const toml::value* stages = parent.find("stages");
  if (stages == nullptr) {
    return fail_at(errc::missing_key, file, parent_line, prefix, "at least one stage table is required");
  }
  if (!stages->is_array()) {
    return fail_at(errc::bad_type, file, line_of(*stages), prefix, "must be an array of tables ([[" + prefix + "]])");
  }
  const auto& arr = stages->as_array();
  if (arr.empty()) return fail_at(errc::bad_value, file, line_of(*stages), prefix, "at least one stage is required");
  std::vector<stage_section> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string key = fmt::format("{}[{}]", prefix, i);
    if (!arr[i].is_table()) return fail_at(errc::bad_type, file, line_of(arr[i]), key, "must be a table");
    table_reader t(arr[i], key, file);
    stage_section s;
    s.line = t.line();
    int first_line = s.line;
    TROUPE_TRY(t.integer("first_layer", s.first_layer, 0, 1 << 20, true, &first_line));
    s.last_layer_line = s.line;
    TROUPE_TRY(t.integer("last_layer", s.last_layer, -1, 1 << 20, false, &s.last_layer_line));
    TROUPE_TRY(t.integer("threads", s.threads, 1, 1024));
    s.node_line = s.line;
    if (const toml::value* n = t.find("node"); n != nullptr) s.node_line = line_of(*n);
    TROUPE_TRY(t.string("node", s.node));
    TROUPE_TRY(t.no_unknown_keys());
    out.push_back(std::move(s));
  }
  return out;
}

result<void> parse_cluster_section(table_reader& top, cluster_config& c, const std::string& file,
                                   const std::filesystem::path& base_dir) {
  auto table = sub_table(top, "cluster", file);
  if (!table) return std::unexpected(table.error());
  if (*table == nullptr) return {};
  table_reader t(**table, "cluster", file);
  cluster_section& s = c.cluster;
  s.line = t.line();
  TROUPE_TRY(t.string("name", s.name));
  TROUPE_TRY(t.string("secret_file", s.secret_file));
  TROUPE_TRY(t.string("binary", s.binary));
  TROUPE_TRY(t.string("run_dir", s.run_dir));
  TROUPE_TRY(t.integer("join_timeout_ms", s.join_timeout_ms, 1, 86'400'000));
  TROUPE_TRY(t.boolean("control_tls", s.control_tls));
  TROUPE_TRY(t.no_unknown_keys());
  resolve_path(s.secret_file, base_dir);
  // A bare name is looked up on PATH (of every host); a path with a '/' is a file.
  if (s.binary.find('/') != std::string::npos) resolve_path(s.binary, base_dir);
  return {};
}

result<void> parse_nodes(table_reader& top, cluster_config& c, const std::string& file,
                         const std::filesystem::path& base_dir) {
  const toml::value* nodes = top.find("nodes");
  if (nodes == nullptr) return {};
  if (!nodes->is_array()) return fail_at(errc::bad_type, file, line_of(*nodes), "nodes", "must be an array of tables ([[nodes]])");
  const auto& arr = nodes->as_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string prefix = fmt::format("nodes[{}]", i);
    if (!arr[i].is_table()) return fail_at(errc::bad_type, file, line_of(arr[i]), prefix, "must be a table");
    table_reader t(arr[i], prefix, file);
    node_section n;
    n.line = t.line();
    auto key_line = [&](const std::string& key, int& out) {
      const toml::value* v = t.find(key);
      out = v != nullptr ? line_of(*v) : 0;
    };
    key_line("name", n.name_line);
    key_line("host", n.host_line);
    key_line("role", n.role_line);
    TROUPE_TRY(t.string("name", n.name, true));
    TROUPE_TRY(t.string("host", n.host, true));
    std::string role = node_role_name(n.role);
    TROUPE_TRY(t.string("role", role));
    if (role == "head") {
      n.role = node_role::head;
    } else if (role == "worker") {
      n.role = node_role::worker;
    } else if (role == "spare") {
      n.role = node_role::spare;
    } else {
      return fail_at(errc::bad_value, file, n.role_line, prefix + ".role",
                     fmt::format("\"{}\" is not a role (head, worker, spare)", role));
    }
    TROUPE_TRY(t.integer("control_port", n.control_port, 1, 65535, false, &n.control_port_line));
    TROUPE_TRY(t.integer("data_port", n.data_port, 1, 65535, false, &n.data_port_line));
    TROUPE_TRY(t.string("net_devices", n.net_devices));
    auto ssh = sub_table(t, "ssh", file);
    if (!ssh) return std::unexpected(ssh.error());
    if (*ssh != nullptr) {
      table_reader st(**ssh, prefix + ".ssh", file);
      TROUPE_TRY(st.string("user", n.ssh.user));
      TROUPE_TRY(st.integer("port", n.ssh.port, 1, 65535));
      TROUPE_TRY(st.string("identity_file", n.ssh.identity_file));
      TROUPE_TRY(st.no_unknown_keys());
      if (n.ssh.user.empty()) return fail_at(errc::bad_value, file, st.line(), prefix + ".ssh.user", "must not be empty");
      resolve_path(n.ssh.identity_file, base_dir);
    }
    TROUPE_TRY(t.no_unknown_keys());
    c.nodes.push_back(std::move(n));
  }
  return {};
}

result<cluster_config> parse_root(const toml::value& root, const std::string& file,
                                  const std::filesystem::path& base_dir) {
  cluster_config c;
  c.source = file;
  table_reader top(root, "", file);

  // [model]
  auto model = sub_table(top, "model", file);
  if (!model) return std::unexpected(model.error());
  if (*model == nullptr) return fail_at(errc::missing_key, file, 0, "model", "required table [model] is missing");
  {
    table_reader t(**model, "model", file);
    TROUPE_TRY(t.string("path", c.model.path, true));
    TROUPE_TRY(t.string("tokenizer", c.model.tokenizer));
    TROUPE_TRY(t.no_unknown_keys());
    if (c.model.path.empty()) return fail_at(errc::bad_value, file, t.line(), "model.path", "must not be empty");
    resolve_path(c.model.path, base_dir);
    resolve_path(c.model.tokenizer, base_dir);
  }

  // [listen]
  auto listen = sub_table(top, "listen", file);
  if (!listen) return std::unexpected(listen.error());
  if (*listen != nullptr) {
    table_reader t(**listen, "listen", file);
    TROUPE_TRY(t.string("host", c.listen.host));
    TROUPE_TRY(t.integer("port", c.listen.port, 0, 65535));
    TROUPE_TRY(t.string("api_key_file", c.listen.api_key_file));
    resolve_path(c.listen.api_key_file, base_dir);
    TROUPE_TRY(t.integer("idle_timeout_ms", c.listen.idle_timeout_ms, 0, 86'400'000));
    TROUPE_TRY(t.integer("header_timeout_ms", c.listen.header_timeout_ms, 0, 3'600'000));
    TROUPE_TRY(t.integer("body_timeout_ms", c.listen.body_timeout_ms, 0, 3'600'000));
    TROUPE_TRY(t.integer("max_connections_per_peer", c.listen.max_connections_per_peer, 0, 1 << 20));
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [http]
  auto http = sub_table(top, "http", file);
  if (!http) return std::unexpected(http.error());
  if (*http != nullptr) {
    table_reader t(**http, "http", file);
    c.http.enabled = true;
    TROUPE_TRY(t.string("host", c.http.host));
    TROUPE_TRY(t.integer("port", c.http.port, 0, 65535));
    TROUPE_TRY(t.string("tls_cert", c.http.tls_cert));
    TROUPE_TRY(t.string("tls_key", c.http.tls_key));
    for (std::string* f : {&c.http.tls_cert, &c.http.tls_key}) {
      if (!f->empty() && !base_dir.empty() && std::filesystem::path(*f).is_relative()) {
        *f = (base_dir / *f).lexically_normal().string();
      }
    }
    if (c.http.tls_cert.empty() != c.http.tls_key.empty()) {
      return fail_at(errc::missing_key, file, t.line(), c.http.tls_cert.empty() ? "http.tls_cert" : "http.tls_key",
                     "TLS needs both http.tls_cert and http.tls_key");
    }
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [admin]
  auto admin = sub_table(top, "admin", file);
  if (!admin) return std::unexpected(admin.error());
  if (*admin != nullptr) {
    table_reader t(**admin, "admin", file);
    TROUPE_TRY(t.string("token_file", c.admin.token_file));
    resolve_path(c.admin.token_file, base_dir);
    TROUPE_TRY(t.integer("rollback_failures", c.admin.rollback_failures, 0, 1'000'000));
    TROUPE_TRY(t.integer("rollback_ttft_p99_ms", c.admin.rollback_ttft_p99_ms, 0, 86'400'000));
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [batching]
  auto batching = sub_table(top, "batching", file);
  if (!batching) return std::unexpected(batching.error());
  if (*batching != nullptr) {
    table_reader t(**batching, "batching", file);
    auto& b = c.batching;
    TROUPE_TRY(t.integer("block_size", b.block_size, 1, 4096));
    TROUPE_TRY(t.integer("n_blocks", b.n_blocks, 1, 1 << 24));
    TROUPE_TRY(t.integer("max_step_tokens", b.max_step_tokens, 1, 1 << 20));
    TROUPE_TRY(t.integer("max_running", b.max_running, 1, 1 << 16));
    TROUPE_TRY(t.integer("max_waiting", b.max_waiting, 1, 1 << 24));
    TROUPE_TRY(t.integer("prefill_chunk", b.prefill_chunk, 1, 1 << 20));
    TROUPE_TRY(t.integer("micro_batches", b.micro_batches, 0, 64));
    TROUPE_TRY(t.integer("decode_steps", b.decode_steps, 1, 256));
    TROUPE_TRY(t.integer("decode_steps_ms", b.decode_steps_ms, 1, 60'000));
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [limits]
  auto limits = sub_table(top, "limits", file);
  if (!limits) return std::unexpected(limits.error());
  if (*limits != nullptr) {
    table_reader t(**limits, "limits", file);
    TROUPE_TRY(t.integer("max_new_tokens", c.limits.max_new_tokens, 1, 1 << 24));
    TROUPE_TRY(t.integer("step_timeout_ms", c.limits.step_timeout_ms, 1, 3600 * 1000));
    TROUPE_TRY(t.integer("ctx_size", c.limits.ctx_size, 0, 1 << 24));
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [failover]
  auto failover = sub_table(top, "failover", file);
  if (!failover) return std::unexpected(failover.error());
  if (*failover != nullptr) {
    table_reader t(**failover, "failover", file);
    auto& f = c.failover;
    TROUPE_TRY(t.boolean("enabled", f.enabled));
    TROUPE_TRY(t.integer("hang_factor", f.hang_factor, 2, 1000));
    TROUPE_TRY(t.integer("hang_floor_ms", f.hang_floor_ms, 50, 3'600'000));
    TROUPE_TRY(t.integer("recovery_timeout_ms", f.recovery_timeout_ms, 100, 3'600'000));
    TROUPE_TRY(t.integer("max_restarts", f.max_restarts, 0, 1'000'000));
    TROUPE_TRY(t.integer("restart_window_ms", f.restart_window_ms, 1, 86'400'000));
    TROUPE_TRY(t.no_unknown_keys());
  }

  // [cluster] and [[nodes]] (multi-host files)
  TROUPE_TRY(parse_cluster_section(top, c, file, base_dir));
  TROUPE_TRY(parse_nodes(top, c, file, base_dir));

  // The pipelines: `replicas = N` with [[stages]] (every replica the same), or [[replicas]] each
  // with its own [[replicas.stages]].
  const toml::value* replicas = top.find("replicas");
  const toml::value* stages = top.find("stages");
  if (replicas != nullptr && replicas->is_array()) {
    const auto& reps = replicas->as_array();
    if (reps.empty()) return fail_at(errc::bad_value, file, line_of(*replicas), "replicas", "at least one [[replicas]] table is required");
    if (stages != nullptr) {
      const int stages_line = stages->is_array() && !stages->as_array().empty() ? line_of(stages->as_array()[0]) : line_of(*stages);
      return fail_at(errc::bad_value, file, stages_line, "stages",
                     fmt::format("top-level [[stages]] cannot be combined with [[replicas]] (line {}): put each "
                                 "replica's stages under its [[replicas.stages]]",
                                 line_of(reps[0])));
    }
    c.replicas_line = line_of(reps[0]);
    for (size_t r = 0; r < reps.size(); ++r) {
      const std::string prefix = fmt::format("replicas[{}]", r);
      if (!reps[r].is_table()) return fail_at(errc::bad_type, file, line_of(reps[r]), prefix, "must be a table ([[replicas]])");
      table_reader t(reps[r], prefix, file);
      replica_section rep;
      rep.line = t.line();
      auto parsed = parse_stages(t, prefix + ".stages", file, rep.line);
      if (!parsed) return std::unexpected(parsed.error());
      rep.stages = std::move(*parsed);
      TROUPE_TRY(t.no_unknown_keys());
      c.replica_plans.push_back(std::move(rep));
    }
    c.replicas = int(c.replica_plans.size());
  } else {
    if (replicas != nullptr) {
      if (!replicas->is_integer()) {
        return fail_at(errc::bad_type, file, line_of(*replicas), "replicas",
                       "must be an integer (with top-level [[stages]]) or an array of tables ([[replicas]])");
      }
      TROUPE_TRY(top.integer("replicas", c.replicas, 1, 1024, false, &c.replicas_line));
    }
    if (stages == nullptr) {
      return fail_at(errc::missing_key, file, 0, "stages",
                     "at least one [[stages]] table (or [[replicas]] with [[replicas.stages]]) is required");
    }
    auto parsed = parse_stages(top, "stages", file, 0);
    if (!parsed) return std::unexpected(parsed.error());
    c.stages = std::move(*parsed);
  }
  TROUPE_TRY(top.no_unknown_keys());
  TROUPE_TRY(validate(c));
  return c;
}

std::string first_line_of(const std::string& s) {
  std::string out = s.substr(0, s.find('\n'));
  if (out.rfind("[error] ", 0) == 0) out = out.substr(8);
  return out;
}

}  // namespace

result<cluster_config> parse_cluster_text(std::string_view text, const std::string& file_name,
                                          const std::filesystem::path& base_dir) {
  try {
    std::istringstream in{std::string(text)};
    const toml::value root = toml::parse(in, file_name);
    return parse_root(root, file_name, base_dir);
  } catch (const toml::syntax_error& e) {
    return fail_at(errc::syntax, file_name, int(e.location().line()), "", first_line_of(e.what()));
  } catch (const toml::exception& e) {
    return fail_at(errc::bad_type, file_name, int(e.location().line()), "", first_line_of(e.what()));
  } catch (const std::exception& e) {
    return fail_at(errc::syntax, file_name, 0, "", first_line_of(e.what()));
  }
}

result<cluster_config> parse_cluster_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail_at(errc::io_error, path.string(), 0, "", "cannot open the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_cluster_text(ss.str(), path.filename().string(), path.parent_path());
}

std::string stage_key(const cluster_config& c, int r, int i) {
  return c.replica_plans.empty() ? fmt::format("stages[{}]", i) : fmt::format("replicas[{}].stages[{}]", r, i);
}

namespace {

/// Non-empty and made of letters, digits and the characters in `extra` only.
bool only_chars(std::string_view s, std::string_view extra) {
  if (s.empty()) return false;
  for (char ch : s) {
    const bool alnum = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
    if (!alnum && extra.find(ch) == std::string_view::npos) return false;
  }
  return true;
}

int line_or(int line, int fallback) { return line > 0 ? line : fallback; }

/// [cluster] and [[nodes]]: names, addresses, ports, exactly one head.
result<void> validate_nodes(const cluster_config& c) {
  const std::string& f = c.source;
  const cluster_section& cl = c.cluster;
  if (!only_chars(cl.name, "_.-")) {
    return fail_at(errc::bad_value, f, cl.line, "cluster.name",
                   fmt::format("\"{}\" must be made of letters, digits, '_', '.' and '-'", cl.name));
  }
  if (cl.run_dir.empty() || cl.run_dir.front() != '/') {
    return fail_at(errc::bad_value, f, cl.line, "cluster.run_dir",
                   fmt::format("\"{}\" must be an absolute path (it is used on every host)", cl.run_dir));
  }
  if (cl.binary.empty()) return fail_at(errc::bad_value, f, cl.line, "cluster.binary", "must not be empty");
  if (cl.join_timeout_ms < 1) {
    return fail_at(errc::bad_value, f, cl.line, "cluster.join_timeout_ms", fmt::format("{} must be at least 1", cl.join_timeout_ms));
  }
  if (c.nodes.empty()) return {};
  if (cl.secret_file.empty()) {
    return fail_at(errc::missing_key, f, cl.line, "cluster.secret_file",
                   "required when [[nodes]] are defined (nodes prove to each other that they hold it)");
  }
  const node_section* head = nullptr;
  for (size_t i = 0; i < c.nodes.size(); ++i) {
    const node_section& n = c.nodes[i];
    const std::string key = fmt::format("nodes[{}]", i);
    if (!only_chars(n.name, "_.-")) {
      return fail_at(errc::bad_value, f, line_or(n.name_line, n.line), key + ".name",
                     fmt::format("\"{}\" must be made of letters, digits, '_', '.' and '-'", n.name));
    }
    if (n.host.empty()) return fail_at(errc::bad_value, f, line_or(n.host_line, n.line), key + ".host", "must not be empty");
    if (!only_chars(n.host, "_.-:")) {
      return fail_at(errc::bad_value, f, line_or(n.host_line, n.line), key + ".host",
                     fmt::format("\"{}\" is not an address or host name", n.host));
    }
    if (!n.net_devices.empty() && !only_chars(n.net_devices, "_.-:,")) {
      return fail_at(errc::bad_value, f, n.line, key + ".net_devices",
                     fmt::format("\"{}\" is not a list of devices (e.g. \"eth0\" or \"mlx5_0:1,eth0\")", n.net_devices));
    }
    if (!only_chars(n.ssh.user, "_.-")) {
      return fail_at(errc::bad_value, f, n.line, key + ".ssh.user", fmt::format("\"{}\" is not a user name", n.ssh.user));
    }
    for (const auto& [port_key, port, port_line] :
         {std::tuple{"control_port", n.control_port, n.control_port_line},
          std::tuple{"data_port", n.data_port, n.data_port_line}, std::tuple{"ssh.port", n.ssh.port, 0}}) {
      if (port < 1 || port > 65535) {
        return fail_at(errc::bad_value, f, line_or(port_line, n.line), key + "." + port_key,
                       fmt::format("{} is out of range [1, 65535]", port));
      }
    }
    if (n.control_port == n.data_port) {
      return fail_at(errc::bad_value, f, line_or(n.data_port_line, line_or(n.control_port_line, n.line)), key + ".data_port",
                     fmt::format("{} is this node's control_port too", n.data_port));
    }
    for (size_t j = 0; j < i; ++j) {
      const node_section& m = c.nodes[j];
      if (m.name == n.name) {
        return fail_at(errc::bad_value, f, line_or(n.name_line, n.line), key + ".name",
                       fmt::format("duplicate node name \"{}\" (nodes[{}], line {})", n.name, j, line_or(m.name_line, m.line)));
      }
      if (m.host != n.host) continue;
      for (const auto& [port_key, port, port_line] : {std::tuple{"control_port", n.control_port, n.control_port_line},
                                                      std::tuple{"data_port", n.data_port, n.data_port_line}}) {
        if (port == m.control_port || port == m.data_port) {
          return fail_at(errc::bad_value, f, line_or(port_line, n.line), key + "." + port_key,
                         fmt::format("port {} on host {} is taken by node \"{}\" (line {})", port, n.host, m.name,
                                     m.line));
        }
      }
    }
    if (n.role == node_role::head) {
      if (head != nullptr) {
        return fail_at(errc::bad_value, f, line_or(n.role_line, n.line), key + ".role",
                       fmt::format("a second head (\"{}\"): node \"{}\" (line {}) is the head already; exactly one "
                                   "node has role = \"head\"",
                                   n.name, head->name, head->line));
      }
      head = &n;
    }
  }
  if (head == nullptr) {
    return fail_at(errc::missing_key, f, c.nodes.front().line, "nodes",
                   "no node has role = \"head\" (exactly one must: it runs the ROUTER and the SCHEDULERs)");
  }
  return {};
}

/// A stage's `node`: absent (the head), or a [[nodes]] entry that is not a spare.
result<void> validate_placement(const cluster_config& c, const stage_section& s, const std::string& key) {
  if (s.node.empty()) return {};
  const std::string& f = c.source;
  const int line = line_or(s.node_line, s.line);
  if (c.nodes.empty()) {
    return fail_at(errc::bad_value, f, line, key + ".node",
                   fmt::format("\"{}\": no [[nodes]] defined (a file without [[nodes]] runs in one process)", s.node));
  }
  const node_section* n = c.find_node(s.node);
  if (n == nullptr) {
    std::string names;
    for (const auto& m : c.nodes) names += (names.empty() ? "" : ", ") + m.name;
    return fail_at(errc::bad_value, f, line, key + ".node", fmt::format("unknown node \"{}\" (nodes: {})", s.node, names));
  }
  if (n->role == node_role::spare) {
    return fail_at(errc::bad_value, f, line, key + ".node",
                   fmt::format("node \"{}\" is a spare (line {}): spares hold no stage at start", s.node, n->line));
  }
  return {};
}

}  // namespace

result<void> validate(const cluster_config& c) {
  const std::string& f = c.source;
  const auto& b = c.batching;
  // Limits of zero or less make a server that refuses or starves everything. The parser already
  // rejects them with their line; this catches values set from flags or in code.
  for (const auto& [key, value] : {std::pair{"replicas", c.replicas}, std::pair{"batching.block_size", b.block_size},
                                   std::pair{"batching.n_blocks", b.n_blocks},
                                   std::pair{"batching.max_step_tokens", b.max_step_tokens},
                                   std::pair{"batching.max_running", b.max_running},
                                   std::pair{"batching.max_waiting", b.max_waiting},
                                   std::pair{"batching.prefill_chunk", b.prefill_chunk},
                                   std::pair{"batching.decode_steps", b.decode_steps},
                                   std::pair{"batching.decode_steps_ms", b.decode_steps_ms},
                                   std::pair{"limits.max_new_tokens", c.limits.max_new_tokens},
                                   std::pair{"limits.step_timeout_ms", c.limits.step_timeout_ms}}) {
    if (value < 1) return fail_at(errc::bad_value, f, 0, key, fmt::format("{} must be at least 1", value));
  }
  if (b.prefill_chunk > b.max_step_tokens) {
    return fail_at(errc::bad_value, f, 0, "batching.prefill_chunk",
                   fmt::format("{} is larger than batching.max_step_tokens ({})", b.prefill_chunk, b.max_step_tokens));
  }
  TROUPE_TRY(validate_nodes(c));
  if (!c.replica_plans.empty()) {
    if (!c.stages.empty()) {
      return fail_at(errc::bad_value, f, c.stages[0].line, "stages",
                     "top-level stages cannot be combined with [[replicas]]");
    }
    if (c.replicas != int(c.replica_plans.size())) {
      return fail_at(errc::bad_value, f, c.replicas_line, "replicas",
                     fmt::format("{} does not match the {} [[replicas]] tables", c.replicas, c.replica_plans.size()));
    }
  }
  const int n_pipelines = c.replica_plans.empty() ? 1 : int(c.replica_plans.size());
  for (int r = 0; r < n_pipelines; ++r) {
    const auto& stages = c.stages_of(r);
    const std::string prefix = c.replica_plans.empty() ? "stages" : fmt::format("replicas[{}].stages", r);
    const int pipeline_line = c.replica_plans.empty() ? 0 : c.replica_plans[size_t(r)].line;
    if (stages.empty()) return fail_at(errc::missing_key, f, pipeline_line, prefix, "at least one stage is required");
    for (size_t i = 0; i < stages.size(); ++i) {
      const stage_section& s = stages[i];
      const std::string key = stage_key(c, r, int(i));
      const int expected_first = i == 0 ? 0 : stages[i - 1].last_layer;
      if (i > 0 && stages[i - 1].last_layer < 0) {
        return fail_at(errc::bad_value, f, stages[i - 1].last_layer_line, stage_key(c, r, int(i) - 1) + ".last_layer",
                       "only the last stage may run to the end of the model (-1 or absent)");
      }
      if (s.first_layer != expected_first) {
        return fail_at(errc::bad_value, f, s.line, key + ".first_layer",
                       fmt::format("{} leaves {}: the previous stage ends at layer {}", s.first_layer,
                                   s.first_layer > expected_first ? "a gap" : "an overlap", expected_first));
      }
      if (s.last_layer != -1 && s.last_layer <= s.first_layer) {
        return fail_at(errc::bad_value, f, s.last_layer_line, key + ".last_layer",
                       fmt::format("{} must be greater than first_layer ({})", s.last_layer, s.first_layer));
      }
      TROUPE_TRY(validate_placement(c, s, key));
    }
  }
  return {};
}

result<void> check_layers(cluster_config& c, int n_layers) {
  const std::string& f = c.source;
  const int n_pipelines = c.replica_plans.empty() ? 1 : int(c.replica_plans.size());
  for (int r = 0; r < n_pipelines; ++r) {
    auto& stages = c.stages_of(r);
    for (size_t i = 0; i < stages.size(); ++i) {
      stage_section& s = stages[i];
      const std::string key = stage_key(c, r, int(i));
      if (s.first_layer >= n_layers) {
        return fail_at(errc::bad_value, f, s.line, key + ".first_layer",
                       fmt::format("{} is past the model's {} layers", s.first_layer, n_layers));
      }
      if (s.last_layer == -1) s.last_layer = n_layers;
      if (s.last_layer > n_layers) {
        return fail_at(errc::bad_value, f, s.last_layer_line, key + ".last_layer",
                       fmt::format("{} is past the model's {} layers", s.last_layer, n_layers));
      }
      if (i + 1 == stages.size() && s.last_layer != n_layers) {
        return fail_at(errc::bad_value, f, s.last_layer_line, key + ".last_layer",
                       fmt::format("the last stage must end at the model's last layer ({}), not {}", n_layers,
                                   s.last_layer));
      }
    }
  }
  return {};
}

result<std::vector<stage_section>> split_layers_evenly(int n_layers, int n_stages, int threads) {
  if (n_stages < 1 || n_stages > n_layers) {
    return fail_at(errc::bad_value, "<flags>", 0, "--stages",
                   fmt::format("{} stages for a model of {} layers (each stage needs at least one)", n_stages, n_layers));
  }
  std::vector<stage_section> out;
  int first = 0;
  for (int i = 0; i < n_stages; ++i) {
    const int n = n_layers / n_stages + (i < n_layers % n_stages ? 1 : 0);
    stage_section s;
    s.first_layer = first;
    s.last_layer = first + n;
    s.threads = threads;
    out.push_back(s);
    first += n;
  }
  return out;
}

result<std::vector<stage_section>> split_layers_balanced(int n_layers, int n_stages, double layer_cost,
                                                         double head_cost, int threads) {
  auto even = split_layers_evenly(n_layers, n_stages, threads);
  if (!even || n_stages == 1 || !(layer_cost > 0) || !(head_cost >= 0)) return even;
  // cost of a stage of n layers; the last one carries the head.
  auto cost = [&](int n, bool last) { return n * layer_cost + (last ? head_cost : 0.0); };
  // The last stage takes k layers; the others share n_layers - k as evenly as layers allow
  // (the largest of them has ceil((n_layers - k) / (n_stages - 1)) layers). Take the k with the
  // smallest largest cost; on a tie the smallest k (the earlier stages fuller).
  int best_k = -1;
  double best = 0;
  for (int k = 1; k <= n_layers - (n_stages - 1); ++k) {
    const int rest = n_layers - k;
    const int per = (rest + n_stages - 2) / (n_stages - 1);
    const double worst = std::max(cost(per, false), cost(k, true));
    if (best_k < 0 || worst < best - 1e-9 * best) {
      best = worst;
      best_k = k;
    }
  }
  auto front = split_layers_evenly(n_layers - best_k, n_stages - 1, threads);
  if (!front) return even;
  stage_section last;
  last.first_layer = n_layers - best_k;
  last.last_layer = n_layers;
  last.threads = threads;
  front->push_back(last);
  return front;
}

}  // namespace troupe::config

namespace troupe::config {
const char* node_role_name(node_role r) {
  switch (r) {
    case node_role::head: return "head";
    case node_role::worker: return "worker";
    case node_role::spare: return "spare";
  }
  return "unknown";
}
}  // namespace troupe::config
