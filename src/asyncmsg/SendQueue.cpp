#include "asyncmsg/SendQueue.hpp"

#include <algorithm>
#include <cstring>

namespace netio3::asyncmsg {

namespace {

/// First capacity of the byte ring: enough for a burst of small messages between two wake-ups.
constexpr std::size_t initial_ring_capacity{std::size_t{16} << 10U};

} // namespace

SendQueue::SendQueue(std::size_t max_unsent_bytes) : m_max_unsent_bytes{max_unsent_bytes} {}

void SendQueue::grow_ring(std::size_t needed) {
  const std::size_t used = m_ring_tail - m_ring_head;
  std::size_t capacity = m_ring ? m_ring_mask + 1 : initial_ring_capacity;
  while (capacity - used < needed) {
    capacity *= 2;
  }
  auto ring = std::make_unique_for_overwrite<std::uint8_t[]>(capacity);
  // Copy the live bytes to where their logical positions map in the new ring (at most two pieces
  // from the old ring, each landing in at most two pieces of the new one).
  const std::size_t new_mask = capacity - 1;
  std::uint64_t position = m_ring_head;
  while (position < m_ring_tail) {
    const std::size_t old_index = position & m_ring_mask;
    const std::size_t new_index = position & new_mask;
    const std::size_t piece =
        std::min({static_cast<std::size_t>(m_ring_tail - position), m_ring_mask + 1 - old_index, capacity - new_index});
    std::memcpy(ring.get() + new_index, m_ring.get() + old_index, piece);
    position += piece;
  }
  if (m_write_in_flight && m_ring) {
    m_retired.push_back(std::move(m_ring)); // a write in flight still points into it
  }
  m_ring = std::move(ring);
  m_ring_mask = new_mask;
}

void SendQueue::reserve(std::size_t copied_bytes, std::size_t user_chunks) {
  if (copied_bytes > 0) {
    const std::size_t free = m_ring ? (m_ring_mask + 1) - (m_ring_tail - m_ring_head) : 0;
    if (free < copied_bytes) {
      if (m_write_in_flight) {
        m_retired.reserve(m_retired.size() + 1);
      }
      grow_ring(copied_bytes);
    }
  }
  // Worst case: every user chunk and one copied chunk before and after each.
  m_chunks.reserve_more(2 * user_chunks + 1);
  m_completions.reserve_more(1);
}

void SendQueue::append_copy(std::span<const std::uint8_t> bytes) noexcept {
  if (bytes.empty()) {
    return;
  }
  const std::size_t capacity = m_ring_mask + 1;
  const std::size_t index = m_ring_tail & m_ring_mask;
  const std::size_t first = std::min(bytes.size(), capacity - index);
  std::memcpy(m_ring.get() + index, bytes.data(), first);
  if (first < bytes.size()) {
    std::memcpy(m_ring.get(), bytes.data() + first, bytes.size() - first);
  }
  if (!m_chunks.empty()) {
    Chunk& last = m_chunks.back();
    if (last.user == nullptr && last.ring_position + last.size == m_ring_tail) {
      last.size += bytes.size(); // extends the previous copied chunk: one iovec for the burst
      m_ring_tail += bytes.size();
      m_queued_end += bytes.size();
      return;
    }
  }
  m_chunks.push_back_reserved(Chunk{nullptr, m_ring_tail, bytes.size()});
  m_ring_tail += bytes.size();
  m_queued_end += bytes.size();
}

void SendQueue::append_user(const std::uint8_t* data, std::size_t size) noexcept {
  if (size == 0) {
    return;
  }
  m_chunks.push_back_reserved(Chunk{data, 0, size});
  m_queued_end += size;
}

void SendQueue::end_message(Completion::Kind kind, std::uint64_t value) noexcept {
  m_completions.push_back_reserved(Completion{m_queued_end, value, kind});
}

void SendQueue::record_written_message(std::size_t bytes, Completion::Kind kind, std::uint64_t value) {
  m_completions.reserve_more(1);
  m_queued_end += bytes;
  m_written += bytes;
  m_completions.push_back_reserved(Completion{m_queued_end, value, kind});
}

std::size_t SendQueue::gather(iovec* iov, std::size_t max_iov, std::size_t& bytes) noexcept {
  bytes = 0;
  std::size_t count = 0;
  const std::size_t chunk_count = m_chunks.size();
  const std::size_t capacity = m_ring_mask + 1;
  for (std::size_t index = 0; index < chunk_count && count < max_iov; ++index) {
    const Chunk& chunk = m_chunks.at(index);
    const std::size_t skip = index == 0 ? m_front_offset : 0;
    const std::size_t size = chunk.size - skip;
    if (chunk.user != nullptr) {
      iov[count++] = iovec{const_cast<std::uint8_t*>(chunk.user + skip), size};
      bytes += size;
      continue;
    }
    const std::size_t start = (chunk.ring_position + skip) & m_ring_mask;
    const std::size_t first = std::min(size, capacity - start);
    iov[count++] = iovec{m_ring.get() + start, first};
    bytes += first;
    if (first < size) {
      if (count == max_iov) {
        break;
      }
      iov[count++] = iovec{m_ring.get(), size - first};
      bytes += size - first;
    }
  }
  m_write_in_flight = true;
  return count;
}

void SendQueue::consume(std::size_t count) noexcept {
  m_written += count;
  while (count > 0) {
    Chunk& chunk = m_chunks.front();
    const std::size_t take = std::min(count, chunk.size - m_front_offset);
    if (chunk.user == nullptr) {
      m_ring_head += take;
    }
    m_front_offset += take;
    count -= take;
    if (m_front_offset == chunk.size) {
      m_chunks.pop_front();
      m_front_offset = 0;
    }
  }
}

void SendQueue::finish_write(std::size_t written) noexcept {
  m_write_in_flight = false;
  consume(written);
  m_retired.clear();
}

} // namespace netio3::asyncmsg
