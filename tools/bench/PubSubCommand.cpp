// `netio3-bench pubsub`: its command line, the run form (subscriber child processes on loopback),
// and the report (JSON in the shape of the other modes, or a table).

#include <algorithm>
#include <csignal>
#include <ctime>
#include <iostream>
#include <spawn.h>
#include <stdexcept>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "PubSub.hpp"
#include "Results.hpp"

extern char** environ;

namespace netio3::bench::pubsub {

namespace {

constexpr const char* kDescription =
    R"(Publish/subscribe through NetioPublisher and NetioSubscriber: messages delivered per second (summed
over the subscribers), MB/s of payload, and heap allocations per message while publishing and while
delivering, after warm-up. Each subscriber is a process of its own and subscribes to every tag; the
publisher publishes round-robin over the tags (message i goes to tag first-tag + i mod tags). A
message of size S is S bytes of payload at publish() (the tag travels besides it); the payload starts
with the benchmark's 16-byte header, which every subscriber checks (once, in order, per tag).

--test latency publishes one message every --latency-gap (alone in its buffer) and reports the one-way
time from the publish() call to the subscriber's on_data_cb: median, p99, p99.9. Both processes read
the same CLOCK_MONOTONIC, so this needs publisher and subscriber on one host (the run form).

Roles:
  --role run         (default) publish from this process, start --subscribers child processes on loopback
  --role publisher   publish only: --listen HOST:PORT, wait for --subscribers subscribers, print the results
  --role subscriber  subscribe only: --connect the publisher's HOST:PORT; its figures go to the publisher

Examples:
  netio3-bench pubsub --size 64 --duration 1
  netio3-bench pubsub --tags 10000 --size 64 --duration 1 --json
  netio3-bench pubsub --subscribers 16 --threads safe --size 64
  netio3-bench pubsub --method zerocopy --size 64k --messages 100000
  netio3-bench pubsub --test latency --flush-interval 100 --messages 2000
  netio3-bench pubsub --role publisher --listen 0.0.0.0:5556 --subscribers 2   and elsewhere, twice:
  netio3-bench pubsub --role subscriber --connect HOST:5556 --receive-size 64k)";

std::string method_name(SendMethod method) {
  switch (method) {
  case SendMethod::BUFFERED: return "buffered";
  case SendMethod::COPY: return "copy";
  case SendMethod::ZERO_COPY: return "zerocopy";
  }
  return "unknown";
}

std::string test_name(PubSubTest test) {
  return test == PubSubTest::Latency ? "pubsub-latency" : "pubsub";
}

