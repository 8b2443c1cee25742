#include "actors/request_table.hpp"

#include "engine/error.hpp"

namespace troupe::actors {

bool request_table::add(new_request r) {
  TROUPE_ASSERT(!r.prompt.empty() && !requests_.contains(r.id));
  request_entry e;
  e.id = r.id;
  e.client = r.client;
  e.replica = r.replica;
  e.stop_at_eos = r.stop_at_eos;
  e.deadline_ns = r.deadline_ns;
  e.n_request_stops = r.stop.size();
  std::vector<std::string> stops = std::move(r.stop);
  if (r.stop_at_eos) stops.insert(stops.end(), rule_.end_texts.begin(), rule_.end_texts.end());
  e.text = std::make_unique<engine::text_stream>(tok_, r.prompt.back(), std::move(stops));
  e.prompt = std::move(r.prompt);
  const caf::actor_addr addr = e.client.address();
  requests_.emplace(e.id, std::move(e));
  return clients_[addr]++ == 0;
}

request_entry* request_table::find(request_id id) {
  auto it = requests_.find(id);
  return it == requests_.end() ? nullptr : &it->second;
}

bool request_table::append(request_entry& e, int32_t index, int32_t token) {
  if (e.all_arrived() || index != int32_t(e.generated.size())) return false;
  e.generated.push_back(token);
  e.ids.push_back(token);
  if (e.stop_at_eos && rule_.ends(token)) return true;  // the end token itself is not text
  engine::text_stream::output out = e.text->push(token);
  e.ready += out.text;
  if (out.stopped) {
    const bool model_marker = out.stop_index >= e.n_request_stops;  // the model's end marker spelled out
    e.stop_string = !model_marker;
    e.finish_total = int32_t(e.generated.size());
    e.reason = model_marker ? finish_reason::eos : finish_reason::stop;
  }
  return true;
}

bool request_table::finish(request_entry& e, int32_t n_generated, finish_reason reason) {
  if (e.finish_total >= 0) return false;
  e.finish_total = n_generated;
  e.reason = reason;
  return true;
}

void request_table::cancel(request_entry& e) {
  e.finish_total = int32_t(e.generated.size());
  e.reason = finish_reason::cancelled;
}

void request_table::flush(request_entry& e) { e.ready += e.text->finish(); }

bool request_table::erase(request_id id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  const caf::actor_addr addr = it->second.client.address();
  requests_.erase(it);
  auto c = clients_.find(addr);
  if (c == clients_.end() || --c->second > 0) return false;
  clients_.erase(c);
  return true;
}

std::vector<std::pair<request_id, size_t>> request_table::erase_client(const caf::actor_addr& client) {
  std::vector<std::pair<request_id, size_t>> gone;
  for (auto it = requests_.begin(); it != requests_.end();) {
    if (it->second.client.address() == client) {
      gone.emplace_back(it->first, it->second.replica);
      it = requests_.erase(it);
    } else {
      ++it;
    }
  }
  clients_.erase(client);
  return gone;
}

std::vector<request_id> request_table::expired(int64_t now_ns) const {
  std::vector<request_id> out;
  for (const auto& [id, e] : requests_) {
    if (e.deadline_ns > 0 && e.deadline_ns < now_ns) out.push_back(id);
  }
  return out;
}

}  // namespace troupe::actors
