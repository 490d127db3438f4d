#pragma once

// netio3-cat publish: publishes lines of standard input, or generated messages, to subscribers.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "Common.hpp"
#include "netio3/EndPointAddress.hpp"
#include "netio3/FrontendTypes.hpp"

namespace netio3::cat {

struct PublishOptions {
  BackendChoice backend;
  EndPointAddress listen;
  std::vector<std::uint64_t> tags; ///< Sorted, unique; messages go to them in turn.
  std::optional<std::size_t> size; ///< Set: generated messages of this size; unset: lines of stdin.
  double rate{0.0};                ///< Messages per second; 0: as fast as possible.
  std::uint64_t count{0};          ///< Messages (lines read or generated) before the input ends; 0: no limit.
  SendMethod method{SendMethod::BUFFERED};
  std::chrono::microseconds flush_interval{1000};
  std::size_t buffer_size{16384}; ///< NetioPublisherConfig::buffersize; the largest message is 13 bytes less.
  std::size_t buffers{16};        ///< NetioPublisherConfig::nbuffers.
  std::size_t wait_for{1};        ///< Subscribers to wait for before the first message.
  bool quiet{false};
};

/// Runs until the input ends and the subscribers have left, or Ctrl-C (0); 1 when it cannot
/// listen or publishing fails.
int run_publish(const PublishOptions& options);

} // namespace netio3::cat
