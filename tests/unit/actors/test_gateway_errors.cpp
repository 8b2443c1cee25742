// The TCP gateway is the one place where control-plane errors become client protocol codes
// (tcp_gateway.cpp client_code). Driven on CAF's deterministic test coordinator with a fake ROUTER
// that refuses, times out or ends streams as told, and a sink that records what the client gets.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/tcp_gateway.hpp"
#include "deterministic_system.hpp"
#include "transport/request_handler.hpp"

using namespace troupe;
using namespace troupe::actors;
using namespace std::chrono_literals;

namespace {

/// What the client would have been sent.
class recording_sink final : public transport::stream_sink {
 public:
  explicit recording_sink(uint64_t request_id) : request_id_(request_id) {}
  transport::connection_id connection() const override { return transport::connection_id{1}; }
  uint64_t request_id() const override { return request_id_; }
  bool send_chunk(std::string text, std::vector<int32_t>) override {
    text_ += text;
    return !ended();
  }
  bool send_final(transport::final_frame f) override {
    if (ended()) return false;
    final_ = f;
    return true;
  }
  bool send_error(transport::errc code, std::string message) override {
    if (ended()) return false;
    error_ = code;
    message_ = std::move(message);
    return true;
  }
  bool closed() const override { return ended(); }

  bool ended() const { return final_.has_value() || error_.has_value(); }
  std::optional<transport::errc> error_;
  std::string message_;
  std::optional<transport::final_frame> final_;
  std::string text_;

 private:
  uint64_t request_id_;
};

/// How the fake ROUTER answers the next generate request.
struct router_script {
  std::optional<caf::error> refuse;  // reply with this error
  bool never_reply = false;          // keep the request pending
  std::optional<stream_end> end;     // accept, then end the stream with this
  std::vector<caf::response_promise> pending;
};

router_actor::behavior_type fake_router(router_actor::pointer self, std::shared_ptr<router_script> s) {
  return {
    [self, s](generate_atom, serve_request&, stream_client_actor client) -> caf::result<request_id> {
      if (s->refuse) return *s->refuse;
      if (s->never_reply) {
        s->pending.push_back(self->make_response_promise());
        return caf::delegated<request_id>{};
      }
      if (s->end) {
        stream_end e = *s->end;
        e.id = request_id{7};
        self->send(client, std::move(e));
      }
      return request_id{7};
    },
    [](tokens_atom, token_batch&) {},
    [](finished_atom, finished_seq&) {},
    [](cancel_atom, request_id) {},
    [](stats_atom) { return std::vector<scheduler_stats>{}; },
  };
}

struct gateway_fixture : troupe::test::deterministic_system {
  std::shared_ptr<router_script> script = std::make_shared<router_script>();
  router_actor router = keep(sys().spawn(fake_router, script));
  tcp_gateway gateway{sys(), router, 5'000ms};
  uint64_t next_id = 1;

  /// One generate request through the gateway; the sink as it stands after the actors ran.
  std::shared_ptr<recording_sink> generate() {
    auto sink = std::make_shared<recording_sink>(next_id++);
    transport::generate_request r;
    r.request_id = sink->request_id();
    r.prompt_tokens = {1, 5, 6};
    r.seed = 1;
    gateway.on_generate(sink, r);
    run();
    return sink;
  }
};

int code(const std::shared_ptr<recording_sink>& s) {
  BOOST_REQUIRE_MESSAGE(s->error_.has_value(), "the client got no error");
  return int(*s->error_);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(gateway_errors)

BOOST_FIXTURE_TEST_CASE(router_refusals_become_their_protocol_codes, gateway_fixture) {
  const std::vector<std::pair<serve_errc, transport::errc>> table = {
    {serve_errc::invalid_request, transport::errc::invalid_request},
    {serve_errc::overloaded, transport::errc::overloaded},
    {serve_errc::too_long, transport::errc::prompt_too_long},
    {serve_errc::cancelled, transport::errc::cancelled},
    {serve_errc::deadline_exceeded, transport::errc::deadline_exceeded},
    {serve_errc::shutting_down, transport::errc::shutting_down},
    {serve_errc::failed, transport::errc::internal},
    {serve_errc::internal, transport::errc::internal},
  };
  for (const auto& [from, to] : table) {
    BOOST_TEST_CONTEXT(serve_errc_name(from)) {
      script->refuse = make_error(from, "scripted refusal");
      auto s = generate();
      BOOST_TEST(code(s) == int(to));
      BOOST_TEST(s->message_.find("scripted refusal") != std::string::npos, s->message_);
    }
  }
  // An error that is not the control plane's own (here CAF's) is internal, never dropped.
  script->refuse = caf::make_error(caf::sec::unexpected_message);
  BOOST_TEST(code(generate()) == int(transport::errc::internal));
  BOOST_TEST(gateway.n_in_progress() == 0u);
}

BOOST_FIXTURE_TEST_CASE(a_router_that_never_answers_is_internal_at_the_admit_timeout, gateway_fixture) {
  script->never_reply = true;
  auto s = generate();
  BOOST_TEST(!s->ended());
  BOOST_TEST(gateway.n_in_progress() == 1u);
  advance(4'999ms);
  BOOST_TEST(!s->ended());
  advance(1ms);
  BOOST_TEST(code(s) == int(transport::errc::internal));
  BOOST_TEST(gateway.n_in_progress() == 0u);
}

BOOST_FIXTURE_TEST_CASE(stream_ends_become_a_final_frame_or_an_error, gateway_fixture) {
  const auto end_with = [&](finish_reason reason, serve_errc err, int32_t completion_tokens, bool stop_string = false) {
    stream_end e;
    e.reason = reason;
    e.error = err;
    e.prompt_tokens = 3;
    e.completion_tokens = completion_tokens;
    e.stop_string = stop_string;
    script->end = e;
    return generate();
  };
  // Errors in the stream.
  BOOST_TEST(code(end_with(finish_reason::failed, serve_errc::failed, 2)) == int(transport::errc::internal));
  BOOST_TEST(code(end_with(finish_reason::cancelled, serve_errc::shutting_down, 0)) ==
             int(transport::errc::shutting_down));
  // A deadline before any output is an error; after some output it is a final frame.
  BOOST_TEST(code(end_with(finish_reason::deadline, serve_errc::none, 0)) == int(transport::errc::deadline_exceeded));
  const std::vector<std::tuple<finish_reason, bool, transport::finish_reason>> finals = {
    {finish_reason::deadline, false, transport::finish_reason::deadline},
    {finish_reason::eos, false, transport::finish_reason::stop},
    {finish_reason::length, false, transport::finish_reason::length},
    {finish_reason::context_full, false, transport::finish_reason::length},
    {finish_reason::stop, false, transport::finish_reason::stop},
    {finish_reason::stop, true, transport::finish_reason::stop_string},
    {finish_reason::cancelled, false, transport::finish_reason::cancelled},
  };
  for (const auto& [reason, stop_string, want] : finals) {
    BOOST_TEST_CONTEXT(finish_reason_name(reason) << (stop_string ? " (stop string)" : "")) {
      auto s = end_with(reason, serve_errc::none, 4, stop_string);
      BOOST_REQUIRE(s->final_.has_value());
      BOOST_TEST(!s->error_.has_value());
      BOOST_TEST(int(s->final_->reason) == int(want));
      BOOST_TEST(s->final_->prompt_tokens == 3u);
      BOOST_TEST(s->final_->completion_tokens == 4u);
    }
  }
  BOOST_TEST(gateway.n_in_progress() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
