// Conformance: messages arrive intact, in order, exactly once, in every send mode, at every size,
// over one or hundreds of connections.

#include <cstring>
#include <set>

#include "conformance/ConformanceFixture.hpp"

namespace netio3::conformance {
namespace {

class Exchange : public ConformanceTest {
protected:
  /// Payload size of message `seq` in the mixed-size runs: every size from 0 to `max_payload`
  /// comes up, with the boundaries (0, 1, powers of two and their neighbours) often.
  static std::size_t mixed_size(std::uint64_t seq, std::size_t max_payload) {
    static constexpr std::size_t boundaries[] = {0, 1, 2, 7, 15, 16, 17, 63, 64, 65, 1000, 4095, 4096, 4097};
    if (seq % 2 == 0) {
      const std::size_t candidate = boundaries[(seq / 2) % std::size(boundaries)];
      return std::min(candidate, max_payload);
    }
    if (seq % 7 == 1) {
      return max_payload;
    }
    return static_cast<std::size_t>((seq * 7919U) % (max_payload + 1));
  }

  /// Sends `messages` test messages of mixed sizes in `mode` over one connection and checks that all arrive
  /// intact and in order, that every keyed send is reported exactly once, and that closing reports
  /// no pending keys and the close at both ends.
  void exchange_in_mode(SendMode mode) {
    const std::size_t messages = count(2000, 50);
    constexpr std::size_t max_payload = 64U << 10U;
    Node& receiver = make_node();
    Node& sender = make_node();
    const EndPointAddress listening = receiver.listen(receive_params(max_payload));
    AlignedMemory& region = make_region(32 * max_payload);
    ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 8, &region)))
        << "no on_connection_established_cb for " << listening;

    StreamSender stream{sender, listening, 1, region.span(), max_payload};
    for (std::uint64_t seq = 0; seq < messages; ++seq) {
      const NetioStatus status = stream.send(mode, mixed_size(seq, max_payload));
      ASSERT_EQ(status, NetioStatus::OK) << to_string(mode) << " send of message " << seq;
    }

    ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(1) >= messages; }))
        << "received in order "
        << receiver.recorder().inspect([](const RecorderState& s) { return s.stream_progress(1); }) << " of "
        << messages << " messages; data errors:\n"
        << receiver.recorder().data_errors_text();
    EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
    EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.messages; }), messages);

    if (mode == SendMode::Buffered) {
      EXPECT_EQ(sender.recorder().inspect([](const RecorderState& s) { return s.completions; }), 0U)
          << "buffered sends carry no key and must not call on_send_completed_cb";
    } else {
      ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) {
        return keys_reported(s) >= stream.keyed_sends();
      })) << "only "
          << sender.recorder().inspect([](const RecorderState& s) { return keys_reported(s); }) << " of "
          << stream.keyed_sends() << " send keys were reported";
      const auto problems = sender.recorder().inspect(
          [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
      EXPECT_TRUE(problems.empty()) << join_lines(problems);
    }

    // The receiver saw one connection from the sender's host.
    const auto accepted = receiver.recorder().inspect([](const RecorderState& s) { return s.established; });
    ASSERT_EQ(accepted.size(), 1U);
    EXPECT_EQ(accepted.front().address(), test_environment().address);

    sender.backend().close_send_endpoint(listening);
    ASSERT_TRUE(sender.wait_closed(listening)) << "no on_connection_closed_cb after close_send_endpoint";
    const auto pending =
        sender.recorder().inspect([](const RecorderState& s) { return s.closed.front().pending_keys; });
    EXPECT_TRUE(pending.empty()) << pending.size() << " keys returned although every send had completed";
    EXPECT_TRUE(receiver.wait_closed(accepted.front()))
        << "the receiver did not report the close of " << accepted.front();
  }
};

TEST_P(Exchange, CopySpanSendsArriveIntactAndInOrder) {
  exchange_in_mode(SendMode::CopySpan);
}
TEST_P(Exchange, CopyIovecSendsArriveIntactAndInOrder) {
  exchange_in_mode(SendMode::CopyIovec);
}
TEST_P(Exchange, ZeroCopySpanSendsArriveIntactAndInOrder) {
  exchange_in_mode(SendMode::ZeroCopySpan);
}
TEST_P(Exchange, ZeroCopyIovecSendsArriveIntactAndInOrder) {
  exchange_in_mode(SendMode::ZeroCopyIovec);
}
TEST_P(Exchange, BufferedSendsArriveIntactAndInOrder) {
  exchange_in_mode(SendMode::Buffered);
}

