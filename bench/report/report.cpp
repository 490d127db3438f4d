// bench-report: turns the raw measurements of bench/compare into its results.
//
//   bench-report add --out M.jsonl --round R [--system NAME] [--size S] < output
//       appends normalized measurement lines: from a netio3-bench --json report, an iperf3 -J
//       report (needs --size), or the JSON lines of a peer harness.
//   bench-report summarize --in M.jsonl --dir RESULTS
//       medians over the rounds; writes RESULTS/results.json, results.md and plots.gp (for gnuplot),
//       and prints the goals with their ratios and PASS/MISS.
//
// Measurements of test "setup" (netio3-churn --json: connection set-up rate) have no message size
// (size 0); they only appear in their own table, not as a size column.

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

using nlohmann::json;

namespace {

std::string size_label(std::size_t size) {
  if (size >= (1U << 20U) && size % (1U << 20U) == 0) {
    return std::to_string(size >> 20U) + " MiB";
  }
  if (size >= 1024 && size % 1024 == 0) {
    return std::to_string(size >> 10U) + " KiB";
  }
  return std::to_string(size) + " B";
}

std::string number(double value, int digits = 3) {
  if (!std::isfinite(value)) {
    return "n/a";
  }
  std::ostringstream out;
  out.setf(std::ios::fixed);
  const double magnitude = std::fabs(value);
  int decimals = 0;
  if (magnitude < 10.0) {
    decimals = digits - 1;
  } else if (magnitude < 100.0) {
    decimals = std::max(0, digits - 2);
  } else if (magnitude < 1000.0) {
    decimals = std::max(0, digits - 3);
  }
  out.precision(decimals);
  out << value;
  return out.str();
}

std::string rate(double value) {
  if (value >= 1e6) {
    return number(value / 1e6) + " M";
  }
  if (value >= 1e3) {
    return number(value / 1e3) + " k";
  }
  return number(value);
}

// ---------------------------------------------------------------------------------------------
// add

int add(const std::string& out_path, int round, const std::string& system, std::size_t size) {
  const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  std::vector<json> lines;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) {
    std::cerr << "bench-report add: empty input for " << system << '\n';
    return 1;
  }
  try {
    // A whole document (netio3-bench, iperf3) or one JSON object per line (peers).
    json document;
    bool whole = true;
    try {
      document = json::parse(text);
    } catch (const json::parse_error&) {
      whole = false;
    }
    if (whole && document.contains("tool") && document["tool"] == "netio3-bench") {
      for (const json& result : document.at("results")) {
        json line{{"system", system},
                  {"test", result.at("test")},
                  {"size", result.at("size")},
                  {"all_arrived", result.at("all_arrived")}};
        const json& receiver = result.at("receiver");
        line["messages_per_s"] = receiver.at("messages_per_s");
        line["mb_per_s"] = receiver.at("mb_per_s");
        double allocations = 0.0;
        bool known = false;
        for (const char* side : {"sender", "receiver"}) {
          const json& value = result.at(side).at("allocations_per_message");
          if (!value.is_null()) {
            allocations = std::max(allocations, value.get<double>());
            known = true;
          }
          // Each side's own count as well: the pub/sub goals name publish and delivery apart.
          line[std::string(side) + "_allocations_per_message"] = value;
        }
        line["allocations_per_message"] = known ? json(allocations) : json(nullptr);
        if (!result.at("latency").is_null()) {
          for (const char* field : {"one_way_median_us", "one_way_p99_us", "one_way_p999_us"}) {
            line[field] = result.at("latency").at(field);
          }
        }
        if (!result.at("error").is_null()) {
          line["error"] = result.at("error");
        }
        lines.push_back(line);
      }
    } else if (whole && document.contains("end") && document.contains("start")) {
      if (size == 0) {
        std::cerr << "bench-report add: an iperf3 report needs --size\n";
        return 1;
      }
      if (document.contains("error")) {
        std::cerr << "bench-report add: iperf3 failed: " << document["error"] << '\n';
        return 1;
      }
      const double bits = document.at("end").at("sum_received").at("bits_per_second").get<double>();
      const double bytes_per_s = bits / 8.0;
      lines.push_back(json{{"system", system.empty() ? "iperf3" : system},
                           {"test", "throughput"},
                           {"size", size},
                           {"messages_per_s", bytes_per_s / static_cast<double>(size)},
                           {"mb_per_s", bytes_per_s / 1e6}});
    } else {
      std::istringstream stream(text);
      std::string line_text;
      while (std::getline(stream, line_text)) {
        if (line_text.find_first_not_of(" \t\r") == std::string::npos) {
          continue;
        }
        json line = json::parse(line_text);
        if (!system.empty()) {
          line["system"] = system;
        }
        lines.push_back(line);
      }
    }
  } catch (const std::exception& error) {
    std::cerr << "bench-report add: cannot read the output of " << system << ": " << error.what() << '\n';
    return 1;
  }
  std::ofstream out(out_path, std::ios::app);
  for (json& line : lines) {
    line["round"] = round;
    out << line.dump() << '\n';
  }
  return out ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------
// summarize

struct Key {
  std::string system;
  std::string test;
  std::size_t size;
  bool operator<(const Key& other) const {
    return std::tie(system, test, size) < std::tie(other.system, other.test, other.size);
  }
};

double median(std::vector<double> values) {
  if (values.empty()) {
    return std::nan("");
  }
  std::sort(values.begin(), values.end());
  const std::size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : (values[middle - 1] + values[middle]) / 2.0;
}

/// Medians over the rounds of every field of interest.
struct Summary {
  std::map<Key, std::map<std::string, double>> medians;
  std::map<Key, std::size_t> rounds;
  std::map<Key, std::size_t> failures; ///< netio3 runs where not every message arrived
  std::vector<std::string> system_order;
  std::set<std::size_t> sizes;

