// The HTTP API end to end: troupe's serving actors, the HTTP gateway and the Beast server on
// 127.0.0.1 (ephemeral port), asked by a small Beast client. Generated text equals the engine's
// for the same request, streamed (SSE) or not; errors are OpenAI-shaped; limits answer with the
// right status without holding up other clients.
#include "tests/integration/serve/serve_harness.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "actors/http_gateway.hpp"
#include "tests/integration/serve/http_client.hpp"
#include "transport/http_server.hpp"
#include "transport/openai_api.hpp"

using namespace troupe;
using namespace troupe::test;
using json = nlohmann::json;

namespace {

const char* model_id = "stories260K";

config::cluster_config small_cluster(int max_running = 32) {
  auto c = make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 2);
  c.batching.max_running = max_running;
  return c;
}

// Actors + HTTP gateway + HTTP server.
struct http_fixture {
  serve_harness h;
  actors::http_gateway gateway;
  transport::http_server server;

  explicit http_fixture(config::cluster_config c, transport::http_server_options so = {},
                        actors::http_gateway_options go = {})
      : h(std::move(c)), gateway(h.system(), h.node().router, gateway_options(go), h.node().tokenizer),
        server(so, gateway) {
    auto started = server.start();
    BOOST_REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
    BOOST_REQUIRE(server.port() != 0);
  }
  ~http_fixture() { server.stop(); }

  static actors::http_gateway_options gateway_options(actors::http_gateway_options go) {
    go.model_id = model_id;
    return go;
  }
  http_client client() { return http_client(server.port()); }
};

json completion_body(const std::string& prompt, int max_tokens, bool stream, std::optional<uint64_t> seed = {}) {
  json j{{"model", model_id}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"stream", stream}};
  if (seed) {
    j["temperature"] = 0.8;
    j["top_p"] = 0.9;
    j["seed"] = *seed;
  } else {
    j["temperature"] = 0;
  }
  return j;
}

actors::serve_request as_serve_request(const json& j) {
  actors::serve_request r;
  r.prompt = j.at("prompt").get<std::string>();
  r.max_tokens = j.at("max_tokens").get<int>();
  r.sampling.temperature = j.at("temperature").get<float>();
  if (j.contains("top_p")) r.sampling.top_p = j["top_p"].get<float>();
  if (j.contains("seed")) r.sampling.seed = j["seed"].get<uint64_t>();
  return r;
}

// The text of a streamed completion or chat; checks the SSE framing and the chunk shapes.
struct streamed {
  std::string text;
  std::string finish_reason;
  int n_events = 0;
  json usage;
};

streamed parse_stream(const http_reply& r, bool chat) {
  streamed s;
  BOOST_REQUIRE_EQUAL(r.status, 200);
  BOOST_TEST(r.chunked);
  BOOST_TEST(r.content_type == "text/event-stream");
  std::vector<std::string> events;
  BOOST_REQUIRE_MESSAGE(sse_events(r.body, events), "bad SSE framing: " << r.body);
  BOOST_REQUIRE(events.size() >= 2u);
  BOOST_TEST(events.back() == "[DONE]");
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    json e = json::parse(events[i]);
    ++s.n_events;
    BOOST_TEST(e["object"] == (chat ? "chat.completion.chunk" : "text_completion"));
    BOOST_TEST(e["model"] == model_id);
    if (e.contains("usage")) {
      s.usage = e["usage"];
      BOOST_TEST(e["choices"].empty());
      continue;
    }
    BOOST_REQUIRE_EQUAL(e["choices"].size(), 1u);
    const json& c = e["choices"][0];
    BOOST_TEST(s.finish_reason.empty());  // nothing after the finishing chunk but usage
    if (chat) {
      if (i == 0) BOOST_TEST(c["delta"]["role"] == "assistant");
      if (c["delta"].contains("content")) s.text += c["delta"]["content"].get<std::string>();
    } else {
      s.text += c["text"].get<std::string>();
    }
    if (!c["finish_reason"].is_null()) s.finish_reason = c["finish_reason"].get<std::string>();
  }
  return s;
}

