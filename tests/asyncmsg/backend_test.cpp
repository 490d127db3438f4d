// Tests of the TCP backend over real sockets on 127.0.0.1: every send mode, limits, refusals,
// closing with pending keys, backpressure, listener close, callback exceptions, both thread-safety
// models. (The backend-independent conformance suite lives in tests/conformance/.)

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "TestSupport.hpp"
#include "asyncmsg/WireProtocol.hpp"

namespace netio3::asyncmsg {
namespace {

using namespace netio3::asyncmsg::testing;

const std::string localhost{"127.0.0.1"};

/// A raw peer that completes the receiver's half of the handshake and then never reads: the
/// sender's data piles up in the kernel buffers and then in the send queue.
struct SilentReceiver {
  RawListener listener{64 << 10}; // a small, fixed receive window
  RawSocket connection;

  void accept_and_handshake(std::uint64_t limit) {
    connection = listener.accept_one();
    std::array<std::uint8_t, hello_size> hello{};
    ASSERT_TRUE(connection.receive_exactly(hello.data(), hello.size()));
    Hello decoded;
    ASSERT_EQ(decode_hello(hello, decoded), HandshakeError::none);
    const auto reply = encode_reply(ReplyStatus::accepted, limit);
    ASSERT_TRUE(connection.send_all(reply));
    // Keep the receive window small so that the sender's queue fills soon.
  }
};

TEST(AsyncmsgBackend, RejectsRdmaMode) {
  LoopThread loop;
  NetworkConfig config;
  config.mode = NetworkMode::RDMA;
  EXPECT_THROW((void)NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop()), UnsupportedConfiguration);
}

TEST(AsyncmsgBackend, EndpointExceptions) {
  LoopThread loop;
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  const EndPointAddress requested{localhost, 0};
  const EndPointAddress actual = backend->open_listen_endpoint(requested, {});
  EXPECT_NE(actual.port(), 0);
  EXPECT_EQ(actual.address(), localhost);
  EXPECT_THROW((void)backend->open_listen_endpoint(actual, {}), ListenEndpointAlreadyExists);
  EXPECT_THROW(backend->close_listen_endpoint(requested), UnknownListenEndpoint);
  EXPECT_THROW((void)backend->open_listen_endpoint(EndPointAddress{"no-such-host.invalid", 0}, {}),
               InvalidEndpointAddress);

  const EndPointAddress unknown{localhost, 1};
  EXPECT_THROW(backend->close_send_endpoint(unknown), UnknownSendEndpoint);
  std::vector<std::uint8_t> data(10);
  EXPECT_THROW((void)backend->send_data(unknown, std::span{data}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend->send_data_copy(unknown, std::span<const std::uint8_t>{data}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend->get_buffer(unknown), UnknownSendEndpoint);
  EXPECT_THROW((void)backend->send_buffer(unknown, nullptr), UnknownSendEndpoint);
  EXPECT_THROW((void)backend->get_num_available_buffers(unknown), UnknownSendEndpoint);
  EXPECT_THROW(backend->open_send_endpoint(EndPointAddress{"no-such-host.invalid", 5}, {}), InvalidEndpointAddress);
  EXPECT_THROW(backend->open_send_endpoint(EndPointAddress{localhost, 0}, {}), InvalidEndpointAddress);

  backend->open_send_endpoint(actual, {});
  EXPECT_THROW(backend->open_send_endpoint(actual, {}), SendEndpointAlreadyExists);
  EXPECT_THROW((void)backend->get_buffer(actual), NoBuffersAllocated);
  EXPECT_THROW((void)backend->get_num_available_buffers(actual), NoBuffersAllocated);
  ConnectionParameters shared;
  shared.use_shared_send_buffers = true;
  EXPECT_THROW(backend->open_send_endpoint(EndPointAddress{localhost, 2}, shared), FailedOpenSendEndpoint);
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; })); // both ends
  backend->close_send_endpoint(actual);
  EXPECT_THROW(backend->close_send_endpoint(actual), UnknownSendEndpoint);
  backend->close_listen_endpoint(actual);
  EXPECT_THROW(backend->close_listen_endpoint(actual), UnknownListenEndpoint);
  // Closed: each side reports once (the sender for the address it opened, the receiver for the peer).
  ASSERT_TRUE(events.wait([&] { return events.closed.size() == 2; }));
  EXPECT_FALSE(events.off_loop_thread);
}

TEST(AsyncmsgBackend, ListenEverywhereAndIpv6) {
  LoopThread loop;
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  const EndPointAddress any4 = backend->open_listen_endpoint({"0.0.0.0", 0}, {});
  EXPECT_EQ(any4.address(), "0.0.0.0");
  ASSERT_NE(any4.port(), 0);
  const EndPointAddress to_any4{localhost, any4.port()};
  backend->open_send_endpoint(to_any4, {});
  const EndPointAddress any6 = backend->open_listen_endpoint({"::", 0}, {});
  const EndPointAddress to_any6{"::1", any6.port()};
  backend->open_send_endpoint(to_any6, {});
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 4; }));
  const auto message = pattern(33, 1);
  ASSERT_EQ(backend->send_data_copy(to_any4, std::span<const std::uint8_t>{message}, {}, 1), NetioStatus::OK);
  ASSERT_EQ(backend->send_data_copy(to_any6, std::span<const std::uint8_t>{message}, {}, 2), NetioStatus::OK);
  ASSERT_TRUE(events.wait([&] { return events.received.size() == 2; }));
  std::set<std::string> peers;
  for (const auto& [peer, data] : events.received) {
    EXPECT_EQ(data, message);
    peers.insert(peer.address());
  }
  EXPECT_EQ(peers, (std::set<std::string>{"127.0.0.1", "::1"}));
  backend->close_listen_endpoint(any4);
  backend->close_listen_endpoint(any6);
  ASSERT_TRUE(events.wait([&] { return events.closed.size() == 4; })); // both ends of both connections
}