  [[nodiscard]] std::optional<double> get(const std::string& system, const std::string& test, std::size_t size,
                                          const std::string& field) const {
    const auto found = medians.find(Key{system, test, size});
    if (found == medians.end()) {
      return std::nullopt;
    }
    const auto value = found->second.find(field);
    if (value == found->second.end() || !std::isfinite(value->second)) {
      return std::nullopt;
    }
    return value->second;
  }
};

Summary summarize_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw std::runtime_error("cannot open " + path);
  }
  std::map<Key, std::map<std::string, std::vector<double>>> values;
  Summary summary;
  std::string text;
  while (std::getline(in, text)) {
    if (text.empty()) {
      continue;
    }
    const json line = json::parse(text);
    const Key key{line.at("system").get<std::string>(), line.at("test").get<std::string>(),
                  line.at("size").get<std::size_t>()};
    if (std::find(summary.system_order.begin(), summary.system_order.end(), key.system) == summary.system_order.end()) {
      summary.system_order.push_back(key.system);
    }
    if (key.test != "setup") {
      summary.sizes.insert(key.size);
    }
    ++summary.rounds[key];
    if (line.contains("all_arrived") && !line["all_arrived"].get<bool>()) {
      ++summary.failures[key];
      continue; // a run that lost messages has no meaningful rate
    }
    for (const char* field :
         {"messages_per_s", "mb_per_s", "one_way_median_us", "one_way_p99_us", "one_way_p999_us",
          "allocations_per_message", "sender_allocations_per_message", "receiver_allocations_per_message",
          "connections_per_s", "setup_mean_us", "fds_start", "fds_end", "rss_kib_start", "rss_kib_end"}) {
      if (line.contains(field) && line[field].is_number()) {
        values[key][field].push_back(line[field].get<double>());
      }
    }
  }
  for (auto& [key, fields] : values) {
    for (auto& [field, list] : fields) {
      summary.medians[key][field] = median(list);
    }
  }
  return summary;
}

/// A goal: a ratio of two medians and its bound.
struct Goal {
  std::string name;
  std::string numerator_system;
  std::string denominator_system;
  std::string test;
  std::size_t size;
  std::string field;
  double bound;
  bool at_least; ///< true: ratio >= bound; false: ratio <= bound
};

std::vector<Goal> goals() {
  constexpr std::size_t kSmall = 64;
  constexpr std::size_t kLarge = std::size_t{1} << 20U;
  return {
      {"64 B copy sends, TCP, 1 connection, UNSAFE (loop thread) vs ZeroMQ PUSH/PULL", "netio3-tcp-copy-unsafe",
       "zeromq-push-pull", "throughput", kSmall, "messages_per_s", 1.5, true},
      {"64 B copy sends, TCP, 1 connection, SAFE (application thread) vs ZeroMQ PUSH/PULL", "netio3-tcp-copy-safe",
       "zeromq-push-pull", "throughput", kSmall, "messages_per_s", 1.5, true},
      {"1 MiB zero-copy, TCP backend vs iperf3 single stream", "netio3-tcp-zerocopy", "iperf3", "throughput", kLarge,
       "mb_per_s", 1.2, true},
      {"1 MiB zero-copy, libfabric/tcp vs iperf3 single stream", "netio3-libfabric-tcp-zerocopy", "iperf3",
       "throughput", kLarge, "mb_per_s", 1.1, true},
      {"64 B one-way latency, TCP backend vs raw TCP ping-pong (lower is better)", "netio3-tcp-latency", "raw-tcp",
       "latency", kSmall, "one_way_median_us", 1.15, false},
      {"64 B buffered, libfabric/tcp vs fi_msg_bw-style one message per send", "netio3-libfabric-tcp-buffered",
       "libfabric-msg-bw", "throughput", kSmall, "messages_per_s", 5.0, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (TCP copy)", "netio3-tcp-copy-1000conn",
       "netio3-tcp-copy-unsafe", "throughput", kSmall, "messages_per_s", 0.8, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (TCP copy, SAFE)", "netio3-tcp-copy-safe-1000conn",
       "netio3-tcp-copy-safe", "throughput", kSmall, "messages_per_s", 0.8, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (libfabric/tcp copy)", "netio3-libfabric-tcp-copy-1000conn",
       "netio3-libfabric-tcp-copy", "throughput", kSmall, "messages_per_s", 0.8, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (libfabric/tcp copy, SAFE)",
       "netio3-libfabric-tcp-copy-safe-1000conn", "netio3-libfabric-tcp-copy-safe", "throughput", kSmall,
       "messages_per_s", 0.8, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (libfabric/tcp buffered)",
       "netio3-libfabric-tcp-buffered-1000conn", "netio3-libfabric-tcp-buffered", "throughput", kSmall,
       "messages_per_s", 0.8, true},
      {"64 B, 1,000 connections aggregate vs 1 connection (libfabric/tcp buffered, SAFE)",
       "netio3-libfabric-tcp-buffered-safe-1000conn", "netio3-libfabric-tcp-buffered-safe", "throughput", kSmall,
       "messages_per_s", 0.8, true},
  };
}

