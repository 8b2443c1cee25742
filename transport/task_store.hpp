#pragma once
// The asynchronous tasks of POST /v1/tasks: id -> status and result. A finished task is kept for
// `ttl` and at most `max_finished` of them (the oldest go first); tasks still queued or running
// count against `max_tasks`. Thread-safe; the clock is a parameter so tests need not wait.
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace troupe::transport {

enum class task_status { queued, running, done, failed, cancelled };
const char* task_status_name(task_status s);

struct task_record {
  std::string id;
  task_status status = task_status::queued;
  std::string text;           // generated so far (all of it once done)
  std::string finish_reason;  // "stop" | "length" once done
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  std::string error_code;     // failed: the client protocol's code name ("overloaded", ...)
  std::string error_message;
  int64_t created = 0;        // unix seconds
};

class task_store {
 public:
  using clock = std::chrono::steady_clock;

  task_store(std::chrono::milliseconds ttl, size_t max_finished, size_t max_tasks);

  /// A new queued task; nullopt when max_tasks are queued or running.
  std::optional<std::string> create(int64_t created_unix, clock::time_point now = clock::now());
  /// Marks a queued task running and appends text (no-op for unknown or finished tasks).
  void add_text(const std::string& id, const std::string& text);
  /// Ends a task (done, failed or cancelled), keeping its record for ttl.
  void finish(const std::string& id, task_record result, clock::time_point now = clock::now());
  /// The task, or nullopt if unknown or expired.
  std::optional<task_record> get(const std::string& id, clock::time_point now = clock::now());
  /// True if the task is queued or running.
  bool active(const std::string& id) const;
  /// Tasks held (active + finished), after expiring.
  size_t size(clock::time_point now = clock::now());

 private:
  void expire(clock::time_point now);  // mu_ held

  const std::chrono::milliseconds ttl_;
  const size_t max_finished_;
  const size_t max_tasks_;
  mutable std::mutex mu_;
  uint64_t next_ = 1;
  size_t n_active_ = 0;
  std::map<std::string, task_record> tasks_;
  std::deque<std::pair<clock::time_point, std::string>> finished_;  // in finishing order
};

}  // namespace troupe::transport
