#pragma once
// A cluster file (TOML) as plain structs: the model, where to listen, batching limits, and the
// pipeline stages (layer ranges) every replica is made of. Every error names the file, the line
// and the key: "local.toml:12: stages[1].last_layer: must be greater than first_layer (3)".
#include <cstdint>
#include <expected>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace troupe::config {

enum class errc {
  io_error,     // the file cannot be read
  syntax,       // not TOML
  missing_key,  // a required key is absent
  bad_type,     // a key has the wrong TOML type
  bad_value,    // a value out of range or inconsistent with another
  unknown_key,  // a key troupe does not know (a typo must not pass silently)
};
const char* errc_name(errc c);

struct error {
  errc code;
  std::string message;  // "file:line: key: what"
};

template <class T>
using result = std::expected<T, error>;

struct model_section {
  std::string path;       // model file or directory (relative paths: to the cluster file's folder)
  std::string tokenizer;  // optional tokenizer file (llama2.c checkpoints need one)
};

struct listen_section {
  std::string host = "127.0.0.1";
  int port = 7433;  // 0: an ephemeral port
  std::string api_key_file;  // clients' API keys, one per line (empty: no authentication)
  // Connection limits of the client protocol (see transport::server_options); -1: its default.
  int idle_timeout_ms = -1;
  int header_timeout_ms = -1;
  int body_timeout_ms = -1;
  int max_connections_per_peer = -1;
};

/// The HTTP API (docs/http-api.md): off unless the file has an [http] table or --http-port is given.
struct http_section {
  bool enabled = false;
  std::string host;  // empty: listen.host
  int port = 8080;   // 0: an ephemeral port
  std::string tls_cert;  // PEM certificate (chain); with tls_key: HTTPS (relative paths: to the file's folder)
  std::string tls_key;   // PEM private key of tls_cert
};

/// Continuous batching and the paged KV cache (per replica; every stage has n_blocks blocks).
struct batching_section {
  int block_size = 16;       // positions per KV block
  int n_blocks = 1024;       // KV blocks per stage
  int max_step_tokens = 256; // token budget of one step (decodes + prefill chunks)
  int max_running = 32;      // sequences holding KV blocks at once
  int max_waiting = 256;     // queued requests; past it requests are refused as overloaded
  int prefill_chunk = 128;   // prompt tokens of one sequence per step
  int micro_batches = 0;     // micro-batches in flight per replica; 0: one per stage
  int decode_steps = 8;      // decode steps per step request when only decodes run (1-stage replicas)
  int decode_steps_ms = 20;  // ... as many as take about this long (a new request waits for them)
};

/// [admin]: the ADMIN CONSOLE (docs/operations.md, "The console").
struct admin_section {
  std::string token_file;         // the admin token (first line); empty: admin commands are refused
  int rollback_failures = 5;      // consecutive failed requests that roll a replica back (0: off)
  int rollback_ttft_p99_ms = 0;   // a TTFT p99 over this rolls a replica back (0: off)
};

struct limits_section {
  int max_new_tokens = 4096;   // the most tokens one request may ask for
  int step_timeout_ms = 60000; // a step (all stages) that takes longer fails its sequences
  int ctx_size = 0;            // positions per sequence; 0: the model's context
};

/// [failover]: what the SUPERVISOR does when a stage is lost or hung (docs/operations.md).
struct failover_section {
  bool enabled = true;             // rebuild a replica that lost a stage and replay its sequences
  int hang_factor = 10;            // a step in flight longer than factor x the replica's slowest
  int hang_floor_ms = 1000;        //   recent step, and longer than this, means a hung stage
  int recovery_timeout_ms = 30000; // a rebuild that takes longer marks the replica failed
  int max_restarts = 5;            // rebuilds of one replica within restart_window_ms; past
  int restart_window_ms = 60000;   //   that the replica is marked failed
};

struct stage_section {
  int first_layer = 0;
  int last_layer = -1;  // exclusive; -1: to the end of the model
  int threads = 1;      // engine worker threads of this stage (the stage's own thread included)
  std::string node;     // the [[nodes]] entry that runs it; empty: the head (or this process)
  int line = 0;         // where the stage is defined (0: from flags)
  int last_layer_line = 0;
  int node_line = 0;
};

/// What a node of a multi-host cluster is for.
enum class node_role {
  head,    // ROUTER, SCHEDULERs, gateways (and any stages placed on it); exactly one
  worker,  // runs the stages placed on it
  spare,   // holds no stage at start; a stage is placed on it when its own node is lost
};
const char* node_role_name(node_role r);

/// How the launcher (scripts/cluster) reaches a node.
struct ssh_section {
  std::string user = "root";
  int port = 22;
  std::string identity_file;  // empty: ssh's default keys (relative paths: to the file's folder)
};