nlohmann::json optional_number(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

double per_second(double amount, double seconds) {
  return seconds > 0.0 ? amount / seconds : 0.0;
}

/// The subscribers' figures as one receiver: messages summed, over the longest subscriber's time.
struct Aggregate {
  std::uint64_t messages{0};
  std::uint64_t bytes{0};
  std::uint64_t expected{0};
  double seconds{0.0};
  std::uint64_t sequence_errors{0};
  std::uint64_t protocol_errors{0};
  std::optional<double> allocations_per_message; ///< The largest of any subscriber.
};

Aggregate aggregate(const PubSubResult& result) {
  Aggregate total;
  for (const SubscriberFigures& figures : result.subscribers) {
    total.messages += figures.messages;
    total.bytes += figures.bytes;
    total.expected += figures.expected;
    total.seconds = std::max(total.seconds, figures.seconds);
    total.sequence_errors += figures.sequence_errors;
    total.protocol_errors += figures.protocol_errors;
    if (figures.allocations_per_message) {
      total.allocations_per_message =
          std::max(total.allocations_per_message.value_or(0.0), *figures.allocations_per_message);
    }
  }
  return total;
}

/// The subscriber with the largest median latency (the figures a user would see at worst).
const SubscriberFigures* slowest(const PubSubResult& result) {
  const SubscriberFigures* worst = nullptr;
  for (const SubscriberFigures& figures : result.subscribers) {
    if (worst == nullptr || figures.latency_p99_us > worst->latency_p99_us) {
      worst = &figures;
    }
  }
  return worst;
}

nlohmann::json result_json(const PubSubOptions& options, const PubSubResult& result) {
  const Aggregate total = aggregate(result);
  nlohmann::json subscribers = nlohmann::json::array();
  for (const SubscriberFigures& figures : result.subscribers) {
    subscribers.push_back(to_json(figures));
  }
  const std::string error = !result.error.empty() ? result.error : [&] {
    for (const SubscriberFigures& figures : result.subscribers) {
      if (!figures.error.empty()) {
        return figures.error;
      }
    }
    return std::string();
  }();
  nlohmann::json json{
      {"size", result.size},
      {"test", test_name(options.test)},
      {"mode", method_name(options.method)},
      {"tags", options.tags},
      {"subscribers", options.subscribers},
      {"connections", options.subscribers},
      {"all_arrived", result.all_arrived()},
      {"error", error.empty() ? nlohmann::json(nullptr) : nlohmann::json(error)},
      {"sender",
       {
           {"messages", result.publisher.messages},
           {"bytes", result.publisher.messages * result.size},
           {"seconds", result.publisher.seconds},
           {"messages_per_s", per_second(static_cast<double>(result.publisher.messages), result.publisher.seconds)},
           {"mb_per_s",
            per_second(static_cast<double>(result.publisher.messages * result.size), result.publisher.seconds) / 1e6},
           {"no_resources", result.publisher.no_resources},
           {"completions", result.publisher.completions},
           {"allocations_per_message", optional_number(result.publisher.allocations_per_message)},
       }},
      {"receiver",
       {
           {"messages", total.messages},
           {"bytes", total.bytes},
           {"expected", total.expected},
           {"seconds", total.seconds},
           {"messages_per_s", per_second(static_cast<double>(total.messages), total.seconds)},
           {"mb_per_s", per_second(static_cast<double>(total.bytes), total.seconds) / 1e6},
           {"sequence_errors", total.sequence_errors},
           {"protocol_errors", total.protocol_errors},
           {"allocations_per_message", optional_number(total.allocations_per_message)},
       }},
      {"per_subscriber", subscribers},
  };
  const SubscriberFigures* worst = slowest(result);
  if (options.test == PubSubTest::Latency && worst != nullptr) {
    json["latency"] = {
        {"what", "one way, publish() to on_data_cb, publisher and subscriber processes on one host (CLOCK_MONOTONIC); "
                 "the subscriber with the largest p99"},
        {"samples", worst->latency_samples},
        {"one_way_median_us", worst->latency_median_us},
        {"one_way_p99_us", worst->latency_p99_us},
        {"one_way_p999_us", worst->latency_p999_us},
        {"one_way_min_us", worst->latency_min_us},
        {"one_way_max_us", worst->latency_max_us},
    };
  } else {
    json["latency"] = nullptr;
  }
  return json;
}

nlohmann::json report_json(const PubSubOptions& options, const std::vector<PubSubResult>& results) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char date[32];
  std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &utc);
  nlohmann::json runs = nlohmann::json::array();
  bool all_arrived = !results.empty();
  for (const PubSubResult& result : results) {
    runs.push_back(result_json(options, result));
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
           {"test", test_name(options.test)},
           {"mode", method_name(options.method)},
           {"tags", options.tags},
           {"first_tag", options.first_tag},
           {"subscribers", options.subscribers},
           {"connections", options.subscribers},
           {"messages", options.messages ? nlohmann::json(*options.messages) : nlohmann::json(nullptr)},
           {"duration_s", options.messages ? nlohmann::json(nullptr) : nlohmann::json(options.duration_s)},
           {"buffer_size", options.buffer_size},
           {"buffers", options.buffers},
           {"flush_interval_us", options.flush_interval.count()},
           {"latency_gap_us", options.test == PubSubTest::Latency ? nlohmann::json(options.latency_gap.count())
                                                                  : nlohmann::json(nullptr)},
       }},
      {"all_arrived", all_arrived},
      {"results", runs},
  };
}

std::string allocations_text(const std::optional<double>& value) {
  return value ? fmt::format("{:.3f}", *value) : std::string("n/a");
}

