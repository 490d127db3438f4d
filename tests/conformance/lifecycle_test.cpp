// Conformance: connection set-up and tear-down, refusals, the exceptions of the interface, size
// limits, and the threading rules of the callbacks.

#include <algorithm>
#include <cstring>
#include <netinet/in.h>
#include <set>
#include <sys/socket.h>
#include <unistd.h>

#include "conformance/ConformanceFixture.hpp"

namespace netio3::conformance {
namespace {

class Lifecycle : public ConformanceTest {};

// A connect to a port where nobody listens ends in on_connection_refused_cb, after which the
// endpoint is gone (unknown) and may be opened again.
TEST_P(Lifecycle, ConnectWithoutListenerIsRefused) {
  const BoundPortWithoutListener nobody{test_environment().address};
  const EndPointAddress target{test_environment().address, nobody.port()};
  Node& sender = make_node();
  sender.open_send(target, ConnectionParameters{});
  ASSERT_TRUE(sender.wait_refused(target)) << "no on_connection_refused_cb for " << target;
  sender.recorder().inspect([&](const RecorderState& s) {
    EXPECT_EQ(s.established_count(target), 0U);
    EXPECT_EQ(s.closed_count(target), 0U) << "a refused connection must not also be reported closed";
    return 0;
  });
  EXPECT_THROW(sender.backend().close_send_endpoint(target), UnknownSendEndpoint)
      << "after on_connection_refused_cb the endpoint must be gone";
  sender.open_send(target, ConnectionParameters{});
  EXPECT_TRUE(sender.wait_refused(target, 2)) << "a second attempt must be refused again";
}

// on_connection_request_cb returning false rejects the connection: the sender sees
// on_connection_refused_cb, the receiver no connection; accepting again afterwards works.
TEST_P(Lifecycle, RejectedConnectionRequestIsRefusedAtTheSender) {
  Node& receiver = make_node();
  Node& sender = make_node();
  receiver.recorder().set_accept_connections(false);
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  sender.open_send(listening, ConnectionParameters{});
  ASSERT_TRUE(sender.wait_refused(listening)) << "the rejected sender got no on_connection_refused_cb";
  receiver.recorder().inspect([&](const RecorderState& s) {
    EXPECT_GE(s.requests.size(), 1U) << "on_connection_request_cb was not asked";
    if (!s.requests.empty()) {
      EXPECT_EQ(s.requests.front().address(), test_environment().address)
          << "on_connection_request_cb must name the remote address";
    }
    EXPECT_TRUE(s.established.empty()) << "a rejected connection must not be reported established";
    return 0;
  });
  EXPECT_EQ(sender.recorder().inspect([&](const RecorderState& s) { return s.established_count(listening); }), 0U);

  receiver.recorder().set_accept_connections(true);
  ASSERT_TRUE(sender.connect(listening, ConnectionParameters{})) << "accepting again must work";
  StreamSender stream{sender, listening, 3};
  for (std::uint64_t seq = 0; seq < 10; ++seq) {
    ASSERT_EQ(stream.send(SendMode::CopySpan, 100), NetioStatus::OK);
  }
  EXPECT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.stream_progress(3) >= 10; }));
  sender.backend().close_send_endpoint(listening);
  ASSERT_TRUE(sender.wait_closed(listening));
  ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return !s.closed.empty(); }));
  receiver.recorder().inspect([&](const RecorderState& s) {
    EXPECT_EQ(s.established.size(), 1U);
    for (const auto& closed : s.closed) {
      EXPECT_EQ(std::count(s.established.begin(), s.established.end(), closed.address), 1)
          << "the receiver reported the close of " << closed.address << ", which it never reported established";
    }
    return 0;
  });
}