TEST(AsyncmsgBackend, EverySendModeWithHeaderData) {
  LoopThread loop;
  Events receiver_events;
  Events sender_events;
  auto receiver =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, loop.loop()), loop.loop());
  auto sender =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  ConnectionParameters params;
  params.num_buf = 4;
  params.buf_size = 4096;
  sender->open_send_endpoint(address, params);
  ASSERT_TRUE(sender_events.wait([&] { return !sender_events.established.empty(); }));
  ASSERT_TRUE(receiver_events.wait([&] { return !receiver_events.established.empty(); }));
  EXPECT_EQ(sender_events.established.front(), address);
  EXPECT_EQ(sender->get_num_available_buffers(address), 4U);

  const auto header = pattern(16, 1);
  const auto copy_data = pattern(1000, 2);
  auto zero_copy_data = pattern(3000, 3);
  const auto piece_a = pattern(10, 4);
  const auto piece_b = pattern(0, 5);
  const auto piece_c = pattern(777, 6);
  const std::array<iovec, 3> pieces{iovec{const_cast<std::uint8_t*>(piece_a.data()), piece_a.size()}, iovec{nullptr, 0},
                                    iovec{const_cast<std::uint8_t*>(piece_c.data()), piece_c.size()}};
  std::vector<std::vector<std::uint8_t>> expected;

  ASSERT_EQ(sender->send_data_copy(address, std::span<const std::uint8_t>{copy_data}, header, 11), NetioStatus::OK);
  expected.push_back(concat({header, copy_data}));
  ASSERT_EQ(sender->send_data_copy(address, std::span<const iovec>{pieces}, header, 12), NetioStatus::OK);
  expected.push_back(concat({header, piece_a, piece_b, piece_c}));
  ASSERT_EQ(sender->send_data(address, std::span<std::uint8_t>{zero_copy_data}, header, 13), NetioStatus::OK);
  expected.push_back(concat({header, zero_copy_data}));
  ASSERT_EQ(sender->send_data(address, std::span<const iovec>{pieces}, {}, 14), NetioStatus::OK);
  expected.push_back(concat({piece_a, piece_c}));
  ASSERT_EQ(sender->send_data_copy(address, std::span<const std::uint8_t>{}, {}, 15), NetioStatus::OK);
  expected.emplace_back(); // an empty message
  NetworkBuffer* buffer = sender->get_buffer(address);
  ASSERT_NE(buffer, nullptr);
  const auto buffered = pattern(2048, 7);
  ASSERT_TRUE(buffer->append(buffered));
  ASSERT_EQ(sender->send_buffer(address, buffer), NetioStatus::OK);
  expected.push_back(buffered);
  EXPECT_EQ(sender->send_buffer(address, buffer), NetioStatus::FAILED) // not handed out any more
      << "a buffer that is being sent (or was given back) must be refused";
  EXPECT_EQ(sender->send_buffer(address, nullptr), NetioStatus::FAILED);

  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.received.size() == expected.size(); }));
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.completed.size() == 5; }));
  for (std::size_t index = 0; index < expected.size(); ++index) {
    EXPECT_EQ(receiver_events.received[index].second, expected[index]) << "message " << index;
    EXPECT_EQ(receiver_events.received[index].first, receiver_events.established.front());
  }
  std::vector<std::uint64_t> keys;
  for (const auto& [where, key] : sender_events.completed) {
    EXPECT_EQ(where, address);
    keys.push_back(key);
  }
  EXPECT_EQ(keys, (std::vector<std::uint64_t>{11, 12, 13, 14, 15})); // in order, each once
  // The buffer came back to the pool (the minimum since the last call was 3).
  EXPECT_EQ(sender->get_num_available_buffers(address), 3U);
  EXPECT_TRUE(sender_events.wait([&] { return sender->get_num_available_buffers(address) == 4; }));
  EXPECT_FALSE(sender_events.off_loop_thread);
  EXPECT_FALSE(receiver_events.off_loop_thread);
}

TEST(AsyncmsgBackend, LargeMessagesAndTheSizeLimit) {
  LoopThread loop;
  Events events;
  events.count_only = false;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  ConnectionParametersRecv receive;
  receive.buf_size = std::size_t{6} << 20U;
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, receive);
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; }));
  const auto header = pattern(8, 9);
  const auto big_copy = pattern((std::size_t{3} << 20U) + 5, 10);
  auto big_zero_copy = pattern(receive.buf_size - header.size(), 11);
  ASSERT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{big_copy}, header, 1), NetioStatus::OK);
  ASSERT_EQ(backend->send_data(address, std::span<std::uint8_t>{big_zero_copy}, header, 2), NetioStatus::OK);
  // One byte over the receiver's limit fails at once, with nothing sent.
  std::vector<std::uint8_t> too_big(receive.buf_size - header.size() + 1);
  EXPECT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{too_big}, header, 3),
            NetioStatus::MESSAGE_TOO_LARGE);
  EXPECT_EQ(backend->send_data(address, std::span<std::uint8_t>{too_big}, header, 4), NetioStatus::MESSAGE_TOO_LARGE);
  ASSERT_TRUE(events.wait([&] { return events.received.size() == 2 && events.completed.size() == 2; }));
  EXPECT_EQ(events.received[0].second, concat({header, big_copy}));
  EXPECT_EQ(events.received[1].second, concat({header, big_zero_copy}));
  EXPECT_EQ(events.completed[0].second, 1U);
  EXPECT_EQ(events.completed[1].second, 2U);
}

