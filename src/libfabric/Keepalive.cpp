// The keepalive timer of the libfabric backend: NetworkConfig::peer_timeout. The providers give the
// backend no keepalive of their own (with `tcp` a cut link is never reported), so the backend
// watches silence itself, at a low rate: one backend-wide timer ticks every peer_timeout / 4 while
// a watched connection is established. Senders send a keepalive message when they are idle, and
// the receiver answers it with a credit like any data message, so both sides hear from each other
// at least once per tick while the peer lives. Design and wire format: docs/libfabric-backend.md
// ("Vanished peers: peer_timeout").

#include <algorithm>
#include <limits>
#include <string>

#include "core/Logging.hpp"
#include "libfabric/BackendLibfabric.hpp"

namespace netio3::libfabric {
namespace {

/// `ticks` keepalive periods in milliseconds, for messages.
std::string ticks_in_ms(std::uint32_t ticks, std::chrono::milliseconds period) {
  return std::to_string(static_cast<long long>(ticks) * period.count());
}

} // namespace

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