/// Pairs shown in the ratio table: which netio3 configuration is compared with which peer.
struct Comparison {
  std::string label;
  std::string netio3;
  std::string peer;
  std::string test;
  std::string field;
};

std::vector<Comparison> comparisons() {
  return {
      {"TCP copy (loop thread) / ZeroMQ PUSH/PULL, msg/s", "netio3-tcp-copy-unsafe", "zeromq-push-pull", "throughput",
       "messages_per_s"},
      {"TCP copy (app thread) / ZeroMQ PUSH/PULL, msg/s", "netio3-tcp-copy-safe", "zeromq-push-pull", "throughput",
       "messages_per_s"},
      {"TCP copy / raw TCP (one send per message), msg/s", "netio3-tcp-copy-unsafe", "raw-tcp", "throughput",
       "messages_per_s"},
      {"TCP zero-copy / iperf3, MB/s", "netio3-tcp-zerocopy", "iperf3", "throughput", "mb_per_s"},
      {"libfabric/tcp zero-copy / iperf3, MB/s", "netio3-libfabric-tcp-zerocopy", "iperf3", "throughput", "mb_per_s"},
      {"libfabric/tcp buffered / fi_msg_bw-style, msg/s", "netio3-libfabric-tcp-buffered", "libfabric-msg-bw",
       "throughput", "messages_per_s"},
      {"libfabric/tcp zero-copy / fi_msg_bw-style, msg/s", "netio3-libfabric-tcp-zerocopy", "libfabric-msg-bw",
       "throughput", "messages_per_s"},
      {"TCP latency / raw TCP ping-pong, one-way median (lower is better)", "netio3-tcp-latency", "raw-tcp", "latency",
       "one_way_median_us"},
      {"TCP latency / ZeroMQ REQ/REP, one-way median (lower is better)", "netio3-tcp-latency", "zeromq-req-rep",
       "latency", "one_way_median_us"},
      {"libfabric/tcp latency / fi_pingpong (mean), one-way (lower is better)", "netio3-libfabric-tcp-latency",
       "fi_pingpong", "latency", "one_way_median_us"},
  };
}

// ---------------------------------------------------------------------------------------------
// connection set-up (netio3-churn --json, test "setup", size 0)

/// The rows of the set-up table: which system measured which backend.
struct SetupRow {
  std::string system;
  std::string what;
};

std::vector<SetupRow> setup_rows() {
  return {
      {"netio3-tcp-setup", "TCP backend (asyncmsg)"},
      {"netio3-libfabric-tcp-setup", "libfabric backend, `tcp` provider"},
  };
}

std::string whole_number(const std::optional<double>& value) {
  return value ? std::to_string(std::llround(*value)) : std::string("–");
}

/// The set-up table as Markdown (empty when no set-up measurement ran).
std::string setup_section(const Summary& summary) {
  std::ostringstream rows;
  for (const SetupRow& row : setup_rows()) {
    const auto per_s = summary.get(row.system, "setup", 0, "connections_per_s");
    if (!per_s) {
      continue;
    }
    const auto get = [&](const char* field) { return summary.get(row.system, "setup", 0, field); };
    rows << "| " << row.system << " | " << row.what << " | " << rate(*per_s) << " | "
         << (get("setup_mean_us") ? number(*get("setup_mean_us")) : std::string("–")) << " | "
         << whole_number(get("fds_start")) << " → " << whole_number(get("fds_end")) << " | "
         << whole_number(get("rss_kib_start")) << " → " << whole_number(get("rss_kib_end")) << " |\n";
  }
  if (rows.str().empty()) {
    return {};
  }
  return "\n## Connection set-up (open to established), connections/s, medians\n\n"
         "netio3-churn: one process opens a send endpoint to one listener, waits until both ends report it "
         "established, closes it, waits for the close at both ends, and repeats; the rate is connections per second "
         "of the time from `open_send_endpoint` to the sender's established callback. Open file descriptors and "
         "resident set of the process before the first cycle and after the last.\n\n"
         "| system | backend | connections/s | mean set-up, µs | fds start → end | RSS KiB start → end |\n"
         "|---|---|---:|---:|---:|---:|\n" +
         rows.str();
}

