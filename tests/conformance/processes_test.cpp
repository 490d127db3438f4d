// Conformance across processes: the two sides in separate processes (the peer program), and a peer
// killed with SIGKILL mid-stream.

#include <atomic>
#include <csignal>
#include <sys/wait.h>
#include <thread>

#include "conformance/ConformanceFixture.hpp"
#include "conformance/PeerProcess.hpp"

#ifndef NETIO3_CONFORMANCE_PEER
#error "NETIO3_CONFORMANCE_PEER (path of the peer program) must be defined by the build"
#endif

namespace netio3::conformance {
namespace {

class Processes : public ConformanceTest {
protected:
  /// Starts the peer program for the backend under test with `arguments`.
  std::unique_ptr<PeerProcess> start_peer(std::vector<std::string> arguments) {
    arguments.insert(arguments.end(), {"--backend", under_test().name, "--address", test_environment().address});
    return std::make_unique<PeerProcess>(NETIO3_CONFORMANCE_PEER, arguments);
  }

  /// The port printed by a receiving peer ("READY <port>"), or 0.
  static std::uint16_t ready_port(PeerProcess& peer) {
    const auto line = peer.wait_for_line("READY ", deadline_from_now());
    return line ? static_cast<std::uint16_t>(std::stoul(line->substr(6))) : 0;
  }

  /// Waits for the peer to exit; a failure names how it ended and what it printed.
  static void expect_clean_exit(PeerProcess& peer) {
    const auto status = peer.wait_exit(deadline_from_now());
    ASSERT_TRUE(status.has_value()) << "the peer did not exit; its output:\n" << peer.transcript();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
        << "the peer " << PeerProcess::describe_status(*status) << "; its output:\n"
        << peer.transcript();
  }
};

// This process sends in every mode; the peer process receives and checks every byte and the order.
TEST_P(Processes, PeerProcessReceivesEveryMode) {
  const std::uint64_t messages = count(4000, 100);
  constexpr std::size_t max_payload = 16U << 10U;
  auto peer = start_peer({"--role", "recv", "--count", std::to_string(messages), "--stream", "31", "--max-payload",
                          std::to_string(max_payload)});
  const std::uint16_t port = ready_port(*peer);
  ASSERT_NE(port, 0) << "the peer did not report its port; its output:\n" << peer->transcript();
  const EndPointAddress destination{test_environment().address, port};

  Node& sender = make_node();
  AlignedMemory& region = make_region(64 * max_payload);
  ASSERT_TRUE(sender.connect(destination, send_params(max_payload, 8, &region)));
  StreamSender stream{sender, destination, 31, region.span(), max_payload};
  for (std::uint64_t seq = 0; seq < messages; ++seq) {
    const SendMode mode = all_send_modes[seq % all_send_modes.size()];
    ASSERT_EQ(stream.send(mode, (seq * 7919U) % (max_payload + 1)), NetioStatus::OK) << "message " << seq;
  }
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) { return keys_reported(s) >= stream.keyed_sends(); }));
  const auto problems = sender.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), false); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
  sender.backend().close_send_endpoint(destination);
  ASSERT_TRUE(sender.wait_closed(destination));

  const auto done = peer->wait_for_line("DONE ", deadline_from_now());
  ASSERT_TRUE(done.has_value()) << "the peer did not finish; its output:\n" << peer->transcript();
  EXPECT_EQ(*done, "DONE " + std::to_string(messages) + " 0");
  expect_clean_exit(*peer);
}

// The peer process sends in every mode; this process receives and checks.
TEST_P(Processes, PeerProcessSendsEveryMode) {
  const std::uint64_t messages = count(4000, 100);
  constexpr std::size_t max_payload = 16U << 10U;
  Node& receiver = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(max_payload));
  auto peer = start_peer({"--role", "send", "--port", std::to_string(listening.port()), "--count",
                          std::to_string(messages), "--stream", "32", "--max-payload", std::to_string(max_payload)});
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(32) >= messages; }))
      << "received " << receiver.recorder().inspect([](const RecorderState& s) { return s.stream_progress(32); })
      << " of " << messages << " in order; data errors:\n"
      << receiver.recorder().data_errors_text() << "peer output:\n"
      << peer->transcript();
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << receiver.recorder().data_errors_text();
  ASSERT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return !s.closed.empty(); }))
      << "the peer's close was not reported";
  const auto done = peer->wait_for_line("DONE ", deadline_from_now());
  ASSERT_TRUE(done.has_value()) << "the peer did not finish; its output:\n" << peer->transcript();
  EXPECT_EQ(*done, "DONE " + std::to_string(messages));
  expect_clean_exit(*peer);
  EXPECT_EQ(receiver.recorder().inspect([](const RecorderState& s) { return s.messages; }), messages);
}

