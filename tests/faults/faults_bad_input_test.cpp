// Bad input against a live listener: raw TCP connections send garbage, spoiled handshakes,
// malformed and truncated frames, oversized length claims, bytes one at a time, nothing at all,
// and floods of connections beyond max_connections_per_listener. Throughout, a well-behaved
// connection streams verified messages into the same listener. Every bad connection must be closed
// by the listener (the raw socket sees EOF or a reset), with a logged reason naming the peer (TCP
// backend), the listener must stay up, and the well-behaved stream must finish intact.
//
// The generic cases run against both backends; the cases that need the TCP backend's frame format
// (docs/wire-protocol.md) run against it only.

#include <gtest/gtest.h>

#include <mutex>
#include <random>

#include "AsyncmsgWire.hpp"
#include "FaultTestSupport.hpp"
#include "RawSocket.hpp"
#include "TrafficReceiver.hpp"
#include "TrafficSender.hpp"

namespace netio3::faults {
namespace {

using namespace std::chrono_literals;

constexpr auto handshake_timeout = 2s; // the listener's connect_timeout
constexpr auto close_bound = handshake_timeout + 10s;
constexpr std::size_t max_message = 64U * 1024U;
constexpr std::size_t connection_limit = 16;

/// Keeps every log line (the backends log why they close a bad connection).
class LogCapture {
public:
  LogCapture() {
    set_log_level(LogLevel::Debug);
    set_log_sink([this](LogLevel, std::string_view message) {
      const std::lock_guard lock(m_mutex);
      m_lines.emplace_back(message);
    });
  }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  LogCapture(LogCapture&&) = delete;
  LogCapture& operator=(LogCapture&&) = delete;
  ~LogCapture() {
    set_log_level(LogLevel::Off);
    set_log_sink({});
  }
  /// True when a line names `peer` and is not the "accepted" notice: the close was explained.
  [[nodiscard]] bool explains_close_of(const std::string& peer) const {
    const std::lock_guard lock(m_mutex);
    for (const auto& line : m_lines) {
      if (line.find(peer) != std::string::npos && line.find("accepted") == std::string::npos) {
        return true;
      }
    }
    return false;
  }

private:
  mutable std::mutex m_mutex;
  std::vector<std::string> m_lines;
};

class BadInput : public testing::TestWithParam<BackendCase> {
protected:
  void SetUp() override {
    NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam());
    if (GetParam().type == NetworkType::ASYNCMSG) {
      m_logs = std::make_unique<LogCapture>();
    }
    ReceiverOptions options;
    options.type = GetParam().type;
    options.provider = GetParam().provider;
    options.max_message = max_message;
    options.connect_timeout = handshake_timeout;
    options.max_connections = connection_limit;
    m_receiver = std::make_unique<TrafficReceiver>(options);

    SenderOptions sender_options;
    sender_options.type = GetParam().type;
    sender_options.provider = GetParam().provider;
    sender_options.profile.max_size = 4096;
    sender_options.profile.rate = 2000;
    // One send endpoint per instance and target: stream 1 on instance 1, the late streams 2 and 3
    // on instances 2 and 0.
    sender_options.backends = 3;
    m_sender = std::make_unique<TrafficSender>(sender_options);
    m_sender->start();
    m_sender->add_stream(1, m_receiver->address(), 0);
    ASSERT_TRUE(wait_until([&] { return m_receiver->stream(1).received > 0; }, 30s))
        << "the well-behaved connection does not work: " << m_sender->first_error();
  }

  void TearDown() override {
    if (m_sender && m_receiver && !IsSkipped()) {
      // The well-behaved connection lived through everything and ends intact.
      const auto before = m_receiver->stream(1).received;
      EXPECT_TRUE(wait_until([&] { return m_receiver->stream(1).received > before; }, 30s))
          << "the well-behaved connection stopped flowing";
      m_sender->finish_stream(1);
      EXPECT_TRUE(wait_until([&] { return m_receiver->stream(1).finished; }, 30s));
      // The last message can arrive before the sender has counted it: wait for the count.
      EXPECT_TRUE(wait_until([&] { return m_sender->stats(1).done_sending; }, 30s));
      const auto stats = m_sender->stats(1);
      EXPECT_FALSE(stats.closed) << "the well-behaved connection was closed";
      EXPECT_EQ(m_receiver->stream(1).received, stats.sent);
      const auto figures = m_receiver->snapshot();
      EXPECT_EQ(figures.totals.errors(), 0U) << figures.first_error;
      EXPECT_EQ(figures.protocol_errors, 0U);
      EXPECT_EQ(m_sender->totals().errors(), 0U) << m_sender->first_error();
      // The listener still takes new connections.
      m_sender->add_stream(2, m_receiver->address(), 200, 0ms, 2);
      EXPECT_TRUE(wait_until([&] { return m_receiver->stream(2).finished; }, 30s))
          << "the listener no longer accepts well-behaved connections: " << m_sender->first_error();
    }
    m_sender.reset();
    m_receiver.reset();
    m_logs.reset();
  }

