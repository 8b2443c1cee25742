// The /v1/tasks store: lifecycle, expiry by time and by count, the cap on active tasks. The clock
// is passed in, so nothing waits.
#include <boost/test/unit_test.hpp>

#include "transport/task_store.hpp"

using namespace troupe::transport;
using namespace std::chrono_literals;

namespace tt = troupe::transport;

namespace troupe::transport {
inline std::ostream& operator<<(std::ostream& os, task_status s) { return os << task_status_name(s); }
}  // namespace troupe::transport

BOOST_AUTO_TEST_SUITE(task_store)

BOOST_AUTO_TEST_CASE(lifecycle_and_expiry_by_time) {
  tt::task_store s(1000ms, 10, 10);
  const auto t0 = tt::task_store::clock::now();
  auto id = s.create(42, t0);
  BOOST_REQUIRE(id);
  BOOST_TEST(s.get(*id, t0)->status == task_status::queued);
  BOOST_TEST(s.active(*id));
  s.add_text(*id, "Once");
  s.add_text(*id, " upon");
  BOOST_TEST(s.get(*id, t0)->status == task_status::running);
  BOOST_TEST(s.get(*id, t0)->text == "Once upon");
  task_record r = *s.get(*id, t0);
  r.status = task_status::done;
  r.finish_reason = "length";
  s.finish(*id, r, t0);
  BOOST_TEST(!s.active(*id));
  BOOST_TEST(s.get(*id, t0 + 999ms)->status == task_status::done);
  BOOST_TEST(s.get(*id, t0 + 999ms)->created == 42);
  s.add_text(*id, "late");  // ignored once finished
  BOOST_TEST(s.get(*id, t0 + 999ms)->text == "Once upon");
  BOOST_TEST(!s.get(*id, t0 + 1000ms));  // expired
  BOOST_TEST(s.size(t0 + 1000ms) == 0u);
  BOOST_TEST(!s.get("task-nope", t0));
}

BOOST_AUTO_TEST_CASE(keeps_at_most_max_finished_and_caps_active_tasks) {
  tt::task_store s(1h, 2, 3);
  const auto t0 = tt::task_store::clock::now();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(*s.create(0, t0));
  BOOST_TEST(!s.create(0, t0));  // 3 active: the cap
  for (const auto& id : ids) {
    task_record r;
    r.status = task_status::cancelled;
    s.finish(id, r, t0);
  }
  BOOST_TEST(!s.get(ids[0], t0));  // the oldest finished went first
  BOOST_TEST(s.get(ids[1], t0)->status == task_status::cancelled);
  BOOST_TEST(s.get(ids[2], t0).has_value());
  BOOST_TEST(s.create(0, t0).has_value());
  BOOST_TEST(ids[0] != ids[1]);
  BOOST_TEST(task_status_name(task_status::running) == std::string("running"));
}

BOOST_AUTO_TEST_SUITE_END()
