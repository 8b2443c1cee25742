#include "actors/batch_policy.hpp"

#include "engine/error.hpp"

#include <algorithm>
#include <limits>
#include <tuple>

namespace troupe::actors {

const char* admit_status_name(admit_status s) {
  switch (s) {
    case admit_status::ok: return "ok";
    case admit_status::overloaded: return "overloaded";
    case admit_status::too_long: return "too_long";
  }
  return "unknown";
}

using engine::blocks_for;

batch_policy::batch_policy(const batch_policy_config& cfg) : cfg_(cfg), blocks_(cfg.n_blocks) {}

bool batch_policy::before(const sequence& a, const sequence& b) const {
  auto key = [](const sequence& s) {
    const int64_t dl = s.spec.deadline_ns > 0 ? s.spec.deadline_ns : std::numeric_limits<int64_t>::max();
    return std::tuple(int(s.spec.prio), dl, s.arrival);
  };
  return key(a) < key(b);
}

admit_status batch_policy::admit(sequence_spec spec, int64_t /*now_ns*/) {
  // The ROUTER checked the request (check_request) and gives every request its own id.
  TROUPE_ASSERT(!seqs_.contains(spec.id));
  TROUPE_ASSERT(!spec.prompt.empty() && spec.max_tokens >= 0);
  const int prompt = int(spec.prompt.size());
  TROUPE_ASSERT(prompt < cfg_.ctx_size);
  // The most positions it can ever hold: the last generated token is never fed back.
  const int positions = std::max(prompt, std::min(prompt + spec.max_tokens - 1, cfg_.ctx_size));
  if (blocks_for(positions, cfg_.block_size) > cfg_.n_blocks) return admit_status::too_long;
  if (int(waiting_.size()) >= cfg_.max_waiting) return admit_status::overloaded;
  if (spec.max_tokens <= int(spec.generated.size())) {  // nothing (more) to generate: done at once
    pending_finished_.push_back(finished_seq{spec.id, finish_reason::length, int32_t(spec.generated.size())});
    return admit_status::ok;
  }
  sequence s;
  s.arrival = next_arrival_++;
  s.tokens = spec.prompt;
  s.tokens.insert(s.tokens.end(), spec.generated.begin(), spec.generated.end());
  s.n_generated = int(spec.generated.size());
  spec.generated.clear();
  s.spec = std::move(spec);
  const request_id id = s.spec.id;
  seqs_.emplace(id, std::move(s));
  waiting_.push_back(id);
  return admit_status::ok;
}

void batch_policy::free_blocks(sequence& s) {
  s.table.release(blocks_);
  s.n_blocks_sent = 0;
  if (s.registered) {
    pending_released_.push_back(s.spec.id);
    s.registered = false;
  }
}

void batch_policy::remove(request_id id) {
  std::erase(waiting_, id);
  std::erase(running_, id);
  seqs_.erase(id);
}

void batch_policy::finish(sequence& s, finish_reason r, std::vector<finished_seq>& out) {
  out.push_back(finished_seq{s.spec.id, r, s.n_generated});
  free_blocks(s);
  remove(s.spec.id);
}

void batch_policy::preempt(sequence& s) {
  // Recompute later: prompt + generated tokens are prefilled again; the sampling step counter
  // continues from n_generated, so the text does not change.
  free_blocks(s);
  s.n_computed = 0;
  s.st = state::waiting;
  std::erase(running_, s.spec.id);
  waiting_.push_back(s.spec.id);
  ++n_preemptions_;
}

bool batch_policy::cancel(request_id id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return false;
  free_blocks(it->second);
  remove(id);
  return true;
}

bool batch_policy::grow(sequence& s, int n_positions) {
  return s.table.reserve(n_positions, cfg_.block_size, blocks_);
}

planned_seq batch_policy::make_work(sequence& s, int n_tokens) {
  planned_seq w;
  w.id = s.spec.id;
  w.start_pos = s.n_computed;
  w.tokens.assign(s.tokens.begin() + s.n_computed, s.tokens.begin() + s.n_computed + n_tokens);
  w.new_blocks.assign(s.table.blocks.begin() + s.n_blocks_sent, s.table.blocks.end());
  s.n_blocks_sent = int(s.table.blocks.size());
  if (!s.registered) {
    w.is_new = true;
    w.history = s.tokens;
    s.registered = true;
  }
  s.n_computed += n_tokens;
  w.sample = s.n_computed == int(s.tokens.size());
  w.step = s.n_generated;
  s.first_step = s.n_generated;
  s.in_flight = true;
  return w;
}

step_plan batch_policy::plan(int64_t now_ns, int max_steps) {
  step_plan p;
  p.micro_batch = next_micro_batch_;

  // 1. Deadlines: sequences past theirs finish now (those in flight at their next chance).
  std::vector<request_id> expired;
  for (const auto& [id, s] : seqs_) {
    if (!s.in_flight && s.spec.deadline_ns > 0 && now_ns >= s.spec.deadline_ns) expired.push_back(id);
  }
  std::sort(expired.begin(), expired.end());
  for (request_id id : expired) finish(seqs_.at(id), finish_reason::deadline, pending_finished_);

  int budget = cfg_.max_step_tokens;
  bool preempted = false;
  // This micro-batch's share of the sequences that could run (running, and waiting ones that may
  // start): one per micro-batch in flight, rounded up.
  size_t max_seqs = SIZE_MAX;
  if (cfg_.micro_batches > 1) {
    const size_t could_run =
      running_.size() + std::min(waiting_.size(), size_t(std::max(0, cfg_.max_running - int(running_.size()))));
    max_seqs = std::max<size_t>(1, (could_run + size_t(cfg_.micro_batches) - 1) / size_t(cfg_.micro_batches));
  }

  // 2. Running sequences not in flight: decodes first, then unfinished prefills; each in
  //    priority / deadline / arrival order.
  std::vector<request_id> order;
  for (request_id id : running_) {
    if (!seqs_.at(id).in_flight) order.push_back(id);
  }
  std::sort(order.begin(), order.end(), [&](request_id a, request_id b) {
    const sequence& x = seqs_.at(a);
    const sequence& y = seqs_.at(b);
    const bool xp = int(x.tokens.size()) - x.n_computed > 1;
    const bool yp = int(y.tokens.size()) - y.n_computed > 1;
    if (xp != yp) return !xp;
    return before(x, y);
  });
  for (request_id id : order) {
    if (budget <= 0 || p.seqs.size() >= max_seqs) break;
    auto it = seqs_.find(id);
    if (it == seqs_.end() || it->second.st != state::running || it->second.in_flight) continue;
    sequence& s = it->second;
    const int n = std::min({int(s.tokens.size()) - s.n_computed, cfg_.prefill_chunk, budget});
    bool self_preempted = false;
    while (!grow(s, s.n_computed + n)) {
      // Out of blocks: preempt the newest running sequence (lowest priority first). When that
      // one is in flight, wait for it to come back rather than preempt an older one.
      sequence* victim = nullptr;
      for (request_id r : running_) {
        sequence& c = seqs_.at(r);
        if (victim == nullptr || std::tuple(int(c.spec.prio), c.arrival) > std::tuple(int(victim->spec.prio), victim->arrival)) {
          victim = &c;
        }
      }
      if (victim == nullptr || victim->in_flight) break;
      self_preempted = victim == &s;
      preempt(*victim);
      preempted = true;
      ++p.n_preempted;
      if (self_preempted) break;
    }
    if (self_preempted || int(s.table.blocks.size()) < blocks_for(s.n_computed + n, cfg_.block_size)) continue;
    if (n == 1) ++p.n_decodes;
    p.seqs.push_back(make_work(s, n));
    budget -= n;
  }

  // 3. Waiting sequences start (first chunk of their prefill) while there is budget, room and
  //    blocks; not in a step that had to preempt. Strict order: the head waits for blocks.
  if (!preempted) {
    std::vector<request_id> queue = waiting_;
    std::sort(queue.begin(), queue.end(), [&](request_id a, request_id b) { return before(seqs_.at(a), seqs_.at(b)); });
    for (request_id id : queue) {
      if (budget <= 0 || int(running_.size()) >= cfg_.max_running || p.seqs.size() >= max_seqs) break;
      sequence& s = seqs_.at(id);
      const int n = std::min({int(s.tokens.size()) - s.n_computed, cfg_.prefill_chunk, budget});
      if (!grow(s, s.n_computed + n)) break;
      s.st = state::running;
      std::erase(waiting_, id);
      running_.push_back(id);
      p.seqs.push_back(make_work(s, n));
      budget -= n;
    }
  }

  // 4. Several decode steps in one go: only decodes planned, nobody waiting for a start, no
  //    preemption. Each sequence bounds the count: it must not pass max_tokens or the context
  //    (so those finishes land on the last step, as one step at a time would), and its blocks
  //    must cover every position now.
  if (max_steps > 1 && !p.seqs.empty() && waiting_.empty() && !preempted &&
      p.n_decodes == int(p.seqs.size()) && p.seqs.size() == running_.size()) {
    int k = max_steps;
    for (const planned_seq& w : p.seqs) {
      const sequence& s = seqs_.at(w.id);
      k = std::min({k, s.spec.max_tokens - s.n_generated, cfg_.ctx_size - w.start_pos});
    }
    if (k > 1) {
      int need = 0;
      for (const planned_seq& w : p.seqs) {
        const sequence& s = seqs_.at(w.id);
        need += std::max(0, blocks_for(w.start_pos + k, cfg_.block_size) - int(s.table.blocks.size()));
      }
      if (need > blocks_.n_free()) k = 1;
    }
    if (k > 1) {
      for (planned_seq& w : p.seqs) {
        sequence& s = seqs_.at(w.id);
        grow(s, w.start_pos + k);
        w.new_blocks.insert(w.new_blocks.end(), s.table.blocks.begin() + s.n_blocks_sent, s.table.blocks.end());
        s.n_blocks_sent = int(s.table.blocks.size());
      }
      p.n_steps = k;
    }
  }

  p.finished = std::move(pending_finished_);
  pending_finished_.clear();
  if (p.seqs.empty()) return p;
  ++next_micro_batch_;
  p.released = std::move(pending_released_);
  pending_released_.clear();
  p.n_tokens = cfg_.max_step_tokens - budget;
  std::vector<request_id>& ids = in_flight_[p.micro_batch];
  for (const planned_seq& w : p.seqs) ids.push_back(w.id);
  return p;
}

std::vector<finished_seq> batch_policy::on_result(uint64_t micro_batch, std::span<const sampled_token> tokens) {
  std::vector<finished_seq> out;
  auto mb = in_flight_.find(micro_batch);
  if (mb == in_flight_.end()) return out;
  for (request_id id : mb->second) {
    if (auto it = seqs_.find(id); it != seqs_.end()) it->second.in_flight = false;
  }
  in_flight_.erase(mb);
  for (const sampled_token& t : tokens) {
    auto it = seqs_.find(t.id);
    if (it == seqs_.end()) continue;  // cancelled (or finished) while in flight
    sequence& s = it->second;
    if (t.index != s.n_generated) continue;  // stale: not the token this sequence waits for
    // In a run of several decode steps, every token after the first was fed back in: its K/V
    // are in the cache too.
    if (t.index > s.first_step) ++s.n_computed;
    s.tokens.push_back(t.token);
    ++s.n_generated;
    // The order of the engine's generate(): EOS, stop, length, then context.
    const auto& stops = s.spec.stop_tokens;
    if (s.spec.stop_at_eos && std::find(cfg_.end_ids.begin(), cfg_.end_ids.end(), t.token) != cfg_.end_ids.end()) {
      finish(s, finish_reason::eos, out);
    } else if (std::find(stops.begin(), stops.end(), t.token) != stops.end()) {
      finish(s, finish_reason::stop, out);
    } else if (s.n_generated >= s.spec.max_tokens) {
      finish(s, finish_reason::length, out);
    } else if (int(s.tokens.size()) > cfg_.ctx_size) {
      finish(s, finish_reason::context_full, out);
    }
  }
  return out;
}

std::vector<int32_t> batch_policy::stop_ids(request_id id) const {
  std::vector<int32_t> out;
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return out;
  if (it->second.spec.stop_at_eos) out = cfg_.end_ids;
  out.insert(out.end(), it->second.spec.stop_tokens.begin(), it->second.spec.stop_tokens.end());
  return out;
}

std::vector<finished_seq> batch_policy::on_failure(uint64_t micro_batch) {
  std::vector<finished_seq> out;
  auto mb = in_flight_.find(micro_batch);
  if (mb == in_flight_.end()) return out;
  const std::vector<request_id> ids = std::move(mb->second);
  in_flight_.erase(mb);
  for (request_id id : ids) {
    if (auto it = seqs_.find(id); it != seqs_.end()) finish(it->second, finish_reason::failed, out);
  }
  return out;
}

int batch_policy::reset_all() {
  in_flight_.clear();
  int n = 0;
  for (auto& [id, s] : seqs_) {
    s.in_flight = false;
    if (s.st == state::running || s.n_computed > 0 || s.registered) ++n;
    s.table.release(blocks_);
    s.n_blocks_sent = 0;
    s.registered = false;
    s.n_computed = 0;
    if (s.st == state::running) {
      s.st = state::waiting;
      waiting_.push_back(id);
    }
  }
  running_.clear();
  pending_released_.clear();  // the new stages never knew them
  return n;
}

std::vector<finished_seq> batch_policy::finish_all(finish_reason reason) {
  std::vector<finished_seq> out;
  std::vector<request_id> ids;
  for (const auto& [id, s] : seqs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (request_id id : ids) finish(seqs_.at(id), reason, out);
  in_flight_.clear();
  pending_released_.clear();
  return out;
}

int batch_policy::n_generated(request_id id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? -1 : it->second.n_generated;
}

int batch_policy::n_blocks_held(request_id id) const {
  auto it = seqs_.find(id);
  return it == seqs_.end() ? -1 : int(it->second.table.blocks.size());
}

}  // namespace troupe::actors