// ---------------------------------------------------------------------------------------------
// publish/subscribe (bench/compare's pub/sub block; all at 64 B)

constexpr std::size_t kPubSubSize = 64;

bool is_pubsub(const std::string& test) {
  return test.rfind("pubsub", 0) == 0;
}

/// The rows of the pub/sub table, in order: what each system is.
struct PubSubRow {
  std::string system;
  std::string test;
  std::string what;
};

std::vector<PubSubRow> pubsub_rows() {
  return {
      {"netio3-pubsub-unsafe", "pubsub", "NetioPublisher BUFFERED, 1 tag, 1 subscriber, publish from the loop thread"},
      {"netio3-pubsub-safe", "pubsub", "the same, publish from an application thread (SAFE)"},
      {"netio3-pubsub-10000tags", "pubsub", "10,000 tags round-robin, 1 subscriber, loop thread"},
      {"netio3-pubsub-16subs", "pubsub", "1 tag, 16 subscribers (aggregate delivered), loop thread"},
      {"netio3-tcp-buffered", "throughput", "the backend alone: get_buffer/send_buffer, loop thread"},
      {"netio3-tcp-buffered-safe", "throughput", "the backend alone: get_buffer/send_buffer, application thread"},
      {"zeromq-pub-sub", "pubsub", "ZeroMQ XPUB/SUB, 1 topic, 1 subscriber"},
      {"zeromq-pub-sub-10000tags", "pubsub", "ZeroMQ, 10,000 topics round-robin, 1 subscriber"},
      {"zeromq-pub-sub-16subs", "pubsub", "ZeroMQ, 1 topic, 16 subscribers (aggregate delivered)"},
  };
}

/// A pub/sub goal: a ratio of two medians (msg/s at 64 B) and its lower bound.
struct PubSubGoal {
  std::string name;
  std::string numerator_system;
  std::string numerator_test;
  std::string denominator_system;
  std::string denominator_test;
  double bound;
};

std::vector<PubSubGoal> pubsub_goals() {
  return {
      {"pub/sub 64 B BUFFERED, 1 tag, 1 subscriber, loop thread vs ZeroMQ PUB/SUB", "netio3-pubsub-unsafe", "pubsub",
       "zeromq-pub-sub", "pubsub", 5.0},
      {"pub/sub 64 B BUFFERED, application thread (SAFE) vs ZeroMQ PUB/SUB", "netio3-pubsub-safe", "pubsub",
       "zeromq-pub-sub", "pubsub", 5.0},
      {"pub/sub 64 B BUFFERED, loop thread vs the backend's own buffered sends (loop thread)", "netio3-pubsub-unsafe",
       "pubsub", "netio3-tcp-buffered", "throughput", 0.8},
      {"pub/sub 64 B BUFFERED, application thread vs the backend's own buffered sends (application thread)",
       "netio3-pubsub-safe", "pubsub", "netio3-tcp-buffered-safe", "throughput", 0.8},
      {"pub/sub 10,000 tags vs 1 tag (1 subscriber, loop thread)", "netio3-pubsub-10000tags", "pubsub",
       "netio3-pubsub-unsafe", "pubsub", 0.8},
      {"pub/sub 16 subscribers, aggregate delivered vs 1 subscriber (1 tag, loop thread)", "netio3-pubsub-16subs",
       "pubsub", "netio3-pubsub-unsafe", "pubsub", 0.8},
  };
}

constexpr double kPubSubLatencyP99BoundUs = 300.0;

std::string optional_number(const std::optional<double>& value, int digits = 3) {
  return value ? number(*value, digits) : std::string("–");
}

