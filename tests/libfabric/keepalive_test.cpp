// NetworkConfig::peer_timeout on the libfabric backend (keepalives, docs/libfabric-backend.md):
// an idle connection with a short peer_timeout stays open (keepalives keep it alive and are never
// delivered), and a peer that stops answering (a process stopped with SIGSTOP: its kernel keeps the
// TCP connection alive, so only the backend's own keepalive can notice) is reported closed on the
// other side, with its pending zero-copy keys. The deadlines are generous guards, never timing
// assertions: with peer_timeout = 750 ms (short_timeout) the loss is reported after about 0.75-1.2 s
// (the timeout plus a keepalive tick or two), the tests allow 10 s.

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "libfabric/BackendLibfabric.hpp"
#include "libfabric/Harness.hpp"

extern char** environ; // NOLINT: POSIX

namespace netio3::libfabric::test {
namespace {

using namespace std::chrono_literals;

const bool environment_prepared = prepare_environment();

/// The peer timeout of these tests: short, so that a loss is noticed quickly, and long enough that
/// timer delays of a loaded sanitizer run (ticks every 187 ms) do not close healthy connections.
constexpr std::chrono::milliseconds short_timeout{750};
/// The bound within which a loss must be reported (a guard against hangs; the expected figure is
/// peer_timeout plus a tick or two).
constexpr std::chrono::milliseconds loss_bound{10s};

/// keepalive_peer as a child process (posix_spawn: safe in this multi-threaded test), its standard
/// output read line by line. Destruction kills it (SIGKILL, also when stopped) and reaps it.
class PeerProcess {
public:
  explicit PeerProcess(std::vector<std::string> arguments) {
    int fds[2]{-1, -1};
    if (::pipe2(fds, O_CLOEXEC) != 0) {
      throw std::runtime_error(std::string{"pipe2 failed: "} + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    arguments.insert(arguments.begin(), NETIO3_KEEPALIVE_PEER);
    std::vector<char*> argv;
    for (auto& argument : arguments) {
      argv.push_back(argument.data());
    }
    argv.push_back(nullptr);
    const int error = ::posix_spawn(&m_pid, NETIO3_KEEPALIVE_PEER, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (error != 0) {
      ::close(fds[0]);
      throw std::runtime_error(std::string{"posix_spawn of the keepalive peer failed: "} + std::strerror(error));
    }
    m_output = fds[0];
  }

  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;
  PeerProcess(PeerProcess&&) = delete;
  PeerProcess& operator=(PeerProcess&&) = delete;

  ~PeerProcess() {
    ::kill(m_pid, SIGKILL);
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
    ::close(m_output);
  }

  /// Reads lines until one starts with `prefix`; nothing on deadline or end of output.
  std::optional<std::string> wait_for_line(const std::string& prefix, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      for (auto newline = m_buffer.find('\n'); newline != std::string::npos; newline = m_buffer.find('\n')) {
        std::string line = m_buffer.substr(0, newline);
        m_buffer.erase(0, newline + 1);
        m_transcript += "  peer> " + line + "\n";
        if (line.rfind(prefix, 0) == 0) {
          return line;
        }
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return std::nullopt;
      }
      pollfd entry{m_output, POLLIN, 0};
      const int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
      if (ready < 0 && errno == EINTR) {
        continue;
      }
      if (ready <= 0) {
        return std::nullopt;
      }
      char chunk[512];
      const ssize_t got = ::read(m_output, chunk, sizeof chunk);
      if (got <= 0) {
        return std::nullopt; // the peer ended
      }
      m_buffer.append(chunk, static_cast<std::size_t>(got));
    }
  }

  /// Stops the peer with SIGSTOP and waits until it is stopped (so nothing it does afterwards).
  [[nodiscard]] bool stop() const {
    if (::kill(m_pid, SIGSTOP) != 0) {
      return false;
    }
    int status = 0;
    pid_t rc = 0;
    while ((rc = ::waitpid(m_pid, &status, WUNTRACED)) < 0 && errno == EINTR) {
    }
    return rc == m_pid && WIFSTOPPED(status);
  }

  /// Every line read so far, for failure messages.
  [[nodiscard]] const std::string& transcript() const { return m_transcript; }

private:
  pid_t m_pid{-1};
  int m_output{-1};
  std::string m_buffer;
  std::string m_transcript;
};

/// Milliseconds since `start`, for the figures recorded in the test output.
std::string milliseconds_since(std::chrono::steady_clock::time_point start) {
  return std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count());
}

/// A node whose backend has `peer_timeout`.
Node::Options with_peer_timeout(const std::string& provider, std::chrono::milliseconds peer_timeout) {
  Node::Options options;
  options.provider = provider;
  options.adjust = [peer_timeout](NetworkConfig& config) { config.peer_timeout = peer_timeout; };
  return options;
}

/// Keepalives `node`'s backend has posted (BackendLibfabric's test hook).
std::uint64_t keepalives_posted(Node& node) {
  return dynamic_cast<BackendLibfabric&>(node.backend()).keepalives_posted();
}

ConnectionParametersRecv receive_params() {
  ConnectionParametersRecv params;
  params.buf_size = 4096;
  params.num_buf = 8;
  return params;
}

class Keepalive : public ::testing::TestWithParam<std::string> {
protected:
  void SetUp() override {
    ASSERT_TRUE(environment_prepared);
    if (!provider_available(GetParam())) {
      GTEST_SKIP() << "libfabric provider " << GetParam() << " is not available here";
    }
  }

