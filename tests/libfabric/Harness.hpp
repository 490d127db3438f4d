#pragma once

// Helpers of the libfabric backend's own tests: a node (event loop in its own thread, a backend in
// SAFE mode, every callback recorded), waiting for conditions with a generous deadline (a guard
// against hangs, never a timing assertion), and provider probing.

#include <gtest/gtest.h>

#include <algorithm>
#include <arpa/inet.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <rdma/fabric.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <utility>
#include <vector>

#include "netio3/EpollEventLoop.hpp"
#include "netio3/Netio3Backend.hpp"

namespace netio3::libfabric::test {

/// How long a wait may take before the test fails (only a guard against hangs).
inline constexpr std::chrono::seconds wait_deadline{30};

/// True when NETIO3_TEST_SCALE=small (slow machines, the Soft-RoCE VM).
inline bool small_scale() {
  const char* scale = std::getenv("NETIO3_TEST_SCALE");
  return scale != nullptr && std::string{scale} == "small";
}

/// The address tests listen on and connect to (NETIO3_TEST_ADDRESS, default 127.0.0.1).
inline std::string test_address() {
  const char* address = std::getenv("NETIO3_TEST_ADDRESS");
  return address != nullptr && address[0] != '\0' ? std::string{address} : std::string{"127.0.0.1"};
}

/// Whether libfabric offers `provider` for FI_EP_MSG endpoints on the test address.
inline bool provider_available(const std::string& provider) {
  fi_info* hints = fi_allocinfo();
  hints->ep_attr->type = FI_EP_MSG;
  hints->caps = FI_MSG;
  hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
  hints->fabric_attr->prov_name = strdup(provider.c_str());
  fi_info* found = nullptr;
  const int rc = fi_getinfo(FI_VERSION(1, 17), test_address().c_str(), nullptr, FI_SOURCE, hints, &found);
  fi_freeinfo(hints);
  fi_freeinfo(found);
  return rc == 0;
}

/// Called by a test that provokes the `sockets` provider's own leak of connection requests (a
/// passive endpoint closed with a request still inside the provider), before it does: only then does
/// LeakSanitizer suppress leaks inside libfabric in this process. See sanitizer_suppressions.cpp.
void expect_sockets_provider_leak();

/// One received message.
struct Received {
  EndPointAddress from;
  std::vector<std::uint8_t> bytes;
};

/// One closed connection.
struct Closed {
  EndPointAddress address;
  std::vector<std::uint64_t> pending_keys;
};

/// Everything the callbacks reported, guarded by one mutex.
struct Record {
  std::vector<EndPointAddress> established;
  std::vector<EndPointAddress> refused;
  std::vector<Closed> closed;
  std::vector<std::uint64_t> completed_keys;
  std::vector<Received> received;
  std::size_t received_count{0};
  std::vector<EndPointAddress> requests;
  /// Callbacks that ran off the loop thread (must stay 0).
  std::size_t off_loop_callbacks{0};
  /// Every callback so far.
  std::size_t callbacks{0};
  /// Callbacks that began after `Node::destroy_backend` had returned (must stay 0).
  std::size_t callbacks_after_destruction{0};
};

/// Open file descriptors of this process and what they are ("12 -> socket:[345]"), less the one
/// that lists them.
inline std::vector<std::string> open_fds() {
  std::vector<std::string> open;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator{"/proc/self/fd"}) {
    const auto target = std::filesystem::read_symlink(entry.path(), error);
    if (!error) { // the directory's own descriptor is gone by now
      open.push_back(entry.path().filename().string() + " -> " + target.string());
    }
  }
  return open;
}

/// The local port of socket `fd` if it is a bound IPv4/IPv6 socket, else 0.
inline std::uint16_t local_port(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return 0;
  }
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&address)->sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&address)->sin6_port);
  }
  return 0;
}

/// An event loop in its own thread and a libfabric backend (SAFE) on it, recording every callback.
class Node {
public:
  /// Hook run inside on_data_from_cb (e.g. to stall the receiver).
  using DataHook = std::function<void(const EndPointAddress&, std::span<const std::uint8_t>)>;

  struct Options {
    std::string provider{"tcp"};
    /// Start the loop thread at once (false: call start()).
    bool start{true};
    /// Keep the bytes of every message (false: count only).
    bool keep_messages{true};
    DataHook on_data{};
    std::function<bool(const EndPointAddress&)> on_request{};
    std::function<void(NetworkConfig&)> adjust{};
  };

