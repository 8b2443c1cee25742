// The ROUTER's admission decisions against fake SCHEDULERs, on CAF's deterministic test
// coordinator (simulated time): what it refuses itself (and with which error), which replica gets
// a request, what a scheduler's refusal or silence gives the client, and that every refused or
// finished request frees its replica's slot.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/router.hpp"
#include "deterministic_system.hpp"
#include "letter_tokenizer.hpp"

using namespace troupe::actors;
using troupe::test::letter_tokenizer;
using namespace std::chrono_literals;

namespace {

enum class admit_mode { accept, refuse_overloaded, never_reply };

/// What a fake SCHEDULER saw.
struct scheduler_log {
  admit_mode mode = admit_mode::accept;
  std::vector<request_id> admitted;  // every admit asked for, in order
  std::vector<request_id> cancelled;
  std::vector<caf::response_promise> unanswered;
};

scheduler_actor::behavior_type fake_scheduler(scheduler_actor::pointer self, std::shared_ptr<scheduler_log> log) {
  return {
    [self, log](admit_atom, sequence_request& r) -> caf::result<request_id> {
      log->admitted.push_back(r.spec.id);
      switch (log->mode) {
        case admit_mode::accept: return r.spec.id;
        case admit_mode::refuse_overloaded: return make_error(serve_errc::overloaded, "the waiting queue is full");
        case admit_mode::never_reply: log->unanswered.push_back(self->make_response_promise()); break;
      }
      return caf::delegated<request_id>{};
    },
    [log](cancel_atom, request_id id) { log->cancelled.push_back(id); },
    [](schedule_atom) {},
    [](watchdog_atom) {},
    [](stats_atom) { return scheduler_stats{}; },
  };
}

/// What a client of the ROUTER saw for one generate request.
struct client_log {
  std::optional<request_id> id;
  std::optional<caf::error> refused;
  std::vector<stream_chunk> chunks;
  std::optional<stream_end> end;
};

stream_client_actor::behavior_type recording_client(stream_client_actor::pointer, std::shared_ptr<client_log> log) {
  return {
    [log](stream_chunk& c) { log->chunks.push_back(std::move(c)); },
    [log](stream_end& e) { log->end = std::move(e); },
  };
}

serve_request tokens(std::vector<int32_t> ids, int max_tokens = 4) {
  serve_request r;
  r.prompt_tokens = std::move(ids);
  r.max_tokens = max_tokens;
  return r;
}

struct router_fixture : troupe::test::deterministic_system {
  std::vector<std::shared_ptr<scheduler_log>> schedulers;
  router_actor router;

  void start(size_t n_replicas, std::chrono::milliseconds admit_timeout = 10'000ms) {
    router_setup setup;
    for (size_t i = 0; i < n_replicas; ++i) {
      schedulers.push_back(std::make_shared<scheduler_log>());
      setup.schedulers.push_back(keep(sys().spawn(fake_scheduler, schedulers.back())));
    }
    setup.tokenizer = std::make_shared<letter_tokenizer>();
    setup.stop_rule.end_ids = {2};
    setup.vocab_size = 32;
    setup.ctx_size = 16;
    setup.max_new_tokens = 100;
    setup.admit_timeout = admit_timeout;
    router = keep(spawn_router(sys(), setup));
  }

  /// Sends one generate request from a new client; its log fills in as the test runs the actors.
  std::shared_ptr<client_log> generate(const serve_request& r) {
    auto log = std::make_shared<client_log>();
    auto client = spawn(recording_client, log);
    request(
      router, [log](request_id id) { log->id = id; }, [log](caf::error& e) { log->refused = e; },
      generate_atom::value, r, client);
    run();
    return log;
  }

