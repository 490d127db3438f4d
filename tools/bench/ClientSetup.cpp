// netio3-bench client: set-up and tear-down (the server's addresses, the reply listeners, the
// sender context), beside Client.cpp (runs and results) and ClientSending.cpp (the throughput
// senders).

#include "Client.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <iostream>
#include <limits>
#include <netdb.h>
#include <netinet/in.h>
#include <stdexcept>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "AllocationCounter.hpp"

namespace netio3::bench {

namespace {

struct ServerHostFamilies {
  bool ipv4{false};
  bool ipv6{false};
  bool loopback_only{true};
};

ServerHostFamilies server_host_families(const std::string& host) {
  ServerHostFamilies families;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* results = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &results) != 0) {
    // Opening the data connection reports the resolution error; listen where IPv4 replies arrive.
    return ServerHostFamilies{true, false, false};
  }
  for (const addrinfo* entry = results; entry != nullptr; entry = entry->ai_next) {
    if (entry->ai_family == AF_INET) {
      families.ipv4 = true;
      const auto* ipv4 = reinterpret_cast<const sockaddr_in*>(entry->ai_addr);
      families.loopback_only = families.loopback_only && (ntohl(ipv4->sin_addr.s_addr) >> 24U) == 127U;
    } else if (entry->ai_family == AF_INET6) {
      const auto* ipv6 = reinterpret_cast<const sockaddr_in6*>(entry->ai_addr);
      if (IN6_IS_ADDR_V4MAPPED(&ipv6->sin6_addr)) {
        families.ipv4 = true;
        families.loopback_only = families.loopback_only && ipv6->sin6_addr.s6_addr[12] == 127U;
      } else {
        families.ipv6 = true;
        families.loopback_only = families.loopback_only && IN6_IS_ADDR_LOOPBACK(&ipv6->sin6_addr);
      }
    }
  }
  freeaddrinfo(results);
  return families;
}

/// Where the reply listener must listen. The server opens its reply connection to the address it
/// sees this client's data connection come from, which is of the family of the server address the
/// connection went to (a name may give both: either may be the one that connects). A loopback
/// server gets loopback listeners only (127.0.0.1 and/or ::1: nothing is opened to the network);
/// any other gets the wildcard: "::" (on Linux it takes IPv4 too unless net.ipv6.bindv6only is 1)
/// plus "0.0.0.0" for IPv4, which may then be refused as already covered.
struct ReplyHost {
  std::string host;
  bool required; ///< false: "0.0.0.0" after "::", covered by it on a dual-stack system
};

std::vector<ReplyHost> reply_listen_hosts(const ServerHostFamilies& families) {
  std::vector<ReplyHost> hosts;
  if (families.loopback_only) {
    if (families.ipv4) {
      hosts.push_back({"127.0.0.1", true});
    }
    if (families.ipv6) {
      hosts.push_back({"::1", true});
    }
    return hosts;
  }
  if (families.ipv6) {
    hosts.push_back({"::", true});
  }
  if (families.ipv4) {
    hosts.push_back({"0.0.0.0", !families.ipv6});
  }
  return hosts;
}

} // namespace

Client::Client(ClientOptions options) : m_options{std::move(options)} {
  for (const std::size_t size : m_options.sizes) {
    m_max_size = std::max(m_max_size, size);
  }
  // Buffered mode packs into buffers of buffer_size (or one message per buffer when larger).
  m_pool_buffer_size = std::max(m_options.buffer_size, m_max_size);
  m_pool_buffers =
      m_options.buffers != 0
          ? m_options.buffers
          : std::clamp<std::size_t>(std::size_t{2048} / std::max<std::size_t>(m_options.connections, 1), 4, 64);
  m_payload.assign(m_max_size, 0);
  for (std::size_t i = 0; i < m_payload.size(); ++i) {
    m_payload[i] = static_cast<std::uint8_t>(i * 131U + 7U);
  }
}

Client::~Client() {
  stop();
}

