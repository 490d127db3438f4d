// Data path of the libfabric backend: the send calls (zero-copy, copying through the bounce ring,
// buffered), credits and receiving. Completion queues are read in Completions.cpp.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <stdexcept>
#include <string>

#include "core/Logging.hpp"
#include "libfabric/BackendLibfabric.hpp"

namespace netio3::libfabric {

// --- looking things up ------------------------------------------------------------------------

Connection& BackendLibfabric::find_sender(const EndPointAddress& address) {
  const auto found = m_senders.find(address);
  if (found == m_senders.end()) {
    throw UnknownSendEndpoint("no send endpoint to " + address.to_string());
  }
  return *found->second;
}

SendBufferPool* BackendLibfabric::pool_of(const Connection& connection) const noexcept {
  if (connection.uses_shared_send_pool) {
    return m_shared_send_pool.get();
  }
  return connection.own_pool.get();
}

NetioStatus BackendLibfabric::check_ready(const Connection& connection, std::size_t message_size) const noexcept {
  if (connection.state == Connection::State::closing) {
    return NetioStatus::FAILED;
  }
  if (connection.state != Connection::State::established) {
    return NetioStatus::NO_RESOURCES;
  }
  if (message_size > connection.peer_max_message) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  if (connection.credits() == 0 || connection.free_send_slots.empty()) {
    return NetioStatus::NO_RESOURCES;
  }
  return NetioStatus::OK;
}

bool BackendLibfabric::in_region(const Connection& connection, const void* data, std::size_t size) noexcept {
  if (connection.zero_copy_size == 0) {
    return false;
  }
  const auto start = reinterpret_cast<std::uintptr_t>(connection.zero_copy_start);
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  return begin >= start && begin - start <= connection.zero_copy_size &&
         size <= connection.zero_copy_size - (begin - start);
}

bool BackendLibfabric::ensure_ring(Connection& connection) {
  if (connection.ring) {
    return true;
  }
  // Room for max_unsent_bytes of copies, at least one message of the peer's largest size, and no
  // more than the credit window can have in flight.
  const std::size_t message = align_up(wire_header_size + connection.peer_max_message, 64);
  const std::size_t window = std::max<std::size_t>(connection.window, 1);
  const std::size_t in_flight =
      message > m_config.max_unsent_bytes / window ? m_config.max_unsent_bytes : message * window;
  const std::size_t capacity = std::max(message, std::min(m_config.max_unsent_bytes, in_flight));
  try {
    connection.ring_memory = HostMemory{capacity};
    connection.ring_registration = Registration{connection.domain->domain.get(), connection.ring_memory.data(),
                                                connection.ring_memory.size(), FI_SEND, connection.domain->take_key()};
    connection.ring = std::make_unique<BounceRing>(connection.ring_memory.size(), connection.send_slots.size());
  } catch (const std::exception& error) {
    NETIO3_LOG_ERROR("libfabric: cannot set up the bounce buffers ({} bytes) of {}: {}", capacity,
                     connection.address.to_string(), error.what());
    connection.ring_registration.reset();
    connection.ring_memory = HostMemory{};
    return false;
  }
  return true;
}

// --- sending ----------------------------------------------------------------------------------

void BackendLibfabric::release_slot(Connection& connection, std::uint32_t slot) {
  SendSlot& entry = connection.send_slots[slot];
  if (entry.ring_chunk != BounceRing::no_chunk && connection.ring) {
    connection.ring->release(entry.ring_chunk);
  }
  entry.ring_chunk = BounceRing::no_chunk;
  if (entry.pool_buffer >= 0) {
    SendBufferPool* pool = entry.shared_pool ? m_shared_send_pool.get() : connection.own_pool.get();
    if (pool != nullptr) {
      pool->give_back(static_cast<std::size_t>(entry.pool_buffer));
    }
  }
  entry.pool_buffer = -1;
  entry.shared_pool = false;
  if (entry.busy) {
    entry.busy = false;
    --connection.sends_outstanding;
    --connection.queue->sends_outstanding;
  }
  connection.free_send_slots.push(slot);
}

NetioStatus BackendLibfabric::post_message(Connection& connection, std::uint32_t slot, const iovec* iov, void** desc,
                                           std::size_t count, std::uint64_t key, bool has_key, MessageType type) {
  encode(WireHeader{type, connection.messages_sent_total}, static_cast<std::uint8_t*>(iov[0].iov_base));
  OperationContext* context = &connection.send_contexts[slot];
  const ssize_t rc = count == 1 ? fi_send(connection.ep.get(), iov[0].iov_base, iov[0].iov_len, desc[0], 0, context)
                                : fi_sendv(connection.ep.get(), iov, desc, count, 0, context);
  if (rc != 0) {
    release_slot(connection, slot);
    if (rc == -FI_EAGAIN) {
      // The provider's queue is full: it needs progress, which the timer guarantees.
      connection.queue->needs_poll = true;
      ensure_progress_timer();
      connection.provider_full = true; // until a send completes
      std::size_t bytes = 0;
      for (std::size_t i = 0; i < count; ++i) {
        bytes += iov[i].iov_len;
      }
      return note_refusal(connection, NetioStatus::NO_RESOURCES, bytes - std::min(bytes, wire_header_size));
    }
    const auto shared = m_connections.find(&connection);
    if (shared != m_connections.end()) {
      begin_close(shared->second, loss_notice(connection), "fi_send failed: " + fabric_error_text(rc));
    }
    return NetioStatus::FAILED;
  }
  connection.send_slots[slot].busy = true;
  ++connection.sends_outstanding;
  ++connection.queue->sends_outstanding;
  ++connection.messages_sent_total;
  connection.unacked[(connection.unacked_first + connection.unacked_count) % connection.unacked.size()] =
      UnackedMessage{key, has_key};
  ++connection.unacked_count;
  connection.sent_since_tick = true; // the receiver hears from this side: no keepalive needed
  note_posted(connection);
  return NetioStatus::OK;
}

NetioStatus BackendLibfabric::send_copied(Connection& connection, std::span<const iovec> payload,
                                          std::size_t payload_size, std::span<const std::uint8_t> header_data,
                                          std::uint64_t key) {
  if (!ensure_ring(connection)) {
    return NetioStatus::FAILED;
  }
  const std::size_t message_size = wire_header_size + header_data.size() + payload_size;
  std::size_t offset = 0;
  const std::uint32_t chunk = connection.ring->allocate(align_up(message_size, 64), offset);
  if (chunk == BounceRing::no_chunk) {
    return note_refusal(connection, NetioStatus::NO_RESOURCES, header_data.size() + payload_size);
  }
  std::uint8_t* target = connection.ring_memory.data() + offset;
  std::uint8_t* position = target + wire_header_size;
  if (!header_data.empty()) {
    std::memcpy(position, header_data.data(), header_data.size());
    position += header_data.size();
  }
  for (const iovec& piece : payload) {
    if (piece.iov_len > 0) {
      std::memcpy(position, piece.iov_base, piece.iov_len);
      position += piece.iov_len;
    }
  }
  const std::uint32_t slot = connection.free_send_slots.pop();
  connection.send_slots[slot].ring_chunk = chunk;
  iovec message{target, message_size};
  void* desc = connection.ring_registration.desc();
  return post_message(connection, slot, &message, &desc, 1, key, true);
}

NetioStatus BackendLibfabric::send_zero_copy(const EndPointAddress& address, std::span<const iovec> payload,
                                             std::span<const std::uint8_t> header_data, std::uint64_t key) {
  const Lock lock{m_mutex};
  Connection& connection = find_sender(address);
  std::size_t payload_size = 0;
  std::size_t pieces = 0;
  for (const iovec& piece : payload) {
    if (piece.iov_len == 0) {
      continue;
    }
    if (piece.iov_base == nullptr) {
      return NetioStatus::INVALID_ARGUMENT;
    }
    if (!in_region(connection, piece.iov_base, piece.iov_len)) {
      return NetioStatus::OUTSIDE_REGISTERED_REGION;
    }
    payload_size += piece.iov_len;
    ++pieces;
  }
  if (const NetioStatus status = check_ready(connection, header_data.size() + payload_size);
      status != NetioStatus::OK) {
    return note_refusal(connection, status, header_data.size() + payload_size);
  }
  if (pieces + 1 > connection.iov_limit) {
    // More pieces than the provider takes in one send: copied into the bounce ring instead.
    return send_copied(connection, payload, payload_size, header_data, key);
  }
  const std::uint32_t slot = connection.free_send_slots.pop();
  std::array<iovec, max_iov_entries> iov{};
  std::array<void*, max_iov_entries> desc{};
  const std::size_t prefix_size = wire_header_size + header_data.size();
  if (prefix_size <= slot_header_room) {
    std::uint8_t* room = connection.send_header_memory.data() + slot * slot_header_room;
    if (!header_data.empty()) {
      std::memcpy(room + wire_header_size, header_data.data(), header_data.size());
    }
    iov[0] = iovec{room, prefix_size};
    desc[0] = connection.send_header_registration.desc();
  } else {
    // Large header data: the prefix goes through the bounce ring.
    std::size_t offset = 0;
    const std::uint32_t chunk =
        ensure_ring(connection) ? connection.ring->allocate(align_up(prefix_size, 64), offset) : BounceRing::no_chunk;
    if (chunk == BounceRing::no_chunk) {
      connection.free_send_slots.push(slot);
      return connection.ring ? note_refusal(connection, NetioStatus::NO_RESOURCES, header_data.size() + payload_size)
                             : NetioStatus::FAILED;
    }
    std::uint8_t* room = connection.ring_memory.data() + offset;
    std::memcpy(room + wire_header_size, header_data.data(), header_data.size());
    connection.send_slots[slot].ring_chunk = chunk;
    iov[0] = iovec{room, prefix_size};
    desc[0] = connection.ring_registration.desc();
  }
  std::size_t count = 1;
  for (const iovec& piece : payload) {
    if (piece.iov_len > 0) {
      iov[count] = piece;
      desc[count] = connection.zero_copy_registration.desc();
      ++count;
    }
  }
  return post_message(connection, slot, iov.data(), desc.data(), count, key, true);
}

NetioStatus BackendLibfabric::send_data(const EndPointAddress& address, std::span<std::uint8_t> data,
                                        std::span<const std::uint8_t> header_data, std::uint64_t key) {
  if (data.data() == nullptr && !data.empty()) {
    return NetioStatus::INVALID_ARGUMENT;
  }
  const iovec piece{data.data(), data.size()};
  return send_zero_copy(address, std::span<const iovec>{&piece, 1}, header_data, key);
}

NetioStatus BackendLibfabric::send_data(const EndPointAddress& address, std::span<const iovec> iov,
                                        std::span<const std::uint8_t> header_data, std::uint64_t key) {
  return send_zero_copy(address, iov, header_data, key);
}

NetioStatus BackendLibfabric::send_data_copy(const EndPointAddress& address, std::span<const std::uint8_t> data,
                                             std::span<const std::uint8_t> header_data, std::uint64_t key) {
  if (data.data() == nullptr && !data.empty()) {
    return NetioStatus::INVALID_ARGUMENT;
  }
  const iovec piece{const_cast<std::uint8_t*>(data.data()), data.size()};
  return send_data_copy(address, std::span<const iovec>{&piece, 1}, header_data, key);
}

NetioStatus BackendLibfabric::send_data_copy(const EndPointAddress& address, std::span<const iovec> iov,
                                             std::span<const std::uint8_t> header_data, std::uint64_t key) {
  const Lock lock{m_mutex};
  Connection& connection = find_sender(address);
  std::size_t payload_size = 0;
  for (const iovec& piece : iov) {
    if (piece.iov_base == nullptr && piece.iov_len > 0) {
      return NetioStatus::INVALID_ARGUMENT;
    }
    payload_size += piece.iov_len;
  }
  if (const NetioStatus status = check_ready(connection, header_data.size() + payload_size);
      status != NetioStatus::OK) {
    return note_refusal(connection, status, header_data.size() + payload_size);
  }
  return send_copied(connection, iov, payload_size, header_data, key);
}

NetworkBuffer* BackendLibfabric::get_buffer(const EndPointAddress& address) {
  const Lock lock{m_mutex};
  Connection& connection = find_sender(address);
  SendBufferPool* pool = pool_of(connection);
  if (pool == nullptr) {
    throw NoBuffersAllocated("send endpoint to " + address.to_string() + " was opened without buffers");
  }
  if (connection.state != Connection::State::established) {
    return nullptr; // on_connection_established_cb says when (and wakes wait_for_buffer)
  }
  if (connection.credits() == 0) {
    return note_buffer_refusal(connection);
  }
  NetworkBuffer* buffer = pool->take(&connection);
  connection.pool_min_free = std::min(connection.pool_min_free, pool->free_count());
  return buffer != nullptr ? buffer : note_buffer_refusal(connection);
}

NetioStatus BackendLibfabric::send_buffer(const EndPointAddress& address, NetworkBuffer* buffer) {
  const Lock lock{m_mutex};
  Connection& connection = find_sender(address);
  SendBufferPool* pool = pool_of(connection);
  if (pool == nullptr || !pool->is_handed_out_to(buffer, &connection)) {
    return NetioStatus::FAILED;
  }
  if (const NetioStatus status = check_ready(connection, buffer->pos()); status != NetioStatus::OK) {
    return note_refusal(connection, status, buffer->pos());
  }
  const std::uint32_t slot = connection.free_send_slots.pop();
  const std::size_t index = buffer->index();
  iovec message{pool->frame(index), wire_header_size + buffer->pos()};
  void* desc = connection.uses_shared_send_pool ? connection.domain->shared_send.desc()
                                                : connection.own_pool_registration.desc();
  const NetioStatus status = post_message(connection, slot, &message, &desc, 1, 0, false);
  if (status == NetioStatus::OK) {
    pool->mark_in_flight(index);
    connection.send_slots[slot].pool_buffer = static_cast<std::int64_t>(index);
    connection.send_slots[slot].shared_pool = connection.uses_shared_send_pool;
  }
  return status;
}

std::size_t BackendLibfabric::get_num_available_buffers(const EndPointAddress& address) {
  const Lock lock{m_mutex};
  Connection& connection = find_sender(address);
  const SendBufferPool* pool = pool_of(connection);
  if (pool == nullptr) {
    throw NoBuffersAllocated("send endpoint to " + address.to_string() + " was opened without buffers");
  }
  const std::size_t current = pool->free_count();
  const std::size_t result = connection.pool_queried ? std::min(connection.pool_min_free, current) : current;
  connection.pool_queried = true;
  connection.pool_min_free = static_cast<std::size_t>(-1);
  return result;
}

// --- receiving (the completion queues are read in Completions.cpp) -----------------------------

bool BackendLibfabric::post_receive(Connection& connection, std::uint32_t index) {
  const ssize_t rc = fi_recv(connection.ep.get(), connection.receive_buffers[index], connection.receive_buffer_size,
                             connection.receive_desc, 0, &connection.receive_contexts[index]);
  if (rc == 0) {
    return true;
  }
  const auto shared = m_connections.find(&connection);
  if (shared != m_connections.end()) {
    begin_close(shared->second, loss_notice(connection), "reposting a receive buffer failed: " + fabric_error_text(rc));
  }
  return false;
}

bool BackendLibfabric::handle_receive(Connection& connection, std::uint32_t index, std::size_t length, Lock& lock) {
  if (connection.state == Connection::State::closing) {
    return false;
  }
  connection.silent_ticks = 0; // the peer lives (peer_timeout)
  const std::span<const std::uint8_t> message{connection.receive_buffers[index], length};
  const std::optional<WireHeader> header = decode_wire_header(message);
  if (connection.role == Connection::Role::receiver) {
    if (!header || (header->type != MessageType::data && header->type != MessageType::keepalive)) {
      begin_close(connection.shared_from_this(), loss_notice(connection),
                  "protocol violation: malformed message of " + std::to_string(length) + " bytes from the peer");
      return false;
    }
    if (header->value != connection.messages_received_total) {
      begin_close(connection.shared_from_this(), loss_notice(connection),
                  "protocol violation: message " + std::to_string(header->value) + " arrived where " +
                      std::to_string(connection.messages_received_total) + " was due");
      return false;
    }
    ++connection.messages_received_total;
    if (connection.state == Connection::State::accepting) {
      // The sender saw the connection complete before this side did: announce it first.
      mark_established(connection);
    }
    if (!m_notices.empty()) {
      // Notices queued earlier in this event (e.g. the progress timer read FI_CONNECTED for this
      // connection just before its completions) come before its data: established, then data.
      deliver_notices(lock);
      if (connection.state == Connection::State::closing) {
        return false;
      }
    }
    // A keepalive is counted and answered with its credit like data, but never delivered.
    if (header->type == MessageType::data) {
      const std::span<const std::uint8_t> payload = message.subspan(wire_header_size);
      if (m_config.on_data_from_cb) {
        call_user(lock, "on_data_from_cb", [&] { m_config.on_data_from_cb(connection.address, payload); });
      } else if (m_config.on_data_cb) {
        call_user(lock, "on_data_cb", [&] { m_config.on_data_cb(payload); });
      }
      if (connection.state == Connection::State::closing || m_shutting_down) {
        return false;
      }
    }
    if (!post_receive(connection, index)) {
      return false;
    }
    ++connection.credits_available_total;
    // Credits go back in batches of a quarter window while a burst is read (more at the end of the
    // burst), so that the sender refills while the rest of the burst is delivered.
    if (connection.credits_available_total - connection.credits_sent_total >=
        std::max<std::uint32_t>(1, connection.window / 4)) {
      return_credits(connection);
    }
    return true;
  }

  // A send endpoint receives only credit messages.
  if (!header || header->type != MessageType::credit) {
    begin_close(connection.shared_from_this(), loss_notice(connection),
                "protocol violation: unexpected message of " + std::to_string(length) + " bytes from the receiver");
    return false;
  }
  const std::uint32_t returned = header->value - connection.credits_granted_total;
  if (returned > connection.unacked_count) {
    begin_close(connection.shared_from_this(), loss_notice(connection),
                "protocol violation: the receiver returned " + std::to_string(returned) + " credits for " +
                    std::to_string(connection.unacked_count) + " messages in flight");
    return false;
  }
  connection.credits_granted_total = header->value;
  for (std::uint32_t i = 0; i < returned; ++i) {
    const UnackedMessage& done = connection.unacked[connection.unacked_first];
    if (done.has_key) {
      m_completed_keys.push_back(done.key);
    }
    connection.unacked_first = (connection.unacked_first + 1) % connection.unacked.size();
    --connection.unacked_count;
  }
  const bool reposted = post_receive(connection, index);
  deliver_completed_keys(connection, lock); // even when closing: these keys left `unacked`
  return reposted;
}

void BackendLibfabric::return_credits(Connection& connection) {
  if (connection.state != Connection::State::established || !connection.provider_connected ||
      connection.credits_available_total == connection.credits_sent_total || connection.free_send_slots.empty()) {
    return; // nothing to return, or a send slot frees up later (its completion calls this again)
  }
  const std::uint32_t slot = connection.free_send_slots.pop();
  std::uint8_t* room = connection.send_header_memory.data() + slot * slot_header_room;
  encode(WireHeader{MessageType::credit, connection.credits_available_total}, room);
  const ssize_t rc = fi_send(connection.ep.get(), room, wire_header_size, connection.send_header_registration.desc(), 0,
                             &connection.send_contexts[slot]);
  if (rc != 0) {
    connection.free_send_slots.push(slot);
    if (rc == -FI_EAGAIN) {
      connection.queue->needs_poll = true; // retried when the timer polls the queue
      ensure_progress_timer();
      return;
    }
    const auto shared = m_connections.find(&connection);
    if (shared != m_connections.end()) {
      begin_close(shared->second, loss_notice(connection), "sending credits failed: " + fabric_error_text(rc));
    }
    return;
  }
  connection.send_slots[slot].busy = true;
  ++connection.sends_outstanding;
  ++connection.queue->sends_outstanding;
  connection.credits_sent_total = connection.credits_available_total;
  note_posted(connection);
}

void BackendLibfabric::deliver_completed_keys(const Connection& connection, Lock& lock) {
  if (m_completed_keys.empty()) {
    return;
  }
  if (m_config.on_send_completed_cb) {
    for (std::size_t i = 0; i < m_completed_keys.size() && !m_shutting_down; ++i) {
      const std::uint64_t key = m_completed_keys[i];
      call_user(lock, "on_send_completed_cb", [&] { m_config.on_send_completed_cb(connection.address, key); });
    }
  }
  if (!m_shutting_down) {
    connection.completed_keys.fetch_add(m_completed_keys.size(), std::memory_order_seq_cst);
  }
  m_completed_keys.clear();
}

// --- room for waiters (the waits themselves: SendWait.cpp) ---------------------------------------

bool BackendLibfabric::has_room(const Connection& connection, std::size_t message_size) const noexcept {
  if (check_ready(connection, message_size) != NetioStatus::OK || connection.provider_full) {
    return false;
  }
  return !connection.ring || connection.ring->can_allocate(align_up(wire_header_size + message_size, 64));
}

NetioStatus BackendLibfabric::note_refusal(Connection& connection, NetioStatus status,
                                           std::size_t message_size) const noexcept {
  if (status == NetioStatus::NO_RESOURCES && m_config.on_send_space_cb &&
      connection.state == Connection::State::established) {
    connection.space_wanted = true;
    connection.space_wanted_bytes = message_size;
  }
  return status;
}

bool BackendLibfabric::has_buffer(const Connection& connection) const noexcept {
  const SendBufferPool* pool = pool_of(connection);
  return pool != nullptr && connection.state == Connection::State::established && connection.credits() > 0 &&
         pool->free_count() > 0;
}

NetworkBuffer* BackendLibfabric::note_buffer_refusal(Connection& connection) noexcept {
  if (m_config.on_send_space_cb) {
    connection.buffer_wanted = true;
    m_shared_buffer_wanted = m_shared_buffer_wanted || connection.uses_shared_send_pool;
  }
  return nullptr;
}

void BackendLibfabric::room_changed(Connection& connection, Lock& lock) {
  // Under the lock the waiters' probes take. Buffers come back in release_slot and credits in
  // handle_receive, both in the completions drained before this call: wait_for_buffer's waiters too.
  m_send_wait.notify();
  if (connection.space_wanted && !m_shutting_down && has_room(connection, connection.space_wanted_bytes)) {
    connection.space_wanted = false;
    call_user(lock, "on_send_space_cb", [&] { m_config.on_send_space_cb(connection.address); });
  }
  if (connection.uses_shared_send_pool ? m_shared_buffer_wanted : connection.buffer_wanted) {
    buffers_returned(connection, lock);
  }
}

void BackendLibfabric::buffers_returned(Connection& connection, Lock& lock) {
  if (m_shutting_down) {
    return;
  }
  if (!connection.uses_shared_send_pool) {
    if (has_buffer(connection)) {
      connection.buffer_wanted = false;
      call_user(lock, "on_send_space_cb", [&] { m_config.on_send_space_cb(connection.address); });
    }
    return;
  }
  // A buffer of the shared pool that this endpoint's completion returned may be the one another
  // endpoint's get_buffer was refused: look at every endpoint that waits for one (only while some do).
  m_shared_buffer_wanted = false;
  m_buffer_ready.clear();
  for (const auto& [address, sender] : m_senders) {
    if (!sender->buffer_wanted) {
      continue;
    }
    if (has_buffer(*sender)) {
      sender->buffer_wanted = false;
      m_buffer_ready.push_back(sender);
    } else {
      m_shared_buffer_wanted = true; // still waiting (no credit, or the buffers went to others)
    }
  }
  // Indexed, and without holding the lock in the callbacks: they may open or close endpoints.
  for (std::size_t i = 0; i < m_buffer_ready.size(); ++i) {
    const std::shared_ptr<Connection> ready = m_buffer_ready[i];
    if (ready->state == Connection::State::established) {
      call_user(lock, "on_send_space_cb", [&] { m_config.on_send_space_cb(ready->address); });
    }
  }
  m_buffer_ready.clear();
}

} // namespace netio3::libfabric
