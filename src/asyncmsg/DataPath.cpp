// BackendAsyncmsg, data path: sends (copying, zero-copy, buffered), writing the send queues,
// completions, and receiving. Design and measurements: docs/tcp-backend.md.
//
// Sending: a message sent while nothing is queued for its connection (and the loop is not working
// on it) is written at once from the calling thread with one system call, straight from the
// caller's memory: the lowest latency. Otherwise it is appended to the connection's queue; the
// loop takes everything queued as one batch (a pointer flip under the connection's lock) and
// writes it with `sendmsg` of many iovecs without the lock, so that senders and the loop meet once
// per batch. Completions are always reported from the loop, batched; those of messages written at
// once from inside our own callbacks when the callback's event ends.
//
// Receiving: one `recv` into the connection's read buffer, then every complete message is handed
// to the data callback straight from that buffer. When a callback answered, the loop waits briefly
// on that connection for the peer's next message instead of going back to epoll_wait.

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

/// Messages of at most this many pieces may be written directly from the send call (the iovec
/// array lives on the stack); larger ones always go through the queue.
constexpr std::size_t max_direct_pieces{30};
/// Directly written frames up to this size are assembled in one buffer on the stack.
constexpr std::size_t small_frame_size{512};
/// Bounded work per event, so that one busy connection does not starve the others.
constexpr int max_writes_per_event{8};
constexpr int max_reads_per_event{4};
/// Messages missing at least this many bytes make the socket wait for them (SO_RCVLOWAT), up to
/// `max_low_water` bytes at a time.
constexpr std::size_t low_water_threshold{std::size_t{128} << 10U};
constexpr std::size_t max_low_water{std::size_t{1} << 20U};
/// Flush-and-complete rounds per service of a connection that keeps getting new messages.
constexpr int max_service_rounds{4};

/// Spin-wait for a response on a receive connection (see on_data_readable): how long at most, how
/// many responses in a row are handled that way before the loop looks at its other fds again, and
/// after how many fruitless waits in a row the backend stops trying (then it tries once every
/// `spin_probe_interval` chances, so that it notices when responses become quick again).
constexpr std::chrono::microseconds spin_budget{20};
constexpr int max_spin_rounds{64};
constexpr std::uint32_t max_spin_misses{4};
constexpr std::uint32_t spin_probe_interval{64};
/// TCP_QUICKACK = 0 (delayed acknowledgements) lasts until the kernel's delayed-ACK timer fires
/// once; it is asked for again every this many reads.
constexpr std::uint32_t delayed_ack_rearm_reads{64};

bool would_block(int error) noexcept {
  return error == EAGAIN || error == EWOULDBLOCK;
}

/// Asks the kernel to delay the acknowledgements of a receive-only connection (Linux "ping-pong"
/// mode, TCP_QUICKACK = 0). A connection carries messages one way, so the receiver never has data
/// for an acknowledgement to ride on; by default Linux then sends a pure ACK from the `recv` that
/// drains a small segment, which on a request/response exchange over two connections costs kernel
/// time on both sides of every message. Delayed, one ACK per two small segments is left (a 64-byte
/// ping-pong: 3 segments per round trip instead of 3.4 to 4; bulk transfers still acknowledge
/// every second full segment). The mode ends when the delayed-ACK timer fires once, so the
/// receive path asks again every so often.
void request_delayed_acks(int fd) noexcept {
  const int zero = 0;
  (void)::setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero)); // an optimisation only
}

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