// Large messages make the receiving socket wait for their rest (SO_RCVLOWAT); small messages
// after them must still wake the receiver at once, also a lone one sent after the large message
// arrived (a mark left raised would hold it back for good).
TEST(AsyncmsgBackend, SmallMessagesAfterLargeOnesArrive) {
  LoopThread loop;
  Events events;
  events.count_only = false;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  ConnectionParametersRecv receive;
  receive.buf_size = std::size_t{4} << 20U;
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, receive);
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; }));
  const std::vector<std::size_t> sizes{std::size_t{2} << 20U,         5, std::size_t{200} << 10U,
                                       (std::size_t{130} << 10U) + 1, 0, std::size_t{3} << 20U};
  std::vector<std::vector<std::uint8_t>> sent;
  std::uint64_t key = 0;
  for (const std::size_t size : sizes) {
    sent.push_back(pattern(size, static_cast<std::uint8_t>(size % 251U)));
    ASSERT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{sent.back()}, {}, ++key), NetioStatus::OK);
  }
  ASSERT_TRUE(events.wait([&] { return events.received.size() == sizes.size(); }));
  // Now alone: nothing else is on its way.
  sent.push_back(pattern(17, 3));
  ASSERT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{sent.back()}, {}, ++key), NetioStatus::OK);
  ASSERT_TRUE(events.wait([&] { return events.received.size() == sent.size(); }))
      << "a small message after large ones did not arrive";
  for (std::size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(events.received[i].second, sent[i]) << "message " << i;
  }
}

TEST(AsyncmsgBackend, SendsBeforeEstablishmentReturnNoResources) {
  LoopThread loop;
  loop.stop(); // nothing progresses until the loop runs again
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, {});
  ConnectionParameters params;
  params.num_buf = 2;
  params.buf_size = 64;
  backend->open_send_endpoint(address, params);
  const auto data = pattern(10, 1);
  EXPECT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{data}, {}, 1), NetioStatus::NO_RESOURCES);
  EXPECT_EQ(backend->get_buffer(address), nullptr);
  loop.start();
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; }));
  EXPECT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{data}, {}, 1), NetioStatus::OK);
  ASSERT_TRUE(events.wait([&] { return events.received.size() == 1 && events.completed.size() == 1; }));
}

TEST(AsyncmsgBackend, RefusedWhenNobodyListens) {
  LoopThread loop;
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  const ClosedPort closed_port;
  const EndPointAddress address{localhost, closed_port.port()};
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.refused.size() == 1; }));
  EXPECT_EQ(events.refused.front(), address);
  EXPECT_TRUE(events.established.empty());
  EXPECT_TRUE(events.closed.empty());
  // The endpoint is gone: calls name an unknown endpoint, and it may be opened again.
  const auto data = pattern(4, 1);
  EXPECT_THROW((void)backend->send_data_copy(address, std::span<const std::uint8_t>{data}, {}, 1), UnknownSendEndpoint);
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.refused.size() == 2; }));
}

TEST(AsyncmsgBackend, RefusedWhenTheHandshakeTimesOut) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  config.connect_timeout = std::chrono::milliseconds{200};
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  const RawListener silent; // accepts at the TCP level (backlog) but never answers the Hello
  const EndPointAddress address{localhost, silent.port()};
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.refused.size() == 1; }));
  EXPECT_TRUE(events.established.empty());
}

TEST(AsyncmsgBackend, RejectedByTheRequestCallback) {
  LoopThread loop;
  Events receiver_events;
  Events sender_events;
  NetworkConfig receiver_config = recording_config(receiver_events, loop.loop());
  std::atomic<bool> accept{false};
  std::atomic<int> asked{0};
  receiver_config.on_connection_request_cb = [&](const EndPointAddress& remote) {
    ++asked;
    EXPECT_EQ(remote.address(), localhost);
    return accept.load();
  };
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, loop.loop());
  auto sender =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  sender->open_send_endpoint(address, {});
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.refused.size() == 1; }));
  EXPECT_EQ(asked.load(), 1);
  EXPECT_TRUE(receiver_events.established.empty());
  accept = true;
  sender->open_send_endpoint(address, {});
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == 1; }));
  EXPECT_EQ(asked.load(), 2);
}

TEST(AsyncmsgBackend, ConnectionLimitPerListener) {
  LoopThread loop;
  Events receiver_events;
  NetworkConfig receiver_config = recording_config(receiver_events, loop.loop());
  receiver_config.max_connections_per_listener = 2;
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  Events sender_events;
  std::vector<std::unique_ptr<NetworkBackend>> senders;
  for (int index = 0; index < 3; ++index) {
    senders.push_back(
        NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop()));
    senders.back()->open_send_endpoint(address, {});
    // One at a time, so that the third is the one over the limit.
    ASSERT_TRUE(sender_events.wait([&] {
      return sender_events.established.size() + sender_events.refused.size() == static_cast<std::size_t>(index + 1);
    }));
  }
  EXPECT_EQ(sender_events.established.size(), 2U);
  EXPECT_EQ(sender_events.refused.size(), 1U);
  // Once one closes, there is room again.
  senders[0]->close_send_endpoint(address);
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.closed.size() == 1; }));
  senders[2]->open_send_endpoint(address, {});
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == 3; }));
}

