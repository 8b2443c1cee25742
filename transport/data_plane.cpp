#include "transport/data_plane.hpp"

#include <algorithm>
#include <array>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <ucp/api/ucp.h>

#include "transport/cluster_secret.hpp"
#include "transport/logger.hpp"

namespace troupe::transport {

namespace {

using clock_type = std::chrono::steady_clock;

// Active message ids. Handshake: the listener side sends CHALLENGE(nonce_s); the connecting side
// answers AUTH(mac(nonce_s), nonce_c); the listener checks it and answers AUTH_OK(mac(nonce_c)),
// which the connecting side checks. DATA: header = tag (8 bytes), body = the message.
enum am_id : unsigned { am_challenge = 1, am_auth = 2, am_auth_ok = 3, am_data = 4 };

constexpr size_t nonce_bytes = secret_nonce_bytes;
constexpr size_t mac_bytes = secret_proof_bytes;
using nonce = secret_nonce;
using mac = secret_proof;


constexpr std::string_view label_listener = "troupe data plane v1: listener proves";
constexpr std::string_view label_connector = "troupe data plane v1: connector proves";

const char* status_text(ucs_status_t s) { return ucs_status_string(s); }

// UCX defaults for a cluster: notice a dead peer in seconds, not minutes (see PLATFORM.md).
// Variables already in the environment win.
void set_ucx_defaults() {
  ::setenv("UCX_KEEPALIVE_INTERVAL", "1s", 0);
  ::setenv("UCX_TCP_KEEPIDLE", "1s", 0);
  ::setenv("UCX_TCP_KEEPINTVL", "500ms", 0);
  ::setenv("UCX_TCP_KEEPCNT", "3", 0);
  // A node restarted on its fixed data port must be able to listen again at once, while the
  // connections of its previous run are still in TIME_WAIT.
  ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
}

}  // namespace

struct data_plane::impl {
  enum class peer_state { connecting, challenged, authenticated, down };

  struct peer {
    peer_id id = 0;
    ucp_ep_h ep = nullptr;
    peer_state state = peer_state::connecting;
    bool listener_side = false;  // we accepted it (we send the challenge)
    bool skip_handshake = false; // connect_unauthenticated_for_test
    nonce challenge{};           // the nonce we asked it to prove
    clock_type::time_point deadline{};
    std::promise<result<peer_id>>* waiter = nullptr;  // a connect() waiting for the handshake
    bool rejected_logged = false;
  };

  struct waiter {
    uint64_t tag = 0;
    peer_id from = 0;
    clock_type::time_point deadline{};
    receive_fn done;
  };

  struct send_op {
    impl* self = nullptr;
    peer_id to = 0;
    uint64_t tag = 0;
    std::vector<std::byte> bytes;
    send_done_fn done;
  };

  struct rndv_op {
    impl* self = nullptr;
    data_message msg;
  };

  struct pending_rndv {
    void* desc = nullptr;
    data_message msg;
  };

  data_plane_options options;
  peer_down_fn on_peer_down;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  ucp_listener_h listener = nullptr;
  int worker_fd = -1;
  int wake_fd = -1;
  int epoll_fd = -1;
  uint16_t bound_port = 0;
  std::thread thread;

  // Commands from other threads; the thread runs them.
  std::mutex mu;
  std::deque<std::function<void()>> commands;
  bool stopping = false;
  counters stats_copy;  // guarded by mu, refreshed by the thread

  // Thread only.
  peer_id next_peer = 1;
  std::map<peer_id, peer> peers;
  std::unordered_map<ucp_ep_h, peer_id> by_ep;
  std::multimap<uint64_t, waiter> waiters;  // by tag
  std::map<uint64_t, data_message> unclaimed;
  std::deque<uint64_t> unclaimed_order;
  size_t unclaimed_bytes = 0;
  std::vector<pending_rndv> rndv_queue;  // rendezvous messages to fetch after progress
  // UCX callbacks only record what happened; the reaction (sends, endpoint creation and closing,
  // user callbacks) runs after ucp_worker_progress returns.
  std::vector<std::function<void()>> deferred;
  counters stats_now;
  bool done = false;

