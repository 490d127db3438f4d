// The waits of an application thread for room, for completed sends and for a free buffer
// (include/netio3/SendWait.hpp; the hub: core/SendWait.hpp). What wakes them is on the data path:
// room_changed and deliver_completed_keys in DataPath.cpp.

#include <chrono>
#include <optional>
#include <string>

#include "libfabric/BackendLibfabric.hpp"
#include "netio3/Exceptions.hpp"

namespace netio3::libfabric {

std::optional<WaitStatus> BackendLibfabric::wait_precheck() const {
  if (m_config.thread_safety != ThreadSafetyModel::SAFE) {
    return WaitStatus::NOT_THREAD_SAFE;
  }
  if (m_evloop->in_loop_thread()) {
    return WaitStatus::ON_LOOP_THREAD;
  }
  return std::nullopt;
}

const Connection* BackendLibfabric::open_sender(const EndPointAddress& address) const {
  const auto found = m_senders.find(address);
  if (m_shutting_down || found == m_senders.end() || found->second->state == Connection::State::closing) {
    return nullptr;
  }
  return found->second.get();
}

WaitStatus BackendLibfabric::wait_for_send_space(const EndPointAddress& address, std::size_t message_size,
                                                 std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("libfabric: wait_for_send_space", timeout);
  if (const auto early = wait_precheck()) {
    return *early;
  }
  // Looked up again by every probe: a connect to a host name may replace the connection object.
  return m_send_wait.wait(timeout, "libfabric: wait_for_send_space", [&]() -> std::optional<WaitStatus> {
    const Lock lock{m_mutex};
    const Connection* const sender = open_sender(address);
    if (sender == nullptr) {
      return WaitStatus::CLOSED;
    }
    const Connection& connection = *sender;
    if (connection.state != Connection::State::established) {
      return std::nullopt; // the established notice wakes us
    }
    if (message_size > connection.peer_max_message || has_room(connection, message_size)) {
      return WaitStatus::READY; // (too large: the send says MESSAGE_TOO_LARGE at once)
    }
    return std::nullopt;
  });
}

WaitStatus BackendLibfabric::wait_for_buffer(const EndPointAddress& address, std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("libfabric: wait_for_buffer", timeout);
  if (const auto early = wait_precheck()) {
    return *early;
  }
  // The same conditions as get_buffer's; woken by room_changed (buffers and credits come back with
  // completions), the established notice, closes, and the reclaim of a closed endpoint's shared buffers.
  return m_send_wait.wait(timeout, "libfabric: wait_for_buffer", [&]() -> std::optional<WaitStatus> {
    const Lock lock{m_mutex};
    const Connection* const sender = open_sender(address);
    if (sender == nullptr) {
      return WaitStatus::CLOSED;
    }
    const Connection& connection = *sender;
    if (pool_of(connection) == nullptr) {
      throw NoBuffersAllocated("libfabric: wait_for_buffer: the send endpoint to " + address.to_string() +
                               " was opened without buffers");
    }
    return has_buffer(connection) ? std::optional<WaitStatus>{WaitStatus::READY} : std::nullopt;
  });
}

std::uint64_t BackendLibfabric::completed_sends(const EndPointAddress& address) {
  const Lock lock{m_mutex};
  return find_sender(address).completed_keys.load(std::memory_order_seq_cst);
}

WaitStatus BackendLibfabric::wait_for_completed_sends(const EndPointAddress& address, std::uint64_t after_count,
                                                      std::chrono::milliseconds timeout) {
  detail::SendWaitHub::check_timeout("libfabric: wait_for_completed_sends", timeout);
  if (const auto early = wait_precheck()) {
    return *early;
  }
  return m_send_wait.wait(timeout, "libfabric: wait_for_completed_sends", [&]() -> std::optional<WaitStatus> {
    const Lock lock{m_mutex};
    const auto found = m_senders.find(address);
    if (m_shutting_down || found == m_senders.end()) {
      return WaitStatus::CLOSED;
    }
    if (found->second->completed_keys.load(std::memory_order_seq_cst) > after_count) {
      return WaitStatus::READY;
    }
    if (found->second->state == Connection::State::closing) {
      return WaitStatus::CLOSED;
    }
    return std::nullopt;
  });
}

} // namespace netio3::libfabric