// Closing a send endpoint whose zero-copy sends are stuck behind a receiver that stopped reading
// returns the keys of the unfinished sends once in on_connection_closed_cb: every key is either
// completed or returned, never both, never lost, and nothing is reported after the close.
TEST_P(Lifecycle, CloseReturnsPendingZeroCopyKeysOnce) {
  constexpr std::size_t max_payload = 64U << 10U;
  Node& receiver = make_node();
  Node& sender = make_node({.configure = [](NetworkConfig& config) { config.max_unsent_bytes = 256U << 10U; }});
  const EndPointAddress listening = receiver.listen(receive_params(max_payload, 8));
  AlignedMemory& region = make_region(64 * max_payload);
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 0, &region)));
  receiver.recorder().pause_data(true);

  // Send until the connection is stuck: the backend refuses more, the receiver's loop is held in a
  // data callback, and no completion arrives any more (data fill the kernel buffers first).
  StreamSender stream{sender, listening, 5, region.span(), max_payload};
  const auto deadline = deadline_from_now();
  bool refused_by_backend = false;
  bool stuck = false;
  while (!stuck && std::chrono::steady_clock::now() < deadline) {
    const SendMode mode = stream.sent() % 2 == 0 ? SendMode::ZeroCopySpan : SendMode::ZeroCopyIovec;
    const NetioStatus status = stream.try_send(mode, max_payload);
    if (status == NetioStatus::OK) {
      continue;
    }
    ASSERT_EQ(status, NetioStatus::NO_RESOURCES);
    refused_by_backend = refused_by_backend || !stream.last_refusal_was_local();
    const auto callbacks_before = sender.recorder().inspect([](const RecorderState& s) { return s.callbacks; });
    sender.recorder().wait_for_progress(std::chrono::milliseconds{50});
    stuck = !stream.last_refusal_was_local() &&
            sender.recorder().inspect([&](const RecorderState& s) { return s.callbacks == callbacks_before; }) &&
            receiver.recorder().inspect([](const RecorderState& s) { return s.paused_callbacks > 0; });
  }
  ASSERT_TRUE(refused_by_backend) << "the sender never got NO_RESOURCES from the backend although the receiver "
                                     "stopped reading ("
                                  << stream.sent() << " messages accepted)";
  ASSERT_TRUE(stuck) << "the connection never stalled behind the stopped receiver";

  sender.backend().close_send_endpoint(listening);
  ASSERT_TRUE(sender.wait_closed(listening)) << "no on_connection_closed_cb after close_send_endpoint";
  const auto [pending, problems] = sender.recorder().inspect([&](const RecorderState& s) {
    return std::pair{s.closed.front().pending_keys, key_problems(s, stream.zero_copy_keys(), {}, false)};
  });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
  if (under_test().type == NetworkType::ASYNCMSG) {
    // TCP: NO_RESOURCES means the backend holds accepted, unsent data, so some keys are pending.
    EXPECT_FALSE(pending.empty()) << "the backend refused more data but returned no pending key on close";
  }
  EXPECT_THROW((void)stream.try_send(SendMode::ZeroCopySpan, 10), UnknownSendEndpoint)
      << "sending on a closed endpoint must throw UnknownSendEndpoint";

  // The receiver gets an intact prefix of the stream and the close.
  receiver.recorder().pause_data(false);
  ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return !s.closed.empty(); }))
      << "the receiver did not report the close";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  EXPECT_LE(receiver.recorder().inspect([](const RecorderState& s) { return s.stream_progress(5); }), stream.sent());
}

