#include "Results.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <sys/utsname.h>

namespace netio3::bench {

namespace {

/// The value at quantile `q` (0..1) of sorted `values`, nearest rank.
double quantile(const std::vector<std::uint64_t>& sorted, double q) {
  if (sorted.empty()) {
    return 0.0;
  }
  const auto last = static_cast<double>(sorted.size() - 1);
  const auto index = static_cast<std::size_t>(q * last + 0.5);
  return static_cast<double>(sorted[std::min(index, sorted.size() - 1)]);
}

double per_second(double amount, double seconds) {
  return seconds > 0.0 ? amount / seconds : 0.0;
}

nlohmann::json optional_number(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

std::string cpu_model() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const std::size_t colon = line.find(':');
      if (colon != std::string::npos) {
        return line.substr(line.find_first_not_of(' ', colon + 1));
      }
    }
  }
  return "unknown";
}

/// "1.23 M" style rate with three significant digits.
std::string human_rate(double value) {
  if (value >= 1e9) {
    return fmt::format("{:.2f} G", value / 1e9);
  }
  if (value >= 1e6) {
    return fmt::format("{:.2f} M", value / 1e6);
  }
  if (value >= 1e3) {
    return fmt::format("{:.1f} k", value / 1e3);
  }
  return fmt::format("{:.0f}", value);
}

std::string allocations_text(const std::optional<double>& value) {
  return value ? fmt::format("{:.2f}", *value) : std::string("n/a");
}

} // namespace

LatencyFigures summarize_round_trips(std::vector<std::uint64_t>& round_trip_ns) {
  LatencyFigures figures;
  figures.samples = round_trip_ns.size();
  if (round_trip_ns.empty()) {
    return figures;
  }
  std::sort(round_trip_ns.begin(), round_trip_ns.end());
  constexpr double kNsToOneWayUs = 1.0 / 2000.0; // half the round trip, in microseconds
  figures.one_way_median_us = quantile(round_trip_ns, 0.5) * kNsToOneWayUs;
  figures.one_way_p99_us = quantile(round_trip_ns, 0.99) * kNsToOneWayUs;
  figures.one_way_p999_us = quantile(round_trip_ns, 0.999) * kNsToOneWayUs;
  figures.one_way_min_us = static_cast<double>(round_trip_ns.front()) * kNsToOneWayUs;
  figures.one_way_max_us = static_cast<double>(round_trip_ns.back()) * kNsToOneWayUs;
  figures.round_trip_median_us = quantile(round_trip_ns, 0.5) / 1000.0;
  return figures;
}

nlohmann::json to_json(const ReceiverFigures& figures) {
  return nlohmann::json{
      {"messages", figures.messages},
      {"bytes", figures.bytes},
      {"expected", figures.expected},
      {"seconds", figures.seconds},
      {"messages_per_s", per_second(static_cast<double>(figures.messages), figures.seconds)},
      {"mb_per_s", per_second(static_cast<double>(figures.bytes), figures.seconds) / 1e6},
      {"sequence_errors", figures.sequence_errors},
      {"protocol_errors", figures.protocol_errors},
      {"allocations_per_message", optional_number(figures.allocations_per_message)},
  };
}

ReceiverFigures receiver_figures_from_json(const nlohmann::json& json) {
  ReceiverFigures figures;
  figures.messages = json.at("messages").get<std::uint64_t>();
  figures.bytes = json.at("bytes").get<std::uint64_t>();
  figures.expected = json.at("expected").get<std::uint64_t>();
  figures.seconds = json.at("seconds").get<double>();
  figures.sequence_errors = json.at("sequence_errors").get<std::uint64_t>();
  figures.protocol_errors = json.at("protocol_errors").get<std::uint64_t>();
  if (const auto& allocations = json.at("allocations_per_message"); !allocations.is_null()) {
    figures.allocations_per_message = allocations.get<double>();
  }
  return figures;
}

nlohmann::json to_json(const RunResult& result) {
  nlohmann::json json{
      {"size", result.size},
      {"test", to_string(result.test)},
      {"mode", to_string(result.mode)},
      {"connections", result.connections},
      {"all_arrived", result.all_arrived()},
      {"error", result.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(result.error)},
      {"sender",
       {
           {"messages", result.sender.messages},
           {"bytes", result.sender.bytes},
           {"seconds", result.sender.seconds},
           {"messages_per_s", per_second(static_cast<double>(result.sender.messages), result.sender.seconds)},
           {"mb_per_s", per_second(static_cast<double>(result.sender.bytes), result.sender.seconds) / 1e6},
           {"no_resources", result.sender.no_resources},
           {"completions", result.sender.completions},
           {"allocations_per_message", optional_number(result.sender.allocations_per_message)},
       }},
      {"receiver", to_json(result.receiver)},
  };
  if (result.latency) {
    const LatencyFigures& latency = *result.latency;
    json["latency"] = {
        {"samples", latency.samples},
        {"one_way_median_us", latency.one_way_median_us},
        {"one_way_p99_us", latency.one_way_p99_us},
        {"one_way_p999_us", latency.one_way_p999_us},
        {"one_way_min_us", latency.one_way_min_us},
        {"one_way_max_us", latency.one_way_max_us},
        {"round_trip_median_us", latency.round_trip_median_us},
    };
  } else {
    json["latency"] = nullptr;
  }
  return json;
}

