// IPv6 and host names end to end (issue 18), on both backends (asyncmsg; libfabric over its tcp
// and sockets providers), through ibmsg and through netio3-bench:
//   - on loopback, in this process: a listener on "[::1]" and senders to "::1" written three ways
//     (one endpoint), callbacks naming peers as "[::1]:port"; a listener on "::" taking IPv4 and
//     IPv6; a link-local address without zone refused by the call;
//   - between two network namespaces joined by a veth pair with IPv6 addresses only, with real
//     processes (the fault peer, ibmsg-send/-recv, netio3-bench): global addresses, link-local
//     ones with a zone, a listener on "::", host names with several addresses (each tried in turn,
//     refused only after the last), a loopback name with both families, and a reply path that
//     cannot connect (netio3-bench fails within seconds and says what could not reach what).
// The namespace tests need root, iproute2 and nftables (skipped with the reason otherwise), the
// loopback ones an IPv6 loopback address.

#include <gtest/gtest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include "FaultTestSupport.hpp"
#include "Netns.hpp"

namespace netio3::faults {
namespace {

using namespace std::chrono_literals;
using Side = NetnsPair::Side;

/// The sockets provider spins for FI_SOCKETS_PE_WAITTIME ms per progress round: 0 in tests (this
/// process, and the children through the environment they inherit).
const bool sockets_wait_set = [] { return ::setenv("FI_SOCKETS_PE_WAITTIME", "0", 0) == 0; }();

std::vector<BackendCase> ipv6_backend_cases() {
  auto cases = backend_cases();
  cases.push_back(BackendCase{NetworkType::LIBFABRIC, "sockets", "libfabric_sockets"});
  return cases;
}

/// Why ::1 cannot be used here, or nullopt.
std::optional<std::string> ipv6_loopback_unavailable() {
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (probe < 0) {
    return "no IPv6 sockets here: " + std::string(std::strerror(errno));
  }
  sockaddr_in6 loopback{};
  loopback.sin6_family = AF_INET6;
  loopback.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(probe, reinterpret_cast<sockaddr*>(&loopback), sizeof loopback) == 0;
  ::close(probe);
  if (!ok) {
    return std::string("::1 is not configured on this machine");
  }
  return std::nullopt;
}

/// net.ipv6.bindv6only of this namespace: 0 makes a listener on "::" take IPv4 too.
bool ipv6_wildcard_takes_ipv4() {
  std::ifstream file("/proc/sys/net/ipv6/bindv6only");
  int value = 1;
  file >> value;
  return file && value == 0;
}

// --- loopback, in this process -----------------------------------------------------------------

/// One backend on its own loop thread, recording what its callbacks report.
class Endpoint {
public:
  explicit Endpoint(const BackendCase& backend) : m_loop{std::make_shared<EpollEventLoop>()} {
    NetworkConfig config;
    config.provider = backend.provider;
    config.on_connection_established_cb = [this](const EndPointAddress& peer) { note(m_established, peer); };
    config.on_connection_refused_cb = [this](const EndPointAddress& peer) { note(m_refused, peer); };
    config.on_connection_closed_cb = [this](const EndPointAddress& peer, const std::vector<std::uint64_t>&) {
      note(m_closed, peer);
    };
    config.on_data_from_cb = [this](const EndPointAddress& peer, std::span<const std::uint8_t> data) {
      const std::lock_guard lock(m_mutex);
      ++m_messages[peer];
      m_bytes_ok = m_bytes_ok && data.size() == 100 && data.front() == 0x5a && data.back() == 0xa5;
      m_changed.notify_all();
    };
    config.on_send_completed_cb = [](const EndPointAddress&, std::uint64_t) {};
    m_backend = NetworkBackend::create(backend.type, config, m_loop);
    m_thread = std::thread([this] { m_loop->run(); });
    // stop() before run() is not remembered (docs/decisions.md): the destructor's stop must find
    // the loop running.
    EXPECT_TRUE(wait_until([this] { return m_loop->is_running(); }, 30s));
  }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  Endpoint(Endpoint&&) = delete;
  Endpoint& operator=(Endpoint&&) = delete;
  ~Endpoint() {
    m_loop->stop();
    m_thread.join();
    m_backend.reset();
  }

