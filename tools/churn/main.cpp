// netio3-churn: connection churn against one listener. One process, two backends (a receiver with
// one listen endpoint and a sender), each on an event loop thread of its own; every cycle opens a
// send endpoint, waits for it to be established at both ends, closes it and waits for the close at
// both ends. Every --report-every cycles it prints the open file descriptors and the resident set
// of the process, so that a leak per connection shows as a growing column (docs/libfabric-backend.md,
// "Connection churn"). It also reports the connection set-up rate: connections per second of the
// time from open_send_endpoint to the sender's on_connection_established_cb.
//
//   netio3-churn [--backend libfabric|asyncmsg] [--provider tcp|verbs|sockets] [--address A]
//                [--cycles N] [--report-every K] [--timeout-ms T] [--json]
//
// --json prints only one JSON object line at the end instead of the table (bench/compare reads it):
// system, test "setup", size 0, connections_per_s, setup_mean_us, cycles, seconds, and fds_start,
// fds_end, rss_kib_start, rss_kib_end (before the first cycle and after the last).
//
// Exit status: 0 when every cycle completed; 1 when one failed (refused, or no event within the
// timeout: the message says which and in which cycle); 2 for bad arguments.

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <exception>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using namespace netio3;

/// The event loop on a thread of its own, for the lifetime of this object.
class LoopThread {
public:
  LoopThread() : m_loop{std::make_shared<EpollEventLoop>()}, m_thread{[this] { m_loop->run(); }} {
    while (!m_loop->is_running()) { // stop() before run() has started is not remembered
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  ~LoopThread() {
    m_loop->stop();
    m_thread.join();
  }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  LoopThread(LoopThread&&) = delete;
  LoopThread& operator=(LoopThread&&) = delete;

  [[nodiscard]] const std::shared_ptr<EpollEventLoop>& loop() const { return m_loop; }

private:
  std::shared_ptr<EpollEventLoop> m_loop;
  std::thread m_thread;
};

/// Connection events of one backend, counted; waits for a count with a deadline.
class Counts {
public:
  void established() { bump(m_established); }
  void closed() { bump(m_closed); }
  void refused() { bump(m_refused); }

  /// Waits until `established`/`closed` reach the given values or a refusal comes; false on timeout.
  bool wait(std::size_t established, std::size_t closed, std::chrono::milliseconds timeout) {
    std::unique_lock lock{m_mutex};
    return m_changed.wait_for(lock, timeout, [&] {
      return m_refused > 0 || (m_established >= established && m_closed >= closed);
    }) && m_refused == 0;
  }

  [[nodiscard]] std::string text() {
    const std::lock_guard lock{m_mutex};
    return "established " + std::to_string(m_established) + ", closed " + std::to_string(m_closed) + ", refused " +
           std::to_string(m_refused);
  }

private:
  void bump(std::size_t& counter) {
    {
      const std::lock_guard lock{m_mutex};
      ++counter;
    }
    m_changed.notify_all();
  }

  std::mutex m_mutex;
  std::condition_variable m_changed;
  std::size_t m_established{0};
  std::size_t m_closed{0};
  std::size_t m_refused{0};
};

/// Open file descriptors of this process (entries of /proc/self/fd, less the one reading it).
std::size_t open_descriptors() {
  DIR* directory = ::opendir("/proc/self/fd");
  if (directory == nullptr) {
    return 0;
  }
  std::size_t count = 0;
  while (const dirent* entry = ::readdir(directory)) {
    if (entry->d_name[0] != '.') {
      ++count;
    }
  }
  ::closedir(directory);
  return count - 1;
}

/// Resident set size of this process in KiB (VmRSS of /proc/self/status).
std::size_t resident_kib() {
  std::ifstream status{"/proc/self/status"};
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stoul(line.substr(6));
    }
  }
  return 0;
}