/// The pub/sub tables and goals as Markdown; prints the goals and appends them to `goal_results`.
std::string pubsub_section(const Summary& summary, json& goal_results) {
  std::ostringstream md;
  md << "## Publish/subscribe (64 B payload; median over rounds)\n\n"
     << "Delivered messages per second at the subscribers (summed over them), MB/s of payload, heap allocations per "
        "message after warm-up in the publisher (publish) and in the subscriber (delivery).\n\n"
     << "| system | what | delivered msg/s | MB/s | alloc/msg publish | alloc/msg delivery |\n"
     << "|---|---|---:|---:|---:|---:|\n";
  for (const PubSubRow& row : pubsub_rows()) {
    const auto rate_value = summary.get(row.system, row.test, kPubSubSize, "messages_per_s");
    const auto failed = summary.failures.find(Key{row.system, row.test, kPubSubSize});
    if (!rate_value && failed == summary.failures.end()) {
      continue;
    }
    md << "| " << row.system << " | " << row.what << " | "
       << (rate_value ? rate(*rate_value) + " msg/s" : std::string("lost messages")) << " | "
       << optional_number(summary.get(row.system, row.test, kPubSubSize, "mb_per_s")) << " | "
       << optional_number(summary.get(row.system, row.test, kPubSubSize, "sender_allocations_per_message"), 4) << " | "
       << optional_number(summary.get(row.system, row.test, kPubSubSize, "receiver_allocations_per_message"), 4)
       << " |\n";
  }
  const auto median_us = summary.get("netio3-pubsub-latency", "pubsub-latency", kPubSubSize, "one_way_median_us");
  const auto p99_us = summary.get("netio3-pubsub-latency", "pubsub-latency", kPubSubSize, "one_way_p99_us");
  const auto p999_us = summary.get("netio3-pubsub-latency", "pubsub-latency", kPubSubSize, "one_way_p999_us");
  if (median_us) {
    md << "\nA lone message (one every 500 µs) with `flush_interval` 100 µs, BUFFERED, from `publish()` to the "
          "subscriber's `on_data_cb` (publisher and subscriber processes on this host, one clock): median "
       << number(*median_us) << " µs, p99 " << optional_number(p99_us) << " µs, p99.9 " << optional_number(p999_us)
       << " µs (medians over rounds).\n";
  }

  md << "\n### Pub/sub goals\n\n| goal | value | target | result |\n|---|---:|---:|:---:|\n";
  std::cout << "\nPub/sub goals (medians over rounds, 64 B):\n";
  const auto note = [&](const std::string& name, const std::string& value, const std::string& target,
                        const std::string& verdict, json entry) {
    entry["goal"] = name;
    entry["target"] = target;
    entry["result"] = verdict;
    goal_results.push_back(entry);
    md << "| " << name << " | " << value << " | " << target << " | " << verdict << " |\n";
    std::cout << "  " << verdict << "  " << value << " (target " << target << ")  " << name << '\n';
  };
  for (const PubSubGoal& goal : pubsub_goals()) {
    const auto ours = summary.get(goal.numerator_system, goal.numerator_test, kPubSubSize, "messages_per_s");
    const auto theirs = summary.get(goal.denominator_system, goal.denominator_test, kPubSubSize, "messages_per_s");
    json entry = json::object();
    std::string verdict = "NOT RUN";
    std::string value = "n/a";
    if (ours && theirs && *theirs > 0.0) {
      const double ratio = *ours / *theirs;
      verdict = ratio >= goal.bound ? "PASS" : "MISS";
      value = number(ratio) + "×";
      entry = json{{"ratio", ratio}, {"netio3", *ours}, {"peer", *theirs}};
    }
    note(goal.name, value, ">= " + number(goal.bound) + "×", verdict, entry);
  }
  {
    json entry = json::object();
    std::string verdict = "NOT RUN";
    std::string value = "n/a";
    if (p99_us) {
      verdict = *p99_us <= kPubSubLatencyP99BoundUs ? "PASS" : "MISS";
      value = number(*p99_us) + " µs";
      entry = json{{"p99_us", *p99_us}};
    }
    note("pub/sub lone message, flush_interval 100 µs: p99 publish to delivery", value,
         "<= " + number(kPubSubLatencyP99BoundUs) + " µs", verdict, entry);
  }
  {
    // The largest median of any netio3 pub/sub run, publish and delivery apart.
    double worst[2] = {-1.0, -1.0};
    std::string where[2];
    const char* fields[2] = {"sender_allocations_per_message", "receiver_allocations_per_message"};
    for (const auto& [key, values] : summary.medians) {
      if (key.system.rfind("netio3", 0) != 0 || !is_pubsub(key.test)) {
        continue;
      }
      for (int side = 0; side < 2; ++side) {
        const auto found = values.find(fields[side]);
        if (found != values.end() && std::isfinite(found->second) && found->second > worst[side]) {
          worst[side] = found->second;
          where[side] = key.system;
        }
      }
    }
    constexpr double kAllocationBound = 0.01;
    json entry = json::object();
    std::string verdict = "NOT RUN";
    std::string value = "n/a";
    if (worst[0] >= 0.0 && worst[1] >= 0.0) {
      verdict = worst[0] < kAllocationBound && worst[1] < kAllocationBound ? "PASS" : "MISS";
      value = "publish " + number(worst[0], 4) + " (" + where[0] + "), delivery " + number(worst[1], 4) + " (" +
              where[1] + ")";
      entry = json{{"publish", worst[0]}, {"delivery", worst[1]}};
    }
    note("pub/sub: no heap allocation per message in publish and delivery (largest of any netio3 pub/sub run)", value,
         "< 0.01 /message", verdict, entry);
  }
  md << "\n![Pub/sub: messages delivered per second](pubsub.png)\n";
  return md.str();
}

