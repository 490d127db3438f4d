// Connection set-up and tear-down must not leak: a send endpoint is opened, established, used and
// closed 1,000 times (100 with NETIO3_TEST_SCALE=small or under a sanitizer); the process's open
// file descriptors and resident memory must not grow.

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <dirent.h>
#include <fstream>
#include <string>
#include <unistd.h>

#include "libfabric/Harness.hpp"

namespace netio3::libfabric::test {
namespace {

const bool environment_prepared = prepare_environment();

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool sanitized = true;
#else
constexpr bool sanitized = false;
#endif

std::size_t open_fd_count() {
  std::size_t count = 0;
  DIR* directory = opendir("/proc/self/fd");
  if (directory == nullptr) {
    return 0;
  }
  while (readdir(directory) != nullptr) {
    ++count;
  }
  closedir(directory);
  return count;
}

std::size_t resident_bytes() {
  std::ifstream statm{"/proc/self/statm"};
  std::size_t total_pages = 0;
  std::size_t resident_pages = 0;
  statm >> total_pages >> resident_pages;
  return resident_pages * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

class OpenClose : public ::testing::TestWithParam<std::string> {
protected:
  void SetUp() override {
    ASSERT_TRUE(environment_prepared);
    if (!provider_available(GetParam())) {
      GTEST_SKIP() << "libfabric provider " << GetParam() << " is not available here";
    }
  }
};

TEST_P(OpenClose, ThousandCyclesLeakNothing) {
  const std::size_t cycles = small_scale() || sanitized ? 100 : 1000;
  const std::size_t warm_up = 20;
  Node::Options receiver_options;
  receiver_options.provider = GetParam();
  receiver_options.keep_messages = false;
  Node::Options sender_options;
  sender_options.provider = GetParam();
  Node receiver{receiver_options};
  Node sender{sender_options};
  ConnectionParametersRecv receive;
  receive.buf_size = 4096;
  receive.num_buf = 8;
  const EndPointAddress listening =
      receiver.backend().open_listen_endpoint(EndPointAddress{test_address(), 0}, receive);
  const EndPointAddress target{test_address(), listening.port()};
  Region region{1U << 16U};
  ConnectionParameters send;
  send.buf_size = 4096;
  send.num_buf = 4;
  send.mr_start = region.data();
  send.mr_size = region.size();

  std::size_t fds_after_warm_up = 0;
  std::size_t rss_after_warm_up = 0;
  for (std::size_t cycle = 0; cycle < cycles; ++cycle) {
    if (cycle == warm_up) {
      fds_after_warm_up = open_fd_count();
      rss_after_warm_up = resident_bytes();
    }
    sender.backend().open_send_endpoint(target, send);
    ASSERT_TRUE(sender.wait([&](const Record& r) { return r.established.size() == cycle + 1; }))
        << "cycle " << cycle << ": not established";
    // Use every registered path once: zero-copy, copy (creates the bounce ring), buffered.
    ASSERT_EQ(sender.backend().send_data(target, std::span<std::uint8_t>{region.data(), 100}, {}, 1), NetioStatus::OK);
    ASSERT_EQ(sender.backend().send_data_copy(target, std::span<const std::uint8_t>{region.data(), 100}, {}, 2),
              NetioStatus::OK);
    NetworkBuffer* buffer = sender.backend().get_buffer(target);
    ASSERT_NE(buffer, nullptr);
    buffer->set_pos(100);
    ASSERT_EQ(sender.backend().send_buffer(target, buffer), NetioStatus::OK);
    ASSERT_TRUE(receiver.wait([&](const Record& r) { return r.received_count == 3 * (cycle + 1); }))
        << "cycle " << cycle << ": messages missing";
    sender.backend().close_send_endpoint(target);
    ASSERT_TRUE(sender.wait([&](const Record& r) { return r.closed.size() == cycle + 1; }))
        << "cycle " << cycle << ": the send endpoint's close was not reported";
    ASSERT_TRUE(receiver.wait([&](const Record& r) { return r.closed.size() == cycle + 1; }))
        << "cycle " << cycle << ": the receiver did not see the close";
  }
  const std::size_t fds_at_end = open_fd_count();
  const std::size_t rss_at_end = resident_bytes();
  EXPECT_EQ(fds_at_end, fds_after_warm_up) << "file descriptors leaked over " << cycles - warm_up << " cycles";
  if (!sanitized) { // the sanitizers keep freed memory in quarantine; they check leaks themselves
    EXPECT_LE(rss_at_end, rss_after_warm_up + (4U << 20U))
        << "resident memory grew from " << rss_after_warm_up << " to " << rss_at_end << " bytes";
  }
  receiver.inspect([&](const Record& r) {
    EXPECT_EQ(r.established.size(), cycles);
    EXPECT_EQ(r.off_loop_callbacks, 0U);
  });
  sender.inspect([&](const Record& r) {
    EXPECT_TRUE(r.refused.empty());
    EXPECT_EQ(r.off_loop_callbacks, 0U);
  });
}

INSTANTIATE_TEST_SUITE_P(Providers, OpenClose, ::testing::Values("tcp", "sockets"),
                         [](const ::testing::TestParamInfo<std::string>& provider) { return provider.param; });

} // namespace
} // namespace netio3::libfabric::test