// Polls a task until its status leaves queued/running (bounded).
json wait_task(http_client& c, const std::string& id, std::chrono::seconds limit = std::chrono::seconds(60)) {
  const auto give_up = std::chrono::steady_clock::now() + limit;
  json t;
  while (std::chrono::steady_clock::now() < give_up) {
    auto r = c.get("/v1/tasks/" + id);
    BOOST_REQUIRE_EQUAL(r.status, 200);
    t = r.json();
    if (t["status"] != "queued" && t["status"] != "running") return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  BOOST_FAIL("task " << id << " did not finish: " << t.dump());
  return t;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http, *needs_models({"stories260K.bin", "tok512.bin"}))

BOOST_AUTO_TEST_CASE(completions_streamed_and_not_equal_the_engine_text) {
  http_fixture f(small_cluster());
  auto c = f.client();  // one keep-alive connection for all of it
  BOOST_REQUIRE(c.connected());
  for (size_t i = 0; i < 4; ++i) {
    const std::string& prompt = story_prompts()[i];
    const json body = completion_body(prompt, 60, false, i % 2 == 0 ? std::nullopt : std::optional<uint64_t>(7 + i));
    BOOST_TEST_CONTEXT("prompt " << prompt) {
      const reference ref = f.h.generate_reference(as_serve_request(body));
      auto r = c.post("/v1/completions", body.dump());
      BOOST_REQUIRE_EQUAL(r.status, 200);
      BOOST_TEST(r.keep_alive);
      json j = r.json();
      BOOST_TEST(j["object"] == "text_completion");
      BOOST_TEST(j["model"] == model_id);
      BOOST_TEST(j["choices"][0]["text"].get<std::string>() == ref.text);
      BOOST_TEST(j["choices"][0]["finish_reason"] == (ref.ids.size() == 60u ? "length" : "stop"));
      BOOST_TEST(j["usage"]["completion_tokens"].get<size_t>() == ref.ids.size());
      BOOST_TEST(j["usage"]["prompt_tokens"].get<size_t>() == f.h.tokenizer().encode(prompt, true).size());
      BOOST_TEST(j["usage"]["total_tokens"].get<int>() ==
                 j["usage"]["prompt_tokens"].get<int>() + j["usage"]["completion_tokens"].get<int>());

      json sbody = body;
      sbody["stream"] = true;
      sbody["stream_options"] = {{"include_usage", true}};
      auto sr = c.post("/v1/completions", sbody.dump());
      streamed s = parse_stream(sr, false);
      BOOST_TEST(s.text == ref.text);
      BOOST_TEST(s.finish_reason == j["choices"][0]["finish_reason"].get<std::string>());
      BOOST_TEST(s.n_events > 2);
      BOOST_TEST(s.usage == j["usage"]);
    }
  }
  // Prompt as token ids, stop strings (string or array): as the engine, cut at the stop string.
  {
    json body = completion_body("Once upon a time", 60, false);
    const reference ref = f.h.generate_reference(as_serve_request(body));
    const std::string stop = ref.text.substr(20, 4);
    body["stop"] = stop;
    json j = c.post("/v1/completions", body.dump()).json();
    BOOST_TEST(j["choices"][0]["text"].get<std::string>() == ref.text.substr(0, ref.text.find(stop)));
    BOOST_TEST(j["choices"][0]["finish_reason"] == "stop");
    body["stop"] = json::array({"zzzz", stop});
    body["prompt"] = f.h.tokenizer().encode("Once upon a time", true);
    json k = c.post("/v1/completions", body.dump()).json();
    BOOST_TEST(k["choices"][0]["text"] == j["choices"][0]["text"]);
  }
}

BOOST_AUTO_TEST_CASE(chat_streamed_and_not_equal_the_rendered_prompt_completion) {
  http_fixture f(small_cluster());
  auto c = f.client();
  const json messages = json::array({{{"role", "system"}, {"content", "You tell stories."}},
                                     {{"role", "user"}, {"content", "Once upon a time"}}});
  json body{{"model", model_id}, {"messages", messages}, {"max_tokens", 80}, {"temperature", 0}, {"unknown", 1}};
  auto r = c.post("/v1/chat/completions", body.dump());
  BOOST_REQUIRE_EQUAL(r.status, 200);
  json j = r.json();
  BOOST_TEST(j["object"] == "chat.completion");
  BOOST_TEST(j["choices"][0]["message"]["role"] == "assistant");
  const std::string content = j["choices"][0]["message"]["content"].get<std::string>();
  BOOST_TEST(!content.empty());
  // The plain template: the same as a completion of the rendered prompt with the chat stop string.
  const std::string rendered = "System: You tell stories.\nUser: Once upon a time\nAssistant:";
  const transport::chat_template plain;
  BOOST_TEST(plain.render({{"system", "You tell stories."}, {"user", "Once upon a time"}}) == rendered);
  json cbody{{"model", model_id}, {"prompt", rendered}, {"max_tokens", 80}, {"temperature", 0},
             {"stop", plain.stop()}};
  json cj = c.post("/v1/completions", cbody.dump()).json();
  BOOST_TEST(content == cj["choices"][0]["text"].get<std::string>());
  BOOST_TEST(j["usage"] == cj["usage"]);

  body["stream"] = true;
  streamed s = parse_stream(c.post("/v1/chat/completions", body.dump()), true);
  BOOST_TEST(s.text == content);
  BOOST_TEST(s.finish_reason == j["choices"][0]["finish_reason"].get<std::string>());
  BOOST_TEST(s.usage.is_null());  // not asked for
}

BOOST_AUTO_TEST_CASE(bad_requests_get_openai_shaped_errors_and_the_connection_stays_usable) {
  http_fixture f(small_cluster());
  auto c = f.client();
  auto expect_error = [&](const std::string& method, const std::string& target, const std::string& body, int status,
                          const std::string& param, const std::string& needle) {
    BOOST_TEST_CONTEXT(method << " " << target << " " << body) {
      auto r = c.request(method, target, body);
      BOOST_REQUIRE_EQUAL(r.status, status);
      BOOST_TEST(r.content_type == "application/json");
      json j = r.json();
      BOOST_REQUIRE(j.contains("error"));
      const json& e = j["error"];
      for (const char* k : {"message", "type", "param", "code"}) BOOST_TEST(e.contains(k), k);
      BOOST_TEST(e["message"].get<std::string>().find(needle) != std::string::npos, e["message"]);
      BOOST_TEST(e["type"] == (status >= 500 ? "server_error" : "invalid_request_error"));
      if (param.empty()) {
        BOOST_TEST(e["param"].is_null());
      } else {
        BOOST_TEST(e["param"] == param);
      }
      return r;
    }
    return http_reply{};
  };
  const std::string m = std::string("\"model\":\"") + model_id + "\"";
  expect_error("POST", "/v1/completions", "{not json", 400, "", "not valid JSON");
  expect_error("POST", "/v1/completions", "[1,2]", 400, "", "must be a JSON object");
  expect_error("POST", "/v1/completions", "{\"prompt\":\"hi\"}", 400, "model", "'model' is required");
  expect_error("POST", "/v1/completions", "{" + m + "}", 400, "prompt", "'prompt' is required");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"temperature\":\"hot\"}", 400, "temperature",
               "must be a number");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"temperature\":3}", 400, "temperature",
               "must be in [0, 2]");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"max_tokens\":1.5}", 400, "max_tokens",
               "must be an integer");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"max_tokens\":100000}", 400, "max_tokens",
               "must be in [1, 4096]");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"stop\":5}", 400, "stop",
               "string or an array of strings");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"stream\":\"yes\"}", 400, "stream",
               "must be a boolean");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"hi\",\"n\":2}", 400, "n", "'n' must be 1");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":[\"a\",\"b\"]}", 400, "prompt", "batches");
  expect_error("POST", "/v1/completions", "{" + m + ",\"prompt\":\"\"}", 400, "prompt", "empty");
  expect_error("POST", "/v1/chat/completions", "{" + m + "}", 400, "messages", "'messages' is required");
  expect_error("POST", "/v1/chat/completions", "{" + m + ",\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}", 400,
               "messages[0].role", "system, user or assistant");
  expect_error("POST", "/v1/inference", "{\"input_text\":5}", 400, "input_text", "must be a string");
  expect_error("POST", "/v1/completions", "{\"model\":\"gpt-4\",\"prompt\":\"hi\"}", 404, "model", "does not exist");
  // A prompt longer than the context: the ROUTER refuses it, the gateway maps it.
  {
    json body{{"model", model_id}, {"prompt", std::vector<int>(600, 5)}, {"max_tokens", 4}};
    auto r = expect_error("POST", "/v1/completions", body.dump(), 400, "", "does not fit the context");
    BOOST_TEST(r.json()["error"]["code"] == "context_length_exceeded");
    body["stream"] = true;  // no output yet: still a status code, not an event
    expect_error("POST", "/v1/completions", body.dump(), 400, "", "does not fit the context");
  }
  expect_error("GET", "/v1/nothing", "", 404, "", "no route /v1/nothing");
  expect_error("GET", "/v1/tasks/task-99-00", "", 404, "", "no task");
  {
    auto r = expect_error("GET", "/v1/completions", "", 405, "", "does not take GET");
    BOOST_TEST(r.allow == "POST");
    auto d = expect_error("POST", "/health", "{}", 405, "", "does not take POST");
    BOOST_TEST(d.allow == "GET");
    auto t = expect_error("PUT", "/v1/tasks/x", "{}", 405, "", "does not take PUT");
    BOOST_TEST(t.allow == "GET, DELETE");
  }
  // After all that, the same connection still serves.
  auto ok = c.post("/v1/completions", completion_body("Mom said", 5, false).dump());
  BOOST_TEST(ok.status == 200);
}