  explicit Node(Options options) : m_options{std::move(options)} {
    m_loop = std::make_shared<EpollEventLoop>();
    NetworkConfig config;
    config.mode = NetworkMode::TCP;
    config.thread_safety = ThreadSafetyModel::SAFE;
    config.provider = m_options.provider;
    config.on_connection_established_cb = [this](const EndPointAddress& address) {
      update([&](Record& r) { r.established.push_back(address); });
    };
    config.on_connection_refused_cb = [this](const EndPointAddress& address) {
      update([&](Record& r) { r.refused.push_back(address); });
    };
    config.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>& keys) {
      update([&](Record& r) { r.closed.push_back(Closed{address, keys}); });
    };
    config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t key) {
      update([&](Record& r) { r.completed_keys.push_back(key); });
    };
    config.on_data_from_cb = [this](const EndPointAddress& from, std::span<const std::uint8_t> data) {
      if (m_options.on_data) {
        m_options.on_data(from, data);
      }
      update([&](Record& r) {
        ++r.received_count;
        if (m_options.keep_messages) {
          r.received.push_back(Received{from, std::vector<std::uint8_t>(data.begin(), data.end())});
        }
      });
    };
    if (m_options.on_request) {
      config.on_connection_request_cb = [this](const EndPointAddress& from) {
        update([&](Record& r) { r.requests.push_back(from); });
        return m_options.on_request(from);
      };
    }
    if (m_options.adjust) {
      m_options.adjust(config);
    }
    m_backend = NetworkBackend::create(NetworkType::LIBFABRIC, config, m_loop);
    if (m_options.start) {
      start();
    }
  }

  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  Node(Node&&) = delete;
  Node& operator=(Node&&) = delete;

  ~Node() {
    stop();
    m_backend.reset();
  }

  /// Runs the loop in its own thread (returns once it runs).
  void start() {
    if (m_thread.joinable()) {
      return;
    }
    m_thread = std::thread{[this] { m_loop->run(); }};
    while (!m_loop->is_running()) {
      std::this_thread::yield();
    }
  }

  /// Destroys the backend now, while the loop thread (if started) keeps running; the record stays,
  /// and any callback from now on is counted in `callbacks_after_destruction`.
  void destroy_backend() {
    m_backend.reset();
    const std::lock_guard lock{m_mutex};
    m_backend_destroyed = true;
  }

  /// Returns once the loop thread has handled an event fired now (the loop must run): whatever was
  /// ready on the loop before, e.g. a stray event of a destroyed backend, has been handled by then.
  /// False if that did not happen before the deadline.
  [[nodiscard]] bool loop_barrier() {
    bool handled = false;
    EventSignalHandle signal = m_loop->create_signal([&] {
      {
        const std::lock_guard lock{m_mutex};
        handled = true;
      }
      m_changed.notify_all();
    });
    signal.fire();
    std::unique_lock lock{m_mutex};
    const bool done = m_changed.wait_for(lock, wait_deadline, [&] { return handled; });
    lock.unlock();
    signal.reset(); // before `handled` goes out of scope
    return done;
  }

  /// Stops the loop thread (the backend stays).
  void stop() {
    if (m_thread.joinable()) {
      m_loop->stop();
      m_thread.join();
    }
  }

  [[nodiscard]] NetworkBackend& backend() { return *m_backend; }
  [[nodiscard]] BaseEventLoop& loop() { return *m_loop; }

  /// Waits until `predicate(record)` holds; false after the deadline.
  template <typename Predicate>
  bool wait(Predicate predicate, std::chrono::milliseconds deadline = wait_deadline) {
    std::unique_lock lock{m_mutex};
    return m_changed.wait_for(lock, deadline, [&] { return predicate(m_record); });
  }

  /// Runs `inspect(record)` under the record's lock and returns its result.
  template <typename Inspect>
  auto inspect(Inspect inspect) {
    const std::lock_guard lock{m_mutex};
    return inspect(m_record);
  }

  /// Waits (with the record's lock released) for any callback, at most `timeout`.
  void wait_for_change(std::chrono::milliseconds timeout) {
    std::unique_lock lock{m_mutex};
    m_changed.wait_for(lock, timeout);
  }

private:
  template <typename Change>
  void update(Change change) {
    {
      const std::lock_guard lock{m_mutex};
      if (!m_loop->in_loop_thread()) {
        ++m_record.off_loop_callbacks;
      }
      ++m_record.callbacks;
      if (m_backend_destroyed) {
        ++m_record.callbacks_after_destruction;
      }
      change(m_record);
    }
    m_changed.notify_all();
  }

  Options m_options;
  std::shared_ptr<EpollEventLoop> m_loop;
  std::unique_ptr<NetworkBackend> m_backend;
  std::thread m_thread;
  std::mutex m_mutex;
  std::condition_variable m_changed;
  Record m_record;
  bool m_backend_destroyed{false};
};

/// A page-aligned memory region for zero-copy sends.
class Region {
public:
  explicit Region(std::size_t size) : m_bytes(size + 4096) {
    auto address = reinterpret_cast<std::uintptr_t>(m_bytes.data());
    m_offset = ((address + 4095) & ~std::uintptr_t{4095}) - address;
    m_size = size;
  }
  [[nodiscard]] std::uint8_t* data() { return m_bytes.data() + m_offset; }
  [[nodiscard]] std::size_t size() const { return m_size; }

private:
  std::vector<std::uint8_t> m_bytes;
  std::size_t m_offset{0};
  std::size_t m_size{0};
};

/// Sets FI_SOCKETS_PE_WAITTIME=0 before libfabric initialises (the sockets provider's progress
/// thread otherwise spins 10 ms per wake-up). Call from a static initialiser.
inline bool prepare_environment() {
  ::setenv("FI_SOCKETS_PE_WAITTIME", "0", 0);
  return true;
}

} // namespace netio3::libfabric::test
