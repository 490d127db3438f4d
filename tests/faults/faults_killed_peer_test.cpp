// Killed peers: a sender or a receiver process is killed with SIGKILL mid-stream, cycle after
// cycle (100 by default, alternating; NETIO3_KILL_CYCLES to change). The survivor is this test
// process: every cycle it must report the close, hand back every zero-copy key exactly once
// (survivor = sender), keep its other connections (one steady stream each way through all
// cycles) flowing, deliver nothing corrupted, and leak nothing: its open file descriptors return
// to the figure of the first cycles (and under the address sanitizer, memory is checked at exit).

#include <gtest/gtest.h>

#include <csignal>
#include <sys/wait.h>

#include "FaultTestSupport.hpp"
#include "TrafficReceiver.hpp"
#include "TrafficSender.hpp"

namespace netio3::faults {
namespace {

using namespace std::chrono_literals;

constexpr auto peer_timeout = 10s;
/// Generous bound for anything that should happen "at once": only guards against hangs.
constexpr auto patience = 30s;
/// Cycles before the file-descriptor baseline is taken (lazy initialisations settle).
constexpr std::uint64_t warmup_cycles = 3;

class KilledPeers : public testing::TestWithParam<BackendCase> {
protected:
  void SetUp() override { NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(GetParam()); }
  [[nodiscard]] static std::uint64_t cycles() { return env_u64("NETIO3_KILL_CYCLES", 100); }
};

/// Kills `child` with SIGKILL and reaps it; a failure if it does not die.
void kill_now(ChildProcess& child) {
  child.send_signal(SIGKILL);
  const auto status = child.wait_exit(Clock::now() + patience);
  ASSERT_TRUE(status) << "the peer did not die\n" << child.diagnostics();
  ASSERT_TRUE(WIFSIGNALED(*status) && WTERMSIG(*status) == SIGKILL)
      << "the peer ended before it was killed (" << ChildProcess::describe_status(*status) << ")\n"
      << child.diagnostics();
}

TEST_P(KilledPeers, SurvivorKeepsServingThroughKilledSendersAndReceivers) {
  // This process survives on both sides: a listener that killed senders stream into, and a sender
  // (one backend) that streams to receivers that get killed. Each side also has a steady
  // connection that lives through every cycle. Even cycles kill a sender, odd cycles a receiver.
  ReceiverOptions receiver_options;
  receiver_options.type = GetParam().type;
  receiver_options.provider = GetParam().provider;
  receiver_options.max_message = (256U << 10U) + 64U;
  receiver_options.peer_timeout = peer_timeout;
  TrafficReceiver receiver(receiver_options);
  const auto listen_port = std::to_string(receiver.address().port());
  const auto sender_process = [&](std::uint16_t stream, const std::vector<std::string>& extra) {
    return peer_command(
        concat(concat({"send", "--connect", "127.0.0.1", "--port", listen_port, "--connections", "1", "--messages", "0",
                       "--stream-base", std::to_string(stream), "--timeout-s", "600"},
                      GetParam().peer_args()),
               extra));
  };
  const auto receiver_process = [&](const std::vector<std::string>& extra) {
    return peer_command(concat(concat({"recv", "--listen", "127.0.0.1", "--max-message",
                                       std::to_string((256U << 10U) + 64U), "--timeout-s", "600"},
                                      GetParam().peer_args()),
                               extra));
  };

  SenderOptions sender_options;
  sender_options.type = GetParam().type;
  sender_options.provider = GetParam().provider;
  sender_options.peer_timeout = peer_timeout;
  sender_options.max_unsent_bytes = 2U << 20U;
  TrafficSender sender(sender_options);
  sender.start();

  // The steady connections: paced, small messages, every send mode.
  ChildProcess steady_sender(sender_process(1, {"--rate", "2000", "--max-size", "1024"}));
  ChildProcess steady_receiver(receiver_process({"--expect-finished", "1"}));
  const auto steady_ready = steady_receiver.wait_for_line("READY", Clock::now() + patience);
  ASSERT_TRUE(steady_ready) << steady_receiver.diagnostics();
  StreamProfile steady;
  steady.max_size = 1024;
  steady.rate = 2000;
  sender.add_stream(
      2, EndPointAddress("127.0.0.1", static_cast<std::uint16_t>(field_u64(parse_fields(*steady_ready), "port"))), 0,
      steady);
  ASSERT_TRUE(wait_until([&] { return receiver.stream(1).received > 0; }, patience)) << steady_sender.diagnostics();
  ASSERT_TRUE(wait_until([&] { return sender.stats(2).completed > 0; }, patience)) << sender.first_error();

  // Victims of the sender side: zero-copy only, large messages, and more region than the kernel's
  // socket buffers (several MiB) plus max_unsent_bytes take, so that the backend's queue fills
  // (NO_RESOURCES) with keys in flight before the slots run out.
  StreamProfile victim_profile;
  victim_profile.modes = mode_bit(SendMode::zerocopy) | mode_bit(SendMode::zerocopy_iov);
  victim_profile.min_size = 64U << 10U;
  victim_profile.max_size = 256U << 10U;
  victim_profile.zerocopy_bytes = 32U << 20U;

  std::size_t fd_baseline = 0;
  std::uint64_t pending_total = 0;
  std::uint64_t senders_killed = 0;
  std::uint64_t receivers_killed = 0;
  for (std::uint64_t cycle = 0; cycle < cycles() && !HasFailure(); ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    const auto steady_in = receiver.stream(1).received;
    const auto steady_out = sender.stats(2).completed;

    if (cycle % 2 == 0) {
      // A sender process streams into our listener and is killed mid-stream.
      const auto stream = static_cast<std::uint16_t>(100 + cycle);
      ChildProcess victim(sender_process(stream, {"--max-size", "65536"}));
      ASSERT_TRUE(wait_until([&] { return receiver.stream(stream).received >= 20; }, patience))
          << "the victim's messages did not arrive\n"
          << victim.diagnostics();
      ASSERT_NO_FATAL_FAILURE(kill_now(victim));
      ASSERT_TRUE(wait_until([&] { return receiver.stream_connection_closed(stream); }, peer_timeout + 10s))
          << "the listener did not report the killed sender's connection closed";
      const auto figures = receiver.snapshot();
      ASSERT_EQ(figures.totals.errors(), 0U)
          << "what arrived is not an intact in-order prefix: " << figures.first_error;
      ASSERT_EQ(figures.protocol_errors, 0U);
      ASSERT_EQ(figures.open_connections, 1U) << "only the steady connection should be open";
      ++senders_killed;
    } else {
      // Our sender streams to a receiver process that stops reading and is killed once our queue
      // is full (keys in flight).
      const auto stream = static_cast<std::uint16_t>(1000 + cycle);
      ChildProcess victim(receiver_process({"--stall-after", "10"}));
      const auto victim_ready = victim.wait_for_line("READY", Clock::now() + patience);
      ASSERT_TRUE(victim_ready) << victim.diagnostics();
      const auto victim_port = static_cast<std::uint16_t>(field_u64(parse_fields(*victim_ready), "port"));
      sender.add_stream(stream, EndPointAddress("127.0.0.1", victim_port), 0, victim_profile);
      ASSERT_TRUE(victim.wait_for_line("STALLED", Clock::now() + patience)) << victim.diagnostics();
      const auto refusals_then = sender.stats(stream).no_resources;
      ASSERT_TRUE(wait_until(
          [&] {
            const auto stats = sender.stats(stream);
            return stats.no_resources > refusals_then && stats.outstanding > 0;
          },
          patience))
          << "the sender never ran out of room towards the stalled receiver";
      ASSERT_NO_FATAL_FAILURE(kill_now(victim));
      ASSERT_TRUE(wait_until([&] { return sender.stats(stream).audited; }, peer_timeout + 10s))
          << "the sender did not report the killed receiver's connection closed";
      // Every key exactly once. Whether the keys in flight at the kill come back completed or
      // pending depends on how much the kernel's socket buffers still took before the kill, so
      // "some came back pending" is checked over all cycles below.
      const auto stats = sender.stats(stream);
      EXPECT_TRUE(stats.closed);
      EXPECT_EQ(stats.unreported_zero_copy, 0U) << sender.first_error();
      EXPECT_EQ(stats.key_errors, 0U) << sender.first_error();
      EXPECT_EQ(stats.completed + stats.pending_returned, stats.keyed_sent);
      pending_total += stats.pending_returned;
      ++receivers_killed;
    }

    ASSERT_TRUE(wait_until([&] { return receiver.stream(1).received > steady_in; }, patience))
        << "the steady connection into the listener stopped flowing";
    ASSERT_TRUE(wait_until([&] { return sender.stats(2).completed > steady_out; }, patience))
        << "the steady connection of the sender stopped flowing";
    ASSERT_FALSE(sender.stats(2).closed) << "the sender's steady connection was closed";
    if (cycle + 1 == warmup_cycles) {
      fd_baseline = open_fd_count();
    }
  }
  if (fd_baseline != 0) {
    EXPECT_TRUE(wait_until([&] { return open_fd_count() <= fd_baseline; }, 10s))
        << "file descriptors leaked: " << fd_baseline << " after " << warmup_cycles << " cycles, " << open_fd_count()
        << " after " << cycles();
  }
  if (!HasFailure() && receivers_killed > 0) {
    EXPECT_GT(pending_total, 0U) << "in " << receivers_killed
                                 << " kills with sends stuck behind a stalled receiver, no key ever came back "
                                    "with on_connection_closed_cb";
  }

  // Both steady streams end cleanly: everything arrived intact and in order.
  sender.finish_stream(2);
  const auto received = result_of(steady_receiver, Clock::now() + patience);
  // The last message can arrive before the sender has counted it: wait for the count.
  EXPECT_TRUE(wait_until([&] { return sender.stats(2).done_sending; }, patience));
  const auto steady_stats = sender.stats(2);
  EXPECT_EQ(field_u64(received, "messages"), steady_stats.sent);
  EXPECT_EQ(field_u64(received, "lost", 1), 0U) << steady_receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "duplicated", 1), 0U);
  EXPECT_EQ(field_u64(received, "corrupted", 1), 0U);
  EXPECT_EQ(field_u64(received, "streams_finished"), 1U);
  EXPECT_EQ(sender.totals().errors(), 0U) << sender.first_error();
  const auto figures = receiver.snapshot();
  EXPECT_EQ(figures.totals.errors(), 0U) << figures.first_error;
  EXPECT_EQ(figures.closed_with_data, senders_killed);

  report(GetParam().name + " senders killed", std::to_string(senders_killed));
  report(GetParam().name + " receivers killed", std::to_string(receivers_killed));
  report(GetParam().name + " pending keys returned", std::to_string(pending_total));
  report(GetParam().name + " messages verified by the listener", std::to_string(figures.totals.messages));
  report(GetParam().name + " steady messages sent", std::to_string(steady_stats.sent));
  report(GetParam().name + " open fds baseline/end",
         std::to_string(fd_baseline) + "/" + std::to_string(open_fd_count()));
}

INSTANTIATE_TEST_SUITE_P(Backends, KilledPeers, testing::ValuesIn(backend_cases()), backend_case_name);

} // namespace
} // namespace netio3::faults
