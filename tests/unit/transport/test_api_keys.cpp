// The API key file and api_key_set: parsing, constant-time lookup, per-key limits with an
// injected clock (no sleeps), counts for /metrics.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <fstream>
#include <string>

#include "tests/test_support.hpp"
#include "transport/api_keys.hpp"

using namespace troupe::transport;
using namespace std::chrono_literals;

namespace {

result<std::vector<api_key>> parse(const std::string& text) {
  static troupe::test::temp_dir dir("api-keys");
  const auto path = (dir.path / "keys").string();
  std::ofstream(path) << text;
  return read_api_key_file(path);
}

std::string error_of(const std::string& text) {
  auto r = parse(text);
  return r ? std::string("(parsed)") : r.error().message;
}

api_key limited(std::string key, std::string name, double rate, double tokens, double burst = 0) {
  api_key k;
  k.key = std::move(key);
  k.name = std::move(name);
  k.limits = {rate, tokens, burst};
  return k;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(api_keys)

BOOST_AUTO_TEST_CASE(reads_names_limits_and_priority_and_the_one_key_per_line_format) {
  auto keys = parse(
    "# keys\n"
    "sk-alice name=alice rate=60/min tokens=20000/min burst=10 priority=interactive\n"
    "sk-night  name=nightly tokens=120000/h priority=batch   # a comment\n"
    "\n"
    "  sk-plain  \n"
    "sk-fast name=fast rate=2/s\n");
  BOOST_TEST_REQUIRE(keys.has_value(), (keys ? "" : keys.error().message));
  BOOST_TEST_REQUIRE(keys->size() == 4u);
  const auto& a = keys->at(0);
  BOOST_TEST(a.key == "sk-alice");
  BOOST_TEST(a.name == "alice");
  BOOST_TEST(a.limits.requests_per_minute == 60.0);
  BOOST_TEST(a.limits.tokens_per_minute == 20000.0);
  BOOST_TEST(a.limits.burst == 10.0);
  BOOST_TEST((a.priority == request_priority::interactive));
  const auto& n = keys->at(1);
  BOOST_TEST(n.name == "nightly");
  BOOST_TEST(n.limits.requests_per_minute == 0.0);
  BOOST_TEST(n.limits.tokens_per_minute == 2000.0);
  BOOST_TEST((n.priority == request_priority::batch));
  const auto& p = keys->at(2);  // the older format: a key alone
  BOOST_TEST(p.key == "sk-plain");
  BOOST_TEST(p.name == "key-5");  // named by its line
  BOOST_TEST(p.limits.requests_per_minute == 0.0);
  BOOST_TEST((p.priority == request_priority::interactive));
  BOOST_TEST(keys->at(3).limits.requests_per_minute == 120.0);
}

BOOST_AUTO_TEST_CASE(malformed_lines_are_refused_with_file_and_line_and_never_echo_a_key) {
  std::string e = error_of("sk-a name=a\nsk-b speed=3\n");
  BOOST_TEST(e.find(":2: unknown option 'speed'") != std::string::npos, e);
  e = error_of("sk-a rate=60\n");
  BOOST_TEST(e.find(":1: rate=60 must be N/s, N/min or N/h") != std::string::npos, e);
  e = error_of("sk-a rate=-1/min\n");
  BOOST_TEST(e.find(":1: rate=") != std::string::npos, e);
  e = error_of("sk-a priority=urgent\n");
  BOOST_TEST(e.find("priority=urgent must be interactive or batch") != std::string::npos, e);
  e = error_of("sk-a burst=5\n");
  BOOST_TEST(e.find("give rate= too") != std::string::npos, e);
  e = error_of("sk-a name=bad/name\n");
  BOOST_TEST(e.find("name 'bad/name'") != std::string::npos, e);
  e = error_of("sk-a name=x\nsk-b name=x\n");
  BOOST_TEST(e.find(":2: name 'x' is already used") != std::string::npos, e);
  e = error_of("sk-secret-1 name=x\nsk-secret-1 name=y\n");
  BOOST_TEST(e.find(":2: this key is already on an earlier line") != std::string::npos, e);
  BOOST_TEST(e.find("sk-secret-1") == std::string::npos, e);
  e = error_of("sk-a and more\n");
  BOOST_TEST(e.find("'and' is not an option") != std::string::npos, e);
  e = error_of("# none\n");
  BOOST_TEST(e.find("no API key") != std::string::npos, e);
}

BOOST_AUTO_TEST_CASE(find_matches_whole_keys_only) {
  auto set = api_key_set::without_limits({"sk-first", "sk-second"});
  BOOST_TEST_REQUIRE(set->find("sk-second") != nullptr);
  BOOST_TEST(set->find("sk-second")->name == "key-2");
  BOOST_TEST(set->find("sk-secon") == nullptr);
  BOOST_TEST(set->find("sk-second!") == nullptr);
  BOOST_TEST(set->find("") == nullptr);
  BOOST_TEST(set->find(std::string("sk-first\0", 9)) == nullptr);
}

BOOST_AUTO_TEST_CASE(requests_over_the_rate_are_refused_with_a_retry_time_and_other_keys_are_unaffected) {
  const auto t0 = api_key_set::clock::time_point{} + 1h;
  api_key_set set({limited("sk-a", "alice", 60, 0, 2), limited("sk-b", "bob", 60, 0, 2)}, t0);
  const api_key& alice = *set.find("sk-a");
  const api_key& bob = *set.find("sk-b");
  BOOST_TEST(!set.admit(alice, t0).has_value());
  BOOST_TEST(!set.admit(alice, t0).has_value());  // the burst of 2
  auto refused = set.admit(alice, t0);
  BOOST_TEST_REQUIRE(refused.has_value());
  BOOST_TEST(refused->retry_after.count() == 1000);  // 60/min: one a second
  BOOST_TEST(refused->retry_after_s() == 1);
  BOOST_TEST(!refused->tokens);
  BOOST_TEST(!set.admit(bob, t0).has_value());  // bob's bucket is his own
  BOOST_TEST(!set.admit(alice, t0 + 1s).has_value());
  const auto counts = set.rate_limited_counts();
  BOOST_TEST_REQUIRE(counts.size() == 2u);
  BOOST_TEST(counts[0].first == "alice");
  BOOST_TEST(counts[0].second == 1u);
  BOOST_TEST(counts[1].first == "bob");
  BOOST_TEST(counts[1].second == 0u);
}

BOOST_AUTO_TEST_CASE(tokens_charged_after_a_request_hold_back_the_next_until_repaid) {
  const auto t0 = api_key_set::clock::time_point{} + 1h;
  api_key_set set({limited("sk-a", "alice", 0, 600)}, t0);  // 600 tokens/min: 10 per second
  const api_key& alice = *set.find("sk-a");
  BOOST_TEST(!set.admit(alice, t0).has_value());
  BOOST_TEST(!set.admit(alice, t0).has_value());  // nothing charged yet: no request limit
  set.charge_tokens(alice, 650, t0);              // the two used 650 tokens: 50 in debt
  auto refused = set.admit(alice, t0);
  BOOST_TEST_REQUIRE(refused.has_value());
  BOOST_TEST(refused->tokens);
  BOOST_TEST(refused->retry_after.count() == 5100);  // 51 tokens at 10/s
  BOOST_TEST(refused->retry_after_s() == 6);         // rounded up
  BOOST_TEST(set.admit(alice, t0 + 5s).has_value());
  BOOST_TEST(!set.admit(alice, t0 + 5100ms).has_value());
}

BOOST_AUTO_TEST_CASE(the_default_burst_is_one_minute_of_requests) {
  const auto t0 = api_key_set::clock::time_point{} + 1h;
  api_key_set set({limited("sk-a", "alice", 3, 0)}, t0);
  const api_key& alice = *set.find("sk-a");
  for (int i = 0; i < 3; ++i) BOOST_TEST(!set.admit(alice, t0).has_value());
  auto refused = set.admit(alice, t0);
  BOOST_TEST_REQUIRE(refused.has_value());
  BOOST_TEST(refused->retry_after.count() == 20'000);
}

BOOST_AUTO_TEST_SUITE_END()