void print_table(std::ostream& out, const PubSubOptions& options, const std::vector<PubSubResult>& results) {
  const std::string backend = options.backend.backend == NetworkType::LIBFABRIC
                                  ? fmt::format("libfabric/{}", options.backend.provider)
                                  : std::string("asyncmsg (TCP)");
  out << fmt::format("netio3-bench pubsub {}: {}, {}, {}, {} tag{}, {} subscriber{} (separate processes), flush "
                     "interval {} us\n",
                     options.test == PubSubTest::Latency ? "latency" : "throughput", backend,
                     method_name(options.method),
                     options.backend.threads == ThreadSafetyModel::SAFE ? "SAFE, publishes from an application thread"
                                                                        : "UNSAFE, publishes from the loop thread",
                     options.tags, options.tags == 1 ? "" : "s", options.subscribers,
                     options.subscribers == 1 ? "" : "s", options.flush_interval.count());
  if (options.test == PubSubTest::Throughput) {
    out << fmt::format("{:>9} {:>11} {:>12} {:>10} {:>11} {:>11} {:>6}\n", "size", "published", "delivered/s", "MB/s",
                       "alloc/msg", "alloc/msg", "lost");
    out << fmt::format("{:>9} {:>11} {:>12} {:>10} {:>11} {:>11} {:>6}\n", "(payload)", "", "(all subs)", "(all subs)",
                       "(publish)", "(delivery)", "");
    for (const PubSubResult& result : results) {
      const Aggregate total = aggregate(result);
      const std::uint64_t wanted = result.publisher.messages * options.subscribers;
      out << fmt::format(
          "{:>9} {:>11} {:>10.2f} M {:>10.1f} {:>11} {:>11} {:>6}{}\n", format_size(result.size),
          result.publisher.messages, per_second(static_cast<double>(total.messages), total.seconds) / 1e6,
          per_second(static_cast<double>(total.bytes), total.seconds) / 1e6,
          allocations_text(result.publisher.allocations_per_message), allocations_text(total.allocations_per_message),
          wanted > total.messages ? wanted - total.messages : 0,
          result.error.empty() ? std::string() : "  error: " + result.error);
    }
    return;
  }
  out << "one way: publish() to on_data_cb, publisher and subscriber processes on this host (CLOCK_MONOTONIC); "
         "the subscriber with the largest p99\n";
  out << fmt::format("{:>9} {:>9} {:>11} {:>10} {:>10} {:>10} {:>11} {:>11}\n", "size", "samples", "median µs",
                     "p99 µs", "p99.9 µs", "max µs", "alloc/msg", "alloc/msg");
  out << fmt::format("{:>9} {:>9} {:>11} {:>10} {:>10} {:>10} {:>11} {:>11}\n", "(payload)", "", "", "", "", "",
                     "(publish)", "(delivery)");
  for (const PubSubResult& result : results) {
    const SubscriberFigures worst = slowest(result) != nullptr ? *slowest(result) : SubscriberFigures{};
    out << fmt::format("{:>9} {:>9} {:>11.1f} {:>10.1f} {:>10.1f} {:>10.1f} {:>11} {:>11}{}\n",
                       format_size(result.size), worst.latency_samples, worst.latency_median_us, worst.latency_p99_us,
                       worst.latency_p999_us, worst.latency_max_us,
                       allocations_text(result.publisher.allocations_per_message),
                       allocations_text(aggregate(result).allocations_per_message),
                       result.error.empty() ? std::string() : "  error: " + result.error);
  }
}

int print_results(const PubSubOptions& options, const std::vector<PubSubResult>& results) {
  if (options.json) {
    std::cout << report_json(options, results).dump(2) << std::endl;
  } else {
    print_table(std::cout, options, results);
  }
  bool ok = !results.empty();
  for (const PubSubResult& result : results) {
    if (!result.all_arrived()) {
      ok = false;
      if (!options.json) {
        const Aggregate total = aggregate(result);
        std::cerr << fmt::format("netio3-bench pubsub: {} run: {}\n", format_size(result.size),
                                 !result.error.empty()
                                     ? result.error
                                     : fmt::format("{} published to {} subscriber(s), {} delivered, {} out of sequence",
                                                   result.publisher.messages, options.subscribers, total.messages,
                                                   total.sequence_errors));
      }
    }
  }
  return ok ? 0 : 1;
}

