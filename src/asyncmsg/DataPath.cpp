// BackendAsyncmsg, data path of a send connection: sends (copying, zero-copy, buffered), writing
// the send queues, completions. Receiving is in Receiving.cpp. Design and measurements:
// docs/tcp-backend.md.
//
// Sending: a message sent while nothing is queued for its connection (and the loop is not working
// on it) is written at once from the calling thread with one system call, straight from the
// caller's memory: the lowest latency. Otherwise it is appended to the connection's queue; the
// loop takes everything queued as one batch (a pointer flip under the connection's lock) and
// writes it with `sendmsg` of many iovecs without the lock, so that senders and the loop meet once
// per batch. Completions are always reported from the loop, batched; those of messages written at
// once from inside our own callbacks when the callback's event ends.

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <string>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "asyncmsg/BackendAsyncmsg.hpp"
#include "core/Resolve.hpp"

namespace netio3::asyncmsg {

namespace {

using detail::errno_text;
using detail::operation_would_block;

/// Messages of at most this many pieces may be written directly from the send call (the iovec
/// array lives on the stack); larger ones always go through the queue.
constexpr std::size_t max_direct_pieces{30};
/// Directly written frames up to this size are assembled in one buffer on the stack.
constexpr std::size_t small_frame_size{512};
/// Bounded work per event, so that one busy connection does not starve the others.
constexpr int max_writes_per_event{8};
/// Flush-and-complete rounds per service of a connection that keeps getting new messages.
constexpr int max_service_rounds{4};

// The data path calls the kernel through syscall() rather than the libc socket functions: those
// are thread-cancellation points, and in a multi-threaded process libc brackets each with two
// atomic updates of the thread's cancellation state, a measurable part of a 64-byte send or
// receive. The backend never relies on thread cancellation.

ssize_t send_iov(int fd, iovec* iov, std::size_t count) noexcept {
  msghdr message{};
  message.msg_iov = iov;
  message.msg_iovlen = count;
  ssize_t sent = -1;
  do {
    sent = ::syscall(SYS_sendmsg, fd, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  return sent;
}

ssize_t send_bytes(int fd, const std::uint8_t* data, std::size_t size) noexcept {
  ssize_t sent = -1;
  do {
    sent = ::syscall(SYS_sendto, fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT, nullptr, 0);
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
  return connection.state == ConnectionState::closed || connection.broken ||
                 connection.user_closed.load(std::memory_order_relaxed)
             ? NetioStatus::FAILED
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
  SendConnection* const found = find_for_send(address); // alive until this thread's next lookup
  if (found == nullptr) {
    throw UnknownSendEndpoint("asyncmsg: send: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  SendConnection& connection = *found;
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
  if (connection.state != ConnectionState::established || connection.broken ||
      connection.user_closed.load(std::memory_order_relaxed)) {
    return unavailable_status(connection);
  }
  if (too_large || payload > connection.peer_limit) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const std::size_t frame = frame_header_size + payload;
  if (!connection.would_accept(frame)) {
    note_refused_locked(connection, frame);
    return NetioStatus::NO_RESOURCES;
  }
  SendQueue& queue = connection.queue();
  std::array<std::uint8_t, frame_header_size> frame_header{};
  encode_frame_header(frame_header.data(), static_cast<std::uint32_t>(payload));
  const bool copy = mode == SendMode::copy;

  std::size_t written = 0;
  const bool inside_dispatch = in_dispatch();
  if (queue.empty() && !connection.service_requested && !connection.blocked && !connection.wrote_directly &&
      (inside_dispatch || !connection.bursting) && pieces.size() <= max_direct_pieces) {
    // Nothing ahead of this message: write it now, from where it is.
    try {
      // Room for its completion record, so that nothing can fail once it is on the wire.
      if (inside_dispatch) {
        if (m_direct_completions.size() == m_direct_completions.capacity()) {
          m_direct_completions.reserve(2 * m_direct_completions.capacity() + 16);
        }
      } else {
        queue.reserve(0, 0);
      }
    } catch (const std::bad_alloc&) {
      return NetioStatus::NO_RESOURCES;
    }
    ssize_t sent = -1;
    if (frame <= small_frame_size) {
      // Small: one contiguous buffer and `sendto` cost the kernel less than an iovec array.
      std::array<std::uint8_t, small_frame_size> bytes;
      std::uint8_t* end = std::copy(frame_header.begin(), frame_header.end(), bytes.data());
      end = std::copy(header_data.begin(), header_data.end(), end);
      for (const iovec& piece : pieces) {
        end = std::copy_n(static_cast<const std::uint8_t*>(piece.iov_base), piece.iov_len, end);
      }
      sent = send_bytes(connection.fd.get(), bytes.data(), frame);
    } else {
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
      sent = send_iov(connection.fd.get(), iov.data(), count);
    }
    if (sent < 0 && !operation_would_block(errno)) {
      NETIO3_LOG_INFO("asyncmsg: writing to {} failed: {}", address.to_string(), errno_text(errno));
      connection.broken = true;
      request_service_locked(connection); // the loop closes the connection
      return NetioStatus::FAILED;
    }
    written = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    if (written == frame) {
      if (inside_dispatch) {
        m_direct_completions.push_back(DirectCompletion{&connection, key}); // reported when the dispatch ends
        connection.wrote_directly = true;
        m_sent_in_dispatch = true;
      } else {
        queue.record_written_message(frame, Completion::Kind::key, key);
        request_service_locked(connection); // its completion is reported from the loop
      }
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
  note_send();
  return NetioStatus::OK;
}

NetioStatus BackendAsyncmsg::send_buffer(const EndPointAddress& address, NetworkBuffer* buffer) {
  SendConnection* const found = find_for_send(address); // alive until this thread's next lookup
  if (found == nullptr) {
    throw UnknownSendEndpoint("asyncmsg: send_buffer: no send endpoint to " + address.to_string() +
                              " (never opened, closed, or its connection ended)");
  }
  SendConnection& connection = *found;
  BufferPool* const pool = connection.pool;
  if (pool == nullptr || !pool->owns(buffer)) {
    return NetioStatus::FAILED; // not a buffer of this endpoint's pool
  }
  const std::unique_lock lock{connection.mutex};
  if (connection.state != ConnectionState::established || connection.broken ||
      connection.user_closed.load(std::memory_order_relaxed)) {
    return unavailable_status(connection);
  }
  const std::size_t payload = buffer->pos();
  if (payload > connection.peer_limit) {
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const std::size_t frame = frame_header_size + payload;
  if (!connection.would_accept(frame)) {
    note_refused_locked(connection, frame);
    return NetioStatus::NO_RESOURCES;
  }
  SendQueue& queue = connection.queue();
  if (!pool->start_send(*buffer)) {
    return NetioStatus::FAILED; // already being sent (or given back)
  }
  const std::size_t index = buffer->index();
  const std::uint8_t* const start = pool->frame(index, static_cast<std::uint32_t>(payload));

  std::size_t written = 0;
  if (queue.empty() && !connection.service_requested && !connection.blocked) {
    const ssize_t sent = send_bytes(connection.fd.get(), start, frame);
    if (sent < 0 && !operation_would_block(errno)) {
      NETIO3_LOG_INFO("asyncmsg: writing to {} failed: {}", address.to_string(), errno_text(errno));
      pool->cancel_send(index);
      connection.broken = true;
      request_service_locked(connection);
      return NetioStatus::FAILED;
    }
    written = sent > 0 ? static_cast<std::size_t>(sent) : 0;
    if (written == frame) {
      // Buffered sends report nothing: the buffer is free again. If the pool had none free, a
      // waiter or a refused get_buffer may want this one.
      if (pool->release(index)) {
        buffer_returned_locked(connection);
      }
      note_send();
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
  note_send();
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
    if (connection.state != ConnectionState::established) {
      return;
    }
    broken = connection.broken;
    // Set while the loop works on the connection (also when called for the writable event), so
    // that senders neither write directly (which could overtake `outgoing`) nor wake the loop
    // again: whatever they append is picked up below.
    connection.service_requested = true;
  }
  if (broken) {
    close_send_connection(connection, CloseReason::lost);
    return;
  }
  for (int round = 0;; ++round) {
    if (connection.outgoing().empty() && !connection.outgoing().has_completions()) {
      // The previous batch is done: take everything queued since, at once.
      const std::lock_guard lock{connection.mutex};
      if (!connection.queue().empty() || connection.queue().has_completions()) {
        connection.bursting = connection.queue().message_count() > 1;
        connection.take_batch();
        connection.outgoing_unsent.store(connection.outgoing().unsent_bytes(), std::memory_order_relaxed);
      }
    }
    // Written and completed without the lock: senders keep appending to `queue` meanwhile.
    const WriteResult written = flush(connection);
    if (written == WriteResult::failed) {
      close_send_connection(connection, CloseReason::lost);
      return;
    }
    deliver_completions(connection);
    bool want_write_interest = false;
    bool again = false;
    bool space_again = false;
    bool buffer_again = false;
    bool shared_buffers_back = false;
    {
      const std::lock_guard lock{connection.mutex};
      // Room or buffers (deliver_completions) may have been freed: waiting senders look again
      // (under this lock, see SendWait.hpp; buffers: wait_for_buffer).
      m_send_wait.notify();
      if (connection.space_wanted && connection.state == ConnectionState::established && !connection.broken &&
          connection.would_accept(connection.space_wanted_bytes)) {
        connection.space_wanted = false;
        space_again = !connection.user_closed.load(std::memory_order_relaxed);
      }
      BufferPool* const pool = connection.pool; // null: opened without buffers
      if (pool != nullptr && pool == m_shared_send_pool.get()) {
        shared_buffers_back = m_shared_buffer_wanted.load(std::memory_order_relaxed);
      } else if (pool != nullptr && connection.buffer_wanted && connection.state == ConnectionState::established &&
                 !connection.broken && pool->available() > 0) {
        connection.buffer_wanted = false;
        buffer_again = !connection.user_closed.load(std::memory_order_relaxed);
      }
      if (connection.state != ConnectionState::established || connection.broken) {
        // Closed, or a sender's write failed meanwhile. (After close_send_endpoint the loop goes on
        // writing what was accepted until the close task runs, as senders expect of messages
        // sent before their last completion was reported.)
        connection.service_requested = false;
        broken = connection.broken && connection.state != ConnectionState::closed;
      } else if (written == WriteResult::full) {
        // The writable event continues; senders only append meanwhile.
        connection.blocked = true;
        connection.service_requested = false;
        want_write_interest = true;
      } else {
        connection.blocked = false;
        const SendQueue& outgoing = connection.outgoing();
        const bool more = !outgoing.empty() || outgoing.has_completions() || !connection.queue().empty() ||
                          connection.queue().has_completions();
        if (!more) {
          connection.service_requested = false;
        } else if (round + 1 < max_service_rounds) {
          again = true;
        } else {
          // Still more: continue after the loop has looked at its other fds.
          hand_to_signal_locked(connection);
        }
      }
    }
    if (connection.registered && connection.write_interest != want_write_interest &&
        connection.state != ConnectionState::closed) {
      m_evloop->set_write_interest(connection.fd.get(), want_write_interest);
      connection.write_interest = want_write_interest;
    }
    if (broken) {
      close_send_connection(connection, CloseReason::lost);
      return;
    }
    if (space_again) {
      invoke("on_send_space", m_config.on_send_space_cb, connection.address);
    }
    if (buffer_again && !connection.user_closed.load(std::memory_order_relaxed)) { // (the call above may close)
      invoke("on_send_space", m_config.on_send_space_cb, connection.address);
    }
    if (shared_buffers_back) {
      call_back_shared_buffer_waiters();
    }
    if (!again) {
      return;
    }
  }
}

BackendAsyncmsg::WriteResult BackendAsyncmsg::flush(SendConnection& connection) {
  SendQueue& outgoing = connection.outgoing();
  const int fd = connection.fd.get();
  for (int round = 0; round < max_writes_per_event && !outgoing.empty(); ++round) {
    std::size_t bytes = 0;
    const std::size_t count = outgoing.gather(m_iov.data(), m_iov.size(), bytes);
    const ssize_t sent = send_iov(fd, m_iov.data(), count);
    const int error = errno;
    outgoing.finish_write(sent > 0 ? static_cast<std::size_t>(sent) : 0);
    connection.outgoing_unsent.store(outgoing.unsent_bytes(), std::memory_order_relaxed);
    if (sent < 0 && !operation_would_block(error)) {
      NETIO3_LOG_INFO("asyncmsg: the connection to {} was lost: {}", connection.address.to_string(), errno_text(error));
      return WriteResult::failed;
    }
    if (sent < 0 || static_cast<std::size_t>(sent) < bytes) {
      return WriteResult::full; // the writable event resumes
    }
  }
  return WriteResult::written;
}

void BackendAsyncmsg::deliver_completions(SendConnection& connection) {
  deliver_direct_completions(); // older than any queued completion of their connections
  // `outgoing` belongs to the loop: no lock. Its completions come before any in `queue`.
  SendQueue& outgoing = connection.outgoing();
  if (connection.state == ConnectionState::closed || !outgoing.has_finished_messages()) {
    return;
  }
  outgoing.pop_finished([&](const Completion& completion) {
    if (completion.kind == Completion::Kind::buffer) {
      connection.pool->release(completion.value);
    } else {
      m_completed_keys.push_back(completion.value); // reserved: grows only in the first bursts
    }
  });
  const std::size_t count = m_completed_keys.size();
  std::size_t index = 0;
  for (; index < count; ++index) {
    if (connection.user_closed.load(std::memory_order_relaxed)) {
      break; // closed (from a callback or another thread): the rest comes with the pending keys
    }
    invoke("on_send_completed", m_config.on_send_completed_cb, connection.address, m_completed_keys[index]);
  }
  if (index > 0) {
    connection.completed_keys.fetch_add(index, std::memory_order_seq_cst);
    m_send_wait.notify(); // waiters for completed sends
  }
  if (index < count) {
    connection.undelivered_keys.insert(connection.undelivered_keys.end(),
                                       m_completed_keys.begin() + static_cast<std::ptrdiff_t>(index),
                                       m_completed_keys.end());
  }
  m_completed_keys.clear();
}

} // namespace netio3::asyncmsg
