// The UCX data plane between two data_plane instances of this process over loopback (UCX's tcp
// and shared-memory transports, ephemeral ports): exact bytes both ways, eager and rendezvous
// sizes, tags matched whatever the order, the secret handshake, timeouts and a peer that goes
// away. Every wait has a deadline.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstring>
#include <future>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "transport/data_plane.hpp"

using troupe::transport::data_message;
using troupe::transport::data_plane_options;
using troupe::transport::errc;
using troupe::transport::error;
using troupe::transport::peer_id;
using troupe::transport::result;
using plane = troupe::transport::data_plane;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<plane> start_plane(const std::string& secret, plane::peer_down_fn on_down = {}) {
  data_plane_options o;
  o.host = "127.0.0.1";
  o.secret = secret;
  o.net_devices = "lo";
  o.handshake_timeout = 3s;
  auto p = plane::start(o, std::move(on_down));
  BOOST_REQUIRE_MESSAGE(p.has_value(), (p ? "" : p.error().message));
  return std::move(*p);
}

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

result<void> send_wait(plane& p, peer_id to, uint64_t tag, std::vector<std::byte> bytes) {
  auto promise = std::make_shared<std::promise<result<void>>>();
  auto f = promise->get_future();
  p.send(to, tag, std::move(bytes), [promise](result<void> r) { promise->set_value(r); });
  BOOST_REQUIRE(f.wait_for(10s) == std::future_status::ready);
  return f.get();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(data_plane)

BOOST_AUTO_TEST_CASE(moves_exact_bytes_of_decode_and_prefill_sizes_both_ways) {
  auto a = start_plane("s3cret");
  auto b = start_plane("s3cret");
  auto peer = a->connect("127.0.0.1", b->port());
  BOOST_REQUIRE_MESSAGE(peer.has_value(), (peer ? "" : peer.error().message));
  // 1 x 768 floats (decode), 512 x 768 floats (prefill, rendezvous), an empty message, and sizes
  // around the transports' short/bcopy/zcopy thresholds.
  for (size_t n : {size_t(768 * 4), size_t(512 * 768 * 4), size_t(0), size_t(1), size_t(64), size_t(100),
                   size_t(128), size_t(300), size_t(8200), size_t(70000)}) {
    auto bytes = random_bytes(n, uint32_t(n));
    BOOST_REQUIRE(send_wait(*a, *peer, 0x100 + n, bytes).has_value());
    auto got = b->receive_wait(0x100 + n, 0, 10s);
    BOOST_REQUIRE_MESSAGE(got.has_value(), (got ? "" : got.error().message));
    BOOST_TEST(got->tag == 0x100 + n);
    BOOST_TEST((got->bytes == bytes), "message of " << n << " bytes arrived changed");
    // And back, on the same connection: the listener side answers its peer.
    auto back = random_bytes(n, uint32_t(n) + 1);
    BOOST_REQUIRE(send_wait(*b, got->from, 0x200 + n, back).has_value());
    auto got_back = a->receive_wait(0x200 + n, *peer, 10s);
    BOOST_REQUIRE_MESSAGE(got_back.has_value(), (got_back ? "" : got_back.error().message));
    BOOST_TEST((got_back->bytes == back));
  }
  BOOST_TEST(a->stats().n_peers == 1u);
  BOOST_TEST(b->stats().n_rejected == 0u);
}

BOOST_AUTO_TEST_CASE(matches_tags_whatever_the_order_of_arrival_and_of_asking) {
  auto a = start_plane("k");
  auto b = start_plane("k");
  auto peer = a->connect("127.0.0.1", b->port());
  BOOST_REQUIRE(peer.has_value());
  // Asked for before it is sent:
  std::promise<result<data_message>> early;
  auto early_f = early.get_future();
  b->receive(7, 0, 10s, [&early](result<data_message> r) { early.set_value(std::move(r)); });
  for (uint64_t tag : {5, 6, 7}) {
    BOOST_REQUIRE(send_wait(*a, *peer, tag, random_bytes(64, uint32_t(tag))).has_value());
  }
  BOOST_REQUIRE(early_f.wait_for(10s) == std::future_status::ready);
  auto seven = early_f.get();
  BOOST_REQUIRE(seven.has_value());
  BOOST_TEST((seven->bytes == random_bytes(64, 7)));
  // Taken out of order after they arrived:
  auto six = b->receive_wait(6, 0, 10s);
  auto five = b->receive_wait(5, 0, 10s);
  BOOST_REQUIRE(six.has_value());
  BOOST_REQUIRE(five.has_value());
  BOOST_TEST((six->bytes == random_bytes(64, 6)));
  BOOST_TEST((five->bytes == random_bytes(64, 5)));
  // A tag is taken once.
  auto again = b->receive_wait(5, 0, 200ms);
  BOOST_TEST(!again.has_value());
}

BOOST_AUTO_TEST_CASE(a_receive_that_nobody_answers_times_out_on_schedule) {
  auto a = start_plane("k");
  const auto t0 = std::chrono::steady_clock::now();
  auto r = a->receive_wait(42, 0, 300ms);
  const auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_REQUIRE(!r.has_value());
  BOOST_TEST((r.error().code == errc::timeout));
  BOOST_TEST((waited >= 290ms));
  BOOST_TEST((waited < 3s));
}

BOOST_AUTO_TEST_CASE(a_peer_without_the_secret_cannot_connect_or_send) {
  auto a = start_plane("right secret");
  auto intruder = start_plane("wrong secret");
  // Wrong secret: the handshake fails on the intruder's side, nothing is accepted.
  auto peer = intruder->connect("127.0.0.1", a->port());
  BOOST_REQUIRE(!peer.has_value());
  BOOST_TEST((peer.error().code == errc::unauthorized || peer.error().code == errc::io_error ||
              peer.error().code == errc::timeout),
             "unexpected error: " << peer.error().message);
  // No handshake at all: its data is dropped and its connection closed.
  auto raw = intruder->connect_unauthenticated_for_test("127.0.0.1", a->port());
  BOOST_REQUIRE(raw.has_value());
  intruder->send(*raw, 99, random_bytes(128, 1));
  intruder->send(*raw, 100, random_bytes(512 * 768 * 4, 2));  // rendezvous size
  auto got = a->receive_wait(99, 0, 1500ms);
  BOOST_TEST(!got.has_value());
  BOOST_TEST(!a->receive_wait(100, 0, 200ms).has_value());
  BOOST_TEST(a->stats().n_rejected >= 1u);
  BOOST_TEST(a->stats().n_received == 0u);
  BOOST_TEST(a->stats().n_peers == 0u);
  // A peer with the secret still gets through afterwards.
  auto friendly = start_plane("right secret");
  auto ok = friendly->connect("127.0.0.1", a->port());
  BOOST_REQUIRE_MESSAGE(ok.has_value(), (ok ? "" : ok.error().message));
  BOOST_REQUIRE(send_wait(*friendly, *ok, 1, random_bytes(16, 3)).has_value());
  BOOST_TEST(a->receive_wait(1, 0, 10s).has_value());
}

BOOST_AUTO_TEST_CASE(a_peer_that_goes_away_fails_what_waits_on_it) {
  std::promise<peer_id> down;
  auto down_f = down.get_future();
  auto a = start_plane("k", [&down](peer_id id, const error&) { down.set_value(id); });
  auto b = start_plane("k");
  auto peer = b->connect("127.0.0.1", a->port());
  BOOST_REQUIRE(peer.has_value());
  BOOST_REQUIRE(send_wait(*b, *peer, 1, random_bytes(8, 1)).has_value());
  auto first = a->receive_wait(1, 0, 10s);
  BOOST_REQUIRE(first.has_value());
  const peer_id b_on_a = first->from;
  std::promise<result<data_message>> pending;
  auto pending_f = pending.get_future();
  a->receive(2, b_on_a, 30s, [&pending](result<data_message> r) { pending.set_value(std::move(r)); });
  const auto t0 = std::chrono::steady_clock::now();
  b.reset();  // closes its endpoints
  BOOST_REQUIRE_MESSAGE(pending_f.wait_for(10s) == std::future_status::ready,
                        "a receive from a peer that went away did not fail");
  auto r = pending_f.get();
  BOOST_TEST(!r.has_value());
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 10s));
  BOOST_REQUIRE(down_f.wait_for(5s) == std::future_status::ready);
  BOOST_TEST(down_f.get() == b_on_a);
}

BOOST_AUTO_TEST_CASE(refuses_an_empty_secret_and_a_bad_address) {
  data_plane_options o;
  o.secret = "";
  BOOST_TEST(!plane::start(o).has_value());
  o.secret = "k";
  o.host = "not-an-address";
  auto r = plane::start(o);
  BOOST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().message.find("not-an-address") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