struct Options {
  NetworkType backend{NetworkType::LIBFABRIC};
  std::string provider{"tcp"};
  std::string address{"127.0.0.1"};
  std::size_t cycles{10000};
  std::size_t report_every{1000};
  std::chrono::milliseconds timeout{10000};
  bool json{false};
};

[[noreturn]] void usage(const std::string& problem) {
  std::cerr << "netio3-churn: " << problem
            << "\nusage: netio3-churn [--backend libfabric|asyncmsg] [--provider tcp|verbs|sockets] [--address A]"
               " [--cycles N] [--report-every K] [--timeout-ms T] [--json]\n";
  std::exit(2);
}

std::size_t positive(const std::string& name, const std::string& text) {
  try {
    std::size_t used = 0;
    const unsigned long value = std::stoul(text, &used);
    if (used == text.size() && value > 0) {
      return value;
    }
  } catch (const std::exception&) {
  }
  usage(name + " wants a positive integer, got '" + text + "'");
}

Options parse(int argc, char** argv) {
  Options options;
  const std::vector<std::string> arguments(argv + 1, argv + argc);
  for (std::size_t i = 0; i < arguments.size(); ++i) {
    const std::string& name = arguments[i];
    if (name == "--help" || name == "-h") {
      usage("connection churn against one listener");
    }
    if (name == "--json") {
      options.json = true;
      continue;
    }
    if (i + 1 >= arguments.size()) {
      usage(name + " needs a value");
    }
    const std::string& value = arguments[++i];
    if (name == "--backend") {
      if (value == "libfabric") {
        options.backend = NetworkType::LIBFABRIC;
      } else if (value == "asyncmsg") {
        options.backend = NetworkType::ASYNCMSG;
      } else {
        usage("unknown backend '" + value + "'");
      }
    } else if (name == "--provider") {
      options.provider = value;
    } else if (name == "--address") {
      options.address = value;
    } else if (name == "--cycles") {
      options.cycles = positive(name, value);
    } else if (name == "--report-every") {
      options.report_every = positive(name, value);
    } else if (name == "--timeout-ms") {
      options.timeout = std::chrono::milliseconds{positive(name, value)};
    } else {
      usage("unknown option '" + name + "'");
    }
  }
  return options;
}

