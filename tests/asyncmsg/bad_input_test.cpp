// Bad input against a live TCP listener, from raw sockets: garbage instead of a handshake,
// malformed frames, oversized length claims, random bytes, truncated frames, slow partial writes,
// silent connections and connection floods. The listener stays up, each bad connection is closed
// with a logged reason, and a well-behaved connection on the same listener keeps working.

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "TestSupport.hpp"
#include "asyncmsg/WireProtocol.hpp"

namespace netio3::asyncmsg {
namespace {

using namespace netio3::asyncmsg::testing;

const std::string localhost{"127.0.0.1"};
constexpr std::size_t receive_limit{4096};

/// Warnings the library logs during a test.
class CapturedWarnings {
public:
  CapturedWarnings() {
    set_log_sink([this](LogLevel level, std::string_view message) {
      if (level >= LogLevel::Warning) {
        const std::lock_guard lock{m_mutex};
        m_messages.emplace_back(message);
      }
    });
    set_log_level(LogLevel::Warning);
  }
  CapturedWarnings(const CapturedWarnings&) = delete;
  CapturedWarnings& operator=(const CapturedWarnings&) = delete;
  CapturedWarnings(CapturedWarnings&&) = delete;
  CapturedWarnings& operator=(CapturedWarnings&&) = delete;
  ~CapturedWarnings() {
    set_log_level(LogLevel::Off);
    set_log_sink({});
  }
  /// True once a warning containing `text` was logged (waits up to wait_limit).
  bool wait_for(const std::string& text) {
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        const std::lock_guard lock{m_mutex};
        if (std::any_of(m_messages.begin(), m_messages.end(),
                        [&](const std::string& message) { return message.find(text) != std::string::npos; })) {
          return true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds{2});
    }
    return false;
  }

private:
  std::mutex m_mutex;
  std::vector<std::string> m_messages;
};

std::vector<std::uint8_t> frame_of(std::span<const std::uint8_t> payload) {
  std::vector<std::uint8_t> frame(frame_header_size + payload.size());
  encode_frame_header(frame.data(), static_cast<std::uint32_t>(payload.size()));
  std::copy(payload.begin(), payload.end(), frame.begin() + frame_header_size);
  return frame;
}

class BadInput : public ::testing::Test {
protected:
  void SetUp() override {
    NetworkConfig config = recording_config(m_receiver_events, m_loop.loop());
    config.connect_timeout = std::chrono::milliseconds{500}; // a silent peer is dropped after this
    config.max_connections_per_listener = 8;
    m_receiver = NetworkBackend::create(NetworkType::ASYNCMSG, config, m_loop.loop());
    ConnectionParametersRecv params;
    params.buf_size = receive_limit;
    m_address = m_receiver->open_listen_endpoint({localhost, 0}, params);
    m_sender =
        NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(m_sender_events, m_loop.loop()), m_loop.loop());
    m_sender->open_send_endpoint(m_address, {});
    ASSERT_TRUE(m_sender_events.wait([&] { return m_sender_events.established.size() == 1; }));
    ASSERT_TRUE(m_receiver_events.wait([&] { return m_receiver_events.established.size() == 1; }));
    m_good_peer = m_receiver_events.established.front();
    send_good_messages(); // before the bad input
  }

  void TearDown() override {
    send_good_messages(); // after it: the good connection is unaffected
    {
      const std::lock_guard lock{m_receiver_events.mutex};
      for (const auto& [peer, keys] : m_receiver_events.closed) {
        EXPECT_NE(peer, m_good_peer) << "the well-behaved connection was closed";
      }
    }
    {
      const std::lock_guard lock{m_sender_events.mutex};
      EXPECT_TRUE(m_sender_events.closed.empty());
    }
    m_sender.reset();
    m_receiver.reset();
  }

  /// Sends a few messages on the good connection and checks that they all arrive intact.
  void send_good_messages() {
    const auto message = pattern(100, static_cast<std::uint32_t>(m_good_sent));
    for (int count = 0; count < 10; ++count) {
      while (m_sender->send_data_copy(m_address, std::span<const std::uint8_t>{message}, {}, m_good_sent) !=
             NetioStatus::OK) {
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
      }
      ++m_good_sent;
    }
    ASSERT_TRUE(m_receiver_events.wait([&] {
      return static_cast<std::size_t>(
                 std::count_if(m_receiver_events.received.begin(), m_receiver_events.received.end(),
                               [&](const auto& entry) { return entry.first == m_good_peer; })) == m_good_sent;
    }));
  }

