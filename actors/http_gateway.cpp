#include "actors/http_gateway.hpp"

#include <functional>
#include <optional>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/admin_commands.hpp"
#include "actors/logger.hpp"
#include "actors/tcp_gateway.hpp"
#include "transport/status_page.hpp"
#include "transport/task_store.hpp"

namespace troupe::actors {

using transport::api_completion;
using transport::api_error;
using transport::api_kind;
using transport::http_response;
using json = nlohmann::json;

struct http_gateway::shared {
  explicit shared(const http_gateway_options& o)
      : tasks(o.task_ttl, o.max_finished_tasks, o.max_active_tasks), keys(o.api_keys) {}
  transport::serve_metrics metrics;
  transport::task_store tasks;
  std::shared_ptr<transport::api_key_set> keys;  // null: no keys

  /// A finished request's tokens (prompt + generated), charged to its key.
  void charge(const transport::api_key* key, uint64_t n_tokens) {
    if (key != nullptr && keys && n_tokens > 0) keys->charge_tokens(*key, n_tokens);
  }
};

namespace {

using clock = std::chrono::steady_clock;

// Tasks run on no HTTP connection: their relays live under this connection id.
constexpr uint64_t task_connection = 0;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// The HTTP status and error object for a client-protocol error.
api_error http_error(transport::errc code, std::string message) {
  api_error e{500, std::move(message), "", "", transport::errc_name(code)};
  switch (code) {
    case transport::errc::invalid_request:
    case transport::errc::unknown_field:
    case transport::errc::max_tokens_too_large: e.status = 400; break;
    case transport::errc::prompt_too_long:
      e.status = 400;
      e.code = "context_length_exceeded";
      break;
    case transport::errc::overloaded:
    case transport::errc::shutting_down: e.status = 503; break;
    case transport::errc::deadline_exceeded: e.status = 504; break;
    default: e.status = 500; break;
  }
  return e;
}

http_response json_response(int status, std::string body) {
  return http_response{status, "application/json", std::move(body), {}};
}

http_response error_response(const api_error& e) {
  http_response r = json_response(e.status, transport::error_body(e));
  if (e.status == 503) r.headers.push_back({"retry-after", "1"});
  return r;
}

// Counts every answer by route and status.
class counted_responder final : public transport::http_responder {
 public:
  counted_responder(std::shared_ptr<transport::http_responder> inner, std::string route,
                    std::shared_ptr<http_gateway::shared> sh)
      : inner_(std::move(inner)), route_(std::move(route)), shared_(std::move(sh)) {}
  transport::connection_id connection() const override { return inner_->connection(); }
  uint64_t request_number() const override { return inner_->request_number(); }
  bool respond(http_response r) override {
    shared_->metrics.count_request(route_, r.status);
    return inner_->respond(std::move(r));
  }
  bool start_stream(int status, std::string content_type) override {
    shared_->metrics.count_request(route_, status);
    return inner_->start_stream(status, std::move(content_type));
  }
  bool write(std::string data) override { return inner_->write(std::move(data)); }
  bool end() override { return inner_->end(); }
  bool closed() const override { return inner_->closed(); }

 private:
  std::shared_ptr<transport::http_responder> inner_;
  std::string route_;
  std::shared_ptr<http_gateway::shared> shared_;
};

// Latency metrics of one generating request.
struct token_clock {
  clock::time_point received = clock::now();
  clock::time_point last{};
  bool first = true;