// The receiving peer is killed with SIGKILL while this process streams zero-copy and copying sends
// to it: the close is reported, and every zero-copy key is either completed or returned, once.
TEST_P(Processes, KilledReceiverIsReportedAndPendingKeysReturned) {
  constexpr std::size_t max_payload = 32U << 10U;
  const std::uint64_t report_after = count(500, 20);
  auto peer = start_peer({"--role", "recv", "--count", "0", "--stream", "33", "--max-payload",
                          std::to_string(max_payload), "--report-after", std::to_string(report_after)});
  const std::uint16_t port = ready_port(*peer);
  ASSERT_NE(port, 0) << "the peer did not report its port; its output:\n" << peer->transcript();
  const EndPointAddress destination{test_environment().address, port};

  Node& sender = make_node();
  AlignedMemory& region = make_region(128 * max_payload);
  ASSERT_TRUE(sender.connect(destination, send_params(max_payload, 0, &region)));
  StreamSender stream{sender, destination, 33, region.span(), max_payload};
  std::atomic<bool> stop{false};
  std::string sender_outcome;
  std::thread streaming{[&] {
    try {
      while (!stop.load()) {
        const SendMode mode = all_send_modes[stream.sent() % 4]; // the copying and zero-copy modes
        const NetioStatus status = stream.try_send(mode, (stream.sent() * 4099U) % (max_payload + 1));
        if (status == NetioStatus::NO_RESOURCES) {
          sender.recorder().wait_for_progress(std::chrono::milliseconds{5});
        } else if (status != NetioStatus::OK) {
          sender_outcome = "send returned " + std::string{to_string(status)};
          return;
        }
      }
      sender_outcome = "stopped";
    } catch (const UnknownSendEndpoint&) {
      sender_outcome = "endpoint gone"; // the close was delivered: the endpoint no longer exists
    } catch (const std::exception& error) {
      sender_outcome = std::string{"unexpected exception: "} + error.what();
    }
  }};
  const auto received = peer->wait_for_line("RECEIVED ", deadline_from_now());
  if (received) {
    peer->send_signal(SIGKILL);
  }
  const auto status = peer->wait_exit(deadline_from_now());
  const bool closed = received && sender.wait_closed(destination);
  stop.store(true);
  streaming.join();
  ASSERT_TRUE(received.has_value()) << "the peer never reported progress; its output:\n" << peer->transcript();
  ASSERT_TRUE(status.has_value() && WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
      << "the peer was not killed as planned; its output:\n"
      << peer->transcript();
  ASSERT_TRUE(closed) << "the killed peer's connection was not reported closed (sender: " << sender_outcome << ")";
  EXPECT_NE(sender_outcome, "") << "the streaming thread did not end";
  EXPECT_EQ(sender_outcome.find("unexpected"), std::string::npos) << sender_outcome;
  // Keys of sends accepted up to the close: each completed or returned once (copies may be dropped).
  ASSERT_TRUE(sender.recorder().wait([&](const RecorderState& s) {
    return s.keys_done(stream.zero_copy_keys()) == stream.zero_copy_keys().size();
  })) << "zero-copy keys neither completed nor returned after the close";
  const auto problems = sender.recorder().inspect(
      [&](const RecorderState& s) { return key_problems(s, stream.zero_copy_keys(), stream.copy_keys(), true); });
  EXPECT_TRUE(problems.empty()) << join_lines(problems);
}

// The sending peer is killed with SIGKILL mid-stream: this process reports the close, received an
// intact in-order prefix, and its listener keeps serving new connections.
TEST_P(Processes, KilledSenderIsReportedAndTheListenerCarriesOn) {
  constexpr std::size_t max_payload = 16U << 10U;
  const std::uint64_t report_after = count(500, 20);
  Node& receiver = make_node();
  const EndPointAddress listening = receiver.listen(receive_params(max_payload));
  auto peer = start_peer({"--role", "send", "--port", std::to_string(listening.port()), "--count", "0", "--stream",
                          "34", "--max-payload", std::to_string(max_payload)});
  ASSERT_TRUE(receiver.recorder().wait([&](const RecorderState& s) { return s.stream_progress(34) >= report_after; }))
      << "the peer's messages did not arrive; data errors:\n"
      << receiver.recorder().data_errors_text() << "peer output:\n"
      << peer->transcript();
  peer->send_signal(SIGKILL);
  const auto status = peer->wait_exit(deadline_from_now());
  ASSERT_TRUE(status.has_value() && WIFSIGNALED(*status)) << peer->transcript();
  const EndPointAddress remote =
      receiver.recorder().inspect([](const RecorderState& s) { return s.established.at(0); });
  ASSERT_TRUE(receiver.wait_closed(remote))
      << "the killed sender's connection " << remote << " was not reported closed";
  EXPECT_EQ(receiver.recorder().data_error_count(), 0U) << "the received prefix must be intact and in order:\n"
                                                        << receiver.recorder().data_errors_text();

  Node& sender = make_node();
  ASSERT_TRUE(sender.connect(listening, ConnectionParameters{})) << "the listener stopped accepting";
  StreamSender stream{sender, listening, 35};
  for (std::uint64_t seq = 0; seq < 20; ++seq) {
    ASSERT_EQ(stream.send(SendMode::CopySpan, 500), NetioStatus::OK);
  }
  EXPECT_TRUE(receiver.recorder().wait([](const RecorderState& s) { return s.stream_progress(35) >= 20; }));
}

} // namespace

NETIO3_INSTANTIATE_CONFORMANCE(Processes);

} // namespace netio3::conformance
