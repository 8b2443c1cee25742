#pragma once
// Runs troupe's serving actors in this process and compares what they stream with the engine's
// reference generate() for the same request. Waits use receive with timeouts, never sleeps.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include "actors/spawn_serve.hpp"
#include "cluster-config/cluster_config.hpp"
#include "engine/generator.hpp"
#include "engine/model_weights.hpp"
#include "engine/stop_rule.hpp"
#include "engine/text_stream.hpp"
#include "engine/tokenizer.hpp"
#include "tests/test_support.hpp"

namespace troupe::actors {
inline std::ostream& operator<<(std::ostream& os, const request_id& id) { return os << id.value; }
}  // namespace troupe::actors

namespace troupe::test {

using namespace std::chrono_literals;

/// A cluster config for `model` with n_stages even stages and n_replicas replicas.
inline config::cluster_config make_cluster(const std::filesystem::path& model, const std::filesystem::path& tokenizer,
                                           int n_layers, int n_stages, int n_replicas = 1) {
  config::cluster_config c;
  c.model.path = model.string();
  c.model.tokenizer = tokenizer.string();
  c.replicas = n_replicas;
  auto stages = config::split_layers_evenly(n_layers, n_stages);
  BOOST_REQUIRE(stages);
  c.stages = *stages;
  c.batching.block_size = 16;
  c.batching.n_blocks = 512;
  c.batching.max_step_tokens = 256;
  c.batching.prefill_chunk = 64;
  c.batching.max_running = 32;
  c.batching.max_waiting = 256;
  return c;
}

/// What a client saw for one request.
struct served {
  actors::request_id id{};
  std::vector<int32_t> ids;
  std::string text;
  bool ended = false;
  actors::stream_end end;
  int n_chunks = 0;
};

/// What the engine's generate() gives for the same request.
struct reference {
  std::vector<int32_t> ids;
  std::string text;
};

class serve_harness {
 public:
  serve_harness(config::cluster_config cluster, actors::serve_options options = {}) {
    actors::configure_actor_system(cfg_);
    sys_ = std::make_unique<caf::actor_system>(cfg_);
    auto tok = engine::load_tokenizer(cluster.model.path, cluster.model.tokenizer);
    BOOST_REQUIRE_MESSAGE(tok, (tok ? "" : tok.error().message));
    tok_ = std::shared_ptr<const engine::tokenizer>(std::move(*tok));
    auto full = engine::load_model(cluster.model.path);
    BOOST_REQUIRE_MESSAGE(full, (full ? "" : full.error().message));
    full_ = std::make_unique<engine::model_weights>(std::move(*full));
    auto node = actors::spawn_serve(*sys_, std::move(cluster), tok_, options);
    BOOST_REQUIRE_MESSAGE(node, (node ? "" : node.error()));
    node_ = std::move(*node);
    self_ = std::make_unique<caf::scoped_actor>(*sys_);
  }
  ~serve_harness() {
    self_.reset();
    node_.shutdown();
  }

  caf::actor_system& system() { return *sys_; }
  caf::scoped_actor& self() { return *self_; }
  actors::serve_node& node() { return node_; }
  const engine::tokenizer& tokenizer() const { return *tok_; }
  const engine::model_weights& model() const { return *full_; }

  /// Submits a request; returns its id, or the refusal.
  caf::expected<actors::request_id> submit(const actors::serve_request& r) { return submit_from(*self_, r); }

  /// Submits a request that must be accepted (the test stops if it is refused) and adds it to
  /// `requests`, for check_all_against_engine.
  void submit_accepted(std::map<actors::request_id, actors::serve_request>& requests, const actors::serve_request& r) {
    auto id = submit(r);
    BOOST_REQUIRE_MESSAGE(id, (id ? std::string() : actors::describe(id.error())));
    requests[*id] = r;
  }

  caf::expected<actors::request_id> submit_from(caf::scoped_actor& client, const actors::serve_request& r) {
    caf::expected<actors::request_id> out = caf::make_error(caf::sec::request_timeout);
    client->request(node_.router, 30s, actors::generate_atom::value, r,
                    caf::actor_cast<actors::stream_client_actor>(client))
      .receive([&](actors::request_id id) { out = id; }, [&](caf::error& e) { out = std::move(e); });
    if (out) results_[*out].id = *out;
    return out;
  }

  /// Handles one stream message (or times out: false).
  bool receive_one(std::chrono::seconds timeout = 60s) {
    bool ok = true;
    (*self_)->receive(
      [&](actors::stream_chunk& c) {
        auto& s = results_[c.id];
        s.ids.insert(s.ids.end(), c.ids.begin(), c.ids.end());
        s.text += c.text;
        ++s.n_chunks;
      },
      [&](actors::stream_end& e) {
        auto& s = results_[e.id];
        s.ended = true;
        s.end = e;
      },
      caf::after(timeout) >> [&] { ok = false; });
    return ok;
  }

