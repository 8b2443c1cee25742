#include "transport/openai_api.hpp"

#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace troupe::transport {

using json = nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::unexpected<api_error> bad(std::string param, std::string message) {
  return std::unexpected(api_error{400, std::move(message), "", std::move(param), ""});
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a float";
    default: return "an integer";
  }
}

api_result<json> parse_object(std::string_view body) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return bad("", fmt::format("the request body is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) return bad("", fmt::format("the request body must be a JSON object, got {}", type_name(j)));
  return j;
}

// A field that is absent or null keeps its default.
const json* field(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

api_result<void> number(const json& j, const char* name, float& out, double min, double max) {
  const json* v = field(j, name);
  if (v == nullptr) return {};
  if (!v->is_number()) return bad(name, fmt::format("'{}' must be a number, got {}", name, type_name(*v)));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    return bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, x));
  }
  out = float(x);
  return {};
}

api_result<void> integer(const json& j, const char* name, int64_t& out, int64_t min, int64_t max) {
  const json* v = field(j, name);
  if (v == nullptr) return {};
  if (!v->is_number_integer()) return bad(name, fmt::format("'{}' must be an integer, got {}", name, type_name(*v)));
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(max)) {
    return bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, v->get<uint64_t>()));
  }
  const int64_t x = v->get<int64_t>();
  if (x < min || x > max) return bad(name, fmt::format("'{}' must be in [{}, {}], got {}", name, min, max, x));
  out = x;
  return {};
}

api_result<void> boolean(const json& j, const char* name, bool& out) {
  const json* v = field(j, name);
  if (v == nullptr) return {};
  if (!v->is_boolean()) return bad(name, fmt::format("'{}' must be a boolean, got {}", name, type_name(*v)));
  out = v->get<bool>();
  return {};
}

#define TROUPE_API_TRY(expr)                                         \
  do {                                                               \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error());   \
  } while (0)

// The fields every generating route shares: temperature, top_p, seed, stop, n.
api_result<void> sampling_fields(const json& j, generate_request& g) {
  TROUPE_API_TRY(number(j, "temperature", g.temperature, 0, 2));
  TROUPE_API_TRY(number(j, "top_p", g.top_p, 0, 1));
  if (const json* v = field(j, "top_p"); v != nullptr && g.top_p <= 0) {
    return bad("top_p", "'top_p' must be greater than 0");
  }
  int64_t seed = 0;
  if (field(j, "seed") != nullptr) {
    TROUPE_API_TRY(integer(j, "seed", seed, INT64_MIN, INT64_MAX));
    g.seed = uint64_t(seed);
  }
  if (const json* v = field(j, "stop")) {
    if (v->is_string()) {
      g.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (const json& s : *v) {
        if (!s.is_string()) return bad("stop", fmt::format("'stop' must hold strings, got {}", type_name(s)));
        g.stop.push_back(s.get<std::string>());
      }
    } else {
      return bad("stop", fmt::format("'stop' must be a string or an array of strings, got {}", type_name(*v)));
    }
  }
  int64_t n = 1;
  TROUPE_API_TRY(integer(j, "n", n, INT64_MIN, INT64_MAX));
  if (n != 1) return bad("n", fmt::format("'n' must be 1 (one choice per request), got {}", n));
  return {};
}

api_result<void> stream_fields(const json& j, api_request& r) {
  TROUPE_API_TRY(boolean(j, "stream", r.stream));
  if (const json* o = field(j, "stream_options")) {
    if (!o->is_object()) return bad("stream_options", "'stream_options' must be an object");
    TROUPE_API_TRY(boolean(*o, "include_usage", r.include_usage));
  }
  return {};
}

api_result<void> model_field(const json& j, api_request& r) {
  const json* v = field(j, "model");
  if (v == nullptr) return bad("model", "'model' is required");
  if (!v->is_string()) return bad("model", fmt::format("'model' must be a string, got {}", type_name(*v)));
  r.model = v->get<std::string>();
  return {};
}

api_result<void> max_tokens_field(const json& j, const char* name, generate_request& g, const protocol_limits& limits) {
  int64_t m = g.max_tokens;
  TROUPE_API_TRY(integer(j, name, m, 1, limits.max_tokens));
  g.max_tokens = uint32_t(m);
  return {};
}

// The checks the client protocol applies (prompt size, UTF-8, stop strings) as a 400.
api_result<void> check(const generate_request& g, const protocol_limits& limits, const char* prompt_param) {
  auto ok = validate(g, limits);
  if (ok) return {};
  std::string message = ok.error().message;
  if (message.rfind("generate: ", 0) == 0) message = message.substr(10);
  std::string param;
  if (auto at = message.find("field '"); at != std::string::npos) {
    param = message.substr(at + 7, message.find('\'', at + 7) - (at + 7));
  }
  if (param == "prompt" || param == "prompt_tokens" || message.find("prompt") != std::string::npos) {
    param = prompt_param;
  }
  api_error e{400, message, "", param, ""};
  if (ok.error().code == errc::prompt_too_long) e.code = "context_length_exceeded";
  return std::unexpected(std::move(e));
}

}  // namespace

