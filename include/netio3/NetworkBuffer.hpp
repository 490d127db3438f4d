#pragma once

/// @file
/// `NetworkBuffer`: a backend-owned, pre-registered send buffer for buffered sending.
///
/// Contract: the backend owns every buffer. `NetworkBackend::get_buffer` lends one (nullptr when
/// none is free: retry after a completion); the caller fills it and passes it to
/// `NetworkBackend::send_buffer`. After `OK` the buffer is the backend's again and returns to its
/// pool by itself when sent (no key, no callback); after any other status it stays with the
/// caller. One thread uses a buffer at a time; closing the endpoint invalidates its buffers.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>

namespace netio3 {

/// A send buffer handed out by `NetworkBackend::get_buffer`.
///
/// Ownership: the backend owns the memory. Between `get_buffer` and `send_buffer` the caller may
/// write into `data()` and set how many bytes to send with `set_pos` (or `append`). After
/// `send_buffer` returned `OK` the caller must not touch the buffer: it goes back to the pool when
/// the send completes (or when the connection closes). If `send_buffer` returns anything else the
/// buffer stays with the caller, who may retry the send. A buffer never leaves its endpoint's pool;
/// closing the endpoint invalidates every pointer handed out for it.
///
/// Threading: a buffer is used by one thread at a time (the one that got it).
class NetworkBuffer {
public:
  /// Used by backends: a buffer over `memory`, identified inside its pool by `index`, owned by
  /// `owner` (an opaque pool identity used to reject foreign buffers).
  NetworkBuffer(std::span<std::uint8_t> memory, std::size_t index, const void* owner) noexcept
    : m_memory{memory}, m_index{index}, m_owner{owner} {}

  NetworkBuffer(const NetworkBuffer&) = delete;
  NetworkBuffer& operator=(const NetworkBuffer&) = delete;
  NetworkBuffer(NetworkBuffer&&) = delete;
  NetworkBuffer& operator=(NetworkBuffer&&) = delete;
  ~NetworkBuffer() = default;

  /// The whole capacity of the buffer.
  [[nodiscard]] std::span<std::uint8_t> data() noexcept { return m_memory; }
  /// The whole capacity of the buffer (read-only).
  [[nodiscard]] std::span<const std::uint8_t> data() const noexcept { return m_memory; }
  /// Capacity in bytes.
  [[nodiscard]] std::size_t size() const noexcept { return m_memory.size(); }
  /// Bytes filled so far: what `send_buffer` sends.
  [[nodiscard]] std::size_t pos() const noexcept { return m_pos; }
  /// Bytes still free after `pos()`.
  [[nodiscard]] std::size_t available() const noexcept { return m_memory.size() - m_pos; }

  /// Sets how many bytes `send_buffer` sends.
  /// @throws std::out_of_range if `pos > size()`.
  void set_pos(std::size_t pos) {
    if (pos > m_memory.size()) {
      throw std::out_of_range("NetworkBuffer::set_pos: position " + std::to_string(pos) + " exceeds the buffer size " +
                              std::to_string(m_memory.size()));
    }
    m_pos = pos;
  }

  /// Copies `bytes` after `pos()` and advances `pos()`. Returns false (and copies nothing) when
  /// they do not fit.
  [[nodiscard]] bool append(std::span<const std::uint8_t> bytes) noexcept {
    if (bytes.size() > available()) {
      return false;
    }
    if (!bytes.empty()) {
      std::memcpy(m_memory.data() + m_pos, bytes.data(), bytes.size());
    }
    m_pos += bytes.size();
    return true;
  }

  /// Used by backends: the buffer's index in its pool.
  [[nodiscard]] std::size_t index() const noexcept { return m_index; }
  /// Used by backends: the pool that handed the buffer out.
  [[nodiscard]] const void* owner() const noexcept { return m_owner; }

private:
  std::span<std::uint8_t> m_memory;
  std::size_t m_pos{0};
  std::size_t m_index;
  const void* m_owner;
};

} // namespace netio3