int run(const Options& options) {
  Counts receiver_counts;
  Counts sender_counts;
  LoopThread receiver_loop;
  LoopThread sender_loop;
  const auto configure = [&](Counts& counts, const std::shared_ptr<EpollEventLoop>& loop) {
    NetworkConfig config;
    config.mode = options.provider == "verbs" ? NetworkMode::RDMA : NetworkMode::TCP;
    if (options.backend == NetworkType::LIBFABRIC) {
      config.provider = options.provider;
    }
    config.on_data_cb = [](std::span<const std::uint8_t>) {};
    config.on_connection_established_cb = [&counts](const EndPointAddress&) { counts.established(); };
    config.on_connection_closed_cb = [&counts](const EndPointAddress&, const std::vector<std::uint64_t>&) {
      counts.closed();
    };
    config.on_connection_refused_cb = [&counts](const EndPointAddress&) { counts.refused(); };
    return NetworkBackend::create(options.backend, config, loop);
  };
  auto receiver = configure(receiver_counts, receiver_loop.loop());
  auto sender = configure(sender_counts, sender_loop.loop());
  ConnectionParametersRecv listen_params;
  listen_params.buf_size = 1024;
  listen_params.num_buf = 4;
  const EndPointAddress listening = receiver->open_listen_endpoint(EndPointAddress{options.address, 0}, listen_params);
  ConnectionParameters send_params;
  send_params.buf_size = 1024;
  send_params.num_buf = 2;

  const std::string backend_name =
      options.backend == NetworkType::LIBFABRIC ? "libfabric/" + options.provider : std::string{"asyncmsg"};
  if (!options.json) {
    std::cout << "netio3-churn: " << backend_name << ", " << options.cycles << " open/close cycles against "
              << listening.to_string() << "\n"
              << "cycle\tfds\trss_kib\tsetup_per_s\tcycles_per_s\n";
  }
  Clock::duration setup_total{};
  Clock::duration setup_interval{};
  auto interval_start = Clock::now();
  const auto run_start = interval_start;
  std::size_t fds_start = 0;
  std::size_t rss_kib_start = 0;
  std::size_t fds_end = 0;
  std::size_t rss_kib_end = 0;
  const auto report = [&](std::size_t cycle, std::size_t in_interval) {
    const double interval_s = std::chrono::duration<double>(Clock::now() - interval_start).count();
    const double setup_s = std::chrono::duration<double>(setup_interval).count();
    fds_end = open_descriptors();
    rss_kib_end = resident_kib();
    if (cycle == 0) {
      fds_start = fds_end;
      rss_kib_start = rss_kib_end;
    }
    if (!options.json) {
      std::cout << cycle << '\t' << fds_end << '\t' << rss_kib_end << '\t'
                << (setup_s > 0 ? static_cast<double>(in_interval) / setup_s : 0.0) << '\t'
                << (interval_s > 0 ? static_cast<double>(in_interval) / interval_s : 0.0) << std::endl;
    }
    interval_start = Clock::now();
    setup_interval = {};
  };
  report(0, 0);
  for (std::size_t cycle = 1; cycle <= options.cycles; ++cycle) {
    const auto opened = Clock::now();
    sender->open_send_endpoint(listening, send_params);
    if (!sender_counts.wait(cycle, cycle - 1, options.timeout)) {
      std::cerr << "netio3-churn: cycle " << cycle << ": the send endpoint was not established within "
                << options.timeout.count() << " ms (sender: " << sender_counts.text() << ")\n";
      return 1;
    }
    const auto setup = Clock::now() - opened;
    setup_total += setup;
    setup_interval += setup;
    if (!receiver_counts.wait(cycle, cycle - 1, options.timeout)) {
      std::cerr << "netio3-churn: cycle " << cycle << ": the receiver did not report the connection within "
                << options.timeout.count() << " ms (receiver: " << receiver_counts.text() << ")\n";
      return 1;
    }
    sender->close_send_endpoint(listening);
    if (!sender_counts.wait(cycle, cycle, options.timeout) || !receiver_counts.wait(cycle, cycle, options.timeout)) {
      std::cerr << "netio3-churn: cycle " << cycle << ": the close was not reported at both ends within "
                << options.timeout.count() << " ms (sender: " << sender_counts.text()
                << "; receiver: " << receiver_counts.text() << ")\n";
      return 1;
    }
    if (cycle % options.report_every == 0 || cycle == options.cycles) {
      report(cycle, cycle % options.report_every == 0 ? options.report_every : cycle % options.report_every);
    }
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - run_start).count();
  const double setup_s = std::chrono::duration<double>(setup_total).count();
  const double connections_per_s = static_cast<double>(options.cycles) / setup_s;
  const double setup_mean_us = setup_s * 1e6 / static_cast<double>(options.cycles);
  if (options.json) {
    std::string system = "netio3-churn-" + backend_name;
    std::replace(system.begin(), system.end(), '/', '-');
    std::cout << std::fixed << std::setprecision(3) << R"({"system":")" << system
              << R"(","test":"setup","size":0,"connections_per_s":)" << connections_per_s << R"(,"setup_mean_us":)"
              << setup_mean_us << R"(,"cycles":)" << options.cycles << R"(,"seconds":)" << total_s << R"(,"fds_start":)"
              << fds_start << R"(,"fds_end":)" << fds_end << R"(,"rss_kib_start":)" << rss_kib_start
              << R"(,"rss_kib_end":)" << rss_kib_end << "}" << std::endl;
    return 0;
  }
  std::cout << "done: " << options.cycles << " cycles in " << total_s << " s; set-up (open to established) "
            << connections_per_s << " connections/s, mean " << setup_mean_us << " us" << std::endl;
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::cerr << "netio3-churn: " << error.what() << "\n";
    return 1;
  }
}