// Until a connection is established, sends return NO_RESOURCES and get_buffer returns nullptr
// (the receiver's loop is held inside a data callback, so the handshake cannot finish); once it is
// established everything goes through.
TEST_P(Lifecycle, SendsBeforeEstablishmentReturnNoResources) {
  Node& receiver = make_node();
  Node& first = make_node();
  Node& second = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  ASSERT_TRUE(first.connect(listening, ConnectionParameters{}));
  receiver.recorder().pause_data(true);
  StreamSender from_first{first, listening, 1};
  ASSERT_EQ(from_first.send(SendMode::CopySpan, 10), NetioStatus::OK);
  ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.paused_callbacks > 0; }));

  AlignedMemory& region = make_region(4 * 1024);
  second.open_send(listening, send_params(1024, 2, &region));
  StreamSender from_second{second, listening, 2, region.span(), 1024};
  for (const SendMode mode : all_send_modes) {
    EXPECT_EQ(from_second.try_send(mode, 10), NetioStatus::NO_RESOURCES)
        << to_string(mode) << " before the connection is established";
  }
  EXPECT_EQ(second.recorder().inspect([&](const RecorderState& s) { return s.established_count(listening); }), 0U)
      << "established although the receiver's loop is blocked";

  receiver.recorder().pause_data(false);
  ASSERT_TRUE(second.wait_established(listening));
  for (const SendMode mode : all_send_modes) {
    EXPECT_EQ(from_second.send(mode, 10), NetioStatus::OK) << to_string(mode) << " once established";
  }
  EXPECT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.stream_progress(2) >= 5; }));
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// Exceptions thrown by callbacks are caught by the backend and do not disturb it: every message
// still arrives in order, every key is still reported once, the connection stays up.
TEST_P(Lifecycle, ThrowingCallbacksDoNotCorruptTheBackend) {
  const std::size_t messages = count(1000, 50);
  Node& receiver = make_node();
  Node& sender = make_node();
  receiver.recorder().throw_from_callbacks(3);
  sender.recorder().throw_from_callbacks(3);
  const EndPointAddress listening = receiver.listen(receive_params(4096));
  AlignedMemory& region = make_region(64 * 4096);
  ASSERT_TRUE(sender.connect(listening, send_params(4096, 4, &region)));
  StreamSender stream{sender, listening, 8, region.span(), 4096};
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    ASSERT_EQ(stream.send(all_send_modes[seq % all_send_modes.size()], (seq * 101U) % 4096), NetioStatus::OK)
        << "message " << seq;
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(8) >= messages; }))
      << receiver.recorder().inspect([](const RecorderState& s) { return s.stream_progress(8); }) << " of " << messages
      << " arrived in order; data errors:\n"
      << receiver.recorder().data_errors_text();
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); }));
  const auto problems = sender.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
  EXPECT_EQ(sender.recorder().inspect([&](const RecorderState& s) { return s.closed_count(listening); }), 0U)
      << "a throwing callback closed the connection";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
}

// Opening what is already open throws; the original endpoint keeps working.
TEST_P(Lifecycle, DuplicateEndpointsThrow) {
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  EXPECT_THROW((void)receiver.backend().open_listen_endpoint(listening, receive_params(1024)),
               ListenEndpointAlreadyExists);
  sender.open_send(listening, ConnectionParameters{});
  EXPECT_THROW(sender.backend().open_send_endpoint(listening, ConnectionParameters{}), SendEndpointAlreadyExists)
      << "while connecting";
  ASSERT_TRUE(sender.wait_established(listening));
  EXPECT_THROW(sender.backend().open_send_endpoint(listening, ConnectionParameters{}), SendEndpointAlreadyExists)
      << "once established";
  StreamSender stream{sender, listening, 1};
  for (std::uint64_t seq = 0; seq < 10; ++seq) {
    ASSERT_EQ(stream.send(SendMode::CopySpan, 64), NetioStatus::OK);
  }
  EXPECT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.stream_progress(1) >= 10; }));
  EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.established.size(); }), 1U)
      << "a duplicate open must not create a second connection";
}

