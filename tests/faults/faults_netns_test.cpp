// Several hosts: sender and receiver processes in two network namespaces joined by a veth pair,
// with faults injected on the path:
//   - 5 % random packet loss (nftables) both ways: a few hundred thousand messages, none lost,
//     duplicated, reordered or corrupted;
//   - the link cut mid-stream (nftables drops everything): both sides report the connection closed
//     within the configured peer timeout (+ 10 s of slack), the sender gets its pending zero-copy
//     keys back, and once the link heals a new connection works;
//   - a rate-limited link (tc tbf): backpressure reaches the sender as NO_RESOURCES, its memory
//     stays bounded, nothing is lost.
// Needs root, iproute2 and nftables; skipped with the reason otherwise.

#include <gtest/gtest.h>

#include "FaultTestSupport.hpp"
#include "Netns.hpp"

namespace netio3::faults {
namespace {

using namespace std::chrono_literals;
using Side = NetnsPair::Side;

class Netns : public testing::TestWithParam<BackendCase> {
protected:
  void SetUp() override {
    if (const auto reason = NetnsPair::unavailable_reason()) {
      GTEST_SKIP() << "network-namespace tests skipped: " << *reason;
    }
    NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    m_pair = std::make_unique<NetnsPair>();
  }
  void TearDown() override { m_pair.reset(); }

  /// The peer program in namespace `side`.
  [[nodiscard]] std::vector<std::string> peer_in(Side side, const std::vector<std::string>& args) const {
    return concat(concat(m_pair->exec_prefix(side), peer_command(args)), GetParam().peer_args());
  }

  /// Starts a receiver in B listening on B's address; returns it and its port.
  std::pair<std::unique_ptr<ChildProcess>, std::string> start_receiver(const std::vector<std::string>& extra) {
    auto receiver =
        std::make_unique<ChildProcess>(peer_in(Side::b, concat({"recv", "--listen", m_pair->address(Side::b)}, extra)));
    const auto ready = receiver->wait_for_line("READY", Clock::now() + 30s);
    if (!ready) {
      ADD_FAILURE() << "the receiver did not start\n" << receiver->diagnostics();
      return {std::move(receiver), ""};
    }
    return {std::move(receiver), parse_fields(*ready).at("port")};
  }

  /// Starts a sender in A towards B.
  [[nodiscard]] std::unique_ptr<ChildProcess> start_sender(const std::string& port,
                                                           const std::vector<std::string>& extra) const {
    return std::make_unique<ChildProcess>(
        peer_in(Side::a, concat({"send", "--connect", m_pair->address(Side::b), "--port", port}, extra)));
  }

  std::unique_ptr<NetnsPair> m_pair;
};

/// The receiver's verdicts that must all be zero.
void expect_no_losses(const std::map<std::string, std::string>& received, ChildProcess& receiver) {
  EXPECT_EQ(field_u64(received, "lost", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "duplicated", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "corrupted", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "after_last", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "protocol_errors", 1), 0U) << receiver.diagnostics();
}

/// The sender's contract checks that must all be zero.
void expect_keys_exact(const std::map<std::string, std::string>& sent, ChildProcess& sender) {
  EXPECT_EQ(field_u64(sent, "key_errors", 1), 0U) << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "unexpected_status", 1), 0U) << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "unreported_zero_copy", 1), 0U) << sender.diagnostics();
}