// Every size from 0 bytes (no header, no data) to several MiB, with and without header data, in
// every mode, compared byte for byte.
TEST_P(Exchange, MessageSizesFromZeroToSeveralMiB) {
  std::vector<std::size_t> sizes{0,     1,     2,     3,      15,      16,      17,     63,   64,
                                 65,    255,   256,   1023,   1024,    4095,    4096,   4097, 8192,
                                 65535, 65536, 65537, 262144, 1048575, 1048576, 1048577};
  if (!test_environment().small_scale) {
    sizes.push_back((3U << 20U) + 5U);
    sizes.push_back(4U << 20U);
  }
  const std::size_t max_payload = sizes.back();

  Node& receiver = make_node();
  Node& sender = make_node();
  receiver.recorder().set_data_mode(DataMode::Store);
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 4));
  AlignedMemory& region = make_region(2 * max_payload + 128);
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 2, &region)));

  std::uint32_t stream_id = 10;
  std::size_t received_before = 0;
  for (const SendMode mode : all_send_modes) {
    SCOPED_TRACE(std::string{"mode "} + std::string{to_string(mode)});
    StreamSender stream{sender, listening, ++stream_id, region.span(), max_payload};
    std::vector<std::vector<std::uint8_t>> expected;
    for (const std::size_t size : sizes) {
      for (const bool with_header : {false, true}) {
        expected.push_back(make_message(stream.stream(), stream.sent(), size, with_header));
        ASSERT_EQ(stream.send(mode, size, with_header), NetioStatus::OK)
            << "payload " << size << " bytes, header " << with_header;
      }
    }
    ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
      return s.stored.size() >= received_before + expected.size();
    })) << "received "
        << receiver.recorder().inspect([](const RecorderState& s) { return s.stored.size(); }) - received_before
        << " of " << expected.size() << " messages";
    receiver.recorder().inspect([&](const RecorderState& s) {
      for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& got = s.stored[received_before + i].bytes;
        const auto& want = expected[i];
        ASSERT_EQ(got.size(), want.size()) << "message " << i << " has the wrong length";
        if (!want.empty() && std::memcmp(got.data(), want.data(), want.size()) != 0) {
          const auto mismatch = std::mismatch(got.begin(), got.end(), want.begin());
          FAIL() << "message " << i << " (" << want.size() << " bytes) differs first at byte "
                 << (mismatch.first - got.begin());
        }
      }
    });
    received_before += expected.size();
    if (mode != SendMode::Buffered) {
      ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) {
        return s.keys_done(stream.zero_copy_keys()) == stream.zero_copy_keys().size() &&
               s.keys_done(stream.copy_keys()) == stream.copy_keys().size();
      }));
    }
  }
  EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.stored.size(); }), received_before)
      << "more messages arrived than were sent";
}