/// One [[nodes]] entry: a machine (one `troupe node` process).
struct node_section {
  std::string name;          // [A-Za-z0-9_.-]+, unique
  std::string host;          // the address other nodes and the launcher use (IPv4 address or name)
  node_role role = node_role::worker;
  int control_port = 7434;   // CAF (control plane, TLS)
  int data_port = 7435;      // UCX data plane (hidden states)
  std::string net_devices;   // UCX_NET_DEVICES of this node's data plane; empty: UCX's choice
  ssh_section ssh;
  int line = 0;  // the [[nodes]] header
  // Where each key is given (0: absent; errors then name `line`).
  int name_line = 0;
  int host_line = 0;
  int role_line = 0;
  int control_port_line = 0;
  int data_port_line = 0;
};

/// [cluster]: what every node of a multi-host cluster shares.
struct cluster_section {
  std::string name = "troupe";
  std::string secret_file;        // the cluster secret (relative paths: to the file's folder)
  std::string binary = "troupe";  // the troupe executable on every host (scripts/cluster)
  std::string run_dir = "/tmp/troupe";  // pid, log and status files on every host
  int join_timeout_ms = 120'000;  // the head waits this long for the workers its stages need
  // CAF's OpenSSL module on the control plane, inside the gates (which authenticate every peer
  // either way). Off by default: CAF 0.17.6's OpenSSL transport drops the other nodes' connections
  // when one node dies (docs/operations.md, "Failover"), which defeats failover.
  bool control_tls = false;
  int line = 0;  // the [cluster] header (0: no [cluster] table)
};

/// One [[replicas]] entry: its own pipeline, each stage placed on a node.
struct replica_section {
  std::vector<stage_section> stages;
  int line = 0;
};

struct cluster_config {
  std::string source = "<flags>";  // file name used in error messages
  int replicas = 1;
  int replicas_line = 0;
  model_section model;
  listen_section listen;
  http_section http;
  batching_section batching;
  limits_section limits;
  failover_section failover;
  admin_section admin;
  std::vector<stage_section> stages;  // the pipeline of every replica, in layer order
  // Multi-host files: [cluster], [[nodes]], and [[replicas]] with [[replicas.stages]] (then
  // `stages` is empty and `replicas` == replica_plans.size()). A file without [[nodes]] is one
  // process (`troupe serve`), as before.
  cluster_section cluster;
  std::vector<node_section> nodes;
  std::vector<replica_section> replica_plans;

  /// The pipeline of replica r (from [[replicas]] where the file has them, else `stages`).
  const std::vector<stage_section>& stages_of(int r) const {
    return replica_plans.empty() ? stages : replica_plans[size_t(r)].stages;
  }
  std::vector<stage_section>& stages_of(int r) { return replica_plans.empty() ? stages : replica_plans[size_t(r)].stages; }
  bool multi_host() const { return !nodes.empty(); }
  /// The [[nodes]] entry called `name`, or nullptr.
  const node_section* find_node(std::string_view name) const {
    for (const auto& n : nodes) {
      if (n.name == name) return &n;
    }
    return nullptr;
  }
  /// The head node (role = head), or nullptr when the file has no [[nodes]].
  const node_section* head() const {
    for (const auto& n : nodes) {
      if (n.role == node_role::head) return &n;
    }
    return nullptr;
  }
};

/// The key of stage i of replica r in errors and logs: "stages[i]" (every replica the same
/// pipeline) or "replicas[r].stages[i]" (the [[replicas]] form).
std::string stage_key(const cluster_config& c, int r, int i);

/// Reads and validates a cluster file (structure only; layer counts are checked by check_layers
/// once the model's header is known).
result<cluster_config> parse_cluster_file(const std::filesystem::path& path);

/// Same, from text; `file_name` appears in errors and relative paths are resolved against
/// `base_dir` (empty: left as they are).
result<cluster_config> parse_cluster_text(std::string_view text, const std::string& file_name,
                                          const std::filesystem::path& base_dir = {});

/// Structural checks: positive limits, contiguous stages starting at layer 0 (in every replica's
/// pipeline), and for multi-host files the [cluster] and [[nodes]] tables: exactly one head,
/// unique names, distinct ports per host, every stage on a known, non-spare node.
result<void> validate(const cluster_config& c);

/// Checks every pipeline's stages against a model of n_layers layers and resolves last_layer == -1.
result<void> check_layers(cluster_config& c, int n_layers);

/// n_stages contiguous ranges covering [0, n_layers), sizes differing by at most one (the
/// earlier stages take the extra layers).
result<std::vector<stage_section>> split_layers_evenly(int n_layers, int n_stages, int threads = 1);

/// n_stages contiguous ranges covering [0, n_layers) that even out the work of a pipeline: every
/// layer costs layer_cost, and the last stage also runs the output head (head_cost, same unit:
/// e.g. weights read per token). The largest stage cost is the smallest possible; among splits
/// that reach it, the earlier stages take as many layers as they can. A pipeline runs at the pace
/// of its slowest stage: an even split of a 12-layer 110M model puts 58 % more work on the last
/// stage (6 layers + a 32000 x 768 head) than on the first.
result<std::vector<stage_section>> split_layers_balanced(int n_layers, int n_stages, double layer_cost,
                                                         double head_cost, int threads = 1);

}  // namespace troupe::config