  NetworkBackend& backend() { return *m_backend; }

  /// Waits until `condition` (called with the lock held) holds; false after 30 s.
  bool wait(const std::function<bool()>& condition) {
    std::unique_lock lock(m_mutex);
    return m_changed.wait_for(lock, 30s, condition);
  }
  /// Sends `count` messages of 100 bytes to `target`, retrying NO_RESOURCES.
  void send(const EndPointAddress& target, int count) {
    std::vector<std::uint8_t> message(100, 0);
    message.front() = 0x5a;
    message.back() = 0xa5;
    for (int i = 0; i < count; ++i) {
      NetioStatus status = NetioStatus::NO_RESOURCES;
      const auto deadline = Clock::now() + 30s;
      while ((status = m_backend->send_data_copy(target, message, {}, static_cast<std::uint64_t>(i))) ==
                 NetioStatus::NO_RESOURCES &&
             Clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
      ASSERT_EQ(status, NetioStatus::OK) << "send " << i << " to " << target;
    }
  }

  // Under the lock (inside wait's condition, or after the waits).
  std::vector<EndPointAddress> m_established;
  std::vector<EndPointAddress> m_refused;
  std::vector<EndPointAddress> m_closed;
  std::map<EndPointAddress, int> m_messages;
  bool m_bytes_ok{true};
  std::mutex m_mutex;

private:
  void note(std::vector<EndPointAddress>& list, const EndPointAddress& peer) {
    const std::lock_guard lock(m_mutex);
    list.push_back(peer);
    m_changed.notify_all();
  }

  std::condition_variable m_changed;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  std::thread m_thread;
};

class Ipv6Loopback : public testing::TestWithParam<BackendCase> {
protected:
  void SetUp() override {
    if (const auto reason = ipv6_loopback_unavailable()) {
      GTEST_SKIP() << *reason;
    }
    NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
  }
};

TEST_P(Ipv6Loopback, LiteralWrittenThreeWaysIsOneEndpointAndPeersPrintInBrackets) {
  Endpoint receiver{GetParam()};
  Endpoint sender{GetParam()};
  const EndPointAddress listening = receiver.backend().open_listen_endpoint({"[::1]", 0}, ConnectionParametersRecv{});
  EXPECT_EQ(listening.address(), "::1");
  ASSERT_NE(listening.port(), 0);
  EXPECT_EQ(listening.to_string(), "[::1]:" + std::to_string(listening.port()));

  const EndPointAddress written_long{"0:0::1", listening.port()};
  sender.backend().open_send_endpoint(written_long, ConnectionParameters{});
  // The same endpoint however it is written.
  EXPECT_THROW(sender.backend().open_send_endpoint({"::1", listening.port()}, ConnectionParameters{}),
               SendEndpointAlreadyExists);
  EXPECT_THROW(sender.backend().open_send_endpoint({"[::1]", listening.port()}, ConnectionParameters{}),
               SendEndpointAlreadyExists);
  ASSERT_TRUE(sender.wait([&] { return !sender.m_established.empty() || !sender.m_refused.empty(); }));
  {
    const std::lock_guard lock(sender.m_mutex);
    ASSERT_EQ(sender.m_refused.size(), 0U);
    ASSERT_EQ(sender.m_established.size(), 1U);
    // The send endpoint is named as the program wrote it, which is ::1.
    EXPECT_EQ(sender.m_established.front(), EndPointAddress("::1", listening.port()));
    EXPECT_EQ(sender.m_established.front(), written_long);
    EXPECT_EQ(sender.m_established.front().to_string(), "[::1]:" + std::to_string(listening.port()));
  }
  sender.send(EndPointAddress{"[::1]", listening.port()}, 50);
  ASSERT_TRUE(receiver.wait([&] {
    int total = 0;
    for (const auto& [peer, count] : receiver.m_messages) {
      total += count;
    }
    return total == 50;
  }));
  const std::lock_guard lock(receiver.m_mutex);
  EXPECT_TRUE(receiver.m_bytes_ok);
  ASSERT_EQ(receiver.m_messages.size(), 1U);
  const EndPointAddress peer = receiver.m_messages.begin()->first;
  EXPECT_EQ(peer.address(), "::1") << peer;
  EXPECT_NE(peer.port(), 0);
  EXPECT_EQ(peer.to_string(), "[::1]:" + std::to_string(peer.port()));
  ASSERT_EQ(receiver.m_established.size(), 1U);
  EXPECT_EQ(receiver.m_established.front(), peer) << "the established and data callbacks name the peer alike";
}

TEST_P(Ipv6Loopback, WildcardListenerTakesIpv6AndIpv4) {
  Endpoint receiver{GetParam()};
  Endpoint sender{GetParam()};
  const EndPointAddress listening = receiver.backend().open_listen_endpoint({"::", 0}, ConnectionParametersRecv{});
  EXPECT_EQ(listening.to_string(), "[::]:" + std::to_string(listening.port()));
  const bool dual_stack = ipv6_wildcard_takes_ipv4();
  std::vector<std::string> hosts{"::1"};
  if (dual_stack) {
    hosts.emplace_back("127.0.0.1");
  }
  for (const auto& host : hosts) {
    const EndPointAddress target{host, listening.port()};
    sender.backend().open_send_endpoint(target, ConnectionParameters{});
    ASSERT_TRUE(sender.wait([&] {
      return std::count(sender.m_established.begin(), sender.m_established.end(), target) +
                 std::count(sender.m_refused.begin(), sender.m_refused.end(), target) >
             0;
    })) << target;
    sender.send(target, 20);
  }
  ASSERT_TRUE(receiver.wait([&] {
    int total = 0;
    for (const auto& [peer, count] : receiver.m_messages) {
      total += count;
    }
    return total == 20 * static_cast<int>(hosts.size());
  }));
  const std::lock_guard lock(receiver.m_mutex);
  EXPECT_TRUE(sender.m_refused.empty());
  std::set<std::string> peer_hosts;
  for (const auto& [peer, count] : receiver.m_messages) {
    peer_hosts.insert(peer.address());
    EXPECT_EQ(count, 20) << peer;
  }
  // An IPv4 peer of the IPv6 listener is named by its dotted quad, not ::ffff:127.0.0.1.
  EXPECT_EQ(peer_hosts, std::set<std::string>(hosts.begin(), hosts.end()));
  if (!dual_stack) {
    GTEST_SKIP() << "net.ipv6.bindv6only is 1 here: a listener on :: takes IPv6 only; only ::1 was tested";
  }
}

TEST_P(Ipv6Loopback, LinkLocalWithoutZoneIsRefusedByTheCall) {
  Endpoint sender{GetParam()};
  try {
    sender.backend().open_send_endpoint({"fe80::1", 4000}, ConnectionParameters{});
    FAIL() << "a link-local address without zone was accepted";
  } catch (const InvalidEndpointAddress& error) {
    EXPECT_NE(std::string(error.what()).find("zone"), std::string::npos) << error.what();
  }
  EXPECT_THROW((void)sender.backend().open_listen_endpoint({"fe80::1", 0}, ConnectionParametersRecv{}),
               InvalidEndpointAddress);
}

INSTANTIATE_TEST_SUITE_P(Backends, Ipv6Loopback, testing::ValuesIn(ipv6_backend_cases()), backend_case_name);

// --- two hosts with IPv6 only ------------------------------------------------------------------

/// A namespace pair with IPv6 addresses only (skipped without root or IPv6).
class Ipv6NamespaceTest {
protected:
  /// Creates the pair; the caller skips when this returns a reason.
  std::optional<std::string> make_pair() {
    if (auto reason = NetnsPair::ipv6_unavailable_reason()) {
      return "network-namespace tests skipped: " + *reason;
    }
    m_pair = std::make_unique<NetnsPair>(NetnsPair::Addressing::ipv6_only);
    return std::nullopt;
  }
  [[nodiscard]] std::vector<std::string> in(Side side, std::vector<std::string> command) const {
    return concat(m_pair->exec_prefix(side), command);
  }