std::string json_string(std::string_view s) { return dump(json(std::string(s))); }

std::string error_body(const api_error& e) {
  json j;
  j["error"]["message"] = e.message;
  j["error"]["type"] = !e.type.empty() ? e.type : e.status >= 500 ? "server_error" : "invalid_request_error";
  j["error"]["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  j["error"]["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return dump(j);
}

api_result<api_request> parse_completion_request(std::string_view body, const protocol_limits& limits) {
  auto j = parse_object(body);
  if (!j) return std::unexpected(j.error());
  api_request r;
  r.kind = api_kind::completion;
  r.gen.request_id = 1;
  TROUPE_API_TRY(model_field(*j, r));
  const json* p = field(*j, "prompt");
  if (p == nullptr) return bad("prompt", "'prompt' is required");
  auto tokens_of = [&](const json& a) -> api_result<void> {
    for (const json& t : a) {
      if (!t.is_number_integer()) return bad("prompt", "'prompt' must be a string, an array of one string, or token ids");
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id > INT32_MAX) return bad("prompt", fmt::format("token id {} is out of range", id));
      r.gen.prompt_tokens.push_back(int32_t(id));
    }
    return {};
  };
  if (p->is_string()) {
    r.gen.prompt = p->get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    r.gen.prompt = (*p)[0].get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_array()) {
    TROUPE_API_TRY(tokens_of((*p)[0]));
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
    TROUPE_API_TRY(tokens_of(*p));
  } else if (p->is_array() && p->size() > 1) {
    return bad("prompt", "one prompt per request: batches of prompts are not supported");
  } else {
    return bad("prompt", fmt::format("'prompt' must be a string, an array of one string, or token ids, got {}",
                                     type_name(*p)));
  }
  TROUPE_API_TRY(max_tokens_field(*j, "max_tokens", r.gen, limits));
  TROUPE_API_TRY(sampling_fields(*j, r.gen));
  TROUPE_API_TRY(stream_fields(*j, r));
  TROUPE_API_TRY(check(r.gen, limits, "prompt"));
  return r;
}

api_result<api_request> parse_chat_request(std::string_view body, const protocol_limits& limits,
                                           const chat_template& chat) {
  auto j = parse_object(body);
  if (!j) return std::unexpected(j.error());
  api_request r;
  r.kind = api_kind::chat;
  r.gen.request_id = 1;
  TROUPE_API_TRY(model_field(*j, r));
  const json* ms = field(*j, "messages");
  if (ms == nullptr) return bad("messages", "'messages' is required");
  if (!ms->is_array() || ms->empty()) return bad("messages", "'messages' must be a non-empty array");
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) return bad(param, fmt::format("'{}' must be an object, got {}", param, type_name(m)));
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string()) return bad(param + ".role", fmt::format("'{}.role' must be a string", param));
    chat_message cm{role->get<std::string>(), ""};
    if (cm.role == "developer") cm.role = "system";
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant") {
      return bad(param + ".role", fmt::format("'{}.role' must be system, user or assistant, got '{}'", param,
                                               printable(cm.role)));
    }
    if (const json* c = field(m, "content")) {
      if (c->is_string()) {
        cm.content = c->get<std::string>();
      } else if (c->is_array()) {  // content parts: text only
        for (const json& part : *c) {
          const json* type = part.is_object() ? field(part, "type") : nullptr;
          const json* text = part.is_object() ? field(part, "text") : nullptr;
          if (type == nullptr || *type != "text" || text == nullptr || !text->is_string()) {
            return bad(param + ".content", fmt::format("'{}.content' parts must be {{\"type\":\"text\",\"text\":...}}", param));
          }
          cm.content += text->get<std::string>();
        }
      } else {
        return bad(param + ".content",
                   fmt::format("'{}.content' must be a string or an array of text parts, got {}", param, type_name(*c)));
      }
    }
    r.messages.push_back(std::move(cm));
  }
  r.gen.prompt = chat.render(r.messages);
  r.gen.max_tokens = limits.max_tokens;
  TROUPE_API_TRY(max_tokens_field(*j, "max_completion_tokens", r.gen, limits));
  TROUPE_API_TRY(max_tokens_field(*j, "max_tokens", r.gen, limits));
  TROUPE_API_TRY(sampling_fields(*j, r.gen));
  r.gen.stop.emplace_back(chat.stop());
  TROUPE_API_TRY(stream_fields(*j, r));
  TROUPE_API_TRY(check(r.gen, limits, "messages"));
  return r;
}

