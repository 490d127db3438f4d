#pragma once

// Shared pieces of the peer harnesses: the command line (CLI11), timing, and the one JSON line
// each harness prints, in the same fields as bench/report reads from every system.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace peer {

using Clock = std::chrono::steady_clock;

/// What every harness is told: which test, message size, and either a count or a duration.
struct Settings {
  std::string test{"throughput"};
  std::size_t size{64};
  std::uint64_t messages{0}; ///< 0: run for `duration` seconds.
  double duration{1.0};
  std::uint64_t window{64}; ///< Messages in flight (libfabric harness).
  std::string provider{"tcp"};
};

/// Adds the options every harness shares to `app`; `tests` are the values `--test` accepts.
inline void add_options(CLI::App& app, Settings& settings,
                        const std::vector<std::string>& tests = {"throughput", "latency"}) {
  std::string names;
  for (const std::string& test : tests) {
    names += (names.empty() ? "" : ", ") + test;
  }
  app.add_option("--test", settings.test, names)->check(CLI::IsMember(tests))->capture_default_str();
  app.add_option("--size", settings.size, "Message size in bytes. Example: --size 4096")->capture_default_str();
  app.add_option("--messages", settings.messages, "Messages (or round trips); 0: use --duration")
      ->capture_default_str();
  app.add_option("--duration", settings.duration, "Seconds to run when --messages is 0")->capture_default_str();
}

/// Prints a throughput line: receiver-side messages over seconds.
inline void print_throughput(const std::string& system, std::size_t size, std::uint64_t messages, double seconds) {
  const double rate = seconds > 0.0 ? static_cast<double>(messages) / seconds : 0.0;
  std::cout << nlohmann::json{{"system", system},
                              {"test", "throughput"},
                              {"size", size},
                              {"messages", messages},
                              {"seconds", seconds},
                              {"messages_per_s", rate},
                              {"mb_per_s", rate * static_cast<double>(size) / 1e6}}
                   .dump()
            << std::endl;
}

/// Prints a latency line from round-trip times in nanoseconds (one way = half the round trip).
inline void print_latency(const std::string& system, std::size_t size, std::vector<std::uint64_t>& round_trips) {
  std::sort(round_trips.begin(), round_trips.end());
  auto at = [&](double q) {
    if (round_trips.empty()) {
      return 0.0;
    }
    const auto index = static_cast<std::size_t>(q * static_cast<double>(round_trips.size() - 1) + 0.5);
    return static_cast<double>(round_trips[std::min(index, round_trips.size() - 1)]) / 2000.0;
  };
  std::cout << nlohmann::json{{"system", system},
                              {"test", "latency"},
                              {"size", size},
                              {"samples", round_trips.size()},
                              {"one_way_median_us", at(0.5)},
                              {"one_way_p99_us", at(0.99)},
                              {"one_way_p999_us", at(0.999)}}
                   .dump()
            << std::endl;
}

/// Round trips to skip before measuring, and the ones to keep.
inline std::uint64_t warmup_count(std::uint64_t total) {
  return std::max<std::uint64_t>(total / 10, 1);
}

[[noreturn]] inline void die(const std::string& what) {
  std::cerr << what << std::endl;
  std::exit(2);
}

/// Nanoseconds between two points.
inline std::uint64_t nanoseconds(Clock::time_point from, Clock::time_point to) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count());
}

} // namespace peer
