// netio3-wait-sender: a plain SAFE-mode sender written the way a new user would write it from the
// headers, with the waiting primitives instead of a retry loop: after NO_RESOURCES it blocks in
// NetworkBackend::wait_for_send_space; in zero-copy mode it reuses a ring of payload slots and
// blocks in wait_for_completed_sends when every slot is in flight. A child process receives (UNSAFE,
// on its loop thread) and measures the throughput as netio3-bench's receiver does, from the first
// to the last message. Prints one line of figures, including the sender process's CPU time per
// message (user + system, both of its threads). Benchmark, not a test (docs/performance.md).
//
//   netio3-wait-sender [--backend asyncmsg|libfabric] [--provider tcp|sockets] [--mode copy|zerocopy]
//                      [--size BYTES] [--messages N] [--max-unsent BYTES] [--slots N]

#include <netio3/EpollEventLoop.hpp>
#include <netio3/Netio3Backend.hpp>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

/// Each message is a 16-byte header (the sequence number, passed as header_data) and size - 16
/// bytes of payload: `size` bytes on the API, as netio3-bench counts them.
constexpr std::size_t header_size = 16;

struct Options {
  netio3::NetworkType type{netio3::NetworkType::ASYNCMSG};
  std::string provider{"tcp"};
  bool zero_copy{false};
  std::size_t size{64};
  std::size_t messages{0}; // 0: about 4 GiB worth, at least 1000, at most 5 million
  std::size_t max_unsent{std::size_t{8} << 20U};
  std::size_t slots{0}; // zero-copy ring: 0: enough for twice max_unsent (at least 64)
};

std::size_t parse_size(const std::string& text) {
  std::size_t end = 0;
  const unsigned long long value = std::stoull(text, &end);
  std::size_t factor = 1;
  if (end < text.size()) {
    const char unit = text[end];
    factor = unit == 'k' || unit == 'K' ? 1024 : unit == 'm' || unit == 'M' ? 1024 * 1024 : 0;
    if (factor == 0 || end + 1 != text.size()) {
      throw std::invalid_argument("bad size: " + text);
    }
  }
  return static_cast<std::size_t>(value) * factor;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg{argv[i]};
    if (i + 1 >= argc) {
      throw std::invalid_argument("missing value after " + std::string{arg});
    }
    const std::string value{argv[++i]};
    if (arg == "--backend") {
      if (value != "asyncmsg" && value != "libfabric") {
        throw std::invalid_argument("--backend asyncmsg|libfabric");
      }
      options.type = value == "asyncmsg" ? netio3::NetworkType::ASYNCMSG : netio3::NetworkType::LIBFABRIC;
    } else if (arg == "--provider") {
      options.provider = value;
    } else if (arg == "--mode") {
      if (value != "copy" && value != "zerocopy") {
        throw std::invalid_argument("--mode copy|zerocopy");
      }
      options.zero_copy = value == "zerocopy";
    } else if (arg == "--size") {
      options.size = parse_size(value);
    } else if (arg == "--messages") {
      options.messages = parse_size(value);
    } else if (arg == "--slots") {
      options.slots = parse_size(value);
    } else if (arg == "--max-unsent") {
      options.max_unsent = parse_size(value);
    } else {
      throw std::invalid_argument("unknown option " + std::string{arg});
    }
  }
  if (options.size < header_size) {
    throw std::invalid_argument("--size must be at least 16 (the header)");
  }
  if (options.messages == 0) {
    options.messages = std::clamp<std::size_t>((std::size_t{4} << 30U) / options.size, 1000, 5000000);
  }
  return options;
}

netio3::NetworkConfig base_config(const Options& options, netio3::ThreadSafetyModel model) {
  netio3::NetworkConfig config;
  config.thread_safety = model;
  if (options.type == netio3::NetworkType::LIBFABRIC) {
    config.provider = options.provider;
  }
  config.max_unsent_bytes = options.max_unsent;
  return config;
}

/// The child: listens, writes its port to `to_parent`, counts messages, writes the nanoseconds from
/// the first to the last message when all arrived.
[[noreturn]] void receive(const Options& options, int to_parent) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  std::size_t received = 0;
  Clock::time_point first{};
  netio3::NetworkConfig config = base_config(options, netio3::ThreadSafetyModel::UNSAFE);
  config.on_data_cb = [&](std::span<const std::uint8_t> /*data*/) {
    if (received++ == 0) {
      first = Clock::now();
    }
    if (received == options.messages) {
      const auto nanoseconds = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - first).count();
      const std::string line = std::to_string(nanoseconds) + "\n";
      if (::write(to_parent, line.data(), line.size()) < 0) {
        std::perror("write");
      }
      loop->stop();
    }
  };
  auto backend = netio3::NetworkBackend::create(options.type, config, loop);
  netio3::ConnectionParametersRecv params;
  params.buf_size = options.size;
  params.num_buf = 64;
  const netio3::EndPointAddress listening = backend->open_listen_endpoint({"127.0.0.1", 0}, params);
  const std::string port = std::to_string(listening.port()) + "\n";
  if (::write(to_parent, port.data(), port.size()) < 0) {
    std::perror("write");
  }
  loop->run();
  backend.reset();
  std::_Exit(0);
}

