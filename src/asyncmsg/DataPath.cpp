// BackendAsyncmsg, data path: sends (copying, zero-copy, buffered), writing the send queue,
// completions, and receiving.
//
// Sending: a message sent while nothing is queued for its connection (and no flush is pending) is
// written at once from the calling thread with one `sendmsg`, straight from the caller's memory:
// the lowest latency. Otherwise it is appended to the connection's queue and the loop writes
// everything queued with one `sendmsg` of many iovecs: the highest throughput. A burst therefore
// costs one system call for the first message and one per batch after it. Completions are always
// reported from the loop, batched.
//
// Receiving: one `recv` into the connection's read buffer, then every complete message is handed
// to the data callback straight from that buffer.

#include <algorithm>
#include <cerrno>
#include <string>
#include <sys/socket.h>

#include "asyncmsg/BackendAsyncmsg.hpp"
#include "core/Resolve.hpp"

namespace netio3::asyncmsg {

namespace {

using detail::errno_text;

/// Messages of at most this many pieces may be written directly from the send call (the iovec
/// array lives on the stack); larger ones always go through the queue.
constexpr std::size_t max_direct_pieces{30};
/// Bounded work per event, so that one busy connection does not starve the others.
constexpr int max_writes_per_event{8};
constexpr int max_reads_per_event{4};
/// Flush-and-complete rounds per service of a connection that keeps getting new messages.
constexpr int max_service_rounds{4};

bool would_block(int error) noexcept {
  return error == EAGAIN || error == EWOULDBLOCK;
}

ssize_t send_iov(int fd, iovec* iov, std::size_t count) noexcept {
  msghdr message{};
  message.msg_iov = iov;
  message.msg_iovlen = count;
  ssize_t sent = -1;
  do {
    sent = ::sendmsg(fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  return sent;
}

/// Appends a message (frame header, header data, pieces) to `queue`, without its first `skip`
/// bytes (already written). Frame header and header data are always copied; the pieces are copied
/// or referenced.
void enqueue_message(SendQueue& queue, std::span<const std::uint8_t> frame_header, std::span<const std::uint8_t> header,
                     std::span<const iovec> pieces, bool copy, std::size_t skip) noexcept {
  const auto append = [&](const std::uint8_t* data, std::size_t size, bool reference) {
    if (skip >= size) {
      skip -= size;
      return;
    }
    data += skip;
    size -= skip;
    skip = 0;
    if (reference) {
      queue.append_user(data, size);
    } else {
      queue.append_copy({data, size});
    }
  };
  append(frame_header.data(), frame_header.size(), false);
  append(header.data(), header.size(), false);
  for (const iovec& piece : pieces) {
    append(static_cast<const std::uint8_t*>(piece.iov_base), piece.iov_len, !copy);
  }
}

/// Status of a send on a connection that is not established (yet, or any more).
NetioStatus unavailable_status(const SendConnection& connection) noexcept {
  return connection.state == ConnectionState::closed || connection.broken ? NetioStatus::FAILED
                                                                          : NetioStatus::NO_RESOURCES;
}

} // namespace

// --- sends --------------------------------------------------------------------------------------

NetioStatus BackendAsyncmsg::send_data(const EndPointAddress& address, std::span<std::uint8_t> data,
                                       std::span<const std::uint8_t> header_data, std::uint64_t key) {
  const iovec piece{data.data(), data.size()};
  return send_message(address, {&piece, 1}, header_data, key, SendMode::zero_copy);
}

NetioStatus BackendAsyncmsg::send_data(const EndPointAddress& address, std::span<const iovec> iov,
                                       std::span<const std::uint8_t> header_data, std::uint64_t key) {
  return send_message(address, iov, header_data, key, SendMode::zero_copy);
}

NetioStatus BackendAsyncmsg::send_data_copy(const EndPointAddress& address, std::span<const std::uint8_t> data,
                                            std::span<const std::uint8_t> header_data, std::uint64_t key) {
  const iovec piece{const_cast<std::uint8_t*>(data.data()), data.size()};
  return send_message(address, {&piece, 1}, header_data, key, SendMode::copy);
}

NetioStatus BackendAsyncmsg::send_data_copy(const EndPointAddress& address, std::span<const iovec> iov,
                                            std::span<const std::uint8_t> header_data, std::uint64_t key) {
  return send_message(address, iov, header_data, key, SendMode::copy);
}

NetioStatus BackendAsyncmsg::send_message(const EndPointAddress& address, std::span<const iovec> pieces,
                                          std::span<const std::uint8_t> header_data, std::uint64_t key, SendMode mode) {
  const std::shared_lock map_lock{m_map_mutex}; // keeps the connection alive during the call
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    throw UnknownSendEndpoint("asyncmsg: send: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  SendConnection& connection = *found->second;
  if (header_data.data() == nullptr && !header_data.empty()) {
    return NetioStatus::INVALID_ARGUMENT;
  }
  std::uint64_t payload = header_data.size();
  bool too_large = false;
  for (const iovec& piece : pieces) {
    if (piece.iov_base == nullptr && piece.iov_len != 0) {
      return NetioStatus::INVALID_ARGUMENT;
    }
    payload += piece.iov_len;
    too_large = too_large || payload > max_frame_payload; // also guards the sum against overflow
    if (too_large) {
      payload = 0;
    }
  }

  const std::unique_lock lock{connection.mutex};
  if (connection.state != ConnectionState::established || connection.broken) {
    return unavailable_status(connection);
  }
  if (too_large || payload > connection.peer_limit) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const std::size_t frame = frame_header_size + payload;
  SendQueue& queue = connection.queue;
  if (!queue.would_accept(frame)) {
    return NetioStatus::NO_RESOURCES;
  }
  std::array<std::uint8_t, frame_header_size> frame_header{};
  encode_frame_header(frame_header.data(), static_cast<std::uint32_t>(payload));
  const bool copy = mode == SendMode::copy;

  std::size_t written = 0;
  if (queue.empty() && !connection.service_requested && !connection.blocked && pieces.size() <= max_direct_pieces) {
    // Nothing ahead of this message: write it now, from where it is.
    try {
      queue.reserve(0, 0); // room for its completion record
    } catch (const std::bad_alloc&) {
      return NetioStatus::NO_RESOURCES;
    }
    std::array<iovec, max_direct_pieces + 2> iov{};
    std::size_t count = 0;
    iov[count++] = iovec{frame_header.data(), frame_header.size()};
    if (!header_data.empty()) {
      iov[count++] = iovec{const_cast<std::uint8_t*>(header_data.data()), header_data.size()};
    }
    for (const iovec& piece : pieces) {
      if (piece.iov_len != 0) {
        iov[count++] = piece;
      }
    }
    const ssize_t sent = send_iov(connection.fd.get(), iov.data(), count);
    if (sent < 0 && !would_block(errno)) {
      NETIO3_LOG_INFO("asyncmsg: writing to {} failed: {}", address.to_string(), errno_text(errno));
      connection.broken = true;
      request_service_locked(connection); // the loop closes the connection
      return NetioStatus::FAILED;
    }
    written = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    if (written == frame) {
      queue.record_written_message(frame, Completion::Kind::key, key);
      request_service_locked(connection); // its completion is reported from the loop
      return NetioStatus::OK;
    }
  }
  try {
    queue.reserve(copy ? frame - written : frame_header_size + header_data.size(), copy ? 0 : pieces.size());
  } catch (const std::bad_alloc&) {
    if (written > 0) {
      // Part of the message is on the wire and the rest cannot be kept: the stream is unusable.
      NETIO3_LOG_ERROR("asyncmsg: no memory to queue the rest of a message to {}; closing", address.to_string());
      connection.broken = true;
      request_service_locked(connection);
      return NetioStatus::FAILED;
    }
    return NetioStatus::NO_RESOURCES;
  }
  if (written > 0) {
    queue.skip_written(written);
  }
  enqueue_message(queue, frame_header, header_data, pieces, copy, written);
  queue.end_message(Completion::Kind::key, key);
  if (!connection.blocked) {
    request_service_locked(connection); // else the writable event flushes
  }
  return NetioStatus::OK;
}

NetioStatus BackendAsyncmsg::send_buffer(const EndPointAddress& address, NetworkBuffer* buffer) {
  const std::shared_lock map_lock{m_map_mutex};
  const auto found = m_send_endpoints.find(address);
  if (found == m_send_endpoints.end()) {
    throw UnknownSendEndpoint("asyncmsg: send_buffer: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  SendConnection& connection = *found->second;
  BufferPool* const pool = connection.pool;
  if (pool == nullptr || !pool->owns(buffer)) {
    return NetioStatus::FAILED; // not a buffer of this endpoint's pool
  }
  const std::unique_lock lock{connection.mutex};
  if (connection.state != ConnectionState::established || connection.broken) {
    return unavailable_status(connection);
  }
  const std::size_t payload = buffer->pos();
  if (payload > connection.peer_limit) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const std::size_t frame = frame_header_size + payload;
  SendQueue& queue = connection.queue;
  if (!queue.would_accept(frame)) {
    return NetioStatus::NO_RESOURCES;
  }
  if (!pool->start_send(*buffer)) {
    return NetioStatus::FAILED; // already being sent (or given back)
  }
  const std::size_t index = buffer->index();
  const std::uint8_t* const start = pool->frame(index, static_cast<std::uint32_t>(payload));

  std::size_t written = 0;
  if (queue.empty() && !connection.service_requested && !connection.blocked) {
    ssize_t sent = -1;
    do {
      sent = ::send(connection.fd.get(), start, frame, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && !would_block(errno)) {
      NETIO3_LOG_INFO("asyncmsg: writing to {} failed: {}", address.to_string(), errno_text(errno));
      pool->cancel_send(index);
      connection.broken = true;
      request_service_locked(connection);
      return NetioStatus::FAILED;
    }
    written = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    if (written == frame) {
      pool->release(index); // buffered sends report nothing: the buffer is free again
      return NetioStatus::OK;
    }
  }
  try {
    queue.reserve(0, 1);
  } catch (const std::bad_alloc&) {
    if (written > 0) {
      NETIO3_LOG_ERROR("asyncmsg: no memory to queue the rest of a buffer to {}; closing", address.to_string());
      connection.broken = true;
      request_service_locked(connection);
      return NetioStatus::FAILED;
    }
    pool->cancel_send(index);
    return NetioStatus::NO_RESOURCES;
  }
  if (written > 0) {
    queue.skip_written(written);
  }
  queue.append_user(start + written, frame - written);
  queue.end_message(Completion::Kind::buffer, index);
  if (!connection.blocked) {
    request_service_locked(connection);
  }
  return NetioStatus::OK;
}

// --- writing and completions (loop thread) ------------------------------------------------------

void BackendAsyncmsg::service(SendConnection& connection) {
  if (m_shutting_down.load(std::memory_order_relaxed)) {
    return;
  }
  bool broken = false;
  {
    const std::lock_guard lock{connection.mutex};
    broken = connection.broken && connection.state != ConnectionState::closed;
  }
  if (broken) {
    close_send_connection(connection, CloseReason::lost);
    return;
  }
  // `service_requested` stays set while the connection is being serviced, so that senders that
  // append meanwhile do not wake the loop again: whatever they append is picked up below.
  for (int round = 0;; ++round) {
    flush(connection);
    deliver_completions(connection);
    {
      const std::lock_guard lock{connection.mutex};
      if (connection.state == ConnectionState::established && !connection.broken && !connection.blocked &&
          !connection.queue.empty()) {
        if (round + 1 < max_service_rounds) {
          continue; // appended meanwhile: write it now
        }
        // Still more: continue after the loop has looked at its other fds.
        hand_to_signal_locked(connection);
        return;
      }
      // Done, or the writable event takes over.
      connection.service_requested = false;
      broken = connection.broken && connection.state != ConnectionState::closed;
    }
    if (broken) {
      close_send_connection(connection, CloseReason::lost); // a sender's write failed meanwhile
    }
    return;
  }
}

void BackendAsyncmsg::flush(SendConnection& connection) {
  const int fd = connection.fd.get();
  int failure = 0;
  for (int round = 0; round < max_writes_per_event; ++round) {
    std::size_t bytes = 0;
    std::size_t count = 0;
    {
      const std::lock_guard lock{connection.mutex};
      if (connection.state != ConnectionState::established || connection.broken || connection.queue.empty()) {
        break;
      }
      count = connection.queue.gather(m_iov.data(), m_iov.size(), bytes);
    }
    // Written without the lock: senders keep appending meanwhile.
    const ssize_t sent = send_iov(fd, m_iov.data(), count);
    const int error = errno;
    {
      const std::lock_guard lock{connection.mutex};
      connection.queue.finish_write(sent > 0 ? static_cast<std::size_t>(sent) : 0);
    }
    if (sent < 0 && !would_block(error)) {
      failure = error;
      break;
    }
    if (sent < 0 || static_cast<std::size_t>(sent) < bytes) {
      break; // the socket is full: the writable event resumes
    }
  }
  if (failure != 0) {
    NETIO3_LOG_INFO("asyncmsg: the connection to {} was lost: {}", connection.address.to_string(), errno_text(failure));
    close_send_connection(connection, CloseReason::lost);
    return;
  }
  bool pending = false;
  {
    const std::lock_guard lock{connection.mutex};
    pending = connection.state == ConnectionState::established && !connection.broken && !connection.queue.empty();
    connection.blocked = pending; // senders need not request service: the writable event flushes
  }
  if (connection.registered && pending != connection.write_interest) {
    m_evloop->set_write_interest(fd, pending);
    connection.write_interest = pending;
  }
}

void BackendAsyncmsg::deliver_completions(SendConnection& connection) {
  {
    const std::lock_guard lock{connection.mutex};
    if (connection.state == ConnectionState::closed || connection.user_closed.load() ||
        !connection.queue.has_finished_messages()) {
      return;
    }
    connection.queue.pop_finished([&](const Completion& completion) {
      if (completion.kind == Completion::Kind::buffer) {
        connection.pool->release(completion.value);
      } else {
        m_completed_keys.push_back(completion.value); // reserved: grows only in the first bursts
      }
    });
  }
  const std::size_t count = m_completed_keys.size();
  std::size_t index = 0;
  for (; index < count; ++index) {
    if (connection.user_closed.load(std::memory_order_relaxed)) {
      break; // closed from a callback: the rest comes with the pending keys
    }
    invoke("on_send_completed", m_config.on_send_completed_cb, connection.address, m_completed_keys[index]);
  }
  if (index < count) {
    connection.undelivered_keys.insert(connection.undelivered_keys.end(),
                                       m_completed_keys.begin() + static_cast<std::ptrdiff_t>(index),
                                       m_completed_keys.end());
  }
  m_completed_keys.clear();
}

// --- receiving (loop thread) --------------------------------------------------------------------

void BackendAsyncmsg::receive(RecvConnection& connection) {
  FrameDecoder& decoder = *connection.decoder;
  const int fd = connection.fd.get();
  for (int round = 0; round < max_reads_per_event; ++round) {
    const std::span<std::uint8_t> area = decoder.receive_area();
    if (area.empty()) {
      NETIO3_LOG_ERROR("asyncmsg: listener {}: no memory to receive a large message from {}; closing",
                       connection.listener->address.to_string(), connection.peer.to_string());
      close_recv_connection(connection, true);
      return;
    }
    ssize_t received = -1;
    do {
      received = ::recv(fd, area.data(), area.size(), MSG_DONTWAIT);
    } while (received < 0 && errno == EINTR);
    if (received == 0) {
      NETIO3_LOG_DEBUG("asyncmsg: {} closed its connection", connection.peer.to_string());
      close_recv_connection(connection, true);
      return;
    }
    if (received < 0) {
      if (would_block(errno)) {
        return;
      }
      NETIO3_LOG_INFO("asyncmsg: the connection from {} was lost: {}", connection.peer.to_string(), errno_text(errno));
      close_recv_connection(connection, true);
      return;
    }
    const FrameError error =
        decoder.on_received(static_cast<std::size_t>(received), [&](std::span<const std::uint8_t> message) {
          if (m_use_data_from) {
            invoke("on_data_from", m_config.on_data_from_cb, connection.peer, message);
          } else {
            invoke("on_data", m_config.on_data_cb, message);
          }
          return connection.state == ConnectionState::established && !m_shutting_down.load(std::memory_order_relaxed);
        });
    if (connection.state != ConnectionState::established) {
      return;
    }
    if (error != FrameError::none) {
      if (error == FrameError::too_large) {
        NETIO3_LOG_WARNING("asyncmsg: listener {} closes the connection from {}: it announced a message of {} "
                           "bytes, over the limit of {}",
                           connection.listener->address.to_string(), connection.peer.to_string(),
                           decoder.claimed_size(), decoder.max_message_size());
      } else {
        NETIO3_LOG_WARNING("asyncmsg: listener {} closes the connection from {}: malformed frame: {}",
                           connection.listener->address.to_string(), connection.peer.to_string(), to_string(error));
      }
      close_recv_connection(connection, true);
      return;
    }
    if (static_cast<std::size_t>(received) < area.size()) {
      return; // drained
    }
  }
}

} // namespace netio3::asyncmsg
