#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "core/Logging.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

using namespace netio3;

TEST(Types, StatusNamesAreDistinctAndPrintable) {
  const std::vector<NetioStatus> all{NetioStatus::OK,
                                     NetioStatus::FAILED,
                                     NetioStatus::NO_RESOURCES,
                                     NetioStatus::MESSAGE_TOO_LARGE,
                                     NetioStatus::OUTSIDE_REGISTERED_REGION,
                                     NetioStatus::INVALID_ARGUMENT};
  std::vector<std::string_view> names;
  for (const auto status : all) {
    names.push_back(to_string(status));
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::unique(names.begin(), names.end()), names.end());
  std::ostringstream out;
  out << NetioStatus::NO_RESOURCES << ' ' << NetworkType::LIBFABRIC << ' ' << NetworkMode::RDMA << ' '
      << ThreadSafetyModel::UNSAFE;
  EXPECT_EQ(out.str(), "NO_RESOURCES LIBFABRIC RDMA UNSAFE");
}

TEST(Exceptions, AllDeriveFromNetioException) {
  static_assert(std::is_base_of_v<NetioException, InvalidEndpointAddress>);
  static_assert(std::is_base_of_v<NetioException, FailedOpenSendEndpoint>);
  static_assert(std::is_base_of_v<NetioException, SendEndpointAlreadyExists>);
  static_assert(std::is_base_of_v<NetioException, FailedOpenListenEndpoint>);
  static_assert(std::is_base_of_v<NetioException, ListenEndpointAlreadyExists>);
  static_assert(std::is_base_of_v<NetioException, UnknownSendEndpoint>);
  static_assert(std::is_base_of_v<NetioException, UnknownListenEndpoint>);
  static_assert(std::is_base_of_v<NetioException, FailedCloseSendEndpoint>);
  static_assert(std::is_base_of_v<NetioException, FailedCloseListenEndpoint>);
  static_assert(std::is_base_of_v<NetioException, NoBuffersAllocated>);
  static_assert(std::is_base_of_v<NetioException, UnsupportedConfiguration>);
  static_assert(std::is_base_of_v<std::runtime_error, NetioException>);
  try {
    throw UnknownSendEndpoint("no send endpoint to 127.0.0.1:1");
  } catch (const NetioException& error) {
    EXPECT_STREQ(error.what(), "no send endpoint to 127.0.0.1:1");
  }
}

TEST(Factory, NullLoopIsRejected) {
  EXPECT_THROW((void)NetworkBackend::create(NetworkType::ASYNCMSG, NetworkConfig{}, nullptr), std::invalid_argument);
}

#if !defined(NETIO3_TEST_BUILT_ASYNCMSG) || !defined(NETIO3_TEST_BUILT_LIBFABRIC)
#error "tests/unit/CMakeLists.txt defines NETIO3_TEST_BUILT_<BACKEND> from what this build contains"
#endif

// The factory builds exactly the backends this build contains (as CMake says: tests/CMakeLists.txt
// reads the library's compile definitions) and names every other one in UnsupportedConfiguration.
TEST(Factory, BuildsExactlyTheBackendsOfThisBuildAndNamesTheOthers) {
  struct Expectation {
    NetworkType type;
    bool built;
  };
  auto loop = std::make_shared<EpollEventLoop>();
  for (const auto [type, built] : {Expectation{NetworkType::ASYNCMSG, NETIO3_TEST_BUILT_ASYNCMSG != 0},
                                   Expectation{NetworkType::LIBFABRIC, NETIO3_TEST_BUILT_LIBFABRIC != 0}}) {
    SCOPED_TRACE(std::string{to_string(type)} + (built ? " (in this build)" : " (not in this build)"));
    if (built) {
      std::unique_ptr<NetworkBackend> backend;
      EXPECT_NO_THROW(backend = NetworkBackend::create(type, NetworkConfig{}, loop));
      EXPECT_NE(backend, nullptr);
      continue;
    }
    try {
      const auto backend = NetworkBackend::create(type, NetworkConfig{}, loop);
      ADD_FAILURE() << "the factory built a backend that this build does not contain";
    } catch (const UnsupportedConfiguration& error) {
      EXPECT_NE(std::string(error.what()).find(std::string(to_string(type))), std::string::npos) << error.what();
    }
  }
}

