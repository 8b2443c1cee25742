// Cluster file parsing (toml11 v3) and validation. toml11 throws; every exception is caught here
// and turned into "file:line: key: what".
#include "cluster-config/cluster_config.hpp"

#include <fstream>
#include <map>
#include <set>
#include <sstream>

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
  if (!v->is_table()) return fail_at(errc::bad_type, file, line_of(*v), key, "must be a table");
  return v;
}

result<cluster_config> parse_root(const toml::value& root, const std::string& file,
                                  const std::filesystem::path& base_dir) {
  cluster_config c;
  c.source = file;
  table_reader top(root, "", file);
  TROUPE_TRY(top.integer("replicas", c.replicas, 1, 1024, false, &c.replicas_line));

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
    auto resolve = [&](std::string& p) {
      if (!p.empty() && !base_dir.empty() && std::filesystem::path(p).is_relative()) {
        p = (base_dir / p).lexically_normal().string();
      }
    };
    resolve(c.model.path);
    resolve(c.model.tokenizer);
  }

  // [listen]
  auto listen = sub_table(top, "listen", file);
  if (!listen) return std::unexpected(listen.error());
  if (*listen != nullptr) {
    table_reader t(**listen, "listen", file);
    TROUPE_TRY(t.string("host", c.listen.host));
    TROUPE_TRY(t.integer("port", c.listen.port, 0, 65535));
    TROUPE_TRY(t.string("api_key_file", c.listen.api_key_file));
    if (!c.listen.api_key_file.empty() && !base_dir.empty() && std::filesystem::path(c.listen.api_key_file).is_relative()) {
      c.listen.api_key_file = (base_dir / c.listen.api_key_file).lexically_normal().string();
    }
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

  // [[stages]]
  const toml::value* stages = top.find("stages");
  if (stages == nullptr) return fail_at(errc::missing_key, file, 0, "stages", "at least one [[stages]] table is required");
  if (!stages->is_array()) return fail_at(errc::bad_type, file, line_of(*stages), "stages", "must be an array of tables ([[stages]])");
  const auto& arr = stages->as_array();
  if (arr.empty()) return fail_at(errc::bad_value, file, line_of(*stages), "stages", "at least one stage is required");
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string prefix = fmt::format("stages[{}]", i);
    if (!arr[i].is_table()) return fail_at(errc::bad_type, file, line_of(arr[i]), prefix, "must be a table");
    table_reader t(arr[i], prefix, file);
    stage_section s;
    s.line = t.line();
    int first_line = s.line;
    TROUPE_TRY(t.integer("first_layer", s.first_layer, 0, 1 << 20, true, &first_line));
    s.last_layer_line = s.line;
    TROUPE_TRY(t.integer("last_layer", s.last_layer, -1, 1 << 20, false, &s.last_layer_line));
    TROUPE_TRY(t.integer("threads", s.threads, 1, 1024));
    TROUPE_TRY(t.no_unknown_keys());
    c.stages.push_back(s);
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
  if (c.stages.empty()) return fail_at(errc::missing_key, f, 0, "stages", "at least one stage is required");
  for (size_t i = 0; i < c.stages.size(); ++i) {
    const stage_section& s = c.stages[i];
    const std::string key = fmt::format("stages[{}]", i);
    const int expected_first = i == 0 ? 0 : c.stages[i - 1].last_layer;
    if (i > 0 && c.stages[i - 1].last_layer < 0) {
      return fail_at(errc::bad_value, f, c.stages[i - 1].last_layer_line, fmt::format("stages[{}].last_layer", i - 1),
                     "only the last stage may run to the end of the model (-1 or absent)");
    }
    if (s.first_layer != expected_first) {
      return fail_at(errc::bad_value, f, s.line, key + ".first_layer",
                     fmt::format("{} leaves a gap or overlap: the previous stage ends at layer {}", s.first_layer,
                                 expected_first));
    }
    if (s.last_layer != -1 && s.last_layer <= s.first_layer) {
      return fail_at(errc::bad_value, f, s.last_layer_line, key + ".last_layer",
                     fmt::format("{} must be greater than first_layer ({})", s.last_layer, s.first_layer));
    }
  }
  return {};
}

result<void> check_layers(cluster_config& c, int n_layers) {
  const std::string& f = c.source;
  for (size_t i = 0; i < c.stages.size(); ++i) {
    stage_section& s = c.stages[i];
    const std::string key = fmt::format("stages[{}].last_layer", i);
    if (s.first_layer >= n_layers) {
      return fail_at(errc::bad_value, f, s.line, fmt::format("stages[{}].first_layer", i),
                     fmt::format("{} is past the model's {} layers", s.first_layer, n_layers));
    }
    if (s.last_layer == -1) s.last_layer = n_layers;
    if (s.last_layer > n_layers) {
      return fail_at(errc::bad_value, f, s.last_layer_line, key,
                     fmt::format("{} is past the model's {} layers", s.last_layer, n_layers));
    }
    if (i + 1 == c.stages.size() && s.last_layer != n_layers) {
      return fail_at(errc::bad_value, f, s.last_layer_line, key,
                     fmt::format("the last stage must end at the model's last layer ({}), not {}", n_layers,
                                 s.last_layer));
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