  /// Receives until every submitted request has ended.
  void wait_all(std::chrono::seconds timeout = 60s) {
    while (!all_ended()) {
      BOOST_REQUIRE_MESSAGE(receive_one(timeout), "timed out waiting for streams");
    }
  }
  bool all_ended() const {
    for (const auto& [id, s] : results_) {
      if (!s.ended) return false;
    }
    return true;
  }
  const served& result(actors::request_id id) { return results_[id]; }
  std::map<actors::request_id, served>& results() { return results_; }

  std::vector<actors::scheduler_stats> stats() {
    std::vector<actors::scheduler_stats> out;
    (*self_)->request(node_.router, 30s, actors::stats_atom::value)
      .receive([&](std::vector<actors::scheduler_stats>& s) { out = std::move(s); },
               [&](caf::error& e) { BOOST_FAIL("stats failed: " << caf::to_string(e)); });
    return out;
  }

  /// The engine's reference output for `r` (prompt text with BOS, as `troupe generate`).
  reference generate_reference(const actors::serve_request& r) const {
    std::vector<int32_t> prompt = r.prompt_tokens.empty() ? tok_->encode(r.prompt, true) : r.prompt_tokens;
    engine::generate_options opts;
    opts.max_new_tokens = r.max_tokens;
    opts.sampling = r.sampling;
    opts.stop_at_eos = r.stop_at_eos;
    opts.ctx_size = ctx_size();
    // The model's stop rule, as `troupe generate` applies it, plus the request's stop strings.
    const engine::stop_rule rule = engine::make_stop_rule(full_->config, *tok_);
    opts.end_ids = rule.end_ids;
    std::vector<std::string> stops = r.stop;
    if (r.stop_at_eos) stops.insert(stops.end(), rule.end_texts.begin(), rule.end_texts.end());
    reference ref;
    engine::text_stream stream(*tok_, prompt.back(), stops);
    auto st = engine::generate(*full_, prompt, opts, [&](int32_t id) {
      ref.ids.push_back(id);
      if (r.stop_at_eos && rule.ends(id)) return true;
      const auto out = stream.push(id);
      ref.text += out.text;
      return !out.stopped;
    });
    BOOST_REQUIRE_MESSAGE(st, (st ? "" : st.error().message));
    ref.text += stream.finish();
    return ref;
  }

  int ctx_size() const {
    return node_.cluster.limits.ctx_size > 0 ? node_.cluster.limits.ctx_size : full_->config.max_seq_len;
  }

  /// Checks every ended request against the engine, token for token and byte for byte.
  void check_all_against_engine(const std::map<actors::request_id, actors::serve_request>& requests) {
    for (const auto& [id, r] : requests) {
      const served& s = results_.at(id);
      BOOST_TEST_CONTEXT("request " << id.value << " prompt='" << r.prompt << "' seed=" << r.sampling.seed
                                    << " temperature=" << r.sampling.temperature) {
        BOOST_REQUIRE(s.ended);
        BOOST_TEST(int(s.end.error) == int(actors::serve_errc::none), s.end.message);
        const reference ref = generate_reference(r);
        BOOST_TEST(s.ids == ref.ids, boost::test_tools::per_element());
        BOOST_TEST(s.text == ref.text);
        BOOST_TEST(s.end.completion_tokens == int(ref.ids.size()));
      }
    }
  }

 private:
  caf::actor_system_config cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  std::shared_ptr<const engine::tokenizer> tok_;
  std::unique_ptr<engine::model_weights> full_;
  actors::serve_node node_;
  std::unique_ptr<caf::scoped_actor> self_;
  std::map<actors::request_id, served> results_;
};

inline actors::serve_request greedy(const std::string& prompt, int max_tokens) {
  actors::serve_request r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  return r;
}

inline actors::serve_request seeded(const std::string& prompt, int max_tokens, uint64_t seed) {
  actors::serve_request r = greedy(prompt, max_tokens);
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.9f;
  r.sampling.top_k = 40;
  r.sampling.repetition_penalty = 1.1f;
  r.sampling.seed = seed;
  return r;
}

inline const std::vector<std::string>& story_prompts() {
  static const std::vector<std::string> p = {
    "Once upon a time",
    "The little dog",
    "Lily wanted to",
    "One day, a boy named Tom went to the park. He saw",
    "The sun was shining and",
    "Mom said",
    "There was a big red ball",
    "A cat and a bird were friends. Every day they",
  };
  return p;
}

}  // namespace troupe::test
