// BackendAsyncmsg, data path of a receive connection: one `recv` into the connection's read
// buffer, then every complete message is handed to the data callback straight from that buffer.
// When a callback answered, the loop waits briefly on that connection for the peer's next message
// instead of going back to epoll_wait. Design and measurements: docs/tcp-backend.md. As on the
// send side (DataPath.cpp), the kernel is called through syscall(), not libc's cancellation
// points.

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

/// Bounded work per event, so that one busy connection does not starve the others.
constexpr int max_reads_per_event{4};
/// Messages missing at least this many bytes make the socket wait for them (SO_RCVLOWAT), up to
/// `max_low_water` bytes at a time.
constexpr std::size_t low_water_threshold{std::size_t{128} << 10U};
constexpr std::size_t max_low_water{std::size_t{1} << 20U};

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

} // namespace

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
      if (received < 0 && operation_would_block(errno)) {
        const auto give_up = std::chrono::steady_clock::now() + spin_budget; // only read when needed
        do {
          ::sched_yield();
          received = receive_some(fd, areas, area_count);
        } while (received < 0 && operation_would_block(errno) && std::chrono::steady_clock::now() < give_up);
        if (received < 0 && operation_would_block(errno)) {
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
      if (operation_would_block(errno)) {
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