/// The subscriber child processes of the run form.
class Children {
public:
  Children() = default;
  Children(const Children&) = delete;
  Children& operator=(const Children&) = delete;
  Children(Children&&) = delete;
  Children& operator=(Children&&) = delete;
  ~Children() {
    for (const pid_t pid : m_pids) {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  }

  void start(const std::vector<std::string>& arguments) {
    std::vector<char*> argv;
    for (const std::string& argument : arguments) {
      argv.push_back(const_cast<char*>(argument.c_str())); // NOLINT(cppcoreguidelines-pro-type-const-cast)
    }
    argv.push_back(nullptr);
    char self[4096] = {};
    const ssize_t length = readlink("/proc/self/exe", self, sizeof(self) - 1);
    pid_t pid = -1;
    const int error = posix_spawn(&pid, length > 0 ? self : "/proc/self/exe", nullptr, nullptr, argv.data(), environ);
    if (error != 0) {
      throw std::runtime_error(std::string("starting a subscriber process failed: ") + std::strerror(error));
    }
    m_pids.push_back(pid);
  }

  /// Throws when a child has ended (before its time: the publisher still waits for it).
  void check() {
    for (pid_t& pid : m_pids) {
      int status = 0;
      if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        throw std::runtime_error(fmt::format("a subscriber process ended early with {} (see its message above)",
                                             WIFEXITED(status) ? "status " + std::to_string(WEXITSTATUS(status))
                                                               : "signal " + std::to_string(WTERMSIG(status))));
      }
    }
  }

  /// Waits for every child to exit (they do after their last report); returns how many failed.
  std::size_t wait_all(std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::size_t failed = 0;
    for (pid_t& pid : m_pids) {
      while (pid > 0) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
          failed += WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
          pid = -1;
        } else if (std::chrono::steady_clock::now() > deadline) {
          kill(pid, SIGKILL);
          waitpid(pid, nullptr, 0);
          pid = -1;
          ++failed;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds{5});
        }
      }
    }
    return failed;
  }

private:
  std::vector<pid_t> m_pids;
};

} // namespace

nlohmann::json to_json(const SubscriberFigures& figures) {
  return nlohmann::json{
      {"run_id", figures.run_id},
      {"messages", figures.messages},
      {"bytes", figures.bytes},
      {"expected", figures.expected},
      {"seconds", figures.seconds},
      {"messages_per_s", per_second(static_cast<double>(figures.messages), figures.seconds)},
      {"mb_per_s", per_second(static_cast<double>(figures.bytes), figures.seconds) / 1e6},
      {"sequence_errors", figures.sequence_errors},
      {"protocol_errors", figures.protocol_errors},
      {"allocations_per_message", optional_number(figures.allocations_per_message)},
      {"latency_samples", figures.latency_samples},
      {"one_way_median_us", figures.latency_median_us},
      {"one_way_p99_us", figures.latency_p99_us},
      {"one_way_p999_us", figures.latency_p999_us},
      {"one_way_min_us", figures.latency_min_us},
      {"one_way_max_us", figures.latency_max_us},
      {"error", figures.error.empty() ? nlohmann::json(nullptr) : nlohmann::json(figures.error)},
  };
}

SubscriberFigures subscriber_figures_from_json(const nlohmann::json& json) {
  SubscriberFigures figures;
  figures.run_id = json.at("run_id").get<std::uint32_t>();
  figures.messages = json.at("messages").get<std::uint64_t>();
  figures.bytes = json.at("bytes").get<std::uint64_t>();
  figures.expected = json.at("expected").get<std::uint64_t>();
  figures.seconds = json.at("seconds").get<double>();
  figures.sequence_errors = json.at("sequence_errors").get<std::uint64_t>();
  figures.protocol_errors = json.at("protocol_errors").get<std::uint64_t>();
  if (const auto& allocations = json.at("allocations_per_message"); !allocations.is_null()) {
    figures.allocations_per_message = allocations.get<double>();
  }
  figures.latency_samples = json.at("latency_samples").get<std::uint64_t>();
  figures.latency_median_us = json.at("one_way_median_us").get<double>();
  figures.latency_p99_us = json.at("one_way_p99_us").get<double>();
  figures.latency_p999_us = json.at("one_way_p999_us").get<double>();
  figures.latency_min_us = json.at("one_way_min_us").get<double>();
  figures.latency_max_us = json.at("one_way_max_us").get<double>();
  if (const auto& error = json.at("error"); !error.is_null()) {
    figures.error = error.get<std::string>();
  }
  return figures;
}

