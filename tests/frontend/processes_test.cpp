// Publishers and subscribers in other processes, killed with SIGKILL mid-stream, and a link cut
// between two network namespaces. The survivor must notice, tell its user, and carry on.

#include <algorithm>
#include <csignal>
#include <sys/wait.h>

#include "ChildProcess.hpp"
#include "Netns.hpp"
#include "frontend/FrontendFixture.hpp"

#ifndef NETIO3_FRONTEND_PEER
#error "NETIO3_FRONTEND_PEER must name the frontend_peer program"
#endif

namespace netio3::frontend_test {
namespace {

using faults::ChildProcess;
using faults::Clock;
using faults::parse_fields;

/// "--backend NAME [--provider P]" for the peer.
std::vector<std::string> backend_args(const BackendUnderTest& backend) {
  std::vector<std::string> args{"--backend", backend.type == NetworkType::ASYNCMSG ? "asyncmsg" : "libfabric"};
  if (!backend.provider.empty()) {
    args.insert(args.end(), {"--provider", backend.provider});
  }
  return args;
}

std::vector<std::string> peer(std::vector<std::string> args, const BackendUnderTest& backend) {
  args.insert(args.begin(), NETIO3_FRONTEND_PEER);
  const std::vector<std::string> more = backend_args(backend);
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

/// The value of `key` in the next line of `child` that starts with `word`; fails the test if none.
std::optional<std::uint64_t> wait_field(ChildProcess& child, const std::string& word, const std::string& key) {
  const auto line = child.wait_for_line(word, conformance::deadline_from_now());
  if (!line) {
    ADD_FAILURE() << "no " << word << " line from the peer\n" << child.diagnostics();
    return std::nullopt;
  }
  return faults::field_u64(parse_fields(*line), key);
}

/// Reads lines of `child` until one starting with `word` has `key` > `above`; its value, or nothing
/// (with a failure) at EOF or the deadline.
std::optional<std::uint64_t> wait_field_above(ChildProcess& child, const std::string& word, const std::string& key,
                                              std::uint64_t above) {
  const auto deadline = conformance::deadline_from_now();
  while (const auto line = child.wait_for_line(word, deadline)) {
    const std::uint64_t value = faults::field_u64(parse_fields(*line), key);
    if (value > above) {
      return value;
    }
  }
  ADD_FAILURE() << "no " << word << " line with " << key << " > " << above << " from the peer\n" << child.diagnostics();
  return std::nullopt;
}

void kill_now(ChildProcess& child) {
  child.send_signal(SIGKILL);
  const auto status = child.wait_exit(conformance::deadline_from_now());
  ASSERT_TRUE(status && WIFSIGNALED(*status)) << "the peer did not die of SIGKILL\n" << child.diagnostics();
}

class Processes : public FrontendTest {};

TEST_P(Processes, AKilledSubscriberProcessIsDroppedAndPublishingGoesOn) {
  NetioPublisher publisher{publisher_config(SendMethod::BUFFERED), make_loop().loop(), any_port()};
  ChildProcess subscriber_process{peer({"subscribe", "--publisher", conformance::test_environment().address, "--port",
                                        std::to_string(publisher.address().port()), "--local-ip",
                                        conformance::test_environment().address, "--tags", "4"},
                                       under_test())};
  ASSERT_EQ(wait_field(subscriber_process, "SUBSCRIBED", "n"), 4U);
  // One subscriber here too, for tags 0..3: it must get everything, before and after the kill.
  LoopThread& sub_loop = make_loop();
  Collector collector{sub_loop.thread_id()};
  NetioSubscriber subscriber{subscriber_config(collector), sub_loop.loop(), conformance::test_environment().address};
  for (std::uint64_t tag = 0; tag < 4; ++tag) {
    ASSERT_EQ(subscriber.subscribe(tag, publisher.address(), {}), NetioStatus::OK);
  }
  ASSERT_TRUE(collector.wait([](Collector& c) { return c.subscribed_count_unlocked() == 4; }));
  ASSERT_EQ(publisher.subscriber_count(), 2U);
  std::uint64_t published = 0;
  for (std::uint64_t tag = 0; tag < 4; ++tag) {
    ASSERT_EQ(publish_sequence(publisher, tag, 0, 500, 100, published), NetioPublisherStatus::OK);
  }
  publisher.flush();
  ASSERT_TRUE(collector.wait([](Collector& c) { return c.total_unlocked() == 2000; }));
  ASSERT_TRUE(wait_field_above(subscriber_process, "RECEIVED", "total", 0));
  kill_now(subscriber_process);
  ASSERT_TRUE(eventually([&] { return publisher.subscriber_count() == 1; }))
      << "the killed subscriber is still counted: " << publisher.subscriber_count();
  for (std::uint64_t tag = 0; tag < 4; ++tag) {
    ASSERT_EQ(publish_sequence(publisher, tag, 500, 500, 100, published), NetioPublisherStatus::OK);
    EXPECT_EQ(publisher.subscriber_count(tag), 1U);
  }
  publisher.flush();
  ASSERT_TRUE(collector.wait([](Collector& c) { return c.total_unlocked() == 4000; })) << collector.total();
  EXPECT_TRUE(collector.errors().empty()) << collector.errors().front();
}

TEST_P(Processes, AKilledPublisherProcessIsReportedToItsSubscribers) {
  ChildProcess publisher_process{
      peer({"publish", "--listen", conformance::test_environment().address, "--tags", "6", "--rate", "30000"},
           under_test())};
  const auto port = wait_field(publisher_process, "LISTENING", "port");
  ASSERT_TRUE(port);
  LoopThread& loop = make_loop();
  Collector collector{loop.thread_id()};
  NetioSubscriber subscriber{subscriber_config(collector), loop.loop(), conformance::test_environment().address};
  const EndPointAddress publisher{conformance::test_environment().address, static_cast<std::uint16_t>(*port)};
  for (std::uint64_t tag = 0; tag < 6; ++tag) {
    ASSERT_EQ(subscriber.subscribe(tag, publisher, {}), NetioStatus::OK);
  }
  ASSERT_TRUE(collector.wait([](Collector& c) {
    return c.subscribed_count_unlocked() == 6 && c.total_unlocked() > 600;
  })) << collector.total()
      << " messages";
  kill_now(publisher_process);
  ASSERT_TRUE(collector.wait([](Collector& c) { return c.lost_count_unlocked() == 1; }));
  std::vector<std::uint64_t> lost = collector.lost_tags();
  std::sort(lost.begin(), lost.end());
  EXPECT_EQ(lost, (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(collector.errors().empty()) << collector.errors().front(); // what arrived is intact and in order
}

TEST_P(Processes, ALinkCutBetweenNamespacesIsNoticedOnBothSides) {
  if (const auto reason = faults::NetnsPair::unavailable_reason()) {
    GTEST_SKIP() << "network namespaces are not available here: " << *reason;
  }
  if (under_test().mode == NetworkMode::RDMA) {
    GTEST_SKIP() << "the RDMA device is not on the namespaces' veth link";
  }
  if (conformance::test_environment().address != "127.0.0.1") {
    GTEST_SKIP() << "runs with the default test address only (it makes its own namespaces)";
  }
  faults::NetnsPair pair;
  const auto in = [&](faults::NetnsPair::Side side, std::vector<std::string> command) {
    std::vector<std::string> full = pair.exec_prefix(side);
    full.insert(full.end(), command.begin(), command.end());
    return full;
  };
  const std::string publisher_address = pair.address(faults::NetnsPair::Side::a);
  ChildProcess publisher_process{
      in(faults::NetnsPair::Side::a,
         peer({"publish", "--listen", publisher_address, "--tags", "3", "--rate", "3000", "--peer-timeout-ms", "2000"},
              under_test()))};
  const auto port = wait_field(publisher_process, "LISTENING", "port");
  ASSERT_TRUE(port);
  ChildProcess subscriber_process{
      in(faults::NetnsPair::Side::b,
         peer({"subscribe", "--publisher", publisher_address, "--port", std::to_string(*port), "--local-ip",
               pair.address(faults::NetnsPair::Side::b), "--tags", "3", "--peer-timeout-ms", "2000"},
              under_test()))};
  ASSERT_EQ(wait_field(subscriber_process, "SUBSCRIBED", "n"), 3U);
  ASSERT_EQ(wait_field(publisher_process, "SUBSCRIBERS", "n"), 1U);
  ASSERT_TRUE(wait_field_above(subscriber_process, "RECEIVED", "total", 0));
  pair.cut(faults::NetnsPair::Side::b);
  // Both sides find out within a few peer timeouts (the deadline only guards against hangs).
  EXPECT_EQ(wait_field(subscriber_process, "LOST", "tags"), 3U);
  EXPECT_EQ(wait_field(publisher_process, "SUBSCRIBERS", "n"), 0U);
  for (const std::string& line : subscriber_process.lines()) {
    EXPECT_NE(line.rfind("ERROR", 0), 0U) << line;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Processes, ::testing::ValuesIn(::netio3::conformance::selected_backends()),
                         ::netio3::frontend_test::FrontendTest::param_name);

} // namespace
} // namespace netio3::frontend_test
