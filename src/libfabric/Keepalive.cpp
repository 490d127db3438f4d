// The keepalive timer of the libfabric backend: NetworkConfig::peer_timeout. The providers give the
// backend no keepalive of their own (with `tcp` a cut link is never reported), so the backend
// watches silence itself, at a low rate: one backend-wide timer ticks every peer_timeout / 4 while
// a watched connection is established. Senders send a keepalive message when they are idle, and
// the receiver answers it with a credit like any data message, so both sides hear from each other
// at least once per tick while the peer lives. Design and wire format: docs/libfabric-backend.md
// ("Vanished peers: peer_timeout").

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <limits>
#include <netinet/in.h>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_set>

#include "core/Logging.hpp"
#include "core/Resolve.hpp"
#include "libfabric/BackendLibfabric.hpp"

namespace netio3::libfabric {
namespace {

/// The port of an IPv4 or IPv6 socket address (host byte order), 0 for other families.
std::uint16_t port_of(const sockaddr_storage& address) {
  if (address.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(address).sin_port);
  }
  if (address.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(address).sin6_port);
  }
  return 0;
}

/// True when a socket bound to `local` was accepted on a listener bound to `listening`: same
/// family and port, and the listener's address is the wildcard or the same address.
bool accepted_on(const sockaddr_storage& local, const sockaddr_storage& listening) {
  if (local.ss_family != listening.ss_family || port_of(local) != port_of(listening) || port_of(local) == 0) {
    return false;
  }
  if (local.ss_family == AF_INET) {
    const auto& bound = reinterpret_cast<const sockaddr_in&>(listening).sin_addr;
    return bound.s_addr == htonl(INADDR_ANY) ||
           bound.s_addr == reinterpret_cast<const sockaddr_in&>(local).sin_addr.s_addr;
  }
  const auto& bound = reinterpret_cast<const sockaddr_in6&>(listening).sin6_addr;
  return std::memcmp(&bound, &in6addr_any, sizeof bound) == 0 ||
         std::memcmp(&bound, &reinterpret_cast<const sockaddr_in6&>(local).sin6_addr, sizeof bound) == 0;
}

/// The inode of the socket behind descriptor `fd` of this process, from its /proc/self/fd link
/// ("socket:[12345]"); 0 when it is no socket.
std::uint64_t socket_inode(const char* fd_name) {
  const std::string link_path = std::string{"/proc/self/fd/"} + fd_name;
  char target[64];
  const ssize_t length = ::readlink(link_path.c_str(), target, sizeof target - 1);
  if (length <= 0) {
    return 0;
  }
  target[length] = '\0';
  if (std::strncmp(target, "socket:[", 8) != 0) {
    return 0;
  }
  return std::strtoull(target + 8, nullptr, 10);
}

/// `ticks` keepalive periods in milliseconds, for messages.
std::string ticks_in_ms(std::uint32_t ticks, std::chrono::milliseconds period) {
  return std::to_string(static_cast<long long>(ticks) * period.count());
}

} // namespace

void BackendLibfabric::ensure_unclaimed_socket_timer() {
  if (m_unclaimed_running || m_shutting_down || !m_unclaimed_timer.valid()) {
    return;
  }
  // Half the deadline: a silent socket is closed between connect_timeout and 1.5 x connect_timeout
  // after it was accepted.
  const auto period = std::clamp<std::chrono::milliseconds>(m_config.connect_timeout / 2, std::chrono::milliseconds{50},
                                                            std::chrono::minutes{1});
  try {
    m_unclaimed_timer.start(period);
    m_unclaimed_running = true;
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric backend: cannot start the timer that closes silent connections on listeners: {}",
                     error.what());
  }
}