bool PubSubResult::all_arrived() const {
  if (!error.empty() || subscribers.empty() || publisher.messages == 0) {
    return false;
  }
  return std::all_of(subscribers.begin(), subscribers.end(), [this](const SubscriberFigures& figures) {
    return figures.error.empty() && figures.messages == publisher.messages && figures.expected == publisher.messages &&
           figures.sequence_errors == 0 && figures.protocol_errors == 0;
  });
}

std::pair<std::string, std::uint16_t> split_address(const std::string& text, const char* what, bool allow_port_zero) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) {
    throw std::invalid_argument(std::string(what) + " wants HOST:PORT, got '" + text + "'");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long port = 0;
  try {
    port = std::stoul(text.substr(colon + 1));
  } catch (const std::exception&) {
    throw std::invalid_argument(std::string(what) + ": no port number in '" + text + "'");
  }
  if ((port == 0 && !allow_port_zero) || port > 65535) {
    throw std::invalid_argument(std::string(what) + ": bad port in '" + text + "'");
  }
  return {host, static_cast<std::uint16_t>(port)};
}

CLI::App* PubSubCommand::add_to(CLI::App& app) {
  Arguments& arguments = m_arguments;
  m_app = app.add_subcommand("pubsub", "Publish/subscribe: NetioPublisher to NetioSubscriber processes");
  CLI::App& command = *m_app;
  command.description(kDescription);
  command
      .add_option("--role", arguments.role,
                  "run: publish here and start the subscribers as child processes; publisher or subscriber: one "
                  "side only. Example: --role publisher")
      ->check(CLI::IsMember({"run", "publisher", "subscriber"}))
      ->capture_default_str();
  command.add_option("--backend", arguments.backend, "asyncmsg or libfabric. Example: --backend libfabric")
      ->check(CLI::IsMember({"asyncmsg", "libfabric"}))
      ->capture_default_str();
  command
      .add_option("--provider", arguments.provider,
                  "libfabric provider: tcp, sockets or verbs. Example: --provider sockets")
      ->check(CLI::IsMember({"tcp", "sockets", "verbs"}))
      ->capture_default_str();
  command
      .add_option("--threads", arguments.threads,
                  "unsafe: publish from the event-loop thread (no locks); safe: from an application thread while "
                  "the loop runs in another. The subscribers use the same model. Example: --threads safe")
      ->check(CLI::IsMember({"safe", "unsafe"}))
      ->capture_default_str();
  command
      .add_option("--test", arguments.test,
                  "throughput: publish as fast as possible; latency: one lone message every --latency-gap. "
                  "Example: --test latency")
      ->check(CLI::IsMember({"throughput", "latency"}))
      ->capture_default_str();
  command
      .add_option("--method", arguments.method,
                  "NetioPublisherConfig::method: buffered (many messages per buffer), copy (one message per "
                  "buffer, sent at once) or zerocopy (from the caller's memory). Example: --method copy")
      ->check(CLI::IsMember({"buffered", "copy", "zerocopy"}))
      ->capture_default_str();
  auto* size = command.add_option("--size", arguments.size,
                                  "Payload bytes per message, at least 16 (24 for the latency test); k, m suffixes. "
                                  "Default 64. Example: --size 4k");
  auto* sizes =
      command.add_option("--sizes", arguments.sizes, "A sweep of sizes, one run each. Example: --sizes 64,4k");
  size->excludes(sizes);
  command
      .add_option("--tags", arguments.tags,
                  "Tags published round-robin; every subscriber subscribes to all. Example: --tags 10000")
      ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1000000}))
      ->capture_default_str();
  command
      .add_option("--first-tag", arguments.first_tag, "The first tag (the others follow it). Example: --first-tag 100")
      ->capture_default_str();
  command
      .add_option("--subscribers", arguments.subscribers,
                  "Subscriber processes (run) or subscribers to wait for (publisher). Example: --subscribers 16")
      ->check(CLI::Range(std::size_t{1}, std::size_t{256}))
      ->capture_default_str();
  auto* messages = command.add_option("--messages", arguments.messages,
                                      "Messages published per size (latency: lone messages; default 2000). Example: "
                                      "--messages 1000000");
  auto* duration = command.add_option("--duration", arguments.duration,
                                      "Seconds per size instead of a count (default 2). Example: --duration 1");
  messages->excludes(duration);
  command
      .add_option("--buffer-size", arguments.buffer_size,
                  "NetioPublisherConfig::buffersize (raised to size + 13 when smaller). Example: --buffer-size 16k")
      ->capture_default_str();
  command
      .add_option("--buffers", arguments.buffers,
                  "NetioPublisherConfig::nbuffers, per subscriber. Example: --buffers 16")
      ->check(CLI::Range(std::size_t{1}, std::size_t{65536}))
      ->capture_default_str();
  command
      .add_option("--flush-interval", arguments.flush_interval_us,
                  "NetioPublisherConfig::flush_interval in microseconds (0: only full buffers and flush()). "
                  "Example: --flush-interval 100")
      ->check(CLI::Range(std::int64_t{0}, std::int64_t{10000000}))
      ->capture_default_str();
  command
      .add_option("--latency-gap", arguments.latency_gap_us,
                  "Latency test: microseconds between two lone messages. Example: --latency-gap 1000")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{10000000}))
      ->capture_default_str();
  command
      .add_option("--warmup", arguments.warmup,
                  "Share of each run left out of the allocation counts and latency figures. Example: --warmup 0.2")
      ->check(CLI::Range(0.0, 0.9))
      ->capture_default_str();
  command
      .add_option("--max-unsent", arguments.max_unsent,
                  "NetioPublisherConfig::max_unsent_bytes (per subscriber). Example: --max-unsent 32m")
      ->capture_default_str();
  command
      .add_option("--listen", arguments.listen,
                  "Publisher: the subscription address HOST:PORT (port 0: any; the report port is on the same "
                  "host). Example: --listen 0.0.0.0:5556")
      ->capture_default_str();
  command
      .add_option("--report-port", arguments.report_port,
                  "Publisher: port for the subscribers' reports (0: any; they learn it from the hello). Example: "
                  "--report-port 5557")
      ->capture_default_str();
  command.add_option("--connect", arguments.connect,
                     "Subscriber: the publisher's HOST:PORT. Example: --connect 10.0.0.1:5556");
  command
      .add_option("--receive-size", arguments.receive_size,
                  "Subscriber: ConnectionParametersRecv::buf_size, at least the publisher's buffer size (run sets "
                  "it). Example: --receive-size 1m")
      ->capture_default_str();
  command
      .add_option("--receive-buffers", arguments.receive_buffers,
                  "Subscriber: ConnectionParametersRecv::num_buf. Example: --receive-buffers 16")
      ->check(CLI::Range(std::size_t{1}, std::size_t{4096}))
      ->capture_default_str();
  command.add_flag("--json", arguments.json, "One JSON document on stdout instead of the table. Example: --json");
  command.add_flag("--quiet,-q", arguments.quiet, "No start-up notes on stderr. Example: --quiet");
  command.footer("Exit status: 0 when every subscriber got every message once and in order, 1 otherwise, 2 on errors.");
  return m_app;
}