  std::unique_ptr<NetnsPair> m_pair;
};

class Ipv6Netns : public testing::TestWithParam<BackendCase>, public Ipv6NamespaceTest {
protected:
  void SetUp() override {
    NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    if (const auto reason = make_pair()) {
      GTEST_SKIP() << *reason;
    }
  }
  void TearDown() override { m_pair.reset(); }

  /// The fault peer inside `side`.
  [[nodiscard]] std::vector<std::string> peer_in(Side side, const std::vector<std::string>& args) const {
    return in(side, concat(peer_command(args), GetParam().peer_args()));
  }

  /// A receiver in B listening on `listen`; returns it and its port ("" on failure).
  std::pair<std::unique_ptr<ChildProcess>, std::string> start_receiver(const std::string& listen,
                                                                       std::uint64_t streams) {
    auto receiver = std::make_unique<ChildProcess>(peer_in(
        Side::b, {"recv", "--listen", listen, "--expect-finished", std::to_string(streams), "--timeout-s", "60"}));
    const auto ready = receiver->wait_for_line("READY", Clock::now() + 30s);
    if (!ready) {
      ADD_FAILURE() << "the receiver on " << listen << " did not start\n" << receiver->diagnostics();
      return {std::move(receiver), ""};
    }
    return {std::move(receiver), parse_fields(*ready).at("port")};
  }