  ~impl() { teardown(); }

  // ---- set-up --------------------------------------------------------------------------------
  result<void> init() {
    if (options.secret.empty()) return fail(errc::invalid_request, "data plane: the cluster secret is empty");
    set_ucx_defaults();
    ucp_config_t* config = nullptr;
    if (auto s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) {
      return fail(errc::io_error, "data plane: ucp_config_read: {}", status_text(s));
    }
    if (!options.transports.empty()) {
      if (auto s = ucp_config_modify(config, "TLS", options.transports.c_str()); s != UCS_OK) {
        ucp_config_release(config);
        return fail(errc::io_error, "data plane: transports (UCX_TLS) {}: {}", options.transports, status_text(s));
      }
    }
    if (!options.net_devices.empty()) {
      if (auto s = ucp_config_modify(config, "NET_DEVICES", options.net_devices.c_str()); s != UCS_OK) {
        ucp_config_release(config);
        return fail(errc::io_error, "data plane: NET_DEVICES={}: {}", options.net_devices, status_text(s));
      }
    }
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
    auto s = ucp_init(&params, config, &context);
    ucp_config_release(config);
    if (s != UCS_OK) return fail(errc::io_error, "data plane: ucp_init: {}", status_text(s));

    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only our thread touches the worker
    if (s = ucp_worker_create(context, &wp, &worker); s != UCS_OK) {
      return fail(errc::io_error, "data plane: ucp_worker_create: {}", status_text(s));
    }
    if (s = ucp_worker_get_efd(worker, &worker_fd); s != UCS_OK) {
      return fail(errc::io_error, "data plane: ucp_worker_get_efd: {}", status_text(s));
    }
    for (unsigned id : {am_challenge, am_auth, am_auth_ok, am_data}) {
      ucp_am_handler_param_t hp{};
      hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
      hp.id = id;
      hp.flags = UCP_AM_FLAG_WHOLE_MSG;
      hp.cb = &impl::on_am;
      hp.arg = new am_context{this, id};  // freed in teardown
      am_contexts.push_back(static_cast<am_context*>(hp.arg));
      if (s = ucp_worker_set_am_recv_handler(worker, &hp); s != UCS_OK) {
        return fail(errc::io_error, "data plane: set_am_recv_handler: {}", status_text(s));
      }
    }

    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(options.port);
    if (::inet_pton(AF_INET, options.host.c_str(), &addr.sin_addr) != 1) {
      return fail(errc::invalid_request, "data plane: host '{}' is not an IPv4 address", options.host);
    }
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
    lp.sockaddr.addrlen = sizeof addr;
    lp.conn_handler.cb = &impl::on_conn_request;
    lp.conn_handler.arg = this;
    if (s = ucp_listener_create(worker, &lp, &listener); s != UCS_OK) {
      return fail(errc::io_error, "data plane: cannot listen on {}:{}: {}", options.host, options.port,
                  status_text(s));
    }
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    if (s = ucp_listener_query(listener, &la); s != UCS_OK) {
      return fail(errc::io_error, "data plane: ucp_listener_query: {}", status_text(s));
    }
    bound_port = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);

    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (wake_fd < 0 || epoll_fd < 0) return fail(errc::io_error, "data plane: eventfd/epoll: {}", std::strerror(errno));
    for (int fd : {worker_fd, wake_fd}) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.fd = fd;
      if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return fail(errc::io_error, "data plane: epoll_ctl: {}", std::strerror(errno));
      }
    }
    thread = std::thread([this] { run(); });
    logger().info("data plane listening host={} port={} net_devices={} transports={}", options.host, bound_port,
                  options.net_devices.empty() ? "(ucx default)" : options.net_devices,
                  options.transports.empty() ? "(ucx default)" : options.transports);
    return {};
  }

  struct am_context {
    impl* self;
    unsigned id;
  };
  std::vector<am_context*> am_contexts;

  void teardown() {
    {
      std::lock_guard lock(mu);
      stopping = true;
    }
    wake();
    if (thread.joinable()) thread.join();
    if (listener != nullptr) ucp_listener_destroy(listener);
    if (worker != nullptr) ucp_worker_destroy(worker);
    if (context != nullptr) ucp_cleanup(context);
    listener = nullptr;
    worker = nullptr;
    context = nullptr;
    for (auto* c : am_contexts) delete c;
    am_contexts.clear();
    if (wake_fd >= 0) ::close(wake_fd);
    if (epoll_fd >= 0) ::close(epoll_fd);
    wake_fd = epoll_fd = -1;
  }

  // ---- the thread ----------------------------------------------------------------------------
  void post(std::function<void()> f) {
    {
      std::lock_guard lock(mu);
      commands.push_back(std::move(f));
    }
    wake();
  }

  void wake() const {
    if (wake_fd < 0) return;
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd, &one, sizeof one);
  }

  void run() {
    for (;;) {
      std::deque<std::function<void()>> todo;
      bool stop = false;
      {
        std::lock_guard lock(mu);
        todo.swap(commands);
        stop = stopping;
      }
      for (auto& f : todo) f();
      if (stop) break;
      while (ucp_worker_progress(worker) != 0) {
      }
      run_deferred();
      fetch_rendezvous();
      expire(clock_type::now());
      {
        std::lock_guard lock(mu);
        stats_now.n_peers = 0;
        for (auto& [id, p] : peers) stats_now.n_peers += p.state == peer_state::authenticated ? 1 : 0;
        stats_copy = stats_now;
        if (!commands.empty() || stopping) continue;
      }
      if (!rndv_queue.empty() || !deferred.empty()) continue;
      const ucs_status_t armed = ucp_worker_arm(worker);
      if (armed == UCS_ERR_BUSY) continue;  // more events came in: progress again
      epoll_event events[2];
      const int n = ::epoll_wait(epoll_fd, events, 2, next_timeout_ms());
      for (int i = 0; i < n; ++i) {
        if (events[i].data.fd == wake_fd) {
          uint64_t v = 0;
          [[maybe_unused]] auto r = ::read(wake_fd, &v, sizeof v);
        }
      }
    }
    shutdown_endpoints();
  }

  void run_deferred() {
    while (!deferred.empty()) {
      auto batch = std::move(deferred);
      deferred.clear();
      for (auto& f : batch) f();
    }
  }

  int next_timeout_ms() const {
    auto next = clock_type::time_point::max();
    for (const auto& [tag, w] : waiters) next = std::min(next, w.deadline);
    for (const auto& [id, p] : peers) {
      if (p.state == peer_state::connecting || p.state == peer_state::challenged) next = std::min(next, p.deadline);
    }
    if (next == clock_type::time_point::max()) return 1000;  // nothing due: an occasional look
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(next - clock_type::now()).count();
    return int(std::clamp<long long>(ms, 0, 1000));
  }

  void expire(clock_type::time_point now) {
    for (auto it = waiters.begin(); it != waiters.end();) {
      if (it->second.deadline <= now) {
        auto done_fn = std::move(it->second.done);
        const uint64_t tag = it->first;
        it = waiters.erase(it);
        done_fn(fail(errc::timeout, "data plane: no message with tag {:#x} in time", tag));
      } else {
        ++it;
      }
    }
    std::vector<peer_id> late;
    for (auto& [id, p] : peers) {
      if ((p.state == peer_state::connecting || p.state == peer_state::challenged) && p.deadline <= now) {
        late.push_back(id);
      }
    }
    for (peer_id id : late) {
      logger().warn("data plane handshake timed out peer={}", id);
      drop_peer(id, error{errc::timeout, "the data plane handshake did not finish in time", 0});
    }
  }

  void shutdown_endpoints() {
    std::vector<void*> closing;
    for (auto& [id, p] : peers) {
      if (p.ep == nullptr) continue;
      ucp_request_param_t cp{};
      cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      cp.flags = p.state == peer_state::down ? UCP_EP_CLOSE_FLAG_FORCE : 0;  // flush what is queued
      void* req = ucp_ep_close_nbx(p.ep, &cp);
      if (UCS_PTR_IS_PTR(req)) closing.push_back(req);
      if (p.waiter != nullptr) {
        p.waiter->set_value(fail(errc::shutting_down, "the data plane is stopping"));
        p.waiter = nullptr;
      }
      p.ep = nullptr;
    }
    const auto until = clock_type::now() + std::chrono::seconds(1);
    while (!closing.empty() && clock_type::now() < until) {
      ucp_worker_progress(worker);
      std::erase_if(closing, [](void* r) {
        if (ucp_request_check_status(r) == UCS_INPROGRESS) return false;
        ucp_request_free(r);
        return true;
      });
    }
    for (void* r : closing) ucp_request_free(r);  // did not finish in time
    for (auto& [tag, w] : waiters) w.done(fail(errc::shutting_down, "the data plane is stopping"));
    waiters.clear();
    peers.clear();
    by_ep.clear();
  }

  // ---- peers ---------------------------------------------------------------------------------
  peer& add_peer(ucp_ep_h ep, bool listener_side) {
    const peer_id id = next_peer++;
    peer& p = peers[id];
    p.id = id;
    p.ep = ep;
    p.listener_side = listener_side;
    p.deadline = clock_type::now() + options.handshake_timeout;
    by_ep[ep] = id;
    return p;
  }

  peer* find(ucp_ep_h ep) {
    auto it = by_ep.find(ep);
    if (it == by_ep.end()) return nullptr;
    auto p = peers.find(it->second);
    return p == peers.end() ? nullptr : &p->second;
  }

  ucp_ep_h connect_ep(const std::string& host, uint16_t port, peer_id* out, error* err) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0 || found == nullptr) {
      *err = error{errc::io_error, fmt::format("data plane: cannot resolve {}", host), 0};
      return nullptr;
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = found->ai_addr;
    ep.sockaddr.addrlen = found->ai_addrlen;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &impl::on_ep_error;
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    const auto s = ucp_ep_create(worker, &ep, &h);
    ::freeaddrinfo(found);
    if (s != UCS_OK) {
      *err = error{errc::io_error, fmt::format("data plane: connect {}:{}: {}", host, port, status_text(s)), 0};
      return nullptr;
    }
    *out = add_peer(h, false).id;
    return h;
  }

  // A peer is gone (error, handshake failure, timeout): fail what waits on it, close its endpoint.
  void drop_peer(peer_id id, const error& why) {
    auto it = peers.find(id);
    if (it == peers.end() || it->second.state == peer_state::down) return;
    peer& p = it->second;
    const bool was_authenticated = p.state == peer_state::authenticated;
    p.state = peer_state::down;
    if (p.waiter != nullptr) {
      p.waiter->set_value(std::unexpected(why));
      p.waiter = nullptr;
    }
    for (auto w = waiters.begin(); w != waiters.end();) {
      if (w->second.from == id) {
        auto done_fn = std::move(w->second.done);
        w = waiters.erase(w);
        done_fn(std::unexpected(error{errc::io_error, "data plane: peer down: " + why.message, 0}));
      } else {
        ++w;
      }
    }
    if (p.ep != nullptr) {
      by_ep.erase(p.ep);
      ucp_request_param_t cp{};
      cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* req = ucp_ep_close_nbx(p.ep, &cp);
      if (UCS_PTR_IS_PTR(req)) ucp_request_free(req);
      p.ep = nullptr;
    }
    if (was_authenticated && on_peer_down) on_peer_down(id, why);
    peers.erase(it);
  }

  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<impl*>(arg);
    peer* p = self->find(ep);
    if (p == nullptr) return;
    // A peer that closes or dies shows as a reset; the control plane reports node loss itself.
    if (status == UCS_ERR_CONNECTION_RESET) {
      logger().info("data plane peer gone peer={} status={}", p->id, status_text(status));
    } else {
      logger().warn("data plane peer failed peer={} status={}", p->id, status_text(status));
    }
    self->deferred.push_back(
      [self, id = p->id, status] { self->drop_peer(id, error{errc::io_error, status_text(status), 0}); });
  }

  static void on_conn_request(ucp_conn_request_h req, void* arg) {
    auto* self = static_cast<impl*>(arg);
    self->deferred.push_back([self, req] { self->accept(req); });
  }

  void accept(ucp_conn_request_h req) {
    impl* self = this;
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.conn_request = req;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &impl::on_ep_error;
    ep.err_handler.arg = self;
    ucp_ep_h h = nullptr;
    if (auto s = ucp_ep_create(self->worker, &ep, &h); s != UCS_OK) {
      logger().warn("data plane: cannot accept a connection: {}", status_text(s));
      return;
    }
    peer& p = self->add_peer(h, true);
    p.state = peer_state::challenged;
    p.challenge = random_nonce();
    self->send_control(p, am_challenge, p.challenge.data(), p.challenge.size());
    logger().debug("data plane connection accepted peer={}", p.id);
  }

  // A small handshake message; the payload is copied into the send's own buffer.
  void send_control(peer& p, unsigned id, const void* data, size_t n) {
    auto* op = new send_op{this, p.id, 0, std::vector<std::byte>(n), {}};
    std::memcpy(op->bytes.data(), data, n);
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_AM_SEND_FLAG_REPLY;
    rp.cb.send = &impl::on_control_sent;
    rp.user_data = op;
    void* r = ucp_am_send_nbx(p.ep, id, nullptr, 0, op->bytes.data(), op->bytes.size(), &rp);
    if (!UCS_PTR_IS_PTR(r)) delete op;  // done at once, or failed (the error handler follows)
  }

  static void on_control_sent(void* request, ucs_status_t, void* user_data) {
    delete static_cast<send_op*>(user_data);
    ucp_request_free(request);
  }

  // ---- active messages -----------------------------------------------------------------------
  static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data, size_t length,
                            const ucp_am_recv_param_t* param) {
    auto* ctx = static_cast<am_context*>(arg);
    impl& self = *ctx->self;
    const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    ucp_ep_h ep = (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0 ? param->reply_ep : nullptr;
    peer* p = ep != nullptr ? self.find(ep) : nullptr;
    if (p == nullptr) {
      ++self.stats_now.n_rejected;
      logger().warn("data plane: dropped a message from an unknown endpoint am_id={}", ctx->id);
      return UCS_OK;  // a rendezvous descriptor not fetched is dropped by UCX
    }
    const peer_id from = p->id;
    if (ctx->id != am_data) {
      // Handshake: small, eager; copied, then handled after progress returns.
      std::vector<unsigned char> bytes;
      if (!rndv) bytes.assign(static_cast<const unsigned char*>(data), static_cast<const unsigned char*>(data) + length);
      self.deferred.push_back([&self, id = ctx->id, from, rndv, bytes = std::move(bytes)] {
        auto it = self.peers.find(from);
        if (it == self.peers.end()) return;
        peer& q = it->second;
        if (rndv) {
          self.reject(q, "a handshake message too large");
        } else if (id == am_challenge) {
          self.on_challenge(q, bytes);
        } else if (id == am_auth) {
          self.on_auth(q, bytes);
        } else if (id == am_auth_ok) {
          self.on_auth_ok(q, bytes);
        }
      });
      return UCS_OK;
    }
    if (p->state != peer_state::authenticated) {
      self.deferred.push_back([&self, from] {
        if (auto it = self.peers.find(from); it != self.peers.end()) self.reject(it->second, "sent data before the handshake");
      });
      return UCS_OK;
    }
    uint64_t tag = 0;
    if (header_length != sizeof tag) {
      self.deferred.push_back([&self, from] {
        if (auto it = self.peers.find(from); it != self.peers.end()) self.reject(it->second, "a data message without its tag");
      });
      return UCS_OK;
    }
    std::memcpy(&tag, header, sizeof tag);
    data_message msg;
    msg.from = from;
    msg.tag = tag;
    msg.bytes.resize(length);
    if (rndv) {
      self.rndv_queue.push_back(pending_rndv{data, std::move(msg)});
      return UCS_INPROGRESS;  // fetched by fetch_rendezvous() after progress returns
    }
    if (length > 0) std::memcpy(msg.bytes.data(), data, length);
    self.deferred.push_back([&self, msg = std::move(msg)]() mutable { self.deliver(std::move(msg)); });
    return UCS_OK;
  }

  void reject(peer& p, std::string_view why) {
    ++stats_now.n_rejected;
    if (!p.rejected_logged) {
      logger().warn("data plane: rejected peer={} reason={}", p.id, why);
      p.rejected_logged = true;
    }
    drop_peer(p.id, error{errc::unauthorized, std::string(why), 0});
  }

  // Connecting side: the listener's challenge. Answer with our proof and our own nonce.
  void on_challenge(peer& p, const std::vector<unsigned char>& data) {
    if (p.skip_handshake) return;  // tests: act as a peer that does not know the secret
    if (p.listener_side || p.state != peer_state::connecting || data.size() != nonce_bytes) {
      reject(p, "an unexpected challenge");
      return;
    }
    nonce theirs{};
    std::memcpy(theirs.data(), data.data(), nonce_bytes);
    p.challenge = random_nonce();
    std::array<unsigned char, mac_bytes + nonce_bytes> answer{};
    const mac m = prove_secret(options.secret, label_connector, theirs);
    std::memcpy(answer.data(), m.data(), mac_bytes);
    std::memcpy(answer.data() + mac_bytes, p.challenge.data(), nonce_bytes);
    p.state = peer_state::challenged;
    send_control(p, am_auth, answer.data(), answer.size());
  }

  // Listener side: the connector's proof and its nonce.
  void on_auth(peer& p, const std::vector<unsigned char>& data) {
    if (!p.listener_side || p.state != peer_state::challenged || data.size() != mac_bytes + nonce_bytes) {
      reject(p, "an unexpected handshake message");
      return;
    }
    const unsigned char* bytes = data.data();
    const mac expected = prove_secret(options.secret, label_connector, p.challenge);
    if (!proof_matches(static_cast<const unsigned char*>(bytes), expected)) {
      reject(p, "wrong cluster secret");
      return;
    }
    nonce theirs{};
    std::memcpy(theirs.data(), bytes + mac_bytes, nonce_bytes);
    const mac m = prove_secret(options.secret, label_listener, theirs);
    send_control(p, am_auth_ok, m.data(), m.size());
    p.state = peer_state::authenticated;
    logger().info("data plane peer authenticated peer={} side=listener", p.id);
  }

  // Connecting side: the listener's proof.
  void on_auth_ok(peer& p, const std::vector<unsigned char>& data) {
    if (p.listener_side || p.state != peer_state::challenged || data.size() != mac_bytes) {
      reject(p, "an unexpected handshake message");
      return;
    }
    const mac expected = prove_secret(options.secret, label_listener, p.challenge);
    if (!proof_matches(reinterpret_cast<const unsigned char*>(data.data()), expected)) {
      reject(p, "the listener does not hold the cluster secret");
      return;
    }
    p.state = peer_state::authenticated;
    logger().info("data plane peer authenticated peer={} side=connector", p.id);
    if (p.waiter != nullptr) {
      p.waiter->set_value(p.id);
      p.waiter = nullptr;
    }
  }

  void fetch_rendezvous() {
    auto queue = std::move(rndv_queue);
    rndv_queue.clear();
    for (auto& r : queue) {
      auto* op = new rndv_op{this, std::move(r.msg)};
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      rp.cb.recv_am = &impl::on_rndv_done;
      rp.user_data = op;
      void* req = ucp_am_recv_data_nbx(worker, r.desc, op->msg.bytes.data(), op->msg.bytes.size(), &rp);
      if (req == nullptr) {
        deliver(std::move(op->msg));
        delete op;
      } else if (UCS_PTR_IS_ERR(req)) {
        logger().warn("data plane: rendezvous receive failed tag={:#x} status={}", op->msg.tag,
                      status_text(UCS_PTR_STATUS(req)));
        delete op;
      }
    }
  }

  static void on_rndv_done(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* op = static_cast<rndv_op*>(user_data);
    if (status == UCS_OK) {
      op->self->deferred.push_back([self = op->self, msg = std::move(op->msg)]() mutable { self->deliver(std::move(msg)); });
    } else {
      logger().warn("data plane: rendezvous receive failed tag={:#x} status={}", op->msg.tag, status_text(status));
    }
    delete op;
    ucp_request_free(request);
  }

  void deliver(data_message msg) {
    ++stats_now.n_received;
    auto it = waiters.find(msg.tag);
    if (it != waiters.end()) {
      auto done_fn = std::move(it->second.done);
      waiters.erase(it);
      done_fn(std::move(msg));
      return;
    }
    const uint64_t tag = msg.tag;
    unclaimed_bytes += msg.bytes.size();
    if (auto old = unclaimed.find(tag); old != unclaimed.end()) {
      logger().warn("data plane: a second message with tag {:#x} replaces the first", tag);
      unclaimed_bytes -= old->second.bytes.size();
      old->second = std::move(msg);
    } else {
      unclaimed.emplace(tag, std::move(msg));
      unclaimed_order.push_back(tag);
    }
    while (unclaimed_bytes > options.max_unclaimed_bytes && !unclaimed_order.empty()) {
      const uint64_t oldest = unclaimed_order.front();
      unclaimed_order.pop_front();
      auto o = unclaimed.find(oldest);
      if (o == unclaimed.end()) continue;
      logger().warn("data plane: dropping an unclaimed message tag={:#x} bytes={} (over {} bytes unclaimed)", oldest,
                    o->second.bytes.size(), options.max_unclaimed_bytes);
      unclaimed_bytes -= o->second.bytes.size();
      unclaimed.erase(o);
    }
  }

  // ---- commands (run on the thread) -----------------------------------------------------------
  void do_send(send_op* op) {
    auto it = peers.find(op->to);
    if (it == peers.end() || it->second.state != peer_state::authenticated) {
      auto done_fn = std::move(op->done);
      const peer_id to = op->to;
      delete op;
      if (done_fn) done_fn(fail(errc::io_error, "data plane: no authenticated peer {}", to));
      return;
    }
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_AM_SEND_FLAG_REPLY;
    rp.cb.send = &impl::on_data_sent;
    rp.user_data = op;
    void* r = ucp_am_send_nbx(it->second.ep, am_data, &op->tag, sizeof op->tag, op->bytes.data(), op->bytes.size(),
                              &rp);
    if (r == nullptr) {
      finish_send(op, UCS_OK);
    } else if (UCS_PTR_IS_ERR(r)) {
      finish_send(op, UCS_PTR_STATUS(r));
    }
  }

  static void on_data_sent(void* request, ucs_status_t status, void* user_data) {
    auto* op = static_cast<send_op*>(user_data);
    op->self->deferred.push_back([op, status] { op->self->finish_send(op, status); });
    ucp_request_free(request);
  }

  void finish_send(send_op* op, ucs_status_t status) {
    if (status == UCS_OK) ++stats_now.n_sent;
    auto done_fn = std::move(op->done);
    const peer_id to = op->to;
    delete op;
    if (!done_fn) return;
    if (status == UCS_OK) {
      done_fn({});
    } else {
      done_fn(fail(errc::io_error, "data plane: send to peer {} failed: {}", to, status_text(status)));
    }
  }

  void do_receive(waiter w) {
    if (auto it = unclaimed.find(w.tag); it != unclaimed.end()) {
      data_message msg = std::move(it->second);
      unclaimed.erase(it);
      unclaimed_bytes -= msg.bytes.size();
      std::erase(unclaimed_order, w.tag);
      w.done(std::move(msg));
      return;
    }
    if (w.from != 0 && !peers.contains(w.from)) {
      w.done(fail(errc::io_error, "data plane: peer {} is down", w.from));
      return;
    }
    const uint64_t tag = w.tag;
    waiters.emplace(tag, std::move(w));
  }
};

