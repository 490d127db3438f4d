#pragma once

// Helpers of the TCP backend's tests: a loop on its own thread, a thread-safe record of every
// callback, and raw sockets for playing a misbehaving (or silent) peer. Traffic stays on 127.0.0.1.

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <span>
#include <stdexcept>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::asyncmsg::testing {

/// Guard against hangs only: no test asserts on how long anything takes.
inline constexpr std::chrono::seconds wait_limit{30};

/// An EpollEventLoop running on its own thread from construction to destruction.
class LoopThread {
public:
  LoopThread() : m_loop{std::make_shared<EpollEventLoop>()} { start(); }
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;
  LoopThread(LoopThread&&) = delete;
  LoopThread& operator=(LoopThread&&) = delete;
  ~LoopThread() { stop(); }

  /// Runs the loop (again) on a new thread and waits until it runs.
  void start() {
    m_thread = std::thread{[loop = m_loop] { loop->run(); }};
    while (!m_loop->is_running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
  }
  void stop() {
    if (m_thread.joinable()) {
      m_loop->stop();
      m_thread.join();
    }
  }
  [[nodiscard]] const std::shared_ptr<EpollEventLoop>& loop() const noexcept { return m_loop; }

private:
  std::shared_ptr<EpollEventLoop> m_loop;
  std::thread m_thread;
};

/// Every callback of a backend, recorded under a lock, with a wait for conditions on them.
struct Events {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<EndPointAddress> established;
  std::vector<EndPointAddress> refused;
  std::vector<std::pair<EndPointAddress, std::vector<std::uint64_t>>> closed;
  std::vector<std::pair<EndPointAddress, std::uint64_t>> completed;
  std::vector<std::pair<EndPointAddress, std::vector<std::uint8_t>>> received;
  /// Set when a callback ran outside the loop thread (must never happen).
  std::atomic<bool> off_loop_thread{false};
  /// Received messages are counted but not stored (for high counts).
  bool count_only{false};
  std::size_t received_count{0};
  std::size_t received_bytes{0};

  /// Waits until `condition()` (called with the lock held) is true; false after `wait_limit`.
  template <typename Condition>
  bool wait(Condition condition) {
    std::unique_lock lock{mutex};
    return changed.wait_for(lock, wait_limit, [&] { return condition(); });
  }