void write_plots(const Summary& summary, const std::string& dir, bool with_main, bool with_pubsub) {
  std::ofstream gp(dir + "/plots.gp");
  gp << "# Generated by bench-report; run: gnuplot plots.gp (in this folder)\n";
  gp << "set terminal pngcairo size 1000,650 noenhanced font ',10'\n";
  gp << "set logscale x 2\nset logscale y 10\nset grid\nset key outside right top\n";
  gp << "set xlabel 'message size (bytes)'\n";
  gp << "set xtics (";
  bool first = true;
  for (const std::size_t size : summary.sizes) {
    gp << (first ? "" : ", ") << '"' << size_label(size) << "\" " << size;
    first = false;
  }
  gp << ")\n";
  struct Plot {
    std::string file;
    std::string test;
    std::string field;
    std::string ylabel;
    std::string title;
  };
  const std::vector<Plot> plots{
      {"throughput.png", "throughput", "mb_per_s", "MB/s (receiver side, median)", "Throughput vs message size"},
      {"message-rate.png", "throughput", "messages_per_s", "messages/s (receiver side, median)",
       "Message rate vs message size"},
      {"latency.png", "latency", "one_way_median_us", "one-way latency, µs (median; half the round trip)",
       "Latency vs message size"},
  };
  int block = 0;
  for (const Plot& plot : plots) {
    if (!with_main) {
      break; // the size sweep did not run
    }
    std::vector<std::pair<std::string, std::string>> series; // block name, title
    for (const std::string& system : summary.system_order) {
      std::ostringstream data;
      std::size_t points = 0;
      for (const std::size_t size : summary.sizes) {
        if (const auto value = summary.get(system, plot.test, size, plot.field)) {
          data << size << ' ' << *value << '\n';
          ++points;
        }
      }
      if (points == 0) {
        continue;
      }
      const std::string name = "$d" + std::to_string(block++);
      gp << name << " << EOD\n" << data.str() << "EOD\n";
      series.emplace_back(name, system);
    }
    if (series.empty()) {
      continue;
    }
    gp << "set output '" << plot.file << "'\nset title '" << plot.title << "'\nset ylabel '" << plot.ylabel
       << "'\nplot ";
    for (std::size_t i = 0; i < series.size(); ++i) {
      // netio3 solid and thick, peers dashed: told apart even where colours repeat.
      const bool ours = series[i].second.rfind("netio3", 0) == 0;
      gp << (i == 0 ? "" : ", \\\n     ") << series[i].first << " using 1:2 with linespoints lw "
         << (ours ? "2.5 dt 1" : "1.5 dt 2") << " title '" << series[i].second << "'";
    }
    gp << "\n";
  }
  if (!with_pubsub) {
    return;
  }
  std::ostringstream bars;
  std::size_t count = 0;
  for (const PubSubRow& row : pubsub_rows()) {
    if (const auto value = summary.get(row.system, row.test, kPubSubSize, "messages_per_s")) {
      bars << '"' << row.system << "\" " << *value / 1e6 << '\n';
      ++count;
    }
  }
  if (count == 0) {
    return;
  }
  gp << "$pubsub << EOD\n" << bars.str() << "EOD\n";
  gp << "unset logscale\nunset xtics\nset xtics rotate by -35 nomirror\nset xlabel ''\nset yrange [0:*]\n"
     << "set style fill solid 0.6 border -1\nset boxwidth 0.6\nset key off\nset bmargin 9\n"
     << "set output 'pubsub.png'\nset title 'Publish/subscribe, 64 B payload: messages delivered per second (median)'\n"
     << "set ylabel 'million messages/s delivered (summed over subscribers)'\n"
     << "plot $pubsub using 0:2:xtic(1) with boxes\n";
}