BOOST_AUTO_TEST_CASE(health_ready_models_and_metrics) {
  http_fixture f(small_cluster());
  auto c = f.client();
  auto h = c.get("/health");
  BOOST_TEST(h.status == 200);
  BOOST_TEST(h.json()["status"] == "ok");
  auto r = c.get("/ready");
  BOOST_TEST(r.status == 200);
  BOOST_TEST(r.json()["replicas_ready"] == 1);
  auto m = c.get("/v1/models");
  BOOST_REQUIRE_EQUAL(m.status, 200);
  BOOST_TEST(m.json()["data"][0]["id"] == model_id);
  BOOST_TEST(m.json()["object"] == "list");

  BOOST_REQUIRE_EQUAL(c.post("/v1/completions", completion_body("Once upon a time", 12, true).dump()).status, 200);
  BOOST_REQUIRE_EQUAL(c.post("/v1/completions", "{}").status, 400);
  auto x = c.get("/metrics");
  BOOST_REQUIRE_EQUAL(x.status, 200);
  BOOST_TEST(x.content_type.find("text/plain") == 0u);
  const std::string& t = x.body;
  const std::string prompt_tokens =
    "troupe_prompt_tokens_total " + std::to_string(f.h.tokenizer().encode("Once upon a time", true).size()) + "\n";
  BOOST_TEST(t.find(prompt_tokens) != std::string::npos, "missing: " << prompt_tokens);
  for (const char* line : {"troupe_http_requests_total{route=\"/v1/completions\",code=\"200\"} 1\n",
                           "troupe_http_requests_total{route=\"/v1/completions\",code=\"400\"} 1\n",
                           "troupe_http_requests_total{route=\"/ready\",code=\"200\"} 1\n",
                           "troupe_generation_tokens_total 12\n",
                           "troupe_generation_requests_total{outcome=\"length\"} 1\n",
                           "troupe_time_to_first_token_seconds_count 1\n",
                           "troupe_inter_token_latency_seconds_count 11\n", "troupe_scheduler_up 1\n",
                           "troupe_queue_depth{replica=\"0\"} 0\n", "troupe_kv_blocks_free{replica=\"0\"} 512\n",
                           "troupe_kv_blocks_used{replica=\"0\"} 0\n", "troupe_preemptions_total{replica=\"0\"} 0\n"}) {
    BOOST_TEST(t.find(line) != std::string::npos, "missing: " << line);
  }
  // promtool, where installed (scripts/setup.sh installs it), checks the format.
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    const auto path = std::filesystem::temp_directory_path() / ("troupe-metrics-" + std::to_string(::getpid()));
    { std::ofstream(path) << t; }
    auto check = run_command("promtool check metrics < " + path.string() + " 2>&1; echo rc=$?");
    std::filesystem::remove(path);
    BOOST_TEST(check.out == "rc=0\n", check.out);
  } else {
    BOOST_TEST_MESSAGE("SKIPPED promtool check: promtool not installed (run scripts/setup.sh)");
  }
}