nlohmann::json machine_json() {
  utsname names{};
  std::string kernel = "unknown";
  if (uname(&names) == 0) {
    kernel = std::string(names.sysname) + " " + names.release;
  }
  return nlohmann::json{
      {"nproc", std::thread::hardware_concurrency()},
      {"cpu_model", cpu_model()},
      {"kernel", kernel},
  };
}

nlohmann::json report_json(const ClientOptions& options, const std::vector<RunResult>& results) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &utc);

  nlohmann::json runs = nlohmann::json::array();
  bool all_arrived = true;
  for (const RunResult& result : results) {
    runs.push_back(to_json(result));
    all_arrived = all_arrived && result.all_arrived();
  }
  return nlohmann::json{
      {"tool", "netio3-bench"},
      {"date", date},
      {"machine", machine_json()},
      {"config",
       {
           {"backend", backend_name(options.backend.backend)},
           {"provider", options.backend.backend == NetworkType::LIBFABRIC ? nlohmann::json(options.backend.provider)
                                                                          : nlohmann::json(nullptr)},
           {"threads", threads_name(options.backend.threads)},
           {"receive_poll_us", options.backend.backend == NetworkType::LIBFABRIC
                                   ? nlohmann::json(options.backend.receive_poll.count())
                                   : nlohmann::json(nullptr)},
           {"test", to_string(options.test)},
           {"mode", to_string(options.mode)},
           {"connections", options.connections},
           {"messages", options.messages ? nlohmann::json(*options.messages) : nlohmann::json(nullptr)},
           {"duration_s", options.messages ? nlohmann::json(nullptr) : nlohmann::json(options.duration_s)},
           {"buffer_size", options.buffer_size},
           {"server", fmt::format("{}:{}", options.server_host, options.server_port)},
       }},
      {"all_arrived", all_arrived},
      {"results", runs},
  };
}

void print_table(std::ostream& out, const ClientOptions& options, const std::vector<RunResult>& results) {
  const std::string backend = options.backend.backend == NetworkType::LIBFABRIC
                                  ? fmt::format("libfabric/{}", options.backend.provider)
                                  : std::string("asyncmsg (TCP)");
  const std::string sender_thread = options.backend.threads == ThreadSafetyModel::SAFE
                                        ? "SAFE, sends from an application thread"
                                        : "UNSAFE, sends from the loop thread";
  out << fmt::format("netio3-bench {}: {}, {} sends, {}, {} connection{}\n", to_string(options.test), backend,
                     to_string(options.mode), sender_thread, options.connections, options.connections == 1 ? "" : "s");
  if (options.test == TestKind::Throughput) {
    out << fmt::format("{:>9} {:>11} {:>11} {:>10} {:>8} {:>11} {:>11} {:>6}\n", "size", "messages", "msg/s", "MB/s",
                       "Gb/s", "alloc/msg", "alloc/msg", "lost");
    out << fmt::format("{:>9} {:>11} {:>11} {:>10} {:>8} {:>11} {:>11} {:>6}\n", "", "", "(received)", "(received)", "",
                       "(sender)", "(receiver)", "");
    for (const RunResult& result : results) {
      const double seconds = result.receiver.seconds;
      const double rate = per_second(static_cast<double>(result.receiver.messages), seconds);
      const double bytes_per_s = per_second(static_cast<double>(result.receiver.bytes), seconds);
      const std::uint64_t lost =
          result.sender.messages > result.receiver.messages ? result.sender.messages - result.receiver.messages : 0;
      out << fmt::format("{:>9} {:>11} {:>11} {:>10.1f} {:>8.2f} {:>11} {:>11} {:>6}{}\n", format_size(result.size),
                         result.receiver.messages, human_rate(rate), bytes_per_s / 1e6, bytes_per_s * 8.0 / 1e9,
                         allocations_text(result.sender.allocations_per_message),
                         allocations_text(result.receiver.allocations_per_message), lost,
                         result.error.empty() ? std::string() : "  error: " + result.error);
    }
  } else {
    out << fmt::format("{:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>11} {:>11}\n", "size", "samples", "median µs",
                       "p99 µs", "p99.9 µs", "min µs", "alloc/msg", "alloc/msg");
    out << fmt::format("{:>9} {:>9} {:>12} {:>10} {:>10} {:>10} {:>11} {:>11}\n", "", "", "(one way)", "(one way)",
                       "(one way)", "(one way)", "(sender)", "(echo)");
    for (const RunResult& result : results) {
      const LatencyFigures latency = result.latency.value_or(LatencyFigures{});
      out << fmt::format("{:>9} {:>9} {:>12.2f} {:>10.2f} {:>10.2f} {:>10.2f} {:>11} {:>11}{}\n",
                         format_size(result.size), latency.samples, latency.one_way_median_us, latency.one_way_p99_us,
                         latency.one_way_p999_us, latency.one_way_min_us,
                         allocations_text(result.sender.allocations_per_message),
                         allocations_text(result.receiver.allocations_per_message),
                         result.error.empty() ? std::string() : "  error: " + result.error);
    }
  }
}

} // namespace netio3::bench
