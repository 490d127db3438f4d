#pragma once

/// @file
/// Helpers shared by the fault test programs: the backends under test, the peer program, polling
/// with deadlines, figures worth reporting.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ChildProcess.hpp"
#include "ProcessStats.hpp"
#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

#ifndef NETIO3_FAULT_PEER
#error "NETIO3_FAULT_PEER must name the netio3-fault-peer program"
#endif

namespace netio3::faults {

/// One backend configuration under test.
struct BackendCase {
  NetworkType type{NetworkType::ASYNCMSG};
  std::string provider{}; ///< libfabric provider
  std::string name{};     ///< test-name suffix and peer --backend value

  /// "--backend NAME [--provider P]" for the peer program.
  [[nodiscard]] std::vector<std::string> peer_args() const {
    std::vector<std::string> args{"--backend", type == NetworkType::ASYNCMSG ? "asyncmsg" : "libfabric"};
    if (!provider.empty()) {
      args.insert(args.end(), {"--provider", provider});
    }
    return args;
  }
};

/// gtest prints parameters with this (instead of their bytes).
inline void PrintTo(const BackendCase& backend, std::ostream* out) {
  *out << backend.name;
}

/// The TCP backend and the libfabric backend over its tcp provider.
inline std::vector<BackendCase> backend_cases() {
  return {BackendCase{NetworkType::ASYNCMSG, "", "asyncmsg"},
          BackendCase{NetworkType::LIBFABRIC, "tcp", "libfabric_tcp"}};
}

/// Test-name generator for parameterised tests over `BackendCase`.
inline std::string backend_case_name(const testing::TestParamInfo<BackendCase>& info) {
  return info.param.name;
}

/// Why `backend` cannot be tested in this build (not built in), or nullopt.
inline std::optional<std::string> backend_unavailable(const BackendCase& backend) {
  try {
    NetworkConfig config;
    config.provider = backend.provider;
    auto loop = std::make_shared<EpollEventLoop>();
    auto instance = NetworkBackend::create(backend.type, config, loop);
  } catch (const UnsupportedConfiguration& error) {
    return std::string("backend not available in this build: ") + error.what();
  }
  return std::nullopt;
}

/// Skips the current test when the backend is not built.
#define NETIO3_SKIP_IF_BACKEND_UNAVAILABLE(backend)                                                                    \
  do {                                                                                                                 \
    if (const auto reason_ = ::netio3::faults::backend_unavailable(backend)) {                                         \
      GTEST_SKIP() << *reason_;                                                                                        \
    }                                                                                                                  \
  } while (false)

/// The peer program followed by `args`.
inline std::vector<std::string> peer_command(std::vector<std::string> args) {
  args.insert(args.begin(), NETIO3_FAULT_PEER);
  return args;
}

/// Appends `more` to `base`.
inline std::vector<std::string> concat(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

/// Polls `condition` every few milliseconds until it holds (true) or `timeout` passes (false).
inline bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) {
      return condition();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
  return true;
}

/// An integer from the environment, or `fallback`.
inline std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') {
    return fallback;
  }
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return fallback;
  }
}

/// Records a figure in the test's XML output and, with NETIO3_FAULTS_VERBOSE=1, prints it (the
/// figures of docs/reliability.md come from there). Silent otherwise: tests print no noise.
inline void report(const std::string& key, const std::string& value) {
  testing::Test::RecordProperty(key, value);
  if (env_u64("NETIO3_FAULTS_VERBOSE", 0) != 0) {
    std::printf("[ figures  ] %s: %s\n", key.c_str(), value.c_str());
    std::fflush(stdout);
  }
}

/// The peer's RESULT line parsed, or an empty map (with a test failure) when it never came.
inline std::map<std::string, std::string> result_of(ChildProcess& child, Clock::time_point deadline) {
  const auto line = child.wait_for_line("RESULT", deadline);
  if (!line) {
    ADD_FAILURE() << "no RESULT line from the peer\n" << child.diagnostics();
    return {};
  }
  return parse_fields(*line);
}

} // namespace netio3::faults