// Several connections at once, every mode interleaved on each: per connection every message
// arrives exactly once and in order (sequence numbers per stream), and every key is reported once.
TEST_P(Exchange, OrderingAndExactlyOncePerConnection) {
  const std::size_t messages = count(8000, 100);
  constexpr std::size_t max_payload = 8U << 10U;
  Node& receiver = make_node();
  Node& sender_a = make_node();
  Node& sender_b = make_node();
  const EndPointAddress listening_1 = receiver.listen(receive_params(max_payload));
  const EndPointAddress listening_2 = receiver.listen(receive_params(max_payload));
  ASSERT_NE(listening_1, listening_2);

  struct Connection {
    Node* node;
    EndPointAddress destination;
    AlignedMemory* region;
    std::unique_ptr<StreamSender> stream;
  };
  std::vector<Connection> connections;
  std::uint32_t stream_id = 100;
  for (Node* node : {&sender_a, &sender_b}) {
    for (const auto& destination : {listening_1, listening_2}) {
      AlignedMemory* region = &make_region(64 * max_payload);
      ASSERT_TRUE(node->connect(destination, send_params(max_payload, 16, region)));
      auto stream = std::make_unique<StreamSender>(*node, destination, ++stream_id, region->span(), max_payload);
      connections.push_back({node, destination, region, std::move(stream)});
    }
  }
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    for (auto& connection : connections) {
      const SendMode mode = all_send_modes[(seq + connection.stream->stream()) % all_send_modes.size()];
      const std::size_t size = (seq % 97 == 0) ? max_payload : static_cast<std::size_t>((seq * 31U) % 600U);
      ASSERT_EQ(connection.stream->send(mode, size), NetioStatus::OK)
          << to_string(mode) << " message " << seq << " to " << connection.destination;
    }
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return std::all_of(connections.begin(), connections.end(),
                       [&](const Connection& c) { return s.stream_progress(c.stream->stream()) >= messages; });
  })) << "not every stream arrived complete; data errors:\n"
      << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.messages; }), 4 * messages);

  for (Node* node : {&sender_a, &sender_b}) {
    std::vector<std::uint64_t> zero_copy;
    std::vector<std::uint64_t> copy;
    for (const auto& connection : connections) {
      if (connection.node == node) {
        zero_copy.insert(zero_copy.end(), connection.stream->zero_copy_keys().begin(),
                         connection.stream->zero_copy_keys().end());
        copy.insert(copy.end(), connection.stream->copy_keys().begin(), connection.stream->copy_keys().end());
      }
    }
    ASSERT_TRUE(node->recorder().wait(
        [&](const RecorderState& s) { return keys_reported(s) >= zero_copy.size() + copy.size(); }));
    const auto problems =
        node->recorder().inspect([&](const RecorderState& s) { return key_problems(s, zero_copy, copy, false); });
    EXPECT_TRUE(problems.empty()) << join_lines(problems);
  }
}

// on_data_cb is used when on_data_from_cb is unset; with both set only on_data_from_cb is called.
TEST_P(Exchange, DataCallbackChoice) {
  const std::size_t messages = count(200, 20);
  Node& plain_receiver = make_node({.use_on_data_from = false});
  Node& both_receiver = make_node({.set_both_data_callbacks = true});
  Node& sender = make_node();
  const EndPointAddress plain = plain_receiver.listen(receive_params(1024));
  const EndPointAddress both = both_receiver.listen(receive_params(1024));
  ASSERT_TRUE(sender.connect(plain, send_params(1024, 0, nullptr)));
  ASSERT_TRUE(sender.connect(both, send_params(1024, 0, nullptr)));
  StreamSender to_plain{sender, plain, 1};
  StreamSender to_both{sender, both, 2};
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    ASSERT_EQ(to_plain.send(SendMode::CopySpan, seq % 1000), NetioStatus::OK);
    ASSERT_EQ(to_both.send(SendMode::CopySpan, seq % 1000), NetioStatus::OK);
  }
  ASSERT_TRUE(plain_receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(1) >= messages; }));
  ASSERT_TRUE(both_receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(2) >= messages; }));
  plain_receiver.recorder().inspect([&](const RecorderState& s) {
    EXPECT_EQ(s.via_on_data_cb, messages);
    EXPECT_EQ(s.via_on_data_from_cb, 0U);
    return 0;
  });
  both_receiver.recorder().inspect([&](const RecorderState& s) {
    EXPECT_EQ(s.via_on_data_from_cb, messages);
    EXPECT_EQ(s.via_on_data_cb, 0U) << "with on_data_from_cb set, on_data_cb must not be called";
    return 0;
  });
  EXPECT_EQ(plain_receiver.recorder().data_error_count() + both_receiver.recorder().data_error_count(), 0U);
}

