#include "asyncmsg/BufferPool.hpp"

#include <algorithm>

namespace netio3::asyncmsg {

namespace {

/// Slots start on cache lines, and the payload right after the frame header room.
constexpr std::size_t slot_alignment{64};

} // namespace

BufferPool::BufferPool(std::size_t num_buf, std::size_t buf_size, bool thread_safe)
  : m_mutex{thread_safe}, m_slot_size{(frame_header_size + buf_size + slot_alignment - 1) / slot_alignment *
                                      slot_alignment} {
  m_memory = std::make_unique<std::uint8_t[]>(m_slot_size * num_buf);
  m_buffers.reserve(num_buf);
  m_states.assign(num_buf, State::free);
  m_free.reserve(num_buf);
  for (std::size_t index = 0; index < num_buf; ++index) {
    std::uint8_t* payload = m_memory.get() + index * m_slot_size + frame_header_size;
    m_buffers.push_back(std::make_unique<NetworkBuffer>(std::span<std::uint8_t>{payload, buf_size}, index, this));
    m_free.push_back(num_buf - 1 - index); // hand out index 0 first
  }
  m_min_free = num_buf;
}

NetworkBuffer* BufferPool::acquire() {
  const std::lock_guard lock{m_mutex};
  if (m_free.empty()) {
    m_min_free = 0;
    return nullptr;
  }
  const std::size_t index = m_free.back();
  m_free.pop_back();
  m_states[index] = State::handed_out;
  m_min_free = std::min(m_min_free, m_free.size());
  NetworkBuffer* buffer = m_buffers[index].get();
  buffer->set_pos(0);
  return buffer;
}

bool BufferPool::owns(const NetworkBuffer* buffer) const noexcept {
  return buffer != nullptr && buffer->owner() == this && buffer->index() < m_buffers.size() &&
         m_buffers[buffer->index()].get() == buffer;
}

bool BufferPool::start_send(const NetworkBuffer& buffer) {
  const std::lock_guard lock{m_mutex};
  if (m_states[buffer.index()] != State::handed_out) {
    return false;
  }
  m_states[buffer.index()] = State::in_flight;
  return true;
}

void BufferPool::cancel_send(std::size_t index) {
  const std::lock_guard lock{m_mutex};
  m_states[index] = State::handed_out;
}

bool BufferPool::release(std::size_t index) {
  const std::lock_guard lock{m_mutex};
  if (m_states[index] != State::in_flight) {
    return false; // defensive: never push an index twice
  }
  const bool was_empty = m_free.empty();
  m_states[index] = State::free;
  m_free.push_back(index);
  return was_empty;
}

std::uint8_t* BufferPool::frame(std::size_t index, std::uint32_t payload) noexcept {
  std::uint8_t* start = m_memory.get() + index * m_slot_size;
  encode_frame_header(start, payload);
  return start;
}

std::size_t BufferPool::take_min_available() {
  const std::lock_guard lock{m_mutex};
  const std::size_t result = m_queried ? m_min_free : m_free.size();
  m_queried = true;
  m_min_free = m_free.size();
  return result;
}

std::size_t BufferPool::available() {
  const std::lock_guard lock{m_mutex};
  return m_free.size();
}

} // namespace netio3::asyncmsg