TEST(AsyncmsgBackend, CloseReturnsEveryPendingKeyOnce) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  config.max_unsent_bytes = std::size_t{1} << 20U;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  SilentReceiver silent;
  const EndPointAddress address{localhost, silent.listener.port()};
  sender->open_send_endpoint(address, {});
  silent.accept_and_handshake(std::uint64_t{1} << 20U);
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 1; }));
  // Zero-copy sends from memory that stays untouched, mixed with copies, until the queue is full.
  auto region = pattern(std::size_t{64} << 10U, 5);
  std::set<std::uint64_t> accepted;
  std::uint64_t key = 0;
  int consecutive_no_resources = 0;
  while (consecutive_no_resources < 50) {
    ++key;
    const NetioStatus status =
        key % 2 == 0 ? sender->send_data(address, std::span<std::uint8_t>{region}, {}, key)
                     : sender->send_data_copy(address, std::span<const std::uint8_t>{region}.first(1000), {}, key);
    if (status == NetioStatus::OK) {
      accepted.insert(key);
      consecutive_no_resources = 0;
    } else {
      ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
      ++consecutive_no_resources;
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  sender->close_send_endpoint(address);
  ASSERT_TRUE(events.wait([&] { return !events.closed.empty(); }));
  std::size_t completed_before_barrier = 0;
  {
    const std::lock_guard lock{events.mutex}; // a stray late callback may still append
    const auto& [closed_address, pending] = events.closed.front();
    EXPECT_EQ(closed_address, address);
    EXPECT_FALSE(pending.empty()); // the silent receiver took only what the kernel buffers hold
    std::map<std::uint64_t, int> seen;
    for (const auto& [where, completed_key] : events.completed) {
      ++seen[completed_key];
    }
    for (const std::uint64_t pending_key : pending) {
      ++seen[pending_key];
    }
    ASSERT_EQ(seen.size(), accepted.size());
    for (const auto& [seen_key, count] : seen) {
      EXPECT_EQ(count, 1) << "key " << seen_key;
      EXPECT_TRUE(accepted.contains(seen_key)) << "key " << seen_key;
    }
    completed_before_barrier = events.completed.size();
  }
  // Nothing after the close: a barrier message through the same backend, then the record again.
  ASSERT_TRUE(send_barrier_message(*sender, events)) << "the barrier message did not complete";
  const std::lock_guard lock{events.mutex};
  EXPECT_EQ(events.closed.size(), 1U) << "a second close was reported";
  EXPECT_EQ(events.completed.size(), completed_before_barrier + 1) << "a completion came after the close";
  EXPECT_EQ(events.completed.back().second, barrier_key);
}

TEST(AsyncmsgBackend, BackpressureKeepsUnsentBytesBounded) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  config.max_unsent_bytes = std::size_t{256} << 10U;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  SilentReceiver silent;
  const EndPointAddress address{localhost, silent.listener.port()};
  ConnectionParameters params;
  params.num_buf = 8;
  params.buf_size = 4096;
  sender->open_send_endpoint(address, params);
  silent.accept_and_handshake(1U << 20U);
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 1; }));
  const auto message = pattern(1024, 3);
  std::uint64_t accepted = 0;
  int no_resources = 0;
  while (no_resources < 50 && accepted < 1000000) {
    const auto status = sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, accepted);
    if (status == NetioStatus::OK) {
      ++accepted;
      no_resources = 0;
    } else {
      ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
      ++no_resources;
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  // What was accepted fits in the bound plus what the kernel buffers of both sides hold.
  const std::size_t frame = message.size() + frame_header_size;
  const std::size_t kernel_buffers = max_tcp_send_buffer() + (std::size_t{1} << 20U); // receive side: 64 KiB
  EXPECT_LE(accepted * frame, config.max_unsent_bytes + kernel_buffers);
  // Buffers run dry as well: they stay queued behind the copies.
  std::vector<NetworkBuffer*> held;
  while (NetworkBuffer* buffer = sender->get_buffer(address)) {
    held.push_back(buffer);
    ASSERT_TRUE(buffer->append(message));
    if (sender->send_buffer(address, buffer) != NetioStatus::NO_RESOURCES) {
      held.pop_back();
    }
  }
  // The receiver starts reading: everything arrives, every key completes, sending works again.
  const std::size_t expected_bytes = accepted * frame;
  std::size_t drained = 0;
  while (drained < expected_bytes) {
    const std::size_t got = silent.connection.drain_available(expected_bytes - drained, std::chrono::seconds{10});
    ASSERT_GT(got, 0U) << "the sender stopped after " << drained << " of " << expected_bytes << " bytes";
    drained += got;
  }
  ASSERT_TRUE(events.wait([&] { return events.completed.size() == accepted; }));
  for (NetworkBuffer* buffer : held) {
    EXPECT_EQ(sender->send_buffer(address, buffer), NetioStatus::OK);
  }
  EXPECT_EQ(sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, accepted), NetioStatus::OK);
}

TEST(AsyncmsgBackend, PeerHangUpReturnsPendingKeys) {
  LoopThread loop;
  Events events;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  SilentReceiver silent;
  const EndPointAddress address{localhost, silent.listener.port()};
  sender->open_send_endpoint(address, {});
  silent.accept_and_handshake(std::uint64_t{1} << 20U);
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 1; }));
  auto region = pattern(std::size_t{64} << 10U, 8);
  std::set<std::uint64_t> accepted;
  for (std::uint64_t key = 1; key <= 200; ++key) {
    if (sender->send_data(address, std::span<std::uint8_t>{region}, {}, key) == NetioStatus::OK) {
      accepted.insert(key);
    }
  }
  ASSERT_FALSE(accepted.empty());
  silent.connection.close(); // the receiver goes away with data unread: the sender sees a reset
  ASSERT_TRUE(events.wait([&] { return events.closed.size() == 1; }));
  // Anything the backend still reports for the connection comes before the barrier's completion.
  ASSERT_TRUE(send_barrier_message(*sender, events)) << "the barrier message did not complete";
  std::unique_lock lock{events.mutex};
  ASSERT_EQ(events.closed.size(), 1U) << "the close was reported twice";
  // Every accepted key exactly once (completed or returned), and nothing else: a key reported for a
  // send that returned NO_RESOURCES, or twice, is a failure.
  std::map<std::uint64_t, int> seen;
  for (const auto& [where, key] : events.completed) {
    if (key != barrier_key) {
      ++seen[key];
    }
  }
  for (const std::uint64_t key : events.closed.front().second) {
    ++seen[key];
  }
  for (const auto& [key, count] : seen) {
    EXPECT_EQ(count, 1) << "key " << key << " was reported " << count << " times";
    EXPECT_TRUE(accepted.contains(key)) << "key " << key << " was reported, but its send was not accepted";
  }
  for (const std::uint64_t key : accepted) {
    EXPECT_TRUE(seen.contains(key)) << "accepted key " << key << " was never reported";
  }
  lock.unlock();
  // The endpoint is gone after its closed callback.
  EXPECT_THROW((void)sender->send_data(address, std::span<std::uint8_t>{region}, {}, 999), UnknownSendEndpoint);
}