std::string read_line(int fd) {
  std::string line;
  char c = 0;
  while (::read(fd, &c, 1) == 1 && c != '\n') {
    line.push_back(c);
  }
  return line;
}

double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec);
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

int send(const Options& options, std::uint16_t port) {
  auto loop = std::make_shared<netio3::EpollEventLoop>();
  std::thread loop_thread{[&] { loop->run(); }};
  netio3::NetworkConfig config = base_config(options, netio3::ThreadSafetyModel::SAFE);
  auto backend = netio3::NetworkBackend::create(options.type, config, loop);
  const netio3::EndPointAddress destination{"127.0.0.1", port};

  // Zero-copy: a ring of slots, each reused only after its send completed (keys complete in order
  // per connection). Enough slots for twice the unsent bound, so that the bound, not the ring, limits.
  const std::size_t slots = !options.zero_copy ? 1
                            : options.slots != 0
                                ? options.slots
                                : std::clamp<std::size_t>(2 * options.max_unsent / options.size, 64, 1U << 20U);
  std::vector<std::uint8_t> memory(slots * options.size, 0x5A);
  netio3::ConnectionParameters params;
  params.mr_start = memory.data();
  params.mr_size = memory.size();
  backend->open_send_endpoint(destination, params);

  const double cpu_start = cpu_seconds();
  std::size_t waits = 0;
  std::size_t completion_waits = 0;
  int result = 0;
  std::array<std::uint8_t, header_size> header{};
  const auto header_of = [&header](std::uint64_t sequence) {
    std::memcpy(header.data(), &sequence, sizeof(sequence));
    return std::span<const std::uint8_t>{header};
  };
  std::uint64_t completed = 0; // as last read: looked up again only when the ring seems full
  for (std::uint64_t sent = 0; sent < options.messages && result == 0;) {
    netio3::NetioStatus status{};
    if (options.zero_copy) {
      if (sent - completed >= slots) {
        completed = backend->completed_sends(destination);
        if (sent - completed >= slots) {
          ++completion_waits; // every slot in flight: wait for the oldest to come back
          if (backend->wait_for_completed_sends(destination, completed, std::chrono::seconds{10}) !=
              netio3::WaitStatus::READY) {
            std::fprintf(stderr, "no completion within 10 s\n");
            result = 1;
          }
          continue;
        }
      }
      const std::span<std::uint8_t> slot{memory.data() + (sent % slots) * options.size, options.size};
      status = backend->send_data(destination, slot.first(options.size - header_size), header_of(sent), sent);
    } else {
      status = backend->send_data_copy(
          destination, std::span<const std::uint8_t>{memory.data(), options.size - header_size}, header_of(sent), sent);
    }
    if (status == netio3::NetioStatus::OK) {
      ++sent;
    } else if (status == netio3::NetioStatus::NO_RESOURCES) {
      ++waits; // not connected yet, or no room: block until there is
      const netio3::WaitStatus waited =
          backend->wait_for_send_space(destination, options.size, std::chrono::seconds{10});
      if (waited != netio3::WaitStatus::READY) {
        std::fprintf(stderr, "waiting for room: %s\n", std::string{netio3::to_string(waited)}.c_str());
        result = 1;
      }
    } else {
      std::fprintf(stderr, "send failed: %s\n", std::string{netio3::to_string(status)}.c_str());
      result = 1;
    }
  }
  const double cpu_used = cpu_seconds() - cpu_start;
  // Every key completed: the data is with the transport (the receiver tells when it has it all).
  if (result == 0 && backend->wait_for_completed_sends(destination, options.messages - 1, std::chrono::seconds{30}) !=
                         netio3::WaitStatus::READY) {
    std::fprintf(stderr, "not every send completed\n");
    result = 1;
  }
  std::printf("sender: %zu waits for room, %zu waits for completions, cpu %.3f s = %.3f us/message\n", waits,
              completion_waits, cpu_used, 1e6 * cpu_used / static_cast<double>(options.messages));
  backend.reset();
  loop->stop();
  loop_thread.join();
  return result;
}

} // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    int pipe_fds[2];
    if (::pipe(pipe_fds) != 0) {
      std::perror("pipe");
      return 1;
    }
    const pid_t child = ::fork();
    if (child < 0) {
      std::perror("fork");
      return 1;
    }
    if (child == 0) {
      ::close(pipe_fds[0]);
      receive(options, pipe_fds[1]);
    }
    ::close(pipe_fds[1]);
    const std::string port = read_line(pipe_fds[0]);
    if (port.empty()) {
      std::fprintf(stderr, "the receiver did not start\n");
      return 1;
    }
    int result = send(options, static_cast<std::uint16_t>(std::stoul(port)));
    const std::string nanoseconds = read_line(pipe_fds[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    if (nanoseconds.empty()) {
      std::fprintf(stderr, "the receiver did not get every message\n");
      return 1;
    }
    const double seconds = std::stod(nanoseconds) * 1e-9;
    const double bytes = static_cast<double>(options.messages) * static_cast<double>(options.size);
    std::printf("receiver: %zu messages of %zu bytes in %.3f s: %.1f k msg/s, %.1f MB/s\n", options.messages,
                options.size, seconds, static_cast<double>(options.messages) / seconds / 1e3, bytes / seconds / 1e6);
    return result;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "netio3-wait-sender: %s\n", error.what());
    return 1;
  }
}