  /// Sends `count` copied messages and checks that they arrive, in order, and nothing else.
  static void exchange(Node& sender, Node& receiver, const EndPointAddress& target, std::uint8_t count) {
    for (std::uint8_t i = 0; i < count; ++i) {
      const std::vector<std::uint8_t> data(100, i);
      NetioStatus status = NetioStatus::NO_RESOURCES;
      for (int attempt = 0; attempt < 1000 && status == NetioStatus::NO_RESOURCES; ++attempt) {
        status = sender.backend().send_data_copy(target, data, {}, 100U + i);
        if (status == NetioStatus::NO_RESOURCES) {
          sender.wait_for_change(10ms);
        }
      }
      ASSERT_EQ(status, NetioStatus::OK) << "message " << int{i};
    }
    ASSERT_TRUE(receiver.wait([count](const Record& r) { return r.received_count >= count; }));
    ASSERT_TRUE(sender.wait([count](const Record& r) { return r.completed_keys.size() >= count; }));
    receiver.inspect([count](const Record& r) {
      ASSERT_EQ(r.received.size(), count) << "keepalives must never be delivered";
      for (std::uint8_t i = 0; i < count; ++i) {
        EXPECT_EQ(r.received[i].bytes, std::vector<std::uint8_t>(100, i));
      }
    });
  }
};

// With peer_timeout = 750 ms on both sides an idle connection stays open for 3 s (four timeouts):
// the sender's keepalives, answered by the receiver's credits, keep both sides from declaring the
// other silent. Messages still flow afterwards, and no keepalive reaches the application.
TEST_P(Keepalive, IdleConnectionStaysOpenAndMessagesFlowAfterwards) {
  Node receiver{with_peer_timeout(GetParam(), short_timeout)};
  Node sender{with_peer_timeout(GetParam(), short_timeout)};
  const EndPointAddress listening =
      receiver.backend().open_listen_endpoint(EndPointAddress{test_address(), 0}, receive_params());
  sender.backend().open_send_endpoint(listening, ConnectionParameters{});
  ASSERT_TRUE(sender.wait([](const Record& r) { return !r.established.empty(); }));
  ASSERT_TRUE(receiver.wait([](const Record& r) { return !r.established.empty(); }));

  EXPECT_FALSE(sender.wait([](const Record& r) { return !r.closed.empty(); }, 3s))
      << "the idle send endpoint was closed although its peer lives";
  receiver.inspect([](const Record& r) { EXPECT_TRUE(r.closed.empty()) << "the idle accepted connection was closed"; });
  receiver.inspect([](const Record& r) { EXPECT_EQ(r.received_count, 0U) << "a keepalive was delivered"; });

  exchange(sender, receiver, listening, 5);
  sender.inspect([](const Record& r) {
    EXPECT_TRUE(r.closed.empty());
    EXPECT_TRUE(r.refused.empty());
    EXPECT_EQ(r.off_loop_callbacks, 0U);
  });
}

// The receiver never declares silent a sender that sends no keepalives (its peer_timeout is 0), nor
// one whose peer_timeout is longer than its own: the sender's timeout travels in the connect request.
TEST_P(Keepalive, DifferentPeerTimeoutsDoNotCloseAHealthyIdleConnection) {
  Node receiver{with_peer_timeout(GetParam(), short_timeout)};
  Node quiet_sender{with_peer_timeout(GetParam(), 0ms)};
  Node slow_sender{with_peer_timeout(GetParam(), 4 * short_timeout)};
  const EndPointAddress listening =
      receiver.backend().open_listen_endpoint(EndPointAddress{test_address(), 0}, receive_params());
  quiet_sender.backend().open_send_endpoint(listening, ConnectionParameters{});
  slow_sender.backend().open_send_endpoint(listening, ConnectionParameters{});
  ASSERT_TRUE(receiver.wait([](const Record& r) { return r.established.size() == 2; }));

  EXPECT_FALSE(receiver.wait([](const Record& r) { return !r.closed.empty(); }, 3s))
      << "the receiver closed an idle connection from a live sender with another peer_timeout";
  quiet_sender.inspect([](const Record& r) { EXPECT_TRUE(r.closed.empty()); });
  slow_sender.inspect([](const Record& r) { EXPECT_TRUE(r.closed.empty()); });
  exchange(quiet_sender, receiver, listening, 3);
}

// A sender process stopped with SIGSTOP sends nothing more (its kernel still acknowledges TCP
// segments, so the connection looks healthy to TCP): the receiver notices the silence and reports
// the connection closed; the listener then accepts a new connection.
TEST_P(Keepalive, StoppedSenderIsReportedClosedByTheReceiver) {
  Node receiver{with_peer_timeout(GetParam(), short_timeout)};
  const EndPointAddress listening =
      receiver.backend().open_listen_endpoint(EndPointAddress{test_address(), 0}, receive_params());
  const std::string timeout = std::to_string(short_timeout.count());
  PeerProcess peer{{"connect", GetParam(), timeout, std::to_string(listening.port())}};
  ASSERT_TRUE(peer.wait_for_line("ESTABLISHED", wait_deadline)) << peer.transcript();
  ASSERT_TRUE(receiver.wait([](const Record& r) { return !r.established.empty(); }));
  // Alive for a while first: the keepalives cross the process boundary.
  EXPECT_FALSE(receiver.wait([](const Record& r) { return !r.closed.empty(); }, 1s)) << peer.transcript();

  ASSERT_TRUE(peer.stop());
  const auto stopped_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(receiver.wait([](const Record& r) { return !r.closed.empty(); }, loss_bound))
      << "the receiver did not report the stopped sender within " << loss_bound.count() << " ms";
  RecordProperty("receiver_noticed_after_ms", milliseconds_since(stopped_at));
  receiver.inspect([](const Record& r) {
    EXPECT_EQ(r.closed.size(), 1U);
    EXPECT_EQ(r.closed.front().address, r.established.front());
    EXPECT_TRUE(r.closed.front().pending_keys.empty());
  });

  PeerProcess second{{"connect", GetParam(), timeout, std::to_string(listening.port())}};
  ASSERT_TRUE(second.wait_for_line("ESTABLISHED", wait_deadline)) << second.transcript();
  ASSERT_TRUE(receiver.wait([](const Record& r) { return r.established.size() == 2; }));
}

// A receiver process stopped with SIGSTOP returns no credit: the sender reports the connection
// closed, and the zero-copy sends it had accepted after the stop come back as pending keys, once.
TEST_P(Keepalive, StoppedReceiverIsReportedClosedWithThePendingKeys) {
  PeerProcess peer{{"listen", GetParam(), std::to_string(short_timeout.count())}};
  const auto port_line = peer.wait_for_line("PORT ", wait_deadline);
  ASSERT_TRUE(port_line) << peer.transcript();
  const EndPointAddress target{test_address(), static_cast<std::uint16_t>(std::stoul(port_line->substr(5)))};
  Node sender{with_peer_timeout(GetParam(), short_timeout)};
  Region region{65536};
  ConnectionParameters send;
  send.mr_start = region.data();
  send.mr_size = region.size();
  sender.backend().open_send_endpoint(target, send);
  ASSERT_TRUE(sender.wait([](const Record& r) { return !r.established.empty(); }));
  for (std::uint64_t key = 1; key <= 3; ++key) {
    ASSERT_EQ(sender.backend().send_data(target, std::span<std::uint8_t>{region.data() + key * 1000, 100}, {}, key),
              NetioStatus::OK);
  }
  ASSERT_TRUE(sender.wait([](const Record& r) { return r.completed_keys.size() == 3; }));

  ASSERT_TRUE(peer.stop());
  const auto stopped_at = std::chrono::steady_clock::now();
  for (std::uint64_t key = 4; key <= 5; ++key) {
    ASSERT_EQ(sender.backend().send_data(target, std::span<std::uint8_t>{region.data() + key * 1000, 100}, {}, key),
              NetioStatus::OK);
  }
  ASSERT_TRUE(sender.wait([](const Record& r) { return !r.closed.empty(); }, loss_bound))
      << "the sender did not report the stopped receiver within " << loss_bound.count() << " ms";
  RecordProperty("sender_noticed_after_ms", milliseconds_since(stopped_at));
  sender.inspect([&](const Record& r) {
    ASSERT_EQ(r.closed.size(), 1U);
    EXPECT_EQ(r.closed.front().address, target);
    std::vector<std::uint64_t> pending = r.closed.front().pending_keys;
    std::sort(pending.begin(), pending.end());
    EXPECT_EQ(pending, (std::vector<std::uint64_t>{4, 5}));
    std::vector<std::uint64_t> completed = r.completed_keys;
    std::sort(completed.begin(), completed.end());
    EXPECT_EQ(completed, (std::vector<std::uint64_t>{1, 2, 3})) << "a key was reported twice or too early";
    EXPECT_TRUE(r.refused.empty());
  });
  EXPECT_THROW((void)sender.backend().send_data_copy(target, std::span<const std::uint8_t>{}, {}, 9),
               UnknownSendEndpoint);
}

// A stopped receiver of an idle send endpoint is noticed too: the sender's keepalive finds no
// answer.
TEST_P(Keepalive, StoppedReceiverOfAnIdleSenderIsReportedClosed) {
  PeerProcess peer{{"listen", GetParam(), std::to_string(short_timeout.count())}};
  const auto port_line = peer.wait_for_line("PORT ", wait_deadline);
  ASSERT_TRUE(port_line) << peer.transcript();
  const EndPointAddress target{test_address(), static_cast<std::uint16_t>(std::stoul(port_line->substr(5)))};
  Node sender{with_peer_timeout(GetParam(), short_timeout)};
  sender.backend().open_send_endpoint(target, ConnectionParameters{});
  ASSERT_TRUE(sender.wait([](const Record& r) { return !r.established.empty(); }));
  ASSERT_TRUE(peer.wait_for_line("ESTABLISHED", wait_deadline)) << peer.transcript();
  EXPECT_FALSE(sender.wait([](const Record& r) { return !r.closed.empty(); }, 1s)) << peer.transcript();

  ASSERT_TRUE(peer.stop());
  const auto stopped_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(sender.wait([](const Record& r) { return !r.closed.empty(); }, loss_bound))
      << "the idle sender did not report the stopped receiver within " << loss_bound.count() << " ms";
  RecordProperty("sender_noticed_after_ms", milliseconds_since(stopped_at));
  sender.inspect([&](const Record& r) {
    ASSERT_EQ(r.closed.size(), 1U);
    EXPECT_EQ(r.closed.front().address, target);
    EXPECT_TRUE(r.closed.front().pending_keys.empty()) << "a keepalive carries no key";
    EXPECT_TRUE(r.completed_keys.empty());
  });
}

// peer_timeout = 0: the backend sends no keepalives and watches no silence. A control sender with a
// short peer_timeout, connected to the same peer at the same time, shows what would happen
// otherwise and is the test's clock: the test waits until the control has posted several keepalives
// (a count, not a time) and then expects none from the quiet sender (counted by the backend's test
// hook); it then stops the peer, waits until the control has noticed, and expects the quiet
// sender's idle connection to a stopped peer still open (without keepalives nothing can tell it
// from a healthy one: the behaviour of the OS and provider alone).
TEST_P(Keepalive, ZeroPeerTimeoutSendsNoKeepalives) {
  PeerProcess peer{{"listen", GetParam(), "0"}};
  const auto port_line = peer.wait_for_line("PORT ", wait_deadline);
  ASSERT_TRUE(port_line) << peer.transcript();
  const EndPointAddress target{test_address(), static_cast<std::uint16_t>(std::stoul(port_line->substr(5)))};
  Node quiet{with_peer_timeout(GetParam(), 0ms)};
  Node control{with_peer_timeout(GetParam(), short_timeout)};
  quiet.backend().open_send_endpoint(target, ConnectionParameters{});
  control.backend().open_send_endpoint(target, ConnectionParameters{});
  ASSERT_TRUE(quiet.wait([](const Record& r) { return !r.established.empty(); }));
  ASSERT_TRUE(control.wait([](const Record& r) { return !r.established.empty(); }));
  ASSERT_TRUE(peer.wait_for_line("ESTABLISHED", wait_deadline)) << peer.transcript();
  ASSERT_TRUE(peer.wait_for_line("ESTABLISHED", wait_deadline)) << peer.transcript();

  // Keepalives cause no callback: poll the count (a guard deadline, never a timing assertion).
  constexpr std::uint64_t control_keepalives = 4;
  const auto deadline = std::chrono::steady_clock::now() + loss_bound;
  while (keepalives_posted(control) < control_keepalives && std::chrono::steady_clock::now() < deadline) {
    control.wait_for_change(20ms);
  }
  ASSERT_GE(keepalives_posted(control), control_keepalives)
      << "the control sender (peer_timeout " << short_timeout.count() << " ms) sent too few keepalives";
  EXPECT_EQ(keepalives_posted(quiet), 0U) << "with peer_timeout 0 the backend must send no keepalives";

  ASSERT_TRUE(peer.stop());
  ASSERT_TRUE(control.wait([](const Record& r) { return !r.closed.empty(); }, loss_bound))
      << "the control sender did not notice the stopped peer within " << loss_bound.count() << " ms";
  EXPECT_EQ(keepalives_posted(quiet), 0U) << "with peer_timeout 0 the backend must send no keepalives";
  quiet.inspect([](const Record& r) {
    EXPECT_TRUE(r.closed.empty()) << "with peer_timeout 0 nothing should declare the idle peer lost";
    EXPECT_TRUE(r.refused.empty());
  });
}

INSTANTIATE_TEST_SUITE_P(Providers, Keepalive, ::testing::Values("tcp", "sockets"),
                         [](const ::testing::TestParamInfo<std::string>& provider) { return provider.param; });

} // namespace
} // namespace netio3::libfabric::test
