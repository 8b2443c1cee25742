#pragma once
// THE contract of the control plane: ids, message structs, atoms and typed-actor interfaces, in
// the order a request touches them (ROUTER -> SCHEDULER -> REPLICA -> PIPELINE STAGEs -> ROUTER),
// and their registration with CAF (add_message_types). Other headers include this one; the
// contract is not defined anywhere else.
// Every message is a value with inspect(), so the same messages can cross CAF nodes later.
#include <compare>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/fwd.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "engine/finish_reason.hpp"
#include "engine/sampling.hpp"

namespace troupe::engine {
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampling_params& x) {
  return f(caf::meta::type_name("sampling_params"), x.temperature, x.top_k, x.top_p, x.repetition_penalty, x.seed);
}
}  // namespace troupe::engine

namespace troupe::actors {

/// A request's id, unique within a ROUTER; a sequence in the SCHEDULER and the stages has the
/// id of its request.
struct request_id {
  uint64_t value = 0;
  friend auto operator<=>(const request_id&, const request_id&) = default;
};

}  // namespace troupe::actors

template <>
struct std::hash<troupe::actors::request_id> {
  size_t operator()(const troupe::actors::request_id& id) const noexcept { return std::hash<uint64_t>{}(id.value); }
};

namespace troupe::actors {

/// Registers every message type of this file and the "troupe" error category with CAF (needed
/// for messages that cross nodes). Every actor system of troupe calls it (configure_actor_system).
void add_message_types(caf::actor_system_config& cfg);

// ---- errors --------------------------------------------------------------------------------
/// Why the control plane refused or failed a request; carried as caf::error (category "troupe").
/// Only the ROUTER turns these into client error codes.
enum class serve_errc : uint8_t {
  none = 0,
  invalid_request = 1,    // bad parameters (empty prompt, bad sampling values, ...)
  overloaded = 2,         // the waiting queue is full
  too_long = 3,           // the prompt (or prompt + max_tokens) cannot fit the context / KV cache
  cancelled = 4,          // cancelled before it produced anything
  deadline_exceeded = 5,  // deadline passed before it produced anything
  failed = 6,             // a step failed (stage error, timeout)
  shutting_down = 7,
  internal = 8,
  // The replica lost a stage and is being rebuilt (actors/supervisor.hpp): its SCHEDULER replays
  // the sequences once it is back. Between REPLICA and SCHEDULER only; never reaches a client.
  interrupted = 9,
};
const char* serve_errc_name(serve_errc c);
caf::error make_error(serve_errc c, std::string message = {});
/// The serve_errc of an error of category "troupe" (internal for any other error).
serve_errc serve_errc_of(const caf::error& e);
/// "overloaded: waiting queue full (256)" for our errors, CAF's rendering for others.
std::string describe(const caf::error& e);

// ---- atoms ---------------------------------------------------------------------------------
using generate_atom = caf::atom_constant<caf::atom("generate")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using admit_atom = caf::atom_constant<caf::atom("admit")>;
using schedule_atom = caf::atom_constant<caf::atom("schedule")>;
using step_atom = caf::atom_constant<caf::atom("step")>;
using hidden_atom = caf::atom_constant<caf::atom("hidden")>;
using tokens_atom = caf::atom_constant<caf::atom("tokens")>;
using finished_atom = caf::atom_constant<caf::atom("finished")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
using watchdog_atom = caf::atom_constant<caf::atom("watchdog")>;

// ---- what every part of the control plane shares ---------------------------------------------
enum class priority : uint8_t { interactive = 0, batch = 1 };

// Why a sequence finished: the engine's one definition.
using engine::finish_reason;
using engine::finish_reason_name;

/// A tokenized request as the SCHEDULER's batch policy takes it.
struct sequence_spec {
  request_id id{};
  std::vector<int32_t> prompt;  // token ids, BOS included
  int32_t max_tokens = 128;
  priority prio = priority::interactive;
  int64_t deadline_ns = 0;  // steady-clock time after which the request is finished; 0: none
  bool stop_at_eos = true;
  std::vector<int32_t> stop_tokens;  // finish (reason stop) after producing any of these
  // Tokens this request generated already (on a replica that failed): recomputed with the prompt,
  // and sampling continues at index generated.size(), so the text goes on unchanged.
  std::vector<int32_t> generated;
};

/// One sequence's share of a step.
struct planned_seq {
  request_id id{};
  int32_t start_pos = 0;              // position of tokens[0]
  std::vector<int32_t> tokens;        // the new tokens, positions [start_pos, start_pos + size)
  std::vector<int32_t> new_blocks;    // blocks appended to its table since the stages last heard
  bool sample = false;                // the last new token's logits give the next token
  int32_t step = 0;                   // when sample: index of the token generated (0 = first)
  bool is_new = false;                // stages see this sequence (again) for the first time:
  std::vector<int32_t> history;       //   then all its tokens so far (prompt + generated)
};

/// One token a last stage sampled for a sequence.
struct sampled_token {
  request_id id{};
  int32_t token = 0;
  int32_t index = 0;  // index of the generated token in its request (the sampling step)
};

/// A sequence the SCHEDULER finished, and why.
struct finished_seq {
  request_id id{};
  finish_reason reason = finish_reason::length;
  int32_t n_generated = 0;  // tokens sampled in total (the ROUTER waits for all of them)
  std::string message;      // reason failed: why (for the client)
};

// ---- last stage -> ROUTER, SCHEDULER -> ROUTER ---------------------------------------------
/// Sampled tokens for requests of one ROUTER (one message per step and ROUTER).
struct token_batch {
  std::vector<sampled_token> tokens;
};

/// Where the last stage sends sampled tokens and the SCHEDULER says a sequence finished.
using token_sink_actor = caf::typed_actor<
  // Sampled tokens, straight from last stages.
  caf::reacts_to<tokens_atom, token_batch>,
  // A sequence finished (from its SCHEDULER), after n_generated tokens.
  caf::reacts_to<finished_atom, finished_seq>>;

// ---- client <-> ROUTER (in-process API; the TCP gateway relays the client protocol to it) ----
/// One completion request as the ROUTER takes it.
struct serve_request {
  std::string prompt;                  // text (tokenized with BOS), or
  std::vector<int32_t> prompt_tokens;  // token ids used as they are
  int32_t max_tokens = 16;
  engine::sampling_params sampling;
  bool stop_at_eos = true;
  std::vector<std::string> stop;       // stop strings (not included in the output)
  priority prio = priority::interactive;
  int64_t deadline_ms = 0;             // from receipt; 0: none
};

/// Tokens produced since the previous chunk and the UTF-8 text they completed.
struct stream_chunk {
  request_id id{};
  std::string text;
  std::vector<int32_t> ids;
};

/// The last message of a request's stream (also after a refusal or failure: error != none).
struct stream_end {
  request_id id{};
  finish_reason reason = finish_reason::length;
  serve_errc error = serve_errc::none;
  std::string message;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  bool stop_string = false;  // finished because a stop string matched (reason is stop)
};

// ---- ROUTER -> SCHEDULER ---------------------------------------------------------------------
/// A tokenized request for one replica. Tokens go to `sink` (the ROUTER) straight from the last
/// stage; the SCHEDULER tells `sink` when the sequence finished.
struct sequence_request {
  sequence_spec spec;
  engine::sampling_params sampling;
  token_sink_actor sink;
};

struct scheduler_stats {
  int32_t n_blocks = 0;
  int32_t n_free_blocks = 0;
  int32_t n_waiting = 0;
  int32_t n_running = 0;
  int32_t n_in_flight = 0;
  int64_t n_preemptions = 0;
  int64_t n_steps = 0;          // forward steps (a request of several decode steps counts each)
  int64_t n_step_tokens = 0;
  int64_t n_step_requests = 0;  // step requests sent to the REPLICA
  int64_t step_ns = 0;          // one step through all stages, as last measured (0: not yet)
};

// ---- SCHEDULER -> REPLICA -> PIPELINE STAGEs ------------------------------------------------------
/// A sequence the stages see for the first time (or again, after preemption).
struct new_sequence {
  request_id id{};
  std::vector<int32_t> history;  // prompt + tokens generated so far (the repetition-penalty set)
  engine::sampling_params sampling;
  token_sink_actor sink;  // where the last stage sends sampled tokens
  std::vector<int32_t> stop_ids;  // a run of several decode steps ends after one of these
};

/// One micro-batch, as deltas: stages drop `released`, add `added`, then run `work` (block tables
/// grow by each entry's new_blocks).
struct step_request {
  uint64_t micro_batch = 0;
  std::vector<request_id> released;
  std::vector<new_sequence> added;
  std::vector<planned_seq> work;
  int32_t n_steps = 1;  // decode steps to run, each feeding back its samples (single-stage replicas)
  uint64_t generation = 1;  // the replica's chain the SCHEDULER planned for: a rebuilt replica
                            // refuses (interrupted) a step planned before the SCHEDULER replayed
};

/// The activations one stage hands the next. In-process the tensor travels in the message
/// (moved, not copied); between processes it goes on the data plane and the message carries
/// only its tag.
struct hidden_states {
  int32_t n_tokens = 0;
  int32_t dim = 0;
  std::vector<float> data;  // [n_tokens][dim]; empty when tag != 0
  uint64_t tag = 0;         // != 0: take the tensor from the data plane under this tag
  std::vector<int64_t> stage_ns;  // what each stage before took for this micro-batch (step_result::stage_ns)
};

/// What the last stage sampled for a micro-batch (the SCHEDULER's view).
struct step_result {
  uint64_t micro_batch = 0;
  std::vector<sampled_token> tokens;
  // Each stage's compute time for this micro-batch per forward pass, front to back (the REPLICA
  // keeps them for status; it travels with the step, so stages on other nodes report it too).
  std::vector<int64_t> stage_ns;
};

// ---- inspect -------------------------------------------------------------------------------
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_id& x) {
  return f(caf::meta::type_name("request_id"), x.value);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_spec& x) {
  return f(caf::meta::type_name("sequence_spec"), x.id, x.prompt, x.max_tokens, x.prio, x.deadline_ns, x.stop_at_eos,
           x.stop_tokens, x.generated);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, planned_seq& x) {
  return f(caf::meta::type_name("planned_seq"), x.id, x.start_pos, x.tokens, x.new_blocks, x.sample, x.step,
           x.is_new, x.history);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampled_token& x) {
  return f(caf::meta::type_name("sampled_token"), x.id, x.token, x.index);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, finished_seq& x) {
  return f(caf::meta::type_name("finished_seq"), x.id, x.reason, x.n_generated, x.message);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, serve_request& x) {
  return f(caf::meta::type_name("serve_request"), x.prompt, x.prompt_tokens, x.max_tokens, x.sampling, x.stop_at_eos,
           x.stop, x.prio, x.deadline_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_chunk& x) {
  return f(caf::meta::type_name("stream_chunk"), x.id, x.text, x.ids);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stream_end& x) {
  return f(caf::meta::type_name("stream_end"), x.id, x.reason, x.error, x.message, x.prompt_tokens,
           x.completion_tokens, x.stop_string);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sequence_request& x) {
  return f(caf::meta::type_name("sequence_request"), x.spec, x.sampling, x.sink);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, scheduler_stats& x) {
  return f(caf::meta::type_name("scheduler_stats"), x.n_blocks, x.n_free_blocks, x.n_waiting, x.n_running,
           x.n_in_flight, x.n_preemptions, x.n_steps, x.n_step_tokens, x.n_step_requests, x.step_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, new_sequence& x) {
  return f(caf::meta::type_name("new_sequence"), x.id, x.history, x.sampling, x.sink, x.stop_ids);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_request& x) {
  return f(caf::meta::type_name("step_request"), x.micro_batch, x.released, x.added, x.work, x.n_steps, x.generation);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, hidden_states& x) {
  return f(caf::meta::type_name("hidden_states"), x.n_tokens, x.dim, x.data, x.tag, x.stage_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_result& x) {
  return f(caf::meta::type_name("step_result"), x.micro_batch, x.tokens, x.stage_ns);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_batch& x) {
  return f(caf::meta::type_name("token_batch"), x.tokens);
}

// ---- actor interfaces ------------------------------------------------------------------------

/// The PIPELINE STAGE actor interface: owns the weights and KV cache of [first_layer, last_layer).
using stage_actor = caf::typed_actor<
  // First stage: embed the micro-batch's tokens, run its layers, pass on (or sample if also last).
  caf::replies_to<step_atom, step_request>::with<step_result>,
  // Later stages: run the layers on the previous stage's activations, pass on or sample.
  caf::replies_to<hidden_atom, step_request, hidden_states>::with<step_result>>;

using restart_atom = caf::atom_constant<caf::atom("restart")>;
using join_atom = caf::atom_constant<caf::atom("join")>;
using lost_atom = caf::atom_constant<caf::atom("lost")>;
using wait_atom = caf::atom_constant<caf::atom("wait")>;
using node_down_atom = caf::atom_constant<caf::atom("nodedown")>;

/// A REPLICA's own view of itself, for status.
struct replica_report {
  std::string state;        // running | recovering | failed
  std::string reason;       // why it is recovering or failed; when running, why its chain was last rebuilt
  uint64_t generation = 0;  // of its chain (1: the first)
  std::vector<double> stage_step_ms;  // [stage] median compute time per forward pass over its last 32
                                      // steps (since the chain was built); -1: not measured yet
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_report& x) {
  return f(caf::meta::type_name("replica_report"), x.state, x.reason, x.generation, x.stage_step_ms);
}

/// The REPLICA actor interface: one copy of the model as a chain of stages. It watches its stages
/// (monitors, and the progress of each step); when one is lost it fails the steps in flight with
/// `interrupted` and asks the SUPERVISOR for a new chain.
using replica_actor = caf::typed_actor<
  // Run one micro-batch through all stages; the reply comes from the last stage. While the
  // replica is recovering: error interrupted; once it gave up: error failed.
  caf::replies_to<step_atom, step_request>::with<step_result>,
  // Replies (with the chain's generation) once the replica can take steps again; error failed
  // when it cannot recover.
  caf::replies_to<wait_atom>::with<uint64_t>,
  // A stage of this replica is lost (its node is down, from the SUPERVISOR): rebuild the chain.
  caf::reacts_to<lost_atom, std::string>,
  // Its state and its stages' step times (status).
  caf::replies_to<stats_atom>::with<replica_report>,
  // Check the steps in flight for progress (self-sent, delayed).
  caf::reacts_to<watchdog_atom>>;

/// How a replica is doing, as the SUPERVISOR sees it (console, tests, status lines).
struct replica_health {
  int32_t replica = 0;
  std::string state;          // running | recovering | failed
  uint64_t generation = 0;    // chains built for it (1: the first)
  int32_t restarts = 0;       // rebuilt chains since start
  std::string last_reason;    // why the last rebuild happened (or why it failed)
  std::vector<std::string> nodes;  // where each stage runs now ("" : the head / this process)
};
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_health& x) {
  return f(caf::meta::type_name("replica_health"), x.replica, x.state, x.generation, x.restarts, x.last_reason, x.nodes);
}

/// The SUPERVISOR actor interface (actors/supervisor.hpp): rebuilds the chains of replicas that
/// lost a stage, within a restart budget, and tells replicas when a node of theirs is down.
using supervisor_actor = caf::typed_actor<
  // Replica R lost a stage (reason): build its chain anew; replies with the new stages (front to
  // back), or an error when it cannot (restart budget spent, no node for a stage in time).
  caf::replies_to<restart_atom, int32_t, std::string>::with<std::vector<stage_actor>>,
  // A node is down (the head's heartbeats): every replica with a stage there is told (lost).
  caf::reacts_to<node_down_atom, std::string>,
  // Replica R is this actor, its stages on these nodes (told once, after it is spawned; a replica
  // added at run time is supervised from then on).
  caf::reacts_to<join_atom, int32_t, replica_actor, std::vector<std::string>>,
  // Every replica's health.
  caf::replies_to<stats_atom>::with<std::vector<replica_health>>>;

/// The SCHEDULER actor interface: continuous batching for one replica.
using scheduler_actor = caf::typed_actor<
  // Queue a sequence; replies with its id, or an error (overloaded, too_long, invalid_request).
  caf::replies_to<admit_atom, sequence_request>::with<request_id>,
  // Drop a sequence and free its KV blocks now.
  caf::reacts_to<cancel_atom, request_id>,
  // Plan and send micro-batches while the pipeline has room (self-sent).
  caf::reacts_to<schedule_atom>,
  // Fail the micro-batches in flight for longer than the step timeout (self-sent, delayed).
  caf::reacts_to<watchdog_atom>,
  // Counters for tests and metrics.
  caf::replies_to<stats_atom>::with<scheduler_stats>>;

/// Where the ROUTER streams one request's output: a gateway's relay (or a test's client).
using stream_client_actor = caf::typed_actor<
  // Tokens produced since the previous chunk, and the text they completed.
  caf::reacts_to<stream_chunk>,
  // The last message of the stream (also after a refusal or failure).
  caf::reacts_to<stream_end>>;

/// The relay actor interface (actors/stream_relay.*): carries one request of a gateway to the
/// ROUTER and its stream back to the gateway's transport::stream_sink.
using relay_actor = stream_client_actor::extend<
  // The client cancelled the request.
  caf::reacts_to<cancel_atom>>;

/// The ROUTER actor interface: the front door (and the token sink of its requests).
using router_actor = token_sink_actor::extend<
  // A completion request; replies with the request's id once a replica accepted it, else an
  // error. stream_chunk messages and one stream_end then go to `client`, which the ROUTER
  // monitors: a client that goes away cancels its requests.
  caf::replies_to<generate_atom, serve_request, stream_client_actor>::with<request_id>,
  // Cancel a request (its client gets stream_end with reason cancelled).
  caf::reacts_to<cancel_atom, request_id>,
  // The schedulers' counters, one per replica.
  caf::replies_to<stats_atom>::with<std::vector<scheduler_stats>>>;

// ---- nodes of a multi-host cluster: worker NODE <-> head -------------------------------------
// Every connection between `troupe node` processes passes a gate first: only peers that prove
// the cluster secret get through (transport/control_gate.hpp); CAF's OpenSSL module runs inside
// the gates only with [cluster] control_tls (docs/operations.md, "Security between nodes").
using place_atom = caf::atom_constant<caf::atom("place")>;
using release_atom = caf::atom_constant<caf::atom("release")>;
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using retire_atom = caf::atom_constant<caf::atom("retire")>;

/// A worker introducing itself to the head.
struct node_hello {
  std::string name;  // its [[nodes]] name
  int32_t pid = 0;   // its process id (status lines)
};

/// What a NODE needs to start one PIPELINE STAGE: which layers of which file, how large a KV
/// cache, and where its activations go (the next stage's handle; its data plane when that stage
/// runs in another process).
struct stage_placement {
  int32_t replica = 0;
  int32_t index = 0;
  std::string model_path;
  int32_t first_layer = 0;
  int32_t last_layer = 0;
  int32_t threads = 1;
  int32_t block_size = 16;
  int32_t n_blocks = 256;
  uint32_t link_id = 0;            // this stage's outgoing link (part of each data-plane tag)
  stage_actor next;                // invalid for the last stage
  std::string next_data_host;      // the next stage's data plane; empty: in this NODE's process
  int32_t next_data_port = 0;
  int32_t next_control_port = 0;   // the next stage's node's gate when that node is another worker
                                   // (connect to it directly: CAF would relay through the head)
  int32_t data_timeout_ms = 10'000;
  uint64_t generation = 1;         // the replica's chain this stage belongs to: a NODE stops the
                                   // stage of an older generation at the same (replica, index)
};

/// The chain each replica runs now (its generation, by replica index; 0: none known). A NODE
/// stops every stage it holds of an older generation: a rebuilt chain may place a stage on
/// another node than before, and the old one would live on where nothing sends it steps.
struct chain_generations {
  std::vector<uint64_t> current;
};

/// A stage a NODE started, and the process that runs it.
struct placed_stage {
  stage_actor stage;
  int32_t pid = 0;
};

/// The NODE actor of a worker: starts and stops the stages the head places on it.
using node_actor = caf::typed_actor<
  // Load the layers and start the stage; replies once it can take steps.
  caf::replies_to<place_atom, stage_placement>::with<placed_stage>,
  // Stop every stage of this node (the head failed to start, or is starting again).
  caf::reacts_to<release_atom>,
  // Stop the stages of chains older than these (after a rebuild, and when the node joins).
  caf::reacts_to<retire_atom, chain_generations>,
  // The head's heartbeat (every ~300 ms); replies with this node's pid.
  caf::replies_to<ping_atom>::with<int32_t>>;

/// What the head knows of a node.
struct node_state {
  std::string name;
  int32_t pid = 0;
  bool up = false;  // joined and not lost since
  node_actor handle;
  int64_t last_heartbeat_ms = -1;  // ms since it last answered a heartbeat (or joined), as of the reply
};

/// The head's door for workers.
using head_actor = caf::typed_actor<
  // A worker joins (again, after a restart of either side); replies with the head's pid.
  caf::replies_to<join_atom, node_hello, node_actor>::with<int32_t>,
  // The workers joined so far, and whether they are still up.
  caf::replies_to<nodes_atom>::with<std::vector<node_state>>,
  // Send heartbeats to the nodes (self-sent, delayed).
  caf::reacts_to<watchdog_atom>,
  // Tell this SUPERVISOR (node_down) whenever a joined node is lost.
  caf::reacts_to<subscribe_atom, supervisor_actor>,
  // Replica R's chain is at generation G now: every node up (and every node that joins later)
  // stops what it still holds of R's older chains.
  caf::reacts_to<retire_atom, int32_t, uint64_t>>;

/// The NODE actor as its own process sees it: it also joins the head (and watches it from then on).
using local_node_actor = node_actor::extend<
  // Join this head; replies with its pid.
  caf::replies_to<join_atom, head_actor, node_hello>::with<int32_t>>;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_hello& x) {
  return f(caf::meta::type_name("node_hello"), x.name, x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stage_placement& x) {
  return f(caf::meta::type_name("stage_placement"), x.replica, x.index, x.model_path, x.first_layer, x.last_layer,
           x.threads, x.block_size, x.n_blocks, x.link_id, x.next, x.next_data_host, x.next_data_port, x.next_control_port,
           x.data_timeout_ms, x.generation);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, chain_generations& x) {
  return f(caf::meta::type_name("chain_generations"), x.current);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, placed_stage& x) {
  return f(caf::meta::type_name("placed_stage"), x.stage, x.pid);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_state& x) {
  return f(caf::meta::type_name("node_state"), x.name, x.pid, x.up, x.handle, x.last_heartbeat_ms);
}

// ---- ADMIN CONSOLE: operators see and steer a running cluster (actors/admin_console.*) ----------
// The console (`troupe admin`), the status page and tests all go through these messages. Every
// command carries the caller (admin token + who, for the audit log); the ADMIN refuses it without
// the right token. Replicas are named by their index, stages by "REPLICA.STAGE".
using status_atom = caf::atom_constant<caf::atom("status")>;
using requests_atom = caf::atom_constant<caf::atom("requests")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;
using undrain_atom = caf::atom_constant<caf::atom("undrain")>;
using weight_atom = caf::atom_constant<caf::atom("weight")>;
using rollout_atom = caf::atom_constant<caf::atom("rollout")>;
using rollback_atom = caf::atom_constant<caf::atom("rollback")>;
using add_replica_atom = caf::atom_constant<caf::atom("addrep")>;
using remove_replica_atom = caf::atom_constant<caf::atom("rmrep")>;
using restart_atom = caf::atom_constant<caf::atom("restart")>;
using log_level_atom = caf::atom_constant<caf::atom("loglevel")>;
using config_atom = caf::atom_constant<caf::atom("config")>;
using audit_atom = caf::atom_constant<caf::atom("audit")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using events_atom = caf::atom_constant<caf::atom("events")>;

/// Why the ADMIN refused a command; carried as caf::error (category "admin").
enum class admin_errc : uint8_t {
  none = 0,
  unauthorized = 1,   // no or a wrong admin token (or no token configured on this server)
  bad_argument = 2,   // no such replica / stage / request, a weight out of range, ...
  refused = 3,        // not now (the last replica taking traffic, a replica not idle, ...)
  not_supported = 4,  // not in this build / on this kind of node (restart STAGE without a SUPERVISOR)
  failed = 5,         // tried and failed (a new replica could not start)
};
const char* admin_errc_name(admin_errc c);
caf::error make_error(admin_errc c, std::string message);

/// Who sends an admin command: the token it presented and a description for the audit log
/// ("tcp 127.0.0.1:40312 client=troupe-admin", "http 127.0.0.1:5123", "test").
struct admin_caller {
  std::string token;
  std::string who;
};

/// The ROUTER's view of one replica (its routing state and what it measured on the tokens).
struct replica_route {
  int32_t index = 0;
  std::string state;    // active | standby (weight 0) | draining | idle (drained) | removing | removed
  double weight = 1.0;  // relative share of new requests (weighted routing)
  bool draining = false;
  int32_t in_flight = 0;             // requests routed here and not finished
  int32_t consecutive_failures = 0;  // failed requests in a row (any success resets it)
  int64_t n_failures = 0;
  int64_t n_completed = 0;
  double tok_per_s = 0;              // tokens streamed over the last 10 s, per second
  double ttft_p50_ms = 0, ttft_p99_ms = 0;  // receipt to first token, over the last minute
  double itl_p50_ms = 0, itl_p99_ms = 0;    // between tokens of a request, over the last minute
  int32_t n_ttft_samples = 0;
};

/// One request in flight, as the ROUTER sees it.
struct request_info {
  request_id id{};
  int32_t replica = 0;
  int64_t age_ms = 0;
  int32_t prompt_tokens = 0;
  int32_t tokens = 0;  // generated so far
  int32_t retries = 0;  // times moved to another replica after a failure before its first token
};

/// When the ROUTER takes a replica's weight to 0 by itself (automatic rollback).
struct rollback_policy {
  int32_t max_consecutive_failures = 5;  // 0: off
  double ttft_p99_ms = 0;                // 0: off; else a p99 over this (with min_samples) rolls back
  int32_t min_samples = 20;
};

/// Something that happened to the cluster, for the console and the status page.
struct admin_event {
  int64_t unix_ms = 0;
  std::string kind;     // rollback | drained | replica_added | replica_removed | rollout | weight | ...
  int32_t replica = -1;
  std::string message;
};

/// One stage, for status.
struct stage_status {
  int32_t replica = 0;
  int32_t index = 0;
  std::string node;  // where it runs (the node's name; "local" in `troupe serve`)
  int32_t pid = 0;
  int32_t first_layer = 0;
  int32_t last_layer = 0;
  double step_ms = -1;   // median compute time per forward pass over its last 32 steps; -1: not measured yet
  int32_t restarts = 0;  // times the SUPERVISOR started it anew (a rebuild restarts every stage of the chain)
};

/// One node, for status.
struct node_status {
  std::string name;
  std::string address;
  std::string role;  // head | worker | spare | local
  bool up = false;
  int32_t pid = 0;
  int64_t last_heartbeat_ms = -1;  // ms since it last answered the head's heartbeat (the head: 0); -1: never
};

/// A replica in status: the ROUTER's view plus its SCHEDULER's counters.
struct replica_status {
  replica_route route;
  int32_t n_waiting = 0;
  int32_t n_running = 0;
  int32_t kv_blocks_used = 0;
  int32_t kv_blocks_free = 0;
  double step_ms = -1;  // one step through all its stages (the SCHEDULER's last measure); -1: none yet
  std::string health = "running";  // its chain (the REPLICA's view): running | recovering | failed;
                                   // stopped (removed), unknown (its REPLICA did not answer)
  std::string reason;              // why it is recovering or failed; when running, why it was last rebuilt
  int32_t restarts = 0;            // chains the SUPERVISOR rebuilt for it since start
};

/// One point of a replica's history (the status page's charts).
struct replica_sample {
  int64_t unix_ms = 0;
  int32_t replica = 0;
  double tok_per_s = 0;
  double ttft_p99_ms = 0;
  double itl_p99_ms = 0;
  int32_t in_flight = 0;
};

/// What `status` shows.
struct cluster_status {
  std::string model;
  int64_t unix_ms = 0;
  int64_t uptime_ms = 0;
  std::vector<node_status> nodes;
  std::vector<replica_status> replicas;
  std::vector<stage_status> stages;
  std::vector<admin_event> events;          // the most recent last
  std::vector<replica_sample> history;      // with status_options::history
  rollback_policy rollback;
};

struct status_options {
  bool history = false;  // include the samples of the last minutes (the status page's charts)
};

/// `rollout REPLICA`: raise its weight by `step` every `interval_ms` until `target`; a rollback
/// stops it.
struct rollout_plan {
  int32_t replica = 0;
  double target = 1.0;
  double step = 0.1;
  int32_t interval_ms = 10'000;
};

/// `replica add`: the new replica's weight and where its stages run.
struct replica_add_plan {
  double weight = 1.0;
  std::vector<std::string> nodes;  // one per stage, or one for every stage; empty: the spare nodes
                                   // that are up (a multi-host head), this process (`troupe serve`)
};

/// An entry of the audit log: who did what, when, and how it went.
struct audit_entry {
  int64_t unix_ms = 0;
  std::string who;
  std::string command;
  std::string outcome;  // "ok" or the refusal / error
};

/// The ROUTER's admin interface (the ADMIN is its only user): routing state per replica.
using router_admin_actor = caf::typed_actor<
  // Every replica's routing state and measurements.
  caf::replies_to<status_atom>::with<std::vector<replica_route>>,
  // Requests in flight.
  caf::replies_to<requests_atom>::with<std::vector<request_info>>,
  // Drain (true) or undrain (false) a replica: no new requests; in-flight ones finish.
  caf::replies_to<drain_atom, int32_t, bool>::with<replica_route>,
  // Set a replica's weight (>= 0); replies with its state.
  caf::replies_to<weight_atom, int32_t, double>::with<replica_route>,
  // A new replica behind this SCHEDULER (drained, weight 0 until set); replies with its index.
  caf::replies_to<add_replica_atom, scheduler_actor, double>::with<int32_t>,
  // Forget an idle replica (drained, nothing in flight): no more requests, stats, cancels.
  caf::replies_to<remove_replica_atom, int32_t>::with<replica_route>,
  // Set the automatic rollback's thresholds (fields < 0: unchanged); replies with them.
  caf::replies_to<rollback_atom, rollback_policy>::with<rollback_policy>,
  // The ROUTER's recent events (rollbacks), oldest first.
  caf::replies_to<events_atom>::with<std::vector<admin_event>>>;

/// The ROUTER as spawned: the front door plus the admin interface.
using full_router_actor = router_actor::extend_with<router_admin_actor>;

/// The ADMIN actor interface: operator commands. Each replies with the new state or a message, or
/// an error of category "admin" (unauthorized, bad_argument, refused, not_supported, failed).
using admin_actor = caf::typed_actor<
  // Nodes, replicas, stages, recent events (and the charts' history).
  caf::replies_to<status_atom, admin_caller, status_options>::with<cluster_status>,
  // Requests in flight.
  caf::replies_to<requests_atom, admin_caller>::with<std::vector<request_info>>,
  // Cancel a request in flight.
  caf::replies_to<cancel_atom, admin_caller, request_id>::with<std::string>,
  // Drain a replica (no new requests, in-flight ones finish, then idle) / take it back.
  caf::replies_to<drain_atom, admin_caller, int32_t>::with<std::string>,
  caf::replies_to<undrain_atom, admin_caller, int32_t>::with<std::string>,
  // Set a replica's weight.
  caf::replies_to<weight_atom, admin_caller, int32_t, double>::with<std::string>,
  // Raise a (canary) replica's weight step by step.
  caf::replies_to<rollout_atom, admin_caller, rollout_plan>::with<std::string>,
  // Weight 0 now (what the automatic rollback does).
  caf::replies_to<rollback_atom, admin_caller, int32_t>::with<std::string>,
  // Start a replica with the same model and stage layout (weight and nodes given); replies with a
  // message naming its index and nodes.
  caf::replies_to<add_replica_atom, admin_caller, replica_add_plan>::with<std::string>,
  // Drain a replica, then stop it.
  caf::replies_to<remove_replica_atom, admin_caller, int32_t>::with<std::string>,
  // Restart a stage (the SUPERVISOR's path).
  caf::replies_to<restart_atom, admin_caller, int32_t, int32_t>::with<std::string>,
  // Set the log level of every logger ("info", "debug", ...) or of one ("actors=debug").
  caf::replies_to<log_level_atom, admin_caller, std::string>::with<std::string>,
  // The effective configuration (JSON text).
  caf::replies_to<config_atom, admin_caller>::with<std::string>,
  // The automatic rollback's thresholds: read (all fields < 0: unchanged) and set.
  caf::replies_to<rollback_atom, admin_caller, rollback_policy>::with<rollback_policy>,
  // The audit log's most recent entries.
  caf::replies_to<audit_atom, admin_caller>::with<std::vector<audit_entry>>,
  // Sample the ROUTER, step rollouts, finish removals (self-sent, delayed).
  caf::reacts_to<tick_atom>>;

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, admin_caller& x) {
  return f(caf::meta::type_name("admin_caller"), x.token, x.who);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_route& x) {
  return f(caf::meta::type_name("replica_route"), x.index, x.state, x.weight, x.draining, x.in_flight,
           x.consecutive_failures, x.n_failures, x.n_completed, x.tok_per_s, x.ttft_p50_ms, x.ttft_p99_ms,
           x.itl_p50_ms, x.itl_p99_ms, x.n_ttft_samples);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_info& x) {
  return f(caf::meta::type_name("request_info"), x.id, x.replica, x.age_ms, x.prompt_tokens, x.tokens, x.retries);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rollback_policy& x) {
  return f(caf::meta::type_name("rollback_policy"), x.max_consecutive_failures, x.ttft_p99_ms, x.min_samples);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, admin_event& x) {
  return f(caf::meta::type_name("admin_event"), x.unix_ms, x.kind, x.replica, x.message);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stage_status& x) {
  return f(caf::meta::type_name("stage_status"), x.replica, x.index, x.node, x.pid, x.first_layer, x.last_layer,
           x.step_ms, x.restarts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("node_status"), x.name, x.address, x.role, x.up, x.pid, x.last_heartbeat_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_status& x) {
  return f(caf::meta::type_name("replica_status"), x.route, x.n_waiting, x.n_running, x.kv_blocks_used,
           x.kv_blocks_free, x.step_ms, x.health, x.reason, x.restarts);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_sample& x) {
  return f(caf::meta::type_name("replica_sample"), x.unix_ms, x.replica, x.tok_per_s, x.ttft_p99_ms, x.itl_p99_ms,
           x.in_flight);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_status& x) {
  return f(caf::meta::type_name("cluster_status"), x.model, x.unix_ms, x.uptime_ms, x.nodes, x.replicas, x.stages,
           x.events, x.history, x.rollback);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, status_options& x) {
  return f(caf::meta::type_name("status_options"), x.history);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, rollout_plan& x) {
  return f(caf::meta::type_name("rollout_plan"), x.replica, x.target, x.step, x.interval_ms);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, replica_add_plan& x) {
  return f(caf::meta::type_name("replica_add_plan"), x.weight, x.nodes);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, audit_entry& x) {
  return f(caf::meta::type_name("audit_entry"), x.unix_ms, x.who, x.command, x.outcome);
}

}  // namespace troupe::actors