  /// A sender in A sending `messages` messages of every mode to `target`:`port`; returns its
  /// RESULT (with a failure when it never came).
  std::map<std::string, std::string> send(const std::string& target, const std::string& port, std::uint64_t messages,
                                          std::uint16_t stream, std::string* diagnostics = nullptr) const {
    ChildProcess sender(peer_in(Side::a, {"send", "--connect", target, "--port", port, "--messages",
                                          std::to_string(messages), "--modes", "all", "--max-size", "1024",
                                          "--stream-base", std::to_string(stream), "--timeout-s", "60",
                                          // a receiver expecting more streams closes later: no waiting for it
                                          "--linger-s", "1"}),
                        {"NETIO3_LOG=debug"});
    auto result = result_of(sender, Clock::now() + 90s);
    (void)sender.wait_exit(Clock::now() + 30s);
    if (diagnostics != nullptr) {
      *diagnostics = sender.diagnostics();
    }
    return result;
  }

  /// Every message of `messages` from `target` arrived in B, in order, the connection was
  /// established once and never refused.
  void expect_delivered(const std::string& target, const std::string& listen, std::uint64_t messages) {
    auto [receiver, port] = start_receiver(listen, 1);
    ASSERT_FALSE(port.empty());
    std::string sender_output;
    const auto sent = send(target, port, messages, 1, &sender_output);
    const auto received = result_of(*receiver, Clock::now() + 60s);
    EXPECT_EQ(field_u64(sent, "established"), 1U) << target << "\n" << sender_output;
    EXPECT_EQ(field_u64(sent, "refused", 1), 0U) << target << "\n" << sender_output;
    EXPECT_EQ(field_u64(sent, "sent"), messages) << sender_output;
    EXPECT_EQ(field_u64(received, "messages"), messages) << receiver->diagnostics();
    EXPECT_EQ(field_u64(received, "in_order"), messages) << receiver->diagnostics();
    EXPECT_EQ(field_u64(received, "lost", 1), 0U);
    EXPECT_EQ(field_u64(received, "corrupted", 1), 0U);
  }
};

TEST_P(Ipv6Netns, GlobalAddresses) {
  expect_delivered(m_pair->address(Side::b), m_pair->address(Side::b), 300);
}

TEST_P(Ipv6Netns, LinkLocalAddressesWithZone) {
  // The listener names its own interface, the sender its own: the zone is local to each host.
  expect_delivered(m_pair->link_local(Side::b, Side::a), m_pair->link_local(Side::b, Side::b), 300);
}

TEST_P(Ipv6Netns, WildcardListenerTakesGlobalAndLinkLocal) {
  auto [receiver, port] = start_receiver("::", 2);
  ASSERT_FALSE(port.empty());
  const auto global = send(m_pair->address(Side::b), port, 100, 1);
  const auto link_local = send(m_pair->link_local(Side::b, Side::a), port, 100, 2);
  const auto received = result_of(*receiver, Clock::now() + 60s);
  EXPECT_EQ(field_u64(global, "established"), 1U);
  EXPECT_EQ(field_u64(link_local, "established"), 1U);
  EXPECT_EQ(field_u64(received, "messages"), 200U) << receiver->diagnostics();
  EXPECT_EQ(field_u64(received, "streams_finished"), 2U) << receiver->diagnostics();
  EXPECT_EQ(field_u64(received, "lost", 1), 0U);
}

TEST_P(Ipv6Netns, HostNameWithSeveralAddressesConnectsToTheOneListening) {
  // "n3-multi" is B's two global addresses and an IPv4 one that this IPv6-only link cannot reach.
  // The listener is on one of B's addresses, then on the other: whatever order getaddrinfo sorts
  // them in, one of the two runs finds nobody at the first address and must go on to the next.
  m_pair->add_address(Side::b, 2);
  const std::string first = m_pair->address(Side::b);
  const std::string second = m_pair->ipv6_address(Side::b, 2);
  m_pair->set_hosts(Side::a, "127.0.0.1 localhost\n" + first + " n3-multi\n" + second + " n3-multi\n" +
                                 "10.231.250.2 n3-multi\n");
  for (const auto& listen : {first, second}) {
    SCOPED_TRACE("listener on " + listen);
    expect_delivered("n3-multi", listen, 100);
  }
}

TEST_P(Ipv6Netns, HostNameWhoseAddressesAllFailIsRefusedOnceAfterTryingEach) {
  m_pair->add_address(Side::b, 2);
  const std::string first = m_pair->address(Side::b);
  const std::string second = m_pair->ipv6_address(Side::b, 2);
  m_pair->set_hosts(Side::a, "127.0.0.1 localhost\n" + first + " n3-multi\n" + second + " n3-multi\n");
  // Nothing listens on port 1 in a namespace this test just made.
  std::string output;
  const auto sent = send("n3-multi", "1", 10, 1, &output);
  EXPECT_EQ(field_u64(sent, "refused"), 1U) << output;
  EXPECT_EQ(field_u64(sent, "established", 1), 0U) << output;
  // The refusal's log line names every address tried.
  EXPECT_NE(output.find(first + ": "), std::string::npos) << output;
  EXPECT_NE(output.find(second + ": "), std::string::npos) << output;
}

TEST_P(Ipv6Netns, LoopbackNameWithBothFamilies) {
  // Inside A: "n3-dual" is ::1 and 127.0.0.1; the listener on one of them only.
  m_pair->set_hosts(Side::a, "::1 n3-dual\n127.0.0.1 n3-dual localhost\n");
  for (const std::string listen : {"127.0.0.1", "::1"}) {
    SCOPED_TRACE("listener on " + listen);
    auto receiver = std::make_unique<ChildProcess>(
        peer_in(Side::a, {"recv", "--listen", listen, "--expect-finished", "1", "--timeout-s", "60"}));
    const auto ready = receiver->wait_for_line("READY", Clock::now() + 30s);
    ASSERT_TRUE(ready) << receiver->diagnostics();
    const std::string port = parse_fields(*ready).at("port");
    ChildProcess sender(peer_in(Side::a, {"send", "--connect", "n3-dual", "--port", port, "--messages", "100",
                                          "--max-size", "1024", "--timeout-s", "60"}));
    const auto sent = result_of(sender, Clock::now() + 90s);
    const auto received = result_of(*receiver, Clock::now() + 60s);
    EXPECT_EQ(field_u64(sent, "established"), 1U) << sender.diagnostics();
    EXPECT_EQ(field_u64(sent, "refused", 1), 0U) << sender.diagnostics();
    EXPECT_EQ(field_u64(received, "messages"), 100U) << receiver->diagnostics();
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Ipv6Netns, testing::ValuesIn(ipv6_backend_cases()), backend_case_name);

// --- ibmsg's tools between the namespaces ------------------------------------------------------

#if defined(NETIO3_IBMSG_SEND) && defined(NETIO3_IBMSG_RECV)

class IbmsgTools : public testing::TestWithParam<std::string>, public Ipv6NamespaceTest {
protected:
  void SetUp() override {
    if (const auto reason = make_pair()) {
      GTEST_SKIP() << *reason;
    }
  }

  /// ibmsg-recv in B on `listen` for `count` messages (checked), ibmsg-send in A to `target`.
  void run(const std::string& listen, const std::string& target, unsigned count) {
    const std::vector<std::string> environment{"IBMSG_TRANSPORT=" + GetParam()};
    ChildProcess receiver(in(Side::b, {NETIO3_IBMSG_RECV, "-n", std::to_string(count), "-c", listen, "0"}),
                          environment);
    const auto listening = receiver.wait_for_line("listening on ", Clock::now() + 30s);
    ASSERT_TRUE(listening) << receiver.diagnostics();
    // "listening on [fd31:...::2]:PORT over tcp"
    const std::size_t colon = listening->rfind("]:");
    ASSERT_NE(colon, std::string::npos) << "an IPv6 address is printed in brackets: " << *listening;
    const std::string port = listening->substr(colon + 2, listening->find(' ', colon) - colon - 2);
    ChildProcess sender(in(Side::a, {NETIO3_IBMSG_SEND, "-n", std::to_string(count), "-s", "512", target, port}),
                        environment);
    const auto sent = sender.wait_exit(Clock::now() + 60s);
    ASSERT_TRUE(sent && ChildProcess::exited_cleanly(*sent)) << sender.diagnostics();
    const auto received = receiver.wait_exit(Clock::now() + 60s);
    ASSERT_TRUE(received && ChildProcess::exited_cleanly(*received)) << receiver.diagnostics();
    bool summary = false;
    for (const auto& line : receiver.lines()) {
      summary = summary || line.rfind("received " + std::to_string(count) + " messages", 0) == 0;
    }
    EXPECT_TRUE(summary) << receiver.diagnostics();
  }
};

TEST_P(IbmsgTools, GlobalAddress) {
  run(m_pair->address(Side::b), m_pair->address(Side::b), 2000);
}

TEST_P(IbmsgTools, LinkLocalAddressWithZone) {
  run(m_pair->link_local(Side::b, Side::b), m_pair->link_local(Side::b, Side::a), 2000);
}

TEST_P(IbmsgTools, WildcardListenerAndHostName) {
  m_pair->set_hosts(Side::a, "127.0.0.1 localhost\n" + m_pair->address(Side::b) + " n3-peer\n");
  run("::", "n3-peer", 2000);
}

/// Test-name suffix of an ibmsg transport ("fabric-tcp" is not a valid name).
std::string transport_case_name(const testing::TestParamInfo<std::string>& transport) {
  return transport.param == "tcp" ? std::string("tcp") : std::string("fabric_tcp");
}

INSTANTIATE_TEST_SUITE_P(Transports, IbmsgTools, testing::Values("tcp", "fabric-tcp"), transport_case_name);

#endif

// --- netio3-bench: loopback and between the namespaces ---------------------------------------

#if defined(NETIO3_BENCH)

/// netio3-bench's --backend/--provider arguments for a backend.
std::vector<std::string> bench_backend(const BackendCase& backend) {
  if (backend.type == NetworkType::ASYNCMSG) {
    return {"--backend", "asyncmsg"};
  }
  return {"--backend", "libfabric", "--provider", backend.provider};
}

/// The port of a "netio3-bench server: listening on [ADDRESS]:PORT" line.
std::string bench_port(const std::string& line) {
  return line.substr(line.rfind(':') + 1);
}

class Bench : public testing::TestWithParam<BackendCase>, public Ipv6NamespaceTest {
protected:
  void SetUp() override { NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }

  /// A server (in `side`, or here when `side` is empty) listening on `host`; returns its port.
  std::string start_server(const std::vector<std::string>& prefix, const std::string& host) {
    m_server = std::make_unique<ChildProcess>(
        concat(prefix, concat({NETIO3_BENCH, "server", "--host", host, "--port", "0"}, bench_backend(GetParam()))));
    const auto line = m_server->wait_for_line("netio3-bench server: listening on ", Clock::now() + 30s);
    if (!line) {
      ADD_FAILURE() << "the server did not start on " << host << "\n" << m_server->diagnostics();
      return "";
    }
    return bench_port(*line);
  }
  /// Runs a client to `target` to its end; returns its exit status and its output.
  std::pair<int, std::string> run_client(const std::vector<std::string>& prefix, const std::string& target) {
    ChildProcess client(concat(
        prefix, concat({NETIO3_BENCH, "client", "--connect", target, "--size", "256", "--messages", "20000", "--quiet"},
                       bench_backend(GetParam()))));
    const auto status = client.wait_exit(Clock::now() + 90s);
    std::string output;
    for (const auto& line : client.lines()) {
      output += line + "\n";
    }
    output += client.stderr_text();
    return {status.value_or(-1), output};
  }
  void expect_run(const std::vector<std::string>& prefix, const std::string& target) {
    const auto [status, output] = run_client(prefix, target);
    EXPECT_TRUE(ChildProcess::exited_cleanly(status)) << target << ": " << ChildProcess::describe_status(status) << "\n"
                                                      << output << m_server->diagnostics();
    EXPECT_NE(output.find("20000"), std::string::npos) << output;
  }

  std::unique_ptr<ChildProcess> m_server;
};

TEST_P(Bench, Ipv6Loopback) {
  if (const auto reason = ipv6_loopback_unavailable()) {
    GTEST_SKIP() << *reason;
  }
  // The commands of issue 18.
  const std::string port = start_server({}, "::1");
  ASSERT_FALSE(port.empty());
  expect_run({}, "[::1]:" + port);
}

TEST_P(Bench, Ipv6OnlyNamespacesGlobalLinkLocalAndName) {
  if (const auto reason = make_pair()) {
    GTEST_SKIP() << *reason;
  }
  m_pair->add_address(Side::b, 2);
  // A name whose first address (either may sort first) has no server in one of the two runs.
  m_pair->set_hosts(Side::a, "127.0.0.1 localhost\n" + m_pair->ipv6_address(Side::b, 2) + " n3-bench\n" +
                                 m_pair->address(Side::b) + " n3-bench\n");
  const std::string port = start_server(m_pair->exec_prefix(Side::b), "::");
  ASSERT_FALSE(port.empty());
  const auto a = m_pair->exec_prefix(Side::a);
  expect_run(a, "[" + m_pair->address(Side::b) + "]:" + port);
  expect_run(a, "[" + m_pair->link_local(Side::b, Side::a) + "]:" + port);
  expect_run(a, "n3-bench:" + port);
  // The server on B's main address only: the name's other address refuses.
  m_server.reset();
  const std::string only_port = start_server(m_pair->exec_prefix(Side::b), m_pair->address(Side::b));
  ASSERT_FALSE(only_port.empty());
  expect_run(a, "n3-bench:" + only_port);
}

TEST_P(Bench, ReplyPathThatCannotConnectFailsSayingWhatCouldNotReachWhat) {
  if (const auto reason = make_pair()) {
    GTEST_SKIP() << *reason;
  }
  const std::string port = start_server(m_pair->exec_prefix(Side::b), m_pair->address(Side::b));
  ASSERT_FALSE(port.empty());
  // The client's host takes no incoming connection: its data connection works, the server's reply
  // connection back to it gets no answer.
  m_pair->refuse_incoming_connections(Side::a);
  const auto [status, output] = run_client(m_pair->exec_prefix(Side::a), "[" + m_pair->address(Side::b) + "]:" + port);
  EXPECT_FALSE(ChildProcess::exited_cleanly(status)) << output;
  EXPECT_NE(output.find("could not reach this client's listener"), std::string::npos) << output;
  EXPECT_NE(output.find("[" + m_pair->address(Side::b) + "]:" + port), std::string::npos)
      << "the client names the server: " << output;
  // The server names the address it tried to reach (its stderr, read to the end once it stopped).
  m_server->send_signal(SIGTERM);
  (void)m_server->wait_exit(Clock::now() + 30s);
  EXPECT_NE(m_server->stderr_text().find("the reply connection to [" + m_pair->address(Side::a) + "]:"),
            std::string::npos)
      << m_server->diagnostics();
}

INSTANTIATE_TEST_SUITE_P(Backends, Bench, testing::ValuesIn(backend_cases()), backend_case_name);

#endif

} // namespace
} // namespace netio3::faults