// Calls naming endpoints that do not exist (never opened, or closed) throw the Unknown* exceptions;
// buffer calls on an endpoint without buffers throw NoBuffersAllocated.
TEST_P(Lifecycle, UnknownEndpointsThrow) {
  Node& receiver = make_node();
  Node& sender = make_node();
  const BoundPortWithoutListener unused{test_environment().address};
  const EndPointAddress nowhere{test_environment().address, unused.port()};
  NetworkBackend& backend = sender.backend();
  std::array<std::uint8_t, 16> bytes{};
  const std::array<iovec, 1> iov{iovec{bytes.data(), bytes.size()}};
  NetworkBuffer foreign{bytes, 0, nullptr};

  EXPECT_THROW(backend.close_send_endpoint(nowhere), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.send_data(nowhere, std::span{bytes}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.send_data(nowhere, std::span{iov}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.send_data_copy(nowhere, std::span{bytes}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.send_data_copy(nowhere, std::span{iov}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.get_buffer(nowhere), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.send_buffer(nowhere, &foreign), UnknownSendEndpoint);
  EXPECT_THROW((void)backend.get_num_available_buffers(nowhere), UnknownSendEndpoint);
  EXPECT_THROW(backend.close_listen_endpoint(nowhere), UnknownListenEndpoint);

  // An endpoint without a pool has no buffers.
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  ASSERT_TRUE(sender.connect(listening, ConnectionParameters{}));
  EXPECT_THROW((void)backend.get_buffer(listening), NoBuffersAllocated);
  EXPECT_THROW((void)backend.get_num_available_buffers(listening), NoBuffersAllocated);

  // A buffer that get_buffer did not hand out for this endpoint is refused.
  const EndPointAddress listening_2 = receiver.listen(receive_params(1024));
  ASSERT_TRUE(sender.connect(listening_2, send_params(1024, 2, nullptr)));
  foreign.set_pos(8);
  EXPECT_EQ(backend.send_buffer(listening_2, &foreign), NetioStatus::FAILED);

  // Closed endpoints are unknown as soon as the close call returns.
  backend.close_send_endpoint(listening);
  EXPECT_THROW((void)backend.send_data_copy(listening, std::span{bytes}, {}, 1), UnknownSendEndpoint);
  EXPECT_THROW(backend.close_send_endpoint(listening), UnknownSendEndpoint);
  ASSERT_TRUE(sender.wait_closed(listening));
  EXPECT_THROW(backend.close_send_endpoint(listening), UnknownSendEndpoint);

  receiver.backend().close_listen_endpoint(listening);
  EXPECT_THROW(receiver.backend().close_listen_endpoint(listening), UnknownListenEndpoint);
}

// Malformed addresses throw InvalidEndpointAddress naming the text; listening on an address of no
// interface of this machine fails with an exception (no traffic is sent anywhere).
TEST_P(Lifecycle, InvalidAddressesThrow) {
  for (const std::string& text :
       {std::string{""}, std::string{"300.1.1.1"}, std::string{"1.2.3.4.5"}, std::string{"::1::2"}, std::string{"[::1"},
        std::string{"bad host!"}, std::string{"a..b"}, std::string(300, 'a')}) {
    try {
      const EndPointAddress address{text, 1234};
      ADD_FAILURE() << "EndPointAddress accepted '" << text << "' as " << address;
    } catch (const InvalidEndpointAddress& error) {
      EXPECT_NE(std::string{error.what()}.find(text.substr(0, 50)), std::string::npos)
          << "the message must contain the offending text '" << text << "': " << error.what();
    }
  }
  Node& node = make_node();
  // 192.0.2.1 (TEST-NET-1) is on no interface here: binding fails before anything is sent.
  try {
    const EndPointAddress opened =
        node.backend().open_listen_endpoint(EndPointAddress{"192.0.2.1", 0}, receive_params(1024));
    ADD_FAILURE() << "listening on 192.0.2.1 (no such interface) succeeded: " << opened;
  } catch (const FailedOpenListenEndpoint& error) {
    EXPECT_NE(std::string{error.what()}.find("192.0.2.1"), std::string::npos)
        << "the message must name the address: " << error.what();
  } catch (const InvalidEndpointAddress& error) {
    EXPECT_NE(std::string{error.what()}.find("192.0.2.1"), std::string::npos)
        << "the message must name the address: " << error.what();
  }
}

// A message over the receiver's largest message is refused at the sender with MESSAGE_TOO_LARGE
// in every mode (header data messages); one of exactly the largest size goes through; the connection
// carries on.
TEST_P(Lifecycle, OversizedMessagesAreRefusedAtTheSender) {
  constexpr std::size_t limit = 4096; // header plus data
  constexpr std::size_t largest_payload = limit - message_header_size;
  Node& receiver = make_node();
  Node& sender = make_node();
  ConnectionParametersRecv recv_params;
  recv_params.buf_size = limit;
  recv_params.num_buf = 4;
  const EndPointAddress listening = receiver.listen(recv_params);
  AlignedMemory& region = make_region(8 * 8192);
  ASSERT_TRUE(sender.connect(listening, send_params(8192, 2, &region)));

  StreamSender stream{sender, listening, 9, region.span(), 8192};
  for (const SendMode mode : all_send_modes) {
    SCOPED_TRACE(std::string{to_string(mode)});
    if (mode != SendMode::Buffered) {
      EXPECT_EQ(stream.try_send(mode, largest_payload + 1), NetioStatus::MESSAGE_TOO_LARGE);
      EXPECT_EQ(stream.try_send(mode, limit + 1, false), NetioStatus::MESSAGE_TOO_LARGE);
    }
    ASSERT_EQ(stream.send(mode, largest_payload), NetioStatus::OK) << "a message of exactly the limit";
  }
  // A buffered message over the limit: refused, and the buffer stays with the caller for reuse.
  NetworkBuffer* buffer = sender.backend().get_buffer(listening);
  const auto take_deadline = deadline_from_now();
  while (buffer == nullptr && std::chrono::steady_clock::now() < take_deadline) {
    sender.recorder().wait_for_progress(std::chrono::milliseconds{2});
    buffer = sender.backend().get_buffer(listening);
  }
  ASSERT_NE(buffer, nullptr);
  buffer->set_pos(limit + 1);
  EXPECT_EQ(sender.backend().send_buffer(listening, buffer), NetioStatus::MESSAGE_TOO_LARGE);
  const auto header = make_message_header(9, stream.sent(), 10);
  buffer->set_pos(0);
  ASSERT_TRUE(buffer->append(header));
  fill_payload(buffer->data().subspan(buffer->pos(), 10), 9, stream.sent());
  buffer->set_pos(buffer->pos() + 10);
  EXPECT_EQ(sender.backend().send_buffer(listening, buffer), NetioStatus::OK)
      << "the refused buffer must stay usable by the caller";

  const std::uint64_t expected = stream.sent() + 1;
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(9) >= expected; }))
      << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.messages; }), expected)
      << "refused messages must not arrive";
  EXPECT_EQ(sender.recorder().inspect([&](const RecorderState& s) { return s.closed_count(listening); }), 0U)
      << "refusing an oversized message must not close the connection";
}