BOOST_AUTO_TEST_CASE(inference_and_the_task_lifecycle) {
  actors::http_gateway_options go;
  go.task_ttl = std::chrono::milliseconds(1500);
  http_fixture f(small_cluster(1), {}, go);  // one running sequence at a time: later tasks queue
  auto c = f.client();
  // /v1/inference: the engine's text.
  actors::serve_request ref_req = greedy("Once upon a time", 40);
  ref_req.sampling.temperature = 0;
  const reference ref = f.h.generate_reference(ref_req);
  auto inf = c.post("/v1/inference", R"({"input_text":"Once upon a time","max_length":40,"temperature":0})");
  BOOST_REQUIRE_EQUAL(inf.status, 200);
  BOOST_TEST(inf.json()["generated_text"].get<std::string>() == ref.text);
  BOOST_TEST(inf.json()["completion_tokens"].get<size_t>() == ref.ids.size());

  // A task: 202 at once, then done with the same text.
  auto created = c.post("/v1/tasks", R"({"input_text":"Once upon a time","max_length":40,"temperature":0})");
  BOOST_REQUIRE_EQUAL(created.status, 202);
  const std::string id = created.json()["task_id"].get<std::string>();
  BOOST_TEST(created.json()["status"] == "queued");
  json done = wait_task(c, id);
  BOOST_TEST(done["status"] == "done");
  BOOST_TEST(done["result"]["generated_text"].get<std::string>() == ref.text);
  BOOST_TEST(done["result"]["finish_reason"] == (ref.ids.size() == 40u ? "length" : "stop"));

  // Cancel: long tasks queue behind each other (max_running 1); the last one is cancelled while
  // it waits and ends "cancelled"; the others are done.
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto r = c.post("/v1/tasks", R"({"input_text":"Once upon a time","max_length":400,"temperature":0})");
    BOOST_REQUIRE_EQUAL(r.status, 202);
    ids.push_back(r.json()["task_id"].get<std::string>());
  }
  auto del = c.request("DELETE", "/v1/tasks/" + ids.back());
  BOOST_REQUIRE_EQUAL(del.status, 202);
  json cancelled = wait_task(c, ids.back());
  BOOST_TEST(cancelled["status"] == "cancelled");
  // Deleting a finished task changes nothing (asked at once: finished tasks expire after 1.5 s).
  auto again = c.request("DELETE", "/v1/tasks/" + ids.back());
  BOOST_TEST(again.status == 200);
  BOOST_TEST(again.json()["status"] == "cancelled");
  for (size_t i = 0; i + 1 < ids.size(); ++i) BOOST_TEST(wait_task(c, ids[i])["status"] == "done");
  // A task the ROUTER refuses fails with its code.
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "Once upon a time ";
  auto bad = c.post("/v1/tasks", json{{"input_text", long_text}, {"max_length", 4}}.dump());
  BOOST_REQUIRE_EQUAL(bad.status, 202);
  json failed = wait_task(c, bad.json()["task_id"].get<std::string>());
  BOOST_TEST(failed["status"] == "failed");
  BOOST_TEST(failed["error"]["code"] == "prompt_too_long");
  // Expiry: finished tasks go after task_ttl (polled, bounded).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int status = 200;
  while (status == 200 && std::chrono::steady_clock::now() < give_up) {
    status = c.get("/v1/tasks/" + id).status;
    if (status == 200) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  BOOST_TEST(status == 404);
}