std::vector<EndPointAddress> Client::data_addresses() const {
  std::vector<EndPointAddress> addresses;
  if (m_options.connections == 1) {
    addresses.emplace_back(m_options.server_host, m_options.server_port);
    return addresses;
  }
  // One send endpoint per address: connection i goes to the i-th address from the given one (on
  // loopback, 127.0.0.1, 127.0.0.2, ...; the server listens on 0.0.0.0 or :: to accept them all).
  in_addr base{};
  in6_addr base6{};
  const bool ipv4 = inet_pton(AF_INET, m_options.server_host.c_str(), &base) == 1;
  if (!ipv4 && inet_pton(AF_INET6, m_options.server_host.c_str(), &base6) != 1) {
    throw std::runtime_error("--connections " + std::to_string(m_options.connections) +
                             " needs an IP address literal of the server (connection i goes to that address + i), "
                             "not '" +
                             m_options.server_host + "'");
  }
  for (std::size_t i = 0; i < m_options.connections; ++i) {
    char text[INET6_ADDRSTRLEN];
    if (ipv4) {
      in_addr address{};
      address.s_addr = htonl(ntohl(base.s_addr) + static_cast<std::uint32_t>(i));
      inet_ntop(AF_INET, &address, text, sizeof(text));
    } else {
      // The last 32 bits count up (fd00::1, fd00::2, ...): each must be an address of the server.
      in6_addr address = base6;
      std::uint32_t low = 0;
      std::memcpy(&low, &address.s6_addr[12], sizeof(low));
      low = htonl(ntohl(low) + static_cast<std::uint32_t>(i));
      std::memcpy(&address.s6_addr[12], &low, sizeof(low));
      inet_ntop(AF_INET6, &address, text, sizeof(text));
    }
    addresses.emplace_back(text, m_options.server_port);
  }
  return addresses;
}

void Client::start() {
  m_loop = std::make_shared<EpollEventLoop>();
  NetworkConfig config = make_config(m_options.backend);
  config.max_unsent_bytes = m_options.max_unsent_bytes;
  config.on_data_cb = [this](std::span<const std::uint8_t> data) { on_data(data); };
  config.on_connection_established_cb = [this](const EndPointAddress& address) { on_established(address); };
  config.on_connection_closed_cb = [this](const EndPointAddress& address, const std::vector<std::uint64_t>&) {
    on_closed(address);
  };
  config.on_connection_refused_cb = [this](const EndPointAddress& address) { on_refused(address); };
  config.on_send_completed_cb = [this](const EndPointAddress&, std::uint64_t) {
    // Only the loop thread writes the counter: a plain load and store, no locked instruction.
    m_completions.store(m_completions.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  };
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    // The loop-thread sender resumes when an endpoint that refused it (a send, or get_buffer) has
    // room or a buffer again: no timer, no polling. Each refusal arms the notice of its endpoint,
    // so a pump that moved nothing has armed one for every connection it tried.
    config.on_send_space_cb = [this](const EndPointAddress&) {
      if (m_waiting_for_space) {
        m_waiting_for_space = false;
        on_pump_signal();
      }
    };
  }
  m_backend = NetworkBackend::create(m_options.backend.backend, config, m_loop);

  m_task_signal = m_loop->create_signal([this] {
    std::vector<std::function<void()>> tasks;
    {
      const std::lock_guard lock(m_mutex);
      tasks.swap(m_tasks);
    }
    for (auto& task : tasks) {
      task();
    }
  });
  m_pump_signal = m_loop->create_signal([this] { on_pump_signal(); });
  m_progress_enabled = !m_options.quiet && isatty(STDERR_FILENO) == 1;
  if (m_progress_enabled) {
    m_progress_timer = m_loop->create_timer([this] { on_progress_timer(); });
  }

  // The reply listener: where the server sends ready, pongs and results.
  ConnectionParametersRecv receive;
  receive.buf_size = std::max({m_max_size, m_pool_buffer_size, std::size_t{64} << 10U});
  receive.num_buf = 16;
  open_reply_listeners(receive);

  ConnectionParameters parameters;
  if (m_options.mode == SendMode::Buffered) {
    parameters.buf_size = m_pool_buffer_size;
    parameters.num_buf = m_pool_buffers;
  } else if (m_options.mode == SendMode::ZeroCopy) {
    parameters.mr_start = m_payload.data();
    parameters.mr_size = m_payload.size();
  }
  const std::vector<EndPointAddress> addresses = data_addresses();
  m_connections.reserve(addresses.size());
  for (std::size_t i = 0; i < addresses.size(); ++i) {
    Connection connection{addresses[i]};
    connection.index = static_cast<std::uint32_t>(i);
    m_connections.push_back(connection);
    m_connection_index.emplace(addresses[i], i);
  }

  m_loop_thread = std::thread([this] { m_loop->run(); });
  // In UNSAFE mode the endpoints are opened on the loop thread like every later call.
  run_in_sender_context([&] {
    for (const Connection& connection : m_connections) {
      m_backend->open_send_endpoint(connection.address, parameters);
    }
  });
  wait_for("the data connections to be established", kControlTimeout,
           [this] { return m_established == m_connections.size(); });
}