/// Receives into the first `count` of `areas` (FrameDecoder::receive_areas): one recvfrom for one
/// area, one recvmsg scattering over two.
ssize_t receive_some(int fd, const std::array<std::span<std::uint8_t>, 2>& areas, std::size_t count) noexcept {
  ssize_t received = -1;
  if (count == 1) {
    do {
      received = ::syscall(SYS_recvfrom, fd, areas[0].data(), areas[0].size(), MSG_DONTWAIT, nullptr, nullptr);
    } while (received < 0 && errno == EINTR);
    return received;
  }
  std::array<iovec, 2> iov{iovec{areas[0].data(), areas[0].size()}, iovec{areas[1].data(), areas[1].size()}};
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = iov.size();
  do {
    received = ::syscall(SYS_recvmsg, fd, &message, MSG_DONTWAIT);
  } while (received < 0 && errno == EINTR);
  return received;
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
    if (sent < 0 && !would_block(errno)) {
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
    if (sent < 0 && !would_block(errno)) {
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
    if (sent < 0 && !would_block(error)) {
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

// --- receiving (loop thread) --------------------------------------------------------------------

void BackendAsyncmsg::on_data_readable(RecvConnection& connection) {
  // A request/response exchange: when a callback sent something (the request's response, or the
  // next request), the peer's answer usually follows within a few microseconds. Waiting for it here
  // (briefly, see receive) saves the event loop's sleep and wake-up; the replies have been written
  // by then (the dispatch scope's end services them). Bounded rounds keep the other fds served;
  // waits that find nothing turn the waiting off until a probe finds it useful again.
  bool spin = false;
  for (int round = 0; round < max_spin_rounds; ++round) {
    ReceiveOutcome outcome = ReceiveOutcome::closed;
    bool sent = false;
    {
      const DispatchScope scope{*this};
      m_sent_in_dispatch = false;
      outcome = receive(connection, spin);
      sent = m_sent_in_dispatch;
    }
    if (spin) {
      connection.spin_misses = outcome == ReceiveOutcome::idle ? connection.spin_misses + 1 : 0;
    }
    if (outcome != ReceiveOutcome::drained || !sent || m_shutting_down.load(std::memory_order_relaxed) ||
        connection.state != ConnectionState::established) {
      return;
    }
    spin = connection.spin_misses < max_spin_misses || ++connection.spin_skipped % spin_probe_interval == 0;
    if (!spin) {
      return;
    }
  }
}

void BackendAsyncmsg::adjust_low_water(RecvConnection& connection) noexcept {
  // While a large message arrives, the socket wakes the loop only once the rest of it (or a good
  // part of a very large one) is there, instead of at every segment: one wake-up and one `recv`
  // per message rather than a dozen (1 MiB messages: see docs/tcp-backend.md). The kernel grows
  // the receive buffer to twice the mark; a closing or failing connection is reported whatever
  // the mark.
  const std::size_t missing = connection.decoder->large_bytes_missing();
  const int wanted = missing >= low_water_threshold ? static_cast<int>(std::min(missing, max_low_water)) : 1;
  if (wanted != connection.receive_low_water &&
      ::setsockopt(connection.fd.get(), SOL_SOCKET, SO_RCVLOWAT, &wanted, sizeof(wanted)) == 0) {
    connection.receive_low_water = wanted;
  }
}

BackendAsyncmsg::ReceiveOutcome BackendAsyncmsg::receive(RecvConnection& connection, bool spin) {
  FrameDecoder& decoder = *connection.decoder;
  const int fd = connection.fd.get();
  if (connection.reads_until_ack_mode == 0) {
    connection.reads_until_ack_mode = delayed_ack_rearm_reads;
    request_delayed_acks(fd);
  }
  --connection.reads_until_ack_mode;
  for (int round = 0; round < max_reads_per_event; ++round) {
    std::array<std::span<std::uint8_t>, 2> areas;
    const std::size_t area_count = decoder.receive_areas(areas);
    if (area_count == 0) {
      NETIO3_LOG_ERROR("asyncmsg: listener {}: no memory to receive a large message from {}; closing",
                       connection.listener->address.to_string(), connection.peer.to_string());
      close_recv_connection(connection, true);
      return ReceiveOutcome::closed;
    }
    ssize_t received = -1;
    if (spin && round == 0) {
      // A response to what the callbacks just sent is likely to arrive within microseconds:
      // waiting for it here saves the event loop's epoll_wait, sleep and wake-up. The processor is
      // yielded before each attempt: when the peer shares it (the usual placement of a ping-pong
      // on a small machine, as waking another processor costs more), the peer runs at once and
      // the first attempt finds its answer; otherwise the yield returns at once.
      ::sched_yield();
      received = receive_some(fd, areas, area_count);
      if (received < 0 && would_block(errno)) {
        const auto give_up = std::chrono::steady_clock::now() + spin_budget; // only read when needed
        do {
          ::sched_yield();
          received = receive_some(fd, areas, area_count);
        } while (received < 0 && would_block(errno) && std::chrono::steady_clock::now() < give_up);
        if (received < 0 && would_block(errno)) {
          return ReceiveOutcome::idle;
        }
      }
    } else {
      received = receive_some(fd, areas, area_count);
    }
    if (received == 0) {
      NETIO3_LOG_DEBUG("asyncmsg: {} closed its connection", connection.peer.to_string());
      close_recv_connection(connection, true);
      return ReceiveOutcome::closed;
    }
    if (received < 0) {
      if (would_block(errno)) {
        return ReceiveOutcome::drained;
      }
      NETIO3_LOG_INFO("asyncmsg: the connection from {} was lost: {}", connection.peer.to_string(), errno_text(errno));
      close_recv_connection(connection, true);
      return ReceiveOutcome::closed;
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
      return ReceiveOutcome::closed;
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
      return ReceiveOutcome::closed;
    }
    adjust_low_water(connection); // a setsockopt only when a large message starts or ends
    const std::size_t room = areas[0].size() + (area_count == 2 ? areas[1].size() : 0);
    if (static_cast<std::size_t>(received) < room) {
      // Drained: a read that did not fill the area took everything (a further recv would only
      // return EAGAIN).
      return ReceiveOutcome::drained;
    }
  }
  return ReceiveOutcome::pending;
}

} // namespace netio3::asyncmsg