PubSubOptions PubSubCommand::options() const {
  const Arguments& arguments = m_arguments;
  PubSubOptions options;
  options.role = arguments.role == "publisher"    ? Role::Publisher
                 : arguments.role == "subscriber" ? Role::Subscriber
                                                  : Role::Run;
  options.backend.backend = arguments.backend == "libfabric" ? NetworkType::LIBFABRIC : NetworkType::ASYNCMSG;
  options.backend.provider = arguments.provider;
  options.backend.threads = arguments.threads == "safe" ? ThreadSafetyModel::SAFE : ThreadSafetyModel::UNSAFE;
  options.test = arguments.test == "latency" ? PubSubTest::Latency : PubSubTest::Throughput;
  options.method = arguments.method == "copy"       ? SendMethod::COPY
                   : arguments.method == "zerocopy" ? SendMethod::ZERO_COPY
                                                    : SendMethod::BUFFERED;
  if (!arguments.sizes.empty()) {
    options.sizes = parse_sizes(arguments.sizes);
  } else if (!arguments.size.empty()) {
    options.sizes = {parse_size(arguments.size)};
  }
  const std::size_t minimum = options.test == PubSubTest::Latency ? kMinLatencyPayload : kMinPayload;
  for (const std::size_t message_size : options.sizes) {
    if (message_size < minimum) {
      throw std::invalid_argument(fmt::format("message size {} is below the minimum of {} bytes (the benchmark's "
                                              "header{})",
                                              message_size, minimum,
                                              options.test == PubSubTest::Latency ? " and the publish time" : ""));
    }
    if (message_size > BufferFormatter::max_payload_size) {
      throw std::invalid_argument(fmt::format("message size {} is above the wire format's largest payload of {} bytes",
                                              message_size, BufferFormatter::max_payload_size));
    }
  }
  options.tags = arguments.tags;
  options.first_tag = arguments.first_tag;
  if (options.first_tag > UINT64_MAX - options.tags) {
    throw std::invalid_argument("--first-tag plus --tags overflows 64 bits");
  }
  options.subscribers = arguments.subscribers;
  if (arguments.messages != 0) {
    options.messages = arguments.messages;
  } else if (options.test == PubSubTest::Latency && arguments.duration <= 0.0) {
    options.messages = 2000;
  }
  if (arguments.duration > 0.0) {
    options.duration_s = arguments.duration;
  }
  options.buffer_size = parse_size(arguments.buffer_size);
  options.buffers = arguments.buffers;
  options.flush_interval = std::chrono::microseconds{arguments.flush_interval_us};
  options.latency_gap = std::chrono::microseconds{arguments.latency_gap_us};
  options.warmup_fraction = arguments.warmup;
  options.max_unsent_bytes = parse_size(arguments.max_unsent);
  std::tie(options.listen_host, options.listen_port) = split_address(arguments.listen, "--listen", true);
  options.report_port = arguments.report_port;
  if (options.role == Role::Subscriber) {
    if (arguments.connect.empty()) {
      throw std::invalid_argument("--role subscriber needs --connect HOST:PORT (the publisher's)");
    }
    std::tie(options.connect_host, options.connect_port) = split_address(arguments.connect, "--connect", false);
  }
  options.receive_size = parse_size(arguments.receive_size);
  options.receive_buffers = arguments.receive_buffers;
  options.json = arguments.json;
  options.quiet = arguments.quiet;
  return options;
}

