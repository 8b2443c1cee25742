#include "transport/task_store.hpp"

#include <random>

#include <fmt/format.h>

namespace troupe::transport {

const char* task_status_name(task_status s) {
  switch (s) {
    case task_status::queued: return "queued";
    case task_status::running: return "running";
    case task_status::done: return "done";
    case task_status::failed: return "failed";
    case task_status::cancelled: return "cancelled";
  }
  return "failed";
}

task_store::task_store(std::chrono::milliseconds ttl, size_t max_finished, size_t max_tasks)
    : ttl_(ttl), max_finished_(max_finished), max_tasks_(max_tasks) {}

std::optional<std::string> task_store::create(int64_t created_unix, clock::time_point now) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(mu_);
  expire(now);
  if (n_active_ >= max_tasks_) return std::nullopt;
  // A counter makes ids unique; the random part makes them hard to guess.
  std::string id = fmt::format("task-{}-{:016x}", next_++, rng());
  task_record r;
  r.id = id;
  r.created = created_unix;
  tasks_.emplace(id, std::move(r));
  ++n_active_;
  return id;
}

void task_store::add_text(const std::string& id, const std::string& text) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  auto& t = it->second;
  if (t.status != task_status::queued && t.status != task_status::running) return;
  t.status = task_status::running;
  t.text += text;
}

void task_store::finish(const std::string& id, task_record result, clock::time_point now) {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return;
  auto& t = it->second;
  if (t.status != task_status::queued && t.status != task_status::running) return;
  result.id = t.id;
  result.created = t.created;
  t = std::move(result);
  --n_active_;
  finished_.emplace_back(now, id);
  expire(now);
}

std::optional<task_record> task_store::get(const std::string& id, clock::time_point now) {
  std::lock_guard lock(mu_);
  expire(now);
  auto it = tasks_.find(id);
  if (it == tasks_.end()) return std::nullopt;
  return it->second;
}

bool task_store::active(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = tasks_.find(id);
  return it != tasks_.end() &&
         (it->second.status == task_status::queued || it->second.status == task_status::running);
}

size_t task_store::size(clock::time_point now) {
  std::lock_guard lock(mu_);
  expire(now);
  return tasks_.size();
}

void task_store::expire(clock::time_point now) {
  while (!finished_.empty() && (finished_.size() > max_finished_ || now - finished_.front().first >= ttl_)) {
    tasks_.erase(finished_.front().second);
    finished_.pop_front();
  }
}

}  // namespace troupe::transport