int summarize(const std::string& in_path, const std::string& dir, const std::string& machine_path, bool with_main,
              bool with_pubsub) {
  Summary summary;
  try {
    summary = summarize_lines(in_path);
  } catch (const std::exception& error) {
    std::cerr << "bench-report summarize: " << error.what() << '\n';
    return 1;
  }
  json machine = json::object();
  if (!machine_path.empty()) {
    std::ifstream in(machine_path);
    if (in) {
      machine = json::parse(in, nullptr, false);
    }
  }

  std::ostringstream md;
  json ratios = json::array();
  json goal_results = json::array();
  if (with_main) {
    md << "## Throughput (receiver side; median over rounds: messages/s, MB/s)\n\n| system |";
    for (const std::size_t size : summary.sizes) {
      md << ' ' << size_label(size) << " |";
    }
    md << "\n|---|";
    for (std::size_t i = 0; i < summary.sizes.size(); ++i) {
      md << "---:|";
    }
    md << '\n';
    for (const std::string& system : summary.system_order) {
      bool any = false;
      std::ostringstream row;
      row << "| " << system << " |";
      for (const std::size_t size : summary.sizes) {
        const auto rate_value = summary.get(system, "throughput", size, "messages_per_s");
        const auto mb = summary.get(system, "throughput", size, "mb_per_s");
        const auto failed = summary.failures.find(Key{system, "throughput", size});
        if (rate_value && mb) {
          row << ' ' << rate(*rate_value) << " msg/s, " << number(*mb) << " MB/s";
          any = true;
        } else if (failed != summary.failures.end()) {
          row << " lost messages";
          any = true;
        } else {
          row << " –";
        }
        row << " |";
      }
      if (any) {
        md << row.str() << '\n';
      }
    }

    md << "\n## Latency (one way = half the round trip; median over rounds of: median / p99 / p99.9, µs)\n\n| system |";
    for (const std::size_t size : summary.sizes) {
      md << ' ' << size_label(size) << " |";
    }
    md << "\n|---|";
    for (std::size_t i = 0; i < summary.sizes.size(); ++i) {
      md << "---:|";
    }
    md << '\n';
    for (const std::string& system : summary.system_order) {
      bool any = false;
      std::ostringstream row;
      row << "| " << system << " |";
      for (const std::size_t size : summary.sizes) {
        const auto median_us = summary.get(system, "latency", size, "one_way_median_us");
        if (median_us) {
          row << ' ' << number(*median_us);
          const auto p99 = summary.get(system, "latency", size, "one_way_p99_us");
          const auto p999 = summary.get(system, "latency", size, "one_way_p999_us");
          if (p99 && p999) {
            row << " / " << number(*p99) << " / " << number(*p999);
          }
          any = true;
        } else {
          row << " –";
        }
        row << " |";
      }
      if (any) {
        md << row.str() << '\n';
      }
    }

    md << setup_section(summary);

    md << "\n## Ratios netio3 / peer (medians)\n\n| comparison |";
    for (const std::size_t size : summary.sizes) {
      md << ' ' << size_label(size) << " |";
    }
    md << "\n|---|";
    for (std::size_t i = 0; i < summary.sizes.size(); ++i) {
      md << "---:|";
    }
    md << '\n';
    for (const Comparison& comparison : comparisons()) {
      std::ostringstream row;
      row << "| " << comparison.label << " |";
      bool any = false;
      for (const std::size_t size : summary.sizes) {
        const auto ours = summary.get(comparison.netio3, comparison.test, size, comparison.field);
        const auto theirs = summary.get(comparison.peer, comparison.test, size, comparison.field);
        if (ours && theirs && *theirs > 0.0) {
          const double ratio = *ours / *theirs;
          row << ' ' << number(ratio) << "× |";
          ratios.push_back(json{{"comparison", comparison.label}, {"size", size}, {"ratio", ratio}});
          any = true;
        } else {
          row << " – |";
        }
      }
      if (any) {
        md << row.str() << '\n';
      }
    }

    md << "\n## Goals\n\n| goal | ratio | target | result |\n|---|---:|---:|:---:|\n";
    std::cout << "\nGoals (medians over rounds):\n";
    for (const Goal& goal : goals()) {
      const auto ours = summary.get(goal.numerator_system, goal.test, goal.size, goal.field);
      const auto theirs = summary.get(goal.denominator_system, goal.test, goal.size, goal.field);
      std::string verdict = "NOT RUN";
      std::string ratio_text = "n/a";
      json entry{{"goal", goal.name}, {"target", (goal.at_least ? ">= " : "<= ") + number(goal.bound)}};
      if (ours && theirs && *theirs > 0.0) {
        const double ratio = *ours / *theirs;
        const bool pass = goal.at_least ? ratio >= goal.bound : ratio <= goal.bound;
        verdict = pass ? "PASS" : "MISS";
        ratio_text = number(ratio) + "×";
        entry["ratio"] = ratio;
        entry["netio3"] = *ours;
        entry["peer"] = *theirs;
      } else {
        entry["ratio"] = nullptr;
      }
      entry["result"] = verdict;
      goal_results.push_back(entry);
      md << "| " << goal.name << " | " << ratio_text << " | " << (goal.at_least ? "≥ " : "≤ ") << number(goal.bound)
         << "× | " << verdict << " |\n";
      std::cout << "  " << verdict << "  " << ratio_text << " (target " << (goal.at_least ? ">= " : "<= ")
                << number(goal.bound) << "x)  " << goal.name << '\n';
    }
    // Allocations: the largest median over every netio3 run, sender or receiver.
    double worst_allocations = -1.0;
    std::string worst_system;
    for (const auto& [key, fields] : summary.medians) {
      if (key.system.rfind("netio3", 0) != 0 || is_pubsub(key.test)) {
        continue; // pub/sub has goals of its own
      }
      const auto found = fields.find("allocations_per_message");
      if (found != fields.end() && std::isfinite(found->second) && found->second > worst_allocations) {
        worst_allocations = found->second;
        worst_system = key.system + " " + size_label(key.size);
      }
    }
    {
      constexpr double kAllocationBound = 0.01; // fewer than one per hundred messages: none per message
      json entry{{"goal", "No heap allocation per message in steady state (largest over every netio3 run)"},
                 {"target", "< 0.01 allocations/message"}};
      std::string verdict = "NOT RUN";
      std::string value_text = "n/a";
      if (worst_allocations >= 0.0) {
        verdict = worst_allocations < kAllocationBound ? "PASS" : "MISS";
        value_text = number(worst_allocations, 4) + " (" + worst_system + ")";
        entry["allocations_per_message"] = worst_allocations;
        entry["worst"] = worst_system;
      }
      entry["result"] = verdict;
      goal_results.push_back(entry);
      md << "| No heap allocation per message (largest allocations/message of any netio3 run, sender or receiver) | "
         << value_text << " | < 0.01 | " << verdict << " |\n";
      std::cout << "  " << verdict << "  " << value_text << " allocations/message (target < 0.01)  No heap allocation "
                << "per message in steady state\n";
    }
    // The set-up rates are no goal: printed for the record.
    for (const SetupRow& row : setup_rows()) {
      if (const auto per_s = summary.get(row.system, "setup", 0, "connections_per_s")) {
        std::cout << "  set-up (open to established), " << row.system << ": " << rate(*per_s)
                  << " connections/s (median; no goal)\n";
      }
    }
  }
  const std::string main_md = md.str();
  std::string pubsub_md;
  if (with_pubsub) {
    pubsub_md = pubsub_section(summary, goal_results);
    md << (main_md.empty() ? "" : "\n") << pubsub_md;
  }
  bool any_failures = false;
  for (const auto& [key, count] : summary.failures) {
    md << "\nWarning: " << key.system << " " << size_label(key.size) << ": " << count
       << " round(s) did not deliver every message.\n";
    any_failures = true;
  }
  if (any_failures) {
    std::cout << "  WARNING: some netio3 runs did not deliver every message (see results.md)\n";
  }

  json results{{"machine", machine}, {"goals", goal_results}, {"ratios", ratios}};
  json medians = json::array();
  for (const auto& [key, fields] : summary.medians) {
    json entry{{"system", key.system}, {"test", key.test}, {"size", key.size}, {"rounds", summary.rounds[key]}};
    for (const auto& [field, value] : fields) {
      entry[field] = std::isfinite(value) ? json(value) : json(nullptr);
    }
    medians.push_back(entry);
  }
  results["medians"] = medians;
  std::ofstream(dir + "/results.json") << results.dump(2) << '\n';
  std::ofstream(dir + "/results.md") << md.str();
  std::ofstream(dir + "/main.md") << main_md;
  std::ofstream(dir + "/pubsub.md") << pubsub_md;
  write_plots(summary, dir, with_main, with_pubsub);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench-report: normalizes measurements and summarizes them for bench/compare", "bench-report"};
  app.require_subcommand(1);
  std::string out_path;
  std::string in_path;
  std::string dir;
  std::string system;
  std::string machine;
  int round = 0;
  std::size_t size = 0;
  CLI::App* add_command = app.add_subcommand("add", "Append normalized measurement lines read from stdin");
  add_command->add_option("--out", out_path, "The measurements file (JSON lines)")->required();
  add_command->add_option("--round", round, "Round number")->required();
  add_command->add_option("--system", system, "System name to record (overrides the input's)");
  add_command->add_option("--size", size, "Message size (needed for iperf3 reports)");
  CLI::App* summarize_command = app.add_subcommand("summarize", "Medians, ratios, goals, tables and plot script");
  summarize_command->add_option("--in", in_path, "The measurements file")->required();
  summarize_command->add_option("--dir", dir, "Where results.json, results.md and plots.gp go")->required();
  summarize_command->add_option("--machine", machine, "A JSON file describing the machine (copied into results)");
  std::string sections{"main,pubsub"};
  summarize_command
      ->add_option("--sections", sections,
                   "What was measured: main (the size sweep), pubsub (the publish/subscribe block), or both")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (add_command->parsed()) {
    return add(out_path, round, system, size);
  }
  return summarize(in_path, dir, machine, sections.find("main") != std::string::npos,
                   sections.find("pubsub") != std::string::npos);
}
