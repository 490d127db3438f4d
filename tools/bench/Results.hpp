#pragma once

// The figures of one benchmark run (one message size), their JSON form and the human table.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "Options.hpp"

namespace netio3::bench {

/// What the receiving process measured (sent back to the client in the result message).
struct ReceiverFigures {
  std::uint64_t messages{0};                     ///< Data messages (throughput) or pings (latency) received.
  std::uint64_t bytes{0};                        ///< Their bytes (message size times messages).
  std::uint64_t expected{0};                     ///< What the client said it sent (sum over the end messages).
  double seconds{0.0};                           ///< First data message to the last end message.
  std::uint64_t sequence_errors{0};              ///< Messages out of order, lost or duplicated.
  std::uint64_t protocol_errors{0};              ///< Malformed benchmark messages.
  std::optional<double> allocations_per_message; ///< After warm-up; unset if too few messages.
};

/// What the sending process measured.
struct SenderFigures {
  std::uint64_t messages{0};
  std::uint64_t bytes{0};
  double seconds{0.0};           ///< First send to the last accepted send.
  std::uint64_t no_resources{0}; ///< Sends (or get_buffer calls) refused for backpressure.
  std::uint64_t completions{0};  ///< on_send_completed_cb calls seen during the run.
  std::optional<double> allocations_per_message;
};

/// Ping-pong figures, one-way latency taken as half the round trip.
struct LatencyFigures {
  std::uint64_t samples{0};
  double one_way_median_us{0.0};
  double one_way_p99_us{0.0};
  double one_way_p999_us{0.0};
  double one_way_min_us{0.0};
  double one_way_max_us{0.0};
  double round_trip_median_us{0.0};
};

/// One message size's run.
struct RunResult {
  std::size_t size{0};
  TestKind test{TestKind::Throughput};
  SendMode mode{SendMode::Copy};
  std::size_t connections{1};
  SenderFigures sender;
  ReceiverFigures receiver;
  std::optional<LatencyFigures> latency;
  std::string error; ///< Empty when the run completed.

  /// Every message the client sent arrived once, in order, and nothing failed.
  [[nodiscard]] bool all_arrived() const noexcept {
    return error.empty() && receiver.messages == sender.messages && receiver.expected == sender.messages &&
           receiver.sequence_errors == 0 && receiver.protocol_errors == 0;
  }
};

/// Median, p99 and p99.9 of round-trip times in nanoseconds (the vector is reordered).
[[nodiscard]] LatencyFigures summarize_round_trips(std::vector<std::uint64_t>& round_trip_ns);

[[nodiscard]] nlohmann::json to_json(const ReceiverFigures& figures);
[[nodiscard]] ReceiverFigures receiver_figures_from_json(const nlohmann::json& json);
[[nodiscard]] nlohmann::json to_json(const RunResult& result);

/// Static facts about the machine, for the report: nproc, CPU model, kernel.
[[nodiscard]] nlohmann::json machine_json();
/// The whole report: configuration, machine, date, one entry per run.
[[nodiscard]] nlohmann::json report_json(const ClientOptions& options, const std::vector<RunResult>& results);

/// Prints the human table of all runs.
void print_table(std::ostream& out, const ClientOptions& options, const std::vector<RunResult>& results);

} // namespace netio3::bench
