// End to end over the client protocol: `troupe serve`'s pieces (actors + TCP server + gateway)
// on 127.0.0.1 with an ephemeral port, and the blocking client library. Same text as the engine.
#include "tests/integration/serve/serve_harness.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <future>
#include <thread>

#include "actors/tcp_gateway.hpp"
#include "transport/client.hpp"
#include "transport/tcp_server.hpp"

using namespace troupe;
using namespace troupe::test;

namespace {

transport::generate_request to_wire(const actors::serve_request& r) {
  transport::generate_request g;
  g.prompt = r.prompt;
  g.prompt_tokens = r.prompt_tokens;
  g.max_tokens = uint32_t(r.max_tokens);
  g.temperature = r.sampling.temperature;
  g.top_p = r.sampling.top_p;
  g.top_k = r.sampling.top_k;
  g.repetition_penalty = r.sampling.repetition_penalty;
  g.seed = r.sampling.seed;
  return g;
}

struct wire_result {
  std::string text;
  std::vector<int32_t> ids;
  transport::result<transport::final_frame> final = std::unexpected(transport::error{});
};

wire_result run_on(transport::client& c, const actors::serve_request& r) {
  wire_result w;
  w.final = c.generate(to_wire(r), [&](const transport::token_chunk& ch) {
    w.text += ch.text;
    w.ids.insert(w.ids.end(), ch.ids.begin(), ch.ids.end());
  }, std::chrono::milliseconds(60'000));
  return w;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tcp)

BOOST_AUTO_TEST_CASE(concurrent_clients_over_tcp_get_the_engine_text) {
  serve_harness h(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 2));
  // As troupe serve does: prompts tokenized by the gateway (the other tests leave it to the ROUTER).
  BOOST_REQUIRE(h.node().tokenizer);
  actors::tcp_gateway gateway(h.system(), h.node().router, std::chrono::milliseconds(30'000), h.node().tokenizer);
  transport::server_options so;
  so.host = "127.0.0.1";
  so.port = 0;
  transport::tcp_server server(so, gateway);
  auto started = server.start();
  BOOST_REQUIRE_MESSAGE(started, (started ? "" : started.error().message));
  BOOST_REQUIRE(server.port() != 0);

  std::vector<actors::serve_request> reqs;
  uint64_t seed = 5;
  for (size_t i = 0; i < 6; ++i) {
    const auto& p = story_prompts()[i];
    reqs.push_back(i % 2 == 0 ? greedy(p, 60) : seeded(p, 60, seed++));
  }
  // Two connections, three requests in flight on each.
  std::vector<std::future<wire_result>> futures;
  std::vector<transport::client> clients;
  for (int k = 0; k < 2; ++k) {
    auto c = transport::client::connect(transport::client_options{"127.0.0.1", server.port()});
    BOOST_REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
    clients.push_back(std::move(*c));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    futures.push_back(std::async(std::launch::async, [&, i] { return run_on(clients[i % 2], reqs[i]); }));
  }
  for (size_t i = 0; i < reqs.size(); ++i) {
    wire_result w = futures[i].get();
    BOOST_TEST_CONTEXT("request " << i) {
      BOOST_REQUIRE_MESSAGE(w.final, (w.final ? "" : w.final.error().message));
      const reference ref = h.generate_reference(reqs[i]);
      BOOST_TEST(w.ids == ref.ids, boost::test_tools::per_element());
      BOOST_TEST(w.text == ref.text);
      BOOST_TEST(w.final->completion_tokens == ref.ids.size());
    }
  }
  // Overloaded and invalid requests come back as error frames; the connection stays usable.
  auto bad = greedy("Once upon a time", 10);
  bad.prompt_tokens.assign(600, 5);
  bad.prompt.clear();
  wire_result w = run_on(clients[0], bad);
  BOOST_REQUIRE(!w.final);
  BOOST_TEST(int(w.final.error().code) == int(transport::errc::prompt_too_long), w.final.error().message);
  BOOST_TEST(run_on(clients[0], greedy("Mom said", 5)).final.has_value());
  for (auto& c : clients) c.close();
  server.stop();
}

BOOST_AUTO_TEST_CASE(disconnect_cancels_and_frees_blocks) {
  serve_harness h(make_cluster(model_path("stories260K.bin"), model_path("tok512.bin"), 5, 1));
  actors::tcp_gateway gateway(h.system(), h.node().router);
  transport::tcp_server server(transport::server_options{}, gateway);
  BOOST_REQUIRE(server.start());
  {
    auto c = transport::client::connect(transport::client_options{"127.0.0.1", server.port()});
    BOOST_REQUIRE(c);
    auto r = to_wire(greedy("Once upon a time", 400));
    std::promise<void> first;
    bool seen = false;
    std::thread t([&] {
      (void)c->generate(r, [&](const transport::token_chunk&) {
        if (!seen) {
          seen = true;
          first.set_value();
        }
      });
    });
    BOOST_REQUIRE(first.get_future().wait_for(std::chrono::seconds(60)) == std::future_status::ready);
    c->close();  // the pending generate returns connection_closed
    t.join();
  }
  bool freed = false;
  for (int i = 0; i < 100000 && !freed; ++i) {
    const auto st = h.stats();
    freed = st[0].n_free_blocks == st[0].n_blocks && st[0].n_running == 0 && st[0].n_waiting == 0;
  }
  BOOST_TEST(freed);
  server.stop();
}

BOOST_AUTO_TEST_CASE(troupe_serve_binary_answers_a_client) {
  // Start `troupe serve --port 0`, read the port it prints, ask it, stop it with SIGTERM.
  int out[2];
  BOOST_REQUIRE(::pipe(out) == 0);
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    const std::string model = model_path("stories260K.bin").string();
    const std::string tok = model_path("tok512.bin").string();
    const std::string bin = troupe_binary().string();
    ::execl(bin.c_str(), bin.c_str(), "serve", "--model", model.c_str(), "--tokenizer", tok.c_str(), "--stages", "2",
            "--port", "0", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out[1]);
  // Stops the server however the test ends.
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
  while (::read(out[0], &ch, 1) == 1) {
    if (ch != '\n') {
      line += ch;
      continue;
    }
    if (line.find("listening on") != std::string::npos) break;
    all += line + "\n";
    line.clear();
  }
  const auto colon = line.find("127.0.0.1:");
  BOOST_REQUIRE_MESSAGE(colon != std::string::npos, "no listening line in: " << all << line);
  const uint16_t port = uint16_t(std::stoi(line.substr(colon + 10)));
  {
    auto c = transport::client::connect(transport::client_options{"127.0.0.1", port});
    BOOST_REQUIRE_MESSAGE(c, (c ? "" : c.error().message));
    auto r = greedy("Once upon a time", 40);
    wire_result w = run_on(*c, r);
    BOOST_REQUIRE_MESSAGE(w.final, (w.final ? "" : w.final.error().message));
    // The reference: `troupe generate` itself.
    auto gen = run_command(troupe_binary().string() + " generate --model " + model_path("stories260K.bin").string() +
                           " --tokenizer " + model_path("tok512.bin").string() +
                           " --prompt 'Once upon a time' -n 40 --threads 1 2>/dev/null");
    BOOST_REQUIRE_EQUAL(gen.exit_code, 0);
    BOOST_TEST(gen.out == "Once upon a time" + w.text + "\n");
    c->close();
  }
  guard.stop();
  BOOST_TEST(WIFEXITED(guard.status));
  BOOST_TEST(WEXITSTATUS(guard.status) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