  void on_chunk(transport::serve_metrics& m, size_t n_ids) {
    if (n_ids == 0) return;
    const auto now = clock::now();
    if (first) {
      m.observe_ttft(std::chrono::duration<double>(now - received).count());
      if (n_ids > 1) m.observe_inter_token(0, n_ids - 1);
      first = false;
    } else {
      m.observe_inter_token(std::chrono::duration<double>(now - last).count() / double(n_ids), n_ids);
    }
    last = now;
  }
};

// One /v1/completions, /v1/chat/completions or /v1/inference request: the relay's stream as
// OpenAI JSON (collected) or Server-Sent Events (streamed).
class http_stream_sink final : public transport::stream_sink {
 public:
  http_stream_sink(std::shared_ptr<transport::http_responder> out, std::shared_ptr<http_gateway::shared> sh,
                   api_kind kind, bool stream, bool include_usage, api_completion base, const transport::api_key* key)
      : out_(std::move(out)), shared_(std::move(sh)), kind_(kind), stream_(stream), include_usage_(include_usage),
        key_(key), c_(std::move(base)) {
    if (stream_) text_event_ = transport::make_chunk_template(c_, kind_ == api_kind::chat);
  }
  ~http_stream_sink() override {
    if (ended_) return;
    if (out_->closed()) {
      shared_->metrics.count_outcome("cancelled");  // the client went away: its relay was stopped
    } else {
      send_error(transport::errc::internal, "the request ended without a result");
    }
  }

  transport::connection_id connection() const override { return out_->connection(); }
  uint64_t request_id() const override { return out_->request_number(); }

  bool send_chunk(std::string text, std::vector<int32_t> ids) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    clock_.on_chunk(shared_->metrics, ids.size());
    if (!stream_) {
      c_.text += text;
      return !out_->closed();
    }
    if (text.empty()) return !out_->closed();
    start();
    return out_->write(chunk(text, ""));
  }

  bool send_final(transport::final_frame f) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    c_.finish_reason = transport::api_finish_reason(f.reason);
    c_.prompt_tokens = f.prompt_tokens;
    c_.completion_tokens = f.completion_tokens;
    shared_->metrics.count_tokens(f.prompt_tokens, f.completion_tokens);
    shared_->charge(key_, uint64_t(f.prompt_tokens) + f.completion_tokens);
    shared_->metrics.count_outcome(f.reason == transport::finish_reason::cancelled ? "cancelled" : c_.finish_reason);
    if (!stream_) {
      std::string body = kind_ == api_kind::chat        ? transport::chat_body(c_)
                         : kind_ == api_kind::inference ? transport::inference_body(c_)
                                                        : transport::completion_body(c_);
      return out_->respond(json_response(200, std::move(body)));
    }
    start();
    std::string tail = chunk("", c_.finish_reason);
    if (include_usage_) tail += transport::usage_chunk_event(c_, kind_ == api_kind::chat);
    tail += transport::done_event;
    out_->write(std::move(tail));
    return out_->end();
  }

  bool send_error(transport::errc code, std::string message) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    shared_->metrics.count_outcome(code == transport::errc::cancelled ? "cancelled" : "error");
    const api_error e = http_error(code, std::move(message));
    if (!started_) return out_->respond(error_response(e));
    // Too late for a status code: an error event, then the end of the stream.
    out_->write(transport::error_event(e) + std::string(transport::done_event));
    return out_->end();
  }

  bool closed() const override {
    std::lock_guard lock(mu_);
    return ended_ || out_->closed();
  }

 private:
  // mu_ held. The status line goes out with the first text (an early refusal still gets a 4xx/5xx).
  void start() {
    if (started_) return;
    started_ = true;
    out_->start_stream(200, "text/event-stream");
  }
  std::string chunk(std::string_view text, std::string_view reason) {
    if (kind_ == api_kind::chat) {
      const bool role = !role_sent_;
      role_sent_ = true;
      if (!role && reason.empty()) return text_event_.event(text);
      return transport::chat_chunk_event(c_, role, text, reason);
    }
    if (reason.empty()) return text_event_.event(text);
    return transport::completion_chunk_event(c_, text, reason);
  }

  std::shared_ptr<transport::http_responder> out_;
  std::shared_ptr<http_gateway::shared> shared_;
  const api_kind kind_;
  const bool stream_;
  const bool include_usage_;
  const transport::api_key* key_;  // null: no keys in use
  mutable std::mutex mu_;
  api_completion c_;
  transport::chunk_template text_event_;
  token_clock clock_;
  bool started_ = false;
  bool role_sent_ = false;
  bool ended_ = false;
};

