// Admission and limits: on_connection_request_cb rejects by address (the rejected sender sees
// on_connection_refused_cb, the receiver never sees the connection), and
// max_connections_per_listener is enforced (the connection past the limit is refused; a freed place
// can be taken again).

#include <gtest/gtest.h>

#include <algorithm>

#include "AsyncmsgWire.hpp"
#include "FaultTestSupport.hpp"
#include "RawSocket.hpp"
#include "TrafficReceiver.hpp"
#include "TrafficSender.hpp"

namespace netio3::faults {
namespace {

using namespace std::chrono_literals;

class Admission : public testing::TestWithParam<BackendCase> {
protected:
  void SetUp() override { NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }

  [[nodiscard]] ReceiverOptions receiver_options() const {
    ReceiverOptions options;
    options.type = GetParam().type;
    options.provider = GetParam().provider;
    options.max_message = 64U * 1024U;
    return options;
  }

  /// A sender with `backends` instances (one connection each: one backend cannot have two send
  /// endpoints to the same address).
  [[nodiscard]] SenderOptions sender_options(std::size_t backends) const {
    SenderOptions options;
    options.type = GetParam().type;
    options.provider = GetParam().provider;
    options.backends = backends;
    options.profile.max_size = 2048;
    options.profile.rate = 5000; // steady, not flat out: the machine is shared
    options.connect_timeout = 10s;
    return options;
  }
};

TEST_P(Admission, RequestCallbackRejectsByAddress) {
  // The listener takes IPv4 and IPv6 ("::"); the policy admits IPv4 loopback only, so a sender
  // that comes over ::1 is turned away while one over 127.0.0.1 gets in.
  auto options = receiver_options();
  options.listen = EndPointAddress("::", 0);
  options.admission = [](const EndPointAddress& remote) { return remote.address() == "127.0.0.1"; };
  TrafficReceiver receiver(options);
  const auto port = receiver.address().port();

  TrafficSender sender(sender_options(2));
  sender.start();
  sender.add_stream(1, EndPointAddress("127.0.0.1", port), 500, 0ms, 0);
  sender.add_stream(2, EndPointAddress("::1", port), 500, 0ms, 1);

  ASSERT_TRUE(wait_until([&] { return sender.stats(2).audited; }, 30s)) << "the rejected sender got no answer";
  const auto rejected = sender.stats(2);
  EXPECT_TRUE(rejected.refused) << "a rejected connection must end in on_connection_refused_cb";
  EXPECT_FALSE(rejected.established);
  EXPECT_EQ(rejected.sent, 0U);

  ASSERT_TRUE(wait_until([&] { return receiver.stream(1).finished; }, 30s)) << sender.first_error();
  const auto admitted = sender.stats(1);
  EXPECT_TRUE(admitted.established);
  EXPECT_EQ(receiver.stream(1).received, 500U);
  EXPECT_FALSE(receiver.stream(2).seen) << "data of a rejected connection arrived";

  const auto requested = receiver.requested_remotes();
  const auto asked = [&](const std::string& address) {
    return std::any_of(requested.begin(), requested.end(),
                       [&](const EndPointAddress& remote) { return remote.address() == address; });
  };
  EXPECT_TRUE(asked("127.0.0.1")) << "on_connection_request_cb was not asked about the IPv4 sender";
  EXPECT_TRUE(asked("::1")) << "on_connection_request_cb was not asked about the IPv6 sender";

  const auto figures = receiver.snapshot();
  EXPECT_EQ(figures.established, 1U) << "only the admitted connection may be established";
  EXPECT_GE(figures.rejected, 1U);
  EXPECT_EQ(figures.protocol_errors, 0U);
  EXPECT_EQ(figures.totals.errors(), 0U) << figures.first_error;
  EXPECT_EQ(sender.totals().errors(), 0U) << sender.first_error();
}

TEST_P(Admission, RejectingEveryoneRefusesEveryConnection) {
  auto options = receiver_options();
  std::atomic<int> asked{0};
  options.admission = [&asked](const EndPointAddress&) {
    asked.fetch_add(1);
    return false;
  };
  TrafficReceiver receiver(options);
  TrafficSender sender(sender_options(3));
  sender.start();
  for (std::uint16_t stream = 1; stream <= 3; ++stream) {
    sender.add_stream(stream, receiver.address(), 100, 0ms, stream - 1U);
  }
  ASSERT_TRUE(wait_until([&] { return sender.quiescent(); }, 30s));
  for (std::uint16_t stream = 1; stream <= 3; ++stream) {
    const auto stats = sender.stats(stream);
    EXPECT_TRUE(stats.refused) << "stream " << stream;
    EXPECT_FALSE(stats.established) << "stream " << stream;
  }
  EXPECT_EQ(asked.load(), 3);
  EXPECT_EQ(receiver.snapshot().established, 0U);
  EXPECT_EQ(receiver.snapshot().totals.messages, 0U);
}

TEST_P(Admission, MaxConnectionsPerListenerIsEnforced) {
  constexpr std::size_t limit = 3;
  auto options = receiver_options();
  options.max_connections = limit;
  TrafficReceiver receiver(options);
  TrafficSender sender(sender_options(limit + 2));
  sender.start();

  // Fill the listener (streams 1..3), then one more (4) must be refused.
  for (std::uint16_t stream = 1; stream <= limit; ++stream) {
    sender.add_stream(stream, receiver.address(), 0, 0ms, stream - 1U);
  }
  ASSERT_TRUE(wait_until([&] { return receiver.snapshot().established == limit; }, 30s))
      << "established: " << receiver.snapshot().established;
  sender.add_stream(limit + 1, receiver.address(), 100, 0ms, limit);
  ASSERT_TRUE(wait_until([&] { return sender.stats(limit + 1).audited; }, 30s))
      << "the connection past the limit got no answer";
  EXPECT_TRUE(sender.stats(limit + 1).refused) << "the connection past the limit was not refused";
  EXPECT_FALSE(sender.stats(limit + 1).established);
  EXPECT_EQ(receiver.snapshot().open_connections, limit);

  // Free a place; a new connection takes it.
  sender.close_stream(1);
  ASSERT_TRUE(wait_until([&] { return receiver.snapshot().open_connections == limit - 1; }, 30s));
  sender.add_stream(limit + 2, receiver.address(), 100, 0ms, limit + 1);
  ASSERT_TRUE(wait_until([&] { return receiver.stream(limit + 2).finished; }, 30s))
      << "a connection into a freed place did not work: " << sender.first_error();
  EXPECT_EQ(receiver.stream(limit + 2).received, 100U);

  // The connections inside the limit were never disturbed.
  sender.finish_all();
  ASSERT_TRUE(wait_until([&] { return receiver.stream(2).finished && receiver.stream(3).finished; }, 30s));
  const auto figures = receiver.snapshot();
  EXPECT_EQ(figures.totals.errors(), 0U) << figures.first_error;
  EXPECT_EQ(figures.protocol_errors, 0U);
  EXPECT_EQ(sender.totals().errors(), 0U) << sender.first_error();
  EXPECT_LE(figures.open_connections, limit);
}

INSTANTIATE_TEST_SUITE_P(Backends, Admission, testing::ValuesIn(backend_cases()), backend_case_name);

// TCP backend only: a raw client from a rejected address gets a "rejected" Reply (or a plain
// close) and never reaches the application; an admitted address on the same listener does.
TEST(AdmissionAsyncmsg, RawClientFromRejectedAddressIsTurnedAway) {
  const BackendCase backend{NetworkType::ASYNCMSG, "", "asyncmsg"};
  NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(backend);
  ReceiverOptions options;
  options.listen = EndPointAddress("0.0.0.0", 0);
  options.admission = [](const EndPointAddress& remote) { return remote.address() != "127.0.0.2"; };
  TrafficReceiver receiver(options);
  const EndPointAddress target("127.0.0.1", receiver.address().port());

  RawSocket rejected(target, "127.0.0.2");
  ASSERT_TRUE(rejected.write_all(wire::hello()));
  const auto reply = rejected.read_exact(wire::reply_size, 10s);
  if (reply) {
    EXPECT_EQ(wire::reply_status(*reply), static_cast<int>(wire::ReplyStatus::rejected));
  }
  EXPECT_NE(rejected.wait_closed(10s), RawSocket::Outcome::still_open)
      << "the rejected connection was not closed by the listener";

  RawSocket admitted(target, "127.0.0.3");
  ASSERT_TRUE(admitted.write_all(wire::hello()));
  const auto admitted_reply = admitted.read_exact(wire::reply_size, 10s);
  ASSERT_TRUE(admitted_reply) << "no Reply for an admitted raw client";
  EXPECT_EQ(wire::reply_status(*admitted_reply), static_cast<int>(wire::ReplyStatus::accepted));
  ASSERT_TRUE(wait_until([&] { return receiver.snapshot().established == 1; }, 10s));
  EXPECT_EQ(receiver.snapshot().rejected, 1U);
}

} // namespace
} // namespace netio3::faults