// The backend-wide shared send pool is one pool for every endpoint that uses it: what one endpoint
// takes is missing on the other (a pool per endpoint, even one of the shared pool's size, fails
// here), and once the buffers are back the other endpoint gets them. Traffic on both endpoints
// then arrives intact.
TEST_P(Exchange, SharedSendPoolIsOnePoolForEveryEndpoint) {
  const std::size_t messages = count(1000, 40);
  constexpr std::size_t max_payload = 8U << 10U;
  constexpr std::size_t shared_pool = 8;
  Node& receiver = make_node();
  Node& sender = make_node({.configure = [](NetworkConfig& config) {
    config.use_shared_send_buffers = true;
    config.shared_send_buf_size = max_payload + message_header_size;
    config.shared_send_num_buf = shared_pool;
  }});
  const EndPointAddress first = receiver.listen(receive_params(max_payload));
  const EndPointAddress second = receiver.listen(receive_params(max_payload));
  ConnectionParameters params;
  params.use_shared_send_buffers = true;
  ASSERT_TRUE(sender.connect(first, params));
  ASSERT_TRUE(sender.connect(second, params));
  EXPECT_EQ(sender.backend().get_num_available_buffers(first), shared_pool);
  EXPECT_EQ(sender.backend().get_num_available_buffers(second), shared_pool);

  // Every buffer of the pool, taken through the first endpoint.
  std::vector<NetworkBuffer*> taken;
  while (NetworkBuffer* buffer = sender.backend().get_buffer(first)) {
    ASSERT_LT(taken.size(), shared_pool) << "the first endpoint got more buffers than the shared pool has";
    taken.push_back(buffer);
  }
  ASSERT_EQ(taken.size(), shared_pool) << "the first endpoint could not take every buffer of the shared pool";
  EXPECT_EQ(sender.backend().get_buffer(second), nullptr)
      << "the second endpoint got a buffer while the first held the whole shared pool: the pools are not shared";
  EXPECT_EQ(sender.backend().get_num_available_buffers(second), 0U)
      << "the shared pool is empty, but the second endpoint reports free buffers";

  // Sent through the first endpoint, they come back and the second endpoint can take them.
  for (std::uint64_t seq = 0; seq < taken.size(); ++seq) {
    NetworkBuffer* buffer = taken[seq];
    ASSERT_TRUE(buffer->append(make_message_header(1, seq, 100)));
    fill_payload(buffer->data().subspan(buffer->pos(), 100), 1, seq);
    buffer->set_pos(buffer->pos() + 100);
    ASSERT_EQ(sender.backend().send_buffer(first, buffer), NetioStatus::OK);
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(1) >= shared_pool; }));
  // Buffered sends report nothing: poll (with a deadline) until a buffer is free again.
  NetworkBuffer* returned = nullptr;
  const auto deadline = deadline_from_now();
  while ((returned = sender.backend().get_buffer(second)) == nullptr && std::chrono::steady_clock::now() < deadline) {
    sender.recorder().wait_for_progress(std::chrono::milliseconds{5});
  }
  ASSERT_NE(returned, nullptr) << "the buffers sent through the first endpoint never became available to the second";
  ASSERT_TRUE(returned->append(make_message_header(2, 0, 100)));
  fill_payload(returned->data().subspan(returned->pos(), 100), 2, 0);
  returned->set_pos(returned->pos() + 100);
  ASSERT_EQ(sender.backend().send_buffer(second, returned), NetioStatus::OK);

  StreamSender to_first{sender, first, 3, {}, max_payload};
  StreamSender to_second{sender, second, 4, {}, max_payload};
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    ASSERT_EQ(to_first.send(SendMode::Buffered, (seq * 37U) % max_payload), NetioStatus::OK);
    ASSERT_EQ(to_second.send(SendMode::Buffered, (seq * 53U) % max_payload), NetioStatus::OK);
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return s.stream_progress(2) >= 1 && s.stream_progress(3) >= messages && s.stream_progress(4) >= messages;
  })) << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// The backend-wide shared receive pool: connections accepted by listen endpoints that use it take
