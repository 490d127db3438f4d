// netio3-bench client: the throughput senders (SAFE: an application thread that waits for room;
// UNSAFE: a pump on the loop thread resumed by on_send_space_cb), beside Client.cpp.

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

/// Messages sent to one connection before moving to the next: keeps writes batched per connection
/// even with a thousand connections.
constexpr std::uint64_t kBurstPerConnection = 256;
/// Bytes accepted per pump call before returning to the loop (so that it can write and read).
constexpr std::uint64_t kBytesPerPump = std::uint64_t{4} << 20U;
/// Messages per pump call at most.
constexpr std::uint64_t kMessagesPerPump = 16384;

std::span<const std::uint8_t> header_bytes(const WireHeader& header) {
  return {reinterpret_cast<const std::uint8_t*>(&header), sizeof(header)};
}

} // namespace

void Client::run_throughput() {
  m_deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(m_options.duration_s));
  const auto wait_limit = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::duration<double>(m_duration_mode ? m_options.duration_s : 0.0)) +
                          std::chrono::milliseconds{600000};
  if (m_options.backend.threads == ThreadSafetyModel::UNSAFE) {
    m_pump_signal.fire();
    wait_for("the sender to finish", wait_limit, [this] { return m_sending_finished; });
    return;
  }
  // SAFE: this application thread sends while the loop thread runs the I/O. When nothing moved,
  // it blocks in the backend until the connection that refused last has room or a free buffer
  // (with several connections only briefly: another one may have room first).
  const auto give_up = Clock::now() + wait_limit;
  const std::chrono::milliseconds wait_step{m_connections.size() > 1 ? 1 : 100};
  while (m_done_connections < m_connections.size()) {
    if (m_failed.load(std::memory_order_relaxed)) {
      wait_for("the sender to finish", std::chrono::milliseconds{0}, [] { return true; });
    }
    m_refused = nullptr;
    if (!pump()) {
      if (Clock::now() > give_up) {
        throw std::runtime_error("the sender made no progress before the time limit");
      }
      if (m_refused == nullptr) {
        std::this_thread::yield(); // nothing was refused, yet nothing moved: look again
      } else {
        wait_after_refusal(*m_refused, m_refused_size, m_refused_buffer, wait_step);
      }
    }
  }
}

void Client::wait_after_refusal(const Connection& connection, std::size_t size, bool no_buffer,
                                std::chrono::milliseconds timeout) {
  // CLOSED or TIMED_OUT: the next attempt reports the failed send or tries again.
  if (no_buffer) {
    static_cast<void>(m_backend->wait_for_buffer(connection.address, timeout));
  } else {
    static_cast<void>(m_backend->wait_for_send_space(connection.address, size, timeout));
  }
}

void Client::note_sent(std::uint64_t count) {
  const std::uint64_t sent = m_sent.load(std::memory_order_relaxed) + count;
  m_sent.store(sent, std::memory_order_relaxed);
  if (!m_warmed && m_warm_count != 0 && sent >= m_warm_count && m_connections_started == m_connections.size()) {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = sent;
  }
}

void Client::note_data_finished() {
  m_data_finished = true;
  m_last_send = Clock::now();
  m_allocations_at_end = allocation_count();
}