BOOST_AUTO_TEST_CASE(client_that_goes_away_cancels_its_request) {
  http_fixture f(small_cluster());
  for (bool stream : {true, false}) {
    BOOST_TEST_CONTEXT("stream " << stream) {
      {
        auto c = f.client();
        BOOST_REQUIRE(c.send_raw("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                                 std::to_string(completion_body("Once upon a time", 480, stream).dump().size()) +
                                 "\r\n\r\n" + completion_body("Once upon a time", 480, stream).dump()));
        // Wait until the sequence runs, then hang up.
        bool running = false;
        for (int i = 0; i < 100000 && !running; ++i) running = f.h.stats()[0].n_running > 0;
        BOOST_REQUIRE(running);
        c.close();
      }
      bool freed = false;
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (!freed && std::chrono::steady_clock::now() < give_up) {
        const auto st = f.h.stats();
        freed = st[0].n_free_blocks == st[0].n_blocks && st[0].n_running == 0 && st[0].n_waiting == 0 &&
                f.gateway.n_in_progress() == 0;
      }
      BOOST_TEST(freed);
    }
  }
  // Both ended as cancelled, not run to their end.
  auto c = f.client();
  const std::string metrics = c.get("/metrics").body;
  BOOST_TEST(metrics.find("troupe_generation_requests_total{outcome=\"cancelled\"} 2\n") != std::string::npos, metrics);
  BOOST_TEST(metrics.find("outcome=\"length\"") == std::string::npos, metrics);
}

BOOST_AUTO_TEST_CASE(limits_answer_with_their_status_and_others_are_served) {
  transport::http_server_options so;
  so.max_header_bytes = 2048;
  so.max_body_bytes = 4096;
  so.read_timeout = std::chrono::milliseconds(300);
  so.max_connections = 3;
  http_fixture f(small_cluster(), so);
  // 413: a body above the cap.
  {
    auto c = f.client();
    json body{{"model", model_id}, {"prompt", std::string(5000, 'a')}};
    auto r = c.post("/v1/completions", body.dump());
    BOOST_TEST(r.status == 413);
    BOOST_TEST(r.json()["error"]["message"].get<std::string>().find("4096") != std::string::npos);
    BOOST_TEST(!r.keep_alive);
  }
  // 431: headers above the cap.
  {
    auto c = f.client();
    auto r = c.request("GET", "/health", "", {{"x-big", std::string(3000, 'b')}});
    BOOST_TEST(r.status == 431);
  }
  // 400: not HTTP at all.
  {
    auto c = f.client();
    BOOST_REQUIRE(c.send_raw("HELLO\r\n\r\n"));
    BOOST_TEST(c.read_reply().status == 400);
  }
  // 408: a request that stops half way; meanwhile another client is served.
  {
    auto slow = f.client();
    BOOST_REQUIRE(slow.send_raw("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo"));
    auto fast = f.client();
    BOOST_TEST(fast.get("/health").status == 200);
    auto r = slow.read_reply();
    BOOST_TEST(r.status == 408);
  }
  // Connection cap: with 3 open, a 4th gets 503 and is closed; the open ones still work.
  {
    // The connections above close on the server's side too before this starts (bounded).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (f.server.connection_count() > 0 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    BOOST_REQUIRE_EQUAL(f.server.connection_count(), 0u);
    std::vector<std::unique_ptr<http_client>> open;
    for (int i = 0; i < 3; ++i) {
      open.push_back(std::make_unique<http_client>(f.server.port()));
      BOOST_REQUIRE(open.back()->get("/health").status == 200);
    }
    http_client extra(f.server.port());
    auto r = extra.read_reply();
    BOOST_TEST(r.status == 503);
    BOOST_TEST(extra.closed_by_server());
    BOOST_TEST(open[0]->get("/health").status == 200);
  }
}

