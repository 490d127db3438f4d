// Soak: many connections between two processes on loopback, mixed message sizes and every send
// mode, for a duration; every message checked for order, exactly-once and integrity, every key
// for exactly-once completion; memory after warm-up compared with memory at the end.
//
// CI runs a few seconds per backend and thread model. The long version:
//   NETIO3_SOAK_SECONDS=600 NETIO3_SOAK_CONNECTIONS=32 NETIO3_FAULTS_VERBOSE=1
//   build/release/tests/faults/faults_soak_test
// (see docs/reliability.md).

#include <gtest/gtest.h>

#include "FaultTestSupport.hpp"

namespace netio3::faults {
namespace {

struct SoakCase {
  BackendCase backend;
  std::string thread_safety; ///< "safe" or "unsafe" (peer --thread-safety)
};

/// gtest prints parameters with this (instead of their bytes).
void PrintTo(const SoakCase& soak_case, std::ostream* out) {
  *out << soak_case.backend.name << '/' << soak_case.thread_safety;
}

class Soak : public testing::TestWithParam<SoakCase> {};

TEST_P(Soak, MixedTrafficArrivesIntactAndMemoryStaysFlat) {
  const auto& param = GetParam();
  NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(param.backend);
  const std::uint64_t seconds = env_u64("NETIO3_SOAK_SECONDS", 6);
  // Memory is compared between this point and the end of sending: buffers are touched for the
  // first time during the first seconds (libfabric's receive buffers take about 3 s here).
  const std::string warmup = std::to_string(std::min<std::uint64_t>(seconds / 2, 60));
  const std::uint64_t connections = env_u64("NETIO3_SOAK_CONNECTIONS", 16);
  const auto overall = std::chrono::seconds{seconds + 120};

  ChildProcess receiver(peer_command(
      concat({"recv", "--listen", "127.0.0.1", "--expect-finished", std::to_string(connections), "--max-message",
              std::to_string((1U << 20U) + 64U), "--timeout-s", std::to_string(overall.count()), "--thread-safety",
              param.thread_safety, "--warmup-s", warmup},
             param.backend.peer_args())));
  const auto ready = receiver.wait_for_line("READY", Clock::now() + std::chrono::seconds{30});
  ASSERT_TRUE(ready) << receiver.diagnostics();
  const auto port = parse_fields(*ready).at("port");

  // A small bound on unsent bytes: the TCP backend's per-connection queues grow by doubling up to
  // it, and that bounded growth is to be over by the warm-up figure.
  const std::vector<std::string> send_args{"send",
                                           "--connect",
                                           "127.0.0.1",
                                           "--port",
                                           port,
                                           "--connections",
                                           std::to_string(connections),
                                           "--duration-s",
                                           std::to_string(seconds),
                                           "--modes",
                                           "all",
                                           "--min-size",
                                           "0",
                                           "--max-size",
                                           "65536",
                                           "--max-unsent-bytes",
                                           std::to_string(1U << 20U),
                                           "--thread-safety",
                                           param.thread_safety,
                                           "--timeout-s",
                                           std::to_string(overall.count()),
                                           "--warmup-s",
                                           warmup};
  ChildProcess sender(peer_command(concat(send_args, param.backend.peer_args())));

  const auto deadline = Clock::now() + overall;
  const auto sent = result_of(sender, deadline);
  const auto received = result_of(receiver, deadline);
  const auto sender_status = sender.wait_exit(deadline);
  const auto receiver_status = receiver.wait_exit(deadline);
  ASSERT_TRUE(sender_status && ChildProcess::exited_cleanly(*sender_status)) << sender.diagnostics();
  ASSERT_TRUE(receiver_status && ChildProcess::exited_cleanly(*receiver_status)) << receiver.diagnostics();
  ASSERT_FALSE(sent.empty());
  ASSERT_FALSE(received.empty());

  // Every message accepted by the sender arrived once, in order, intact; every stream finished.
  EXPECT_EQ(field_u64(received, "messages"), field_u64(sent, "sent")) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "in_order"), field_u64(sent, "sent"));
  EXPECT_EQ(field_u64(received, "lost", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "duplicated", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "corrupted", 1), 0U) << receiver.diagnostics();
  EXPECT_EQ(field_u64(received, "after_last", 1), 0U);
  EXPECT_EQ(field_u64(received, "protocol_errors", 1), 0U);
  EXPECT_EQ(field_u64(received, "streams_finished"), connections);
  // Every key came back exactly once: completed, or (for sends whose completion had not come when
  // the receiver hung up after the last message) returned by the closed callback.
  EXPECT_EQ(field_u64(sent, "key_errors", 1), 0U) << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "unexpected_status", 1), 0U) << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "unreported_zero_copy", 1), 0U) << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "completed") + field_u64(sent, "pending_returned") + field_u64(sent, "dropped_copy_keys"),
            field_u64(sent, "keyed_sent"))
      << sender.diagnostics();
  EXPECT_EQ(field_u64(sent, "established"), connections);
  EXPECT_GT(field_u64(sent, "sent"), connections * 100U) << "the soak sent almost nothing";

  // Memory is flat after warm-up: what grows between the middle of the run and its end is noise,
  // not a leak per message. The address sanitizer's allocator bookkeeping (quarantine) adds its
  // own growth; under the thread sanitizer resident memory is no leak signal (its shadow memory
  // grows with every page first touched), so there the figures are only reported.
  const std::uint64_t slack_kib = built_with_sanitizer() ? 64U * 1024U : 8U * 1024U;
  for (const auto* figures : {&sent, &received}) {
    const auto warm = field_u64(*figures, "rss_warm_kib");
    const auto end = field_u64(*figures, "rss_end_kib");
    EXPECT_GT(warm, 0U) << "no warm-up figure: the run was too short";
    if (!built_with_thread_sanitizer()) {
      EXPECT_LE(end, warm + slack_kib) << figures->at("role") << ": resident memory grew from " << warm
                                       << " KiB after warm-up to " << end << " KiB at the end";
    }
  }

  const std::string label = param.backend.name + "/" + param.thread_safety;
  report(label + " messages", std::to_string(field_u64(received, "messages")));
  report(label + " bytes", std::to_string(field_u64(received, "bytes")));
  report(label + " seconds", sent.count("seconds") != 0 ? sent.at("seconds") : "?");
  report(label + " no_resources", std::to_string(field_u64(sent, "no_resources")));
  report(label + " sender rss warm/end KiB",
         std::to_string(field_u64(sent, "rss_warm_kib")) + "/" + std::to_string(field_u64(sent, "rss_end_kib")));
  report(label + " receiver rss warm/end KiB", std::to_string(field_u64(received, "rss_warm_kib")) + "/" +
                                                   std::to_string(field_u64(received, "rss_end_kib")));
}

std::vector<SoakCase> soak_cases() {
  std::vector<SoakCase> cases;
  for (const auto& backend : backend_cases()) {
    cases.push_back({backend, "safe"});
    cases.push_back({backend, "unsafe"});
  }
  return cases;
}

std::string soak_case_name(const testing::TestParamInfo<SoakCase>& case_info) {
  return case_info.param.backend.name + "_" + case_info.param.thread_safety;
}

INSTANTIATE_TEST_SUITE_P(Backends, Soak, testing::ValuesIn(soak_cases()), soak_case_name);

} // namespace
} // namespace netio3::faults