  /// A raw connection that has completed the handshake as a well-formed sender.
  RawSocket handshaken_connection() {
    RawSocket socket = RawSocket::connect_to(m_address.port());
    const auto hello = encode_hello();
    EXPECT_TRUE(socket.send_all(hello));
    std::array<std::uint8_t, reply_size> reply_bytes{};
    EXPECT_TRUE(socket.receive_exactly(reply_bytes.data(), reply_bytes.size()));
    Reply reply;
    EXPECT_EQ(decode_reply(reply_bytes, reply), HandshakeError::none);
    EXPECT_EQ(reply.status, ReplyStatus::accepted);
    EXPECT_EQ(reply.max_message_size, receive_limit);
    return socket;
  }

  /// Number of messages that arrived from anyone but the good peer.
  std::size_t messages_from_others() {
    const std::lock_guard lock{m_receiver_events.mutex};
    return messages_from_others_locked();
  }
  /// As messages_from_others, with the events' lock held (inside Events::wait).
  std::size_t messages_from_others_locked() {
    return static_cast<std::size_t>(std::count_if(m_receiver_events.received.begin(), m_receiver_events.received.end(),
                                                  [&](const auto& entry) { return entry.first != m_good_peer; }));
  }

  CapturedWarnings m_warnings;
  LoopThread m_loop;
  Events m_receiver_events;
  Events m_sender_events;
  std::unique_ptr<NetworkBackend> m_receiver;
  std::unique_ptr<NetworkBackend> m_sender;
  EndPointAddress m_address;
  EndPointAddress m_good_peer;
  std::uint64_t m_good_sent{0};
};

TEST_F(BadInput, GarbageInsteadOfAHandshake) {
  RawSocket socket = RawSocket::connect_to(m_address.port());
  const std::string garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_TRUE(socket.send_all({reinterpret_cast<const std::uint8_t*>(garbage.data()), garbage.size()}));
  EXPECT_TRUE(socket.wait_closed_by_peer());
  EXPECT_TRUE(m_warnings.wait_for("bad handshake"));
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, MalformedFrame) {
  RawSocket socket = handshaken_connection();
  auto frame = frame_of(pattern(10, 1));
  frame[0] = 'Z'; // unknown frame type
  ASSERT_TRUE(socket.send_all(frame));
  EXPECT_TRUE(socket.wait_closed_by_peer());
  EXPECT_TRUE(m_warnings.wait_for("malformed frame"));
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, OversizedLengthClaim) {
  RawSocket socket = handshaken_connection();
  // First a good message, then a header claiming 4 GiB - 1 bytes (far over the 4 KiB limit).
  ASSERT_TRUE(socket.send_all(frame_of(pattern(receive_limit, 2))));
  std::array<std::uint8_t, frame_header_size> header{};
  encode_frame_header(header.data(), 0xFFFFFFFFU);
  ASSERT_TRUE(socket.send_all(header));
  EXPECT_TRUE(socket.wait_closed_by_peer());
  EXPECT_TRUE(m_warnings.wait_for("over the limit"));
  ASSERT_TRUE(m_receiver_events.wait([&] { return messages_from_others_locked() == 1; }));
  // Its closing is reported (it was established), naming that peer.
  ASSERT_TRUE(m_receiver_events.wait([&] { return m_receiver_events.closed.size() == 1; }));
}