void Client::open_reply_listeners(const ConnectionParametersRecv& receive) {
  const std::vector<ReplyHost> hosts = reply_listen_hosts(server_host_families(m_options.server_host));
  // The first listener picks a free port; the others take the same one (the hello carries one
  // port). That port may be taken in the other family: then all start again on a new port.
  constexpr int kAttempts = 20;
  std::string last_error;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::vector<EndPointAddress> opened;
    bool complete = true;
    for (const ReplyHost& host : hosts) {
      const std::uint16_t port = opened.empty() ? 0 : opened.front().port();
      try {
        opened.push_back(m_backend->open_listen_endpoint(EndPointAddress(host.host, port), receive));
      } catch (const std::exception& error) {
        if (host.required || opened.empty()) {
          last_error = fmt::format("cannot listen on {} for the server's replies: {}",
                                   EndPointAddress(host.host, port).to_string(), error.what());
          complete = false;
          break;
        }
      }
    }
    if (complete) {
      m_reply_listens = std::move(opened);
      return;
    }
    for (const EndPointAddress& listening : opened) {
      m_backend->close_listen_endpoint(listening);
    }
  }
  throw std::runtime_error(last_error);
}

std::string Client::reply_listeners_text() const {
  std::string text;
  for (const EndPointAddress& listening : m_reply_listens) {
    text += (text.empty() ? "" : " and ") + listening.to_string();
  }
  return text;
}

void Client::stop() noexcept {
  if (m_loop_thread.joinable()) {
    m_loop->stop();
    m_loop_thread.join();
  }
  // The loop is not running: closing from this thread is allowed in either model.
  m_backend.reset();
  m_progress_timer.reset();
  m_pump_signal.reset();
  m_task_signal.reset();
}

void Client::run_in_sender_context(const std::function<void()>& task) {
  if (m_options.backend.threads == ThreadSafetyModel::SAFE) {
    task();
    return;
  }
  bool done = false;
  std::exception_ptr error;
  {
    const std::lock_guard lock(m_mutex);
    m_tasks.emplace_back([&] {
      try {
        task();
      } catch (...) {
        error = std::current_exception();
      }
      const std::lock_guard inner(m_mutex);
      done = true;
      m_changed.notify_all();
    });
  }
  m_task_signal.fire();
  std::unique_lock lock(m_mutex);
  if (!m_changed.wait_for(lock, kControlTimeout, [&] { return done; })) {
    throw std::runtime_error("the event loop did not run a task within " +
                             std::to_string(kControlTimeout.count() / 1000) + " s");
  }
  lock.unlock();
  if (error) {
    std::rethrow_exception(error);
  }
}

void Client::wait_for(const char* what, std::chrono::milliseconds timeout, const std::function<bool()>& done) {
  std::unique_lock lock(m_mutex);
  const bool ok = m_changed.wait_for(lock, timeout, [&] { return done() || !m_failure.empty(); });
  if (!m_failure.empty()) {
    throw std::runtime_error(m_failure);
  }
  if (!ok) {
    throw std::runtime_error(fmt::format("timed out after {} s waiting for {}", timeout.count() / 1000, what));
  }
}

} // namespace netio3::bench