TEST(NetworkBufferTest, AppendAndPositionStayWithinCapacity) {
  std::vector<std::uint8_t> memory(8);
  NetworkBuffer buffer{memory, 3, &memory};
  EXPECT_EQ(buffer.size(), 8U);
  EXPECT_EQ(buffer.pos(), 0U);
  const std::vector<std::uint8_t> five{1, 2, 3, 4, 5};
  EXPECT_TRUE(buffer.append(five));
  EXPECT_EQ(buffer.pos(), 5U);
  EXPECT_FALSE(buffer.append(five)); // does not fit: nothing copied
  EXPECT_EQ(buffer.pos(), 5U);
  EXPECT_EQ(memory[4], 5);
  EXPECT_EQ(memory[5], 0);
  EXPECT_THROW(buffer.set_pos(9), std::out_of_range);
  buffer.set_pos(8);
  EXPECT_EQ(buffer.available(), 0U);
  EXPECT_EQ(buffer.index(), 3U);
  EXPECT_EQ(buffer.owner(), &memory);
}

TEST(ConfigDefaults, AreUsable) {
  const ConnectionParameters send_params;
  EXPECT_EQ(send_params.num_buf, 0U);
  EXPECT_EQ(send_params.mr_start, nullptr);
  const ConnectionParametersRecv receive_params;
  EXPECT_GT(receive_params.buf_size, 0U);
  EXPECT_GT(receive_params.num_buf, 0U);
  const NetworkConfig config;
  EXPECT_EQ(config.mode, NetworkMode::TCP);
  EXPECT_FALSE(config.on_data_cb);
}

namespace {

struct CapturedLog {
  std::mutex mutex;
  std::vector<std::pair<LogLevel, std::string>> lines;
};

} // namespace

TEST(Logging, SilentByDefaultThenLevelAndSinkApply) {
  // The test runs without NETIO3_LOG (ctest does not set it), so the default is off.
  if (std::getenv("NETIO3_LOG") == nullptr) {
    EXPECT_EQ(log_level(), LogLevel::Off);
  }
  auto captured = std::make_shared<CapturedLog>();
  set_log_sink([captured](LogLevel level, std::string_view message) {
    const std::lock_guard lock{captured->mutex};
    captured->lines.emplace_back(level, std::string(message));
  });
  set_log_level(LogLevel::Off);
  NETIO3_LOG_ERROR("hidden {}", 1);
  set_log_level(LogLevel::Warning);
  NETIO3_LOG_INFO("below threshold {}", 2);
  NETIO3_LOG_WARNING("shown {} {}", 3, "x");
  NETIO3_LOG_ERROR("also shown");
  set_log_level(LogLevel::Off);
  set_log_sink(nullptr);
  ASSERT_EQ(captured->lines.size(), 2U);
  EXPECT_EQ(captured->lines[0].first, LogLevel::Warning);
  EXPECT_EQ(captured->lines[0].second, "shown 3 x");
  EXPECT_EQ(captured->lines[1].first, LogLevel::Error);
}

TEST(Logging, ParsesLevelNames) {
  LogLevel level = LogLevel::Off;
  EXPECT_TRUE(parse_log_level("DEBUG", level));
  EXPECT_EQ(level, LogLevel::Debug);
  EXPECT_TRUE(parse_log_level("warn", level));
  EXPECT_EQ(level, LogLevel::Warning);
  EXPECT_FALSE(parse_log_level("loud", level));
  EXPECT_EQ(level, LogLevel::Warning);
  EXPECT_EQ(to_string(LogLevel::Trace), "trace");
}

TEST(Logging, ThrowingSinkDoesNotEscape) {
  set_log_sink([](LogLevel, std::string_view) { throw std::runtime_error("sink failure"); });
  set_log_level(LogLevel::Trace);
  EXPECT_NO_THROW(NETIO3_LOG_ERROR("x"));
  set_log_level(LogLevel::Off);
  set_log_sink(nullptr);
}