TEST_F(BadInput, OneByteOverTheLimit) {
  RawSocket socket = handshaken_connection();
  ASSERT_TRUE(socket.send_all(frame_of(pattern(receive_limit + 1, 3))));
  EXPECT_TRUE(socket.wait_closed_by_peer());
  EXPECT_TRUE(m_warnings.wait_for("over the limit"));
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, RandomBytesAfterTheHandshake) {
  std::mt19937 random{2024};
  std::uniform_int_distribution<int> byte{0, 255};
  for (int round = 0; round < 5; ++round) {
    RawSocket socket = handshaken_connection();
    std::vector<std::uint8_t> garbage(1024);
    for (auto& value : garbage) {
      value = static_cast<std::uint8_t>(byte(random));
    }
    (void)socket.send_all(garbage); // the listener may hang up while we write
    EXPECT_TRUE(socket.wait_closed_by_peer()) << "round " << round;
  }
  EXPECT_TRUE(m_warnings.wait_for("closes the connection from"));
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, RandomBytesInsteadOfAHandshake) {
  std::mt19937 random{99};
  std::uniform_int_distribution<int> byte{0, 255};
  for (int round = 0; round < 5; ++round) {
    RawSocket socket = RawSocket::connect_to(m_address.port());
    std::vector<std::uint8_t> garbage(200);
    for (auto& value : garbage) {
      value = static_cast<std::uint8_t>(byte(random));
    }
    (void)socket.send_all(garbage);
    EXPECT_TRUE(socket.wait_closed_by_peer()) << "round " << round;
  }
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, TruncatedFrameThenHangUp) {
  {
    RawSocket socket = handshaken_connection();
    const auto frame = frame_of(pattern(1000, 4));
    ASSERT_TRUE(socket.send_all(std::span<const std::uint8_t>{frame}.first(500)));
  } // closed mid-frame
  ASSERT_TRUE(m_receiver_events.wait([&] { return m_receiver_events.closed.size() == 1; }));
  EXPECT_EQ(messages_from_others(), 0U);
}

TEST_F(BadInput, SlowPartialWritesStillMakeAMessage) {
  RawSocket socket = handshaken_connection();
  const auto payload = pattern(300, 5);
  const auto frame = frame_of(payload);
  for (std::size_t offset = 0; offset < frame.size(); offset += 37) {
    const std::size_t count = std::min<std::size_t>(37, frame.size() - offset);
    ASSERT_TRUE(socket.send_all(std::span<const std::uint8_t>{frame}.subspan(offset, count)));
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  ASSERT_TRUE(m_receiver_events.wait([&] { return messages_from_others_locked() == 1; }));
  const std::lock_guard lock{m_receiver_events.mutex};
  for (const auto& [peer, data] : m_receiver_events.received) {
    if (peer != m_good_peer) {
      EXPECT_EQ(data, payload);
    }
  }
}

TEST_F(BadInput, SilentConnectionIsDroppedAfterTheHandshakeTimeout) {
  RawSocket socket = RawSocket::connect_to(m_address.port());
  EXPECT_TRUE(socket.wait_closed_by_peer());
  EXPECT_TRUE(m_warnings.wait_for("no handshake within"));
}

TEST_F(BadInput, ConnectionFloodBeyondTheLimit) {
  // The limit is 8 and the good connection holds one place: of 20 more connections (each saying
  // Hello), 7 are accepted and 13 are told "too many connections" and closed.
  std::vector<RawSocket> flood;
  for (int index = 0; index < 20; ++index) {
    flood.push_back(RawSocket::connect_to(m_address.port()));
    (void)flood.back().send_all(encode_hello()); // a rejected one may be closed already
  }
  std::size_t accepted = 0;
  std::size_t turned_away = 0;
  for (auto& socket : flood) {
    std::array<std::uint8_t, reply_size> reply_bytes{};
    ASSERT_TRUE(socket.receive_exactly(reply_bytes.data(), reply_bytes.size()));
    Reply reply;
    ASSERT_EQ(decode_reply(reply_bytes, reply), HandshakeError::none);
    if (reply.status == ReplyStatus::accepted) {
      ++accepted;
    } else {
      EXPECT_EQ(reply.status, ReplyStatus::too_many_connections);
      EXPECT_TRUE(socket.wait_closed_by_peer());
      ++turned_away;
    }
  }
  EXPECT_EQ(accepted, 7U);
  EXPECT_EQ(turned_away, 13U);
  EXPECT_TRUE(m_warnings.wait_for("limit of 8 connections"));
  flood.clear();
  ASSERT_TRUE(m_receiver_events.wait([&] { return m_receiver_events.closed.size() == 7; }));
  // Once they are gone, new connections are accepted again.
  RawSocket socket = handshaken_connection();
  EXPECT_EQ(messages_from_others(), 0U);
}

} // namespace
} // namespace netio3::asyncmsg