TEST_P(Netns, RandomLossLosesNothing) {
  const std::uint64_t connections = 4;
  const std::uint64_t per_connection = env_u64("NETIO3_LOSS_MESSAGES", 300000) / connections;
  for (const auto side : {Side::a, Side::b}) {
    m_pair->use_wire_sized_packets(side);
    m_pair->add_random_loss(side, 5);
  }

  auto [receiver, port] = start_receiver({"--expect-finished", std::to_string(connections), "--timeout-s", "240"});
  ASSERT_FALSE(port.empty());
  auto sender =
      start_sender(port, {"--connections", std::to_string(connections), "--messages", std::to_string(per_connection),
                          "--modes", "all", "--max-size", "1024", "--timeout-s", "240"});
  const auto deadline = Clock::now() + 250s;
  const auto sent = result_of(*sender, deadline);
  const auto received = result_of(*receiver, deadline);
  ASSERT_FALSE(sent.empty());
  ASSERT_FALSE(received.empty());
  const auto dropped = m_pair->dropped_packets(Side::a) + m_pair->dropped_packets(Side::b);

  EXPECT_EQ(field_u64(sent, "sent"), connections * per_connection) << sender->diagnostics();
  EXPECT_EQ(field_u64(received, "messages"), connections * per_connection) << receiver->diagnostics();
  EXPECT_EQ(field_u64(received, "in_order"), connections * per_connection);
  EXPECT_EQ(field_u64(received, "streams_finished"), connections);
  expect_no_losses(received, *receiver);
  expect_keys_exact(sent, *sender);
  EXPECT_GT(dropped, 0U) << "the loss rule dropped nothing: the fault was not injected";

  report(GetParam().name + " loss: messages", std::to_string(field_u64(received, "messages")));
  report(GetParam().name + " loss: packets dropped", std::to_string(dropped));
  report(GetParam().name + " loss: seconds", sent.count("seconds") != 0 ? sent.at("seconds") : "?");
}

TEST_P(Netns, LinkCutIsDetectedOnBothSidesAndHealedLinkWorks) {
  constexpr auto peer_timeout = 2s;
  constexpr auto bound = peer_timeout + 10s; // the documented bound: the timeout plus generous slack
  const auto timeout_ms = std::to_string(std::chrono::milliseconds(peer_timeout).count());

  auto [receiver, port] =
      start_receiver({"--expect-finished", "1", "--peer-timeout-ms", timeout_ms, "--timeout-s", "120"});
  ASSERT_FALSE(port.empty());
  // Zero-copy only, so the keys in flight at the cut are zero-copy keys that must come back.
  auto sender = start_sender(port, {"--connections",
                                    "1",
                                    "--messages",
                                    "0",
                                    "--modes",
                                    "zerocopy,zerocopy-iov",
                                    "--min-size",
                                    "1024",
                                    "--max-size",
                                    "65536",
                                    "--max-unsent-bytes",
                                    "1048576",
                                    "--peer-timeout-ms",
                                    timeout_ms,
                                    "--connect-timeout-ms",
                                    timeout_ms,
                                    "--reconnect-messages",
                                    "2000",
                                    "--milestone",
                                    "2000",
                                    "--timeout-s",
                                    "120"});
  ASSERT_TRUE(sender->wait_for_line("MILESTONE", Clock::now() + 60s)) << sender->diagnostics();

  m_pair->cut(Side::a);
  const auto cut_at = Clock::now();
  std::optional<std::string> sender_closed;
  std::optional<std::string> receiver_closed;
  std::optional<Clock::duration> sender_after;
  std::optional<Clock::duration> receiver_after;
  while ((!sender_closed || !receiver_closed) && Clock::now() < cut_at + bound) {
    const auto slice = Clock::now() + 20ms;
    if (!sender_closed) {
      if (auto line = sender->read_line(slice); line && line->rfind("CLOSED", 0) == 0) {
        sender_closed = line;
        sender_after = Clock::now() - cut_at;
      }
    }
    if (!receiver_closed) {
      if (auto line = receiver->read_line(slice); line && line->rfind("CLOSED", 0) == 0) {
        receiver_closed = line;
        receiver_after = Clock::now() - cut_at;
      }
    }
  }
  ASSERT_TRUE(sender_closed) << "the sender did not report the cut link within " << bound.count() << " s\n"
                             << sender->diagnostics();
  ASSERT_TRUE(receiver_closed) << "the receiver did not report the cut link within " << bound.count() << " s\n"
                               << receiver->diagnostics();
  const auto closed = parse_fields(*sender_closed);
  EXPECT_GT(field_u64(closed, "pending"), 0U) << "no pending zero-copy key came back: " << *sender_closed;
  EXPECT_EQ(field_u64(closed, "unreported_zero_copy", 1), 0U) << *sender_closed;
  const auto dropped = m_pair->dropped_packets(Side::a);

  // Heal: the sender, retrying meanwhile, connects again and delivers a complete new stream.
  m_pair->heal(Side::a);
  const auto deadline = Clock::now() + 90s;
  const auto sent = result_of(*sender, deadline);
  const auto received = result_of(*receiver, deadline);
  ASSERT_FALSE(sent.empty());
  ASSERT_FALSE(received.empty());
  EXPECT_GE(field_u64(sent, "reconnected"), 1U) << "no new connection after the link healed\n" << sender->diagnostics();
  EXPECT_EQ(field_u64(received, "streams_finished"), 1U) << receiver->diagnostics();
  expect_no_losses(received, *receiver);
  expect_keys_exact(sent, *sender);

  const auto seconds = [](Clock::duration duration) {
    return std::to_string(std::chrono::duration<double>(duration).count());
  };
  report(GetParam().name + " cut: sender noticed after s", seconds(*sender_after));
  report(GetParam().name + " cut: receiver noticed after s", seconds(*receiver_after));
  report(GetParam().name + " cut: pending keys returned", std::to_string(field_u64(closed, "pending")));
  report(GetParam().name + " cut: packets dropped", std::to_string(dropped));
}