// ---- public ------------------------------------------------------------------------------------

data_plane::data_plane(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
data_plane::~data_plane() = default;

result<std::unique_ptr<data_plane>> data_plane::start(data_plane_options options, peer_down_fn on_peer_down) {
  auto p = std::make_unique<impl>();
  p->options = std::move(options);
  p->on_peer_down = std::move(on_peer_down);
  if (auto r = p->init(); !r) return std::unexpected(r.error());
  return std::unique_ptr<data_plane>(new data_plane(std::move(p)));
}

uint16_t data_plane::port() const { return impl_->bound_port; }

namespace {
result<peer_id> connect_impl(data_plane::impl& s, const std::string& host, uint16_t port, bool skip_handshake) {
  std::promise<result<peer_id>> promise;
  auto future = promise.get_future();
  s.post([&s, &promise, host, port, skip_handshake] {
    peer_id id = 0;
    error err;
    if (s.connect_ep(host, port, &id, &err) == nullptr) {
      promise.set_value(std::unexpected(err));
      return;
    }
    auto& p = s.peers[id];
    p.skip_handshake = skip_handshake;
    if (skip_handshake) {
      // Tests: pretend the handshake is done on our side and send anyway.
      p.state = data_plane::impl::peer_state::authenticated;
      promise.set_value(id);
      return;
    }
    p.waiter = &promise;
  });
  // The thread always answers: handshake done, failed, timed out (handshake_timeout) or stopping.
  return future.get();
}
}  // namespace

result<peer_id> data_plane::connect(const std::string& host, uint16_t port) {
  return connect_impl(*impl_, host, port, false);
}

result<peer_id> data_plane::connect_unauthenticated_for_test(const std::string& host, uint16_t port) {
  return connect_impl(*impl_, host, port, true);
}

void data_plane::disconnect(peer_id peer) {
  impl_->post([s = impl_.get(), peer] {
    s->drop_peer(peer, error{errc::cancelled, "connection closed by this node (its user is gone)", 0});
  });
}

void data_plane::send(peer_id to, uint64_t tag, std::vector<std::byte> bytes, send_done_fn done) {
  auto* op = new impl::send_op{impl_.get(), to, tag, std::move(bytes), std::move(done)};
  impl_->post([s = impl_.get(), op] { s->do_send(op); });
}

void data_plane::receive(uint64_t tag, peer_id from, std::chrono::milliseconds timeout, receive_fn done) {
  impl::waiter w{tag, from, clock_type::now() + timeout, std::move(done)};
  impl_->post([s = impl_.get(), w = std::move(w)]() mutable { s->do_receive(std::move(w)); });
}

result<data_message> data_plane::receive_wait(uint64_t tag, peer_id from, std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<result<data_message>>>();
  auto future = promise->get_future();
  receive(tag, from, timeout, [promise](result<data_message> r) { promise->set_value(std::move(r)); });
  return future.get();
}

data_plane::counters data_plane::stats() const {
  std::lock_guard lock(impl_->mu);
  return impl_->stats_copy;
}

}  // namespace troupe::transport