// One /v1/tasks task: the relay's stream into the task store.
class task_sink final : public transport::stream_sink {
 public:
  task_sink(std::string id, uint64_t number, std::shared_ptr<http_gateway::shared> sh, const transport::api_key* key)
      : id_(std::move(id)), number_(number), shared_(std::move(sh)), key_(key) {}
  ~task_sink() override {
    if (!ended_) send_error(transport::errc::internal, "the task ended without a result");
  }

  transport::connection_id connection() const override { return transport::connection_id{task_connection}; }
  uint64_t request_id() const override { return number_; }

  bool send_chunk(std::string text, std::vector<int32_t> ids) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    clock_.on_chunk(shared_->metrics, ids.size());
    shared_->tasks.add_text(id_, text);
    return true;
  }
  bool send_final(transport::final_frame f) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    shared_->metrics.count_tokens(f.prompt_tokens, f.completion_tokens);
    shared_->charge(key_, uint64_t(f.prompt_tokens) + f.completion_tokens);
    transport::task_record r = current().value_or(transport::task_record{});
    shared_->metrics.count_outcome(f.reason == transport::finish_reason::cancelled
                                     ? "cancelled"
                                     : transport::api_finish_reason(f.reason));
    r.status = f.reason == transport::finish_reason::cancelled ? transport::task_status::cancelled
                                                               : transport::task_status::done;
    r.finish_reason = transport::api_finish_reason(f.reason);
    r.prompt_tokens = f.prompt_tokens;
    r.completion_tokens = f.completion_tokens;
    shared_->tasks.finish(id_, std::move(r));
    return true;
  }
  bool send_error(transport::errc code, std::string message) override {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    ended_ = true;
    transport::task_record r = current().value_or(transport::task_record{});
    shared_->metrics.count_outcome(code == transport::errc::cancelled ? "cancelled" : "error");
    r.status = code == transport::errc::cancelled ? transport::task_status::cancelled : transport::task_status::failed;
    r.error_code = transport::errc_name(code);
    r.error_message = std::move(message);
    shared_->tasks.finish(id_, std::move(r));
    return true;
  }
  bool closed() const override {
    std::lock_guard lock(mu_);
    return ended_;
  }

 private:
  std::optional<transport::task_record> current() { return shared_->tasks.get(id_); }

  const std::string id_;
  const uint64_t number_;
  std::shared_ptr<http_gateway::shared> shared_;
  const transport::api_key* key_;
  mutable std::mutex mu_;
  token_clock clock_;
  bool ended_ = false;
};

std::string task_json(const transport::task_record& t) {
  json j{{"task_id", t.id}, {"status", transport::task_status_name(t.status)}, {"created", t.created}};
  if (t.status == transport::task_status::done || t.status == transport::task_status::cancelled) {
    j["result"] = {{"generated_text", t.text},
                   {"finish_reason", t.finish_reason},
                   {"prompt_tokens", t.prompt_tokens},
                   {"completion_tokens", t.completion_tokens}};
  }
  if (!t.error_code.empty()) j["error"] = {{"code", t.error_code}, {"message", t.error_message}};
  return dump(j);
}

// Asks the ROUTER for the SCHEDULERs' stats from a short-lived actor (never blocks an I/O thread).
void with_stats(caf::actor_system& sys, const router_actor& router, std::chrono::milliseconds timeout,
                std::function<void(std::optional<std::vector<scheduler_stats>>)> done) {
  sys.spawn([router, timeout, done = std::move(done)](caf::event_based_actor* self) {
    self->request(router, timeout, stats_atom::value)
      .then([done](std::vector<scheduler_stats>& s) { done(std::move(s)); },
            [done](caf::error&) { done(std::nullopt); });
  });
}

}  // namespace

http_gateway::http_gateway(caf::actor_system& sys, router_actor router, http_gateway_options options,
                           std::shared_ptr<const engine::tokenizer> tokenizer)
    : sys_(sys),
      router_(std::move(router)),
      options_(std::move(options)),
      tokenizer_(std::move(tokenizer)),
      registry_(std::make_shared<relay_registry>()),
      shared_(std::make_shared<shared>(options_)) {}