api_result<api_request> parse_inference_request(std::string_view body, const protocol_limits& limits) {
  auto j = parse_object(body);
  if (!j) return std::unexpected(j.error());
  api_request r;
  r.kind = api_kind::inference;
  r.gen.request_id = 1;
  const json* t = field(*j, "input_text");
  if (t == nullptr) return bad("input_text", "'input_text' is required");
  if (!t->is_string()) return bad("input_text", fmt::format("'input_text' must be a string, got {}", type_name(*t)));
  r.gen.prompt = t->get<std::string>();
  TROUPE_API_TRY(max_tokens_field(*j, "max_length", r.gen, limits));
  TROUPE_API_TRY(sampling_fields(*j, r.gen));
  TROUPE_API_TRY(check(r.gen, limits, "input_text"));
  return r;
}

const char* api_finish_reason(finish_reason r) {
  switch (r) {
    case finish_reason::length:
    case finish_reason::deadline: return "length";
    case finish_reason::stop:
    case finish_reason::stop_string:
    case finish_reason::cancelled: return "stop";
  }
  return "stop";
}

namespace {

json usage(const api_completion& c) {
  return json{{"prompt_tokens", c.prompt_tokens},
              {"completion_tokens", c.completion_tokens},
              {"total_tokens", c.prompt_tokens + c.completion_tokens}};
}

json reason(std::string_view r) { return r.empty() ? json(nullptr) : json(std::string(r)); }

}  // namespace

std::string completion_body(const api_completion& c) {
  json choice{{"index", 0}, {"text", c.text}, {"logprobs", nullptr}, {"finish_reason", reason(c.finish_reason)}};
  return dump(json{{"id", c.id},
                   {"object", "text_completion"},
                   {"created", c.created},
                   {"model", c.model},
                   {"choices", json::array({choice})},
                   {"usage", usage(c)}});
}

std::string chat_body(const api_completion& c) {
  json choice{{"index", 0},
              {"message", {{"role", "assistant"}, {"content", c.text}}},
              {"logprobs", nullptr},
              {"finish_reason", reason(c.finish_reason)}};
  return dump(json{{"id", c.id},
                   {"object", "chat.completion"},
                   {"created", c.created},
                   {"model", c.model},
                   {"choices", json::array({choice})},
                   {"usage", usage(c)}});
}

std::string inference_body(const api_completion& c) {
  return dump(json{{"generated_text", c.text},
                   {"finish_reason", c.finish_reason},
                   {"prompt_tokens", c.prompt_tokens},
                   {"completion_tokens", c.completion_tokens}});
}

namespace {
std::string event(const json& j) { return "data: " + dump(j) + "\n\n"; }
}  // namespace

std::string completion_chunk_event(const api_completion& c, std::string_view text, std::string_view finish_reason) {
  json choice{{"index", 0}, {"text", std::string(text)}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}};
  return event(json{{"id", c.id},
                    {"object", "text_completion"},
                    {"created", c.created},
                    {"model", c.model},
                    {"choices", json::array({choice})}});
}

std::string chat_chunk_event(const api_completion& c, bool role, std::string_view content,
                             std::string_view finish_reason) {
  json delta = json::object();
  if (role) delta["role"] = "assistant";
  if (!content.empty() || role) delta["content"] = std::string(content);
  json choice{{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", reason(finish_reason)}};
  return event(json{{"id", c.id},
                    {"object", "chat.completion.chunk"},
                    {"created", c.created},
                    {"model", c.model},
                    {"choices", json::array({choice})}});
}

chunk_template make_chunk_template(const api_completion& c, bool chat) {
  const std::string marker = "\x01";  // stands for the text; JSON escapes it, so it is unique
  const std::string ev = chat ? chat_chunk_event(c, false, marker, "") : completion_chunk_event(c, marker, "");
  const std::string quoted = json_string(marker);
  const size_t at = ev.find(quoted);
  return chunk_template{ev.substr(0, at), ev.substr(at + quoted.size())};
}

std::string chunk_template::event(std::string_view text) const {
  std::string out = prefix;
  out += json_string(text);
  out += suffix;
  return out;
}

std::string usage_chunk_event(const api_completion& c, bool chat) {
  return event(json{{"id", c.id},
                    {"object", chat ? "chat.completion.chunk" : "text_completion"},
                    {"created", c.created},
                    {"model", c.model},
                    {"choices", json::array()},
                    {"usage", usage(c)}});
}

std::string error_event(const api_error& e) { return "data: " + error_body(e) + "\n\n"; }

std::string models_body(const std::string& model_id, int64_t created) {
  json m{{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "troupe"}};
  return dump(json{{"object", "list"}, {"data", json::array({m})}});
}

}  // namespace troupe::transport