  [[nodiscard]] bool is_asyncmsg() const { return GetParam().type == NetworkType::ASYNCMSG; }
  [[nodiscard]] EndPointAddress target() const { return m_receiver->address(); }

  /// The raw connection must be closed by the listener, with a logged reason (TCP backend).
  void expect_closed(RawSocket& socket, const std::string& what) {
    expect_closed_by(socket, what, Clock::now() + close_bound);
  }
  /// As `expect_closed`, with a deadline shared by several sockets.
  void expect_closed_by(RawSocket& socket, const std::string& what, Clock::time_point deadline) {
    const auto port = socket.local_port();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    const auto outcome = socket.wait_closed(std::max(left, std::chrono::milliseconds{0}));
    EXPECT_NE(outcome, RawSocket::Outcome::still_open) << what << ": the listener did not close the connection";
    if (m_logs) {
      const std::string peer = "127.0.0.1:" + std::to_string(port);
      EXPECT_TRUE(wait_until([&] { return m_logs->explains_close_of(peer); }, 5s))
          << what << ": no log line explains why " << peer << " was closed";
    }
  }

  std::unique_ptr<LogCapture> m_logs;
  std::unique_ptr<TrafficReceiver> m_receiver;
  std::unique_ptr<TrafficSender> m_sender;
};

std::vector<std::uint8_t> random_bytes(std::size_t count, std::uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::uint8_t> bytes(count);
  for (auto& byte : bytes) {
    byte = static_cast<std::uint8_t>(generator());
  }
  return bytes;
}

// --- every backend ----------------------------------------------------------------------------------

TEST_P(BadInput, RandomGarbageIsClosed) {
  for (std::uint32_t seed = 1; seed <= 8; ++seed) {
    RawSocket socket(target());
    (void)socket.write_all(random_bytes(4096, seed)); // may fail half-way: the listener hung up
    expect_closed(socket, "4 KiB of random bytes (seed " + std::to_string(seed) + ")");
  }
}

TEST_P(BadInput, GarbageOneByteAtATimeIsClosed) {
  RawSocket socket(target());
  const auto bytes = random_bytes(4096, 42);
  std::size_t sent = 0;
  for (; sent < bytes.size(); ++sent) {
    if (!socket.write_all(std::span(bytes).subspan(sent, 1), 2s)) {
      break; // closed by the listener
    }
    std::this_thread::sleep_for(1ms);
    if (sent % 64 == 63 && socket.wait_closed(0ms) != RawSocket::Outcome::still_open) {
      break;
    }
  }
  expect_closed(socket, "random bytes written one at a time (" + std::to_string(sent) + " written)");
}

TEST_P(BadInput, HalfClosedDuringHandshakeIsClosed) {
  RawSocket socket(target());
  const std::vector<std::uint8_t> start{'N', 'I', 'O'};
  ASSERT_TRUE(socket.write_all(start));
  socket.shutdown_write();
  expect_closed(socket, "three bytes then end of stream");
}

// libfabric's tcp provider accepts connections on a passive endpoint itself and waits for their
// connection request without any timeout (libfabric 1.17, prov/tcp/src/tcpx_conn_mgr.c:
// tcpx_accept / tcpx_cm_recv_req); the backend finds such sockets among the process's descriptors
// and shuts them down after connect_timeout (docs/libfabric-backend.md, "Silent connections").
TEST_P(BadInput, SilentConnectionIsClosedAfterTheHandshakeTimeout) {
  RawSocket socket(target());
  expect_closed(socket, "a connection that never speaks");
}

TEST_P(BadInput, ConnectionFloodLeavesListenerServing) {
  // Far more connections than the listener admits, all silent; the well-behaved stream keeps
  // flowing, the listener keeps accepting (both also checked in TearDown, after the flood is
  // gone), a new connection gets in while the flood is open, and every flood connection is closed
  // by the handshake timeout.
  std::vector<RawSocket> flood;
  for (std::size_t i = 0; i < 4 * connection_limit; ++i) {
    flood.emplace_back(target());
  }
  const auto before = m_receiver->stream(1).received;
  EXPECT_TRUE(wait_until([&] { return m_receiver->stream(1).received > before + 100; }, 30s))
      << "the well-behaved connection stalled during the flood";
  if (!is_asyncmsg()) {
    // The TCP backend counts silent connections against max_connections_per_listener (so a new
    // one is turned away until they are gone); the libfabric backend never sees them as
    // connections, so a new one gets in while they are open.
    m_sender->add_stream(3, m_receiver->address(), 100, 0ms, 0);
    EXPECT_TRUE(wait_until([&] { return m_receiver->stream(3).finished; }, 30s))
        << "no new connection got in during the flood: " << m_sender->first_error();
  }
  const auto deadline = Clock::now() + close_bound;
  for (auto& socket : flood) {
    expect_closed_by(socket, "flood connection", deadline);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BadInput, testing::ValuesIn(backend_cases()), backend_case_name);

// --- the TCP backend's frames -----------------------------------------------------------------------

class BadInputAsyncmsg : public BadInput {
protected:
  /// A raw connection that completed the handshake (the listener answered "accepted").
  RawSocket handshaken() {
    RawSocket socket(target());
    EXPECT_TRUE(socket.write_all(wire::hello()));
    const auto reply = socket.read_exact(wire::reply_size, 10s);
    EXPECT_TRUE(reply) << "no handshake reply";
    if (reply) {
      EXPECT_EQ(wire::reply_status(*reply), static_cast<int>(wire::ReplyStatus::accepted));
    }
    return socket;
  }

  /// A valid test message (record header + payload) of stream `stream`, sequence 0, last.
  static std::vector<std::uint8_t> test_message(std::uint16_t stream, std::size_t payload_size) {
    std::vector<std::uint8_t> message(record_header_size + payload_size);
    const auto payload = std::span(message).subspan(record_header_size);
    fill_payload(stream, 0, payload);
    RecordHeader header;
    header.stream = stream;
    header.flags = flag_last;
    header.checksum = payload_checksum(stream, 0, payload);
    encode_header(header, std::span(message).first<record_header_size>());
    return message;
  }
};

TEST_P(BadInputAsyncmsg, SpoiledHandshakesAreClosed) {
  struct Case {
    std::string what;
    std::vector<std::uint8_t> bytes;
  };
  const std::vector<Case> cases{
      {"wrong magic", wire::hello(1, 'H', '4')},
      {"wrong kind (a Reply's)", wire::hello(1, 'R')},
      {"unknown protocol version", wire::hello(99)},
      {"reserved field set", {'N', 'I', 'O', '3', 'H', 1, 0, 1}},
      {"an HTTP request",
       {'G', 'E', 'T', ' ', '/', ' ', 'H', 'T', 'T', 'P', '/', '1', '.', '1', '\r', '\n', '\r', '\n'}},
  };
  for (const auto& bad : cases) {
    RawSocket socket(target());
    ASSERT_TRUE(socket.write_all(bad.bytes)) << bad.what;
    expect_closed(socket, bad.what);
  }
}

TEST_P(BadInputAsyncmsg, MalformedFramesAreClosed) {
  struct Case {
    std::string what;
    std::vector<std::uint8_t> bytes;
  };
  const auto header_bytes = [](std::array<std::uint8_t, wire::frame_header_size> header) {
    return std::vector<std::uint8_t>(header.begin(), header.end());
  };
  const std::vector<Case> cases{
      {"random frame bytes", random_bytes(512, 7)},
      {"wrong check field", header_bytes(wire::frame_header(100, 0x0101))},
      {"unknown frame type", header_bytes(wire::frame_header(100, 0, 'X'))},
      {"non-zero flags", header_bytes(wire::frame_header(100, 0, 'M', 0x80))},
      {"a good frame, then a bad one",
       [] {
         const auto good = wire::frame(test_message(901, 100));
         const auto bad = wire::frame_header(5, 0x1111);
         std::vector<std::uint8_t> bytes(good.size() + bad.size());
         std::copy(good.begin(), good.end(), bytes.begin());
         std::copy(bad.begin(), bad.end(), bytes.begin() + static_cast<std::ptrdiff_t>(good.size()));
         return bytes;
       }()},
  };
  for (const auto& bad : cases) {
    auto socket = handshaken();
    (void)socket.write_all(bad.bytes);
    expect_closed(socket, bad.what);
  }
  // The good frame before the bad one was delivered, and nothing of the bad ones.
  EXPECT_EQ(m_receiver->stream(901).received, 1U);
}

TEST_P(BadInputAsyncmsg, OversizedLengthClaimsAreClosedWithoutAllocating) {
  // Each claim has a correct check field, so only the length is wrong. A listener that allocated by
  // the claimed length before checking it would try to allocate up to 4 GiB here (the address
  // sanitizer build aborts on that).
  for (const std::uint32_t claim :
       {static_cast<std::uint32_t>(max_message + 1), 0x10000000U, 0x7FFFFFFFU, 0xFFFFFFFFU}) {
    auto socket = handshaken();
    const auto header = wire::frame_header(claim);
    ASSERT_TRUE(socket.write_all(header));
    (void)socket.write_all(random_bytes(1024, claim)); // a little of the "payload"
    expect_closed(socket, "a frame claiming " + std::to_string(claim) + " bytes");
  }
}

TEST_P(BadInputAsyncmsg, TruncatedFrameIsClosedAndNotDelivered) {
  auto socket = handshaken();
  const auto message = test_message(902, 1000);
  const auto bytes = wire::frame(message);
  ASSERT_TRUE(socket.write_all(std::span(bytes).first(wire::frame_header_size + 10)));
  socket.shutdown_write();
  expect_closed(socket, "a frame cut short by the end of the stream");
  EXPECT_FALSE(m_receiver->stream(902).seen) << "part of a truncated frame was delivered";
}

TEST_P(BadInputAsyncmsg, SlowValidFrameIsDeliveredIntact) {
  // Slow partial writes of a well-formed message are not an error: the listener reassembles them.
  RawSocket socket(target());
  auto bytes = wire::hello();
  const auto frame = wire::frame(test_message(903, 300));
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    ASSERT_TRUE(socket.write_all(std::span(bytes).subspan(i, 1)));
    std::this_thread::sleep_for(1ms);
  }
  const auto reply = socket.read_exact(wire::reply_size, 10s);
  ASSERT_TRUE(reply);
  ASSERT_EQ(wire::reply_status(*reply), static_cast<int>(wire::ReplyStatus::accepted));
  for (std::size_t i = 0; i < frame.size(); ++i) {
    ASSERT_TRUE(socket.write_all(std::span(frame).subspan(i, 1)));
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_TRUE(wait_until([&] { return m_receiver->stream(903).finished; }, 10s))
      << "the slowly written message did not arrive";
  EXPECT_EQ(m_receiver->stream(903).received, 1U);
  socket.shutdown_write();
  EXPECT_TRUE(wait_until([&] { return m_receiver->stream_connection_closed(903); }, 10s))
      << "the close of the slow connection was not reported";
}

TEST_P(BadInputAsyncmsg, HandshakeFloodBeyondTheLimitIsTurnedAway) {
  // Valid handshakes from many more clients than the listener admits: at most limit - 1 of them
  // (the well-behaved connection holds one place) are accepted; all others are refused with a
  // "too many connections" Reply or a plain close.
  std::vector<RawSocket> clients;
  std::size_t accepted = 0;
  std::size_t turned_away = 0;
  for (std::size_t i = 0; i < 3 * connection_limit; ++i) {
    RawSocket socket(target());
    (void)socket.write_all(wire::hello()); // may fail: a full listener can hang up at once
    const auto reply = socket.read_exact(wire::reply_size, 10s);
    if (reply && wire::reply_status(*reply) == static_cast<int>(wire::ReplyStatus::accepted)) {
      ++accepted;
      clients.push_back(std::move(socket));
      continue;
    }
    if (reply) {
      EXPECT_EQ(wire::reply_status(*reply), static_cast<int>(wire::ReplyStatus::too_many_connections));
    }
    ++turned_away;
    expect_closed(socket, "a handshake past the connection limit");
  }
  EXPECT_EQ(accepted, connection_limit - 1);
  EXPECT_GT(turned_away, 0U);
  // The Reply may reach a client before the listener's established callback has run: wait for it.
  EXPECT_TRUE(wait_until([&] { return m_receiver->snapshot().open_connections == connection_limit; }, 10s))
      << "open connections: " << m_receiver->snapshot().open_connections;
  clients.clear(); // their places free up again (TearDown opens a new well-behaved connection)
  EXPECT_TRUE(wait_until([&] { return m_receiver->snapshot().open_connections == 1; }, 10s));
}

INSTANTIATE_TEST_SUITE_P(Backends, BadInputAsyncmsg,
                         testing::Values(BackendCase{NetworkType::ASYNCMSG, "", "asyncmsg"}), backend_case_name);

} // namespace
} // namespace netio3::faults