http_gateway::~http_gateway() { registry_->stop_all(); }

size_t http_gateway::n_in_progress() const { return registry_->size(); }

void http_gateway::on_disconnect(transport::connection_id connection) {
  registry_->stop_connection(uint64_t(connection));
}

void http_gateway::on_request(std::shared_ptr<transport::http_responder> raw, transport::http_request request) {
  const std::string& p = request.path;
  const std::string& m = request.method;
  // Which route, and the methods it takes.
  static const std::string tasks_prefix = "/v1/tasks/";
  std::string pattern = p;
  const char* allow = nullptr;
  const bool admin_route = p == "/" || p == "/admin/status" || p == "/admin/command";
  if (p == "/health" || p == "/ready" || p == "/metrics" || p == "/v1/models" || p == "/" || p == "/admin/status") {
    allow = "GET";
  } else if (p == "/admin/command") {
    allow = "POST";
  } else if (p == "/v1/completions" || p == "/v1/chat/completions" || p == "/v1/inference" || p == "/v1/tasks") {
    allow = "POST";
  } else if (p.size() > tasks_prefix.size() && p.rfind(tasks_prefix, 0) == 0 &&
             p.find('/', tasks_prefix.size()) == std::string::npos) {
    pattern = "/v1/tasks/{id}";
    allow = "GET, DELETE";
  }
  auto out = std::make_shared<counted_responder>(std::move(raw), allow ? pattern : "other", shared_);
  if (allow == nullptr) {
    out->respond(error_response(api_error{404, fmt::format("no route {}", transport::printable(p, 200)), "", "", "not_found"}));
    return;
  }
  const std::string allowed(allow);
  if ((", " + allowed + ",").find(" " + m + ",") == std::string::npos) {
    http_response r = error_response(
      api_error{405, fmt::format("{} does not take {} (allowed: {})", pattern, transport::printable(m), allowed), "",
                "", "method_not_allowed"});
    r.headers.push_back({"allow", allowed});
    out->respond(std::move(r));
    return;
  }
  if (admin_route) {  // the admin token, not API keys
    admin(out, request);
    return;
  }
  const bool keys_in_use = options_.api_keys && !options_.api_keys->empty();
  const transport::api_key* key = nullptr;
  if (keys_in_use && p != "/health" && p != "/ready" && p != "/metrics" && (key = authenticate(request)) == nullptr) {
    http_response r = error_response(api_error{
      401, request.header("authorization") ? "invalid API key" : "an API key is required (Authorization: Bearer KEY)",
      "", "", "invalid_api_key"});
    r.headers.push_back({"www-authenticate", "Bearer"});
    out->respond(std::move(r));
    return;
  }
  if (p == "/health") {
    out->respond(json_response(200, R"({"status":"ok"})"));
  } else if (p == "/ready") {
    ready(out);
  } else if (p == "/metrics") {
    metrics(out);
  } else if (p == "/v1/models") {
    out->respond(json_response(200, transport::models_body(options_.model_id, unix_now())));
  } else if (p == "/v1/completions") {
    generate(out, request, api_kind::completion, key);
  } else if (p == "/v1/chat/completions") {
    generate(out, request, api_kind::chat, key);
  } else if (p == "/v1/inference") {
    generate(out, request, api_kind::inference, key);
  } else if (p == "/v1/tasks") {
    create_task(out, request, key);
  } else {
    task(out, request, p.substr(tasks_prefix.size()));
  }
}