// their message limit from NetworkConfig::shared_receive_buf_size, not from the listen endpoint's
// own buf_size, and carry traffic from two connections (whether the memory is one pool is not
// visible through the API: on TCP it is a limit only, see docs/tcp-backend.md).
TEST_P(Exchange, SharedReceivePoolSetsTheLimitAndCarriesTraffic) {
  const std::size_t messages = count(1000, 40);
  constexpr std::size_t max_payload = 8U << 10U;
  Node& receiver = make_node({.configure = [](NetworkConfig& config) {
    config.use_shared_receive_buffers = true;
    config.shared_receive_buf_size = max_payload + message_header_size;
    config.shared_receive_num_buf = 32;
  }});
  Node& sender = make_node();
  // The endpoint's own limit is far below the shared pool's: only the shared one may apply.
  ConnectionParametersRecv recv_params = receive_params(64, 0);
  recv_params.use_shared_receive_buffers = true;
  const EndPointAddress first = receiver.listen(recv_params);
  const EndPointAddress second = receiver.listen(recv_params);
  ASSERT_TRUE(sender.connect(first, send_params(max_payload, 0, nullptr)));
  ASSERT_TRUE(sender.connect(second, send_params(max_payload, 0, nullptr)));
  const std::vector<std::uint8_t> too_large(max_payload + 1, 0x5a);
  const auto header = make_message_header(9, 0, too_large.size());
  EXPECT_EQ(sender.backend().send_data_copy(first, too_large, header, 1), NetioStatus::MESSAGE_TOO_LARGE)
      << "a message one byte over shared_receive_buf_size was accepted";

  StreamSender to_first{sender, first, 1, {}, max_payload};
  StreamSender to_second{sender, second, 2, {}, max_payload};
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    // Every 10th message has the largest payload the shared pool's buffers take.
    const std::size_t size = seq % 10 == 0 ? max_payload : (seq * 37U) % max_payload;
    ASSERT_EQ(to_first.send(SendMode::CopySpan, size), NetioStatus::OK) << "message " << seq << " of " << size;
    ASSERT_EQ(to_second.send(SendMode::CopySpan, (seq * 53U) % max_payload), NetioStatus::OK);
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return s.stream_progress(1) >= messages && s.stream_progress(2) >= messages;
  })) << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// get_num_available_buffers reports the minimum number of free buffers since the previous call,
// not the number free now: three buffers are taken and sent, and the count is asked for only once
// they are back (the receiver has them and a copying send behind them has completed). It must still
// say pool - 3; the call after that, with nothing taken in between, says the pool is full.
TEST_P(Exchange, AvailableBuffersReportTheMinimumSinceTheLastCall) {
  constexpr std::size_t pool = 8;
  constexpr std::size_t held = 3;
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  ASSERT_TRUE(sender.connect(listening, send_params(1024, pool, nullptr)));
  EXPECT_EQ(sender.backend().get_num_available_buffers(listening), pool) << "the first call reports the current number";

  std::vector<NetworkBuffer*> taken;
  for (std::size_t i = 0; i < held; ++i) {
    NetworkBuffer* buffer = sender.backend().get_buffer(listening);
    ASSERT_NE(buffer, nullptr);
    ASSERT_GE(buffer->size(), 1024U + message_header_size);
    taken.push_back(buffer);
  }
  EXPECT_EQ(std::set<NetworkBuffer*>(taken.begin(), taken.end()).size(), taken.size())
      << "get_buffer handed out the same buffer twice";
  for (std::uint64_t seq = 0; seq < taken.size(); ++seq) {
    NetworkBuffer* buffer = taken[seq];
    ASSERT_TRUE(buffer->append(make_message_header(7, seq, 100)));
    fill_payload(buffer->data().subspan(buffer->pos(), 100), 7, seq);
    buffer->set_pos(buffer->pos() + 100);
    ASSERT_EQ(sender.backend().send_buffer(listening, buffer), NetioStatus::OK);
  }
  // Barrier: a keyed copying send behind the three buffered ones. Once its key is reported and the
  // receiver has all four, the three buffers are free again, so "free now" would be the whole pool.
  StreamSender barrier{sender, listening, 8};
  ASSERT_EQ(barrier.send(SendMode::CopySpan, 100), NetioStatus::OK);
  ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) {
    return s.stream_progress(7) >= held && s.stream_progress(8) >= 1;
  })) << receiver.recorder().data_errors_text();
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return s.keys_done(barrier.copy_keys()) == 1; }));

  EXPECT_EQ(sender.backend().get_num_available_buffers(listening), pool - held)
      << "the count must be the minimum since the previous call (3 buffers were out), not the number free now";
  // Nothing taken since: the minimum over this interval is the full pool, once every buffer is back
  // (with an in-order completion queue they all are by now; wait in case a provider returns them
  // later).
  bool all_back = false;
  const auto deadline = deadline_from_now();
  while (!all_back && std::chrono::steady_clock::now() < deadline) {
    all_back = sender.backend().get_num_available_buffers(listening) == pool;
    if (!all_back) {
      sender.recorder().wait_for_progress(std::chrono::milliseconds{5});
    }
  }
  ASSERT_TRUE(all_back) << "the pool never had all " << pool << " buffers free again";
  EXPECT_EQ(sender.backend().get_num_available_buffers(listening), pool);
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

} // namespace

NETIO3_INSTANTIATE_CONFORMANCE(Exchange);

} // namespace netio3::conformance