void BackendLibfabric::on_unclaimed_socket_timer() {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  if (m_listeners.empty()) {
    try {
      m_unclaimed_timer.stop();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("libfabric backend: cannot stop the silent-connection timer: {}", error.what());
    }
    m_unclaimed_running = false; // open_listen_endpoint starts it again
    m_unclaimed_since.clear();
    return;
  }
  // Remote addresses of the connections this backend knows (accepted or being accepted): their
  // sockets are claimed. A socket on a listener port from any other peer is one the provider still
  // holds for a connection request that has not come.
  std::unordered_set<EndPointAddress> claimed;
  for (const auto& [pointer, connection] : m_connections) {
    if (connection->role == Connection::Role::receiver) {
      claimed.insert(connection->address);
    }
  }
  const auto now = std::chrono::steady_clock::now();
  std::unordered_map<std::uint64_t, std::chrono::steady_clock::time_point> still_unclaimed;
  DIR* directory = ::opendir("/proc/self/fd");
  if (directory == nullptr) {
    NETIO3_LOG_WARNING("libfabric: cannot read /proc/self/fd to find silent connections on listeners: {}",
                       detail::errno_text(errno));
    return;
  }
  // NOLINTNEXTLINE(concurrency-mt-unsafe): glibc's readdir is safe on a stream no other thread reads
  while (const dirent* entry = ::readdir(directory)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') {
      continue;
    }
    const std::uint64_t inode = socket_inode(entry->d_name);
    if (inode == 0) {
      continue;
    }
    const int fd = std::atoi(entry->d_name);
    sockaddr_storage local{};
    sockaddr_storage peer{};
    socklen_t local_length = sizeof local;
    socklen_t peer_length = sizeof peer;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_length) != 0 ||
        ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0) {
      continue; // not connected (a listening socket, or another kind)
    }
    const auto listener = std::find_if(m_listeners.begin(), m_listeners.end(),
                                       [&](const auto& item) { return accepted_on(local, item.second->bound_name); });
    if (listener == m_listeners.end()) {
      continue;
    }
    EndPointAddress remote;
    try {
      remote = detail::to_endpoint_address(reinterpret_cast<const sockaddr*>(&peer));
    } catch (const std::exception&) {
      continue;
    }
    if (claimed.contains(remote)) {
      continue;
    }
    const auto seen = m_unclaimed_since.find(inode);
    const auto since = seen != m_unclaimed_since.end() ? seen->second : now;
    if (now - since < m_config.connect_timeout) {
      still_unclaimed.emplace(inode, since);
      continue;
    }
    // The descriptor is the provider's: it is shut down, not closed, so that the provider sees the
    // end of the stream, drops its pending request and closes the descriptor itself. The inode is
    // checked again first, in case the number was reused since the directory was read.
    struct stat status {};
    if (::fstat(fd, &status) != 0 || static_cast<std::uint64_t>(status.st_ino) != inode) {
      continue;
    }
    NETIO3_LOG_INFO("libfabric: closing the connection from {} to {}: no connection request within "
                    "connect_timeout ({} ms)",
                    remote.to_string(), listener->second->address.to_string(), m_config.connect_timeout.count());
    if (::shutdown(fd, SHUT_RDWR) != 0) {
      NETIO3_LOG_WARNING("libfabric: shutdown of the silent connection from {} failed: {}", remote.to_string(),
                         detail::errno_text(errno));
    }
  }
  ::closedir(directory);
  m_unclaimed_since = std::move(still_unclaimed);
  run_deferred(lock);
}

std::uint32_t BackendLibfabric::advertised_peer_timeout_ms() const noexcept {
  if (m_keepalive_period.count() == 0) {
    return 0; // peer_timeout 0: this side sends no keepalives
  }
  return static_cast<std::uint32_t>(
      std::min<long long>(m_config.peer_timeout.count(), std::numeric_limits<std::uint32_t>::max()));
}

std::uint32_t BackendLibfabric::silence_limit_for(std::chrono::milliseconds timeout) const noexcept {
  if (m_keepalive_period.count() == 0 || timeout.count() <= 0) {
    return 0;
  }
  // ceil(timeout / period) without overflow; at least keepalive_ticks_per_timeout (the period is
  // at least 1 ms, so a tiny peer_timeout still allows that many ticks of silence).
  const long long period = m_keepalive_period.count();
  const long long ticks = timeout.count() / period + (timeout.count() % period != 0 ? 1 : 0);
  return static_cast<std::uint32_t>(
      std::clamp<long long>(ticks, keepalive_ticks_per_timeout, std::numeric_limits<std::uint32_t>::max() - 1));
}