TEST_P(Netns, RateLimitedLinkPushesBackWithBoundedMemory) {
  const std::uint64_t connections = 2;
  const std::uint64_t per_connection = 1500; // about 35 MB in all at ~11.7 KB per message
  const std::size_t max_unsent = 256U << 10U;
  m_pair->limit_rate(Side::a, "80mbit"); // ~10 MB/s: far slower than the sender, a few seconds in all

  auto [receiver, port] = start_receiver({"--expect-finished", std::to_string(connections), "--timeout-s", "120"});
  ASSERT_FALSE(port.empty());
  auto sender = start_sender(port, {"--connections", std::to_string(connections), "--messages",
                                    std::to_string(per_connection), "--modes", "all", "--min-size", "8192",
                                    "--max-size", "65536", "--max-unsent-bytes", std::to_string(max_unsent),
                                    "--zerocopy-bytes", "1048576", "--buffer-count", "8", "--timeout-s", "120"});
  const auto deadline = Clock::now() + 130s;
  const auto sent = result_of(*sender, deadline);
  const auto received = result_of(*receiver, deadline);
  ASSERT_FALSE(sent.empty());
  ASSERT_FALSE(received.empty());

  EXPECT_EQ(field_u64(received, "messages"), connections * per_connection) << receiver->diagnostics();
  EXPECT_EQ(field_u64(received, "streams_finished"), connections);
  expect_no_losses(received, *receiver);
  expect_keys_exact(sent, *sender);
  EXPECT_GT(field_u64(sent, "no_resources"), 0U) << "the slow link never pushed back as NO_RESOURCES";

  // Bounded memory: the sender's peak grows by its fixed pools and regions and the configured
  // unsent bytes, not by the megabytes it pushed through the slow link.
  const auto bytes = field_u64(received, "bytes");
  const auto growth_kib = field_u64(sent, "hwm_kib") - field_u64(sent, "rss_begin_kib");
  const std::uint64_t bound_kib = built_with_sanitizer() ? 96U * 1024U : 16U * 1024U;
  EXPECT_LT(growth_kib, bound_kib) << "the sender's peak memory grew by " << growth_kib << " KiB while sending "
                                   << bytes / 1024U << " KiB through a slow link";
  report(GetParam().name + " rate limit: bytes", std::to_string(bytes));
  report(GetParam().name + " rate limit: NO_RESOURCES", std::to_string(field_u64(sent, "no_resources")));
  report(GetParam().name + " rate limit: sender peak growth KiB", std::to_string(growth_kib));
}

INSTANTIATE_TEST_SUITE_P(Backends, Netns, testing::ValuesIn(backend_cases()), backend_case_name);

} // namespace
} // namespace netio3::faults