// Dead-peer detection (NetworkConfig::peer_timeout) on loopback: a vanished peer cannot be played
// here (the kernel answers keepalive probes and acknowledges data for any live socket; link cuts
// are tested with network namespaces in tests/faults/). What loopback can show is the other half of
// TCP_USER_TIMEOUT: a receiver whose window stays closed (it stopped reading) for longer than
// peer_timeout is given up by the kernel, and the backend reports the connection closed with every
// pending key. Without the option the kernel would probe the closed window forever.
TEST(AsyncmsgBackend, ReceiverThatStopsReadingIsDroppedAfterThePeerTimeout) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  config.peer_timeout = std::chrono::milliseconds{1000};
  config.max_unsent_bytes = std::size_t{256} << 10U;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  SilentReceiver silent;
  const EndPointAddress address{localhost, silent.listener.port()};
  sender->open_send_endpoint(address, {});
  silent.accept_and_handshake(std::uint64_t{1} << 20U);
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 1; }));
  // Fill the kernel buffers and the send queue.
  const auto message = pattern(16 << 10, 9);
  std::set<std::uint64_t> accepted;
  int no_resources = 0;
  for (std::uint64_t key = 0; no_resources < 20 && key < 100000; ++key) {
    const NetioStatus status = sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, key);
    if (status == NetioStatus::OK) {
      accepted.insert(key);
      no_resources = 0;
    } else {
      ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
      ++no_resources;
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  ASSERT_EQ(no_resources, 20) << "the queue never filled up";
  // The receiver keeps its socket open and never reads: only the user timeout ends the connection.
  ASSERT_TRUE(events.wait([&] { return events.closed.size() == 1; })) << "the stalled connection was never dropped";
  EXPECT_EQ(events.closed.front().first, address);
  EXPECT_FALSE(events.closed.front().second.empty()) << "queued messages were never written: their keys are pending";
  std::map<std::uint64_t, int> seen;
  for (const auto& [where, key] : events.completed) {
    ++seen[key];
  }
  for (const std::uint64_t key : events.closed.front().second) {
    ++seen[key];
  }
  EXPECT_EQ(seen.size(), accepted.size());
  for (const auto& [key, count] : seen) {
    EXPECT_EQ(count, 1) << "key " << key;
  }
  EXPECT_THROW((void)sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, 0),
               UnknownSendEndpoint);
}

TEST(AsyncmsgBackend, ProtocolVersionMismatchIsRefused) {
  LoopThread loop;
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  // A receiver of another version answers "unsupported version".
  RawListener future;
  backend->open_send_endpoint({localhost, future.port()}, {});
  RawSocket peer = future.accept_one();
  std::array<std::uint8_t, hello_size> hello{};
  ASSERT_TRUE(peer.receive_exactly(hello.data(), hello.size()));
  auto reply = encode_reply(ReplyStatus::unsupported_version, 0);
  reply[5] = 2;
  ASSERT_TRUE(peer.send_all(reply));
  ASSERT_TRUE(events.wait([&] { return events.refused.size() == 1; }));
  // A sender of another version gets that answer from us.
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, {});
  RawSocket old_sender = RawSocket::connect_to(address.port());
  auto future_hello = encode_hello();
  future_hello[5] = 2;
  ASSERT_TRUE(old_sender.send_all(future_hello));
  std::array<std::uint8_t, reply_size> answer{};
  ASSERT_TRUE(old_sender.receive_exactly(answer.data(), answer.size()));
  Reply decoded;
  ASSERT_EQ(decode_reply(answer, decoded), HandshakeError::none);
  EXPECT_EQ(decoded.status, ReplyStatus::unsupported_version);
  EXPECT_TRUE(old_sender.wait_closed_by_peer());
  EXPECT_TRUE(events.established.empty());
}

TEST(AsyncmsgBackend, CloseAndReopenFromCallbacks) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  NetworkBackend* backend_pointer = nullptr;
  EndPointAddress address;
  std::atomic<int> reopened{0};
  auto record_completed = config.on_send_completed_cb;
  config.on_send_completed_cb = [&, record_completed](const EndPointAddress& where, std::uint64_t key) {
    record_completed(where, key);
    if (key == 1) {
      backend_pointer->close_send_endpoint(where);
      const auto data = pattern(4, 1);
      EXPECT_THROW((void)backend_pointer->send_data_copy(where, std::span<const std::uint8_t>{data}, {}, 2),
                   UnknownSendEndpoint);
    }
  };
  auto record_closed = config.on_connection_closed_cb;
  config.on_connection_closed_cb = [&, record_closed](const EndPointAddress& where,
                                                      const std::vector<std::uint64_t>& keys) {
    record_closed(where, keys);
    if (where == address && reopened.fetch_add(1) == 0) {
      backend_pointer->open_send_endpoint(where, {}); // the address may be opened again at once
    }
  };
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  backend_pointer = backend.get();
  address = backend->open_listen_endpoint({localhost, 0}, {});
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; }));
  const auto data = pattern(10, 2);
  ASSERT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{data}, {}, 1), NetioStatus::OK);
  // Closed once from the completion callback, reopened from the closed callback.
  ASSERT_TRUE(events.wait([&] {
    return std::count_if(events.established.begin(), events.established.end(),
                         [&](const EndPointAddress& where) { return where == address; }) == 2;
  }));
  ASSERT_EQ(backend->send_data_copy(address, std::span<const std::uint8_t>{data}, {}, 3), NetioStatus::OK);
  ASSERT_TRUE(events.wait([&] { return events.completed.size() == 2; }));
  EXPECT_EQ(events.completed.back().second, 3U);
  EXPECT_EQ(reopened.load(), 1);
}

