#include "libfabric/Memory.hpp"

#include <cerrno>
#include <stdexcept>
#include <string>
#include <sys/mman.h>
#include <unistd.h>
#include <utility>

#include "core/Resolve.hpp"

namespace netio3::libfabric {

HostMemory::HostMemory(std::size_t size) {
  if (size == 0) {
    return;
  }
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  const std::size_t mapped = align_up(size, page);
  void* memory = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) {
    throw std::runtime_error("cannot map " + std::to_string(mapped) + " bytes: " + detail::errno_text(errno));
  }
  m_data = static_cast<std::uint8_t*>(memory);
  m_size = mapped;
}

HostMemory::HostMemory(HostMemory&& other) noexcept
  : m_data{std::exchange(other.m_data, nullptr)}, m_size{std::exchange(other.m_size, 0)} {}

HostMemory& HostMemory::operator=(HostMemory&& other) noexcept {
  if (this != &other) {
    release();
    m_data = std::exchange(other.m_data, nullptr);
    m_size = std::exchange(other.m_size, 0);
  }
  return *this;
}

HostMemory::~HostMemory() {
  release();
}

void HostMemory::release() noexcept {
  if (m_data != nullptr) {
    munmap(m_data, m_size);
    m_data = nullptr;
    m_size = 0;
  }
}

Registration::Registration(fid_domain* domain, const void* start, std::size_t size, std::uint64_t access,
                           std::uint64_t requested_key) {
  check(fi_mr_reg(domain, start, size, access, 0, requested_key, 0, m_mr.out(), nullptr), "fi_mr_reg");
  m_desc = fi_mr_desc(m_mr.get());
}

BounceRing::BounceRing(std::size_t capacity, std::size_t max_chunks)
  : m_capacity{capacity}, m_chunks(max_chunks == 0 ? 1 : max_chunks) {}

std::uint32_t BounceRing::allocate(std::size_t size, std::size_t& offset) noexcept {
  if (size == 0 || size > m_capacity || m_count == m_chunks.size()) {
    return no_chunk;
  }
  std::size_t start = 0;
  if (m_count == 0) {
    start = 0; // empty: start over at the beginning, the best place for large chunks
  } else {
    const std::size_t tail = m_chunks[m_first].start; // oldest byte still in use
    if (tail < m_head) {
      // In use: [tail, head). Free: [head, capacity) and [0, tail).
      if (m_capacity - m_head >= size) {
        start = m_head;
      } else if (tail >= size) {
        start = 0; // wrap; the end of the region stays unused until the ring drains past it
      } else {
        return no_chunk;
      }
    } else {
      // Wrapped. In use: [tail, ...) and [0, head). Free: [head, tail).
      if (tail - m_head >= size) {
        start = m_head;
      } else {
        return no_chunk;
      }
    }
  }
  const std::size_t slot = (m_first + m_count) % m_chunks.size();
  m_chunks[slot] = Chunk{start, start + size, false};
  ++m_count;
  m_head = start + size;
  offset = start;
  return static_cast<std::uint32_t>(slot);
}

bool BounceRing::can_allocate(std::size_t size) const noexcept {
  if (size == 0 || size > m_capacity || m_count == m_chunks.size()) {
    return false;
  }
  if (m_count == 0) {
    return true;
  }
  const std::size_t tail = m_chunks[m_first].start; // as in allocate
  if (tail < m_head) {
    return m_capacity - m_head >= size || tail >= size;
  }
  return tail - m_head >= size;
}

void BounceRing::release(std::uint32_t chunk) noexcept {
  m_chunks[chunk].released = true;
  while (m_count > 0 && m_chunks[m_first].released) {
    m_first = (m_first + 1) % m_chunks.size();
    --m_count;
  }
  if (m_count == 0) {
    m_head = 0;
  }
}

IndexStack::IndexStack(std::size_t count) {
  m_free.reserve(count);
  for (std::size_t i = count; i > 0; --i) {
    m_free.push_back(static_cast<std::uint32_t>(i - 1)); // index 0 on top: low addresses first
  }
}

SendBufferPool::SendBufferPool(std::size_t count, std::size_t buffer_size, std::size_t header_room)
  : m_header_room{header_room}, m_stride{align_up(header_room + buffer_size, 64)}, m_memory{count * m_stride},
    m_state(count, State::free), m_holder(count, nullptr), m_free{count} {
  m_buffers.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    m_buffers.push_back(
        std::make_unique<NetworkBuffer>(std::span<std::uint8_t>{frame(i) + header_room, buffer_size}, i, this));
  }
}

NetworkBuffer* SendBufferPool::take(const void* holder) noexcept {
  if (m_free.empty()) {
    return nullptr;
  }
  const std::uint32_t index = m_free.pop();
  m_state[index] = State::handed_out;
  m_holder[index] = holder;
  NetworkBuffer* buffer = m_buffers[index].get();
  buffer->set_pos(0);
  return buffer;
}

bool SendBufferPool::is_handed_out_to(const NetworkBuffer* buffer, const void* holder) const noexcept {
  if (buffer == nullptr || buffer->owner() != this || buffer->index() >= m_buffers.size()) {
    return false;
  }
  const std::size_t index = buffer->index();
  return m_buffers[index].get() == buffer && m_state[index] == State::handed_out && m_holder[index] == holder;
}

void SendBufferPool::give_back(std::size_t index) noexcept {
  if (m_state[index] == State::free) {
    return;
  }
  m_state[index] = State::free;
  m_holder[index] = nullptr;
  m_free.push(static_cast<std::uint32_t>(index));
}

void SendBufferPool::reclaim(const void* holder) noexcept {
  for (std::size_t i = 0; i < m_buffers.size(); ++i) {
    if (m_state[i] != State::free && m_holder[i] == holder) {
      give_back(i);
    }
  }
}

SharedReceivePool::SharedReceivePool(std::size_t count, std::size_t stride)
  : m_stride{stride}, m_memory{count * stride}, m_free{count} {}

} // namespace netio3::libfabric