// Port 0 picks a free port and returns it; an explicit port is used as given.
TEST_P(Lifecycle, ListenOnPortZeroReturnsTheRealPort) {
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress first = receiver.listen(receive_params(1024));
  const EndPointAddress second = receiver.listen(receive_params(1024));
  EXPECT_NE(first.port(), 0);
  EXPECT_NE(second.port(), 0);
  EXPECT_NE(first.port(), second.port());
  EXPECT_EQ(first.address(), test_environment().address);
  ASSERT_TRUE(sender.connect(first, ConnectionParameters{}));
  ASSERT_TRUE(sender.connect(second, ConnectionParameters{}));

  std::uint16_t free_port = 0;
  {
    const BoundPortWithoutListener probe{test_environment().address};
    free_port = probe.port();
  }
  const EndPointAddress explicit_port = receiver.listen(receive_params(1024), free_port);
  EXPECT_EQ(explicit_port.port(), free_port);
  EXPECT_TRUE(sender.connect(explicit_port, ConnectionParameters{}));
}

// Closing a listen endpoint closes the connections it accepted: the senders see
// on_connection_closed_cb (zero-copy keys accounted for), the receiver reports each close, and the
// port no longer accepts.
TEST_P(Lifecycle, ClosingListenEndpointClosesItsConnections) {
  constexpr std::size_t senders_count = 3;
  constexpr std::size_t max_payload = 4096;
  Node& receiver = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(max_payload));
  auto shared_loop = std::make_shared<LoopThread>();
  std::vector<Node*> senders;
  std::vector<std::unique_ptr<StreamSender>> streams;
  for (std::size_t i = 0; i < senders_count; ++i) {
    Node& sender = make_node({}, shared_loop);
    AlignedMemory& region = make_region(16 * max_payload);
    ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 0, &region)));
    senders.push_back(&sender);
    streams.push_back(std::make_unique<StreamSender>(sender, listening, static_cast<std::uint32_t>(20 + i),
                                                     region.span(), max_payload));
    for (std::uint64_t seq = 0; seq < 20; ++seq) {
      ASSERT_EQ(streams.back()->send(seq % 2 == 0 ? SendMode::ZeroCopySpan : SendMode::CopySpan, 1000),
                NetioStatus::OK);
    }
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
    return s.established.size() >= senders_count && s.stream_progress(20) >= 20 && s.stream_progress(21) >= 20 &&
           s.stream_progress(22) >= 20;
  }));

  receiver.backend().close_listen_endpoint(listening);
  for (std::size_t i = 0; i < senders_count; ++i) {
    ASSERT_TRUE(senders[i]->wait_closed(listening)) << "sender " << i << " did not see its connection closed";
    const auto problems = senders[i]->recorder().inspect([&](const RecorderState& s) {
      return key_problems(s, streams[i]->zero_copy_keys(), streams[i]->copy_keys(), true);
    });
    EXPECT_TRUE(problems.empty()) << join_lines(problems);
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= senders_count; }))
      << "the receiver must report the close of every accepted connection";
  receiver.recorder().inspect([&](const RecorderState& s) {
    const std::set<EndPointAddress> accepted(s.established.begin(), s.established.end());
    for (const auto& closed : s.closed) {
      EXPECT_TRUE(accepted.contains(closed.address)) << closed.address << " was closed but never established";
    }
    return 0;
  });
  EXPECT_THROW(receiver.backend().close_listen_endpoint(listening), UnknownListenEndpoint);
  EXPECT_THROW(senders[0]->backend().close_send_endpoint(listening), UnknownSendEndpoint)
      << "after on_connection_closed_cb the send endpoint must be gone";

  senders[0]->open_send(listening, ConnectionParameters{});
  EXPECT_TRUE(senders[0]->wait_refused(listening)) << "the closed listener still accepted a connection";
}