TEST(AsyncmsgBackend, HundredConnectionsIntoOneListener) {
  LoopThread loop;
  Events receiver_events;
  receiver_events.count_only = true;
  NetworkConfig receiver_config = recording_config(receiver_events, loop.loop());
  std::mutex streams_mutex;
  std::map<EndPointAddress, std::uint64_t> next_per_peer;
  std::atomic<std::size_t> errors{0};
  auto count = receiver_config.on_data_from_cb;
  receiver_config.on_data_from_cb = [&, count](const EndPointAddress& peer, std::span<const std::uint8_t> data) {
    std::uint64_t sequence = 0;
    if (data.size() != 100) {
      ++errors;
    } else {
      std::memcpy(&sequence, data.data(), sizeof(sequence));
      const std::lock_guard lock{streams_mutex};
      if (next_per_peer[peer]++ != sequence) {
        ++errors;
      }
    }
    count(peer, data);
  };
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, loop.loop());
  const EndPointAddress listening = receiver->open_listen_endpoint({"0.0.0.0", 0}, {});
  Events sender_events;
  sender_events.count_only = true;
  auto sender =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
  constexpr int connections = 100;
  constexpr std::uint64_t per_connection = 200;
  std::vector<EndPointAddress> addresses;
  for (int index = 0; index < connections; ++index) {
    // 127.0.0.0/8 is all loopback: one listener on 0.0.0.0, a distinct address per endpoint.
    addresses.emplace_back("127.0.0." + std::to_string(index + 1), listening.port());
    sender->open_send_endpoint(addresses.back(), {});
  }
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == connections; }));
  std::vector<std::uint8_t> message(100);
  for (std::uint64_t sequence = 0; sequence < per_connection; ++sequence) {
    std::memcpy(message.data(), &sequence, sizeof(sequence));
    for (const auto& address : addresses) {
      while (sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, sequence) != NetioStatus::OK) {
        std::this_thread::yield();
      }
    }
  }
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.received_count == connections * per_connection; }));
  EXPECT_EQ(errors.load(), 0U);
  const std::lock_guard lock{streams_mutex};
  EXPECT_EQ(next_per_peer.size(), static_cast<std::size_t>(connections));
}

TEST(AsyncmsgBackend, ClosingAListenerClosesItsConnections) {
  LoopThread loop;
  Events receiver_events;
  Events sender_events;
  auto receiver =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(receiver_events, loop.loop()), loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});
  auto first = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
  auto second =
      NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
  first->open_send_endpoint(address, {});
  second->open_send_endpoint(address, {});
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.established.size() == 2; }));
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == 2; }));
  receiver->close_listen_endpoint(address);
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.closed.size() == 2; }));
  std::set<EndPointAddress> peers(receiver_events.established.begin(), receiver_events.established.end());
  for (const auto& [peer, keys] : receiver_events.closed) {
    EXPECT_TRUE(peers.contains(peer));
    EXPECT_TRUE(keys.empty());
  }
  // The senders see their peer go.
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.closed.size() == 2; }));
  EXPECT_THROW(first->close_send_endpoint(address), UnknownSendEndpoint);
}

// close_accepted_connection (a netio3 addition used by ibmsg): from another thread while the loop
// runs, from inside a data callback, and while the loop is stopped. The peer sees its connection
// closed, the closed callback fires once (never inside the call), other connections carry on.
TEST(AsyncmsgBackend, CloseAcceptedConnection) {
  LoopThread receiver_loop;
  Events receiver_events;
  NetworkConfig receiver_config = recording_config(receiver_events, receiver_loop.loop());
  std::unique_ptr<NetworkBackend> receiver;
  std::atomic<bool> close_from_callback{false};
  std::atomic<int> closes_inside_the_call{0};
  std::atomic<bool> in_close_call{false};
  auto record_data = receiver_config.on_data_from_cb;
  receiver_config.on_data_from_cb = [&, record_data](const EndPointAddress& remote,
                                                     std::span<const std::uint8_t> data) {
    record_data(remote, data);
    if (close_from_callback.exchange(false)) {
      in_close_call = true;
      receiver->close_accepted_connection(remote);
      in_close_call = false;
    }
  };
  auto record_closed = receiver_config.on_connection_closed_cb;
  receiver_config.on_connection_closed_cb = [&, record_closed](const EndPointAddress& remote,
                                                               const std::vector<std::uint64_t>& keys) {
    if (in_close_call) {
      ++closes_inside_the_call;
    }
    record_closed(remote, keys);
  };
  receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, receiver_loop.loop());
  const EndPointAddress address = receiver->open_listen_endpoint({localhost, 0}, {});

  LoopThread sender_loop;
  Events sender_events;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, sender_loop.loop()),
                                       sender_loop.loop());
  auto other_sender = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, sender_loop.loop()),
                                             sender_loop.loop());
  const auto connect_both = [&](std::size_t established_before) {
    sender->open_send_endpoint(address, {});
    ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.established.size() == established_before + 1; }));
    ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == established_before + 1; }));
  };
  other_sender->open_send_endpoint(address, {});
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.established.size() == 1; }));
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == 1; }));
  const auto message = pattern(100, 1);

  // 1. From the test thread while the loop runs.
  connect_both(1);
  EndPointAddress peer = receiver_events.established.back();
  receiver->close_accepted_connection(peer);
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.closed.size() == 1; }));
  EXPECT_EQ(receiver_events.closed.back().first, peer);
  EXPECT_TRUE(receiver_events.closed.back().second.empty());
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.closed.size() == 1; })) << "the sender never saw the close";
  EXPECT_EQ(sender_events.closed.back().first, address);
  EXPECT_THROW(receiver->close_accepted_connection(peer), UnknownListenEndpoint);
  EXPECT_THROW(receiver->close_accepted_connection(EndPointAddress{localhost, 1}), UnknownListenEndpoint);

  // 2. From inside the data callback of that connection.
  connect_both(2);
  peer = receiver_events.established.back();
  close_from_callback = true;
  ASSERT_EQ(sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, 1), NetioStatus::OK);
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.closed.size() == 2; }));
  EXPECT_EQ(receiver_events.closed.back().first, peer);
  EXPECT_EQ(closes_inside_the_call.load(), 0);
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.closed.size() == 2; }));

  // 3. While the receiver's loop is stopped (the call does the work itself).
  connect_both(3);
  peer = receiver_events.established.back();
  receiver_loop.stop();
  receiver->close_accepted_connection(peer);
  receiver_loop.start();
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.closed.size() == 3; }));
  EXPECT_EQ(receiver_events.closed.back().first, peer);

  // The other connection on the listener was never touched.
  ASSERT_EQ(other_sender->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, 2), NetioStatus::OK);
  ASSERT_TRUE(receiver_events.wait([&] {
    return std::any_of(receiver_events.received.begin(), receiver_events.received.end(),
                       [&](const auto& entry) { return entry.first == receiver_events.established.front(); });
  }));
  // That message is the barrier: it was sent after the three closes, so any further close the
  // receiver had to report (a second one for a closed connection, or one for the other connection)
  // was recorded before it arrived.
  const std::lock_guard lock{receiver_events.mutex};
  EXPECT_EQ(receiver_events.closed.size(), 3U); // once per connection, nothing for the other one
  EXPECT_FALSE(receiver_events.off_loop_thread);
}