NetioStatus Client::send_data_message(Connection& connection, MessageKind kind) {
  const WireHeader header{kWireMagic, kind, 0, connection.index, connection.next_sequence};
  const std::size_t payload = m_size - sizeof(WireHeader);
  NetioStatus status = NetioStatus::OK;
  switch (m_options.mode) {
  case SendMode::Copy:
    status = m_backend->send_data_copy(connection.address, std::span<const std::uint8_t>(m_payload.data(), payload),
                                       header_bytes(header), connection.next_sequence);
    break;
  case SendMode::ZeroCopy:
    status = m_backend->send_data(connection.address, std::span<std::uint8_t>(m_payload.data(), payload),
                                  header_bytes(header), connection.next_sequence);
    break;
  case SendMode::Buffered: {
    if (connection.buffer != nullptr && connection.buffer->pos() + m_size > m_buffer_limit) {
      status = m_backend->send_buffer(connection.address, connection.buffer);
      if (status != NetioStatus::OK) {
        return status; // the full buffer stays with us; retried next time
      }
      connection.buffer = nullptr;
    }
    if (connection.buffer == nullptr) {
      connection.buffer = m_backend->get_buffer(connection.address);
      if (connection.buffer == nullptr) {
        m_no_buffer = true; // for the wait: a free buffer, not room
        return NetioStatus::NO_RESOURCES;
      }
      connection.buffer->set_pos(0);
    }
    std::uint8_t* out = connection.buffer->data().data() + connection.buffer->pos();
    std::memcpy(out, &header, sizeof(header));
    std::memcpy(out + sizeof(header), m_payload.data(), payload);
    connection.buffer->set_pos(connection.buffer->pos() + m_size);
    // A ping travels alone in its buffer, at once.
    if (kind == MessageKind::Ping) {
      status = m_backend->send_buffer(connection.address, connection.buffer);
      if (status != NetioStatus::OK) {
        connection.buffer->set_pos(connection.buffer->pos() - m_size);
        return status;
      }
      connection.buffer = nullptr;
    }
    break;
  }
  }
  if (status == NetioStatus::OK) {
    ++connection.next_sequence;
  }
  return status;
}

NetioStatus Client::flush_buffer(Connection& connection) {
  if (connection.buffer == nullptr || connection.buffer->pos() == 0) {
    return NetioStatus::OK;
  }
  const NetioStatus status = m_backend->send_buffer(connection.address, connection.buffer);
  if (status == NetioStatus::OK) {
    connection.buffer = nullptr;
  }
  return status;
}

NetioStatus Client::send_control(Connection& connection, std::span<const std::uint8_t> message) {
  if (m_options.mode != SendMode::Buffered) {
    return m_backend->send_data_copy(connection.address, message, {}, std::numeric_limits<std::uint64_t>::max());
  }
  NetworkBuffer* buffer = connection.buffer; // an empty buffer left over from the data phase
  if (buffer == nullptr || buffer->pos() != 0) {
    if (buffer != nullptr) {
      return NetioStatus::NO_RESOURCES; // flush first
    }
    buffer = m_backend->get_buffer(connection.address);
    if (buffer == nullptr) {
      m_no_buffer = true; // for the wait: a free buffer, not room
      return NetioStatus::NO_RESOURCES;
    }
  }
  buffer->set_pos(0);
  if (!buffer->append(message)) {
    connection.buffer = buffer;
    return NetioStatus::MESSAGE_TOO_LARGE;
  }
  const NetioStatus status = m_backend->send_buffer(connection.address, buffer);
  connection.buffer = status == NetioStatus::OK ? nullptr : buffer;
  if (status != NetioStatus::OK) {
    buffer->set_pos(0);
  }
  return status;
}