  /// The replica each admitted request went to, in the order the ROUTER asked.
  std::vector<size_t> replicas_asked() const {
    std::vector<std::pair<uint64_t, size_t>> all;
    for (size_t i = 0; i < schedulers.size(); ++i) {
      for (request_id id : schedulers[i]->admitted) all.emplace_back(id.value, i);
    }
    std::sort(all.begin(), all.end());
    std::vector<size_t> out;
    for (const auto& [id, replica] : all) out.push_back(replica);
    return out;
  }
};

serve_errc code_of(const std::shared_ptr<client_log>& c) {
  BOOST_REQUIRE_MESSAGE(c->refused.has_value(), "the request was not refused");
  return serve_errc_of(*c->refused);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(router_admission)

BOOST_FIXTURE_TEST_CASE(refuses_bad_requests_itself_with_the_matching_error, router_fixture) {
  start(1);
  const auto bad = [&](serve_request r, serve_errc want, const std::string& says) {
    auto c = generate(r);
    BOOST_TEST_CONTEXT("expecting " << serve_errc_name(want) << " naming '" << says << "'") {
      BOOST_TEST(!c->id.has_value());
      BOOST_TEST(int(code_of(c)) == int(want));
      BOOST_TEST(describe(*c->refused).find(says) != std::string::npos, describe(*c->refused));
    }
  };
  bad(tokens({1, 5}, 101), serve_errc::invalid_request, "max_tokens 101");
  bad(tokens({1, 5}, -1), serve_errc::invalid_request, "max_tokens -1");
  bad(tokens({}), serve_errc::invalid_request, "prompt is empty");
  bad(tokens({1, 32}), serve_errc::invalid_request, "token id 32");
  bad(tokens({1, -4}), serve_errc::invalid_request, "token id -4");
  auto both = tokens({1, 5});
  both.prompt = "ab";
  bad(both, serve_errc::invalid_request, "not both");
  auto empty_stop = tokens({1, 5});
  empty_stop.stop = {"x", ""};
  bad(empty_stop, serve_errc::invalid_request, "empty stop string");
  auto hot = tokens({1, 5});
  hot.sampling.temperature = -1.0f;
  bad(hot, serve_errc::invalid_request, "temperature");
  bad(tokens(std::vector<int32_t>(16, 5)), serve_errc::too_long, "16 tokens");
  // None of these reached a SCHEDULER; a request that fits does.
  BOOST_TEST(schedulers[0]->admitted.empty());
  auto ok = generate(tokens(std::vector<int32_t>(15, 5)));
  BOOST_TEST(ok->id.has_value());
  BOOST_TEST(schedulers[0]->admitted.size() == 1u);
}

BOOST_FIXTURE_TEST_CASE(without_replicas_it_refuses_as_shutting_down, router_fixture) {
  start(0);
  BOOST_TEST(int(code_of(generate(tokens({1, 5})))) == int(serve_errc::shutting_down));
}

BOOST_FIXTURE_TEST_CASE(sends_each_request_to_the_replica_with_the_fewest_in_progress, router_fixture) {
  start(2);
  std::vector<std::shared_ptr<client_log>> clients;
  for (int i = 0; i < 3; ++i) clients.push_back(generate(tokens({1, 5})));
  BOOST_TEST(replicas_asked() == (std::vector<size_t>{0, 1, 0}), boost::test_tools::per_element());
  // The request on replica 1 finishes (no tokens): its client gets the end, replica 1 is free.
  BOOST_REQUIRE_EQUAL(schedulers[1]->admitted.size(), 1u);
  const request_id on_1 = schedulers[1]->admitted.front();
  caf::anon_send(router, finished_atom::value, finished_seq{on_1, finish_reason::length, 0});
  run();
  BOOST_REQUIRE(clients[1]->end.has_value());
  BOOST_TEST(clients[1]->end->id.value == on_1.value);
  BOOST_TEST(int(clients[1]->end->error) == int(serve_errc::none));
  // Now replica 0 has two in progress, replica 1 none: the next two go to replica 1.
  clients.push_back(generate(tokens({1, 5})));
  clients.push_back(generate(tokens({1, 5})));
  BOOST_TEST(replicas_asked() == (std::vector<size_t>{0, 1, 0, 1, 1}), boost::test_tools::per_element());
  for (const auto& c : clients) BOOST_TEST(c->id.has_value());
}

BOOST_FIXTURE_TEST_CASE(a_scheduler_refusal_reaches_the_client_and_frees_the_slot, router_fixture) {
  start(2);
  schedulers[0]->mode = admit_mode::refuse_overloaded;
  auto a = generate(tokens({1, 5}));
  BOOST_TEST(int(code_of(a)) == int(serve_errc::overloaded));
  BOOST_TEST(describe(*a->refused).find("waiting queue is full") != std::string::npos, describe(*a->refused));
  BOOST_TEST(!a->end.has_value());  // a refused request has no stream
  // The refusal freed replica 0's slot: with both idle again, the next request goes there too.
  auto b = generate(tokens({1, 5}));
  BOOST_TEST(int(code_of(b)) == int(serve_errc::overloaded));
  BOOST_TEST(replicas_asked() == (std::vector<size_t>{0, 0}), boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(an_admit_without_reply_is_refused_at_the_admit_timeout, router_fixture) {
  start(2, 5'000ms);
  schedulers[0]->mode = admit_mode::never_reply;
  auto a = generate(tokens({1, 5}));
  auto b = generate(tokens({1, 5}));  // replica 0 has one in progress: replica 1
  BOOST_TEST(b->id.has_value());
  advance(4'999ms);
  BOOST_TEST(!a->id.has_value());
  BOOST_TEST(!a->refused.has_value());
  advance(1ms);
  BOOST_REQUIRE(a->refused.has_value());
  BOOST_TEST((*a->refused == caf::make_error(caf::sec::request_timeout)), caf::to_string(*a->refused));
  // The timed-out request no longer counts: replica 0 (none) gets the next one, not replica 1.
  schedulers[0]->mode = admit_mode::accept;
  auto c = generate(tokens({1, 5}));
  BOOST_TEST(c->id.has_value());
  BOOST_TEST(replicas_asked() == (std::vector<size_t>{0, 1, 0}), boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(a_client_that_goes_away_has_its_requests_cancelled, router_fixture) {
  start(1);
  auto log = std::make_shared<client_log>();
  auto client = sys().spawn(recording_client, log);
  for (int i = 0; i < 2; ++i) {
    request(
      router, [log](request_id id) { log->id = id; }, [](caf::error& e) { BOOST_FAIL(caf::to_string(e)); },
      generate_atom::value, tokens({1, 5}), client);
  }
  auto other = generate(tokens({1, 6}));
  run();
  BOOST_REQUIRE_EQUAL(schedulers[0]->admitted.size(), 3u);
  caf::anon_send_exit(client, caf::exit_reason::user_shutdown);
  run();
  // Both of its requests are cancelled at the SCHEDULER; the other client's is not.
  std::vector<uint64_t> cancelled;
  for (request_id id : schedulers[0]->cancelled) cancelled.push_back(id.value);
  std::sort(cancelled.begin(), cancelled.end());
  BOOST_REQUIRE(other->id.has_value());
  BOOST_TEST(cancelled.size() == 2u);
  BOOST_TEST((std::find(cancelled.begin(), cancelled.end(), other->id->value) == cancelled.end()));
}

BOOST_AUTO_TEST_SUITE_END()