// An address may be opened again as soon as close_send_endpoint returns; the old connection is
// reported closed once, the new one established, and it carries data.
TEST_P(Lifecycle, SendEndpointCanBeReopenedAfterClose) {
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(1024));
  const std::size_t rounds = count(20, 3);
  for (std::size_t round = 0; round < rounds; ++round) {
    ASSERT_TRUE(sender.connect(listening, send_params(1024, 2, nullptr))) << "round " << round;
    StreamSender stream{sender, listening, static_cast<std::uint32_t>(100 + round)};
    for (std::uint64_t seq = 0; seq < 5; ++seq) {
      ASSERT_EQ(stream.send(seq % 2 == 0 ? SendMode::Buffered : SendMode::CopySpan, 200), NetioStatus::OK);
    }
    ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) {
      return s.stream_progress(static_cast<std::uint32_t>(100 + round)) >= 5;
    })) << "round "
        << round;
    sender.backend().close_send_endpoint(listening);
  }
  ASSERT_TRUE(sender.wait_closed(listening, rounds));
  EXPECT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.closed.size() >= rounds; }));
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  EXPECT_EQ(sender.recorder().inspect([&](const RecorderState& s) { return s.established_count(listening); }), rounds);
}

// Calls made on the loop thread (inside a loop callback) never see their callbacks run inside
// them; calls from other threads see them on the loop thread only. Every recorder checks the
// thread of every callback; here every kind of callback is provoked from both places.
TEST_P(Lifecycle, CallbacksRunOnTheLoopThreadOnlyAndNeverInsideTheCall) {
  Node& receiver = make_node();
  Node& sender = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(4096));
  AlignedMemory& region = make_region(64 * 4096);
  const ConnectionParameters params = send_params(4096, 4, &region);

  sender.loop_thread().run_on_loop([&] {
    const CallScope scope{sender.recorder()};
    sender.open_send(listening, params);
  });
  ASSERT_TRUE(sender.wait_established(listening));
  StreamSender stream{sender, listening, 4, region.span(), 4096};
  std::size_t sent_on_loop = 0;
  const auto deadline = deadline_from_now();
  while (sent_on_loop < 40 && std::chrono::steady_clock::now() < deadline) {
    // Each batch runs on the loop thread; a completion reported from inside a send call would
    // run nested in this task and be flagged by the recorder.
    sender.loop_thread().run_on_loop([&] {
      const CallScope scope{sender.recorder()};
      while (sent_on_loop < 40) {
        const SendMode mode = all_send_modes[sent_on_loop % all_send_modes.size()];
        if (stream.try_send(mode, 1000) != NetioStatus::OK) {
          return;
        }
        ++sent_on_loop;
      }
    });
    sender.recorder().wait_for_progress(std::chrono::milliseconds{5});
  }
  ASSERT_EQ(sent_on_loop, 40U);
  // And from this (non-loop) thread.
  for (std::size_t i = 0; i < 20; ++i) {
    ASSERT_EQ(stream.send(all_send_modes[i % all_send_modes.size()], 500), NetioStatus::OK);
  }
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(4) >= 60; }));
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); }));
  sender.loop_thread().run_on_loop([&] {
    const CallScope scope{sender.recorder()};
    sender.backend().close_send_endpoint(listening);
  });
  ASSERT_TRUE(sender.wait_closed(listening));

  const BoundPortWithoutListener nobody{test_environment().address};
  const EndPointAddress refused{test_environment().address, nobody.port()};
  sender.loop_thread().run_on_loop([&] {
    const CallScope scope{sender.recorder()};
    sender.open_send(refused, ConnectionParameters{});
  });
  ASSERT_TRUE(sender.wait_refused(refused));

  // Established, a completion per keyed send, closed, refused.
  EXPECT_GE(sender.recorder().inspect([](const RecorderState& s) { return s.callbacks; }), stream.keyed_sends() + 3);
  EXPECT_EQ(sender.recorder().violation_count(), 0U) << sender.recorder().violations_text();
  EXPECT_EQ(receiver.recorder().violation_count(), 0U) << receiver.recorder().violations_text();
}