// The ADMIN CONSOLE over HTTP: the status page (no data in it: it asks /admin/status with the
// token the operator gives it), status as JSON, and any console command as JSON.
void http_gateway::admin(std::shared_ptr<transport::http_responder> out, const transport::http_request& request) {
  if (request.path == "/") {
    out->respond(http_response{200, "text/html; charset=utf-8", transport::status_page_html(),
                               {{"cache-control", "no-store"}}});
    return;
  }
  if (!options_.admin) {
    out->respond(error_response(api_error{404, "this server has no admin console", "", "", "not_found"}));
    return;
  }
  std::string token;
  static const std::string scheme = "Bearer ";
  if (const std::string* h = request.header("authorization"); h && h->compare(0, scheme.size(), scheme) == 0) {
    token = h->substr(scheme.size());
  }
  std::vector<std::string> words;
  if (request.path == "/admin/status") {
    words = {"status"};
    if (request.target.find("history=1") != std::string::npos) words.push_back("--history");
  } else {
    auto j = nlohmann::json::parse(request.body, nullptr, false);
    if (j.is_object() && j.contains("command") && j["command"].is_array()) {
      for (const auto& w : j["command"]) {
        if (w.is_string()) words.push_back(w.get<std::string>());
      }
    }
    if (words.empty() || words.size() > transport::max_admin_words) {
      out->respond(error_response(api_error{400, R"(the body must be {"command": ["WORD", ...]})", "", "command", ""}));
      return;
    }
  }
  const std::string who = fmt::format("http connection={} request={}", uint64_t(out->connection()),
                                      out->request_number());
  run_admin_command(sys_, options_.admin, admin_caller{token, who}, std::move(words), [out](admin_outcome o) {
    if (o.ok) {
      out->respond(json_response(200, o.json.empty() ? nlohmann::json{{"message", o.message}}.dump() : o.json));
      return;
    }
    const int status = o.code == "unauthorized" ? 401 : o.code == "not_supported" ? 501 : o.code == "failed" ? 500 : 400;
    http_response r = error_response(api_error{status, o.message, "", "", o.code});
    if (status == 401) r.headers.push_back({"www-authenticate", "Bearer"});
    out->respond(std::move(r));
  });
}

const transport::api_key* http_gateway::authenticate(const transport::http_request& request) const {
  const std::string* h = request.header("authorization");
  static const std::string scheme = "Bearer ";
  if (h == nullptr || h->size() <= scheme.size() || h->compare(0, scheme.size(), scheme) != 0) return nullptr;
  return options_.api_keys->find(std::string_view(*h).substr(scheme.size()));
}

bool http_gateway::admit(transport::http_responder& out, const transport::api_key* key) {
  if (key == nullptr) return true;
  auto limited = options_.api_keys->admit(*key);
  if (!limited) return true;
  const int64_t retry_s = limited->retry_after_s();
  logger().debug("rate limited http request={} key_name={} retry_after_ms={}", out.request_number(), key->name,
                 limited->retry_after.count());
  // OpenAI's shape for a rate limit: type "requests" or "tokens", code "rate_limit_exceeded".
  http_response r = error_response(api_error{
    429,
    fmt::format("API key '{}' is over its {} limit; retry in {} s", key->name,
                limited->tokens ? "tokens per minute" : "requests per minute", retry_s),
    limited->tokens ? "tokens" : "requests", "", "rate_limit_exceeded"});
  r.headers.push_back({"retry-after", std::to_string(retry_s)});
  out.respond(std::move(r));
  return false;
}

void http_gateway::generate(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
                            api_kind kind, const transport::api_key* key) {
  auto parsed = kind == api_kind::chat        ? transport::parse_chat_request(request.body, options_.limits, options_.chat)
                : kind == api_kind::inference ? transport::parse_inference_request(request.body, options_.limits)
                                              : transport::parse_completion_request(request.body, options_.limits);
  if (!parsed) {
    out->respond(error_response(parsed.error()));
    return;
  }
  if (kind != api_kind::inference && parsed->model != options_.model_id) {
    out->respond(error_response(api_error{
      404, fmt::format("the model '{}' does not exist; this server serves '{}'", transport::printable(parsed->model, 200),
                       options_.model_id),
      "", "model", "model_not_found"}));
    return;
  }
  if (!admit(*out, key)) return;
  if (key != nullptr) parsed->gen.priority = key->priority;  // the key's class (OpenAI requests have none)
  api_completion base;
  base.id = fmt::format("{}-{}", kind == api_kind::chat ? "chatcmpl" : "cmpl", out->request_number());
  base.created = unix_now();
  base.model = options_.model_id;
  auto sink = std::make_shared<http_stream_sink>(out, shared_, kind, parsed->stream, parsed->include_usage,
                                                 std::move(base), key);
  relay_registry::start(registry_, sys_, router_, options_.admit_timeout, rules(),
                        std::move(sink), to_serve_request(parsed->gen));
}