  std::size_t count_established() {
    const std::lock_guard lock{mutex};
    return established.size();
  }
};

/// A configuration whose callbacks record into `events` and check that they run on `loop`'s thread.
inline NetworkConfig recording_config(Events& events, const std::shared_ptr<BaseEventLoop>& loop,
                                      ThreadSafetyModel model = ThreadSafetyModel::SAFE) {
  NetworkConfig config;
  config.thread_safety = model;
  std::weak_ptr<BaseEventLoop> weak_loop = loop;
  const auto check_thread = [&events, weak_loop] {
    const auto current = weak_loop.lock();
    if (!current || !current->in_loop_thread()) {
      events.off_loop_thread = true;
    }
  };
  config.on_connection_established_cb = [&events, check_thread](const EndPointAddress& address) {
    check_thread();
    const std::lock_guard lock{events.mutex};
    events.established.push_back(address);
    events.changed.notify_all();
  };
  config.on_connection_refused_cb = [&events, check_thread](const EndPointAddress& address) {
    check_thread();
    const std::lock_guard lock{events.mutex};
    events.refused.push_back(address);
    events.changed.notify_all();
  };
  config.on_connection_closed_cb = [&events, check_thread](const EndPointAddress& address,
                                                           const std::vector<std::uint64_t>& keys) {
    check_thread();
    const std::lock_guard lock{events.mutex};
    events.closed.emplace_back(address, keys);
    events.changed.notify_all();
  };
  config.on_send_completed_cb = [&events, check_thread](const EndPointAddress& address, std::uint64_t key) {
    check_thread();
    const std::lock_guard lock{events.mutex};
    events.completed.emplace_back(address, key);
    events.changed.notify_all();
  };
  config.on_data_from_cb = [&events, check_thread](const EndPointAddress& remote, std::span<const std::uint8_t> data) {
    check_thread();
    const std::lock_guard lock{events.mutex};
    ++events.received_count;
    events.received_bytes += data.size();
    if (!events.count_only) {
      events.received.emplace_back(remote, std::vector<std::uint8_t>(data.begin(), data.end()));
    }
    events.changed.notify_all();
  };
  return config;
}

/// The key of a barrier message (`send_barrier_message`): no test sends with it otherwise.
inline constexpr std::uint64_t barrier_key{0xba77'1e55'0000'0000ULL};

/// A barrier for "nothing more is reported": `backend` (whose callbacks record into `events`) opens
/// a connection to a listen endpoint of its own, sends one message with `barrier_key` and waits
/// until that key's completion has been recorded. The backend's callbacks run one after another on
/// its loop, so whatever it still had to report before the barrier (a late completion, a second
/// close) has been recorded by then, and the test checks the record without waiting for a fixed
/// time. Adds two established callbacks, one completion (`barrier_key`) and one received message
/// to `events`. False if the deadline passed first.
inline bool send_barrier_message(NetworkBackend& backend, Events& events) {
  const EndPointAddress listening = backend.open_listen_endpoint({"127.0.0.1", 0}, {});
  backend.open_send_endpoint(listening, {});
  const std::vector<std::uint8_t> message(8, 0xba);
  const auto deadline = std::chrono::steady_clock::now() + wait_limit;
  NetioStatus status = NetioStatus::NO_RESOURCES;
  // NO_RESOURCES until the connection is established.
  while ((status = backend.send_data_copy(listening, std::span<const std::uint8_t>{message}, {}, barrier_key)) ==
             NetioStatus::NO_RESOURCES &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
  if (status != NetioStatus::OK) {
    return false;
  }
  return events.wait([&] {
    return std::any_of(events.completed.begin(), events.completed.end(),
                       [](const auto& entry) { return entry.second == barrier_key; });
  });
}

/// `size` bytes of a pattern that depends on `seed`.
inline std::vector<std::uint8_t> pattern(std::size_t size, std::uint32_t seed) {
  std::vector<std::uint8_t> bytes(size);
  for (std::size_t index = 0; index < size; ++index) {
    bytes[index] = static_cast<std::uint8_t>((seed * 131U) + (index * 7U) + (index >> 8U));
  }
  return bytes;
}

/// Concatenation of byte vectors.
inline std::vector<std::uint8_t> concat(std::initializer_list<std::span<const std::uint8_t>> parts) {
  std::vector<std::uint8_t> out;
  for (const auto part : parts) {
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

/// A plain blocking TCP socket on 127.0.0.1, for playing a peer by hand.
class RawSocket {
public:
  explicit RawSocket(int fd = -1) noexcept : m_fd{fd} {}
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  RawSocket(RawSocket&& other) noexcept : m_fd{std::exchange(other.m_fd, -1)} {}
  RawSocket& operator=(RawSocket&& other) noexcept {
    std::swap(m_fd, other.m_fd);
    return *this;
  }
  ~RawSocket() { close(); }

  /// Connects to 127.0.0.1:`port`. @throws std::runtime_error on failure.
  static RawSocket connect_to(std::uint16_t port) {
    RawSocket socket{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(socket.m_fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error(std::string{"RawSocket: connect failed: "} + std::strerror(errno));
    }
    return socket;
  }

  [[nodiscard]] int fd() const noexcept { return m_fd; }

  /// Sends everything; false if the connection broke.
  bool send_all(std::span<const std::uint8_t> bytes) const {
    std::size_t offset = 0;
    while (offset < bytes.size()) {
      const ssize_t sent = ::send(m_fd, bytes.data() + offset, bytes.size() - offset, MSG_NOSIGNAL);
      if (sent <= 0) {
        return false;
      }
      offset += static_cast<std::size_t>(sent);
    }
    return true;
  }

  /// Receives exactly `count` bytes; false on close, error or after `wait_limit`.
  bool receive_exactly(std::uint8_t* out, std::size_t count) const {
    std::size_t offset = 0;
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    while (offset < count) {
      if (!readable_before(deadline)) {
        return false;
      }
      const ssize_t received = ::recv(m_fd, out + offset, count - offset, 0);
      if (received <= 0) {
        return false;
      }
      offset += static_cast<std::size_t>(received);
    }
    return true;
  }

  /// Reads and discards whatever arrives until the peer closes the connection (true) or
  /// `wait_limit` passes (false).
  bool wait_closed_by_peer() const {
    const auto deadline = std::chrono::steady_clock::now() + wait_limit;
    std::vector<std::uint8_t> sink(65536);
    while (readable_before(deadline)) {
      const ssize_t received = ::recv(m_fd, sink.data(), sink.size(), 0);
      if (received == 0 || (received < 0 && errno != EINTR && errno != EAGAIN)) {
        return true;
      }
    }
    return false;
  }

  /// Reads up to `limit` bytes that are available now or within `timeout`; returns the count.
  std::size_t drain_available(std::size_t limit, std::chrono::milliseconds timeout) const {
    std::vector<std::uint8_t> sink(65536);
    std::size_t total = 0;
    while (total < limit) {
      pollfd descriptor{m_fd, POLLIN, 0};
      if (::poll(&descriptor, 1, static_cast<int>(timeout.count())) <= 0) {
        break;
      }
      const ssize_t received = ::recv(m_fd, sink.data(), std::min(sink.size(), limit - total), 0);
      if (received <= 0) {
        break;
      }
      total += static_cast<std::size_t>(received);
    }
    return total;
  }

  void close() noexcept {
    if (m_fd >= 0) {
      ::close(m_fd);
      m_fd = -1;
    }
  }

private:
  bool readable_before(std::chrono::steady_clock::time_point deadline) const {
    while (true) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        return false;
      }
      pollfd descriptor{m_fd, POLLIN, 0};
      const int ready = ::poll(&descriptor, 1, static_cast<int>(left.count()));
      if (ready > 0) {
        return true;
      }
      if (ready < 0 && errno != EINTR) {
        return false;
      }
    }
  }

  int m_fd{-1};
};

/// A listening socket on 127.0.0.1 (free port) that the test accepts from by hand.
class RawListener {
public:
  /// @param receive_buffer SO_RCVBUF for accepted sockets (0: the default, autotuned)
  explicit RawListener(int receive_buffer = 0) : m_socket{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)} {
    if (receive_buffer > 0) {
      ::setsockopt(m_socket.fd(), SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof(receive_buffer));
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(m_socket.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(m_socket.fd(), 16) != 0 ||
        ::getsockname(m_socket.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error(std::string{"RawListener: "} + std::strerror(errno));
    }
    m_port = ntohs(address.sin_port);
  }
  [[nodiscard]] std::uint16_t port() const noexcept { return m_port; }
  /// Accepts one connection (blocking, bounded by wait_limit). @throws std::runtime_error
  RawSocket accept_one() const {
    pollfd descriptor{m_socket.fd(), POLLIN, 0};
    if (::poll(&descriptor, 1, static_cast<int>(std::chrono::milliseconds{wait_limit}.count())) <= 0) {
      throw std::runtime_error("RawListener: no connection arrived");
    }
    return RawSocket{::accept4(m_socket.fd(), nullptr, nullptr, SOCK_CLOEXEC)};
  }

private:
  RawSocket m_socket;
  std::uint16_t m_port{0};
};

/// The largest send buffer TCP autotuning may give a socket (tcp_wmem's maximum), in bytes.
inline std::size_t max_tcp_send_buffer() {
  std::size_t minimum = 0;
  std::size_t initial = 0;
  std::size_t maximum = std::size_t{4} << 20U;
  if (FILE* file = std::fopen("/proc/sys/net/ipv4/tcp_wmem", "r")) {
    if (std::fscanf(file, "%zu %zu %zu", &minimum, &initial, &maximum) != 3) {
      maximum = std::size_t{4} << 20U;
    }
    std::fclose(file);
  }
  return maximum;
}

/// A bound socket without listen: connecting to its port is refused, and nobody else takes it.
class ClosedPort {
public:
  ClosedPort() : m_socket{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)} {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(m_socket.fd(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
        ::getsockname(m_socket.fd(), reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      throw std::runtime_error(std::string{"ClosedPort: "} + std::strerror(errno));
    }
    m_port = ntohs(address.sin_port);
  }
  [[nodiscard]] std::uint16_t port() const noexcept { return m_port; }

private:
  RawSocket m_socket;
  std::uint16_t m_port{0};
};

} // namespace netio3::asyncmsg::testing