// ThreadSafetyModel::UNSAFE: every call made on the loop thread (the model's normal use) works:
// set-up, sends in every mode, close.
TEST_P(Lifecycle, UnsafeModeFromTheLoopThread) {
  const std::size_t messages = count(2000, 50);
  constexpr std::size_t max_payload = 2048;
  Node& receiver = make_node({.thread_safety = ThreadSafetyModel::UNSAFE});
  Node& sender = make_node({.thread_safety = ThreadSafetyModel::UNSAFE});
  const EndPointAddress listening = receiver.listen(receive_params(max_payload));
  AlignedMemory& region = make_region(64 * max_payload);
  ASSERT_TRUE(sender.connect(listening, send_params(max_payload, 8, &region)));
  StreamSender stream{sender, listening, 6, region.span(), max_payload};
  NetioStatus failure = NetioStatus::OK;
  const auto deadline = deadline_from_now();
  while (stream.sent() < messages && failure == NetioStatus::OK && std::chrono::steady_clock::now() < deadline) {
    sender.call([&] {
      while (stream.sent() < messages) {
        const SendMode mode = all_send_modes[stream.sent() % all_send_modes.size()];
        const NetioStatus status = stream.try_send(mode, (stream.sent() * 17U) % max_payload);
        if (status == NetioStatus::NO_RESOURCES) {
          return;
        }
        if (status != NetioStatus::OK) {
          failure = status;
          return;
        }
      }
    });
    sender.recorder().wait_for_progress(std::chrono::milliseconds{2});
  }
  ASSERT_EQ(failure, NetioStatus::OK);
  ASSERT_EQ(stream.sent(), messages);
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(6) >= messages; }))
      << receiver.recorder().data_errors_text();
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); }));
  const auto problems = sender.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
  sender.call([&] { sender.backend().close_send_endpoint(listening); });
  EXPECT_TRUE(sender.wait_closed(listening));
  EXPECT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return !s.closed.empty(); }));
}

// IPv6 literals and host names work where the test runs on loopback.
TEST_P(Lifecycle, Ipv6LiteralAndHostName) {
  if (!test_environment().loopback) {
    GTEST_SKIP() << "the test address " << test_environment().address << " is not loopback";
  }
  const int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 any6{};
  any6.sin6_family = AF_INET6;
  any6.sin6_addr = in6addr_loopback;
  const bool have_ipv6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&any6), sizeof any6) == 0;
  if (probe >= 0) {
    ::close(probe);
  }
  Node& receiver = make_node();
  Node& sender = make_node();
  std::vector<EndPointAddress> listeners;
  listeners.push_back(receiver.backend().open_listen_endpoint(EndPointAddress{"localhost", 0}, receive_params(512)));
  if (have_ipv6) {
    listeners.push_back(receiver.backend().open_listen_endpoint(EndPointAddress{"::1", 0}, receive_params(512)));
    EXPECT_EQ(listeners.back().address(), "::1");
  }
  std::uint32_t stream_id = 60;
  for (const auto& listening : listeners) {
    ASSERT_NE(listening.port(), 0) << listening;
    const EndPointAddress target{listening.address(), listening.port()};
    ASSERT_TRUE(sender.connect(target, ConnectionParameters{})) << target;
    StreamSender stream{sender, target, ++stream_id};
    for (std::uint64_t seq = 0; seq < 10; ++seq) {
      ASSERT_EQ(stream.send(SendMode::CopySpan, 300), NetioStatus::OK);
    }
    EXPECT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(stream_id) >= 10; }))
        << target;
  }
  if (!have_ipv6) {
    GTEST_SKIP() << "::1 is not configured here; only the host name was tested";
  }
}

} // namespace

NETIO3_INSTANTIATE_CONFORMANCE(Lifecycle);

} // namespace netio3::conformance