std::uint32_t BackendLibfabric::receiver_silence_limit(std::uint32_t sender_timeout_ms) const noexcept {
  if (sender_timeout_ms == 0) {
    return 0; // the sender sends no keepalives: an idle connection cannot be told from a dead one
  }
  // The longer of the two timeouts: a sender with a longer peer_timeout sends keepalives less often.
  return silence_limit_for(std::max(m_config.peer_timeout, std::chrono::milliseconds{sender_timeout_ms}));
}

void BackendLibfabric::ensure_keepalive_timer() {
  if (m_keepalive_running || m_shutting_down || !m_keepalive_timer.valid()) {
    return;
  }
  try {
    m_keepalive_timer.start(m_keepalive_period);
    m_keepalive_running = true;
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric backend: cannot start the keepalive timer (peer_timeout is not enforced): {}",
                     error.what());
  }
}

void BackendLibfabric::on_keepalive_timer() {
  Lock lock{m_mutex};
  if (m_shutting_down) {
    return;
  }
  bool watching = false;
  for (auto& [pointer, connection] : m_connections) {
    // Closing does not touch m_connections (tear-down is deferred), so iterating is safe.
    if (connection->state == Connection::State::established && connection->silence_limit_ticks != 0) {
      watching = true;
      keepalive_tick(connection);
    }
  }
  if (!watching && m_keepalive_running) {
    try {
      m_keepalive_timer.stop();
    } catch (const std::exception& error) {
      NETIO3_LOG_ERROR("libfabric backend: cannot stop the keepalive timer: {}", error.what());
    }
    m_keepalive_running = false; // mark_established starts it again
  }
  run_deferred(lock);
}

void BackendLibfabric::keepalive_tick(const std::shared_ptr<Connection>& connection) {
  Connection& watched = *connection;
  if (watched.role == Connection::Role::sender) {
    const bool posted = watched.sent_since_tick;
    watched.sent_since_tick = false;
    if (watched.unacked_count == 0) {
      // The receiver owes nothing, so its silence says nothing. Make it answer: a message that
      // takes a credit comes back as a credit message while the receiver lives.
      watched.silent_ticks = 0;
      if (!posted && watched.credits() > 0 && !watched.free_send_slots.empty()) {
        post_keepalive(watched);
        // The keepalive does not count as traffic: while idle, one goes out every tick, so the
        // receiver (which allows peer_timeout of silence) hears from this side every tick.
        watched.sent_since_tick = false;
      }
      return;
    }
  }
  if (++watched.silent_ticks <= watched.silence_limit_ticks) {
    return;
  }
  const std::string silent_for = ticks_in_ms(watched.silent_ticks - 1, m_keepalive_period);
  std::string reason;
  if (watched.role == Connection::Role::sender) {
    reason = "the receiver returned no credit for more than " + silent_for + " ms with " +
             std::to_string(watched.unacked_count) + " messages in flight (peer_timeout " +
             std::to_string(m_config.peer_timeout.count()) + " ms)";
  } else {
    reason = "no message from the peer for more than " + silent_for + " ms (peer_timeout)";
  }
  NETIO3_LOG_WARNING("libfabric: connection {} is lost: {}", watched.address.to_string(), reason);
  begin_close(connection, loss_notice(watched), reason);
}

void BackendLibfabric::post_keepalive(Connection& connection) {
  const std::uint32_t slot = connection.free_send_slots.pop();
  iovec message{connection.send_header_memory.data() + static_cast<std::size_t>(slot) * slot_header_room,
                wire_header_size};
  void* desc = connection.send_header_registration.desc();
  // NO_RESOURCES (the provider's queue is full) is retried on the next tick; a failure closes the
  // connection inside post_message.
  if (post_message(connection, slot, &message, &desc, 1, 0, false, MessageType::keepalive) == NetioStatus::OK) {
    m_keepalives_posted.fetch_add(1, std::memory_order_relaxed);
  }
}

} // namespace netio3::libfabric