bool Client::pump() {
  if (!m_started) {
    m_started = true;
    m_first_send = Clock::now();
  }
  if (m_duration_mode && m_sending_connections > 0 && Clock::now() >= m_deadline) {
    for (Connection& connection : m_connections) {
      if (connection.phase == Phase::Sending) {
        connection.phase = Phase::Flushing;
      }
    }
    m_sending_connections = 0;
    note_data_finished();
  }
  // Warm-up lasts at least until every connection has sent once (first bursts grow queues).
  if (m_duration_mode && !m_warmed && m_connections_started == m_connections.size() &&
      Clock::now() - m_first_send >= std::chrono::duration<double>(m_options.duration_s * m_options.warmup_fraction)) {
    m_warmed = true;
    m_allocations_at_warm = allocation_count();
    m_sent_at_warm = m_sent.load(std::memory_order_relaxed);
  }

  const std::uint64_t budget_limit = std::clamp<std::uint64_t>(kBytesPerPump / m_size, 1, kMessagesPerPump);
  std::uint64_t budget = budget_limit;
  bool progress = false;
  const std::size_t count = m_connections.size();
  for (std::size_t visited = 0; visited < count && budget > 0; ++visited) {
    Connection& connection = m_connections[m_cursor];
    m_cursor = m_cursor + 1 == count ? 0 : m_cursor + 1;
    if (connection.phase == Phase::Sending) {
      std::uint64_t burst = std::min(budget, kBurstPerConnection);
      if (!m_duration_mode) {
        burst = std::min(burst, connection.quota);
      }
      std::uint64_t sent = 0;
      for (; sent < burst; ++sent) {
        const NetioStatus status = send_data_message(connection, MessageKind::Data);
        if (status != NetioStatus::OK) [[unlikely]] {
          if (status == NetioStatus::NO_RESOURCES) {
            ++m_no_resources;
            note_refused(connection, m_size);
            break;
          }
          fail(fmt::format("sending a {}-byte message on connection {} to {} failed: {}", m_size, connection.index,
                           connection.address.to_string(), to_string(status)));
          return false;
        }
      }
      if (sent > 0) {
        if (connection.next_sequence == sent) {
          ++m_connections_started; // its first burst
        }
        progress = true;
        budget -= sent;
        note_sent(sent);
        if (!m_duration_mode) {
          connection.quota -= sent;
          if (connection.quota == 0) {
            connection.phase = Phase::Flushing;
            if (--m_sending_connections == 0) {
              note_data_finished();
            }
          }
        }
      }
    }
    if (connection.phase == Phase::Flushing) {
      const NetioStatus status = flush_buffer(connection);
      if (status == NetioStatus::OK) {
        connection.phase = Phase::Ending;
        progress = true;
      } else if (status == NetioStatus::NO_RESOURCES) {
        note_refused(connection, m_buffer_limit);
      } else if (status != NetioStatus::NO_RESOURCES) {
        fail(fmt::format("sending the last buffer on connection {} failed: {}", connection.index, to_string(status)));
        return false;
      }
    }
    if (connection.phase == Phase::Ending) {
      std::uint8_t end[kEndMessageSize];
      write_message(end, WireHeader{kWireMagic, MessageKind::End, 0, connection.index, 0},
                    EndBody{m_run_id, 0, connection.next_sequence});
      const NetioStatus status = send_control(connection, end);
      if (status == NetioStatus::OK) {
        connection.phase = Phase::Done;
        ++m_done_connections;
        progress = true;
      } else if (status == NetioStatus::NO_RESOURCES) {
        note_refused(connection, kEndMessageSize);
      } else if (status != NetioStatus::NO_RESOURCES) {
        fail(fmt::format("sending the end message on connection {} failed: {}", connection.index, to_string(status)));
        return false;
      }
    }
  }
  return progress;
}

void Client::on_pump_signal() {
  if (m_failed.load(std::memory_order_relaxed) || m_options.test != TestKind::Throughput) {
    if (m_options.test == TestKind::Latency && m_ping_pending && !m_failed.load()) {
      send_next_ping(); // a ping refused for backpressure is retried from here
    }
    return;
  }
  if (m_done_connections == m_connections.size()) {
    return;
  }
  m_refused = nullptr;
  const bool progress = pump();
  if (m_done_connections == m_connections.size()) {
    const std::lock_guard lock(m_mutex);
    m_sending_finished = true;
    m_changed.notify_all();
    return;
  }
  if (m_failed.load(std::memory_order_relaxed)) {
    return;
  }
  if (progress) {
    // Through the loop, which lets the backend write and read between two pump calls.
    m_pump_signal.fire();
  } else if (m_refused == nullptr) {
    m_pump_signal.fire(); // nothing was refused, yet nothing moved: look again
  } else {
    m_waiting_for_space = true; // on_send_space_cb resumes (every refusal of this pump armed it)
  }
}

} // namespace netio3::bench