BOOST_AUTO_TEST_CASE(keep_alive_pipelining_and_idle_close) {
  transport::http_server_options so;
  so.idle_timeout = std::chrono::milliseconds(300);
  http_fixture f(small_cluster(), so);
  // Two requests in one write: answered in order on the same connection.
  {
    auto c = f.client();
    const std::string body = completion_body("Mom said", 4, false).dump();
    BOOST_REQUIRE(c.send_raw("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n\r\n" + body +
                             "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto first = c.read_reply();
    BOOST_TEST(first.status == 200);
    BOOST_TEST(first.json()["object"] == "text_completion");
    auto second = c.read_reply();
    BOOST_TEST(second.status == 200);
    BOOST_TEST(second.json()["status"] == "ok");
  }
  // HTTP/1.0 without keep-alive: one answer, then the server closes.
  {
    auto c = f.client();
    BOOST_REQUIRE(c.send_raw("GET /health HTTP/1.0\r\n\r\n"));
    auto r = c.read_reply();
    BOOST_TEST(r.status == 200);
    BOOST_TEST(!r.keep_alive);
    BOOST_TEST(c.closed_by_server());
  }
  // An idle keep-alive connection is closed after idle_timeout (the read is bounded by 60 s).
  {
    auto c = f.client();
    BOOST_TEST(c.get("/health").status == 200);
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_TEST(c.closed_by_server());
    const auto waited_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
    BOOST_TEST(waited_ms >= 250);
  }
}

BOOST_AUTO_TEST_CASE(api_key_is_required_as_a_bearer_token) {
  actors::http_gateway_options go;
  go.api_keys = transport::api_key_set::without_limits({"sk-first", "sk-second"});
  http_fixture f(small_cluster(), {}, go);
  auto c = f.client();
  const std::string body = completion_body("Mom said", 4, false).dump();
  auto none = c.post("/v1/completions", body);
  BOOST_TEST(none.status == 401);
  BOOST_TEST(none.json()["error"]["code"] == "invalid_api_key");
  BOOST_TEST(c.request("POST", "/v1/completions", body, {{"Authorization", "Bearer sk-firs"}}).status == 401);
  BOOST_TEST(c.request("POST", "/v1/completions", body, {{"Authorization", "Bearer sk-first!"}}).status == 401);
  BOOST_TEST(c.request("POST", "/v1/completions", body, {{"Authorization", "Basic sk-first"}}).status == 401);
  BOOST_TEST(c.request("GET", "/v1/models", "", {{"Authorization", "Bearer sk-nope"}}).status == 401);
  BOOST_TEST(c.request("POST", "/v1/completions", body, {{"Authorization", "Bearer sk-second"}}).status == 200);
  BOOST_TEST(c.request("GET", "/v1/models", "", {{"Authorization", "Bearer sk-first"}}).status == 200);
  // Probes and scrapes need no key.
  BOOST_TEST(c.get("/health").status == 200);
  BOOST_TEST(c.get("/ready").status == 200);
  BOOST_TEST(c.get("/metrics").status == 200);
}

BOOST_AUTO_TEST_CASE(keys_over_their_limits_get_429_with_retry_after_and_other_keys_are_served) {
  std::vector<transport::api_key> keys(3);
  keys[0] = {"sk-alice", "alice", {2, 0, 2}, transport::request_priority::interactive};  // 2 requests a minute
  keys[1] = {"sk-bob", "bob", {}, transport::request_priority::batch};
  keys[2] = {"sk-carol", "carol", {0, 10, 0}, transport::request_priority::interactive};  // 10 tokens a minute
  actors::http_gateway_options go;
  go.api_keys = std::make_shared<transport::api_key_set>(std::move(keys));
  http_fixture f(small_cluster(), {}, go);
  auto c = f.client();
  const std::string body = completion_body("Mom said", 12, false).dump();
  auto as = [&](const std::string& key) {
    return c.request("POST", "/v1/completions", body, {{"Authorization", "Bearer " + key}});
  };
  BOOST_TEST(c.post("/v1/completions", body).status == 401);
  BOOST_TEST(as("sk-alice").status == 200);
  BOOST_TEST(as("sk-alice").status == 200);
  auto limited = as("sk-alice");
  BOOST_TEST(limited.status == 429);
  BOOST_TEST(limited.keep_alive);
  const json e = limited.json()["error"];
  BOOST_TEST(e["code"] == "rate_limit_exceeded");
  BOOST_TEST(e["type"] == "requests");
  BOOST_TEST(e["message"].get<std::string>().find("'alice'") != std::string::npos, e.dump());
  BOOST_REQUIRE(!limited.retry_after.empty());
  const int retry_s = std::stoi(limited.retry_after);  // one request refills in 30 s
  BOOST_TEST(retry_s >= 29);
  BOOST_TEST(retry_s <= 30);
  // Tasks count too; bob is not held back by alice.
  BOOST_TEST(c.request("POST", "/v1/tasks", json{{"input_text", "Mom said"}, {"max_length", 4}}.dump(),
                       {{"Authorization", "Bearer sk-alice"}}).status == 429);
  BOOST_TEST(as("sk-bob").status == 200);
  BOOST_TEST(as("sk-bob").status == 200);
  BOOST_TEST(as("sk-bob").status == 200);
  // carol's first request uses more than her 10 tokens a minute: the next one waits for them.
  auto first = as("sk-carol");
  BOOST_TEST_REQUIRE(first.status == 200);
  const int used = first.json()["usage"]["total_tokens"].get<int>();
  BOOST_TEST_REQUIRE(used > 10);
  auto over = as("sk-carol");
  BOOST_TEST(over.status == 429);
  BOOST_TEST(over.json()["error"]["type"] == "tokens");
  // Out of debt plus one token, at one token every 6 s (give or take the rounding).
  BOOST_TEST(std::abs(std::stoi(over.retry_after) - (used - 9) * 6) <= 1, over.retry_after);
  // Streamed requests are refused the same way, before any event.
  json sb = json::parse(body);
  sb["stream"] = true;
  auto streamed = c.request("POST", "/v1/completions", sb.dump(), {{"Authorization", "Bearer sk-carol"}});
  BOOST_TEST(streamed.status == 429);
  // The counts by key name.
  const std::string metrics = c.get("/metrics").body;
  BOOST_TEST(metrics.find("troupe_rate_limited_requests_total{key=\"alice\"} 2\n") != std::string::npos, metrics);
  BOOST_TEST(metrics.find("troupe_rate_limited_requests_total{key=\"bob\"} 0\n") != std::string::npos, metrics);
  BOOST_TEST(metrics.find("troupe_rate_limited_requests_total{key=\"carol\"} 2\n") != std::string::npos, metrics);
}

BOOST_AUTO_TEST_CASE(https_with_a_self_signed_certificate_and_plain_http_to_its_port_fails_cleanly) {
  self_signed_certificate tls;
  transport::http_server_options so;
  so.tls_cert_file = tls.cert;
  so.tls_key_file = tls.key;
  http_fixture f(small_cluster(), so);
  const std::string url = "https://127.0.0.1:" + std::to_string(f.server.port());
  const std::string curl = "curl -sS --max-time 60 --cacert " + tls.cert + " ";
  // A plain-HTTP client connects first and sends nothing yet: it holds no one up.
  http_client plain(f.server.port());
  BOOST_REQUIRE(plain.connected());
  auto health = run_command(curl + url + "/health");
  BOOST_REQUIRE_EQUAL(health.exit_code, 0);
  BOOST_TEST(json::parse(health.out)["status"] == "ok");
  // Without the CA certificate curl refuses the server: this is really TLS.
  BOOST_TEST(run_command("curl -sS --max-time 20 " + url + "/health 2>&1").exit_code != 0);
  // A completion over HTTPS, whole and streamed: the same text.
  const std::string body = completion_body("Mom said", 12, false).dump();
  auto whole = run_command(curl + url + "/v1/completions -d '" + body + "'");
  BOOST_REQUIRE_EQUAL(whole.exit_code, 0);
  const std::string text = json::parse(whole.out)["choices"][0]["text"].get<std::string>();
  BOOST_TEST(!text.empty());
  auto streamed_run = run_command(curl + "-N " + url + "/v1/completions -d '" +
                                  completion_body("Mom said", 12, true).dump() + "'");
  BOOST_REQUIRE_EQUAL(streamed_run.exit_code, 0);
  std::vector<std::string> events;
  BOOST_REQUIRE(sse_events(streamed_run.out, events));
  std::string streamed_text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    streamed_text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  }
  BOOST_TEST(events.back() == "[DONE]");
  BOOST_TEST(streamed_text == text);
  // The plain-HTTP request: a plain 400 that says why, then the connection closes.
  BOOST_REQUIRE(plain.send_raw("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto refused = plain.read_reply();
  BOOST_TEST(refused.status == 400);
  BOOST_TEST(refused.body.find("https://") != std::string::npos, refused.body);
  BOOST_TEST(plain.closed_by_server());
  // Bytes that are neither TLS nor HTTP: closed without an answer.
  http_client noise(f.server.port());
  BOOST_REQUIRE(noise.send_raw(std::string("\x01\x02garbage\r\n\r\n", 13)));
  BOOST_TEST(noise.closed_by_server());
  // HTTPS clients are served as before, on keep-alive connections (two requests, one connection).
  auto again = run_command(curl + url + "/health " + url + "/v1/models");
  BOOST_REQUIRE_EQUAL(again.exit_code, 0);
  BOOST_TEST(again.out.find(model_id) != std::string::npos, again.out);
}

BOOST_AUTO_TEST_CASE(troupe_serve_http_port_answers_curl_as_generate_does,
                     *needs_models({"TinyStories-656K-Q8_0.gguf"})) {
  // `troupe serve --http-port 0`: read the port it prints, curl it, compare with `troupe generate`.
  const std::string model = model_path("TinyStories-656K-Q8_0.gguf").string();
  const std::string bin = troupe_binary().string();
  int out[2];
  BOOST_REQUIRE(::pipe(out) == 0);
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::execl(bin.c_str(), bin.c_str(), "serve", "--model", model.c_str(), "--port", "0", "--http-port", "0",
            "--threads", "1", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  struct child_guard {
    pid_t pid;
    int fd;
    int status = -1;
    void stop() {
      if (pid <= 0) return;
      ::kill(pid, SIGTERM);
      ::waitpid(pid, &status, 0);
      ::close(fd);
      pid = 0;
    }
    ~child_guard() { stop(); }
  } guard{pid, out[0]};
  std::string line, all;
  char ch = 0;
  uint16_t port = 0;
  while (port == 0 && ::read(out[0], &ch, 1) == 1) {
    if (ch != '\n') {
      line += ch;
      continue;
    }
    all += line + "\n";
    if (auto at = line.find("HTTP API on http://127.0.0.1:"); at != std::string::npos) {
      port = uint16_t(std::stoi(line.substr(at + 29)));
    }
    line.clear();
  }
  BOOST_REQUIRE_MESSAGE(port != 0, "no HTTP line in: " << all);
  const std::string url = "http://127.0.0.1:" + std::to_string(port);
  for (const std::string prompt : {"Once upon a time", "Lily and Ben went to the park"}) {
    BOOST_TEST_CONTEXT("prompt " << prompt) {
      const std::string body = json{{"model", "TinyStories-656K-Q8_0"}, {"prompt", prompt}, {"max_tokens", 48},
                                    {"temperature", 0}}.dump();
      auto r = run_command("curl -sS --max-time 60 " + url + "/v1/completions -H 'Content-Type: application/json' -d '" +
                           body + "'");
      BOOST_REQUIRE_EQUAL(r.exit_code, 0);
      const std::string text = json::parse(r.out)["choices"][0]["text"].get<std::string>();
      auto gen = run_command(bin + " generate --model " + model + " --prompt '" + prompt +
                             "' -n 48 --threads 1 2>/dev/null");
      BOOST_REQUIRE_EQUAL(gen.exit_code, 0);
      BOOST_TEST(gen.out == prompt + text + "\n");
      // Streamed with curl -N: the same text.
      json sb = json::parse(body);
      sb["stream"] = true;
      auto s = run_command("curl -sS -N --max-time 60 " + url + "/v1/completions -d '" + sb.dump() + "'");
      BOOST_REQUIRE_EQUAL(s.exit_code, 0);
      std::vector<std::string> events;
      BOOST_REQUIRE(sse_events(s.out, events));
      std::string streamed_text;
      for (size_t i = 0; i + 1 < events.size(); ++i) {
        streamed_text += json::parse(events[i])["choices"][0]["text"].get<std::string>();
      }
      BOOST_TEST(events.back() == "[DONE]");
      BOOST_TEST(streamed_text == text);
    }
  }
  auto ready = run_command("curl -sS -o /dev/null -w '%{http_code}' " + url + "/ready");
  BOOST_TEST(ready.out == "200");
  guard.stop();
  BOOST_TEST(WIFEXITED(guard.status));
  BOOST_TEST(WEXITSTATUS(guard.status) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