int PubSubCommand::run_both(PubSubOptions options) {
  std::size_t largest = 0;
  for (const std::size_t message_size : options.sizes) {
    largest = std::max(largest, message_size);
  }
  const std::size_t receive_size = std::max(options.buffer_size, largest + BufferFormatter::max_overhead);
  Children children;
  const auto start_children = [&](const std::string& host, std::uint16_t port) {
    const Arguments& arguments = m_arguments;
    for (std::size_t i = 0; i < options.subscribers; ++i) {
      children.start({"netio3-bench",
                      "pubsub",
                      "--role",
                      "subscriber",
                      "--connect",
                      (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port),
                      "--backend",
                      arguments.backend,
                      "--provider",
                      arguments.provider,
                      "--threads",
                      arguments.threads,
                      "--tags",
                      std::to_string(options.tags),
                      "--first-tag",
                      std::to_string(options.first_tag),
                      "--receive-size",
                      std::to_string(receive_size),
                      "--receive-buffers",
                      std::to_string(options.receive_buffers),
                      "--quiet"});
    }
  };
  std::vector<PubSubResult> results = run_publisher(options, start_children, [&] { children.check(); });
  const std::size_t failed = children.wait_all(std::chrono::seconds{30});
  const int status = print_results(options, results);
  if (failed != 0) {
    std::cerr << "netio3-bench pubsub: " << failed << " subscriber process(es) ended with an error\n";
    return 1;
  }
  return status;
}

int PubSubCommand::run() {
  try {
    PubSubOptions parsed = options();
    switch (parsed.role) {
    case Role::Subscriber: return run_subscriber(parsed);
    case Role::Publisher: {
      if (!parsed.quiet) {
        std::cerr << "netio3-bench pubsub: start " << parsed.subscribers
                  << " subscriber(s) with --role subscriber --connect pointing here\n";
      }
      const std::vector<PubSubResult> results = run_publisher(
          parsed, [](const std::string&, std::uint16_t) {}, [] {});
      return print_results(parsed, results);
    }
    case Role::Run: return run_both(parsed);
    }
  } catch (const std::exception& error) {
    std::cerr << "netio3-bench pubsub: " << error.what() << '\n';
  }
  return 2;
}

} // namespace netio3::bench::pubsub
