// End to end over the client protocol: `troupe serve`'s pieces (actors + TCP server + gateway)
// on 127.0.0.1 with an ephemeral port, and the blocking client library. Same text as the engine.
#include "tests/integration/serve/serve_harness.hpp"

#include <sys/wait.h>

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

BOOST_AUTO_TEST_SUITE(tcp, *needs_models({"stories260K.bin", "tok512.bin"}))

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
  serve_process server({"--model", model_path("stories260K.bin").string(), "--tokenizer",
                        model_path("tok512.bin").string(), "--stages", "2"});
  BOOST_REQUIRE_MESSAGE(server.port != 0, "no listening line from troupe serve: " << server.output);
  const uint16_t port = server.port;
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
  server.stop();
  BOOST_TEST(WIFEXITED(server.status));
  BOOST_TEST(WEXITSTATUS(server.status) == 0);
}

BOOST_AUTO_TEST_SUITE_END()