void http_gateway::create_task(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
                               const transport::api_key* key) {
  auto parsed = transport::parse_inference_request(request.body, options_.limits);
  if (!parsed) {
    out->respond(error_response(parsed.error()));
    return;
  }
  if (!admit(*out, key)) return;
  if (key != nullptr) parsed->gen.priority = key->priority;
  auto id = shared_->tasks.create(unix_now());
  if (!id) {
    out->respond(error_response(api_error{
      503, fmt::format("{} tasks are queued or running, the limit", options_.max_active_tasks), "", "", "overloaded"}));
    return;
  }
  // The task's relay key: the number in its id ("task-<n>-<random>") is unique.
  const uint64_t number = std::stoull(id->substr(5));
  transport::task_record record;
  record.id = *id;
  if (auto now = shared_->tasks.get(*id)) record = *now;
  relay_registry::start(registry_, sys_, router_, options_.admit_timeout, rules(),
                        std::make_shared<task_sink>(*id, number, shared_, key), to_serve_request(parsed->gen));
  out->respond(json_response(202, task_json(record)));
}

void http_gateway::task(std::shared_ptr<transport::http_responder> out, const transport::http_request& request,
                        const std::string& id) {
  auto t = shared_->tasks.get(id);
  if (!t) {
    out->respond(error_response(
      api_error{404, fmt::format("no task '{}' (unknown, or expired)", transport::printable(id, 100)), "", "", "not_found"}));
    return;
  }
  if (request.method == "DELETE" && shared_->tasks.active(id)) {
    registry_->cancel({task_connection, std::stoull(id.substr(5))});
    out->respond(json_response(202, task_json(*t)));  // the status turns to cancelled shortly
    return;
  }
  out->respond(json_response(200, task_json(*t)));
}

void http_gateway::ready(std::shared_ptr<transport::http_responder> out) {
  const size_t want = options_.n_replicas;
  with_stats(sys_, router_, options_.stats_timeout, [out, want](std::optional<std::vector<scheduler_stats>> s) {
    size_t placed = 0;
    if (s) {
      for (const auto& r : *s) placed += r.n_blocks > 0 ? 1 : 0;
    }
    // Replicas added or removed at run time (the ADMIN CONSOLE) change the count: ready while the
    // ROUTER has at least the replicas it started with and one of them can take requests (a
    // removed replica's counters are all zero).
    const bool ok = s && s->size() >= want && placed >= 1;
    out->respond(json_response(ok ? 200 : 503, dump(json{{"status", ok ? "ready" : "not ready"},
                                                          {"replicas", want},
                                                          {"replicas_ready", placed}})));
  });
}

void http_gateway::metrics(std::shared_ptr<transport::http_responder> out) {
  auto sh = shared_;
  with_stats(sys_, router_, options_.stats_timeout, [out, sh](std::optional<std::vector<scheduler_stats>> s) {
    std::vector<transport::replica_gauges> g;
    if (s) {
      for (const auto& r : *s) {
        g.push_back({r.n_waiting, r.n_running, r.n_blocks, r.n_free_blocks, r.n_preemptions});
      }
    }
    out->respond(http_response{200, "text/plain; version=0.0.4; charset=utf-8",
                               sh->metrics.render(g, sh->keys ? sh->keys->rate_limited_counts()
                                                              : std::vector<std::pair<std::string, uint64_t>>{}),
                               {}});
  });
}

}  // namespace troupe::actors