TEST(AsyncmsgBackend, SenderCloseIsReportedToTheReceiver) {
  LoopThread loop;
  Events events;
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(events, loop.loop()), loop.loop());
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, {});
  {
    Events sender_events;
    auto sender =
        NetworkBackend::create(NetworkType::ASYNCMSG, recording_config(sender_events, loop.loop()), loop.loop());
    sender->open_send_endpoint(address, {});
    ASSERT_TRUE(events.wait([&] { return events.established.size() == 1; }));
    // Destroying the backend closes the connection without callbacks on the sender side.
  }
  ASSERT_TRUE(events.wait([&] { return events.closed.size() == 1; }));
  EXPECT_EQ(events.closed.front().first, events.established.front());
}

TEST(AsyncmsgBackend, CallbackExceptionsAreContained) {
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop());
  std::atomic<int> data_calls{0};
  config.on_data_from_cb = nullptr;
  config.on_data_cb = [&](std::span<const std::uint8_t>) {
    ++data_calls;
    throw std::runtime_error("thrown by the test's data callback");
  };
  auto recording_completed = config.on_send_completed_cb;
  config.on_send_completed_cb = [recording_completed](const EndPointAddress& address, std::uint64_t key) {
    recording_completed(address, key);
    throw std::runtime_error("thrown by the test's completion callback");
  };
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  const EndPointAddress address = backend->open_listen_endpoint({localhost, 0}, {});
  backend->open_send_endpoint(address, {});
  ASSERT_TRUE(events.wait([&] { return events.established.size() == 2; }));
  const auto message = pattern(100, 1);
  for (std::uint64_t key = 0; key < 100; ++key) {
    while (backend->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, key) != NetioStatus::OK) {
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  ASSERT_TRUE(events.wait([&] { return events.completed.size() == 100; }));
  const auto deadline = std::chrono::steady_clock::now() + wait_limit;
  while (data_calls.load() < 100 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  EXPECT_EQ(data_calls.load(), 100);
  EXPECT_TRUE(events.closed.empty());
}

TEST(AsyncmsgBackend, UnsafeModeDrivenFromTheLoopThread) {
  // UNSAFE: every call from the loop thread (inside callbacks). A chain: each completion sends the
  // next message, which the receiver checks for order.
  LoopThread loop;
  Events events;
  NetworkConfig config = recording_config(events, loop.loop(), ThreadSafetyModel::UNSAFE);
  constexpr std::uint64_t total = 2000;
  NetworkBackend* backend_pointer = nullptr;
  EndPointAddress address;
  std::atomic<std::uint64_t> next{0};
  const auto send_next = [&] {
    const std::uint64_t key = next.load();
    if (key >= total) {
      return;
    }
    const auto message = pattern(64 + key % 100, static_cast<std::uint32_t>(key));
    const auto status = key % 2 == 0
                            ? backend_pointer->send_data_copy(address, std::span<const std::uint8_t>{message}, {}, key)
                            : backend_pointer->send_data_copy(address, std::span<const std::uint8_t>{message},
                                                              std::span<const std::uint8_t>{message}.first(4), key);
    if (status == NetioStatus::OK) {
      next = key + 1;
    }
  };
  auto record_established = config.on_connection_established_cb;
  config.on_connection_established_cb = [&, record_established](const EndPointAddress& where) {
    record_established(where);
    if (where == address) {
      for (int burst = 0; burst < 8; ++burst) {
        send_next();
      }
    }
  };
  auto record_completed = config.on_send_completed_cb;
  config.on_send_completed_cb = [&, record_completed](const EndPointAddress& where, std::uint64_t key) {
    record_completed(where, key);
    send_next();
  };
  auto backend = NetworkBackend::create(NetworkType::ASYNCMSG, config, loop.loop());
  backend_pointer = backend.get();
  // Set-up calls while the loop runs, in UNSAFE mode, must also come from the loop thread.
  std::atomic<bool> opened{false};
  auto open_timer = loop.loop()->create_timer([&] {
    address = backend->open_listen_endpoint({localhost, 0}, {});
    backend->open_send_endpoint(address, {});
    opened = true;
  });
  open_timer.start_once(std::chrono::milliseconds{1});
  ASSERT_TRUE(events.wait([&] { return events.received.size() == total; }));
  ASSERT_TRUE(opened);
  for (std::uint64_t key = 0; key < total; ++key) {
    const auto message = pattern(64 + key % 100, static_cast<std::uint32_t>(key));
    const auto expected = key % 2 == 0 ? message : concat({std::span<const std::uint8_t>{message}.first(4), message});
    ASSERT_EQ(events.received[key].second, expected) << "message " << key;
  }
  EXPECT_FALSE(events.off_loop_thread);
  open_timer.reset();
  loop.stop();
}

TEST(AsyncmsgBackend, SafeModeFromSeveralThreads) {
  LoopThread loop;
  Events receiver_events;
  receiver_events.count_only = true;
  NetworkConfig receiver_config = recording_config(receiver_events, loop.loop());
  // Check per-thread order inside the data callback (messages say which thread sent them).
  std::mutex order_mutex;
  std::map<std::uint32_t, std::uint64_t> next_sequence;
  std::atomic<std::size_t> order_errors{0};
  auto count_received = receiver_config.on_data_from_cb;
  receiver_config.on_data_from_cb = [&, count_received](const EndPointAddress& remote,
                                                        std::span<const std::uint8_t> data) {
    std::uint32_t thread_id = 0;
    std::uint64_t sequence = 0;
    if (data.size() >= 12) {
      std::memcpy(&thread_id, data.data(), 4);
      std::memcpy(&sequence, data.data() + 4, 8);
      const std::lock_guard lock{order_mutex};
      if (next_sequence[thread_id] != sequence) {
        ++order_errors;
      }
      next_sequence[thread_id] = sequence + 1;
    } else {
      ++order_errors;
    }
    count_received(remote, data);
  };
  auto receiver = NetworkBackend::create(NetworkType::ASYNCMSG, receiver_config, loop.loop());
  const EndPointAddress first = receiver->open_listen_endpoint({localhost, 0}, {});
  const EndPointAddress second = receiver->open_listen_endpoint({localhost, 0}, {});

  Events sender_events;
  sender_events.count_only = true;
  NetworkConfig sender_config = recording_config(sender_events, loop.loop());
  sender_config.use_shared_send_buffers = true;
  sender_config.shared_send_num_buf = 16;
  sender_config.shared_send_buf_size = 256;
  auto sender = NetworkBackend::create(NetworkType::ASYNCMSG, sender_config, loop.loop());
  ConnectionParameters params;
  params.use_shared_send_buffers = true;
  sender->open_send_endpoint(first, params);
  sender->open_send_endpoint(second, params);
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.established.size() == 2; }));

  constexpr int threads = 4;
  const std::size_t per_thread = 3000;
  std::atomic<std::size_t> zero_copy_sent{0};
  std::atomic<std::size_t> copy_sent{0};
  std::vector<std::thread> workers;
  // Zero-copy payloads are constant memory, never written while in flight.
  const auto zero_copy_payload = pattern(200, 99);
  for (int thread_index = 0; thread_index < threads; ++thread_index) {
    workers.emplace_back([&, thread_index] {
      const EndPointAddress& address = thread_index % 2 == 0 ? first : second;
      for (std::uint64_t sequence = 0; sequence < per_thread; ++sequence) {
        std::array<std::uint8_t, 12> header{};
        const auto id = static_cast<std::uint32_t>(thread_index);
        std::memcpy(header.data(), &id, 4);
        std::memcpy(header.data() + 4, &sequence, 8);
        const std::uint64_t key = (static_cast<std::uint64_t>(thread_index) << 32U) | sequence;
        while (true) {
          NetioStatus status = NetioStatus::OK;
          switch (sequence % 3) {
          case 0:
            status = sender->send_data_copy(address, std::span<const std::uint8_t>{zero_copy_payload}.first(50), header,
                                            key);
            if (status == NetioStatus::OK) {
              ++copy_sent;
            }
            break;
          case 1:
            status = sender->send_data(
                address,
                std::span<std::uint8_t>{const_cast<std::uint8_t*>(zero_copy_payload.data()), zero_copy_payload.size()},
                header, key);
            if (status == NetioStatus::OK) {
              ++zero_copy_sent;
            }
            break;
          default: {
            NetworkBuffer* buffer = sender->get_buffer(address);
            if (buffer == nullptr) {
              status = NetioStatus::NO_RESOURCES;
              break;
            }
            (void)buffer->append(header);
            (void)buffer->append(std::span<const std::uint8_t>{zero_copy_payload}.first(100));
            status = sender->send_buffer(address, buffer);
            EXPECT_NE(status, NetioStatus::FAILED);
            (void)sender->get_num_available_buffers(address);
            break;
          }
          }
          if (status == NetioStatus::OK) {
            break;
          }
          ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
          std::this_thread::yield();
        }
      }
    });
  }
  // Meanwhile, set-up calls from yet another thread.
  std::thread churn{[&] {
    for (int round = 0; round < 20; ++round) {
      const EndPointAddress extra = receiver->open_listen_endpoint({localhost, 0}, {});
      sender->open_send_endpoint(extra, {});
      sender->close_send_endpoint(extra);
      receiver->close_listen_endpoint(extra);
    }
  }};
  for (auto& worker : workers) {
    worker.join();
  }
  churn.join();
  const std::size_t total = threads * per_thread;
  ASSERT_TRUE(receiver_events.wait([&] { return receiver_events.received_count == total; }));
  ASSERT_TRUE(sender_events.wait([&] { return sender_events.completed.size() == copy_sent + zero_copy_sent; }));
  EXPECT_EQ(order_errors.load(), 0U);
  std::set<std::uint64_t> keys;
  for (const auto& [where, key] : sender_events.completed) {
    EXPECT_TRUE(keys.insert(key).second) << "key " << key << " completed twice";
  }
  EXPECT_FALSE(sender_events.off_loop_thread);
  EXPECT_FALSE(receiver_events.off_loop_thread);
}

} // namespace
} // namespace netio3::asyncmsg
