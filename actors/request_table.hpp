#pragma once
// The ROUTER's requests in progress, as a plain class (no actor, no clock: time is passed in) so
// tests drive it directly. Per request: its client, replica, prompt and every token received so
// far (what a replay after a failure needs), its detokenizer with the stop-string hold-back, the
// text and ids not yet sent, and how it finishes. It also counts each client's requests, so the
// ROUTER monitors a client while it has any.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/actor_addr.hpp>

#include "actors/messages.hpp"
#include "engine/stop_rule.hpp"
#include "engine/text_stream.hpp"
#include "engine/tokenizer.hpp"

namespace troupe::actors {

/// One request in progress.
struct request_entry {
  request_id id{};
  stream_client_actor client;
  size_t replica = 0;
  bool accepted = false;  // the SCHEDULER admitted it and the client has its id
  bool stop_at_eos = true;
  int64_t deadline_ns = 0;         // steady-clock time after which it is over; 0: none
  std::vector<int32_t> prompt;     // token ids, BOS first
  std::vector<int32_t> generated;  // every token received, in order
  // Detokenizes, holding back what may start a stop string: the request's stop strings, then
  // (with stop_at_eos) the model's end markers.
  std::unique_ptr<engine::text_stream> text;
  size_t n_request_stops = 0;  // stop strings [0, n) are the request's (reason stop); the rest end with eos
  std::string ready;           // text to send with the next chunk
  std::vector<int32_t> ids;    // ids to send with the next chunk
  int32_t finish_total = -1;   // tokens it produced in all, once known (-1: running)
  finish_reason reason = finish_reason::length;
  std::string failure;  // reason failed: why
  bool stop_string = false;    // finished because one of the request's stop strings matched

  /// Every token it produced has arrived (and it is finishing).
  bool all_arrived() const { return finish_total >= 0 && int32_t(generated.size()) >= finish_total; }
};

class request_table {
 public:
  /// What add() needs beyond the ids: the request's own stop strings and whether it stops at EOS.
  struct new_request {
    request_id id{};
    stream_client_actor client;
    size_t replica = 0;
    std::vector<int32_t> prompt;  // non-empty
    std::vector<std::string> stop;
    bool stop_at_eos = true;
    int64_t deadline_ns = 0;
  };

  /// `tokenizer` and `rule` must outlive the table.
  request_table(const engine::tokenizer& tokenizer, const engine::stop_rule& rule) : tok_(tokenizer), rule_(rule) {}

  /// Remembers a request; true when it is its client's first (the ROUTER then monitors it).
  bool add(new_request r);
  request_entry* find(request_id id);
  size_t size() const { return requests_.size(); }

  /// A token sampled for a request: appended when it is the next one (index == tokens so far) and
  /// the request is still taking tokens; duplicates and strays are dropped (false). Detokenized
  /// into `ready`; an end token (with stop_at_eos) adds no text. True when the token was taken.
  /// A stop string that completes finishes the request (see stopped_by_text).
  bool append(request_entry& e, int32_t index, int32_t token);
  /// The SCHEDULER finished the request after n_generated tokens. Ignored when it is already
  /// finishing (stop string, cancel): false then.
  bool finish(request_entry& e, int32_t n_generated, finish_reason reason);
  /// Finishes a request as cancelled with the tokens received so far.
  void cancel(request_entry& e);
  /// The text held back, released at the end of a request that did not stop on a stop string.
  void flush(request_entry& e);

  /// Forgets a request; true when its client has no other request (the ROUTER demonitors it).
  bool erase(request_id id);
  /// Forgets every request of a client that went away; returns them (id and replica).
  std::vector<std::pair<request_id, size_t>> erase_client(const caf::actor_addr& client);
  /// Requests whose deadline is before `now_ns`.
  std::vector<request_id> expired(int64_t now_ns) const;

 private:
  const engine::tokenizer& tok_;
  const engine::stop_rule& rule_;
  std::unordered_map<request_id, request_entry> requests_;
  std::unordered_map<caf::actor_addr, int> clients_;  // client -> requests in progress
};

}  // namespace troupe::actors
